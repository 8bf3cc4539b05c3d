"""Lag as a first-class figure (issue 22, point 3): a starved camera sheds analysis, never
recording; the lag reaches the collector's metrics and the dashboard.

- A recorder starved while its camera streams over a real RTSP server (GStreamer) sheds its
  analysis to key frames (cctv.analysis_shed, naming the rate in force), keeps every frame in
  its segments, and restores the analysis once caught up (cctv.analysis_restored);
- sparse frames (shed to key frames ten seconds apart) are never a stopped clock: no false
  frozen alarm;
- each cctv.segment carries the camera's lag; the collector's /metrics has it per camera
  (floor_cctv_lag_seconds, floor_cctv_lagging, floor_cctv_analysis_shed) and the dashboard
  shows it on the cameras page, its tiles and the camera's page.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cctv_recording import Event, WatchedRecorder, of_kind, section, wait_for
from numbered_video import decode_numbers, encode_numbered
from test_cctv_tamper import CONFIG, clocked, run
from test_web_support import WebApp

from floor_agent.cctv.index import SegmentIndex
from floor_agent.cctv.shedding import ShedState, judge
from floor_agent.cctv.source import AnalysisRestored, AnalysisShed, FrameEvent, PacketEvent
from floor_agent.collector.camera_lag import camera_lags
from floor_agent.collector.metrics import render_metrics
from floor_agent.simulated.camera import RtspServer

FPS = 10


@pytest.fixture(scope="module")
def numbered_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 s at 10 fps, a key frame every second (closed GOP, B-frames)."""
    video = tmp_path_factory.mktemp("video") / "camera.mp4"
    encode_numbered(video, 600, shape="closed_gop_b", gop=FPS, fps=FPS)
    return video


