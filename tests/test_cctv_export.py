"""cctv export: a clip across segments, remuxed not re-encoded, with its hash proof; audited."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from audit_events import SpooledEvents

from floor_agent.cctv.export import ExportError, export, record_view
from floor_agent.cctv.index import SegmentIndex
from floor_agent.cctv.model import GENESIS_SHA256, Segment

T0 = datetime(2025, 6, 1, 8, 0, 0, tzinfo=UTC)
FPS = 10
SECONDS = 3


def encode(path: Path, first_frame: int, frames: int = FPS * SECONDS) -> None:
    """A tiny real H.264 MP4: a key frame every second, the frame number drawn as a bar."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 320, 180, "yuv420p"
        stream.codec_context.gop_size = FPS
        stream.codec_context.options = {"bf": "0", "sc_threshold": "0", "preset": "ultrafast"}
        for i in range(frames):
            img = np.full((180, 320, 3), 40, dtype=np.uint8)
            n = first_frame + i
            img[:, (n * 5) % 300:(n * 5) % 300 + 20] = 220
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, FPS)
            for pkt in stream.encode(frame):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)


@pytest.fixture
def recorded(tmp_path: Path) -> Iterator[tuple[Path, SegmentIndex, list[Segment]]]:
    storage = tmp_path / "footage"
    storage.mkdir()
    index = SegmentIndex.in_storage(storage)
    prev = GENESIS_SHA256
    segments = []
    for seq in (1, 2, 3):
        start = T0 + timedelta(seconds=SECONDS * (seq - 1))
        rel = f"cam-1/{start:%Y-%m-%d}/{start:%H}/{start:%Y%m%dT%H%M%SZ}.mp4"
        encode(storage / rel, FPS * SECONDS * (seq - 1))
        data = (storage / rel).read_bytes()
        seg = Segment("cam-1", seq, rel, start, float(SECONDS), len(data),
                      hashlib.sha256(data).hexdigest(), prev, packets=FPS * SECONDS)
        index.add(seg)
        segments.append(seg)
        prev = seg.sha256
    with index:
        yield storage, index, segments


def decoded_frames(path: Path) -> int:
    with av.open(str(path)) as clip:
        return sum(1 for _ in clip.decode(video=0))


