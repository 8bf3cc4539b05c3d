"""access decision: every reason code, reached by the situation that should produce it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from floor_agent.access import state as access_state
from floor_agent.access.config import AccessPolicyConfig, DoorReader, DoorSection
from floor_agent.access.decision import check_card, evaluate, window_allows
from floor_agent.access.model import (
    REASONS,
    AccessState,
    CardRead,
    FingerResult,
    FingerSearch,
    Lockout,
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

BERLIN = ZoneInfo("Europe/Berlin")
WEEKDAYS = frozenset(range(5))
LAB = DoorSection(door_id="lab", name="Clean room", zone_inside="cleanroom",
                  readers=[DoorReader(reader_id="lab-in", pcsc_reader="Virtual PCD 00 00"),
                           DoorReader(reader_id="lab-out", direction="out",
                                      pcsc_reader="Virtual PCD 00 01")])
VAULT = DoorSection(door_id="vault", name="Vault", zone_inside="vault",
                    readers=[DoorReader(reader_id="vault-in", pcsc_reader="Virtual PCD 00 00")])
POLICY = AccessPolicyConfig()  # hard anti-passback, card proof required, 3 failures in 300 s
SEALED = {tid: bytes([n]) * 60 for n, tid in enumerate(("a-index", "a-ring", "b-thumb"), 1)}


def local(y: int, mo: int, d: int, h: int, mi: int = 0, tz: ZoneInfo = BERLIN) -> datetime:
    """A wall-clock time at the door, as the aware UTC instant the controller passes in."""
    return datetime(y, mo, d, h, mi, tzinfo=tz).astimezone(UTC)


MONDAY_10 = local(2026, 11, 30, 10)  # a Monday


def credentials(**changes: object) -> Credentials:
    """Alice (index finger, duress ring finger) and Bob, both on the lab's weekday level."""
    people = {
        "alice": Person("alice", "Alice", access_levels=("lab-day",),
                        duress_fingers=frozenset({4})),
        "bob": Person("bob", "Bob", access_levels=("lab-day",)),
        "carol": Person("carol", "Carol", access_levels=("lab-day",)),  # never enrolled a finger
    }
    cards = {
        "04A1": Card("04A1", "alice"),
        "04B2": Card("04B2", "bob"),
        "04C3": Card("04C3", "carol"),
    }
    levels = {
        "lab-day": AccessLevel("lab-day", frozenset({"lab"}),
                               (TimeWindow(WEEKDAYS, time(7), time(19)),)),
        "vault-day": AccessLevel("vault-day", frozenset({"vault"}),
                                 (TimeWindow(WEEKDAYS, time(7), time(19)),)),
    }
    templates = {
        "alice": (Template("a-index", "alice", 2, SEALED["a-index"]),
                  Template("a-ring", "alice", 4, SEALED["a-ring"])),
        "bob": (Template("b-thumb", "bob", 1, SEALED["b-thumb"]),),
    }
    base = Credentials(people=people, cards=cards, levels=levels, templates=templates,
                       version=7)
    return dataclasses.replace(base, **changes)


def with_person(creds: Credentials, person: Person) -> Credentials:
    return dataclasses.replace(creds, people={**creds.people, person.person_id: person})


def with_card(creds: Credentials, card: Card) -> Credentials:
    return dataclasses.replace(creds, cards={**creds.cards, card.uid: card})


def card_read(uid: str = "04A1", at: datetime = MONDAY_10, proof: str = "ok",
              direction: str = "in", door: str = "lab") -> CardRead:
    return CardRead(door, f"{door}-{direction}", direction, uid, at, proof)


def finger_of(person: str | None, template: str | None, after: float = 2.0,
              read_at: datetime = MONDAY_10, status: str = "match") -> FingerResult:
    finger = {"a-index": 2, "a-ring": 4, "b-thumb": 1}.get(template or "")
    return FingerResult(status, read_at + timedelta(seconds=after), person, template, finger,
                        score=120)


ALICE_FINGER = finger_of("alice", "a-index")


