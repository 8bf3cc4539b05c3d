"""The recorder's pipeline under the floor's troubles, in-process through CameraRecorder (the
agent's own source, segment writer, motion, tamper, index and events): a camera losing power
and coming back, an unreachable camera next to a good one, a defocused and a frozen lens, and
motion measured frame by frame against a scripted scene's truth after the real decode path
(H.264 file -> PyAV demux and decode -> small grey frames).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cctv_recording import (
    FPS,
    Event,
    WatchedRecorder,
    of_kind,
    record_file,
    record_scene,
    section,
    wait_for,
)

from floor_agent.cctv import motion
from floor_agent.cctv.index import SegmentIndex
from floor_agent.cctv.runner import verify_storage
from floor_agent.simulated.camera import (
    RtspServer,
    free_port,
    live_launch,
    make_scene_file,
    repeat_frame_from,
)
from floor_agent.simulated.camera_scenes import (
    Clock,
    Defocused,
    Frozen,
    MovingObject,
    Scene,
    Script,
)


def test_a_dropped_stream_reconnects_reports_the_gap_and_records_on(tmp_path: Path) -> None:
    events: list[Event] = []
    with RtspServer({"cam1": live_launch(320, 180, FPS)}) as server:
        config = section(tmp_path / "footage", ("cam1", server.url("cam1")))
        with SegmentIndex.in_storage(config.storage_dir) as index:
            recorder = WatchedRecorder(config, 0, index, events)
            recorder.start()
            try:
                wait_for(lambda: recorder.segments >= 2, 30, "two segments before the drop")
                server.stop()  # the camera loses power: every connection drops
                wait_for(lambda: bool(of_kind(events, "cctv.camera_offline")), 20,
                         "cctv.camera_offline")
                before = recorder.segments
                server.start()
                wait_for(lambda: recorder.segments >= before + 2, 30,
                         "two segments after the camera came back")
            finally:
                recorder.stop()
    kinds = [k for k, _, _ in events]
    order = {k: kinds.index(k) for k in ("cctv.stream_lost", "cctv.camera_offline",
                                         "cctv.camera_online", "cctv.stream_gap")}
    assert order["cctv.stream_lost"] < order["cctv.camera_offline"] < order["cctv.stream_gap"]
    assert order["cctv.camera_offline"] < order["cctv.camera_online"]
    lost = of_kind(events, "cctv.stream_lost")[0]
    assert (lost["camera_id"], lost["stream"]) == ("cam1", "main") and lost["reason"], lost
    assert severities_of(events, "cctv.stream_lost") == {"warning"}
    gap = of_kind(events, "cctv.stream_gap")[0]
    assert gap["stream"] == "main" and gap["gap_ms"] >= 2000, gap  # offline came first
    offline = of_kind(events, "cctv.camera_offline")[0]
    assert offline["reason"].startswith("no frames for"), offline
    assert of_kind(events, "cctv.camera_online")[0]["offline_ms"] > 0
    severities = {k: s for k, s, _ in events}
    assert severities["cctv.camera_offline"] == "critical"
    after_gap = [s for s in of_kind(events, "cctv.segment")
                 if kinds.index("cctv.stream_gap") < _position(events, s)]
    assert len(after_gap) >= 2
    segments = of_kind(events, "cctv.segment")
    assert [s["seq"] for s in segments] == list(range(1, len(segments) + 1))
    for previous, current in zip(segments, segments[1:], strict=False):
        assert current["prev_sha256"] == previous["sha256"]  # one chain across the gap
    result = verify_storage(config)
    assert result.report.ok, result.lines
    assert result.lines[0].startswith(f"cam1: intact: {len(segments)} segments checked")


def severities_of(events: list[Event], kind: str) -> set[str]:
    return {s for k, s, _ in events if k == kind}


def test_a_stream_damaged_on_the_wire_is_reported_and_recorded_on(tmp_path: Path) -> None:
    """An MPEG-TS camera whose packets arrive damaged (TS packets lost, bytes flipped): the
    agent's recorder reports the corrupt input as `cctv.bad_input`, once per reason within the
    repeat window, and keeps recording an intact chain."""
    clean = tmp_path / "clean.ts"
    walk = Script(5.0, (MovingObject("worker", 0.5, 4.5, (-0.1, 0.5), (1.1, 0.5)),))
    make_scene_file(clean, Scene(320, 180, FPS), walk)
    data = clean.read_bytes()
    ts = [bytearray(data[i:i + 188]) for i in range(0, len(data), 188)]
    video = [i for i, p in enumerate(ts) if ((p[1] & 0x1F) << 8 | p[2]) == 0x100]
    lost = set(video[len(video) // 2:len(video) // 2 + 2])
    for i in video[len(video) // 4:len(video) // 3]:
        ts[i][100] ^= 0x5A
    damaged = tmp_path / "damaged.ts"
    damaged.write_bytes(b"".join(p for i, p in enumerate(ts) if i not in lost))
    _, events = record_file(damaged, tmp_path / "footage")  # the chain verifies intact
    bad = of_kind(events, "cctv.bad_input")
    assert bad, [k for k, _, _ in events]
    assert {(b["camera_id"], b["stream"]) for b in bad} == {("cam1", "main")}, bad
    assert bad[0]["reason"].startswith("corrupt packet at "), bad
    assert severities_of(events, "cctv.bad_input") == {"warning"}
    assert of_kind(events, "cctv.segment"), "recording stopped at the damage"
    # the damaged packets are kept as they came, and counted (issue 22: no silent loss)
    segments = of_kind(events, "cctv.segment")
    reported = of_kind(events, "cctv.packets_lost", "cam1")
    assert sum(e["damaged"] for e in segments) == sum(e["damaged"] for e in reported) > 0


def _position(events: list[Event], data: dict[str, Any]) -> int:
    return next(i for i, (_, _, d) in enumerate(events) if d is data)


def test_an_unreachable_camera_is_offline_while_the_good_one_records(tmp_path: Path) -> None:
    events: list[Event] = []
    nobody = f"rtsp://127.0.0.1:{free_port()}/cam"  # a port nobody listens on
    with RtspServer({"good": live_launch(320, 180, FPS)}) as server:
        config = section(tmp_path / "footage", ("good", server.url("good")), ("bad", nobody))
        with SegmentIndex.in_storage(config.storage_dir) as index:
            recorders = [WatchedRecorder(config, i, index, events) for i in (0, 1)]
            for recorder in recorders:
                recorder.start()
            try:
                wait_for(lambda: recorders[0].segments >= 3
                         and bool(of_kind(events, "cctv.camera_offline", "bad")), 40,
                         "three segments from the good camera and the bad one offline")
            finally:
                for recorder in recorders:
                    recorder.stop()
    offline = of_kind(events, "cctv.camera_offline", "bad")
    assert len(offline) == 1  # reported once, not on every retry
    assert "no frames for" in offline[0]["reason"] and "(" in offline[0]["reason"]
    assert "connecting" not in offline[0]["reason"], offline  # the failure itself, in words
    assert recorders[1].segments == 0 and not of_kind(events, "cctv.segment", "bad")
    assert not of_kind(events, "cctv.camera_offline", "good")
    assert len(of_kind(events, "cctv.segment", "good")) >= 3
    result = verify_storage(config)
    assert result.report.ok and result.lines[0].startswith("good: intact"), result.lines


# How the scene reaches the analysis: a 256x144 stream from the encoder's fastest settings
# (no deblocking in the bitstream, no downscale), and a 640x360 sub-stream encoded as cameras
# do (High profile, deblocking, which the analysis decoder skips on frames that are not intra;
# reduced by 3 to 213x120).
ENCODINGS = [pytest.param((256, 144), None, id="fastest-256x144"),
             pytest.param((640, 360), "veryfast", id="camera-640x360")]


WALKER = MovingObject("walker", 0.5, 14, (-0.1, 0.6), (1.1, 0.5))


@pytest.mark.parametrize(("size", "preset"), ENCODINGS)
def test_defocus_through_h264_alarms_within_about_a_second(
        tmp_path: Path, size: tuple[int, int], preset: str | None) -> None:
    happening = Defocused(4, 9)
    recorder, events, _ = record_scene(tmp_path, Script(14, (WALKER, happening)), 5, size,
                                       preset)
    alarms = of_kind(events, "cctv.tamper")
    assert [a["tamper"] for a in alarms] == ["defocused"], alarms
    after = alarms[0]["t_ms"] / 1000 - happening.start
    print(f"tamper defocused through H.264: alarmed {after:.1f} s after it began")
    assert 0 < after <= 1.0 + 1 / FPS + 1e-9  # the hold and a frame
    assert {e["tamper"] for e in of_kind(events, "cctv.tamper_cleared")} == {"defocused"}
    assert {s for k, s, _ in events if k == "cctv.tamper"} == {"critical"}
    assert len(recorder.frames) >= 14 * FPS - 2  # every frame analysed


# The frozen window lowered from its 30 s default to keep the encoded streams short.
FROZEN_WINDOW = {"frozen_seconds": 10.0}
# A camera as they are: sensor noise the encoder keeps only at key frames, vignetting, the
# burned-in clock; a 640x360 sub-stream encoded as cameras do.
CAMERA = {"key_every": FPS, "vignette": 0.3}


def test_a_still_room_then_a_freeze_with_its_clock_through_the_recorder(
        tmp_path: Path) -> None:
    """An encoded stream of a still room with the camera's clock: nothing while it is live
    (the old detector raised "frozen" here within 2 s, again and again); frozen, clock and all,
    the alarm comes after the window, on the stopped clock, and clears when it ticks again."""
    script = Script(50, (Clock(), Frozen(25, 42)))
    _, events, _ = record_scene(tmp_path, script, 3, (640, 360), "veryfast",
                                tamper=FROZEN_WINDOW, **CAMERA)
    alarms = of_kind(events, "cctv.tamper")
    assert [(a["tamper"], a["evidence"]) for a in alarms] == [("frozen", "clock")], alarms
    after = alarms[0]["t_ms"] / 1000 - 25
    print(f"frozen through H.264 with its clock: alarmed {after:.1f} s after the freeze "
          f"({alarms[0]['detail']})")
    assert 10.0 <= after <= 10.0 + 2 / FPS
    assert [e["tamper"] for e in of_kind(events, "cctv.tamper_cleared")] == ["frozen"]
    assert {s for k, s, _ in events if k == "cctv.tamper"} == {"critical"}


def test_a_camera_repeating_one_frame_is_frozen_on_its_packets(tmp_path: Path) -> None:
    """No clock in the picture: the camera's pipeline hangs and it sends its last key frame
    again and again (timestamps still advancing); the recorder's packet facts catch it."""
    live = tmp_path / "live.mp4"
    make_scene_file(live, Scene(320, 180, FPS, seed=4, **CAMERA),  # type: ignore[arg-type]
                    Script(36, ()))
    hung = tmp_path / "hung.mp4"
    assert repeat_frame_from(live, hung, 15.0) >= 20 * FPS
    _, events = record_file(hung, tmp_path / "footage", FROZEN_WINDOW)
    alarms = of_kind(events, "cctv.tamper")
    assert [(a["tamper"], a["evidence"]) for a in alarms] == [("frozen", "stream")], alarms
    assert float(alarms[0]["detail"]["repeated_seconds"]) == pytest.approx(10.0, abs=0.2)
    assert {s for k, s, _ in events if k == "cctv.tamper"} == {"critical"}


