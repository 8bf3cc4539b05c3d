"""Footage behind an alert, end to end: a real camera box (CameraRecorder on a synthetic RTSP
camera, its real AuditAgent, its SFTP offload to a real sshd), a door controller's signed
`door.forced`, a real collector whose dashboard maps the camera to the door; Debian's Chromium
fetches the clip, which was verified against the segment chain, and plays it; the view is on
the collector's own trail. Then what must be refused: an altered segment, a role without the
`footage` permission, a view without a reason, hostile ids."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser import chromium, new_context
from cctv_recording import section
from collector_process import CollectorProcess
from dashboard_fixtures import (
    create_user,
    door_controller,
    first_login,
    send_pending,
    session_client,
)
from playwright.sync_api import Browser, BrowserContext, Page
from sshd_server import SshdServer

from floor_agent.audit.agent import AuditAgent, enroll
from floor_agent.cctv.config import OffloadConfig
from floor_agent.cctv.index import SegmentIndex
from floor_agent.cctv.offload import Offloader
from floor_agent.cctv.recorder import CameraRecorder
from floor_agent.collector import self_audit
from floor_agent.collector.config import DashboardSettings
from floor_agent.collector.footage_config import FootageSettings
from floor_agent.config.audit import AuditClientConfig
from floor_agent.simulated.camera import RtspServer, SimpleScript, make_camera_file
from floor_agent.store.interface import EventQuery

BOX = "cctv-box-1"
PASSWORD = "correct horse battery staple 19"
REASON = "who forced the front door at night"


@pytest.fixture(scope="module")
def sshd() -> Iterator[SshdServer]:
    with SshdServer() as server:
        yield server


@pytest.fixture(scope="module")
def floor(tmp_path_factory: pytest.TempPathFactory, sshd: SshdServer
          ) -> Iterator[CollectorProcess]:
    root = tmp_path_factory.mktemp("footage")
    known = sshd.write_known_hosts(root / "central.known_hosts")
    settings = FootageSettings.model_validate({
        "enabled": True, "before_seconds": 60, "after_seconds": 30,
        "clip_dir": str(root / "clips"),
        "sftp": {"host": "127.0.0.1", "port": sshd.port, "user": sshd.user,
                 "key_file": str(sshd.client_key), "known_hosts_file": str(known),
                 "remote_dir": "central", "timeout_seconds": 10.0},
        "cameras": [
            {"agent_id": BOX, "camera_id": "cam1", "doors": ["front"], "zones": ["hall"]},
            {"agent_id": BOX, "camera_id": "cam2", "doors": ["loading"],
             "zones": ["yard", "hall"]},
            {"agent_id": "cctv-box-2", "camera_id": "cam9", "doors": ["gate"]}]})
    proc = CollectorProcess(root, dashboard=DashboardSettings(footage=settings))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


class Recorder(CameraRecorder):
    """The camera box's recorder, unchanged, saying when its camera's stream ended."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.segments_sealed = 0

    def _segment(self, segment: Any) -> None:  # the writer's on_segment
        super()._segment(segment)
        self.segments_sealed += 1