def decide(creds: Credentials | None = None, read: CardRead | None = None,
           finger: FingerResult | None | str = "alice's index", policy: AccessPolicyConfig = POLICY,
           state: AccessState | None = None, now: datetime | None = None,
           door: DoorSection = LAB, card_only: bool = False) -> Outcome:
    """evaluate() (or check_card() alone); by default Alice's index finger 2 s after the card."""
    read = read or card_read()
    if isinstance(finger, str):
        finger = finger_of("alice", "a-index", read_at=read.at)
    if card_only:
        outcome = check_card(creds or credentials(), read, policy, state or AccessState(),
                             now or read.at, BERLIN, door=door)
        assert outcome is not None
        return outcome
    return evaluate(creds or credentials(), read, finger, policy, state or AccessState(),
                    now or read.at, BERLIN, door=door)


# --- every reason code, from the situation that should produce it ------------------------------

SCENARIOS: dict[str, Callable[..., Outcome]] = {
    "granted": partial(decide),
    "granted_duress": partial(decide, finger=finger_of("alice", "a-ring")),
    "unknown_card": partial(decide, read=card_read("DEADBEEF")),
    "card_inactive": partial(decide, with_card(credentials(), Card("04A1", "alice", False))),
    "card_not_yet_valid": partial(decide, with_card(credentials(), Card(
        "04A1", "alice", valid_from=MONDAY_10 + timedelta(days=1)))),
    "card_expired": partial(decide, with_card(credentials(), Card(
        "04A1", "alice", valid_until=MONDAY_10 - timedelta(seconds=1)))),
    "card_not_keyed": partial(decide, with_card(credentials(), Card("04A1", "alice",
                                                                    keyed=False))),
    "clone_suspected": partial(decide, read=card_read(proof="failed")),
    "card_error": partial(decide, read=card_read(proof="error")),
    "person_inactive": partial(decide, with_person(credentials(), Person(
        "alice", "Alice", active=False, access_levels=("lab-day",)))),
    "no_access_level": partial(decide, read=card_read(door="vault"), door=VAULT),
    "outside_schedule": partial(decide, read=card_read(at=local(2026, 11, 30, 20))),
    "holiday": partial(decide, credentials(holidays=frozenset({date(2026, 11, 30)}))),
    "no_template": partial(decide, read=card_read("04C3"), finger=None),
    "finger_mismatch": partial(decide, finger=finger_of(None, None, status="no_match")),
    "finger_other_person": partial(decide, finger=finger_of("bob", "b-thumb")),
    "finger_timeout": partial(decide, finger=finger_of(None, None, 8, status="timeout")),
    "finger_poor_image": partial(decide, finger=finger_of(None, None, status="poor_image")),
    "finger_too_late": partial(decide, finger=finger_of("alice", "a-index", after=16)),
    "sensor_unavailable": partial(decide, finger=finger_of(None, None, status="sensor_error")),
    "antipassback": partial(decide, state=AccessState(zone_of={"alice": "cleanroom"})),
    "locked_out": partial(decide, state=AccessState(lockouts={
        "04A1": Lockout((), MONDAY_10 + timedelta(seconds=1))})),
}


def test_every_reason_code_has_a_scenario() -> None:
    assert sorted(SCENARIOS) == sorted(REASONS)


@pytest.mark.parametrize("reason", REASONS)
def test_each_scenario_ends_with_its_reason(reason: str) -> None:
    outcome = SCENARIOS[reason]()
    assert outcome.reason == reason
    assert outcome.granted == reason.startswith("granted")
    assert outcome.door_id in ("lab", "vault")
    assert outcome.direction == "in"


@pytest.mark.parametrize("reason", REASONS)
def test_no_sealed_template_bytes_in_any_outcome(reason: str) -> None:
    text = repr(SCENARIOS[reason]()) + str(SCENARIOS[reason]())
    for sealed in SEALED.values():
        assert sealed.hex() not in text.lower()
        assert repr(sealed) not in text


# --- card and finger -----------------------------------------------------------------------------

def test_right_card_and_right_finger_open_the_door() -> None:
    outcome = decide()
    assert outcome == Outcome(True, "granted", "lab", "in", "04A1", "alice")