def test_clip_across_two_segments_plays_and_proves(
        recorded: tuple[Path, SegmentIndex, list[Segment]], tmp_path: Path) -> None:
    storage, index, segments = recorded
    events = SpooledEvents()
    out = tmp_path / "clip.mp4"
    result = export(index, storage, "cam-1", T0 + timedelta(seconds=1.5),
                    T0 + timedelta(seconds=4.5), "theft at line 3, ticket 4711", "alice", out,
                    events)
    # from the key frame at 1 s to just before the key frame at 5 s: 4 s of frames, all decodable
    assert result.start == T0 + timedelta(seconds=1)
    assert decoded_frames(out) == 4 * FPS == result.packets
    with av.open(str(out)) as clip:
        assert clip.streams.video[0].codec_context.name == "h264"
        assert 3_800_000 <= clip.duration <= 4_200_000  # microseconds
    assert result.segments == (1, 2)

    proof = json.loads(result.proof_path.read_text())
    assert result.proof_path == tmp_path / "clip.mp4.proof.json"
    assert proof["clip"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert proof["clip"]["re_encoded"] is False
    assert [(s["seq"], s["sha256"], s["prev_sha256"]) for s in proof["segments"]] == [
        (1, segments[0].sha256, GENESIS_SHA256), (2, segments[1].sha256, segments[0].sha256)]
    assert proof["who"] == "alice" and proof["why"] == "theft at line 3, ticket 4711"
    assert out.stat().st_mode & 0o777 == 0o600

    ((kind, subject, severity, data),) = events
    assert (kind, subject, severity) == ("cctv.export", "camera cam-1", "notice")
    assert data["who"] == "alice" and data["why"] == "theft at line 3, ticket 4711"
    assert data["segments"] == [1, 2] and data["clip_sha256"] == proof["clip"]["sha256"]


def test_copied_packets_are_the_cameras_own(
        recorded: tuple[Path, SegmentIndex, list[Segment]], tmp_path: Path) -> None:
    storage, index, segments = recorded
    out = tmp_path / "whole.mp4"
    export(index, storage, "cam-1", T0, T0 + timedelta(seconds=2.9), "audit", "bob", out,
           SpooledEvents())
    with av.open(str(storage / segments[0].path)) as src, av.open(str(out)) as clip:
        original = [bytes(p) for p in src.demux(video=0) if p.size]
        copied = [bytes(p) for p in clip.demux(video=0) if p.size]
    assert copied == original  # byte for byte: remuxed, never re-encoded


def test_altered_source_is_refused(recorded: tuple[Path, SegmentIndex, list[Segment]],
                                   tmp_path: Path) -> None:
    storage, index, segments = recorded
    path = storage / segments[1].path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    events = SpooledEvents()
    out = tmp_path / "clip.mp4"
    with pytest.raises(ExportError, match="seq 2.*does not match its recorded SHA-256"):
        export(index, storage, "cam-1", T0, T0 + timedelta(seconds=5), "why", "who", out,
               events)
    assert not out.exists() and events == []


def test_who_and_why_are_required_and_nothing_overwritten(
        recorded: tuple[Path, SegmentIndex, list[Segment]], tmp_path: Path) -> None:
    storage, index, _ = recorded
    out = tmp_path / "clip.mp4"
    with pytest.raises(ExportError, match="reason is required"):
        export(index, storage, "cam-1", T0, T0 + timedelta(seconds=1), " ", "carol", out,
               SpooledEvents())
    out.write_bytes(b"earlier export")
    with pytest.raises(ExportError, match="never overwrites"):
        export(index, storage, "cam-1", T0, T0 + timedelta(seconds=1), "why", "carol", out,
               SpooledEvents())
    with pytest.raises(ExportError, match="no footage on disk"):
        export(index, storage, "cam-1", T0 + timedelta(days=1), T0 + timedelta(days=2), "why",
               "carol", tmp_path / "none.mp4", SpooledEvents())


def test_garbage_segment_is_a_clear_error(tmp_path: Path) -> None:
    storage = tmp_path / "footage"
    storage.mkdir()
    rel = "cam-9/2025-06-01/08/20250601T080000Z.mp4"
    (storage / rel).parent.mkdir(parents=True)
    (storage / rel).write_bytes(b"\x00garbage, not a video" * 50)
    data = (storage / rel).read_bytes()
    with SegmentIndex.in_storage(storage) as index:
        index.add(Segment("cam-9", 1, rel, T0, 3.0, len(data), hashlib.sha256(data).hexdigest(),
                          GENESIS_SHA256))
        with pytest.raises(ExportError, match="camera cam-9 seq 1: not a readable video"):
            export(index, storage, "cam-9", T0, T0 + timedelta(seconds=2), "why", "who",
                   tmp_path / "x.mp4", SpooledEvents())
    assert not (tmp_path / "x.mp4").exists()


def test_view_is_audited(recorded: tuple[Path, SegmentIndex, list[Segment]]) -> None:
    _, index, _ = recorded
    events = SpooledEvents()
    records = index.segments("cam-1")[:2]
    record_view("cam-1", records, "dave", "shift review", events)
    ((kind, _, _, data),) = events
    assert kind == "cctv.view" and data["who"] == "dave" and data["why"] == "shift review"
    assert data["segments"] == [1, 2] and data["end"] == (T0 + timedelta(seconds=6)).isoformat()
    with pytest.raises(ExportError, match="why is required"):
        record_view("cam-1", records[0], "dave", "", events)
    with pytest.raises(ExportError, match="belongs to camera cam-1, not cam-2"):
        record_view("cam-2", records, "dave", "curious", events)
