"""No silent loss (issue 22, point 1): every packet the camera sent is in a segment.

Frame-numbered cameras (tests/numbered_video.py: each picture carries its number as a barcode)
are recorded and the segments decoded back: the exact frames the source had, in order, none
twice, for every stream shape, from files and over a real RTSP server across a reconnect.

What "decodable" means for each segment, as these tests hold it:
- every shape but open GOP: each segment decodes on its own to all its frames;
- open GOP: a segment's leading pictures (after its key frame in decode order, shown before
  it; they reference the previous segment's pictures too) are kept in it, counted in
  `Segment.leading`, and decode when the segments are played in sequence (one decoder, as an
  export or a player going from one to the next); on its own a segment shows all its frames but
  exactly those.
What truly cannot be kept (a damaged packet, packets before a connection's first key frame) is
counted per segment in the index and raised as `cctv.packets_lost`.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import av
import pytest
from audit_events import SpooledEvents
from cctv_recording import Event, WatchedRecorder, of_kind, section
from numbered_video import decode_numbers, encode_numbered

from floor_agent.cctv.chain import verify
from floor_agent.cctv.export import export
from floor_agent.cctv.index import SegmentIndex
from floor_agent.cctv.model import Segment
from floor_agent.cctv.segments import NUMBERING_GAP, SegmentWriter
from floor_agent.cctv.source import (
    CameraSource,
    Connected,
    PacketEvent,
    SourceEvent,
    SourceSettings,
    StreamLost,
)
from floor_agent.collector.footage import make_clip
from floor_agent.common.files import file_sha256
from floor_agent.simulated.camera import RtspServer

FPS = 10


def record_files(files: list[Path], storage: Path, segment_seconds: float = 1.0
                 ) -> tuple[SegmentWriter, list[Segment]]:
    """Demux `files` one after the other (each a new stream, as a reconnect or a camera
    reconfigured) into one camera's segments."""
    segments: list[Segment] = []
    writer = SegmentWriter("cam1", storage, segments.append, segment_seconds=segment_seconds)
    for path in files:
        with av.open(str(path)) as container:
            for packet in container.demux(container.streams.video[0]):
                if packet.size:
                    assert writer.write(packet), dict(writer.dropped)
    writer.close()
    return writer, segments