class StarvedRecorder(WatchedRecorder):
    """A recorder on a starved box: each packet takes 0.15 s while `slow` is set (the stream
    sends one every 0.1 s). Keeps each analysed frame's time with whether analysis was shed
    when it came."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.slow = threading.Event()
        self.analysed: list[tuple[float, bool]] = []

    def on_event(self, event: object) -> None:
        if isinstance(event, PacketEvent) and self.slow.is_set() and not self._stop.is_set():
            time.sleep(0.15)
        if isinstance(event, FrameEvent):
            self.analysed.append((event.frame.t, self.analysis_shed))
        super().on_event(event)


def test_a_starved_camera_sheds_analysis_never_recording(tmp_path: Path,
                                                         numbered_video: Path) -> None:
    events: list[Event] = []
    with RtspServer({"cam1": numbered_video}) as server:
        config = section(tmp_path / "footage", ("cam1", server.url("cam1")))
        config = config.model_copy(update={"shed_analysis_seconds": 1.0,
                                           "shed_restore_seconds": 1.0,
                                           "lag_alarm_seconds": 30.0})
        with SegmentIndex.in_storage(config.storage_dir) as index:
            recorder = StarvedRecorder(config, 0, index, events)
            recorder.start()
            try:
                wait_for(lambda: recorder.segments >= 1, 30, "a segment")
                assert not of_kind(events, "cctv.analysis_shed")
                recorder.slow.set()
                wait_for(lambda: bool(of_kind(events, "cctv.analysis_shed")), 30,
                         "cctv.analysis_shed")
                time.sleep(6)  # shed a while: a few key frames analysed
                recorder.slow.clear()
                wait_for(lambda: bool(of_kind(events, "cctv.analysis_restored")), 30,
                         "cctv.analysis_restored")
                restored_at = len(recorder.analysed)
                wait_for(lambda: len(recorder.analysed) > restored_at + 20, 30,
                         "full analysis again")
            finally:
                recorder.slow.clear()
                recorder.stop()
            segments = [r.segment for r in index.segments(include_retired=True)]
    shed, restored = of_kind(events, "cctv.analysis_shed"), of_kind(events,
                                                                    "cctv.analysis_restored")
    assert len(shed) == len(restored) == 1
    assert shed[0]["camera_id"] == "cam1" and shed[0]["bound_ms"] == 1000
    assert 1000 < shed[0]["lag_ms"] < 2000
    # the rate in force, named: key frames, one a second (the stream's GOP)
    assert shed[0]["analysis"] == "key frames only (one every 1.00 s: 1 fps)", shed[0]
    assert shed[0]["configured"] == "10 fps"
    assert restored[0]["analysis"] == "10 fps" and restored[0]["lag_ms"] < 500
    assert restored[0]["shed_ms"] > 4000
    severities = {k: s for k, s, _ in events}
    assert severities["cctv.analysis_shed"] == "warning"
    assert severities["cctv.analysis_restored"] == "notice"
    # while shed, the analysis saw key frames only (a second apart; the first may be the
    # decoder's delayed output from before), and full rate again after
    shed_times = [t for t, shed_now in recorder.analysed if shed_now][1:]
    assert len(shed_times) >= 3
    gaps = [b - a for a, b in zip(shed_times, shed_times[1:], strict=False)]
    assert min(gaps) > 0.9, gaps
    after = [t for t, _ in recorder.analysed[-20:]]
    assert min(b - a for a, b in zip(after, after[1:], strict=False)) < 0.15
    # recording was never shed: every frame, in order, none missing
    numbers = decode_numbers([tmp_path / "footage" / s.path for s in segments])
    assert numbers[:-4] == list(range(len(numbers) - 4)), numbers[-8:]
    assert numbers == sorted(set(numbers))
    assert not of_kind(events, "cctv.packets_lost")
    # the frame rate changed: no frozen alarm (the barcode's upper bits change the picture's
    # structure, which reads as "turned" at any rate, shed or not: not asserted here)
    assert not [e for e in of_kind(events, "cctv.tamper") if e["tamper"] == "frozen"]
    # each segment says how far behind the camera was
    lags = [s["lag_ms"] for s in of_kind(events, "cctv.segment")]
    assert all(isinstance(ms, int) and ms >= 0 for ms in lags) and max(lags) > 1000


def test_shed_events_name_the_rate_in_force(tmp_path: Path) -> None:
    """Without a measured key-frame interval, and a camera analysed at 1 fps or less."""
    config = section(tmp_path / "footage", ("cam1", "rtsp://127.0.0.1:9/cam1"))
    slow = config.cameras[0].model_copy(update={"motion": config.cameras[0].motion.model_copy(
        update={"analysis_fps": 0.5})})
    config = config.model_copy(update={"cameras": [config.cameras[0], slow.model_copy(
        update={"camera_id": "cam2"})]})
    events: list[Event] = []
    with SegmentIndex.in_storage(config.storage_dir) as index:
        for camera in (0, 1):
            recorder = WatchedRecorder(config, camera, index, events)
            try:
                recorder.on_event(AnalysisShed("x", 2.5, 1.0, None))
                assert recorder.analysis_shed
                recorder.on_event(AnalysisRestored("x", 0.1, 3.0))
                assert not recorder.analysis_shed
            finally:
                recorder.stop()
    shed, restored = of_kind(events, "cctv.analysis_shed"), of_kind(events,
                                                                    "cctv.analysis_restored")
    assert [(e["camera_id"], e["analysis"], e["configured"], e["lag_ms"], e["bound_ms"])
            for e in shed] == [("cam1", "key frames only", "10 fps", 2500, 1000),
                               ("cam2", "key frames only", "key frames only", 2500, 1000)]
    assert [(e["analysis"], e["lag_ms"], e["shed_ms"]) for e in restored] == [
        ("10 fps", 100, 3000), ("key frames only", 100, 3000)]


def test_sparse_frames_are_never_a_stopped_clock() -> None:
    """A clocked still scene analysed on key frames ten seconds apart (shed while lagging)
    shows the same second on every frame: that is not a frozen picture. At full rate the same
    scene's real freeze still alarms (test_cctv_tamper)."""
    frames = clocked(duration=120)
    dense, _ = run(frames[:300])  # 30 s at 10 fps: the clock's overlay learned
    assert dense.overlay is not None
    sparse = [f for f in frames[300:] if round(f.t * 10) % 100 == 0]  # one every 10 s
    assert len(sparse) >= 8
    state, events = run(frames[:300] + sparse, CONFIG)
    assert events == []
    # back to full rate after the shed: no alarm either
    later = clocked(duration=130)[1200:]
    _, events = run(frames[:300] + sparse + later, CONFIG)
    assert events == []


def test_the_lag_figure_is_the_newest_reported() -> None:
    def state(topic: str, kind: str, ts: str, **data: Any) -> dict[str, Any]:
        return {"agent_id": "box-1", "topic": f"cam:cam1:{topic}", "kind": kind, "ts": ts,
                "data": {"camera_id": "cam1", **data}}

    latest = [state("segment", "cctv.segment", "2026-12-01T08:00:10Z", lag_ms=300),
              state("lag", "cctv.lagging", "2026-12-01T08:00:12Z", lag_ms=5200),
              state("analysis", "cctv.analysis_shed", "2026-12-01T08:00:05Z", lag_ms=1100),
              {"agent_id": "box-1", "topic": "cam:cam2:segment", "kind": "cctv.segment",
               "ts": "2026-12-01T08:00:10Z", "data": {"lag_ms": "7"}},  # not a figure
              {"agent_id": "box-1", "topic": "usb.lock", "kind": "usb.locked_down",
               "ts": "2026-12-01T08:00:10Z", "data": {}}]
    lags = camera_lags(latest)
    assert set(lags) == {("box-1", "cam1"), ("box-1", "cam2")}
    cam1 = lags[("box-1", "cam1")]
    assert (cam1.seconds, cam1.lagging, cam1.analysis_shed) == (5.2, True, True)
    assert lags[("box-1", "cam2")].seconds is None


def segment(camera: str, seq: int, lag_ms: int) -> tuple[str, str, str, dict[str, Any]]:
    return ("cctv.segment", f"camera {camera}", "info",
            {"camera_id": camera, "seq": seq, "lag_ms": lag_ms})


