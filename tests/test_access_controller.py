"""The door controller end to end: `floor-agent door` as its own process, enrolled with a real
collector (credentials synced from it, events delivered to it), a real pcscd with vpcd and
virtual cards, the fingerprint module simulator on a pseudo-terminal, the simulated door on a
Unix socket. The issue's scenarios, in order on one floor (each test builds on the state the
previous one left: who is inside, which card is locked out).

One pcscd per machine with fixed vpcd ports: these tests never run beside other pcscd users.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from collector_process import CollectorProcess

from floor_agent.access import zfm
from floor_agent.access.controller import outcome_event
from floor_agent.access.model import Outcome
from floor_agent.protocol.event import AuditEvent, utc_timestamp
from floor_agent.simulated.door_floor import (
    ALWAYS,
    EVERY_DAY,
    VPCD_PORTS,
    VPCD_READERS,
    DoorFloor,
    Finger,
    Holder,
)
from floor_agent.simulated.smart_card import VirtualCard

ALICE_UID, BOB_UID, CAROL_UID = (bytes.fromhex(h) for h in (
    "04A224B2C35E80", "04B1C2D3E4F501", "04C0FFEE123456"))
FINGERS = {"alice-1": b"alice right index", "alice-2": b"alice right middle (duress)",
           "bob-1": b"bob right index"}
MALLORY = b"mallory right index"  # a finger enrolled nowhere
NAMES = ("Alice", "Bob", "Carol")
WAIT = 20.0
HELD_OPEN = 1.0


class Floor(DoorFloor):
    """The shared door floor (floor_agent.simulated.door_floor), with the collector process that the
    tests stop and start again."""

    def __init__(self, collector: CollectorProcess, root: Path) -> None:
        self.collector = collector
        # credentials: Alice and Bob any time, Carol in a window that is never now
        now = datetime.now().astimezone()
        never = [{"days": list(EVERY_DAY), "start": (now + timedelta(hours=12)).strftime("%H:%M"),
                  "end": (now + timedelta(hours=12, minutes=1)).strftime("%H:%M")}]
        holders = [
            Holder("alice", "Alice", ALICE_UID, "always", (
                Finger("alice-1", 1, FINGERS["alice-1"]), Finger("alice-2", 2, FINGERS["alice-2"])),
                duress_fingers=(2,)),
            Holder("bob", "Bob", BOB_UID, "always", (Finger("bob-1", 1, FINGERS["bob-1"]),)),
            Holder("carol", "Carol", CAROL_UID, "night")]
        super().__init__(collector_url=collector.url, ca=collector.ca,
                         api_key=collector.api_key(), door_token=lambda: collector.token("door"),
                         work=root, holders=holders, levels={"always": ALWAYS, "night": never},
                         agent_id="door-front", unlock_seconds=3.0, held_open_seconds=HELD_OPEN)


@pytest.fixture(scope="module")
def floor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Floor]:
    root = tmp_path_factory.mktemp("door")
    collector = CollectorProcess(root / "central")
    collector.start()
    try:
        with Floor(collector, root) as floor:
            yield floor
    finally:
        collector.stop()


def test_right_card_and_right_finger_open_and_the_door_relocks(floor: Floor) -> None:
    event = floor.present(ALICE_UID, "alice-1")
    assert (event["kind"], event["data"]["reason"], event["data"]["person_id"]) == (
        "door.granted", "granted", "alice")
    assert floor.relay.wait_for(True, WAIT)  # fail-secure lock: energised = unlocked
    floor.relay.open_door()
    floor.relay.close_door()
    assert floor.relay.wait_for(False, WAIT)
    for kind in ("door.unlocked", "door.opened", "door.closed", "door.relocked"):
        floor.wait_event(kind)
    text = str(floor.events())
    for secret in (FINGERS["alice-1"].decode(), floor.site.secret.hex()):
        assert secret not in text  # no biometric data or key material in events


def present_features(floor: Floor, uid: bytes, features: bytes, reader: int = 0
                     ) -> dict[str, Any]:
    """A card with a finger that is nobody's enrolled one (Floor.present knows only those)."""
    assert floor.module is not None
    floor.module.place(features)
    try:
        with floor.card(uid, reader=reader):
            return floor.decision(uid)
    finally:
        floor.module.place(None)


