"""door.yaml: the door controller's doors, readers, fingerprint module, door I/O and policy."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from floor_agent.config.audit import AgentRoleConfig
from floor_agent.config.base import (
    ConfigPath,
    StrictFloat,
    StrictInt,
    StrictModel,
    require_unique,
)

DOOR_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DoorId = Annotated[str, Field(strict=True, pattern=DOOR_ID_RE.pattern)]


class DoorReader(StrictModel):
    """One card reader of a door: a PC/SC reader (pyscard) or an OSDP reader (libosdp)."""

    reader_id: DoorId
    direction: Literal["in", "out"] = "in"
    kind: Literal["pcsc", "osdp"] = "pcsc"
    # pcsc: the reader's name as PC/SC lists it (a unique part of it is enough)
    pcsc_reader: Annotated[str, Field(strict=True, min_length=1)] | None = None
    # osdp: the bus (a serial device) and the reader's address on it
    osdp_port: Annotated[str, Field(strict=True, min_length=1)] | None = None
    osdp_baud: Literal[9600, 19200, 38400, 57600, 115200] = 9600
    osdp_address: Annotated[StrictInt, Field(ge=0, le=126)] = 0
    # secure channel base key of this reader (32 hex characters, file mode 0600); none = the
    # reader is refused unless install_mode is on (then the key is set once, and recorded)
    osdp_scbk_file: ConfigPath | None = None
    osdp_install_mode: Annotated[bool, Field(strict=True)] = False

    @model_validator(mode="after")
    def _driver_fields(self) -> DoorReader:
        if self.kind == "pcsc" and self.pcsc_reader is None:
            raise ValueError("pcsc_reader: required for a pcsc reader")
        if self.kind == "osdp" and self.osdp_port is None:
            raise ValueError("osdp_port: required for an osdp reader")
        return self


class FingerprintConfig(StrictModel):
    """The door's fingerprint module (ZhianTec UART protocol: R30x, R503, AS608)."""

    port: Annotated[str, Field(strict=True, min_length=1)] = "/dev/ttyS0"
    baud: Literal[9600, 19200, 28800, 38400, 48000, 57600, 67200, 76800, 96000, 105600,
                  115200] = 57600
    address: Annotated[StrictInt, Field(ge=0, le=0xFFFFFFFF)] = 0xFFFFFFFF
    password: Annotated[StrictInt, Field(ge=0, le=0xFFFFFFFF)] = 0
    # lowest match score that counts as the same finger (the module's Match score)
    threshold: Annotated[StrictInt, Field(ge=1, le=1000)] = 50
    # how long to wait for a finger after the card
    capture_timeout_seconds: Annotated[StrictFloat, Field(gt=0, le=60)] = 8.0
    # captures retried after a poor image before the attempt fails
    retries: Annotated[StrictInt, Field(ge=0, le=5)] = 2
    # one command's answer must arrive within this (a silent sensor means no decision)
    response_timeout_seconds: Annotated[StrictFloat, Field(gt=0, le=10)] = 2.0


class DoorIoConfig(StrictModel):
    """Lock relay, door position switch, request-to-exit button."""

    driver: Literal["gpiod", "simulated"] = "gpiod"
    chip: Annotated[str, Field(strict=True, min_length=1)] = "/dev/gpiochip0"
    # driver "simulated" only: the Unix socket of a simulated door (its relay and switches),
    # for tests and the demo; null = a door in memory
    simulated_link: ConfigPath | None = None
    lock_line: Annotated[StrictInt, Field(ge=0)] = 0
    position_line: Annotated[StrictInt, Field(ge=0)] = 1
    rex_line: Annotated[StrictInt, Field(ge=0)] = 2
    # how long a grant (or the exit button) unlocks
    unlock_seconds: Annotated[StrictFloat, Field(gt=0, le=300)] = 5.0
    # an open door longer than this raises door.held_open
    held_open_seconds: Annotated[StrictFloat, Field(gt=0, le=3600)] = 30.0
    # secure: unpowered lock stays locked (controller stopped or crashed); safe: unpowered
    # lock opens (fire code for some escape routes)
    fail_mode: Literal["secure", "safe"] = "secure"


class DoorSection(StrictModel):
    """One door this controller drives."""

    door_id: DoorId
    name: Annotated[str, Field(strict=True, min_length=1)]
    # anti-passback: entering through this door puts a person in zone_inside, leaving (an
    # "out" reader) in zone_outside
    zone_inside: DoorId
    zone_outside: DoorId = "outside"
    readers: Annotated[list[DoorReader], Field(min_length=1)]
    fingerprint: FingerprintConfig = Field(default_factory=FingerprintConfig)
    io: DoorIoConfig = Field(default_factory=DoorIoConfig)


class AccessPolicyConfig(StrictModel):
    """Rules every door of this controller applies."""

    # the finger must match within this many seconds after the card
    finger_window_seconds: Annotated[StrictFloat, Field(gt=0, le=120)] = 15.0
    # clone-resistant mode: a card must prove its diversified key; a UID alone opens nothing
    require_card_proof: Annotated[bool, Field(strict=True)] = True
    # hard: refuse a second entry without an exit, with an alarm; soft: allow and alarm; off
    antipassback: Literal["hard", "soft", "off"] = "hard"
    lockout_failures: Annotated[StrictInt, Field(ge=1, le=100)] = 3
    lockout_window_seconds: Annotated[StrictFloat, Field(gt=0)] = 300.0
    lockout_seconds: Annotated[StrictFloat, Field(gt=0)] = 600.0
    # schedules are in this time zone (IANA name); null = the controller's local time
    timezone: Annotated[str, Field(strict=True)] | None = None


class AccessConfig(StrictModel):
    """The door controller: its doors, the site key, the credentials cache."""

    doors: list[DoorSection] = Field(default_factory=list)
    policy: AccessPolicyConfig = Field(default_factory=AccessPolicyConfig)
    # 32 random bytes (hex, mode 0600) every door controller of the site holds and the
    # collector never sees: card keys are diversified from it and templates sealed under it
    site_key_file: ConfigPath = Path("/etc/floor-agent/site.key")
    # local credentials cache (SQLite); decisions keep working from it when the collector
    # is unreachable. null = credentials.db in the audit state_dir.
    cache_file: ConfigPath | None = None
    sync_interval_seconds: Annotated[StrictFloat, Field(ge=1, le=3600)] = 30.0
    # credentials not verified current for longer than this (counted on the boot clock, not
    # the wall clock) fail secure: every card is denied but the emergency list's
    max_credential_age_seconds: Annotated[StrictFloat, Field(ge=60, le=30 * 86400)] = 86400.0
    # card UIDs (upper-case hex) still decided normally while the credentials are stale
    emergency_uids: list[Annotated[str, Field(strict=True, pattern=r"^[0-9A-F]{2,64}$")]] = \
        Field(default_factory=list)
    # the clock offset to the collector that raises door.clock_skew
    clock_skew_alarm_seconds: Annotated[StrictFloat, Field(ge=1, le=3600)] = 10.0

    @field_validator("doors")
    @classmethod
    def _unique_ids(cls, doors: list[DoorSection]) -> list[DoorSection]:
        require_unique(name for door in doors for name in
                       [door.door_id, *(f"{door.door_id}/{r.reader_id}" for r in door.readers)])
        return doors


class DoorConfig(AgentRoleConfig):
    """door.yaml: door access controller agent."""

    role: Literal["door"] = "door"
    access: AccessConfig = Field(default_factory=AccessConfig)
