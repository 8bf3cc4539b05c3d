"""Path parameters checked at the edge: a value no database column can hold is a 4xx, never a
500 from the driver (an int beyond int64, a NUL in text)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

MAX_ID = 2**63 - 1
AgentId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
CameraId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
Username = Annotated[str, Path(pattern=r"^[^\x00]{1,64}$")]
Seq = Annotated[int, Path(ge=1, le=MAX_ID)]
RowId = Annotated[int, Path(ge=1, le=MAX_ID)]