def test_check_card_lets_a_good_card_go_on_to_the_finger() -> None:
    assert check_card(credentials(), card_read(), POLICY, AccessState(), MONDAY_10, BERLIN,
                      door=LAB) is None


@pytest.mark.parametrize("reason", [r for r in REASONS if r not in (
    "granted", "granted_duress", "finger_mismatch", "finger_other_person", "finger_timeout",
    "finger_poor_image", "finger_too_late", "sensor_unavailable")])
def test_card_stage_denials_need_no_finger(reason: str) -> None:
    """A card that can never open the door is refused before the sensor is asked, with the
    outcome the full decision gives."""
    early = SCENARIOS[reason](card_only=True)
    assert (early.granted, early.reason) == (False, reason)
    assert early == SCENARIOS[reason]()


def test_another_persons_finger_is_refused() -> None:
    outcome = decide(finger=finger_of("bob", "b-thumb"))
    assert (outcome.granted, outcome.reason, outcome.person_id) == (
        False, "finger_other_person", "alice")


def no_match(search: FingerSearch | None) -> FingerResult:
    """Alice's card, a finger that is not hers (1:1), and what the 1:N search made of it."""
    return dataclasses.replace(finger_of(None, None, status="no_match"), search=search)


def test_card_of_one_person_with_the_finger_of_another_is_card_sharing() -> None:
    outcome = decide(finger=no_match(FingerSearch("found", "bob", "b-thumb", 200)))
    assert (outcome.granted, outcome.reason, outcome.alarms) == (
        False, "finger_other_person", ("card_shared",))
    assert (outcome.person_id, outcome.finger_person_id) == ("alice", "bob")
    assert "bob" in outcome.detail and "Bob" not in repr(outcome)  # ids, never names


def test_a_match_of_another_person_from_the_driver_is_card_sharing_too() -> None:
    outcome = decide(finger=finger_of("bob", "b-thumb"))
    assert (outcome.reason, outcome.alarms, outcome.finger_person_id) == (
        "finger_other_person", ("card_shared",), "bob")


@pytest.mark.parametrize(("search", "detail"), [
    (None, ""),  # no search ran: today's mismatch
    (FingerSearch("not_found"), "no other enrolled finger matches either"),
    (FingerSearch("failed", detail="Search: no answer within 2 s"),
     "search of the other enrolled fingers failed: Search: no answer within 2 s"),
    (FingerSearch("failed"), "search of the other enrolled fingers failed"),
    (FingerSearch("bogus"), "search of the other enrolled fingers failed"),
], ids=["no-search", "not-found", "timed-out", "failed", "unknown-status"])
def test_a_finger_the_search_does_not_attribute_is_a_plain_mismatch(
        search: FingerSearch | None, detail: str) -> None:
    outcome = decide(finger=no_match(search))
    assert (outcome.granted, outcome.reason, outcome.alarms, outcome.detail) == (
        False, "finger_mismatch", (), detail)
    assert outcome.finger_person_id is None


@pytest.mark.parametrize("claim", [
    FingerSearch("found", "bob", "a-index"),  # Bob never enrolled that template
    FingerSearch("found", "mallory", "m-1"),  # nobody the credentials know
    FingerSearch("found", "alice", "a-index"),  # the holder herself: the 1:1 said no
    FingerSearch("found", None, "b-thumb"),
], ids=["template-of-another", "unknown-person", "the-holder", "nobody"])
def test_a_search_claim_the_credentials_do_not_confirm_names_nobody(claim: FingerSearch) -> None:
    outcome = decide(finger=no_match(claim))
    assert (outcome.granted, outcome.reason, outcome.alarms) == (False, "finger_mismatch", ())
    assert outcome.finger_person_id is None
    assert "do not confirm" in outcome.detail


def test_card_sharing_counts_towards_a_lockout_and_keeps_both_ids() -> None:
    failures = (MONDAY_10 - timedelta(seconds=60), MONDAY_10 - timedelta(seconds=30))
    state = AccessState(lockouts={"04A1": Lockout(failures)})
    outcome = decide(finger=no_match(FingerSearch("found", "bob", "b-thumb", 200)),
                     state=state)
    assert outcome.alarms == ("card_shared", "lockout")
    assert (outcome.person_id, outcome.finger_person_id) == ("alice", "bob")