@pytest.fixture(scope="module")
def camera_box(floor: CollectorProcess, sshd: SshdServer,
               tmp_path_factory: pytest.TempPathFactory) -> SegmentIndex:
    """cam1 (H.264) and cam2 (H.265) recorded over RTSP for a few seconds by the real
    recorder into 2 s segments, their cctv.segment events sent by the box's enrolled agent,
    and every segment offloaded to the central sshd (remote_dir "central")."""
    root = tmp_path_factory.mktemp("box")
    h264 = make_camera_file(root / "cam1.mp4", script=SimpleScript(seconds=12.0))
    hevc = make_camera_file(root / "cam2.mp4", script=SimpleScript(seconds=12.0), codec="hevc")
    audit = AuditClientConfig(agent_id=BOX, state_dir=root / "agent", collector_url=floor.url,
                              ca_cert=floor.ca, backoff_initial_seconds=0.05,
                              backoff_max_seconds=0.5)
    enroll(audit, "cctv", floor.token("cctv"), floor.ca)
    agent = AuditAgent(audit, "cctv")
    agent.start()
    index = SegmentIndex.in_storage(_mkdir(root / "footage"))
    try:
        with RtspServer({"cam1": h264, "cam2": hevc}) as rtsp:
            config = section(root / "footage", ("cam1", rtsp.url("cam1")),
                             ("cam2", rtsp.url("cam2")))
            recorders = [Recorder(config.cameras[i], config, index, agent.emit)
                         for i in (0, 1)]
            for r in recorders:
                r.start()
            deadline = time.monotonic() + 40
            while min(r.segments_sealed for r in recorders) < 3:
                assert time.monotonic() < deadline, "3 segments per camera not within 40 s"
                time.sleep(0.2)
            for r in recorders:
                r.stop()
        offload = OffloadConfig(enabled=True, host="127.0.0.1", port=sshd.port, user=sshd.user,
                                key_file=sshd.client_key, known_hosts_file=sshd.write_known_hosts(
                                    root / "known"), remote_dir="central")
        # a camera alert too: cam1's lens covered, as the recorder reports it
        agent.emit("cctv.tamper", "camera cam1", "critical", camera_id="cam1", tamper="covered")
        offloader = Offloader(offload, index, config.storage_dir, agent.emit)
        done = offloader.run_once()
        offloader.close()
        assert done.error is None and len(done.uploads) >= 6, done
        deadline = time.monotonic() + 20
        while agent.spool.pending_count():
            assert time.monotonic() < deadline, "the camera box's events not delivered"
            time.sleep(0.1)
    finally:
        agent.stop(drain_seconds=5)
    return index


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def alerts(floor: CollectorProcess, camera_box: SegmentIndex) -> dict[str, int]:
    """door.forced at "front" (cam1), at "loading" (cam2, H.265) and at "back" (no camera),
    from a door controller's signed batch, after the footage was recorded: the alerts' ids."""
    maker = door_controller(floor, "door-ctl-1")
    maker.spool.emit_many([
        ("door.forced", f"door {door}", "critical",
         {"door_id": door, "detail": "opened while locked, without a grant or the exit button"})
        for door in ("front", "loading", "back", "gate")])
    send_pending(floor, maker)
    store = floor.store()
    try:
        found = {a["detail"]: a["id"] for a in store.list_alerts(kind="door.forced")}
        ids = {door: next(i for text, i in found.items() if text.endswith(f"door {door}"))
               for door in ("front", "loading", "back", "gate")}
        ids["tamper"] = next(a["id"] for a in store.list_alerts(kind="cctv.tamper")
                             if a["detail"].endswith("camera cam1"))
    finally:
        store.close()
    return ids


@pytest.fixture(scope="module")
def browser(floor: CollectorProcess) -> Iterator[Browser]:
    with chromium(floor.files.server_cert) as launched:
        yield launched


def _login(browser: Browser, floor: CollectorProcess, name: str, role: str
           ) -> tuple[BrowserContext, Page]:
    context = new_context(browser)
    page = context.new_page()
    first_login(page, floor.url, name, create_user(floor, name, role), PASSWORD)
    return context, page


@pytest.fixture(scope="module")
def viewer(browser: Browser, floor: CollectorProcess) -> Iterator[tuple[BrowserContext, Page]]:
    context, page = _login(browser, floor, "victor", "viewer")
    yield context, page
    context.close()


def _own_events(floor: CollectorProcess, kind: str) -> list[dict[str, Any]]:
    store = floor.store()
    try:
        return store.query_events(EventQuery(agent_id=self_audit.agent_id(floor.config),
                                             kind=kind, limit=100)).events
    finally:
        store.close()


def _client(floor: CollectorProcess, context: BrowserContext) -> httpx.Client:
    """httpx with the browser's session, posting forms as the browser does."""
    client = session_client(floor, context)
    del client.headers["content-type"]  # the agents' client says JSON by default
    return client


