"""access state: anti-passback positions and lockouts, threaded through real decisions."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from floor_agent.access.config import AccessPolicyConfig, DoorReader, DoorSection
from floor_agent.access.decision import evaluate
from floor_agent.access.model import AccessState, CardRead, FingerResult, Lockout, Outcome
from floor_agent.access.state import COUNTED_FAILURES, after, is_locked, prune
from floor_agent.protocol.credentials import (
    AccessLevel,
    Card,
    Credentials,
    Person,
    Template,
    TimeWindow,
)

TZ = ZoneInfo("Europe/Berlin")
LAB = DoorSection(door_id="lab", name="Clean room", zone_inside="cleanroom",
                  readers=[DoorReader(reader_id="lab-in", pcsc_reader="Virtual PCD 00 00"),
                           DoorReader(reader_id="lab-out", direction="out",
                                      pcsc_reader="Virtual PCD 00 01")])
POLICY = AccessPolicyConfig(lockout_failures=3, lockout_window_seconds=300, lockout_seconds=600)
T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)  # Monday 10:00 in Berlin
ALWAYS = TimeWindow(frozenset(range(7)), time(0), time(0))
CREDS = Credentials(
    people={"alice": Person("alice", "Alice", access_levels=("lab",),
                            duress_fingers=frozenset({4})),
            "bob": Person("bob", "Bob", access_levels=("lab",))},
    cards={"04A1": Card("04A1", "alice"), "04B2": Card("04B2", "bob")},
    levels={"lab": AccessLevel("lab", frozenset({"lab"}), (ALWAYS,))},
    templates={"alice": (Template("a-index", "alice", 2, b"\x01" * 40),
                         Template("a-ring", "alice", 4, b"\x02" * 40)),
               "bob": (Template("b-thumb", "bob", 1, b"\x03" * 40),)})


def attempt(state: AccessState, at: datetime, *, finger: str = "a-index", uid: str = "04A1",
            direction: str = "in", policy: AccessPolicyConfig = POLICY,
            proof: str = "ok") -> tuple[Outcome, AccessState]:
    """One card + finger at the lab door at `at`, decided and applied as the controller does.
    finger: a template id (a match 2 s after the card), "none" (no match), "late" (Alice's
    index 20 s after the card), "nothing" (no finger put on)."""
    read = CardRead("lab", f"lab-{direction}", direction, uid, at, proof)
    if finger == "none":
        result = FingerResult("no_match", at + timedelta(seconds=2))
    elif finger == "nothing":
        result = FingerResult("timeout", at + timedelta(seconds=8))
    elif finger == "late":
        result = FingerResult("match", at + timedelta(seconds=20), "alice", "a-index")
    else:
        owner = {"a": "alice", "b": "bob"}[finger[0]]
        result = FingerResult("match", at + timedelta(seconds=2), owner, finger)
    outcome = evaluate(CREDS, read, result, policy, state, at, TZ, door=LAB)
    return outcome, after(state, outcome, policy, LAB, at)


# --- anti-passback -----------------------------------------------------------------------------

def test_a_grant_moves_the_person_through_the_door() -> None:
    outcome, state = attempt(AccessState(), T0)
    assert outcome.granted
    assert state.zone_of == {"alice": "cleanroom"}
    outcome, state = attempt(state, T0 + timedelta(minutes=5), direction="out")
    assert outcome.granted
    assert state.zone_of == {"alice": "outside"}


def test_hard_antipassback_refuses_a_second_entry_until_the_exit() -> None:
    _, state = attempt(AccessState(), T0)
    outcome, state = attempt(state, T0 + timedelta(minutes=1))  # card passed back to a friend
    assert (outcome.granted, outcome.reason) == (False, "antipassback")
    assert state.zone_of == {"alice": "cleanroom"}
    _, state = attempt(state, T0 + timedelta(minutes=2), direction="out")
    outcome, state = attempt(state, T0 + timedelta(minutes=3))
    assert outcome.granted


def test_soft_antipassback_grants_with_an_alarm_and_keeps_tracking() -> None:
    soft = AccessPolicyConfig(antipassback="soft")
    _, state = attempt(AccessState(), T0, policy=soft)
    outcome, state = attempt(state, T0 + timedelta(minutes=1), policy=soft)
    assert (outcome.granted, outcome.alarms) == (True, ("antipassback",))
    assert state.zone_of == {"alice": "cleanroom"}


def test_a_denial_moves_nobody() -> None:
    state = AccessState(zone_of={"alice": "outside"})
    outcome, new = attempt(state, T0, finger="b-thumb")
    assert not outcome.granted
    assert new.zone_of == {"alice": "outside"}


def test_after_returns_a_new_state_and_leaves_the_old_one_alone() -> None:
    old = AccessState(zone_of={"bob": "cleanroom"})
    _, new = attempt(old, T0)
    assert old == AccessState(zone_of={"bob": "cleanroom"})
    assert new.zone_of == {"bob": "cleanroom", "alice": "cleanroom"}


def test_a_duress_grant_moves_the_person_too() -> None:
    outcome, state = attempt(AccessState(), T0, finger="a-ring")
    assert outcome.reason == "granted_duress"
    assert state.zone_of == {"alice": "cleanroom"}


def test_an_outcome_of_another_door_is_refused() -> None:
    outcome = Outcome(True, "granted", "vault", "in", "04A1", "alice")
    with pytest.raises(ValueError, match="vault"):
        after(AccessState(), outcome, POLICY, LAB, T0)


# --- lockout -----------------------------------------------------------------------------------

def test_three_failures_within_the_window_lock_the_card_then_it_is_released() -> None:
    state = AccessState()
    first, state = attempt(state, T0, finger="none")
    second, state = attempt(state, T0 + timedelta(seconds=60), finger="b-thumb")
    third, state = attempt(state, T0 + timedelta(seconds=120), finger="none")
    assert [o.reason for o in (first, second, third)] == [
        "finger_mismatch", "finger_other_person", "finger_mismatch"]
    assert [o.alarms for o in (first, second, third)] == [(), ("card_shared",), ("lockout",)]
    locked_at = T0 + timedelta(seconds=120)
    assert state.lockouts["04A1"] == Lockout((), locked_at + timedelta(seconds=600))

    # the right finger is refused while the lock holds, and does not extend it
    outcome, state = attempt(state, locked_at + timedelta(seconds=599))
    assert (outcome.granted, outcome.reason) == (False, "locked_out")
    assert state.lockouts["04A1"].locked_until == locked_at + timedelta(seconds=600)

    outcome, state = attempt(state, locked_at + timedelta(seconds=600))
    assert outcome.granted
    assert "04A1" not in state.lockouts


def test_failures_spread_wider_than_the_window_do_not_lock() -> None:
    state = AccessState()
    for minutes in (0, 3, 6, 9):  # never 3 within 300 s
        outcome, state = attempt(state, T0 + timedelta(minutes=minutes), finger="none")
        assert outcome.alarms == ()
    assert not is_locked(state, "04A1", T0 + timedelta(minutes=9))
    assert len(state.lockouts["04A1"].failures) == 2


def test_a_grant_clears_the_failures() -> None:
    state = AccessState()
    for seconds in (0, 10):
        _, state = attempt(state, T0 + timedelta(seconds=seconds), finger="none")
    _, state = attempt(state, T0 + timedelta(seconds=20))
    assert "04A1" not in state.lockouts
    _, state = attempt(state, T0 + timedelta(seconds=30), direction="out", finger="none")
    outcome, state = attempt(state, T0 + timedelta(seconds=40), direction="out", finger="none")
    assert outcome.alarms == ()
    assert not is_locked(state, "04A1", T0 + timedelta(seconds=40))


@pytest.mark.parametrize("finger", ["late", "b-thumb", "none"])
def test_failed_fingers_count(finger: str) -> None:
    state = AccessState()
    for seconds in (0, 10, 20):
        outcome, state = attempt(state, T0 + timedelta(seconds=seconds), finger=finger)
    assert outcome.reason in COUNTED_FAILURES
    assert is_locked(state, "04A1", T0 + timedelta(seconds=21))


def test_failed_card_proofs_count() -> None:
    state = AccessState()
    for seconds in (0, 10, 20):
        outcome, state = attempt(state, T0 + timedelta(seconds=seconds), proof="failed")
    assert (outcome.reason, outcome.alarms) == ("clone_suspected", ("clone_suspected", "lockout"))
    assert attempt(state, T0 + timedelta(seconds=30))[0].reason == "locked_out"


def test_no_finger_at_all_does_not_count() -> None:
    """Walking away from the sensor is not an attempt at someone else's identity."""
    state = AccessState()
    for seconds in range(0, 50, 10):
        outcome, state = attempt(state, T0 + timedelta(seconds=seconds), finger="nothing")
        assert outcome.reason == "finger_timeout"
    assert state.lockouts == {}


