"""Role wiring (floor_agent/roles/run.py): which capabilities each role runs, and that every one
started is stopped with the agent, the USB guard included."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from audit_events import enrolled_offline

from floor_agent.access.config import DoorConfig
from floor_agent.cctv.config import CctvConfig
from floor_agent.netlock.runner import NetlockStartError
from floor_agent.roles import run
from floor_agent.roles.config import WorkstationConfig
from floor_agent.usb_guard.guard import UsbGuard
from floor_agent.usb_guard.monitor import UdevMonitor

RULES = Path(__file__).resolve().parents[1] / "config" / "usb-rules.conf"
DOOR = {"door_id": "d1", "name": "Front", "zone_inside": "floor",
        "readers": [{"reader_id": "r1", "pcsc_reader": "ACS"}]}


def names(capabilities: list[Any]) -> list[str]:
    return [type(c).__name__ for c in capabilities]


def test_each_role_runs_the_capabilities_its_file_turns_on() -> None:
    workstation = WorkstationConfig.model_validate(
        {"netlock": {"enabled": True, "allow": [{"name": "c", "addresses": ["10.0.0.1"]}]}})
    assert names(run.capabilities(workstation, "ws.yaml")) == ["UsbGuardRunner", "NetlockRunner"]
    assert names(run.capabilities(WorkstationConfig.model_validate(
        {"usb_guard": {"enabled": False}}), "ws.yaml")) == []
    assert names(run.capabilities(DoorConfig(), "door.yaml")) == []
    door = DoorConfig.model_validate({"access": {"doors": [DOOR]}})
    assert names(run.capabilities(door, "door.yaml")) == ["AccessRunner"]
    cctv = CctvConfig.model_validate(
        {"cctv": {"cameras": [{"camera_id": "c1", "name": "Hall", "url": "/dev/null"}]}})
    assert names(run.capabilities(cctv, "cctv.yaml")) == ["CctvRunner"]
    assert names(run.capabilities(CctvConfig(), "cctv.yaml")) == []


def test_stopping_the_usb_guard_ends_its_event_thread_without_the_agents_shutdown() -> None:
    """UsbGuard.stop ends the udev thread itself: a guard started before another capability
    refused must not run on while the agent exits."""
    import pyudev

    guard = UsbGuard([], lambda *a, **k: None)
    guard.monitor = UdevMonitor(pyudev.Context())
    shutdown = threading.Event()
    guard.thread = guard.monitor.start(guard.handle, shutdown)
    assert guard.healthy()
    guard.stop()
    assert not guard.thread.is_alive()
    assert not shutdown.is_set() and guard.monitor.error is None


class FakeGuard:
    """Stands in for UsbGuard (which would lock down and judge this host's real USB bus)."""

    made: list[FakeGuard] = []

    def __init__(self, rules: list[Any], emit: Any, sys_root: str) -> None:
        self.started = threading.Event()
        self.stopped = False
        FakeGuard.made.append(self)

    def start(self, shutdown: threading.Event) -> None:
        self.started.set()

    def healthy(self) -> bool:
        return not self.stopped

    def stop(self) -> None:
        self.stopped = True


@pytest.fixture
def workstation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkstationConfig]:
    """An enrolled workstation agent without a collector, its USB guard a FakeGuard; the
    signal handlers run_agent installs are put back afterwards."""
    monkeypatch.setattr("floor_agent.usb_guard.runner.UsbGuard", FakeGuard)
    FakeGuard.made.clear()
    state = enrolled_offline(tmp_path / "state", "127.0.0.1")
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield WorkstationConfig.model_validate({
        "audit": {"agent_id": "ws-roles", "state_dir": str(state),
                  "collector_url": "https://127.0.0.1:9"},
        "usb_guard": {"enabled": True, "rules_file": str(RULES), "sys_root": str(tmp_path)}})
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def sigterm_once_the_guard_started() -> None:
    """SIGTERM to this process (as systemctl stop sends it) once the agent's guard started."""
    deadline = time.monotonic() + 30
    while not FakeGuard.made and time.monotonic() < deadline:
        time.sleep(0.01)
    if FakeGuard.made:
        FakeGuard.made[0].started.wait(30)
    os.kill(os.getpid(), signal.SIGTERM)


def test_the_workstation_agent_stops_its_usb_guard_on_shutdown(
        workstation: WorkstationConfig) -> None:
    sender = threading.Thread(target=sigterm_once_the_guard_started, daemon=True)
    sender.start()
    assert run.run_agent(workstation, "ws.yaml") == 0
    sender.join(5)
    assert [g.stopped for g in FakeGuard.made] == [True]


def test_a_refusal_stops_what_already_started(workstation: WorkstationConfig,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """netlock refusing after the USB guard started: exit 2, and the guard is stopped too."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise NetlockStartError("netlock.allow[0].addresses[0]: unknown host 'x.invalid'")

    monkeypatch.setattr("floor_agent.netlock.runner._start", refuse)
    config = workstation.model_copy(update={"netlock": workstation.netlock.model_copy(
        update={"enabled": True})})
    assert run.run_agent(config, "ws.yaml") == 2
    assert [g.stopped for g in FakeGuard.made] == [True]
