"""Grant or deny a door, with one reason code: pure, over data passed in.

Nothing here reads a clock, a device, the cache or the network: the credentials snapshot, the
request, the state, `now`, the schedules' time zone and the door are arguments, so an outcome
can be replayed from the audit trail and tested without hardware.

Two stages, so the controller can skip the fingerprint sensor for a card that can never open
the door: `check_card` judges the card alone, `evaluate` runs it and then judges the finger.
The card stage stops at the first of these that fails:

  card_error       the reader's exchange broke (read.proof "error"; or a direction that is
                   neither "in" nor "out"): nothing read can be trusted
  unknown_card     no such uid in the cache, or its holder is not in the cache
  card_not_keyed   policy.require_card_proof and the card has no diversified key
  clone_suspected  the card is keyed and answered, but its proof failed (alarm "clone_suspected",
                   in either proof mode: a genuine keyed card never fails it)
  card_not_keyed   policy.require_card_proof and the read carries no proof (proof "none", a
                   UID-only read): the same answer as an unkeyed card, because to the door it
                   is one; no alarm, since a reader that cannot ask is not an attack
  card_inactive, card_not_yet_valid, card_expired (valid_from <= now < valid_until)
  person_inactive
  locked_out       the card is inside a lockout (see state.py)
  no_access_level  none of the person's levels names this door
  holiday          a level's window would allow now, but today is a holiday that closes it
  outside_schedule no window of a level for this door allows now
  antipassback     hard mode: the passage leads where the person already is (an "in" while
                   inside the door's zone, an "out" while already outside it): denied with
                   alarm "antipassback"; soft mode lets the card on and the grant carries the
                   same alarm
  no_template      the person has no enrolled finger: no finger can ever match

The finger stage (`evaluate`) then gives finger_timeout, finger_poor_image, sensor_unavailable,
finger_other_person (the finger is another enrolled person's: alarm "card_shared", and the
outcome names that person in finger_person_id), finger_mismatch or finger_too_late.

Any outcome whose reason counts towards a lockout (state.COUNTED_FAILURES) and reaches
policy.lockout_failures carries alarm "lockout".
"""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, tzinfo
from typing import Literal

from floor_agent.access import state as access_state
from floor_agent.access.config import AccessPolicyConfig, DoorSection
from floor_agent.access.model import (
    DIRECTIONS,
    AccessState,
    CardRead,
    DecisionReason,
    FingerResult,
    FingerSearch,
    Outcome,
)
from floor_agent.protocol.credentials import (
    AccessLevel,
    Card,
    Credentials,
    Person,
    Template,
    TimeWindow,
)


def window_allows(window: TimeWindow, local: datetime) -> bool:
    """`local` (already in the door's time zone) falls inside the weekly window.

    start <= t < end on one of `days`. A window whose end is not after its start crosses
    midnight: it runs from `start` on one of its days until `end` the next day (fri 22:00-06:00
    covers Friday 22:00 to Saturday 05:59:59, not Friday morning); end == start is 24 hours.
    """
    t = local.time()
    day = local.weekday()
    if window.start < window.end:
        return day in window.days and window.start <= t < window.end
    if day in window.days and t >= window.start:
        return True
    return (day - 1) % 7 in window.days and t < window.end


def _local(now: datetime, tz: tzinfo) -> datetime:
    if now.tzinfo is None or tz is None:
        raise ValueError("decision needs an aware `now` and an explicit time zone")
    return now.astimezone(tz)


def schedule_verdict(levels: list[AccessLevel], holidays: frozenset[date],
                     local: datetime) -> Literal["holiday", "outside_schedule"] | None:
    """None when a level allows `local`; else "holiday" or "outside_schedule"."""
    holiday = local.date() in holidays
    closed_by_holiday = False
    for level in levels:
        if not any(window_allows(w, local) for w in level.windows):
            continue
        if holiday and not level.on_holidays:
            closed_by_holiday = True
            continue
        return None
    return "holiday" if closed_by_holiday else "outside_schedule"


def _passback(person_id: str, read: CardRead, door: DoorSection, policy: AccessPolicyConfig,
              state: AccessState) -> bool:
    """The passage would lead where the person already is (only checked when not "off")."""
    if policy.antipassback == "off":
        return False
    return state.zone_of.get(person_id) == access_state.zone_after(door, read.direction)