def _form(client: httpx.Client, alert_id: int, camera: str, reason: str) -> httpx.Response:
    page = client.get(f"/footage/alert/{alert_id}")
    assert page.status_code == 200, page.text
    csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    return client.post(f"/footage/alert/{alert_id}",
                       data={"camera": camera, "reason": reason, "csrf_token": csrf})


def test_door_alert_clip_is_verified_played_in_chromium_and_logged(
        floor: CollectorProcess, alerts: dict[str, int],
        viewer: tuple[BrowserContext, Page]) -> None:
    context, page = viewer
    page.goto(f"{floor.url}/alerts")
    row = page.locator(f"[data-testid=alert-row][data-alert-id='{alerts['front']}']")
    link = row.locator("[data-testid=footage-link]")
    assert link.count() == 1
    # the door without a camera offers none
    assert page.locator(f"[data-testid=alert-row][data-alert-id='{alerts['back']}'] "
                        "[data-testid=footage-link]").count() == 0
    link.click()
    page.wait_for_url(f"**/footage/alert/{alerts['front']}")
    assert "door front" in page.locator("[data-testid=footage-place]").inner_text()
    page.fill("[data-testid=footage-reason]", REASON)
    with page.expect_navigation():
        page.click("[data-testid=footage-watch]")
    assert "/footage/clips/" in page.url, page.content()[:2000]
    assert "match the camera box's segment chain" in page.locator(
        "[data-testid=clip-verified]").inner_text()
    video = page.locator("[data-testid=clip-video]")
    video.wait_for()
    page.wait_for_function(
        "() => { const v = document.querySelector('[data-testid=clip-video]');"
        " return v && v.readyState >= 2 && v.duration > 0 && !v.error; }", timeout=30_000)
    duration = page.evaluate("document.querySelector('[data-testid=clip-video]').duration")
    assert duration >= 4.0, duration  # at least 3 segments of 2 s, remuxed, not re-encoded
    size = page.evaluate("[document.querySelector('[data-testid=clip-video]').videoWidth,"
                         " document.querySelector('[data-testid=clip-video]').videoHeight]")
    assert size == [320, 180]

    # served with range requests, and only to its viewer
    src = page.locator("[data-testid=clip-video]").get_attribute("src")
    assert src is not None and "#t=" in src
    url, start_at = src.split("#t=")
    # the door was forced after the recording ended: the player starts 5 s before the end
    offset = float(page.locator("[data-testid=clip-video]").get_attribute("data-alert-offset")
                   or "nan")
    assert abs(offset - duration) < 0.6 and float(start_at) == pytest.approx(offset - 5, abs=0.1)
    current = page.evaluate("document.querySelector('[data-testid=clip-video]').currentTime")
    assert abs(current - float(start_at)) < 1.0, (current, start_at)
    with _client(floor, context) as client:
        part = client.get(url, headers={"Range": "bytes=0-99"})
        assert part.status_code == 206 and len(part.content) == 100, part.status_code
        assert part.headers["content-type"] == "video/mp4"
        assert part.content[4:8] == b"ftyp"

    # the view is on the collector's own trail: who, role, why, which segments
    deadline = time.monotonic() + 20
    while not (views := [e for e in _own_events(floor, "footage.viewed")
                         if e["data"].get("what") == "clip"]):
        assert time.monotonic() < deadline, "no footage.viewed on the collector's trail"
        time.sleep(0.2)
    data = views[0]["data"]
    assert data["who"] == "victor" and data["role"] == "viewer" and data["why"] == REASON
    assert data["camera_id"] == "cam1" and data["camera_agent"] == BOX
    assert data["alert_id"] == alerts["front"] and len(data["segments"]) >= 3
    assert data["source"] == "central sftp" and data["codec"] == "h264"


