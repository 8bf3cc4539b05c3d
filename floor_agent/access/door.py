"""The door's state machine: pure, over a lock relay, a door position switch and an exit button.

Every input (a grant, the request-to-exit button, the position switch, a timer tick) carries its
own `now`; nothing here reads a clock or touches hardware. Each transition returns the new
DoorState, the lock commands for the I/O adapter and the audit events, so the controller only
applies them. Rules:

- a grant or the exit button (REX) unlocks for a while; the lock relocks when the door closes
  after an opening, or when the unlock time runs out without one;
- the door opening while locked, with no grant or REX, is forced (critical);
- a legitimately opened door left open longer than held_open_seconds raises held_open (a
  warning, critical once it stays open twice as long), cleared when it closes.

Fail modes: a fail-secure lock is locked while unpowered, so unlocking energises its relay; a
fail-safe lock (fire code escape routes) is the reverse. The relay's unpowered state is what a
stopped or crashed controller leaves behind.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from floor_agent.protocol.kinds.door import DoorKind

FAIL_MODES = ("secure", "safe")
CRITICAL_FACTOR = 2  # held open this many times held_open_seconds: the warning turns critical


@dataclass(frozen=True, slots=True)
class DoorParams:
    """What a door's config says about timing and its lock (see config.DoorIoConfig)."""

    unlock_seconds: float = 5.0
    held_open_seconds: float = 30.0
    fail_mode: str = "secure"  # secure | safe

    def __post_init__(self) -> None:
        if self.fail_mode not in FAIL_MODES:
            raise ValueError(f"fail_mode: expected one of {FAIL_MODES}, got {self.fail_mode!r}")
        if self.unlock_seconds <= 0 or self.held_open_seconds <= 0:
            raise ValueError("unlock_seconds and held_open_seconds must be positive")


@dataclass(frozen=True, slots=True)
class DoorState:
    """One door between inputs; replaced, never mutated."""

    door_id: str
    unlocked_until: datetime | None = None  # None: locked
    unlock_cause: str = ""  # grant | rex, while unlocked
    is_open: bool = False
    opened_at: datetime | None = None
    legit_opening: bool = False  # the current opening followed a grant or REX
    held_open_level: str = ""  # "" | warning | critical: the held-open alarm raised so far

    @property
    def unlocked(self) -> bool:
        return self.unlocked_until is not None


@dataclass(frozen=True, slots=True)
class LockCommand:
    """Drive the lock: `unlocked` is what the door should be, `energise` the relay for it."""

    unlocked: bool
    energise: bool


@dataclass(frozen=True, slots=True)
class DoorEvent:
    """An audit event: kind (door.*), severity (info | warning | critical), why in words."""

    kind: str
    severity: str
    door_id: str
    at: datetime
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DoorStep:
    state: DoorState
    commands: tuple[LockCommand, ...] = ()
    events: tuple[DoorEvent, ...] = ()


def energise_for(unlocked: bool, fail_mode: str) -> bool:
    """Relay coil state for a wanted lock state: fail-secure unlocks powered, fail-safe locks."""
    if fail_mode not in FAIL_MODES:
        raise ValueError(f"fail_mode: expected one of {FAIL_MODES}, got {fail_mode!r}")
    return unlocked if fail_mode == "secure" else not unlocked


def unlocked_when_unpowered(fail_mode: str) -> bool:
    """What a dead controller leaves: a fail-safe door open, a fail-secure one locked."""
    return not energise_for(True, fail_mode)


def _lock(params: DoorParams, unlocked: bool) -> LockCommand:
    return LockCommand(unlocked, energise_for(unlocked, params.fail_mode))


def start(door_id: str, params: DoorParams, now: datetime) -> DoorStep:
    """A controller taking over a door locks it first, whatever the relay was left in."""
    state = DoorState(door_id)
    return DoorStep(state, (_lock(params, False),),
                    (DoorEvent(DoorKind.RELOCKED, "info", door_id, now, "controller start"),))


