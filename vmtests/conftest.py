"""Fixtures of the VM suite (`make vm-test`): the image, a collector on the host, one guest.

The guest is booted once per session (a boot costs ~30-60 s of emulated CPU); the tests run in
file order on it and each one leaves the bus as it found it (its devices unplugged).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from image import COLLECTOR_NAME, Image, build  # noqa: E402
from vm import Guest  # noqa: E402

from floor_agent.collector.config import CollectorConfig, CollectorSection  # noqa: E402
from floor_agent.store import open_store  # noqa: E402
from floor_agent.store.interface import EventQuery  # noqa: E402

FLOOR_AGENT = [sys.executable, "-m", "floor_agent.cli"]
AGENT_ID = "floor-vm-workstation"      # the config's default: <hostname>-workstation
TIMINGS: dict[str, float] = {}


def timing(name: str, seconds: float) -> None:
    """A figure for BENCHMARKS.md, printed at the end of the session."""
    TIMINGS[name] = round(seconds, 2)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if TIMINGS:
        print("\nVM timings (s): " + json.dumps(TIMINGS), file=sys.stderr)


class HostCollector:
    """A real collector on the host's loopback; the guest reaches it through QEMU's guestfwd
    as https://collector.vm:8443."""

    def __init__(self, root: Path) -> None:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.config = CollectorConfig(collector=CollectorSection(
            state_dir=root / "state", listen_port=self.port,
            server_names=[COLLECTOR_NAME, "127.0.0.1"],
            backup={"directory": root / "backups"}))
        self.path = root / "collector.yaml"
        self.path.write_text(yaml.safe_dump(self.config.model_dump(mode="json")))
        subprocess.run([*FLOOR_AGENT, "collector", "init", "--config", str(self.path)],
                       check=True, capture_output=True)
        self.ca = root / "state" / "tls" / "ca.pem"
        self.log = (root / "collector.log").open("wb")
        self.proc = subprocess.Popen([*FLOOR_AGENT, "collector", "run", "--config",
                                      str(self.path)], stdout=self.log, stderr=subprocess.STDOUT)
        # Whose events events() reads: a module testing another role sets its agent's id.
        self.agent_id = AGENT_ID

    def token(self, role: str = "workstation") -> str:
        out = subprocess.run([*FLOOR_AGENT, "collector", "token", "create", "--role",
                              role, "--config", str(self.path)],
                             check=True, capture_output=True, text=True).stdout
        return next(line for line in out.splitlines() if line.startswith("fa-enroll-"))

    def events(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        store = open_store(self.config.collector.resolved_database_url())
        try:
            rows = store.query_events(EventQuery(agent_id=self.agent_id, kind=kind,
                                                 limit=500)).events
        finally:
            store.close()
        return [row for row in rows
                if all(row["data"].get(key) == value for key, value in match.items())]

    def wait_event(self, kind: str, seconds: float = 60, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found = self.events(kind, **match)
            if found:
                return found[0]
            time.sleep(0.1)
        raise AssertionError(f"no {kind} {match} at the collector within {seconds} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="session")
def image() -> Image:
    t0 = time.monotonic()
    built = build()
    timing("image_build_or_cache", time.monotonic() - t0)
    return built


def enroll(vm: Guest, collector: HostCollector) -> None:
    """As the README says: pin the collector's CA, enroll with a one-time token; then start
    the unit (before enrollment it refused to start, exit 2, and systemd left it failed)."""
    vm.write("/root/collector-ca.pem", collector.ca.read_bytes())
    vm.run(["floor-agent", "enroll", "--config", "/etc/floor-agent/workstation.yaml",
            "--token", collector.token(), "--ca", "/root/collector-ca.pem"], timeout=180)
    vm.run("systemctl reset-failed floor-agent.service; systemctl restart floor-agent.service",
           timeout=300)


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostCollector]:
    """A fresh collector per test module: each module's guest enrolls the same agent id."""
    running = HostCollector(tmp_path_factory.mktemp("collector"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def guest(image: Image, collector: HostCollector,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    """The enrolled workstation, one boot per test module (never two VMs at a time)."""
    vm = Guest(image, tmp_path_factory.mktemp("vm"), collector.port)
    try:
        ready = vm.wait_ready(600)
        timing("qemu_start_to_test_channel", time.monotonic() - vm.started)
        timing("guest_uptime_at_test_channel", ready["uptime"])
        vm.run("systemctl is-system-running --wait", timeout=600, check=False)
        timing("qemu_start_to_system_running", time.monotonic() - vm.started)
        t0 = time.monotonic()
        enroll(vm, collector)
        timing("enroll_and_start_to_ready", time.monotonic() - t0)
        yield vm
    finally:
        vm.close()
