"""The recorder end to end: a scripted synthetic camera (H.264 made with PyAV from
camera_scenes), recorded by CameraRecorder (the agent's own pipeline: source, segment writer,
motion, tamper, index, events), then verified and tampered with; and `floor-agent cctv` as its
own process on a real RTSP server, with `cctv verify` and `cctv export` as an admin runs them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from audit_events import enrolled_offline, spooled

from floor_agent.cctv.config import CctvSection
from floor_agent.cctv.index import SegmentIndex
from floor_agent.cctv.recorder import CameraRecorder
from floor_agent.cctv.runner import verify_storage
from floor_agent.simulated.camera import RtspServer, free_port, make_camera_file, make_scene_file
from floor_agent.simulated.camera_scenes import (
    Covered,
    Lighting,
    MovingObject,
    Scene,
    Script,
    Turned,
)

FPS = 10
# a worker crosses, the lights go on, the lens is covered, the camera is turned
SCRIPT = Script(24.0, (
    MovingObject("worker", 2.0, 6.0, (-0.1, 0.55), (1.1, 0.45)),
    Lighting(8.0),
    Covered(11.0, 14.0),
    Turned(17.0, 20.5),
))


def section(storage: Path, url: str, **camera: Any) -> CctvSection:
    return CctvSection.model_validate({
        "storage_dir": str(storage), "segment_seconds": 2.0, "offline_after_seconds": 3.0,
        "reconnect_initial_seconds": 0.2, "reconnect_max_seconds": 1.0,
        "cameras": [{"camera_id": "cam1", "name": "Floor A", "url": url,
                     "motion": {"analysis_fps": 10.0}, **camera}]})


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("cctv")
    video = root / "scene.mp4"
    make_scene_file(video, Scene(256, 144, FPS, seed=7), SCRIPT)
    config = section(root / "footage", str(video))
    config.storage_dir.mkdir()
    events: list[tuple[str, str, dict[str, Any]]] = []
    snapshots: list[tuple[str, bytes]] = []
    index = SegmentIndex.in_storage(config.storage_dir)
    recorder = CameraRecorder(config.cameras[0], config, index,
                              # AuditAgent.emit's own signature: a data key named like
                              # a parameter would be a TypeError there
                              spooled(lambda kind, subject, severity="info", **data:
                                      events.append((kind, severity, data))),
                              snapshot_sink=lambda camera, jpeg: snapshots.append((camera, jpeg)))
    recorder.start()
    # a file plays as fast as it decodes; done when no segment came for a while
    deadline, last_count, quiet_since = time.monotonic() + 90, -1, time.monotonic()
    while time.monotonic() < deadline:
        if recorder.segments != last_count:
            last_count, quiet_since = recorder.segments, time.monotonic()
        elif recorder.segments >= 11 and time.monotonic() - quiet_since > 2.0:
            break
        time.sleep(0.1)
    recorder.stop()
    index.close()
    return {"config": config, "events": events, "segments": recorder.segments,
            "snapshots": snapshots}


def kinds(recorded: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [data for k, _, data in recorded["events"] if k == kind]


def test_segments_are_chained_indexed_and_reported(recorded: dict[str, Any]) -> None:
    segments = kinds(recorded, "cctv.segment")
    assert len(segments) == recorded["segments"] >= 11  # 24 s in 2 s segments
    assert [s["seq"] for s in segments] == list(range(1, len(segments) + 1))
    for previous, current in zip(segments, segments[1:], strict=False):
        assert current["prev_sha256"] == previous["sha256"]
    assert all(1500 <= s["duration_ms"] <= 2600 for s in segments[:-1])
    result = verify_storage(recorded["config"])
    assert result.report.ok, result.lines
    assert result.lines[0].startswith(f"cam1: intact: {len(segments)} segments checked")


def test_a_snapshot_for_the_dashboard_every_ten_seconds(recorded: dict[str, Any]) -> None:
    import cv2
    import numpy as np

    snapshots = recorded["snapshots"]
    seconds = recorded["segments"] * 2  # 2 s segments
    assert len(snapshots) == pytest.approx(seconds / 10, abs=1)
    for camera, jpeg in snapshots:
        assert camera == "cam1" and jpeg[:3] == b"\xff\xd8\xff"
        picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert picture.shape == (144, 256, 3)  # the scene's own size: never upscaled


def test_motion_for_the_worker_and_none_for_the_light(recorded: dict[str, Any]) -> None:
    starts = [e["t_ms"] / 1000 for e in kinds(recorded, "cctv.motion_start")]
    assert any(1.9 <= t <= 2.8 for t in starts), starts
    assert not any(7.5 <= t <= 10.5 for t in starts), starts  # the lights going on
    ends = [e["t_ms"] / 1000 for e in kinds(recorded, "cctv.motion_end")]
    assert any(6.0 <= t <= 12.0 for t in ends), ends
    flagged = [s["seq"] for s in kinds(recorded, "cctv.segment") if s["motion"]]
    assert 2 in flagged and 3 in flagged  # 2-4 s and 4-6 s hold the worker


def test_each_tamper_is_alarmed_within_two_seconds_and_recovers(
        recorded: dict[str, Any]) -> None:
    alarms = {(e["tamper"], e["t_ms"] / 1000) for e in kinds(recorded, "cctv.tamper")}
    covered = [t for k, t in alarms if k == "covered"]
    turned = [t for k, t in alarms if k == "turned"]
    assert covered and 11.0 <= min(covered) <= 13.0, alarms
    assert turned and 17.0 <= min(turned) <= 19.0, alarms
    cleared = {e["tamper"] for e in kinds(recorded, "cctv.tamper_cleared")}
    assert {"covered", "turned"} <= cleared
    severities = {s for k, s, _ in recorded["events"] if k == "cctv.tamper"}
    assert severities == {"critical"}


def test_verify_finds_altered_deleted_and_inserted_footage(recorded: dict[str, Any],
                                                           tmp_path: Path) -> None:
    import shutil

    storage = tmp_path / "copy"
    shutil.copytree(recorded["config"].storage_dir, storage)
    config = recorded["config"].model_copy(update={"storage_dir": storage})
    paths = [s["path"] for s in kinds(recorded, "cctv.segment")]
    altered = storage / paths[2]
    data = bytearray(altered.read_bytes())
    data[len(data) // 2] ^= 0xFF
    altered.write_bytes(bytes(data))
    (storage / paths[4]).unlink()
    planted = storage / Path(paths[6]).with_name("20990101T000000Z.mp4")
    planted.write_bytes((storage / paths[5]).read_bytes())
    result = verify_storage(config)
    found = {(p.kind, p.seq) for p in result.report.problems}
    assert ("altered", 3) in found and ("deleted", 5) in found
    assert any(p.kind == "inserted" for p in result.report.problems), result.lines
    assert result.lines[0].startswith("cam1: BROKEN")


def test_the_cctv_agent_records_an_rtsp_camera_and_admins_verify_and_export(
        tmp_path: Path) -> None:
    video = make_camera_file(tmp_path / "live.mp4")
    with RtspServer({"cam1": video}) as server:
        state = enrolled_offline(tmp_path / "state", "127.0.0.1")
        config_path = tmp_path / "cctv.yaml"
        config_path.write_text(yaml.safe_dump({
            "role": "cctv",
            "audit": {"agent_id": "cctv-test", "state_dir": str(state),
                      "collector_url": "https://127.0.0.1:9"},  # no collector: the spool holds
            "cctv": json.loads(section(tmp_path / "footage", server.url("cam1"))
                               .model_dump_json())}))
        agent = subprocess.Popen([sys.executable, "-m", "floor_agent.cli", "cctv", "--config",
                                  str(config_path)], stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline and len(_segments(state)) < 3:
                time.sleep(0.2)
        finally:
            agent.send_signal(signal.SIGTERM)
            _, err = agent.communicate(timeout=30)
        assert agent.returncode == 0, err.decode()[-2000:]
    recorded_segments = _segments(state)
    assert len(recorded_segments) >= 3
    verify = _cli("cctv", "verify", "--config", str(config_path))
    assert verify.returncode == 0 and "cam1: intact" in verify.stdout, verify.stdout
    start = datetime.fromisoformat(recorded_segments[0]["start"])
    clip = tmp_path / "clip.mp4"
    export = _cli("cctv", "export", "cam1", "--config", str(config_path), "--from",
                  start.isoformat(), "--to", (start + timedelta(seconds=3)).isoformat(),
                  "--reason", "incident 42: check the door", "--out", str(clip))
    assert export.returncode == 0, export.stderr
    proof = json.loads(clip.with_name(clip.name + ".proof.json").read_text())
    assert proof["camera_id"] == "cam1" and len(proof["segments"]) >= 1
    exported = [e for e in _events(state) if e["kind"] == "cctv.export"]
    assert exported and exported[0]["data"]["why"] == "incident 42: check the door"
    assert exported[0]["data"]["who"]
    # looking at footage on the box: the files only after the view is recorded
    looked = _cli("cctv", "view", "cam1", "--config", str(config_path), "--from",
                  start.isoformat(), "--to", (start + timedelta(seconds=3)).isoformat(),
                  "--reason", "incident 42: who opened the door")
    assert looked.returncode == 0, looked.stderr
    files = [Path(line) for line in looked.stdout.splitlines()]
    assert files and all(f.is_file() and f.suffix == ".mp4" for f in files)
    viewed = [e for e in _events(state) if e["kind"] == "cctv.view"]
    assert viewed and viewed[0]["data"]["why"] == "incident 42: who opened the door"
    assert viewed[0]["data"]["segments"] == [s["seq"] for s in recorded_segments][
        :len(files)]
    nothing = _cli("cctv", "view", "cam1", "--config", str(config_path), "--from",
                   "2020-01-01T00:00:00+00:00", "--to", "2020-01-01T00:01:00+00:00",
                   "--reason", "curious")
    assert nothing.returncode == 2 and "no footage" in nothing.stderr
    assert len([e for e in _events(state) if e["kind"] == "cctv.view"]) == 1


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "floor_agent.cli", *args], capture_output=True,
                          text=True, timeout=60, env=dict(os.environ))


def _events(state: Path) -> list[dict[str, Any]]:
    if not (state / "spool.db").exists():
        return []
    with sqlite3.connect(state / "spool.db") as db:
        return [json.loads(b) for (b,) in db.execute("SELECT body FROM pending ORDER BY seq")]


def _segments(state: Path) -> list[dict[str, Any]]:
    try:
        return [e["data"] for e in _events(state) if e["kind"] == "cctv.segment"]
    except sqlite3.OperationalError:
        return []


def test_an_mjpeg_camera_is_recorded_through_opencv(tmp_path: Path) -> None:
    """USB and MJPEG cameras give decoded frames only: the one re-encoding exception, through
    OpenCV, into the same chained segments, with the same motion analysis."""
    import cv2

    from floor_agent.cctv.recorder import uses_opencv

    path = tmp_path / "usb-camera.avi"
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (256, 144))
    script = Script(8.0, (MovingObject("worker", 2.0, 6.0, (-0.1, 0.55), (1.1, 0.45)),))
    for frame in Scene(256, 144, FPS, seed=3).frames(script):
        out.write(cv2.cvtColor(frame.grey, cv2.COLOR_GRAY2BGR))
    out.release()
    assert uses_opencv(str(path)) and uses_opencv("v4l2:///dev/video0")
    assert not uses_opencv("rtsp://10.0.0.5/stream1")
    config = section(tmp_path / "footage", str(path))
    config.storage_dir.mkdir()
    events: list[tuple[str, dict[str, Any]]] = []
    with SegmentIndex.in_storage(config.storage_dir) as index:
        recorder = CameraRecorder(config.cameras[0], config, index,
                                  spooled(lambda kind, subject, severity="info", **data:
                                          events.append((kind, data))))
        recorder.start()
        assert recorder._thread is not None
        recorder._thread.join(60)  # a file: played to its end
        recorder.stop()
    segments = [d for k, d in events if k == "cctv.segment"]
    assert len(segments) == 4 and [s["seq"] for s in segments] == [1, 2, 3, 4]
    assert any(k == "cctv.motion_start" for k, _ in events)
    assert verify_storage(config).report.ok


def test_a_sweep_that_fails_is_a_critical_event_and_stops_the_agent(tmp_path: Path) -> None:
    """The footage directory vanishes under the running agent (its disk unmounted or pulled):
    the periodic retention sweep raises, which is recorded as `cctv.sweep_failed` (critical)
    in the agent's own spool, and the agent exits non-zero so systemd restarts it, rather than
    recording on with no retention (a silently full disk)."""
    state = enrolled_offline(tmp_path / "state", "127.0.0.1")
    footage = tmp_path / "footage"
    cctv = json.loads(section(footage, f"rtsp://127.0.0.1:{free_port()}/cam1")
                      .model_dump_json())
    cctv["sweep_interval_seconds"] = 1.0
    config_path = tmp_path / "cctv.yaml"
    config_path.write_text(yaml.safe_dump({
        "role": "cctv",
        "audit": {"agent_id": "cctv-sweep", "state_dir": str(state),
                  "collector_url": "https://127.0.0.1:9"},  # no collector: the spool holds
        "cctv": cctv}))
    agent = subprocess.Popen([sys.executable, "-m", "floor_agent.cli", "cctv", "--config",
                              str(config_path)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (footage / "index.db").exists():
            time.sleep(0.1)
        time.sleep(1.5)  # the first periodic sweeps run on the intact directory
        assert agent.poll() is None, agent.communicate()[1].decode()[-2000:]
        assert not [e for e in _events(state) if e["kind"] == "cctv.sweep_failed"]
        shutil.rmtree(footage)  # the footage disk is gone
        _, err = agent.communicate(timeout=30)  # the agent stops by itself
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
    assert agent.returncode not in (0, None), err.decode()[-2000:]
    failed = [e for e in _events(state) if e["kind"] == "cctv.sweep_failed"]
    assert len(failed) == 1, [e["kind"] for e in _events(state)]
    assert (failed[0]["subject"], failed[0]["severity"]) == ("cctv storage", "critical")
    assert failed[0]["data"]["error"].startswith("FileNotFoundError: "), failed[0]["data"]
    assert str(footage) in failed[0]["data"]["error"]
    assert b"cctv-sweep failed, stopping the agent" in err, err.decode()[-2000:]
