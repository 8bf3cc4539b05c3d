"""What a door decision leaves behind: anti-passback positions and card lockouts (pure).

`after(state, outcome, policy, door, now)` is the only transition; it returns a new AccessState
and never mutates the old one, so the controller can persist, compare and replay states. The
lockout arithmetic lives here too (`is_locked`, `trips_lockout`) because the decision needs the
same arithmetic to deny a locked card and to mark the outcome that locks it with alarm "lockout".

Which denials count towards a lockout (COUNTED_FAILURES), and why:
- counted: finger_mismatch, finger_other_person, finger_too_late (someone holds this card and
  cannot produce its holder's finger in time: the signature of a lost or stolen card), and
  clone_suspected (the card failed its key proof: someone is trying a copy of it).
- not counted: answers that are the same however often one asks (unknown_card, card_inactive,
  card_not_yet_valid, card_expired, card_not_keyed, person_inactive, no_access_level,
  outside_schedule, holiday, antipassback, no_template): repeating them guesses nothing, and
  counting them would lock a colleague out of a door they may open an hour later. Nor the
  sensor's or the reader's troubles (finger_timeout: nobody put a finger; finger_poor_image,
  sensor_unavailable, card_error): they are not attempts at someone else's identity. Nor
  locked_out itself: attempts during a lockout neither extend it nor start the next one.
Lockouts are per card uid; unknown cards are never tracked (each guessed uid would be a new
entry, and the state must stay small).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from floor_agent.access.config import AccessPolicyConfig, DoorSection
from floor_agent.access.model import AccessState, Direction, Lockout, Outcome, Reason

COUNTED_FAILURES: frozenset[Reason] = frozenset({
    "finger_mismatch", "finger_other_person", "finger_too_late", "clone_suspected",
})


def zone_after(door: DoorSection, direction: Direction) -> str:
    """Where a passage through this door leads: "in" to its inside zone, "out" to its outside."""
    return door.zone_inside if direction == "in" else door.zone_outside


def is_locked(state: AccessState, uid: str, now: datetime) -> bool:
    lockout = state.lockouts.get(uid)
    return bool(lockout and lockout.locked_until is not None and now < lockout.locked_until)


def recent_failures(lockout: Lockout | None, policy: AccessPolicyConfig,
                    now: datetime) -> tuple[datetime, ...]:
    """Failures still inside the window (now - window, now]; older ones are forgotten."""
    if lockout is None:
        return ()
    oldest = now - timedelta(seconds=policy.lockout_window_seconds)
    return tuple(t for t in lockout.failures if oldest < t <= now)


def trips_lockout(state: AccessState, uid: str, reason: Reason, policy: AccessPolicyConfig,
                  now: datetime) -> bool:
    """Would an outcome with this reason, now, lock the card (so it carries alarm "lockout")?"""
    if reason not in COUNTED_FAILURES or is_locked(state, uid, now):
        return False
    return len(recent_failures(state.lockouts.get(uid), policy, now)) + 1 >= policy.lockout_failures


def _live(lockout: Lockout, policy: AccessPolicyConfig, now: datetime) -> Lockout | None:
    """The lockout with expired parts dropped, or None when nothing of it matters any more."""
    locked_until = lockout.locked_until
    if locked_until is not None and locked_until <= now:
        locked_until = None
    failures = recent_failures(lockout, policy, now)
    if locked_until is None and not failures:
        return None
    if locked_until == lockout.locked_until and failures == lockout.failures:
        return lockout
    return Lockout(failures, locked_until)


def _lockouts_after(state: AccessState, outcome: Outcome, policy: AccessPolicyConfig,
                    now: datetime) -> dict[str, Lockout]:
    lockouts: dict[str, Lockout] = {}
    for uid, lockout in state.lockouts.items():
        live = _live(lockout, policy, now)
        if live is not None:
            lockouts[uid] = live
    uid = outcome.uid
    if outcome.granted:
        lockouts.pop(uid, None)
    elif outcome.reason in COUNTED_FAILURES and outcome.person_id is not None \
            and not is_locked(state, uid, now):
        failures = recent_failures(lockouts.get(uid), policy, now) + (now,)
        if len(failures) >= policy.lockout_failures:
            lockouts[uid] = Lockout((), now + timedelta(seconds=policy.lockout_seconds))
        else:
            lockouts[uid] = Lockout(failures, None)
    return lockouts


def after(state: AccessState, outcome: Outcome, policy: AccessPolicyConfig, door: DoorSection,
          now: datetime) -> AccessState:
    """The state once `outcome` (decided at `door`, at `now`) has happened.

    A grant moves its person to the zone the passage leads to (whatever the anti-passback
    mode: positions are kept even with it off, so switching it on starts from the truth) and
    clears the card's failures. A counted failure is recorded; reaching
    policy.lockout_failures within policy.lockout_window_seconds locks the card for
    policy.lockout_seconds. Expired failures and lockouts are dropped on every call.
    """
    if outcome.door_id != door.door_id:
        raise ValueError(f"outcome of door {outcome.door_id!r} applied to door {door.door_id!r}")
    zone_of = state.zone_of
    if outcome.granted and outcome.person_id is not None:
        zone = zone_after(door, outcome.direction)
        if zone_of.get(outcome.person_id) != zone:
            zone_of = {**zone_of, outcome.person_id: zone}
    return AccessState(zone_of=zone_of, lockouts=_lockouts_after(state, outcome, policy, now))


def prune(state: AccessState, policy: AccessPolicyConfig, now: datetime,
          people: Collection[str] | None = None) -> AccessState:
    """Drop expired lockouts and, given the people still in the credentials, the positions of
    people who are gone (after a sync or `cache.remove_person`)."""
    lockouts = {uid: live for uid, lockout in state.lockouts.items()
                if (live := _live(lockout, policy, now)) is not None}
    zone_of = state.zone_of
    if people is not None:
        zone_of = {person: zone for person, zone in zone_of.items() if person in people}
    return AccessState(zone_of=zone_of, lockouts=lockouts)