def test_a_match_reported_for_the_holder_with_someone_elses_template_is_refused() -> None:
    """The driver's person_id is not trusted alone: the template must be one of the holder's."""
    outcome = decide(finger=finger_of("alice", "b-thumb"))
    assert (outcome.granted, outcome.reason) == (False, "finger_mismatch")


def test_cloned_uid_without_the_key_is_refused_with_an_alarm() -> None:
    outcome = check_card(credentials(), card_read(proof="failed"), POLICY, AccessState(),
                         MONDAY_10, BERLIN, door=LAB)
    assert outcome is not None
    assert (outcome.granted, outcome.reason, outcome.alarms) == (
        False, "clone_suspected", ("clone_suspected",))


def test_a_failed_proof_is_a_clone_even_where_proof_is_not_required() -> None:
    policy = AccessPolicyConfig(require_card_proof=False)
    assert decide(read=card_read(proof="failed"), policy=policy).reason == "clone_suspected"


def test_a_uid_only_read_opens_nothing_where_proof_is_required() -> None:
    outcome = decide(read=card_read(proof="none"))
    assert (outcome.granted, outcome.reason, outcome.alarms) == (False, "card_not_keyed", ())


def test_a_uid_only_read_is_enough_where_proof_is_not_required() -> None:
    policy = AccessPolicyConfig(require_card_proof=False)
    unkeyed = with_card(credentials(), Card("04A1", "alice", keyed=False))
    assert decide(unkeyed, card_read(proof="none"), policy=policy).granted


@pytest.mark.parametrize(("valid_from", "valid_until", "reason"), [
    (None, MONDAY_10, "card_expired"),  # valid_until is exclusive
    (None, MONDAY_10 + timedelta(seconds=1), "granted"),
    (MONDAY_10, None, "granted"),  # valid_from is inclusive
    (MONDAY_10 + timedelta(seconds=1), None, "card_not_yet_valid"),
])
def test_card_validity_bounds(valid_from: datetime | None, valid_until: datetime | None,
                              reason: str) -> None:
    creds = with_card(credentials(), Card("04A1", "alice", valid_from=valid_from,
                                          valid_until=valid_until))
    assert decide(creds).reason == reason


def test_a_card_whose_holder_is_gone_is_unknown() -> None:
    creds = dataclasses.replace(credentials(), people={
        k: v for k, v in credentials().people.items() if k != "alice"})
    outcome = decide(creds)
    assert (outcome.reason, outcome.person_id) == ("unknown_card", None)


def test_a_level_missing_from_the_cache_gives_no_access() -> None:
    creds = with_person(credentials(), Person("alice", "Alice", access_levels=("gone",)))
    assert decide(creds).reason == "no_access_level"


def test_duress_finger_opens_and_raises_a_silent_alarm() -> None:
    outcome = decide(finger=finger_of("alice", "a-ring"))
    assert (outcome.granted, outcome.reason, outcome.alarms) == (True, "granted_duress",
                                                                 ("duress",))
    assert "duress" not in outcome.detail  # silent: nothing a door display would show


def test_the_duress_finger_is_taken_from_the_enrolled_template_not_the_driver() -> None:
    lying = dataclasses.replace(finger_of("alice", "a-ring"), finger=2)
    assert decide(finger=lying).reason == "granted_duress"


@pytest.mark.parametrize(("after", "reason"), [
    (0.0, "granted"), (15.0, "granted"), (15.001, "finger_too_late"), (-0.5, "finger_too_late"),
])
def test_finger_must_follow_the_card_within_the_window(after: float, reason: str) -> None:
    assert decide(finger=finger_of("alice", "a-index", after=after)).reason == reason


def test_the_finger_window_is_the_policys() -> None:
    policy = AccessPolicyConfig(finger_window_seconds=30)
    assert decide(finger=finger_of("alice", "a-index", after=16), policy=policy).granted


