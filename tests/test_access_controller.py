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
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from collector_process import CollectorProcess

from floor_agent.access import sitekey
from floor_agent.access.door_io import SimulatedRelay
from floor_agent.access.fingerprint import FingerprintModule
from floor_agent.access.model import Template
from floor_agent.access.sim import VPCD_PORTS, VPCD_READERS, PcscDaemon
from floor_agent.access.sync import SignedClient
from floor_agent.access.templates import seal
from floor_agent.access.virtual_card import VirtualCard
from floor_agent.audit.agent import enroll
from floor_agent.audit.forwarder import pinned_client
from floor_agent.collector.store import EventQuery
from floor_agent.config import AuditClientConfig, DoorConfig

ALICE_UID, BOB_UID, CAROL_UID = (bytes.fromhex(h) for h in (
    "04A224B2C35E80", "04B1C2D3E4F501", "04C0FFEE123456"))
FINGERS = {"alice-1": b"alice right index", "alice-2": b"alice right middle (duress)",
           "bob-1": b"bob right index"}
WAIT = 20.0
HELD_OPEN = 1.0


@dataclass
class Floor:
    """Everything around the door agent process, and what the collector has received."""

    root: Path
    collector: CollectorProcess
    api_key: str
    site: sitekey.SiteKey
    module: Any  # zfm_sim.SimulatedModule
    relay: SimulatedRelay
    config_path: Path
    agent_id: str = "door-front"
    agent: subprocess.Popen[bytes] | None = None
    seen: set[int] = field(default_factory=set)

    def start_agent(self) -> None:
        self.agent = subprocess.Popen(
            [sys.executable, "-m", "floor_agent.cli", "door", "--config", str(self.config_path)],
            stdout=subprocess.DEVNULL, stderr=(self.root / "agent.log").open("ab"))

    def events(self, prefix: str = "door.") -> list[dict[str, Any]]:
        store = self.collector.store()
        try:
            page = store.query_events(EventQuery(agent_id=self.agent_id, kind_prefix=prefix,
                                                 limit=1000))
        finally:
            store.close()
        return sorted(page.events, key=lambda e: e["seq"])

    def wait_event(self, kind: str, where: Callable[[dict[str, Any]], bool] = lambda e: True,
                   timeout: float = WAIT) -> dict[str, Any]:
        """The next event of that kind not seen before (events arrive through the forwarder)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events():
                if event["seq"] in self.seen or event["kind"] != kind:
                    continue
                if where(event):
                    self.seen.add(event["seq"])
                    return event
            time.sleep(0.1)
        log = (self.root / "agent.log").read_text()[-3000:]
        kinds = [(e["kind"], e["data"].get("reason")) for e in self.events()]
        raise AssertionError(f"no {kind} within {timeout} s; events {kinds}\n{log}")

    def present(self, uid: bytes, finger: str | None, *, reader: int = 0,
                key: bool = True) -> dict[str, Any]:
        """A card at a reader, the finger on the sensor; the decision's event."""
        self.module.place(FINGERS[finger] if finger else None)
        card = (VirtualCard.issued(uid, self.site, port=VPCD_PORTS[VPCD_READERS[reader]])
                if key else VirtualCard(uid, None, port=VPCD_PORTS[VPCD_READERS[reader]]))
        with card:
            event = self._decision(uid)
        self.module.place(None)
        return event

    def _decision(self, uid: bytes) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            for event in self.events():
                if event["seq"] in self.seen or event["kind"] not in (
                        "door.granted", "door.denied"):
                    continue
                if event["data"]["uid"] == uid.hex().upper():
                    self.seen.add(event["seq"])
                    return event
            time.sleep(0.1)
        raise AssertionError(f"no decision for {uid.hex()}: "
                             f"{(self.root / 'agent.log').read_text()[-3000:]}")


def admin(collector: CollectorProcess, api_key: str, path: str, body: dict[str, Any]) -> None:
    with pinned_client(collector.url, collector.ca, 5.0) as client:
        response = client.post(path, json=body, headers={"Authorization": f"Bearer {api_key}"})
    assert response.status_code == 201, response.text