def probe_packets(path: Path) -> int:
    """Packets ffprobe reads from a segment (PyAV's FFmpeg when there is no ffprobe)."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        with av.open(str(path)) as container:
            return sum(1 for p in container.demux(video=0) if p.size)
    out = subprocess.run([ffprobe, "-v", "error", "-count_packets", "-select_streams", "v:0",
                          "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0",
                          str(path)], capture_output=True, text=True, check=True, timeout=30)
    return int(out.stdout.strip())


# shape: (encoder shape, frames, gop, extra encode args, leading pictures expected)
SHAPES = {
    "open_gop": ("open_gop", 95, 10, {}, True),
    "closed_gop_b_frames": ("closed_gop_b", 95, 10, {}, False),
    "no_b_frames": ("plain", 95, 10, {}, False),
    "hevc_b_frames": ("hevc", 95, 10, {}, False),
    "hevc_open_gop": ("hevc_open_gop", 95, 10, {}, True),  # CRA + RASL pictures
    "gop_20_s_open": ("open_gop", 450, 200, {}, True),
    "variable_rate_3_s_hole": ("open_gop", 95, 10, {"hole": (43, 3.0)}, True),
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_every_frame_of_a_file_is_in_the_segments_once_and_in_order(name: str,
                                                                      tmp_path: Path) -> None:
    shape, frames, gop, extra, leading = SHAPES[name]
    video = tmp_path / "camera.mp4"
    numbers = encode_numbered(video, frames, shape=shape, gop=gop, fps=FPS, **extra)
    assert decode_numbers([video]) == numbers  # the barcode survives the encoder
    writer, segments = record_files([video], tmp_path / "footage")
    paths = [tmp_path / "footage" / s.path for s in segments]

    assert not writer.dropped and not any(s.lost for s in segments)
    assert sum(s.packets for s in segments) == frames
    assert [probe_packets(p) for p in paths] == [s.packets for s in segments]
    assert len(segments) == (frames + gop - 1) // gop  # cut at every key frame (1 s segments)
    assert decode_numbers(paths) == numbers  # played in sequence: every frame, once, in order
    alone = decode_numbers(paths, together=False)
    kept_back = sum(s.leading for s in segments)
    if leading:  # the leading pictures of every segment after the first: there, counted
        assert segments[0].leading == 0 and all(s.leading > 0 for s in segments[1:])
        assert len(alone) == frames - kept_back
        missing = set(numbers) - set(alone)
        assert len(missing) == kept_back
        for seg, path in zip(segments[1:], paths[1:], strict=True):
            first_key = decode_numbers([path], together=False)[0]
            assert sum(1 for n in missing if first_key - seg.leading <= n < first_key) \
                == seg.leading, "a segment's leading pictures precede its key frame"
    else:
        assert kept_back == 0 and alone == numbers
    assert verify(segments, lambda p: file_sha256(tmp_path / "footage" / p)).ok


def test_a_resolution_change_cuts_and_keeps_every_frame(tmp_path: Path) -> None:
    small, big = tmp_path / "small.mp4", tmp_path / "big.mp4"
    numbers = encode_numbered(small, 25, gop=10, size=(192, 96))
    numbers += encode_numbered(big, 25, gop=10, size=(256, 128), first=25)
    writer, segments = record_files([small, big], tmp_path / "footage")
    paths = [tmp_path / "footage" / s.path for s in segments]
    assert not writer.dropped and sum(s.packets for s in segments) == 50
    widths = []
    for path in paths:
        with av.open(str(path)) as container:
            widths.append(container.streams.video[0].codec_context.width)
    assert widths == [192] * 3 + [256] * 3  # a cut at the change, never a mixed segment
    assert decode_numbers(paths) == numbers


def test_a_stream_that_never_sends_a_decode_timestamp_loses_nothing(tmp_path: Path) -> None:
    """No dts at all (B-frames): held up to HOLD_PACKETS, given dts from their presentation
    order, then one frame duration apart: every frame kept, in order."""
    video = tmp_path / "camera.mp4"
    numbers = encode_numbered(video, 150, shape="open_gop", gop=10, fps=FPS)
    segments: list[Segment] = []
    writer = SegmentWriter("cam1", tmp_path / "footage", segments.append, segment_seconds=1.0)
    with av.open(str(video)) as container:
        for packet in container.demux(container.streams.video[0]):
            if packet.size:
                packet.dts = None
                assert writer.write(packet)
    writer.close()
    assert not writer.dropped and sum(s.packets for s in segments) == 150
    assert decode_numbers([tmp_path / "footage" / s.path for s in segments]) == numbers


def test_an_export_and_an_alert_clip_of_open_gop_segments_show_every_frame(
        tmp_path: Path) -> None:
    """The leading pictures kept in each segment decode in a clip made of the segments in
    sequence: `cctv export` on the box and the collector's clip behind an alert."""
    video = tmp_path / "camera.mp4"
    numbers = encode_numbered(video, 60, shape="open_gop", gop=10, fps=FPS)
    storage = tmp_path / "footage"
    t0 = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    segments: list[Segment] = []
    writer = SegmentWriter("cam1", storage, segments.append, segment_seconds=1.0)
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.size:
                assert packet.pts is not None and stream.time_base is not None
                writer.write(packet, t0 + timedelta(seconds=float(packet.pts
                                                                  * stream.time_base)))
    writer.close()
    assert sum(s.leading for s in segments) == len(segments) - 1
    with SegmentIndex.in_storage(storage) as index:
        for seg in segments:
            index.add(seg)
        out = tmp_path / "export.mp4"
        result = export(index, storage, "cam1", t0, t0 + timedelta(seconds=10), "test",
                        "tester", out, SpooledEvents())
    assert result.packets == 60 and decode_numbers([out]) == numbers
    clip = make_clip([(s, storage / s.path) for s in segments], tmp_path / "clip.mp4")
    assert clip.packets == 60 and decode_numbers([tmp_path / "clip.mp4"]) == numbers