@pytest.mark.parametrize(("finger", "reason"), [
    (None, "finger_timeout"),
    (finger_of(None, None, status="weird"), "sensor_unavailable"),
    (finger_of(None, None, status="match"), "finger_mismatch"),  # a match naming no template
])
def test_odd_finger_results_never_grant(finger: FingerResult | None, reason: str) -> None:
    assert decide(finger=finger).reason == reason


def test_an_unknown_direction_is_a_broken_read() -> None:
    outcome = decide(read=card_read(direction="sideways"))
    assert (outcome.granted, outcome.reason) == (False, "card_error")


def test_a_read_of_another_door_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="vault"):
        decide(read=card_read(door="vault"), door=LAB)


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        evaluate(credentials(), card_read(), ALICE_FINGER, POLICY, AccessState(),
                 MONDAY_10.replace(tzinfo=None), BERLIN, door=LAB)


# --- schedules ----------------------------------------------------------------------------------

def test_schedule_bounds_start_inclusive_end_exclusive() -> None:
    assert decide(read=card_read(at=local(2026, 11, 30, 7))).granted
    assert decide(read=card_read(at=local(2026, 11, 30, 18, 59))).granted
    assert decide(read=card_read(at=local(2026, 11, 30, 19))).reason == "outside_schedule"
    assert decide(read=card_read(at=local(2026, 12, 5, 10))).reason == "outside_schedule"  # Sat


def test_schedules_are_judged_in_the_doors_time_zone() -> None:
    """06:30 UTC on a winter Monday is 07:30 in Berlin (open) and 01:30 in New York (closed)."""
    at = datetime(2026, 11, 30, 6, 30, tzinfo=UTC)
    creds, read = credentials(), card_read(at=at)
    finger = finger_of("alice", "a-index", read_at=at)
    assert evaluate(creds, read, finger, POLICY, AccessState(), at, BERLIN, door=LAB).granted
    assert evaluate(creds, read, finger, POLICY, AccessState(), at, ZoneInfo("America/New_York"),
                    door=LAB).reason == "outside_schedule"


NIGHT = TimeWindow(frozenset({4}), time(22), time(6))  # Friday 22:00 to Saturday 06:00


@pytest.mark.parametrize(("when", "allowed"), [
    (datetime(2026, 12, 4, 21, 59), False),  # Friday evening, before the start
    (datetime(2026, 12, 4, 22, 0), True),
    (datetime(2026, 12, 4, 23, 30), True),
    (datetime(2026, 12, 5, 0, 0), True),  # Saturday: the Friday window runs on
    (datetime(2026, 12, 5, 5, 59, 59), True),
    (datetime(2026, 12, 5, 6, 0), False),
    (datetime(2026, 12, 4, 5, 30), False),  # Friday morning belongs to Thursday's night
    (datetime(2026, 12, 5, 23, 0), False),  # Saturday night is not a Friday
])
def test_a_window_crossing_midnight_runs_until_its_end_the_next_day(when: datetime,
                                                                    allowed: bool) -> None:
    assert window_allows(NIGHT, when) is allowed


def test_a_sunday_night_window_runs_into_monday_morning() -> None:
    sunday_night = TimeWindow(frozenset({6}), time(20), time(2))
    assert window_allows(sunday_night, datetime(2026, 11, 30, 1, 0))  # Monday 01:00
    assert not window_allows(sunday_night, datetime(2026, 11, 30, 2, 0))


def test_a_window_whose_end_equals_its_start_lasts_a_full_day() -> None:
    all_day = TimeWindow(frozenset({0}), time(0), time(0))
    assert window_allows(all_day, datetime(2026, 11, 30, 0, 0))
    assert window_allows(all_day, datetime(2026, 11, 30, 23, 59, 59))
    assert not window_allows(all_day, datetime(2026, 12, 1, 0, 0))


def test_night_shift_level_opens_the_door_after_midnight() -> None:
    levels = {"lab-night": AccessLevel("lab-night", frozenset({"lab"}), (NIGHT,))}
    creds = with_person(credentials(levels=levels),
                        Person("alice", "Alice", access_levels=("lab-night",)))
    at = local(2026, 12, 5, 3)
    read = card_read(at=at)
    assert decide(creds, read, finger_of("alice", "a-index", read_at=at)).granted
    at = local(2026, 12, 5, 7)
    assert decide(creds, card_read(at=at), finger_of("alice", "a-index", read_at=at)
                  ).reason == "outside_schedule"