def _deny(read: CardRead, reason: DecisionReason, person_id: str | None = None, detail: str = "",
          alarms: tuple[str, ...] = ()) -> Outcome:
    return Outcome(False, reason, read.door_id, read.direction, read.uid, person_id, alarms,
                   detail)


def _card_problem(card: Card, read: CardRead, policy: AccessPolicyConfig,
                  now: datetime) -> Outcome | None:
    pid = card.person_id
    if policy.require_card_proof and not card.keyed:
        return _deny(read, "card_not_keyed", pid, "card has no diversified key")
    if card.keyed and read.proof == "failed":
        return _deny(read, "clone_suspected", pid, "card key proof failed",
                     ("clone_suspected",))
    if policy.require_card_proof and read.proof != "ok":
        return _deny(read, "card_not_keyed", pid, "read carries no card key proof")
    if not card.active:
        return _deny(read, "card_inactive", pid)
    if card.valid_from is not None and now < card.valid_from:
        return _deny(read, "card_not_yet_valid", pid)
    if card.valid_until is not None and now >= card.valid_until:
        return _deny(read, "card_expired", pid)
    return None


def _person_problem(person: Person, creds: Credentials, read: CardRead, door: DoorSection,
                    policy: AccessPolicyConfig, state: AccessState, now: datetime,
                    tz: tzinfo) -> Outcome | None:
    pid = person.person_id
    if not person.active:
        return _deny(read, "person_inactive", pid)
    if access_state.is_locked(state, read.uid, now):
        return _deny(read, "locked_out", pid)
    levels = [level for level_id in person.access_levels
              if (level := creds.levels.get(level_id)) is not None and read.door_id in level.doors]
    if not levels:
        return _deny(read, "no_access_level", pid)
    verdict = schedule_verdict(levels, creds.holidays, _local(now, tz))
    if verdict is not None:
        return _deny(read, verdict, pid)
    if policy.antipassback == "hard" and _passback(pid, read, door, policy, state):
        return _deny(read, "antipassback", pid, f"already in {state.zone_of.get(pid)}",
                     ("antipassback",))
    if not creds.templates.get(pid):
        return _deny(read, "no_template", pid)
    return None


def _with_lockout_alarm(outcome: Outcome, policy: AccessPolicyConfig, state: AccessState,
                        now: datetime) -> Outcome:
    if outcome.person_id is None or not access_state.trips_lockout(
            state, outcome.uid, outcome.reason, policy, now):
        return outcome
    return dataclasses.replace(outcome, alarms=outcome.alarms + ("lockout",))


def check_card(creds: Credentials, read: CardRead, policy: AccessPolicyConfig,
               state: AccessState, now: datetime, tz: tzinfo, *,
               door: DoorSection) -> Outcome | None:
    """The card-stage verdict (module docstring for the order), or None: ask for the finger.

    `now` is aware; schedules and holidays are judged in `tz` (pass a ZoneInfo, or the
    controller's local zone explicitly). `door` is the door read.door_id names (its zones
    decide anti-passback).
    """
    if read.door_id != door.door_id:
        raise ValueError(f"read of door {read.door_id!r} judged for door {door.door_id!r}")
    if read.proof == "error":
        return _deny(read, "card_error", detail="card exchange failed")
    if read.direction not in DIRECTIONS:
        return _deny(read, "card_error", detail="reader direction is neither in nor out")
    card = creds.cards.get(read.uid)
    if card is None:
        return _deny(read, "unknown_card")
    person = creds.people.get(card.person_id)
    if person is None:
        return _deny(read, "unknown_card", detail="card holder not in the credentials")
    outcome = _card_problem(card, read, policy, now) or _person_problem(
        person, creds, read, door, policy, state, now, tz)
    return None if outcome is None else _with_lockout_alarm(outcome, policy, state, now)


def _holder_template(templates: tuple[Template, ...], template_id: str | None) -> Template | None:
    for template in templates:
        if template.template_id == template_id:
            return template
    return None


