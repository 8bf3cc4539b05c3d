"""What every config model shares: strict models (unknown keys are errors), strict numbers,
paths that may not be empty, server names, the per-role state directory, and the one check
that ids in a list are unique."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
)

STATE_ROOT = Path("/var/lib/floor-agent")
ROLES: tuple[str, ...] = ("collector", "workstation", "door", "cctv", "retention")
_DNS_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")

LogLevel = Literal["debug", "info", "warning", "error"]


def default_state_dir(role: str) -> Path:
    """Per-role state directory, so agents sharing a host never share a spool or key."""
    return STATE_ROOT / role


# --------------------------------------------------------------------------- field types


def _reject_empty_path(value: Any) -> Any:
    """Path("") silently becomes ".", which would put keys in whatever the CWD is."""
    if isinstance(value, str) and not value.strip():
        raise ValueError("must not be empty")
    return value


ConfigPath = Annotated[Path, BeforeValidator(_reject_empty_path)]
# Strict numbers: YAML 1.1 reads `on`/`yes` as true, which lax pydantic would turn into 1.
StrictInt = Annotated[int, Field(strict=True)]
StrictFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]


def _check_server_name(value: str) -> str:
    """Names go into the TLS certificate, so only valid DNS names or IP literals."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        return value
    name = value[:-1] if value.endswith(".") else value
    labels = name.split(".")
    if (
        not name
        or len(name) > 253
        or not all(_DNS_LABEL_RE.match(label) for label in labels)
        or labels[-1].isdigit()  # "10.0.0.300" is a broken IP, not a host name
    ):
        raise ValueError("must be a DNS name (letters, digits, '-', dots) or an IP address")
    return name


ServerName = Annotated[str, Field(strict=True), AfterValidator(_check_server_name)]


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo must never silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", validate_default=True)



def require_unique(ids: Iterable[str], label: str = "") -> None:
    """Refuse a list naming one id twice (doors, readers, cameras, servers): the second entry
    would silently shadow the first. The message reads "<label> 'id' appears twice"."""
    seen: set[str] = set()
    for name in ids:
        if name in seen:
            raise ValueError(f"{label} {name!r} appears twice" if label else
                             f"{name!r} appears twice")
        seen.add(name)