def test_the_lag_is_a_metric_and_on_the_dashboard(web: WebApp) -> None:
    web.agent("box-1", "cctv")
    web.send("box-1", [
        segment("cam1", 1, 200), segment("cam2", 1, 300),
        ("cctv.analysis_shed", "camera cam2", "warning",
         {"camera_id": "cam2", "lag_ms": 1200, "bound_ms": 1000,
          "analysis": "key frames only", "configured": "10 fps"}),
        ("cctv.lagging", "camera cam2", "warning",
         {"camera_id": "cam2", "lag_ms": 6400, "bound_ms": 5000}),
        segment("cam2", 2, 7300)])
    text = render_metrics(web.collector)[0].decode()
    assert 'floor_cctv_lag_seconds{agent_id="box-1",camera="cam1"} 0.2' in text
    assert 'floor_cctv_lag_seconds{agent_id="box-1",camera="cam2"} 7.3' in text
    assert 'floor_cctv_lagging{agent_id="box-1",camera="cam1"} 0.0' in text
    assert 'floor_cctv_lagging{agent_id="box-1",camera="cam2"} 1.0' in text
    assert 'floor_cctv_analysis_shed{agent_id="box-1",camera="cam2"} 1.0' in text
    assert "# TYPE floor_cctv_lag_seconds gauge" in text

    viewer = web.logged_in("ann", "viewer")
    html = viewer.get("/cameras").text
    rows = {row.split('data-camera="')[1].split('"')[0]: row.split("</tr>")[0]
            for row in html.split('data-testid="camera-row"')[1:]}
    assert 'data-testid="camera-lag"' in rows["cam1"] and ">0.2 s<" in rows["cam1"]
    assert ">7.3 s, lagging, analysis shed<" in rows["cam2"]
    tiles = html.split('data-testid="camera-tile"')[1:]
    cam2 = next(t for t in tiles if 'data-camera="cam2"' in t)
    assert 'class="lag bad" data-testid="tile-lag"' in cam2
    assert "lag 7.3 s, lagging, analysis shed" in cam2
    page = viewer.get("/cameras/box-1/cam1").text
    assert 'data-testid="camera-lag" class="ok"' in page and ">0.2 s<" in page
    csv = viewer.get("/cameras?format=csv")
    if csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv"):
        assert "lag" in csv.text.splitlines()[0]

    # caught up: the figures follow
    web.send("box-1", [
        ("cctv.lag_recovered", "camera cam2", "notice",
         {"camera_id": "cam2", "lag_ms": 100, "lagging_ms": 9000}),
        ("cctv.analysis_restored", "camera cam2", "notice",
         {"camera_id": "cam2", "lag_ms": 100, "shed_ms": 9500, "analysis": "10 fps"})])
    text = render_metrics(web.collector)[0].decode()
    assert 'floor_cctv_lag_seconds{agent_id="box-1",camera="cam2"} 0.1' in text
    assert 'floor_cctv_lagging{agent_id="box-1",camera="cam2"} 0.0' in text
    assert 'floor_cctv_analysis_shed{agent_id="box-1",camera="cam2"} 0.0' in text
    html = viewer.get("/cameras").text
    row = html.split('data-testid="camera-row" data-camera="cam2"')[1].split("</tr>")[0]
    assert ">0.1 s<" in row and "lagging" not in row


def test_a_box_at_its_limit_does_not_flap_between_shed_and_full_analysis() -> None:
    """The judgement (cctv/shedding.py): shed at once above the bound; restored only after the
    lag stayed under half of it for the hold; a lag back over half restarts the hold; shed
    again soon after a restore doubles the hold (up to the cap), later it starts afresh."""
    state, t = ShedState(), 0.0

    def at(behind: float, when: float) -> str | None:
        nonlocal state
        state, action = judge(state, behind, when, 1.0, 10.0, 40.0)
        return action

    assert at(0.9, 0.0) is None and at(1.2, 1.0) == "shed" and at(1.5, 1.5) is None
    assert at(0.4, 2.0) is None and at(0.4, 11.0) is None  # 9 s calm: not yet
    assert at(0.6, 11.5) is None  # over half the bound: the hold starts again
    assert at(0.4, 12.0) is None and at(0.4, 21.9) is None and at(0.4, 22.0) == "restore"
    assert at(1.1, 30.0) == "shed" and state.hold == 20.0  # within 2 x 10 s of the restore
    assert at(0.1, 31.0) is None and at(0.1, 50.0) is None and at(0.1, 51.0) == "restore"
    assert at(1.1, 60.0) == "shed" and state.hold == 40.0
    assert at(0.1, 61.0) is None and at(0.1, 101.0) == "restore"
    assert at(1.1, 102.0) == "shed" and state.hold == 40.0  # the cap
    assert at(0.1, 103.0) is None and at(0.1, 143.0) == "restore"
    t = 143.0 + 2 * 40.0 + 1  # restored long enough: the next shed starts from the hold
    assert at(1.1, t) == "shed" and state.hold == 10.0
    assert judge(ShedState(), 99.0, 0.0, 0.0, 10.0, 40.0) == (ShedState(), None)  # 0: never