def test_a_holiday_closes_a_level_unless_it_opens_on_holidays() -> None:
    holiday = frozenset({date(2026, 11, 30)})
    assert decide(credentials(holidays=holiday)).reason == "holiday"
    open_levels = {"lab-day": AccessLevel("lab-day", frozenset({"lab"}),
                                          (TimeWindow(WEEKDAYS, time(7), time(19)),), True)}
    assert decide(credentials(holidays=holiday, levels=open_levels)).granted


def test_a_holiday_outside_the_windows_is_still_outside_schedule() -> None:
    at = local(2026, 11, 30, 22)
    assert decide(credentials(holidays=frozenset({date(2026, 11, 30)})),
                  card_read(at=at)).reason == "outside_schedule"


def test_the_holiday_is_the_local_date() -> None:
    """23:30 UTC on Monday is already Tuesday 00:30 in Berlin: Tuesday's holiday applies."""
    levels = {"lab-day": AccessLevel("lab-day", frozenset({"lab"}),
                                     (TimeWindow(frozenset(range(7)), time(0), time(0)),))}
    at = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)
    creds = credentials(levels=levels, holidays=frozenset({date(2026, 12, 1)}))
    assert decide(creds, card_read(at=at), finger_of("alice", "a-index", read_at=at)
                  ).reason == "holiday"


def test_one_open_level_is_enough() -> None:
    levels = {**credentials().levels,
              "lab-weekend": AccessLevel("lab-weekend", frozenset({"lab"}),
                                         (TimeWindow(frozenset({5, 6}), time(9), time(12)),))}
    creds = with_person(credentials(levels=levels),
                        Person("alice", "Alice", access_levels=("lab-day", "lab-weekend")))
    at = local(2026, 12, 5, 10)
    assert decide(creds, card_read(at=at), finger_of("alice", "a-index", read_at=at)).granted


# --- anti-passback ------------------------------------------------------------------------------

def test_hard_antipassback_refuses_a_second_entry_at_the_card() -> None:
    inside = AccessState(zone_of={"alice": "cleanroom"})
    outcome = check_card(credentials(), card_read(), POLICY, inside, MONDAY_10, BERLIN, door=LAB)
    assert outcome is not None
    assert (outcome.granted, outcome.reason) == (False, "antipassback")
    assert outcome.alarms == ("antipassback",)  # the refusal raises the alarm, as soft mode does


def test_hard_antipassback_refuses_an_exit_by_someone_already_outside() -> None:
    outside = AccessState(zone_of={"alice": "outside"})
    outcome = decide(read=card_read(direction="out"), state=outside)
    assert (outcome.granted, outcome.reason, outcome.alarms) == (
        False, "antipassback", ("antipassback",))


def test_hard_antipassback_lets_the_expected_passage_through() -> None:
    assert decide(state=AccessState(zone_of={"alice": "outside"})).granted
    assert decide(read=card_read(direction="out"),
                  state=AccessState(zone_of={"alice": "cleanroom"})).granted


def test_soft_antipassback_grants_with_an_alarm() -> None:
    policy = AccessPolicyConfig(antipassback="soft")
    outcome = decide(policy=policy, state=AccessState(zone_of={"alice": "cleanroom"}))
    assert (outcome.granted, outcome.reason, outcome.alarms) == (True, "granted",
                                                                 ("antipassback",))


def test_antipassback_off_ignores_positions() -> None:
    policy = AccessPolicyConfig(antipassback="off")
    outcome = decide(policy=policy, state=AccessState(zone_of={"alice": "cleanroom"}))
    assert (outcome.granted, outcome.alarms) == (True, ())


# --- the property: no grant unless every condition holds -----------------------------------------

UIDS = ("04A1", "04B2", "04C3", "04D4")
PEOPLE = ("p0", "p1", "p2")
LEVEL_IDS = ("l0", "l1", "l2")
TEMPLATE_IDS = ("t0", "t1", "t2", "t3")
WEEK = 7 * 86400
T0 = datetime(2026, 11, 30, tzinfo=UTC)  # a Monday
times = st.builds(time, st.integers(0, 23), st.sampled_from((0, 15, 30, 45)))