def _unlock(state: DoorState, params: DoorParams, now: datetime, seconds: float,
            cause: str) -> DoorStep:
    if seconds <= 0:
        raise ValueError(f"unlock seconds must be positive, got {seconds}")
    until = now + timedelta(seconds=seconds)
    if state.unlocked_until is not None and state.unlocked_until > until:
        until = state.unlocked_until  # a second grant never shortens the first
    commands = () if state.unlocked else (_lock(params, True),)
    new = replace(state, unlocked_until=until, unlock_cause=cause)
    event = DoorEvent(DoorKind.UNLOCKED, "info", state.door_id, now,
                      f"{cause}: unlocked for {seconds:g} s")
    return DoorStep(new, commands, (event,))


def grant(state: DoorState, params: DoorParams, now: datetime,
          seconds: float | None = None) -> DoorStep:
    """An access decision granted: unlock for `seconds` (default: the door's unlock time)."""
    return _unlock(state, params, now, params.unlock_seconds if seconds is None else seconds,
                   "grant")


def rex(state: DoorState, params: DoorParams, now: datetime) -> DoorStep:
    """The request-to-exit button: someone inside leaves; the opening that follows is legit."""
    return _unlock(state, params, now, params.unlock_seconds, "rex")


def position(state: DoorState, params: DoorParams, now: datetime, is_open: bool) -> DoorStep:
    """The door position switch changed (a repeat of the same position changes nothing)."""
    if is_open == state.is_open:
        return DoorStep(state)
    door = state.door_id
    if is_open:
        if state.unlocked:
            new = replace(state, is_open=True, opened_at=now, legit_opening=True)
            return DoorStep(new, (), (DoorEvent(DoorKind.OPENED, "info", door, now,
                                                f"after {state.unlock_cause}"),))
        new = replace(state, is_open=True, opened_at=now, legit_opening=False)
        return DoorStep(new, (), (
            DoorEvent(DoorKind.OPENED, "info", door, now, "while locked"),
            DoorEvent(DoorKind.FORCED, "critical", door, now,
                      "opened while locked, without a grant or the exit button")))
    events = [DoorEvent(DoorKind.CLOSED, "info", door, now,
                        f"open {_seconds(state.opened_at, now)}")]
    if state.held_open_level:
        events.append(DoorEvent(DoorKind.HELD_OPEN_CLEARED, "info", door, now,
                                f"closed after {_seconds(state.opened_at, now)}"))
    commands: tuple[LockCommand, ...] = ()
    if state.unlocked:
        commands = (_lock(params, False),)
        events.append(DoorEvent(DoorKind.RELOCKED, "info", door, now, "door closed"))
    new = DoorState(door)
    return DoorStep(new, commands, tuple(events))


def tick(state: DoorState, params: DoorParams, now: datetime) -> DoorStep:
    """Time passed: relock an unused unlock, raise or escalate held-open."""
    door = state.door_id
    if state.is_open:
        if not state.legit_opening or state.opened_at is None:
            return DoorStep(state)  # a forced door already raised its critical alarm
        held = (now - state.opened_at).total_seconds()
        level = ""
        if held >= params.held_open_seconds * CRITICAL_FACTOR:
            level = "critical"
        elif held >= params.held_open_seconds:
            level = "warning"
        if level and level != state.held_open_level:
            event = DoorEvent(DoorKind.HELD_OPEN, level, door, now,
                              f"open {held:.0f} s, limit {params.held_open_seconds:g} s")
            return DoorStep(replace(state, held_open_level=level), (), (event,))
        return DoorStep(state)
    if state.unlocked_until is not None and now >= state.unlocked_until:
        return DoorStep(DoorState(door), (_lock(params, False),),
                        (DoorEvent(DoorKind.RELOCKED, "info", door, now,
                                   "unlock time ran out without an opening"),))
    return DoorStep(state)


def next_deadline(state: DoorState, params: DoorParams) -> datetime | None:
    """When `tick` next has something to do (the controller sleeps until then)."""
    if state.is_open:
        if not state.legit_opening or state.opened_at is None:
            return None
        if state.held_open_level == "critical":
            return None
        factor = CRITICAL_FACTOR if state.held_open_level == "warning" else 1
        return state.opened_at + timedelta(seconds=params.held_open_seconds * factor)
    return state.unlocked_until


def _seconds(since: datetime | None, now: datetime) -> str:
    return "?" if since is None else f"{(now - since).total_seconds():.1f} s"