def test_right_card_with_another_persons_finger_is_card_sharing(floor: Floor) -> None:
    event = floor.present(BOB_UID, "alice-1")
    assert (event["kind"], event["data"]["reason"]) == ("door.denied", "finger_other_person")
    assert (event["data"]["person_id"], event["data"]["finger_person_id"]) == ("bob", "alice")
    assert event["data"]["alarms"] == ["card_shared"]
    alarm = floor.wait_event("door.card_shared")
    assert alarm["severity"] == "critical"
    assert (alarm["data"]["person_id"], alarm["data"]["finger_person_id"],
            alarm["data"]["uid"]) == ("bob", "alice", BOB_UID.hex().upper())
    assert not any(name in str(e) for e in (event, alarm) for name in NAMES)  # ids, no names
    assert not floor.relay.energised


def test_a_search_that_times_out_is_a_mismatch_that_says_so(floor: Floor) -> None:
    # Alice (inside since the first test) leaves with Bob's finger while the module's Search
    # stays silent: nothing is known about the finger, so no one is named
    assert floor.module is not None
    floor.module.misbehave("silent", on=zfm.SEARCH)
    try:
        event = floor.present(ALICE_UID, "bob-1", reader=1)
    finally:
        floor.module.misbehave(None)
    assert (event["kind"], event["data"]["reason"]) == ("door.denied", "finger_mismatch")
    assert event["data"]["detail"].startswith(
        "search of the other enrolled fingers failed: Search: no answer within")
    assert event["data"]["alarms"] == [] and "finger_person_id" not in event["data"]
    assert not [e for e in floor.events("door.card_shared") if e["data"]["person_id"] == "alice"]
    assert not floor.module.holds_template()
    assert not floor.relay.energised


def test_a_cloned_uid_without_the_key_is_denied_with_an_alarm(floor: Floor) -> None:
    event = floor.present(ALICE_UID, "alice-1", reader=1, key=False)
    assert (event["kind"], event["data"]["reason"]) == ("door.denied", "clone_suspected")
    alarm = floor.wait_event("door.clone_suspected")
    assert alarm["severity"] == "critical"
    assert not floor.relay.energised


def test_outside_the_schedule_is_denied_without_asking_the_finger(floor: Floor) -> None:
    before = len(floor.module.commands)
    event = floor.present(CAROL_UID, None)
    assert (event["kind"], event["data"]["reason"]) == ("door.denied", "outside_schedule")
    assert len(floor.module.commands) == before  # the sensor was never woken


def test_anti_passback_refuses_a_second_entry_until_an_exit(floor: Floor) -> None:
    again = floor.present(ALICE_UID, "alice-1")  # Alice is inside since the first test
    assert (again["kind"], again["data"]["reason"]) == ("door.denied", "antipassback")
    assert again["data"]["alarms"] == ["antipassback"]
    alarm = floor.wait_event("door.antipassback")  # hard mode: the refusal raises the alarm
    assert (alarm["severity"], alarm["data"]["person_id"], alarm["data"]["reason"]) == (
        "warning", "alice", "antipassback")
    out = floor.present(ALICE_UID, "alice-1", reader=1)
    assert (out["kind"], out["data"]["direction"]) == ("door.granted", "out")
    assert floor.relay.wait_for(True, WAIT)
    assert floor.relay.wait_for(False, WAIT)  # unlock time runs out unopened: relocked