def likely(percent: int) -> st.SearchStrategy[bool]:
    """True `percent` % of the time: most conditions hold, so grants are common enough."""
    return st.integers(0, 99).map(lambda n: n < percent)


def mostly(usual: object, *others: object) -> st.SearchStrategy:
    """`usual` 90 % of the time, else one of `others`."""
    return st.integers(0, 99).flatmap(
        lambda n: st.just(usual) if n < 90 else st.sampled_from(others))


@st.composite
def worlds(draw: st.DrawFn) -> tuple[Credentials, CardRead, FingerResult, AccessPolicyConfig,
                                     AccessState, datetime, ZoneInfo]:
    tz = draw(st.sampled_from((ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York"),
                               ZoneInfo("UTC"))))
    now = T0 + timedelta(seconds=draw(st.integers(0, 2 * WEEK)))
    people = {pid: Person(pid, pid, draw(likely(90)),
                          tuple(draw(st.lists(mostly("l0", "l1", "l2"), min_size=1, max_size=2))),
                          frozenset(draw(st.sets(st.integers(1, 3), max_size=1))))
              for pid in PEOPLE}
    cards = {}
    for uid in UIDS[:3]:
        start, end = draw(mostly(None, -3, 0, 2)), draw(mostly(None, -1, 0, 3))
        cards[uid] = Card(uid, draw(st.sampled_from(PEOPLE * 4 + ("ghost",))), draw(likely(90)),
                          None if start is None else now + timedelta(hours=start),
                          None if end is None else now + timedelta(hours=end), draw(likely(90)))
    always = TimeWindow(frozenset(range(7)), time(0), time(0))
    window = likely(60).flatmap(lambda usual: st.just(always) if usual else st.builds(
        TimeWindow, st.sets(st.integers(0, 6)).map(frozenset), times, times))
    levels = {lid: AccessLevel(
        lid, draw(mostly(frozenset({"lab"}), frozenset({"lab", "vault"}), frozenset({"vault"}),
                         frozenset())),
        tuple(draw(st.lists(window, min_size=1, max_size=2))),
        draw(st.booleans())) for lid in LEVEL_IDS[:2]}
    templates: dict[str, tuple[Template, ...]] = {}
    for tid in TEMPLATE_IDS[:3]:
        owner = draw(st.sampled_from(PEOPLE))
        templates[owner] = templates.get(owner, ()) + (
            Template(tid, owner, draw(st.integers(1, 3)), b"\x00" * 8),)
    holidays = frozenset() if draw(likely(80)) else frozenset(draw(st.sets(st.sampled_from(
        [(now + timedelta(days=d)).astimezone(tz).date() for d in (-1, 0, 1)]))))
    creds = Credentials(people, cards, levels, holidays, templates)
    read_at = now - timedelta(seconds=draw(st.integers(0, 20)))
    uid = draw(mostly(*UIDS))
    read = CardRead("lab", "r", draw(st.sampled_from(("in", "out"))), uid, read_at,
                    draw(mostly("ok", "failed", "none", "error")))
    holder = cards[uid].person_id if uid in cards else None
    own = [t.template_id for t in templates.get(holder or "", ())]
    if own and draw(likely(80)):
        matched_person, matched_template = draw(st.sampled_from((holder, None))), \
            draw(st.sampled_from(own))
    else:
        matched_person = draw(st.sampled_from(PEOPLE + (None,)))
        matched_template = draw(st.sampled_from(TEMPLATE_IDS + (None,)))
    search = draw(st.none() | st.builds(
        FingerSearch, st.sampled_from(("found", "not_found", "failed", "bogus")),
        st.sampled_from(PEOPLE + (None, "ghost")), st.sampled_from(TEMPLATE_IDS + (None,))))
    finger = FingerResult(
        draw(mostly("match", "no_match", "timeout", "poor_image", "sensor_error", "bogus")),
        read_at + timedelta(seconds=draw(mostly(5, -1, 0, 15, 16))), matched_person,
        matched_template, search=search)
    policy = AccessPolicyConfig(require_card_proof=draw(st.booleans()),
                                antipassback=draw(st.sampled_from(("hard", "soft", "off"))))
    zone_of = {pid: zone for pid in PEOPLE
               if (zone := draw(st.sampled_from((None, "cleanroom", "outside")))) is not None}
    lockouts = {uid: Lockout((), now + timedelta(seconds=draw(st.integers(-600, 600))))
                for uid in draw(st.sets(st.sampled_from(UIDS), max_size=1))}
    return creds, read, finger, policy, AccessState(zone_of, lockouts), now, tz


