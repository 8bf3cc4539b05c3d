"""`floor-agent door enroll` at the door's own reader and sensor, and an OSDP reader on the
door controller (libosdp Control Panel over a serial line, a simulated libosdp reader at the
other end), both on the shared simulated door floor with a real collector.

One pcscd per machine with fixed vpcd ports: never beside other pcscd users.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from collector_process import CollectorProcess

from floor_agent.access.config import DoorConfig
from floor_agent.access.serial_line import SerialLine
from floor_agent.simulated.door_floor import (
    ALWAYS,
    VPCD_PORTS,
    VPCD_READERS,
    DoorFloor,
    Finger,
    Holder,
)
from floor_agent.simulated.osdp_reader import SimulatedReader
from floor_agent.simulated.smart_card import VirtualCard

DANA_UID, EVE_UID = bytes.fromhex("04D0D0D0D0D0D0"), bytes.fromhex("04E0E0E0E0E0E0")
NEW_FINGER = b"dana left thumb, enrolled at the door"
WAIT = 20.0


class OsdpFloor(DoorFloor):
    """The shared floor plus an OSDP exit reader on a serial line with its own SCBK."""

    def __init__(self, collector: CollectorProcess, root: Path, line: SerialLine) -> None:
        self.collector = collector
        self.line = line
        self.scbk = secrets.token_bytes(16)
        holders = [Holder("dana", "Dana", DANA_UID, "always",
                          (Finger("dana-1", 1, b"dana right index"),)),
                   Holder("eve", "Eve", EVE_UID, "always", ())]
        super().__init__(collector_url=collector.url, ca=collector.ca,
                         api_key=collector.api_key(), door_token=lambda: collector.token("door"),
                         work=root, holders=holders, levels={"always": ALWAYS},
                         agent_id="door-osdp")

    def _door_config(self, sensor_port: str) -> DoorConfig:
        base = super()._door_config(sensor_port).model_dump(mode="json")
        scbk_file = self.root / "exit-reader.scbk"
        if not scbk_file.exists():
            fd = os.open(scbk_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.scbk.hex() + "\n")
        base["access"]["doors"][0]["readers"][1] = {
            "reader_id": "exit-osdp", "direction": "out", "kind": "osdp",
            "osdp_port": self.line.port, "osdp_address": 1, "osdp_scbk_file": str(scbk_file)}
        return DoorConfig.model_validate(base)


@pytest.fixture(scope="module")
def floor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OsdpFloor, Any]]:
    root = tmp_path_factory.mktemp("door-osdp")
    collector = CollectorProcess(root / "central")
    collector.start()
    line = SerialLine()
    try:
        floor = OsdpFloor(collector, root, line)
        reader = SimulatedReader(line.device, address=1, scbk=floor.scbk)
        reader.start()
        try:
            with floor:
                yield floor, reader
        finally:
            reader.stop()
    finally:
        line.close()
        collector.stop()


def enroll(floor: OsdpFloor, person: str, finger: int, card_uid: bytes | None,
           features: bytes) -> subprocess.CompletedProcess[str]:
    """`floor-agent door enroll` with the agent stopped (the sensor and reader are its)."""
    assert floor.module is not None and floor.site is not None
    floor.stop_agent()
    floor.module.place(features)
    args = [sys.executable, "-m", "floor_agent.cli", "door", "enroll", "--config",
            str(floor.config_path), "--person", person, "--finger", str(finger),
            "--card-timeout", "10"]
    proc = subprocess.Popen(args if card_uid else [*args, "--no-card"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if card_uid is not None:
            time.sleep(0.5)  # the command is waiting for the card
            with VirtualCard.issued(card_uid, floor.site, port=VPCD_PORTS[VPCD_READERS[0]]):
                out, err = proc.communicate(timeout=60)
        else:
            out, err = proc.communicate(timeout=60)
    finally:
        floor.module.place(None)
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def test_enroll_needs_the_persons_own_card(floor: tuple[OsdpFloor, Any]) -> None:
    door, _ = floor
    refused = enroll(door, "dana", 3, EVE_UID, NEW_FINGER)
    assert refused.returncode == 2
    assert f"card {EVE_UID.hex().upper()} is not dana's (it belongs to eve)" in refused.stderr
    assert NEW_FINGER.decode() not in refused.stderr + refused.stdout


def test_a_finger_enrolled_at_the_door_opens_it_after_the_next_sync(
        floor: tuple[OsdpFloor, Any]) -> None:
    door, _ = floor
    done = enroll(door, "dana", 3, DANA_UID, NEW_FINGER)
    assert done.returncode == 0, done.stderr
    assert "enrolled finger 3 of dana as dana-f3-" in done.stdout
    assert door.module is not None and not door.module.holds_template()  # wiped after use
    door.start_agent()
    door.wait_event("door.credentials_updated")
    door.fingers["dana-new"] = NEW_FINGER
    event = door.present(DANA_UID, "dana-new")
    assert (event["kind"], event["data"]["reason"]) == ("door.granted", "granted")
    assert door.relay is not None and door.relay.wait_for(True, WAIT)
    assert door.relay.wait_for(False, WAIT)  # unopened: relocked when the time runs out


def test_an_osdp_read_is_uid_only_and_opens_nothing_under_card_proof(
        floor: tuple[OsdpFloor, Any]) -> None:
    """The OSDP reader sends the UID alone; this site requires the card's proof: denied, and
    the reader's LED and buzzer say so (red, over the secure channel)."""
    door, reader = floor
    door.wait_event("door.reader_online", lambda e: e["data"]["reader_id"] == "exit-osdp")
    assert reader.secure
    reader.present_card(DANA_UID.hex().upper())
    event = door.decision(DANA_UID)
    assert (event["kind"], event["data"]["reason"], event["data"]["reader_id"]) == (
        "door.denied", "card_not_keyed", "exit-osdp")
    assert reader.wait_command("led", WAIT) is not None


def test_osdp_reader_tamper_and_silence_are_alarms(floor: tuple[OsdpFloor, Any]) -> None:
    door, reader = floor
    reader.tamper(True)
    tamper = door.wait_event("door.reader_tamper")
    assert (tamper["severity"], tamper["data"]["reader_id"]) == ("critical", "exit-osdp")
    reader.go_silent()
    offline = door.wait_event("door.reader_offline", timeout=30)
    assert offline["severity"] == "critical"
