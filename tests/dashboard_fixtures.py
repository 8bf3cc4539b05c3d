"""What the dashboard's browser tests stand on: users made through the CLI, a browser session,
real signed door batches, and a real workstation agent whose simulated USB bus gets a stick.

Plain functions and one umockdev scenario (module level, so the harness's child imports it);
the pytest fixtures live in the test module.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import yaml
from batches import BatchMaker
from collector_process import CollectorProcess
from playwright.sync_api import BrowserContext, Page
from umockdev_bus import STICK, device_text
from umockdev_harness import BusHandle, bus_text, run_scenario

from floor_agent.access.controller import outcome_event
from floor_agent.access.model import Outcome
from floor_agent.audit.agent import AuditAgent, enroll
from floor_agent.audit.forwarder import pinned_client
from floor_agent.cctv.model import GENESIS_SHA256, Segment
from floor_agent.cctv.recorder import segment_event
from floor_agent.cctv.snapshot import SnapshotUploader, encode_jpeg
from floor_agent.config.audit import AuditClientConfig

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))  # the benchmark's reporting agents, reused

from dashboard_data import enroll_all, floor_agents, report  # noqa: E402

RULES = REPO / "config" / "usb-rules.conf"
USB1 = "/sys/bus/usb/devices/usb1"
SESSION_COOKIE = "floor_session"


def user_command(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`floor-agent collector user ARGS --config CONFIG`, the real CLI in its own process."""
    return subprocess.run([sys.executable, "-m", "floor_agent.cli", "collector", "user", *args,
                           "--config", str(config)], capture_output=True, text=True, timeout=60)


def create_user(collector: CollectorProcess, username: str, role: str) -> str:
    """A new dashboard user; returns the one-time password the command printed (last line)."""
    done = user_command(collector.config_path, "create", "--username", username, "--role", role)
    assert done.returncode == 0, done.stdout + done.stderr
    secret = done.stdout.strip().splitlines()[-1].strip()
    assert len(secret) >= 16 and " " not in secret, done.stdout
    return secret


def log_in(page: Page, url: str, username: str, password: str, next_path: str = "/") -> None:
    page.goto(f"{url}/login?next={next_path}")
    page.fill("form#login input[name=username]", username)
    page.fill("form#login input[name=password]", password)
    with page.expect_navigation():
        page.click("form#login button[type=submit]")


def change_password(page: Page, current: str, new: str) -> None:
    page.fill("input[name=current]", current)
    page.fill("input[name=new]", new)
    page.fill("input[name=confirm]", new)
    with page.expect_navigation():
        page.click("form#password button[type=submit]")


def first_login(page: Page, url: str, username: str, one_time: str, password: str) -> None:
    """Log in with the one-time password and choose one's own, as the dashboard insists."""
    log_in(page, url, username, one_time)
    assert page.url.endswith("/account/password"), page.url
    change_password(page, one_time, password)


def session_client(collector: CollectorProcess, context: BrowserContext) -> httpx.Client:
    """httpx with the browser's session cookie (and nothing else of the browser's)."""
    cookies = {c["name"]: c["value"] for c in context.cookies() if c["name"] == SESSION_COOKIE}
    assert cookies, f"no {SESSION_COOKIE} cookie in the browser: not logged in?"
    client = pinned_client(collector.url, collector.ca, 15.0)
    client.cookies.update(cookies)
    return client


# --- door access events: real signed batches of a door controller ----------------------------

@dataclass(frozen=True)
class Access:
    person: str
    card: str
    door: str
    granted: bool
    reason: str


def door_controller(collector: CollectorProcess, name: str) -> BatchMaker:
    """An enrolled door controller identity (key + spool) whose batches the test sends."""
    maker = BatchMaker(collector.root, name)
    with pinned_client(collector.url, collector.ca, 10.0) as client:
        answer = client.post("/api/v1/enroll", json=maker.enroll_payload(collector.token("door"),
                                                                         "door"))
    assert answer.status_code == 201, answer.text
    return maker


