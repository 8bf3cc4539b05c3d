"""access door: the pure state machine, every transition and alarm, both fail modes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from floor_agent.access import door
from floor_agent.access.door import DoorParams, DoorState, DoorStep, LockCommand

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
SECURE = DoorParams(unlock_seconds=5, held_open_seconds=30, fail_mode="secure")
SAFE = DoorParams(unlock_seconds=5, held_open_seconds=30, fail_mode="safe")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def kinds(step: DoorStep) -> list[str]:
    return [e.kind for e in step.events]


def locked_door() -> DoorState:
    return door.start("d1", SECURE, T0).state


def test_start_locks_whatever_the_relay_was_left_in() -> None:
    step = door.start("d1", SECURE, T0)
    assert step.commands == (LockCommand(unlocked=False, energise=False),)
    assert not step.state.unlocked and not step.state.is_open
    safe = door.start("d1", SAFE, T0)
    assert safe.commands == (LockCommand(unlocked=False, energise=True),)


@pytest.mark.parametrize(("params", "unlock_energise", "lock_energise"),
                         [(SECURE, True, False), (SAFE, False, True)], ids=["secure", "safe"])
def test_lock_commands_follow_the_fail_mode(params: DoorParams, unlock_energise: bool,
                                            lock_energise: bool) -> None:
    state = door.start("d1", params, T0).state
    unlocked = door.grant(state, params, at(1))
    assert unlocked.commands == (LockCommand(True, unlock_energise),)
    relocked = door.tick(unlocked.state, params, at(6))
    assert relocked.commands == (LockCommand(False, lock_energise),)


def test_unpowered_relay_means_locked_for_secure_open_for_safe() -> None:
    assert door.unlocked_when_unpowered("secure") is False
    assert door.unlocked_when_unpowered("safe") is True
    with pytest.raises(ValueError, match="fail_mode"):
        door.energise_for(True, "sometimes")
    with pytest.raises(ValueError, match="fail_mode"):
        DoorParams(fail_mode="open")


def test_grant_open_close_relocks_on_close() -> None:
    step = door.grant(locked_door(), SECURE, at(1))
    assert kinds(step) == ["door.unlocked"]
    assert step.events[0].severity == "info" and "grant" in step.events[0].detail
    opened = door.position(step.state, SECURE, at(2), True)
    assert kinds(opened) == ["door.opened"] and opened.commands == ()
    assert opened.state.legit_opening
    # still open when the unlock time is over: no relock under an open door, no alarm yet
    later = door.tick(opened.state, SECURE, at(10))
    assert later.commands == () and later.events == ()
    closed = door.position(later.state, SECURE, at(12), False)
    assert kinds(closed) == ["door.closed", "door.relocked"]
    assert closed.commands == (LockCommand(False, False),)
    assert closed.state == DoorState("d1")


def test_relock_on_timeout_without_an_opening() -> None:
    step = door.grant(locked_door(), SECURE, at(1))
    assert door.tick(step.state, SECURE, at(5.9)).commands == ()
    assert door.next_deadline(step.state, SECURE) == at(6)
    relocked = door.tick(step.state, SECURE, at(6))
    assert kinds(relocked) == ["door.relocked"]
    assert "without an opening" in relocked.events[0].detail
    assert relocked.commands == (LockCommand(False, False),)
    assert not relocked.state.unlocked
    assert door.tick(relocked.state, SECURE, at(7)).events == ()


def test_custom_grant_seconds_and_a_second_grant_never_shortens() -> None:
    long = door.grant(locked_door(), SECURE, at(0), seconds=20)
    assert long.state.unlocked_until == at(20)
    again = door.grant(long.state, SECURE, at(1))
    assert again.state.unlocked_until == at(20)
    assert again.commands == ()  # already unlocked: no second relay command
    with pytest.raises(ValueError, match="positive"):
        door.grant(locked_door(), SECURE, at(0), seconds=0)


def test_forced_open_is_critical_and_not_held_open() -> None:
    forced = door.position(locked_door(), SECURE, at(1), True)
    assert kinds(forced) == ["door.opened", "door.forced"]
    assert forced.events[1].severity == "critical"
    assert forced.commands == ()
    assert not forced.state.legit_opening
    assert door.tick(forced.state, SECURE, at(500)).events == ()
    assert door.next_deadline(forced.state, SECURE) is None
    closed = door.position(forced.state, SECURE, at(501), False)
    assert kinds(closed) == ["door.closed"]  # it was never unlocked: nothing to relock
    assert closed.commands == ()


def test_rex_exit_is_not_forced() -> None:
    step = door.rex(locked_door(), SECURE, at(1))
    assert kinds(step) == ["door.unlocked"] and "rex" in step.events[0].detail
    assert step.commands == (LockCommand(True, True),)
    opened = door.position(step.state, SECURE, at(2), True)
    assert kinds(opened) == ["door.opened"]
    assert "door.forced" not in kinds(opened)
    closed = door.position(opened.state, SECURE, at(3), False)
    assert kinds(closed) == ["door.closed", "door.relocked"]


def test_opening_after_the_unlock_ran_out_is_forced() -> None:
    step = door.grant(locked_door(), SECURE, at(1))
    relocked = door.tick(step.state, SECURE, at(6))
    late = door.position(relocked.state, SECURE, at(7), True)
    assert "door.forced" in kinds(late)


def test_held_open_warning_then_critical_then_cleared() -> None:
    opened = door.position(door.grant(locked_door(), SECURE, at(0)).state, SECURE, at(1), True)
    assert door.tick(opened.state, SECURE, at(30.9)).events == ()
    assert door.next_deadline(opened.state, SECURE) == at(31)
    warned = door.tick(opened.state, SECURE, at(31))
    assert kinds(warned) == ["door.held_open"]
    assert warned.events[0].severity == "warning"
    assert door.tick(warned.state, SECURE, at(40)).events == ()  # raised once, not every tick
    assert door.next_deadline(warned.state, SECURE) == at(61)
    critical = door.tick(warned.state, SECURE, at(61))
    assert kinds(critical) == ["door.held_open"]
    assert critical.events[0].severity == "critical"
    assert door.tick(critical.state, SECURE, at(600)).events == ()
    assert door.next_deadline(critical.state, SECURE) is None
    closed = door.position(critical.state, SECURE, at(70), False)
    assert kinds(closed) == ["door.closed", "door.held_open_cleared", "door.relocked"]
    assert closed.state == DoorState("d1")


def test_repeated_position_changes_nothing() -> None:
    state = locked_door()
    assert door.position(state, SECURE, at(1), False) == DoorStep(state)
    opened = door.position(door.grant(state, SECURE, at(0)).state, SECURE, at(1), True)
    assert door.position(opened.state, SECURE, at(2), True) == DoorStep(opened.state)


def test_fail_safe_door_goes_through_the_same_transitions() -> None:
    state = door.start("d1", SAFE, T0).state
    step = door.rex(state, SAFE, at(1))
    assert step.commands == (LockCommand(True, False),)  # fail-safe unlocks by dropping power
    opened = door.position(step.state, SAFE, at(2), True)
    closed = door.position(opened.state, SAFE, at(3), False)
    assert closed.commands == (LockCommand(False, True),)


def test_events_carry_the_door_and_the_time_given() -> None:
    forced = door.position(locked_door(), SECURE, at(42), True)
    assert all(e.door_id == "d1" and e.at == at(42) for e in forced.events)
