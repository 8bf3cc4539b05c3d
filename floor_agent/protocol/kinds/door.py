"""What a door controller (access/) records."""

from __future__ import annotations

from enum import StrEnum

from floor_agent.protocol.kinds.topic import Topic


class DoorKind(StrEnum):
    GRANTED = "door.granted"
    DENIED = "door.denied"
    DURESS = "door.duress"
    CLONE_SUSPECTED = "door.clone_suspected"
    LOCKOUT = "door.lockout"
    ANTIPASSBACK = "door.antipassback"
    CARD_SHARED = "door.card_shared"
    TEMPLATE_INVALID = "door.template_invalid"
    TEMPLATE_ENROLLED = "door.template_enrolled"
    ERROR = "door.error"
    CONTROLLER_FAILED = "door.controller_failed"
    CONFIG_INVALID = "door.config_invalid"
    OPENED = "door.opened"
    CLOSED = "door.closed"
    FORCED = "door.forced"
    HELD_OPEN = "door.held_open"
    HELD_OPEN_CLEARED = "door.held_open_cleared"
    RELOCKED = "door.relocked"
    UNLOCKED = "door.unlocked"
    READER_ONLINE = "door.reader_online"
    READER_OFFLINE = "door.reader_offline"
    READER_ERROR = "door.reader_error"
    READER_GARBAGE = "door.reader_garbage"
    READER_TAMPER = "door.reader_tamper"
    READER_TAMPER_CLEARED = "door.reader_tamper_cleared"
    SYNC_FAILED = "door.sync_failed"
    SYNC_RECOVERED = "door.sync_recovered"
    CREDENTIALS_UPDATED = "door.credentials_updated"
    CLOCK_SKEW = "door.clock_skew"
    CLOCK_SKEW_RESOLVED = "door.clock_skew_resolved"
    CREDENTIALS_STALE = "door.credentials_stale"
    CREDENTIALS_FRESH = "door.credentials_fresh"


DOOR_SYNC = Topic("door.sync")
DOOR_STATE = Topic("door:", "door_id")  # one per door: its lock and position
DOOR_ACCESS = Topic("door.access:", "door_id")  # one per door: the last decision
# the kinds that set a door controller's current state, and the state they set
STATES: dict[DoorKind, Topic] = {
    DoorKind.CONTROLLER_FAILED: Topic("door.controller"),
    DoorKind.SYNC_FAILED: DOOR_SYNC,
    DoorKind.SYNC_RECOVERED: DOOR_SYNC,
    DoorKind.CREDENTIALS_UPDATED: DOOR_SYNC,
    **{kind: DOOR_STATE for kind in (
        DoorKind.OPENED, DoorKind.CLOSED, DoorKind.FORCED, DoorKind.HELD_OPEN,
        DoorKind.HELD_OPEN_CLEARED, DoorKind.RELOCKED, DoorKind.UNLOCKED, DoorKind.ERROR)},
    DoorKind.GRANTED: DOOR_ACCESS,
    DoorKind.DENIED: DOOR_ACCESS,
}
