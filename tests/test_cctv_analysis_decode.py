"""What the source's decoders may leave out, and what that costs: the analysis decoder skips the
deblocking filter on frames that are not intra (the small frames move by a fraction of a grey
level, key frames not at all), and a stream that is only copied is opened without decoding
(its size and codec still known, its segments whole)."""

from __future__ import annotations

import threading
from pathlib import Path

import av
import numpy as np
import pytest

from floor_agent.cctv.model import SmallFrame
from floor_agent.cctv.segments import SegmentWriter
from floor_agent.cctv.source import (
    CameraSource,
    Connected,
    FrameEvent,
    PacketEvent,
    SourceEvent,
    SourceFinished,
    SourceSettings,
)
from floor_agent.simulated.camera import SimpleScript, encode_video, simple_scene

FPS = 10


@pytest.fixture(scope="module")
def camera_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 s of a noisy 640x360 scene as a camera encodes it (High profile, deblocking on)."""
    path = tmp_path_factory.mktemp("decode") / "sub.mp4"
    script = SimpleScript(seconds=4, noise=3.0)
    encode_video(path, simple_scene(640, 360, FPS, script), FPS, bit_rate=500_000,
                 preset="veryfast")
    return path


def key_frames(path: Path) -> list[bool]:
    with av.open(str(path)) as container:
        return [frame.key_frame for frame in container.decode(video=0)]


def run(url: str, settings: SourceSettings, detect_url: str | None = None,
        writer: SegmentWriter | None = None) -> list[SourceEvent]:
    """Every event of a file source played to its end (both streams, if two), its packets
    written by `writer` as they come (a packet lives as long as its stream is open)."""
    events: list[SourceEvent] = []
    ended: set[str] = set()
    done = threading.Event()
    expected = {"main"} | ({"detect"} if detect_url else set())

    def on_event(event: SourceEvent) -> None:
        events.append(event)
        if writer is not None and isinstance(event, PacketEvent):
            writer.write(event.packet, event.at)
        if isinstance(event, SourceFinished):
            ended.add(event.stream)
            if ended >= expected:
                done.set()

    with CameraSource("cam1", url, on_event, detect_url=detect_url, settings=settings):
        assert done.wait(60), f"the source never finished: {ended} of {expected}"
    return events


def small_frames(path: Path, skip_deblocking: bool) -> list[SmallFrame]:
    settings = SourceSettings(analysis_fps=30.0, skip_deblocking=skip_deblocking)
    return [e.frame for e in run(str(path), settings) if isinstance(e, FrameEvent)]


def test_skipping_deblocking_moves_the_small_frame_by_under_a_grey_level(
        camera_like: Path) -> None:
    keys = key_frames(camera_like)
    full = small_frames(camera_like, skip_deblocking=False)
    skipped = small_frames(camera_like, skip_deblocking=True)
    assert len(full) == len(skipped) == len(keys) == 4 * FPS
    differences = []
    for key, a, b in zip(keys, full, skipped, strict=True):
        assert a.t == b.t and a.grey.shape == b.grey.shape == (120, 213)
        difference = np.abs(a.grey.astype(np.int16) - b.grey.astype(np.int16))
        if key:  # intra frames keep their filter, and the drift ends there
            assert not difference.any()
        else:
            differences.append(difference)
    # the filter was skipped (the frames differ) ...
    assert sum(bool(d.any()) for d in differences) >= len(differences) // 2
    # ... and the analysis sees almost nothing of it: far below motion's threshold (25)
    assert max(float(d.mean()) for d in differences) < 1.0
    assert max(int(d.max()) for d in differences) < 25


def test_a_stream_only_copied_opens_without_decoding_and_records_whole(
        camera_like: Path, tmp_path: Path) -> None:
    """The Frigate layout: the main stream is copied, motion reads the detect stream. The
    main stream's probe decodes nothing, yet its size is known and its packets make playable
    segments."""
    segments: list[object] = []
    writer = SegmentWriter("cam1", tmp_path, segments.append, segment_seconds=2.0)
    events = run(str(camera_like), SourceSettings(analysis_fps=5.0),
                 detect_url=str(camera_like), writer=writer)
    writer.close()
    connected = {e.stream: (e.codec, e.width, e.height) for e in events
                 if isinstance(e, Connected)}
    assert connected == {"main": ("h264", 640, 360), "detect": ("h264", 640, 360)}
    assert sum(isinstance(e, PacketEvent) for e in events) == 4 * FPS
    assert len(segments) == 2
    decoded = 0
    for segment in segments:
        with av.open(str(tmp_path / segment.path)) as container:  # type: ignore[attr-defined]
            for frame in container.decode(video=0):
                assert (frame.width, frame.height) == (640, 360)
                decoded += 1
    assert decoded == 4 * FPS
    assert sum(isinstance(e, FrameEvent) for e in events) >= 4 * 5 - 1
