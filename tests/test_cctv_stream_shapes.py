"""Every stream shape over a real RTSP server, across a reconnect and a service restart
(issue 22, point 6).

Frame-numbered cameras (tests/numbered_video.py) are served by GStreamer's rtsp-server
(floor_agent/simulated/camera.py), which plays a file in real time from each new session's
start, and recorded by the agent's own CameraRecorder, all cameras at once (one scenario of
~25 s, asserted per shape):

1. the first run records every camera for a few seconds;
2. the server goes away mid-stream and comes back (a camera losing power): each camera
   reconnects, a new session from the file's start;
3. the service stops as on SIGTERM (`RunningCctv.stop`: every recorder drains, the index
   closes) and starts again on the same storage (a new index, new recorders continuing each
   chain): a new session again.

For each connection the source delivered packets to the recorder, the segments hold exactly
the pictures of the file's first that-many packets (decode order), in display order, once; the
chain of both runs verifies. Shapes: open GOP with B-frames referencing the previous GOP (RTSP
sends a connection's first packets without a DTS), closed-GOP B-frames, H.265 with and without
open GOP, a variable frame rate with a 3 s hole, a 20 s GOP, and a resolution change mid-stream
over RTSP (an MPEG-TS file whose parameter sets change, served through tsdemux/h264parse: the
segments are cut at each change). Every shape of tests/test_cctv_no_loss.py is served; none
had to be left out.

One more camera switches codec (H.264, then H.265 on the same URL after the reconnect): a
`cctv.bad_input` naming the camera and both codecs, and its H.264 segments are intact.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from cctv_recording import Event, WatchedRecorder, of_kind, record_file, section, wait_for
from numbered_video import (
    decode_numbers,
    encode_numbered,
    encode_resolution_change,
    sent_numbers,
)

from floor_agent.cctv.config import CctvSection
from floor_agent.cctv.index import SegmentIndex
from floor_agent.cctv.model import Segment
from floor_agent.cctv.runner import RunningCctv, verify_storage
from floor_agent.cctv.source import Connected, PacketEvent
from floor_agent.simulated.camera import RtspServer

FPS = 10
FRAMES = 200  # 20 s: longer than any connection of the scenario (the file never ends)
PHASE_PACKETS = 55  # each connection runs until every camera delivered this many packets
SIZES = [(192, 96), (256, 128)]
HOLE_AT = 20  # the variable-rate camera's 3 s hole comes before this frame (a key frame)


def _ts_launch(path: Path) -> str:
    return (f"( filesrc location={path.resolve()} ! tsdemux ! h264parse ! "
            "rtph264pay name=pay0 pt=96 config-interval=1 )")


# shape: how its file is made; the second file is what the codec-switching camera sends
# after the reconnect
SHAPES: dict[str, Callable[[Path], Path]] = {
    "open_gop": lambda p: _mp4(p, "open_gop"),
    "closed_gop_b_frames": lambda p: _mp4(p, "closed_gop_b"),
    "hevc_b_frames": lambda p: _mp4(p, "hevc"),
    "hevc_open_gop": lambda p: _mp4(p, "hevc_open_gop"),
    "variable_rate_3_s_hole": lambda p: _mp4(p, "open_gop", hole=(HOLE_AT, 3.0)),
    "gop_20_s": lambda p: _mp4(p, "open_gop", gop=200),
    "resolution_change": lambda p: _resolution_change(p),
}


def _mp4(path: Path, shape: str, gop: int = 10, **extra: Any) -> Path:
    path = path.with_suffix(".mp4")
    encode_numbered(path, FRAMES, shape=shape, gop=gop, fps=FPS, **extra)
    return path


def _resolution_change(path: Path) -> Path:
    """A change every 3 s: 192x96, 256x128, 192x96, ..."""
    path = path.with_suffix(".ts")
    encode_resolution_change(path, SIZES * 4, 30, fps=FPS, gop=10)
    return path


class CountingRecorder(WatchedRecorder):
    """The real recorder; it also counts the video packets each connection of its main stream
    handed it (a connection's count: what the camera sent that reached the box)."""

    per_connection: list[int]

    def on_event(self, event: object) -> None:
        if isinstance(event, Connected) and event.stream == "main":
            self.per_connection.append(0)
        elif isinstance(event, PacketEvent) and event.packet.stream.type == "video":
            self.per_connection[-1] += 1
        super().on_event(event)


@dataclass
class Scenario:
    config: CctvSection
    files: dict[str, Path]  # camera -> the file it serves first
    switched: Path  # what the codec-switching camera serves after the reconnect
    events: dict[str, list[Event]]
    connections: dict[str, list[int]] = field(default_factory=dict)  # packets per connection
    segments: dict[str, list[Segment]] = field(default_factory=dict)
    took: float = 0.0

    def paths(self, camera: str) -> list[Path]:
        return [self.config.storage_dir / s.path for s in self.segments[camera]]


def _run(config: CctvSection, events: dict[str, list[Event]], until: int
         ) -> tuple[RunningCctv, dict[str, CountingRecorder]]:
    """Start every camera's recorder on the storage (as the service starts); returns once
    each camera's current connection delivered `until` packets."""
    index = SegmentIndex.in_storage(config.storage_dir)
    recorders: dict[str, CountingRecorder] = {}
    for i, camera in enumerate(config.cameras):
        recorder = CountingRecorder(config, i, index, events[camera.camera_id])
        recorder.per_connection = []
        recorders[camera.camera_id] = recorder
    running = RunningCctv(index, dict(recorders))
    for recorder in recorders.values():
        recorder.start()
    _until(recorders, 1, until)
    return running, recorders


def _until(recorders: dict[str, CountingRecorder], connections: int, packets: int) -> None:
    wait_for(lambda: all(len(r.per_connection) >= connections
                         and r.per_connection[-1] >= packets for r in recorders.values()),
             40, f"{packets} packets on connection {connections} of every camera")


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    root = tmp_path_factory.mktemp("shapes")
    files = {name: make(root / name) for name, make in SHAPES.items()}
    files["codec_switch"] = _mp4(root / "switch-h264", "plain")
    switched = _mp4(root / "switch-hevc", "hevc")
    mounts: dict[str, Path | str] = {
        name: _ts_launch(path) if path.suffix == ".ts" else path
        for name, path in files.items()}
    events: dict[str, list[Event]] = {name: [] for name in files}
    began = time.monotonic()
    with RtspServer(mounts) as server:
        config = section(root / "footage", *((name, server.url(name)) for name in files))
        running, recorders = _run(config, events, PHASE_PACKETS)
        # the cameras go away mid-stream and come back (the codec switcher with H.265)
        server.stop()
        wait_for(lambda: all(of_kind(e, "cctv.stream_lost") for e in events.values()), 20,
                 "every stream lost")
        mounts["codec_switch"] = switched
        server.start()
        _until(recorders, 2, PHASE_PACKETS)
        # the service restarts on the same storage
        running.stop()
        first = {name: r.per_connection for name, r in recorders.items()}
        running, recorders = _run(config, events, PHASE_PACKETS)
        running.stop()
    scenario = Scenario(config, files, switched, events, took=time.monotonic() - began)
    with SegmentIndex.in_storage(config.storage_dir) as index:
        for name, recorder in recorders.items():
            scenario.connections[name] = [n for n in first[name] + recorder.per_connection
                                          if n]
            scenario.segments[name] = [r.segment for r in index.segments(name)]
    assert verify_storage(config).report.ok  # both runs' chains, every camera
    return scenario


def _runs(numbers: list[int]) -> list[list[int]]:
    """Decoded numbers split where a new connection started over from the file's start."""
    runs: list[list[int]] = [[]]
    for n in numbers:
        if runs[-1] and n < runs[-1][-1]:
            runs.append([])
        runs[-1].append(n)
    return runs


def _widths(path: Path) -> set[int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return {frame.width for frame in container.decode(stream)} | \
            {stream.codec_context.width}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_frame_served_is_recorded_once_in_order_across_a_reconnect_and_a_restart(
        scenario: Scenario, shape: str) -> None:
    segments, paths = scenario.segments[shape], scenario.paths(shape)
    connections = scenario.connections[shape]
    assert len(connections) == 3, connections  # run 1, the reconnect, the restart
    assert [s.seq for s in segments] == list(range(1, len(segments) + 1)), [
        (s.seq, s.start.time().isoformat(), s.duration, s.packets, s.leading) for s in segments]
    assert sum(s.packets for s in segments) == sum(connections)
    assert not any(s.lost or s.damaged for s in segments)
    assert not of_kind(scenario.events[shape], "cctv.packets_lost")
    assert not of_kind(scenario.events[shape], "cctv.bad_input")
    runs = _runs(decode_numbers(paths))
    assert len(runs) == 3
    for run, delivered in zip(runs, connections, strict=True):
        # exactly the pictures of the packets the connection delivered, once, in order
        assert run == sent_numbers(scenario.files[shape], delivered)
    if shape == "resolution_change":  # a cut at each change, never a mixed segment
        widths = [_widths(p) for p in paths]
        assert all(len(w) == 1 for w in widths), widths
        changes = sum(1 for a, b in zip(widths, widths[1:], strict=False) if a != b)
        assert changes >= 3 * (PHASE_PACKETS // 30)  # each connection crossed a change
    if shape == "gop_20_s":  # no key frame after the first of a connection: one segment each
        assert len(segments) == 3
    if shape in ("open_gop", "hevc_open_gop", "variable_rate_3_s_hole"):
        # cuts inside a connection keep the leading pictures of the next segment
        assert sum(s.leading for s in segments) > 0
    if shape == "variable_rate_3_s_hole":
        # the camera sent nothing for 3 s (a key frame came next): a hole between two
        # segments on the stream's clock, in every connection
        after = [i for i, path in enumerate(paths)
                 if decode_numbers([path], together=False)[0] == HOLE_AT]
        holes = [(segments[i].start - segments[i - 1].start).total_seconds()
                 - segments[i - 1].duration for i in after]
        assert len(holes) == 3 and all(3.0 <= h < 3.3 for h in holes), holes


def test_a_camera_that_switches_codec_is_named_and_what_was_recorded_stays(
        scenario: Scenario) -> None:
    events = scenario.events["codec_switch"]
    bad = of_kind(events, "cctv.bad_input", "codec_switch")
    assert len(bad) == 1, bad
    assert bad[0]["stream"] == "main" and "h264" in bad[0]["reason"] \
        and "hevc" in bad[0]["reason"], bad
    segments, paths = scenario.segments["codec_switch"], scenario.paths("codec_switch")
    codecs = []
    for path in paths:
        with av.open(str(path)) as container:
            codecs.append(container.streams.video[0].codec_context.name)
    h264 = codecs.count("h264")
    assert codecs == ["h264"] * h264 + ["hevc"] * (len(codecs) - h264) and h264 > 0
    connections = scenario.connections["codec_switch"]
    # the H.264 footage recorded before the switch: every frame, its chain intact
    assert sum(s.packets for s in segments[:h264]) == connections[0]
    assert decode_numbers(paths[:h264]) == sent_numbers(scenario.files["codec_switch"],
                                                       connections[0])
    runs = _runs(decode_numbers(paths[h264:]))
    for run, delivered in zip(runs, connections[1:], strict=True):
        assert run == sent_numbers(scenario.switched, delivered)


def test_the_scenario_stays_short(scenario: Scenario) -> None:
    assert scenario.took < 90, scenario.took


# --------------------------------------------------------------------------- bad input
# A camera's file or stream that is damaged: a clear event naming the camera and what was
# wrong, every good frame recorded, and what the storage already held left intact.


def _stored(config: CctvSection) -> list[Segment]:
    with SegmentIndex.in_storage(config.storage_dir) as index:
        # by seq: a file is read faster than real time and timed by its own timestamps from
        # the moment it opened, so a second run's segments can start before the first run's
        # end (the writer keeps segments from overlapping only within one run)
        return sorted((r.segment for r in index.segments("cam1")), key=lambda s: s.seq)


def test_a_truncated_file_is_named_and_nothing_recorded_before_is_lost(tmp_path: Path) -> None:
    """The camera's MPEG-TS file, then the same file cut off inside a transport packet
    (recorded on the same storage, as the next run of the service): `cctv.bad_input` says
    the file is truncated; every picture before the cut is recorded, the first run's
    segments are untouched and the chain verifies. An MP4 cut off (its index lost) does not
    open at all: the camera is offline with FFmpeg's reason."""
    good, cut, cut_mp4 = tmp_path / "good.ts", tmp_path / "cut.ts", tmp_path / "cut.mp4"
    numbers = encode_numbered(good, 40, shape="open_gop", gop=10, fps=FPS)
    data = good.read_bytes()
    cut.write_bytes(data[:len(data) * 6 // 10 + 100])
    footage = tmp_path / "footage"
    _, events = record_file(good, footage)
    config = section(footage, ("cam1", str(good)))
    first = _stored(config)
    assert decode_numbers([footage / s.path for s in first]) == numbers
    _, events = record_file(cut, footage)  # the chain verifies (record_file)
    bad = of_kind(events, "cctv.bad_input", "cam1")
    assert len(bad) == 1 and bad[0]["reason"].startswith("file truncated: it ends "), bad
    stored = _stored(config)
    assert stored[:len(first)] == first  # the first run's records and files as they were
    assert decode_numbers([footage / s.path for s in first]) == numbers
    again = decode_numbers([footage / s.path for s in stored[len(first):]])
    # up to the cut: the pictures of every packet that came before it, in order
    kept = sum(s.packets for s in stored[len(first):])
    assert again == sent_numbers(good, kept) and kept >= 20
    encode_numbered(tmp_path / "good.mp4", 40, shape="open_gop", gop=10, fps=FPS)
    whole = (tmp_path / "good.mp4").read_bytes()
    cut_mp4.write_bytes(whole[:len(whole) * 6 // 10])
    events = []
    config = section(footage, ("cam1", str(cut_mp4)))
    with SegmentIndex.in_storage(footage) as index:
        recorder = WatchedRecorder(config, 0, index, events)
        recorder.start()
        try:
            wait_for(lambda: bool(of_kind(events, "cctv.camera_offline")), 20, "offline")
        finally:
            recorder.stop()
    offline = of_kind(events, "cctv.camera_offline", "cam1")
    assert "InvalidDataError" in offline[0]["reason"], offline
    assert _stored(config) == stored and verify_storage(config).report.ok


def test_garbage_packets_in_a_stream_are_named_and_every_frame_is_kept(tmp_path: Path) -> None:
    """Twenty transport packets of random bytes on the video's PID in the middle of an
    MPEG-TS stream: the picture they fall into is flagged corrupt by the demuxer, kept as
    it came and counted (`damaged`, `cctv.packets_lost`); `cctv.bad_input` names the camera
    and the place; every picture is recorded, in order."""
    clean = tmp_path / "clean.ts"
    numbers = encode_numbered(clean, 60, shape="open_gop", gop=10, fps=FPS)
    data = clean.read_bytes()
    packets = [data[i:i + 188] for i in range(0, len(data), 188)]
    rng = np.random.default_rng(1)
    garbage = [b"\x47\x41\x00" + bytes([0x10 | i % 16]) + rng.bytes(184) for i in range(20)]
    mid = len(packets) // 2
    damaged = tmp_path / "damaged.ts"
    damaged.write_bytes(b"".join(packets[:mid] + garbage + packets[mid:]))
    _, events = record_file(damaged, tmp_path / "footage")  # the chain verifies
    bad = of_kind(events, "cctv.bad_input", "cam1")
    assert bad and bad[0]["stream"] == "main" and bad[0]["reason"].startswith(
        "corrupt packet at "), bad
    lost = of_kind(events, "cctv.packets_lost", "cam1")
    assert sum(e["damaged"] for e in lost) >= 1 and sum(e["count"] for e in lost) == 0
    config = section(tmp_path / "footage", ("cam1", str(damaged)))
    stored = _stored(config)
    assert sum(s.packets for s in stored) == 60
    assert decode_numbers([tmp_path / "footage" / s.path for s in stored]) == numbers