def test_h265_camera_clip_is_offered_for_download(
        floor: CollectorProcess, alerts: dict[str, int],
        viewer: tuple[BrowserContext, Page]) -> None:
    context, page = viewer
    page.goto(f"{floor.url}/footage/alert/{alerts['loading']}")
    page.fill("[data-testid=footage-reason]", "loading bay door forced: who")
    with page.expect_navigation():
        page.click("[data-testid=footage-watch]")
    note = page.locator("[data-testid=clip-note]").inner_text()
    assert "H.265" in note and "Chromium" in note and "download" in note
    assert page.locator("[data-testid=clip-video]").count() == 0
    # what the page says of this browser: Debian's Chromium plays H.264 from MP4, not H.265
    can = page.evaluate("""() => { const v = document.createElement('video'); return [
        v.canPlayType('video/mp4; codecs="avc1.42E01E"'),
        v.canPlayType('video/mp4; codecs="hvc1.1.6.L93.B0"'),
        v.canPlayType('video/mp4; codecs="hev1.1.6.L93.B0"')]; }""")
    assert can[0] in ("probably", "maybe") and can[1:] == ["", ""], can
    href = page.locator("[data-testid=clip-download]").get_attribute("href")
    assert href is not None
    with _client(floor, context) as client:
        got = client.get(href)
    assert got.status_code == 200 and "attachment" in got.headers["content-disposition"]
    head = got.content[:65536]
    assert got.content[4:8] == b"ftyp" and (b"hvc1" in head or b"hev1" in head)


def test_a_camera_alert_offers_the_camera_and_its_zone(
        floor: CollectorProcess, alerts: dict[str, int],
        viewer: tuple[BrowserContext, Page]) -> None:
    with _client(floor, viewer[0]) as client:
        assert f'href="/footage/alert/{alerts["tamper"]}"' in client.get("/alerts").text
        form = client.get(f"/footage/alert/{alerts['tamper']}").text
        assert "camera cam1" in form
        assert f'value="{BOX}/cam1"' in form and f'value="{BOX}/cam2"' in form  # same zone
        got = _form(client, alerts["tamper"], f"{BOX}/cam2", "what covered cam1: the hall")
        assert got.status_code == 303, got.text[:500]
        clip = client.get(got.headers["location"]).text
        assert "cctv.tamper" in clip and "hevc" in clip


def test_a_reason_is_required(floor: CollectorProcess, alerts: dict[str, int],
                              viewer: tuple[BrowserContext, Page]) -> None:
    with _client(floor, viewer[0]) as client:
        for reason in ("", "   ", "\x00\x00"):
            got = _form(client, alerts["front"], f"{BOX}/cam1", reason)
            assert got.status_code == 422, got.status_code
            assert "a reason is required" in got.text
    time.sleep(1.0)  # the collector's own trail delivers within a second
    views = _own_events(floor, "footage.viewed")
    assert views and all(len(e["data"]["why"].strip()) >= 3 for e in views
                         if e["data"].get("what") == "clip")


def test_a_role_without_the_permission_is_refused(
        floor: CollectorProcess, browser: Browser, alerts: dict[str, int],
        viewer: tuple[BrowserContext, Page]) -> None:
    context, page = _login(browser, floor, "otto", "auditor")
    try:
        with _client(floor, context) as otto:
            got = otto.get(f"/footage/alert/{alerts['front']}")
            assert got.status_code == 403 and "may not watch footage" in got.text
            got = otto.post(f"/footage/alert/{alerts['front']}",
                            data={"camera": f"{BOX}/cam1", "reason": "curious"})
            assert got.status_code == 403
            # and no footage link on the auditor's alerts page
            assert 'data-testid="footage-link"' not in otto.get("/alerts").text
            # the auditor reads who watched and why: the camera's footage log
            log = otto.get(f"/cameras/{BOX}/cam1").text
            assert REASON in log and "victor" in log and "clip of alert" in log
    finally:
        context.close()
    # victor's clip is victor's: an admin gives her own reason for her own view
    context, page = _login(browser, floor, "alice", "admin")
    try:
        with _client(floor, viewer[0]) as victor, _client(floor, context) as alice:
            got = _form(victor, alerts["front"], f"{BOX}/cam1", "second look at the door")
            assert got.status_code == 303, got.text[:500]
            clip = got.headers["location"]
            assert victor.get(clip).status_code == 200
            assert alice.get(clip).status_code == 404
            assert alice.get(clip + "/video.mp4").status_code == 404
    finally:
        context.close()