def _other_person(creds: Credentials, read: CardRead, pid: str, other: str | None,
                  template_id: str | None) -> Outcome:
    """The finger is `other`'s enrolled `template_id`, not the card holder's: the card is being
    shared (lent, or taken by a colleague). Only a claim the snapshot confirms (that person
    enrolled that template) names anyone; any other claim is a plain mismatch."""
    if other is None or other == pid or other not in creds.people \
            or _holder_template(creds.templates.get(other, ()), template_id) is None:
        return _deny(read, "finger_mismatch", pid,
                     "the finger was attributed to a template the credentials do not confirm")
    return Outcome(False, "finger_other_person", read.door_id, read.direction, read.uid, pid,
                   ("card_shared",), f"finger of enrolled person {other}", other)


def _no_match(creds: Credentials, read: CardRead, pid: str,
              search: FingerSearch | None) -> Outcome:
    """Not the holder's finger: whose, as far as the 1:N search over the other enrolled fingers
    knows. A search that failed or timed out proves nothing: a mismatch, saying so."""
    if search is None:
        return _deny(read, "finger_mismatch", pid)
    if search.status == "found":
        return _other_person(creds, read, pid, search.person_id, search.template_id)
    if search.status == "not_found":
        return _deny(read, "finger_mismatch", pid, "no other enrolled finger matches either")
    detail = f": {search.detail}" if search.detail else ""
    return _deny(read, "finger_mismatch", pid,
                 f"search of the other enrolled fingers failed{detail}")


def _finger_verdict(creds: Credentials, read: CardRead, finger: FingerResult | None,
                    person: Person, policy: AccessPolicyConfig) -> Outcome | Template:
    """The denial for this finger, or the holder's template it matched."""
    pid = person.person_id
    if finger is None or finger.status == "timeout":
        return _deny(read, "finger_timeout", pid)
    if finger.status == "poor_image":
        return _deny(read, "finger_poor_image", pid)
    if finger.status == "sensor_error":
        return _deny(read, "sensor_unavailable", pid)
    if finger.status not in ("match", "no_match"):
        return _deny(read, "sensor_unavailable", pid, "unknown fingerprint status")
    if finger.status == "no_match":
        return _no_match(creds, read, pid, finger.search)
    if finger.person_id not in (None, pid):
        return _other_person(creds, read, pid, finger.person_id, finger.template_id)
    template = _holder_template(creds.templates.get(pid, ()), finger.template_id)
    if template is None:
        return _deny(read, "finger_mismatch", pid, "matched template is not the holder's")
    delay = (finger.at - read.at).total_seconds()
    if delay < 0 or delay > policy.finger_window_seconds:
        detail = "finger before the card" if delay < 0 else \
            f"finger {delay:.1f} s after the card (window {policy.finger_window_seconds:g} s)"
        return _deny(read, "finger_too_late", pid, detail)
    return template


def evaluate(creds: Credentials, read: CardRead, finger: FingerResult | None,
             policy: AccessPolicyConfig, state: AccessState, now: datetime, tz: tzinfo, *,
             door: DoorSection) -> Outcome:
    """The full decision: `check_card`, then the finger (None = no finger result, a timeout).

    The finger must be a match of one of the card holder's own templates (by template id, as
    enrolled in the snapshot; the driver's person_id, when given, must be the holder), at most
    policy.finger_window_seconds after read.at (and not before it). A no_match whose 1:N search
    (finger.search) found another person's enrolled finger is finger_other_person with alarm
    "card_shared"; a failed search leaves it a finger_mismatch. A match of a duress finger
    (person.duress_fingers) grants with reason granted_duress and alarm "duress"; in soft
    anti-passback mode a passage to where the person already is grants with alarm
    "antipassback".
    """
    denied = check_card(creds, read, policy, state, now, tz, door=door)
    if denied is not None:
        return denied
    card = creds.cards[read.uid]
    person = creds.people[card.person_id]
    verdict = _finger_verdict(creds, read, finger, person, policy)
    if isinstance(verdict, Outcome):
        return _with_lockout_alarm(verdict, policy, state, now)
    alarms: tuple[str, ...] = ()
    reason: DecisionReason = "granted"
    if verdict.finger in person.duress_fingers:
        reason, alarms = "granted_duress", ("duress",)
    if policy.antipassback == "soft" and _passback(person.person_id, read, door, policy, state):
        alarms += ("antipassback",)
    return Outcome(True, reason, read.door_id, read.direction, read.uid, person.person_id,
                   alarms)


__all__ = ["check_card", "evaluate", "schedule_verdict", "window_allows"]