def test_pictures_the_camera_numbered_but_never_sent_are_counted(tmp_path: Path) -> None:
    """Reference pictures missing from the stream (lost before the recorder got them): the
    H.264 slice headers' frame_num skips; each is counted once, with the segment it falls in,
    while every packet that came is kept."""
    video = tmp_path / "camera.mp4"
    encode_numbered(video, 40, shape="open_gop", gop=10, fps=FPS)
    segments: list[Segment] = []
    writer = SegmentWriter("cam1", tmp_path / "footage", segments.append, segment_seconds=1.0)
    with av.open(str(video)) as container:  # open while its packets are written
        packets = [p for p in container.demux(video=0) if p.size]
        # nal_ref_idc of each packet's first slice (x264 puts an SEI first only in the first)
        refs = [i for i, p in enumerate(packets)
                if i and not p.is_keyframe and bytes(p)[4] & 0x60]
        gone = {refs[1], refs[2], refs[-2]}  # two in the first segment, one in the last
        for i, packet in enumerate(packets):
            if i not in gone:
                assert writer.write(packet)
        writer.close()
    assert not writer.dropped and sum(s.packets for s in segments) == 40 - 3
    assert sum(s.lost for s in segments) == 3
    assert {s.lost_reasons for s in segments if s.lost} == {
        f"{NUMBERING_GAP}: 2", f"{NUMBERING_GAP}: 1"}
    assert segments[0].lost == 2 and segments[-1].lost == 1


class Glue:
    """Source events into a SegmentWriter; the packets each connection delivered counted."""

    def __init__(self, storage: Path) -> None:
        self.segments: list[Segment] = []
        self.writer = SegmentWriter("cam1", storage, self.segments.append, segment_seconds=1.0)
        self.lock = threading.Lock()
        self.per_connection: list[int] = []

    def __call__(self, event: SourceEvent) -> None:
        with self.lock:
            if isinstance(event, Connected) and event.stream == "main":
                self.per_connection.append(0)
            elif isinstance(event, PacketEvent):
                self.per_connection[-1] += 1
                assert self.writer.write(event.packet, event.at), dict(self.writer.dropped)
            elif isinstance(event, StreamLost):
                self.writer.cut()