def send_access(collector: CollectorProcess, maker: BatchMaker, accesses: list[Access]) -> None:
    """The access events as the controller emits them (controller.outcome_event), one batch."""
    items = []
    for a in accesses:
        outcome = Outcome(a.granted, a.reason, a.door, "in", a.card, a.person)
        kind, severity, data = outcome_event(outcome, f"{a.door}-in")
        items.append((kind, f"door {a.door}", severity, data))
    maker.spool.emit_many(items)
    send_pending(collector, maker)


def send_pending(collector: CollectorProcess, maker: BatchMaker) -> dict[str, Any]:
    with pinned_client(collector.url, collector.ca, 10.0) as client:
        answer = client.post("/api/v1/ingest", content=maker.body())
    assert answer.status_code == 200, answer.text
    maker.ack(answer.json()["acked_seq"])
    return dict(answer.json())


def send_with_gap(collector: CollectorProcess, maker: BatchMaker, kind: str = "door.state"
                  ) -> None:
    """Events whose first ones never arrive: the collector stores the rest and raises a gap
    (the events themselves are info: the gap is the one alert)."""
    maker.spool.emit_many([(kind, "door front", "info", {"door_id": "front", "detail": n})
                           for n in ("lost", "lost", "kept")])
    _, pending = maker.spool.batch(10)
    maker.spool.acknowledge(pending[1].seq)  # as if the first two had been sent and lost
    answer = send_pending(collector, maker)
    assert answer["acked_seq"] == pending[-1].seq, answer


# --- a camera box: its audit agent and its snapshot uploader ----------------------------------

def camera_box(collector: CollectorProcess, name: str, camera: str) -> None:
    """A cctv agent that reports its camera online and one recorded segment, and uploads the
    camera's latest picture, through the real AuditAgent and SnapshotUploader."""
    audit = AuditClientConfig(agent_id=name, state_dir=collector.root / name,
                              collector_url=collector.url, ca_cert=collector.ca,
                              backoff_initial_seconds=0.05, backoff_max_seconds=0.5)
    enroll(audit, "cctv", collector.token("cctv"), collector.ca)
    picture = np.full((180, 320, 3), 70, np.uint8)
    cv2.rectangle(picture, (40, 40), (140, 120), (20, 200, 240), -1)
    uploader = SnapshotUploader.from_config(audit)
    try:
        uploader.offer(camera, encode_jpeg(picture))
        assert uploader.send_pending() == 1 and not uploader.failing
    finally:
        uploader.close()
    agent = AuditAgent(audit, "cctv")
    agent.start()
    try:
        agent.emit("cctv.camera_online", f"camera {camera}", "notice", camera_id=camera,
                   offline_ms=0)
        segment = Segment(camera, 1, f"{camera}/2026-11-29/08/seg.mp4",
                          datetime.now(UTC), 10.0, 1_250_000, "ab" * 32, GENESIS_SHA256, 250)
        agent.emit("cctv.segment", f"camera {camera}", "info", **segment_event(segment))
        _wait_for(lambda: agent.spool.pending_count() == 0, 20, "the camera box's events sent")
    finally:
        agent.stop(drain_seconds=5)


# --- a real workstation agent on a simulated USB bus -----------------------------------------

def workstation_config(collector: CollectorProcess, name: str) -> Path:
    """A workstation with usb_guard on (rules from config/), enrolled with the collector."""
    config = collector.agent_config(name)
    enroll(config.audit, "workstation", collector.token(), None)
    data = config.model_dump(mode="json")
    data["usb_guard"] = {"enabled": True, "rules_file": str(RULES), "sys_root": "/sys"}
    path = collector.root / f"{name}-usb.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _wait_for(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds} s")
        time.sleep(0.05)


