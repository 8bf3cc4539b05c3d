"""collector.yaml's `dashboard.footage`: which cameras cover which doors and zones, where the
central SFTP copy of the footage is, and how much of it an alert's clip takes.

Footage reaches the dashboard from the central SFTP copy the camera boxes offload to
(cctv/offload.py), never from the camera box itself: see docs/ARCHITECTURE.md, "Footage
behind an alert".
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, model_validator

from floor_agent.config.base import STATE_ROOT, ConfigPath, StrictFloat, StrictInt, StrictModel

# an agent, camera, door or zone id: what the agents' events carry
Ident = Annotated[str, Field(strict=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class FootageCamera(StrictModel):
    """One camera: the camera box (its agent id) that records it, and what it looks at."""

    agent_id: Ident
    camera_id: Ident
    doors: list[Ident] = Field(default_factory=list)  # door_id of the doors' events
    zones: list[Ident] = Field(default_factory=list)


class FootageSftp(StrictModel):
    """The central storage the camera boxes offload to, read with a key of the collector's own
    (read-only there is enough) and the server's pinned host key."""

    host: Annotated[str, Field(strict=True, min_length=1)] = "127.0.0.1"
    port: Annotated[StrictInt, Field(ge=1, le=65535)] = 22
    user: Annotated[str, Field(strict=True, min_length=1)] = "floor-footage"
    key_file: ConfigPath = Path("/etc/floor-agent/footage.key")
    known_hosts_file: ConfigPath = Path("/etc/floor-agent/footage.known_hosts")
    # the camera boxes' cctv.offload.remote_dir, as this user sees it
    remote_dir: Annotated[str, Field(strict=True, min_length=1)] = "footage"
    timeout_seconds: Annotated[StrictFloat, Field(gt=0, le=600)] = 30.0


class FootageSettings(StrictModel):
    """Clips behind alerts: off unless enabled, with at least one camera mapped."""

    enabled: Annotated[bool, Field(strict=True)] = False
    # the clip: this long before the alert's event and after it
    before_seconds: Annotated[StrictInt, Field(ge=1, le=600)] = 30
    after_seconds: Annotated[StrictInt, Field(ge=1, le=600)] = 30
    # a clip made for a viewer stays playable (for that viewer only) this long, then goes
    clip_minutes: Annotated[StrictInt, Field(ge=1, le=24 * 60)] = 30
    # where clips wait for the browser (created 0700, each clip 0600)
    clip_dir: ConfigPath = STATE_ROOT / "collector" / "clips"
    # the longest clip a request may make: at most this many segments
    max_segments: Annotated[StrictInt, Field(ge=1, le=1000)] = 60
    sftp: FootageSftp = Field(default_factory=FootageSftp)
    cameras: list[FootageCamera] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_cameras(self) -> FootageSettings:
        if self.enabled and not self.cameras:
            raise ValueError("enabled: true needs at least one camera under cameras (which "
                             "camera box records it, the doors and zones it covers)")
        seen: set[tuple[str, str]] = set()
        for camera in self.cameras:
            key = (camera.agent_id, camera.camera_id)
            if key in seen:
                raise ValueError(f"cameras: {camera.agent_id}/{camera.camera_id} is listed twice")
            seen.add(key)
        return self