def wait_until(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_an_open_gop_rtsp_camera_loses_nothing_across_a_reconnect(tmp_path: Path) -> None:
    """RTSP sends a connection's first packets without a decode timestamp: they get one from
    the stream and are kept (they were dropped as "going backwards", 4 frames a connect)."""
    video = tmp_path / "camera.mp4"
    encode_numbered(video, 300, shape="open_gop", gop=20, fps=FPS)
    glue = Glue(tmp_path / "footage")
    settings = SourceSettings(offline_after_seconds=1.5, reconnect_initial_seconds=0.2,
                              reconnect_max_seconds=0.8, timeout_seconds=2.0, analysis_fps=5.0)
    with RtspServer({"cam1": video}) as server, \
            CameraSource("cam1", server.url("cam1"), glue, settings=settings):
        wait_until(lambda: len(glue.segments) >= 2, 20)
        server.stop()  # the camera goes away mid-stream
        wait_until(lambda: glue.per_connection and glue.writer._seg is None, 10)
        server.start()  # ... and comes back: its stream starts again at frame 0
        wait_until(lambda: len(glue.per_connection) == 2 and len(glue.segments) >= 5, 20)
    with glue.lock:
        glue.writer.close()
    segments = glue.segments
    paths = [tmp_path / "footage" / s.path for s in segments]
    assert not glue.writer.dropped and not any(s.lost for s in segments)
    assert sum(s.packets for s in segments) == sum(glue.per_connection)
    assert sum(s.leading for s in segments) > 0  # open GOP cuts happened
    decoded = decode_numbers(paths)
    restart = decoded.index(0, 1)
    runs = [decoded[:restart], decoded[restart:]]
    for run, delivered in zip(runs, glue.per_connection, strict=True):
        # every packet delivered is a frame; in order, none twice, from the stream's start
        # (the last few may skip numbers: B-frames the server never sent before it went away)
        assert len(run) == delivered and run == sorted(set(run)) and run[0] == 0
        assert run[:-4] == list(range(len(run) - 4))
    # the first segment of each connection decodes on its own, without reference errors
    alone = [decode_numbers([path], together=False) for path in paths]
    firsts = [(seg, numbers) for seg, numbers in zip(segments, alone, strict=True)
              if numbers[:1] == [0]]
    assert len(firsts) == 2
    for seg, numbers in firsts:
        assert seg.leading == 0 and numbers == list(range(seg.packets))
    assert verify(segments, lambda p: file_sha256(tmp_path / "footage" / p)).ok


def test_what_cannot_be_kept_is_counted_per_segment_and_raised(tmp_path: Path) -> None:
    """Packets before the first key frame and a packet not H.264-shaped: counted in the index
    for the segment they fall in, and a `cctv.packets_lost` event with camera, time range,
    count; packets the demuxer flagged corrupt are kept and counted as damaged."""
    video = tmp_path / "camera.mp4"
    encode_numbered(video, 40, shape="open_gop", gop=10, fps=FPS)
    events: list[Event] = []
    config = section(tmp_path / "footage", ("cam1", str(video)))
    t0 = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    with SegmentIndex.in_storage(config.storage_dir) as index:
        recorder = WatchedRecorder(config, 0, index, events)
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            packets = [p for p in container.demux(stream) if p.size]
            for i, packet in enumerate(packets[3:], start=3):  # joined 3 packets late
                at = t0 + timedelta(seconds=i / FPS)
                if i == 33:
                    garbage = av.Packet(b"\x00\x00\x00\xff" + b"\x17" * 60)
                    garbage.stream, garbage.pts, garbage.dts = stream, packet.pts, packet.dts
                    recorder.on_event(PacketEvent("cam1", garbage, at))
                if i in (35, 37):  # data lost on the way: the demuxer flags it, it is kept
                    packet.is_corrupt = True
                recorder.on_event(PacketEvent("cam1", packet, at))
        recorder.stop()
        records = index.segments("cam1")
    # the key frames come at decode positions 0, 9, 19, 29 (B-frames delay them): packets
    # 3-8 came before the first key frame seen; segments cut at 9 and 29 (2 s)
    assert [i for i, p in enumerate(packets) if p.is_keyframe] == [0, 9, 19, 29]
    assert [(r.segment.lost, r.segment.damaged) for r in records] == [(6, 0), (1, 2)]
    assert records[0].segment.lost_reasons == "waiting for a key frame: 6"
    assert records[1].segment.lost_reasons.startswith("NAL unit length")
    assert sum(r.segment.packets for r in records) == 40 - 3 - 6
    lost = of_kind(events, "cctv.packets_lost", "cam1")
    assert [(e["count"], e["damaged"], e["seq"]) for e in lost] == [(6, 0, 1), (1, 2, 2)]
    assert lost[0]["since"] == (t0 + timedelta(seconds=0.3)).isoformat()
    assert lost[0]["until"] == (t0 + timedelta(seconds=0.8)).isoformat()
    assert lost[1]["since"] == (t0 + timedelta(seconds=3.3)).isoformat()
    assert lost[1]["until"] == (t0 + timedelta(seconds=3.7)).isoformat()
    # before the first key frame only: a notice (the start or reconnect is reported anyway);
    # a packet refused or damaged: a warning, an alert for security staff
    assert [sev for kind, sev, _ in events if kind == "cctv.packets_lost"] == [
        "notice", "warning"]
    assert [e["lost"] for e in of_kind(events, "cctv.segment")] == [6, 1]