def stick_into_running_agent(tb: BusHandle) -> dict[str, Any]:
    """Scenario (in the umockdev child): start `floor-agent workstation`, wait for its lock
    down, plug the stick when the test says `plug`, stop the agent when it says `done`."""
    here = Path.cwd()
    params = json.loads((here / "scenario.json").read_text())
    with (here / "agent.log").open("ab") as log:
        agent = subprocess.Popen([sys.executable, "-m", "floor_agent.cli", "workstation",
                                  "--config", params["config"]], stdout=log, stderr=log)
    try:
        _wait_for(lambda: Path(f"{USB1}/authorized_default").read_text().strip() == "0", 30,
                  "the agent's lock down")
        (here / "locked").touch()
        _wait_for(lambda: (here / "plug").exists(), 120, "the test's go to plug")
        # kernel: a device plugged after lock down starts unauthorized (authorized_default 0)
        tb.add(device_text(STICK, authorized=0).replace(
            f"P: {STICK.devpath}\n", f"P: {STICK.devpath}\nA: remove=\n", 1))
        _wait_for(lambda: (here / "done").exists(), 120, "the test's done")
        authorized = Path(f"/sys{STICK.devpath}/authorized").read_text().strip()
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(20)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
    return {"returncode": agent.returncode, "stick_authorized": authorized}


@dataclass
class UsbWorkstation:
    """The scenario run in a thread, so the test can watch the browser while the agent runs."""

    root: Path
    config: Path
    result: dict[str, Any] = field(default_factory=dict)
    error: list[BaseException] = field(default_factory=list)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "scenario.json").write_text(json.dumps({"config": str(self.config)}))

        def run() -> None:
            try:
                self.result.update(run_scenario(self.root, stick_into_running_agent,
                                                bus_text(())))
            except BaseException as exc:  # re-raised by stop() in the test's thread
                self.error.append(exc)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        _wait_for(lambda: (self.root / "locked").exists() or bool(self.error), 60,
                  "the workstation agent's lock down")
        self._raise()

    def plug_stick(self) -> None:
        (self.root / "plug").touch()

    def stop(self) -> dict[str, Any]:
        (self.root / "done").touch()
        (self.root / "plug").touch()  # let a scenario still waiting for it finish
        if self.thread is not None:
            self.thread.join(90)
        self._raise()
        return self.result

    def _raise(self) -> None:
        if self.error:
            log = self.root / "agent.log"
            raise AssertionError(f"workstation scenario failed; agent log: "
                                 f"{log.read_text()[-2000:] if log.exists() else '-'}"
                                 ) from self.error[0]


@contextlib.contextmanager
def usb_workstation(collector: CollectorProcess, name: str, root: Path
                    ) -> Iterator[UsbWorkstation]:
    station = UsbWorkstation(root, workstation_config(collector, name))
    station.start()
    try:
        yield station
    finally:
        station.stop()


@contextlib.contextmanager
def reporting_agents(collector: CollectorProcess, rate: float, workstations: int = 12
                     ) -> Iterator[list[str]]:
    """Some of the benchmark's agents (bench/dashboard_data.py: workstations and a camera box;
    no door controller, whose people would show in the door tests' log) sending their real
    mix of events at `rate` events/s overall, over HTTPS, until the block ends; yields their
    ids. Enrolled straight into the store, as the benchmark does."""
    everyone = floor_agents()
    agents = ([a for a in everyone if a.role == "workstation"][:workstations]
              + [next(a for a in everyone if a.role == "cctv")])
    store = collector.store()
    try:
        enroll_all(store, agents)
    finally:
        store.close()
    stop = threading.Event()
    sent: list[int] = []
    thread = threading.Thread(target=lambda: sent.append(
        report(agents, collector.url, collector.ca, rate, stop)), daemon=True)
    thread.start()
    try:
        yield [a.agent_id for a in agents]
    finally:
        stop.set()
        thread.join(30)
    assert sent and sent[0] > 0, "the reporting agents sent nothing"


def screenshot(page: Page, name: str, *dirs: Path) -> list[Path]:
    """The full page as NAME.png in each directory (the first write is copied)."""
    paths = []
    for directory in dirs:
        directory.mkdir(parents=True, exist_ok=True)
        paths.append(directory / f"{name}.png")
    page.screenshot(path=str(paths[0]), full_page=True)
    for other in paths[1:]:
        other.write_bytes(paths[0].read_bytes())
    return paths