CROSSINGS = (
    MovingObject("walker", 1, 6, (-0.1, 0.6), (1.1, 0.55)),
    MovingObject("dark-cart", 8, 14, (1.15, 0.4), (-0.15, 0.45), size=(0.2, 0.2), level=30),
    MovingObject("slow-one", 16, 24, (0.2, -0.2), (0.7, 1.2), size=(0.08, 0.2), level=200),
)


@pytest.mark.parametrize(("size", "preset"), ENCODINGS)
def test_motion_precision_and_recall_through_the_decode_path(
        tmp_path: Path, size: tuple[int, int], preset: str | None) -> None:
    recorder, events, truths = record_scene(tmp_path, Script(26, CROSSINGS), 7, size, preset)
    camera = recorder.camera
    assert len(recorder.frames) >= len(truths) - 2
    assert {frame.grey.shape for frame in recorder.frames} == {
        (144, 256) if size == (256, 144) else (120, 213)}
    state = motion.MotionState()
    tp = fp = fn = 0
    for frame in recorder.frames:  # the decoder's small grey frames, stream time from pts
        truth = truths[round(frame.t * FPS)]
        assert abs(truth.t - frame.t) < 0.5 / FPS
        state, result = motion.step(state, frame, camera.motion)
        moving = truth.moving(camera.motion.min_area)
        tp += result.motion and moving
        fp += result.motion and not moving
        fn += moving and not result.motion
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    print(f"motion through H.264: precision {precision:.3f} recall {recall:.3f} over "
          f"{len(recorder.frames)} frames")
    assert tp > 50
    assert precision >= 0.95 and recall >= 0.95
    starts = [e["t_ms"] / 1000 for e in of_kind(events, "cctv.motion_start")]
    assert starts and 1.0 <= starts[0] <= 1.6, starts  # the walker, as the recorder said