def test_policy_denials_do_not_count() -> None:
    """Repeating an answer that is always the same guesses nothing."""
    state = AccessState(zone_of={"alice": "cleanroom"})
    for seconds in range(0, 50, 10):
        outcome, state = attempt(state, T0 + timedelta(seconds=seconds))
        assert outcome.reason == "antipassback"
    assert state.lockouts == {}


def test_unknown_cards_are_not_tracked() -> None:
    state = AccessState()
    for n in range(5):
        outcome, state = attempt(state, T0 + timedelta(seconds=n), uid=f"0{n}FF")
        assert outcome.reason == "unknown_card"
    assert state == AccessState()


def test_lockout_is_per_card() -> None:
    state = AccessState()
    for seconds in (0, 10, 20):
        _, state = attempt(state, T0 + timedelta(seconds=seconds), finger="none")
    outcome, _ = attempt(state, T0 + timedelta(seconds=30), uid="04B2", finger="b-thumb")
    assert outcome.granted


def test_lockout_numbers_come_from_the_policy() -> None:
    strict = AccessPolicyConfig(lockout_failures=1, lockout_seconds=30)
    outcome, state = attempt(AccessState(), T0, finger="none", policy=strict)
    assert outcome.alarms == ("lockout",)
    assert attempt(state, T0 + timedelta(seconds=29), policy=strict)[0].reason == "locked_out"
    assert attempt(state, T0 + timedelta(seconds=30), policy=strict)[0].granted


# --- the state stays small -----------------------------------------------------------------------

def test_expired_failures_and_lockouts_are_dropped_on_the_next_decision() -> None:
    state = AccessState(lockouts={
        "04B2": Lockout((), T0 - timedelta(seconds=1)),  # lock over
        "0BAD": Lockout((T0 - timedelta(seconds=301),)),  # failure out of the window
        "0C0C": Lockout((T0 - timedelta(seconds=5),)),  # still counts
    })
    _, state = attempt(state, T0)
    assert set(state.lockouts) == {"0C0C"}


def test_prune_drops_expired_lockouts_and_people_who_are_gone() -> None:
    state = AccessState(
        zone_of={"alice": "cleanroom", "mallory": "cleanroom"},
        lockouts={"04A1": Lockout((), T0 + timedelta(seconds=10)),
                  "04B2": Lockout((), T0 - timedelta(seconds=10))})
    pruned = prune(state, POLICY, T0, people=CREDS.people)
    assert pruned.zone_of == {"alice": "cleanroom"}
    assert set(pruned.lockouts) == {"04A1"}
    assert prune(state, POLICY, T0).zone_of == state.zone_of