def test_an_altered_segment_is_refused(floor: CollectorProcess, sshd: SshdServer,
                                       alerts: dict[str, int],
                                       viewer: tuple[BrowserContext, Page]) -> None:
    files = sorted((sshd.home / "central" / "cam1").rglob("*.mp4"))
    assert len(files) >= 3
    victim = files[1]
    original = victim.read_bytes()
    altered = bytearray(original)
    altered[len(altered) // 2] ^= 0xFF  # one bit pattern changed, same size
    victim.write_bytes(bytes(altered))
    try:
        with _client(floor, viewer[0]) as client:
            got = _form(client, alerts["front"], f"{BOX}/cam1", "checking the door again")
        assert got.status_code == 409, got.text[:500]
        assert "REFUSED" in got.text and "altered footage is not shown" in got.text
        assert "cam1" in got.text and "altered" in got.text
        assert "/footage/clips/" not in got.text
    finally:
        victim.write_bytes(original)
    deadline = time.monotonic() + 20
    while not (refused := _own_events(floor, "footage.refused")):
        assert time.monotonic() < deadline, "no footage.refused on the collector's trail"
        time.sleep(0.2)
    assert refused[0]["severity"] == "critical" and refused[0]["data"]["altered"] is True
    assert refused[0]["data"]["who"] == "victor"


def test_central_storage_down_is_said_and_recorded(
        floor: CollectorProcess, sshd: SshdServer, alerts: dict[str, int],
        viewer: tuple[BrowserContext, Page]) -> None:
    sshd.stop()
    try:
        with _client(floor, viewer[0]) as client:
            got = _form(client, alerts["front"], f"{BOX}/cam1", "storage down: still try")
    finally:
        sshd.start()
    assert got.status_code == 503, got.status_code
    assert "central footage storage" in got.text and f"127.0.0.1:{sshd.port}" in got.text
    assert "REFUSED" not in got.text
    deadline = time.monotonic() + 20
    while not (refused := [e for e in _own_events(floor, "footage.refused")
                           if e["data"]["why"] == "storage down: still try"]):
        assert time.monotonic() < deadline, "no footage.refused for the outage"
        time.sleep(0.2)
    assert refused[0]["severity"] == "warning" and refused[0]["data"]["altered"] is False


@pytest.mark.parametrize("path", [
    "/footage/alert/0", "/footage/alert/-1", "/footage/alert/abc",
    "/footage/alert/99999999999999999999999", "/footage/alert/1%00",
    "/footage/clips/..%2F..%2Fetc%2Fpasswd", "/footage/clips/short",
    "/footage/clips/" + "A" * 32, "/footage/clips/" + "A" * 32 + "/video.mp4",
    "/footage/clips/" + "A" * 32 + "/video.mp4?download=yes%00"])
def test_hostile_ids_are_refused(floor: CollectorProcess, alerts: dict[str, int],
                                 viewer: tuple[BrowserContext, Page], path: str) -> None:
    with _client(floor, viewer[0]) as client:
        got = client.get(path)
    assert got.status_code in (404, 422), (path, got.status_code)


def test_hostile_camera_and_alert_choices_are_refused(
        floor: CollectorProcess, alerts: dict[str, int],
        viewer: tuple[BrowserContext, Page]) -> None:
    with _client(floor, viewer[0]) as client:
        for camera in ("../../etc/passwd", f"{BOX}/cam2", f"{BOX}/cam9", "x" * 300, ""):
            got = _form(client, alerts["front"], camera, "checking the door")
            assert got.status_code == 422, (camera, got.status_code)
        # a camera that never reported a segment: said, not a clip
        got = _form(client, alerts["gate"], "cctv-box-2/cam9", "who opened the gate")
        assert got.status_code == 404 and "cam9: no recorded segment" in got.text
        # no camera covers the back door: nothing to watch
        assert client.get(f"/footage/alert/{alerts['back']}").status_code == 404
        # a post without the session's CSRF token
        got = client.post(f"/footage/alert/{alerts['front']}",
                          data={"camera": f"{BOX}/cam1", "reason": "no token"})
        assert got.status_code == 403
