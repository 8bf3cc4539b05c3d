"""The door controller when something breaks: a template that cannot be unsealed, the door's
relay link cut under a grant or under an unlocked door, a site key the controller cannot use.

The door is in process (a DoorRunner on the simulated door behind its relay link, the
fingerprint module simulator on a pty, the credentials cache on disk) and its events go
through a real Spool (AuditRecorder), so each alarm is also one the audit chain accepts. The
site key case runs `floor-agent door` itself: its refusal is read from the agent's own spool.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from datetime import time as clock
from pathlib import Path
from typing import Any

import pytest
import yaml
from audit_events import AuditRecorder, enrolled_offline

from floor_agent.access import templates
from floor_agent.access.cache import CredentialsCache
from floor_agent.access.config import AccessPolicyConfig, DoorSection
from floor_agent.access.controller import AccessController, DoorRunner
from floor_agent.access.fingerprint import FingerprintModule
from floor_agent.access.model import CardRead
from floor_agent.access.runner import open_door_io
from floor_agent.access.sitekey import SiteKey
from floor_agent.protocol.credentials import (
    AccessLevel,
    Card,
    Credentials,
    Person,
    Template,
    TimeWindow,
)
from floor_agent.simulated.door import SimulatedRelay
from floor_agent.simulated.fingerprint_module import SimulatedModule, char_file

REPO = Path(__file__).resolve().parents[1]
SITE = SiteKey(bytes(range(32)))
OTHER_SITE = SiteKey(bytes(range(32, 64)))  # another site's key: its seals do not open here
FEATURES = b"ada/right-index"
UID = "04A224B2C35E80"
POLICY = AccessPolicyConfig(require_card_proof=False, antipassback="off")
WAIT = 10.0  # bound on a worker or the door loop reacting; not a timing target


def credentials(sealing_key: SiteKey) -> Credentials:
    """Ada, allowed at any time, her one finger sealed under `sealing_key`."""
    always = AccessLevel("always", frozenset({"lab"}),
                         (TimeWindow(frozenset(range(7)), clock(0), clock(0)),))
    sealed = templates.seal(sealing_key.template_key(), "p-ada", "t-ada",
                            char_file(FEATURES, 10**6))
    return Credentials({"p-ada": Person("p-ada", "Ada", True, ("always",))},
                       {UID: Card(UID, "p-ada", keyed=False)}, {"always": always},
                       frozenset(), {"p-ada": (Template("t-ada", "p-ada", 1, sealed),)}, 1)


class Door:
    """One door in process, as AccessRunner.start opens it (open_door_io on the relay link)."""

    def __init__(self, root: Path, module: SimulatedModule, sealing_key: SiteKey,
                 unlock_seconds: float = 5.0) -> None:
        self.module = module
        self.relay = SimulatedRelay(root / "door.sock")
        self.events = AuditRecorder(root / "events")
        self.cache = CredentialsCache(root / "credentials.db")
        self.cache.replace(credentials(sealing_key))
        self.controller = AccessController(POLICY, SITE, self.cache, self.events, UTC)
        self.section = DoorSection.model_validate({
            "door_id": "lab", "name": "Lab", "zone_inside": "lab",
            "readers": [{"reader_id": "lab-in", "pcsc_reader": "Virtual PCD 00 00"}],
            "fingerprint": {"port": module.port, "capture_timeout_seconds": 1.0,
                            "response_timeout_seconds": 0.5},
            "io": {"driver": "simulated", "simulated_link": str(root / "door.sock"),
                   "unlock_seconds": unlock_seconds, "held_open_seconds": 30.0}})
        self.finger = FingerprintModule(module.port, response_timeout=0.5)
        self.runner = DoorRunner(self.controller, self.section, open_door_io(self.section),
                                 self.finger)
        self.shutdown = threading.Event()
        self.runner.start(self.shutdown)
        assert self.relay.wait_for(False, WAIT, connected=True)

    def card(self) -> CardRead:
        return CardRead("lab", "lab-in", "in", UID, datetime.now(UTC))

    def wait_kind(self, kind: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if found := self.events.of(kind):
                return found[0]
            time.sleep(0.02)
        raise AssertionError(f"no {kind} within {WAIT} s; emitted {self.events.kinds()}")

    def severity(self, kind: str) -> str:
        return next(severity for k, _, severity, _ in self.events.items if k == kind)

    def close(self) -> None:
        self.shutdown.set()
        self.runner.stop()
        self.finger.close()
        self.relay.close()
        self.cache.close()
        self.events.close()


@pytest.fixture
def module() -> Iterator[SimulatedModule]:
    with SimulatedModule() as sim:
        yield sim


def test_a_template_that_cannot_be_unsealed_is_an_alarm_and_never_reaches_the_sensor(
        tmp_path: Path, module: SimulatedModule) -> None:
    """Ada's template was sealed under another site's key (enrolled at the wrong site, or the
    site key replaced): her finger cannot be checked, so the card is denied with an alarm."""
    door = Door(tmp_path, module, OTHER_SITE)
    try:
        module.place(FEATURES)  # the right finger on the sensor: it is not asked anyway
        outcome = door.runner.handle(door.card())
        assert not outcome.granted
        assert outcome.reason == "sensor_unavailable"  # no match is possible: never a grant
        assert module.commands == []  # nothing was offered to the sensor, not even a capture
        invalid = door.wait_kind("door.template_invalid")
        assert invalid == {"door_id": "lab", "person_id": "p-ada", "templates": ["t-ada"]}
        assert door.severity("door.template_invalid") == "critical"
        assert door.events.of("door.denied")[0]["uid"] == UID
        assert "door.granted" not in door.events.kinds()
        assert not module.holds_template()
        assert not door.relay.energised and door.relay.history[-1][1] is False
    finally:
        door.close()


def test_a_relay_link_cut_under_a_grant_is_a_door_error_and_the_worker_goes_on(
        tmp_path: Path, module: SimulatedModule) -> None:
    """The decision is a grant but the relay cannot be driven: the request worker reports
    door.error (the reader's card, the I/O error) instead of dying, and takes the next card."""
    door = Door(tmp_path, module, SITE, unlock_seconds=60.0)  # no relock during the test
    try:
        door.relay.close()  # the link to the lock relay is gone (cable, relay board)
        module.place(FEATURES)
        door.runner.on_card(door.card())  # as the reader's thread hands it over
        error = door.wait_kind("door.error")
        assert door.severity("door.error") == "critical"
        assert (error["door_id"], error["reader_id"], error["uid"]) == ("lab", "lab-in", UID)
        assert error["error"].startswith("DoorIoError: relay link:"), error
        assert door.events.of("door.granted")[0]["uid"] == UID  # decided, not carried out
        assert "door.unlocked" not in door.events.kinds()
        door.runner.on_card(door.card())  # the worker is still there for the next card
        deadline = time.monotonic() + WAIT
        while len(door.events.of("door.granted")) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(door.events.of("door.granted")) == 2
        assert door.runner.healthy()
        assert "door.controller_failed" not in door.events.kinds()
    finally:
        module.place(None)
        door.close()


def test_a_relay_link_cut_while_unlocked_stops_the_controller_with_an_alarm(
        tmp_path: Path, module: SimulatedModule) -> None:
    """The door is unlocked by a grant, then the relay link breaks: the door loop cannot
    relock it when the unlock time ends, so the controller fails loudly (door.controller_failed,
    the agent's shutdown asked so systemd restarts it) rather than looking like a quiet door."""
    door = Door(tmp_path, module, SITE, unlock_seconds=0.5)
    try:
        module.place(FEATURES)
        assert door.runner.handle(door.card()).granted
        assert door.relay.wait_for(True, WAIT)
        door.relay.close()
        failed = door.wait_kind("door.controller_failed")
        assert door.severity("door.controller_failed") == "critical"
        assert failed["error"].startswith("DoorIoError: relay link:"), failed
        assert door.shutdown.wait(WAIT)
        assert not door.runner.healthy()
        assert isinstance(door.runner.error, Exception)
        kinds = door.events.kinds()
        assert "door.relocked" not in kinds[kinds.index("door.unlocked"):]  # it could not be
    finally:
        module.place(None)
        door.close()


def _spooled(state: Path) -> list[tuple[str, str, dict[str, Any]]]:
    with sqlite3.connect(state / "spool.db") as db:
        rows = db.execute("SELECT body FROM pending ORDER BY seq").fetchall()
    events = [json.loads(body) for (body,) in rows]
    return [(e["kind"], e["severity"], e["data"]) for e in events]


def test_a_door_yaml_naming_a_site_key_others_can_read_is_refused_with_an_event(
        tmp_path: Path) -> None:
    """`floor-agent door` with a door.yaml whose site key file is world-readable (a copy made
    with the wrong umask): the controller refuses to start (exit 2, doors locked) and the
    refusal is an audit event in the agent's spool, waiting for the collector."""
    state = enrolled_offline(tmp_path / "state", "127.0.0.1")
    key_file = tmp_path / "site.key"
    key_file.write_text(SITE.secret.hex() + "\n")
    key_file.chmod(0o644)
    # the door's link leads nowhere: had the controller opened its door before the key, the
    # refusal would name the link, not the key
    config = {
        "role": "door",
        "audit": {"agent_id": "door-lab", "state_dir": str(state),
                  "collector_url": "https://127.0.0.1:9"},
        "access": {"site_key_file": str(key_file), "doors": [{
            "door_id": "lab", "name": "Lab", "zone_inside": "lab",
            "readers": [{"reader_id": "lab-in", "pcsc_reader": "Virtual PCD 00 00"}],
            "io": {"driver": "simulated", "simulated_link": str(tmp_path / "door.sock")}}]}}
    path = tmp_path / "door.yaml"
    path.write_text(yaml.safe_dump(config))
    run = subprocess.run([sys.executable, "-m", "floor_agent.cli", "door", "--config",
                          str(path)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stderr
    assert "door controller refuses to start" in run.stderr and str(key_file) in run.stderr
    events = _spooled(state)
    invalid = [(severity, data) for kind, severity, data in events
               if kind == "door.config_invalid"]
    assert len(invalid) == 1, events
    severity, data = invalid[0]
    assert severity == "critical"
    assert data == {"error": f"{key_file}: readable by others (mode 644); chmod 600 it"}
    assert SITE.secret.hex() not in json.dumps(events)  # the key is named, never shown
    assert [kind for kind, _, _ in events][-1] == "agent.stopped"