@pytest.fixture(scope="module")
def floor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Floor]:
    from floor_agent.access.zfm_sim import SimulatedModule

    root = tmp_path_factory.mktemp("door")
    collector = CollectorProcess(root / "central")
    collector.start()
    pcscd = PcscDaemon(root)
    module = SimulatedModule()
    relay = SimulatedRelay(root / "door.sock")
    floor = None
    try:
        pcscd.start()
        module.start()
        api_key = collector.api_key()
        site = sitekey.generate(root / "site.key")
        # credentials: Alice and Bob any time, Carol in a window that is never now
        now = datetime.now().astimezone()
        never = (now + timedelta(hours=12)).strftime("%H:%M")
        never_end = (now + timedelta(hours=12, minutes=1)).strftime("%H:%M")
        for level, windows in (("always", [{"days": ["mon", "tue", "wed", "thu", "fri", "sat",
                                                      "sun"], "start": "00:00",
                                             "end": "00:00"}]),
                               ("night", [{"days": ["mon", "tue", "wed", "thu", "fri", "sat",
                                                     "sun"], "start": never,
                                           "end": never_end}])):
            admin(collector, api_key, "/api/v1/levels",
                  {"level_id": level, "doors": ["front"], "windows": windows})
        for person, name, level, duress in (("alice", "Alice", "always", [2]),
                                            ("bob", "Bob", "always", []),
                                            ("carol", "Carol", "night", [])):
            admin(collector, api_key, "/api/v1/people",
                  {"person_id": person, "name": name, "access_levels": [level],
                   "duress_fingers": duress})
        for uid, person in ((ALICE_UID, "alice"), (BOB_UID, "bob"), (CAROL_UID, "carol")):
            admin(collector, api_key, "/api/v1/cards", {"uid": uid.hex().upper(),
                                                         "person_id": person})
        door = DoorConfig.model_validate({
            "audit": {"agent_id": "door-front", "state_dir": str(root / "state"),
                      "collector_url": collector.url, "ca_cert": str(collector.ca),
                      "backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.5,
                      "heartbeat_seconds": 5.0},
            "access": {
                "site_key_file": str(root / "site.key"),
                "sync_interval_seconds": 1.0,
                "policy": {"lockout_failures": 3},
                "doors": [{
                    "door_id": "front", "name": "Front door", "zone_inside": "floor",
                    "readers": [{"reader_id": "entry", "direction": "in",
                                 "pcsc_reader": VPCD_READERS[0]},
                                {"reader_id": "exit", "direction": "out",
                                 "pcsc_reader": VPCD_READERS[1]}],
                    "fingerprint": {"port": module.port, "capture_timeout_seconds": 2.0},
                    "io": {"driver": "simulated", "simulated_link": str(root / "door.sock"),
                           "unlock_seconds": 3.0, "held_open_seconds": HELD_OPEN}}]}})
        config_path = root / "door.yaml"
        config_path.write_text(yaml.safe_dump(door.model_dump(mode="json")))
        enroll(door.audit, "door", collector.token("door"), collector.ca)
        # fingerprints enrolled on the module, sealed under the site key, uploaded signed
        client = SignedClient.from_config(AuditClientConfig.model_validate(
            door.audit.model_dump()), "door")
        try:
            for template_id, person, finger in (("alice-1", "alice", 1),
                                                ("alice-2", "alice", 2),
                                                ("bob-1", "bob", 1)):
                module.place(FINGERS[template_id])
                with FingerprintModule(module.port, response_timeout=2.0) as sensor:
                    clear = sensor.enroll(capture_timeout=2.0)
                module.place(None)
                client.upload_template(Template(template_id, person, finger,
                                                seal(site.template_key(), person,
                                                     template_id, clear)))
        finally:
            client.close()
        floor = Floor(root, collector, api_key, site, module, relay, config_path)
        floor.start_agent()
        floor.wait_event("door.credentials_updated")
        assert relay.wait_for(False, WAIT, connected=True)  # the controller holds the door
        yield floor
    finally:
        if floor is not None and floor.agent is not None and floor.agent.poll() is None:
            floor.agent.send_signal(signal.SIGTERM)
            floor.agent.wait(20)
        relay.close()
        module.close()
        pcscd.stop()
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


def test_right_card_with_another_persons_finger_is_denied(floor: Floor) -> None:
    event = floor.present(BOB_UID, "alice-1")
    assert (event["kind"], event["data"]["reason"]) == ("door.denied", "finger_mismatch")
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
    out = floor.present(ALICE_UID, "alice-1", reader=1)
    assert (out["kind"], out["data"]["direction"]) == ("door.granted", "out")
    assert floor.relay.wait_for(True, WAIT)
    assert floor.relay.wait_for(False, WAIT)  # unlock time runs out unopened: relocked


def test_three_failures_lock_the_card_out(floor: Floor) -> None:
    # Bob failed once already (other person's finger); two more lock him out
    second = floor.present(BOB_UID, "alice-2")
    third = floor.present(BOB_UID, "alice-1")
    assert (second["data"]["reason"], third["data"]["reason"]) == (
        "finger_mismatch", "finger_mismatch")
    assert "lockout" in third["data"]["alarms"]
    floor.wait_event("door.lockout")
    locked = floor.present(BOB_UID, "bob-1")  # now even his own finger is refused
    assert (locked["kind"], locked["data"]["reason"]) == ("door.denied", "locked_out")


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
    event = floor._decision(ALICE_UID)  # delivered from the spool once the collector is back
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