def _in_window(window: TimeWindow, local_now: datetime) -> bool:
    """Seconds-of-the-week arithmetic, independent of decision.window_allows."""
    second = local_now.weekday() * 86400 + local_now.hour * 3600 + local_now.minute * 60 \
        + local_now.second
    start = window.start.hour * 3600 + window.start.minute * 60
    end = window.end.hour * 3600 + window.end.minute * 60
    length = end - start if end > start else end - start + 86400
    return any((second - (day * 86400 + start)) % WEEK < length for day in window.days)


def _all_conditions_hold(creds: Credentials, read: CardRead, finger: FingerResult,
                         policy: AccessPolicyConfig, state: AccessState, now: datetime,
                         tz: ZoneInfo) -> bool:
    card = creds.cards.get(read.uid)
    if card is None or read.proof == "error" or card.person_id not in creds.people:
        return False
    person = creds.people[card.person_id]
    if policy.require_card_proof and not (card.keyed and read.proof == "ok"):
        return False
    if card.keyed and read.proof == "failed":
        return False
    if not card.active or (card.valid_from and now < card.valid_from) or \
            (card.valid_until and now >= card.valid_until) or not person.active:
        return False
    lock = state.lockouts.get(read.uid)
    if lock and lock.locked_until and now < lock.locked_until:
        return False
    local_now = now.astimezone(tz)
    holiday = local_now.date() in creds.holidays
    if not any(lid in creds.levels and "lab" in creds.levels[lid].doors
               and (creds.levels[lid].on_holidays or not holiday)
               and any(_in_window(w, local_now) for w in creds.levels[lid].windows)
               for lid in person.access_levels):
        return False
    target = "cleanroom" if read.direction == "in" else "outside"
    if policy.antipassback == "hard" and state.zone_of.get(person.person_id) == target:
        return False
    holder = {t.template_id for t in creds.templates.get(person.person_id, ())}
    delay = (finger.at - read.at).total_seconds()
    return (finger.status == "match" and finger.person_id in (None, person.person_id)
            and finger.template_id in holder and 0 <= delay <= policy.finger_window_seconds)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_granted_exactly_when_every_condition_holds(world: tuple) -> None:
    creds, read, finger, policy, state, now, tz = world
    outcome = evaluate(creds, read, finger, policy, state, now, tz, door=LAB)
    event(outcome.reason)
    assert outcome.granted == _all_conditions_hold(*world)
    assert outcome.reason in REASONS
    assert outcome.granted == (outcome.reason in ("granted", "granted_duress"))
    if outcome.granted:
        person = creds.people[creds.cards[read.uid].person_id]
        template = next(t for t in creds.templates[person.person_id]
                        if t.template_id == finger.template_id)
        assert (outcome.reason == "granted_duress") == (template.finger in person.duress_fingers)
    if outcome.reason == "antipassback" or (outcome.granted and "antipassback" in outcome.alarms):
        assert policy.antipassback in ("hard", "soft") and "antipassback" in outcome.alarms
    if outcome.finger_person_id is not None:  # card sharing names a confirmed other person
        assert outcome.reason == "finger_other_person" and "card_shared" in outcome.alarms
        assert outcome.finger_person_id != outcome.person_id
        assert outcome.finger_person_id in creds.templates
    early = check_card(creds, read, policy, state, now, tz, door=LAB)
    assert early is None or early == outcome  # the card stage never changes its mind
    assert access_state.after(state, outcome, policy, LAB, now) is not None