def test_three_failures_lock_the_card_out(floor: Floor) -> None:
    # Bob failed once already (Alice's finger); a finger enrolled nowhere, then Alice's again
    second = present_features(floor, BOB_UID, MALLORY)
    third = floor.present(BOB_UID, "alice-1")
    assert (second["data"]["reason"], third["data"]["reason"]) == (
        "finger_mismatch", "finger_other_person")
    assert second["data"]["detail"] == "no other enrolled finger matches either"
    assert second["data"]["alarms"] == []  # nobody to name: no card-sharing alarm
    assert third["data"]["alarms"] == ["card_shared", "lockout"]
    floor.wait_event("door.card_shared", lambda e: e["data"]["finger_person_id"] == "alice")
    floor.wait_event("door.lockout")
    locked = floor.present(BOB_UID, "bob-1")  # now even his own finger is refused
    assert (locked["kind"], locked["data"]["reason"]) == ("door.denied", "locked_out")


def test_the_card_sharing_events_pass_the_audit_validation() -> None:
    """What the controller emits for card sharing is what the audit chain accepts (no float,
    only JSON values), checked here without the floor; the floor's events above went through
    the agent's spool and the collector for real."""
    outcome = Outcome(False, "finger_other_person", "front", "in", "04B1C2D3E4F501", "bob",
                      ("card_shared", "lockout"), "finger of enrolled person alice", "alice")
    kind, severity, data = outcome_event(outcome, "front-in")
    assert data["finger_person_id"] == "alice"
    AuditEvent("door-front", 1, "boot", utc_timestamp(datetime.now(UTC)), kind, severity,
               "door front", data).validate()


def test_duress_finger_opens_and_raises_a_silent_alarm(floor: Floor) -> None:
    event = floor.present(ALICE_UID, "alice-2")
    assert (event["kind"], event["data"]["reason"]) == ("door.granted", "granted_duress")
    assert event["data"]["alarms"] == []  # the granted event itself gives nothing away
    alarm = floor.wait_event("door.duress")
    assert alarm["severity"] == "critical" and alarm["data"]["person_id"] == "alice"
    assert floor.relay.wait_for(True, WAIT)
    floor.relay.open_door()
    # held open longer than held_open_seconds: an alarm, cleared when it closes
    held = floor.wait_event("door.held_open")
    assert held["severity"] in ("warning", "critical")
    floor.relay.close_door()
    floor.wait_event("door.held_open_cleared")
    assert floor.relay.wait_for(False, WAIT)


def test_a_door_opened_without_a_grant_is_forced(floor: Floor) -> None:
    floor.relay.open_door()
    forced = floor.wait_event("door.forced")
    assert forced["severity"] == "critical"
    floor.relay.close_door()
    floor.wait_event("door.closed")


def test_with_the_collector_down_the_door_decides_from_its_cache(floor: Floor) -> None:
    floor.collector.stop()
    try:
        floor.module.place(FINGERS["alice-1"])
        with VirtualCard.issued(ALICE_UID, floor.site, port=VPCD_PORTS[VPCD_READERS[1]]):
            assert floor.relay.wait_for(True, WAIT)  # Alice (inside) leaves: granted
        floor.module.place(None)
    finally:
        floor.collector.start()
    event = floor.decision(ALICE_UID)  # delivered from the spool once the collector is back
    assert (event["kind"], event["data"]["direction"]) == ("door.granted", "out")
    floor.wait_event("door.sync_failed")


def test_a_killed_controller_leaves_the_door_locked(floor: Floor) -> None:
    floor.module.place(FINGERS["alice-1"])
    with VirtualCard.issued(ALICE_UID, floor.site, port=VPCD_PORTS[VPCD_READERS[0]]):
        assert floor.relay.wait_for(True, WAIT)  # unlocked for Alice ...
    floor.module.place(None)
    assert floor.agent is not None
    os.kill(floor.agent.pid, signal.SIGKILL)  # ... and the controller dies mid-unlock
    floor.agent.wait(10)
    assert floor.relay.wait_for(False, WAIT, connected=False)  # unpowered: locked
    floor.start_agent()  # the next controller takes the door locked
    assert floor.relay.wait_for(False, WAIT, connected=True)
