"""The workstation's usb_guard section."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import (
    Field,
)

from floor_agent.config.base import ConfigPath, StrictModel


class UsbGuardConfig(StrictModel):
    """The workstation's USB guard: which rules, and where sysfs is."""

    enabled: Annotated[bool, Field(strict=True)] = True
    rules_file: ConfigPath = Path("/etc/floor-agent/usb-rules.conf")
    sys_root: ConfigPath = Path("/sys")
