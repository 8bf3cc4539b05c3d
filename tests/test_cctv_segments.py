"""cctv recording: camera packets copied, not re-encoded, into hashed segments, from a file and
from a real RTSP server (GStreamer), through drops, bad input and a second camera failing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from floor_agent.cctv.chain import ALTERED, DELETED, INSERTED, verify
from floor_agent.cctv.model import GENESIS_SHA256, Segment
from floor_agent.cctv.segments import (
    FrameSegmentWriter,
    SegmentWriter,
    packet_shape_problem,
    segment_relpath,
)
from floor_agent.cctv.source import (
    BadInput,
    CameraOffline,
    CameraOnline,
    CameraSource,
    Connected,
    ConnectFailed,
    FrameEvent,
    OpenCvSource,
    PacketEvent,
    SourceEvent,
    SourceFinished,
    SourceSettings,
    StreamLost,
    StreamRecovered,
    opencv_target,
)
from floor_agent.common.backoff import backoff_delay
from floor_agent.common.files import file_sha256
from floor_agent.common.urls import redact_url
from floor_agent.simulated.camera import (
    RtspServer,
    SimpleScript,
    free_port,
    make_camera_file,
    make_scene_file,
    simple_scene,
)
from floor_agent.simulated.camera_scenes import MovingObject, Scene, Script

FPS = 10


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Synthetic cameras: 5 s at 320x180 (key frame every second), 30 s for the RTSP server,
    3 s at 640x360 (a camera reconfigured), and a scripted scene (a worker walking through)
    in MPEG-TS to corrupt."""
    d = tmp_path_factory.mktemp("videos")
    walk = Script(5.0, (MovingObject("worker", 0.5, 4.5, (-0.1, 0.5), (1.1, 0.5)),))
    assert len(make_scene_file(d / "cam.ts", Scene(320, 180, FPS), walk)) == 5 * FPS
    return {
        "short": make_camera_file(d / "short.mp4", script=SimpleScript(seconds=5)),
        "long": make_camera_file(d / "long.mp4", script=SimpleScript(seconds=30)),
        "big": make_camera_file(d / "big.mp4", width=640, height=360,
                                script=SimpleScript(seconds=3)),
        "ts": d / "cam.ts",
    }


class Recorder:
    """The recorder's glue for a test: packets into a SegmentWriter, everything else kept."""

    def __init__(self, camera_id: str, storage: Path, segment_seconds: float = 2.0,
                 **writer_args: object) -> None:
        self.segments: list[Segment] = []
        self.events: list[SourceEvent] = []
        self.first_packets: list[bool] = []
        self.writer = SegmentWriter(camera_id, storage, self.segments.append,
                                    segment_seconds=segment_seconds, **writer_args)
        self.lock = threading.Lock()

    def __call__(self, event: SourceEvent) -> None:
        with self.lock:
            if isinstance(event, PacketEvent):
                self.writer.write(event.packet, event.at)
                return
            if isinstance(event, StreamLost):
                self.writer.cut()  # the gap ends the segment; the next starts on a key frame
            self.events.append(event)

    def of(self, kind: type) -> list:
        with self.lock:
            return [e for e in self.events if isinstance(e, kind)]


def wait_for(predicate: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def fast(**overrides: float) -> SourceSettings:
    args = dict(offline_after_seconds=1.5, reconnect_initial_seconds=0.2,
                reconnect_max_seconds=0.8, timeout_seconds=2.0, analysis_fps=5.0)
    return SourceSettings(**(args | overrides))


def demuxed(path: Path) -> list[av.Packet]:
    with av.open(str(path)) as c:
        return [p for p in c.demux(video=0) if p.size]


def decoded_frames(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as c:
        return list(c.decode(video=0))


def nal_units(data: bytes) -> list[bytes]:
    """NAL units of an Annex B (start codes) or length-prefixed (4-byte) access unit."""
    if data.startswith(b"\x00\x00\x01") or data.startswith(b"\x00\x00\x00\x01"):
        return [n.rstrip(b"\x00") for n in data.split(b"\x00\x00\x01") if n.strip(b"\x00")]
    units, pos = [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos:pos + 4], "big")
        units.append(data[pos + 4:pos + 4 + size].rstrip(b"\x00"))
        pos += 4 + size
    return units


def coded_slices(packets: list[av.Packet]) -> list[bytes]:
    """The pictures themselves (H.264 slice NAL units, types 1 and 5), parameter sets aside."""
    return [n for p in packets for n in nal_units(bytes(p)) if n[0] & 0x1F in (1, 5)]


def record_file(url: Path, storage: Path, **kw: object) -> Recorder:
    rec = Recorder("cam1", storage, **kw)
    opened = datetime(2026, 3, 1, 23, 59, 58, tzinfo=timezone(timedelta(hours=2)))
    with CameraSource("cam1", str(url), rec, settings=fast(), utcnow=lambda: opened):
        wait_for(lambda: rec.of(SourceFinished))
    rec.writer.close()
    return rec


# --------------------------------------------------------------------------- from a file


def test_a_file_is_recorded_into_keyframe_segments_bit_for_bit(videos: dict[str, Path],
                                                               tmp_path: Path) -> None:
    rec = record_file(videos["short"], tmp_path)
    segs = rec.segments
    assert [s.seq for s in segs] == [1, 2, 3]
    assert [s.duration for s in segs] == [2.0, 2.0, 1.0]  # 10 s segments cut on key frames
    # under CAMERA/YYYY-MM-DD/HH in UTC: 23:59:58 at +02:00 is 21:59:58 UTC
    assert [s.path for s in segs[:2]] == ["cam1/2026-03-01/21/20260301T215958.000Z.mp4",
                                          "cam1/2026-03-01/22/20260301T220000.000Z.mp4"]
    assert segs[1].start == datetime(2026, 3, 1, 22, 0, 0, tzinfo=UTC)
    source_packets = demuxed(videos["short"])
    copied: list[av.Packet] = []
    for seg in segs:
        path = tmp_path / seg.path
        assert seg.size == path.stat().st_size and seg.sha256 == file_sha256(path)
        packets = demuxed(path)
        assert packets[0].is_keyframe
        assert seg.packets == len(packets) == len(decoded_frames(path))
        copied += packets
    # no re-encoding: every packet's bytes are the camera's, and the codec setup is unchanged
    assert [bytes(p) for p in copied] == [bytes(p) for p in source_packets]
    with av.open(str(videos["short"])) as a, av.open(str(tmp_path / segs[1].path)) as b:
        sa, sb = a.streams.video[0].codec_context, b.streams.video[0].codec_context
        assert (sb.name, sb.profile, sb.width, sb.height, bytes(sb.extradata)) == (
            sa.name, sa.profile, sa.width, sa.height, bytes(sa.extradata))
    assert not rec.writer.dropped
    assert not list(tmp_path.rglob("*.part"))
    # the small grey frames: 5 per second of stream, about 144 high, in stream time
    frames = [e.frame for e in rec.of(FrameEvent)]
    assert len(frames) == 25
    assert frames[0].grey.shape == (180, 320) and frames[0].grey.dtype == np.uint8  # 360p / 2
    assert [round(f.t, 1) for f in frames[:3]] == [0.0, 0.2, 0.4]


def test_the_chain_verifies_and_catches_altered_deleted_and_inserted_segments(
        videos: dict[str, Path], tmp_path: Path) -> None:
    first = record_file(videos["short"], tmp_path)
    # a restart: the next writer continues the chain from the last seq and hash
    last = first.segments[-1]
    again = record_file(videos["short"], tmp_path, last_seq=last.seq,
                        last_sha256=last.sha256)
    assert again.segments[0].seq == 4 and again.segments[0].prev_sha256 == last.sha256
    records = first.segments + again.segments
    assert records[0].prev_sha256 == GENESIS_SHA256

    def read_hash(rel: str) -> str | None:
        path = tmp_path / rel
        return file_sha256(path) if path.exists() else None

    def on_disk() -> list[str]:
        return [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.mp4")]

    assert verify(records, read_hash, files_on_disk=on_disk()).ok
    altered = tmp_path / records[1].path
    data = bytearray(altered.read_bytes())
    data[len(data) // 2] ^= 0x01
    altered.write_bytes(bytes(data))
    (tmp_path / records[4].path).unlink()
    planted = tmp_path / "cam1/2026-03-01/21/20260301T215959.500Z.mp4"
    planted.write_bytes((tmp_path / records[2].path).read_bytes())
    report = verify(records, read_hash, files_on_disk=on_disk())
    assert sorted((p.seq, p.kind, p.path) for p in report.problems) == [
        (0, INSERTED, planted.relative_to(tmp_path).as_posix()),
        (2, ALTERED, records[1].path),
        (5, DELETED, records[4].path)]


# --------------------------------------------------------------------------- bad input


def test_corrupt_and_out_of_order_packets_are_dropped_with_a_reason(videos: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    segs: list[Segment] = []
    writer = SegmentWriter("cam1", tmp_path, segs.append, segment_seconds=2.0)
    with av.open(str(videos["short"])) as c:
        stream = c.streams.video[0]
        for i, packet in enumerate(p for p in c.demux(stream) if p.size):
            if i == 12:
                garbage = av.Packet(b"\xff" * 64)
                garbage.stream, garbage.pts, garbage.dts = stream, packet.pts, packet.dts
                assert writer.write(garbage) is False
                empty = av.Packet(b"")
                empty.stream, empty.pts = stream, packet.pts
                assert writer.write(empty) is False
            if i == 20:
                late = av.Packet(bytes(packet))
                late.stream, late.pts, late.dts = stream, 0, 0
                late.time_base = packet.time_base
                assert writer.write(late) is False
            assert writer.write(packet) is True
    writer.close()
    assert writer.dropped == {"empty packet": 1, "timestamps going backwards": 1,
                              "NAL unit length 4294967295 at byte 0 runs past the packet "
                              "(64 bytes)": 1}
    assert sum(len(decoded_frames(tmp_path / s.path)) for s in segs) == 50


def test_a_resolution_change_starts_a_new_segment(videos: dict[str, Path],
                                                  tmp_path: Path) -> None:
    segs: list[Segment] = []
    writer = SegmentWriter("cam1", tmp_path, segs.append, segment_seconds=10.0)
    for name in ("short", "big"):
        with av.open(str(videos[name])) as c:
            for packet in c.demux(video=0):
                if packet.size:
                    writer.write(packet)
    writer.close()
    sizes = [(decoded_frames(tmp_path / s.path)[0].width, len(decoded_frames(tmp_path / s.path)))
             for s in segs]
    assert sizes == [(320, 50), (640, 30)]
    assert segs[1].prev_sha256 == segs[0].sha256
    assert not writer.dropped


def test_a_corrupted_stream_keeps_recording(videos: dict[str, Path], tmp_path: Path) -> None:
    """An MPEG-TS stream damaged on the wire (two video TS packets lost mid-stream, bytes
    flipped elsewhere): the source reports the corrupt packet and the recording goes on."""
    data = videos["ts"].read_bytes()
    ts = [bytearray(data[i:i + 188]) for i in range(0, len(data), 188)]
    video = [i for i, p in enumerate(ts) if ((p[1] & 0x1F) << 8 | p[2]) == 0x100]
    lost = set(video[len(video) // 2:len(video) // 2 + 2])
    for i in video[len(video) // 4:len(video) // 3]:
        ts[i][100] ^= 0x5A
    damaged = tmp_path / "damaged.ts"
    damaged.write_bytes(b"".join(p for i, p in enumerate(ts) if i not in lost))
    rec = record_file(damaged, tmp_path / "store")
    assert rec.of(SourceFinished)
    assert [e.reason.split(" at ")[0] for e in rec.of(BadInput)] == ["corrupt packet"]
    assert sum(s.duration for s in rec.segments) >= 4.5
    for seg in rec.segments:
        assert len(decoded_frames(tmp_path / "store" / seg.path)) == seg.packets


def test_packet_shapes_and_names() -> None:
    avcc = bytes([1, 66, 192, 13, 0xFF])
    assert packet_shape_problem(b"\x00\x00\x00\x01\x65abc", None, "h264") is None
    assert packet_shape_problem(b"\x00\x00\x00\x03\x65ab", avcc, "h264") is None
    assert packet_shape_problem(b"\x00\x00\x00\x09\x65ab", avcc, "h264") == (
        "NAL unit length 9 at byte 0 runs past the packet (7 bytes)")
    assert packet_shape_problem(b"\x65ab", b"", "h264") == "no start code in an Annex B stream"
    assert packet_shape_problem(b"", avcc, "h264") == "empty packet"
    when = datetime(2026, 12, 31, 23, 30, 1, 250000, tzinfo=timezone(timedelta(hours=-1)))
    assert segment_relpath("door", when) == "door/2027-01-01/00/20270101T003001.250Z.mp4"
    assert [backoff_delay(n, 1.0, 30.0) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert (redact_url("rtsp://admin:hunter2@10.0.0.5:554/s1", keep_user=False)
            == "rtsp://10.0.0.5:554/s1")
    assert opencv_target("v4l2:///dev/video2") == 2
    with pytest.raises(ValueError, match="/dev/videoN"):
        opencv_target("v4l2:///dev/sda")


def test_an_mjpeg_camera_is_read_through_opencv(tmp_path: Path) -> None:
    """The USB/MJPEG path (no USB camera here): an MJPEG file through cv2.VideoCapture."""
    path = tmp_path / "usb.avi"
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (320, 240))
    for grey in simple_scene(320, 240, FPS, SimpleScript(seconds=2)):
        out.write(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    out.release()
    got = list(OpenCvSource("usb1", str(path), fast(analysis_fps=2.0)).frames())
    assert len(got) == 20 and got[0][0].shape == (240, 320, 3)
    smalls = [s for _, _, s in got if s is not None]
    assert len(smalls) == 4 and smalls[0].grey.shape == (144, 192)
    # re-encoded (the one exception) into the same kind of chained segments
    segs: list[Segment] = []
    writer = FrameSegmentWriter("usb1", tmp_path / "store", segs.append, segment_seconds=1.0,
                                fps=FPS)
    for bgr, t, _ in got:
        assert writer.write_frame(bgr, t)
    assert writer.write_frame(np.zeros((0, 0, 3), np.uint8), 2.0) is False
    writer.close()
    assert [(s.seq, s.duration, s.packets) for s in segs] == [(1, 1.0, 10), (2, 1.0, 10)]
    assert segs[1].prev_sha256 == segs[0].sha256 == file_sha256(tmp_path / "store" / segs[0].path)
    for seg in segs:
        frames = decoded_frames(tmp_path / "store" / seg.path)
        assert len(frames) == 10 and frames[0].width == 320
    assert writer.dropped == {"not a BGR frame": 1}


# --------------------------------------------------------------------------- over RTSP


@pytest.fixture(scope="module")
def rtsp(videos: dict[str, Path]) -> Iterator[RtspServer]:
    with RtspServer({"cam1": videos["long"], "sub": videos["long"],
                     "main": videos["big"]}) as server:
        yield server


def test_rtsp_packets_are_recorded_unchanged(videos: dict[str, Path], rtsp: RtspServer,
                                             tmp_path: Path) -> None:
    rec = Recorder("cam1", tmp_path)
    with CameraSource("cam1", rtsp.url("cam1"), rec, settings=fast()) as source:
        wait_for(lambda: len(rec.segments) >= 2)
        health = source.health()
    rec.writer.close()
    assert rec.of(Connected)[0].codec == "h264" and rec.of(Connected)[0].width == 320
    assert health.online and health.fps > 5 and health.last_frame_at is not None
    assert [s.duration for s in rec.segments[:2]] == [2.0, 2.0]
    recorded = [p for s in rec.segments for p in demuxed(tmp_path / s.path)]
    assert all(demuxed(tmp_path / s.path)[0].is_keyframe for s in rec.segments)
    assert sum(len(decoded_frames(tmp_path / s.path)) for s in rec.segments) == len(recorded)
    # the pictures in the segments are the camera's own coded slices, in order, unchanged
    sent = coded_slices(demuxed(videos["long"]))
    got = coded_slices(recorded)
    start = sent.index(got[0])
    assert got == sent[start:start + len(got)]


class TsCamera(ThreadingHTTPServer):
    """An HTTP MPEG-TS camera on loopback: every GET streams the file as a live camera does
    (no length, in 188-byte TS packets, about real time) and then drops the connection."""

    daemon_threads = True

    def __init__(self, video: Path, seconds: float) -> None:
        data = video.read_bytes()
        self.gets = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(handler) -> None:  # noqa: N805  (the server's handler, not self)
                self.gets += 1
                handler.send_response(200)
                handler.send_header("Content-Type", "video/mp2t")
                handler.end_headers()
                chunk = 188 * 50
                pause = seconds * chunk / len(data)
                for i in range(0, len(data), chunk):
                    try:
                        handler.wfile.write(data[i:i + chunk])
                        handler.wfile.flush()
                    except OSError:
                        return
                    time.sleep(pause)

            def log_message(handler, *args: object) -> None:  # noqa: N805
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/cam.ts"


def test_an_http_mpegts_camera_is_recorded_unchanged_and_reconnected(
        videos: dict[str, Path], tmp_path: Path) -> None:
    camera = TsCamera(videos["ts"], seconds=2.5)
    serving = threading.Thread(target=camera.serve_forever, daemon=True)
    serving.start()
    rec = Recorder("cam-ts", tmp_path)
    try:
        with CameraSource("cam-ts", camera.url, rec, settings=fast()):
            wait_for(lambda: rec.of(StreamRecovered) and camera.gets >= 2)
    finally:
        camera.shutdown()
        camera.server_close()
    rec.writer.close()
    assert rec.of(Connected)[0].codec == "h264" and rec.of(Connected)[0].width == 320
    # the camera hung up (FFmpeg's HTTP reader says EIO when a stream without a length ends):
    # reported, reconnected, and the gap reported
    assert rec.of(StreamLost)[0].reason in ("stream ended", "OSError: Input/output error")
    assert rec.of(StreamRecovered)[0].lost_at <= rec.of(StreamLost)[0].at
    assert rec.of(FrameEvent), "no small frames for motion from the HTTP stream"
    first_pass = [s for s in rec.segments if s.start < rec.of(StreamLost)[0].at]
    recorded = [p for s in first_pass for p in demuxed(tmp_path / s.path)]
    assert sum(s.duration for s in first_pass) >= 4.0
    for seg in first_pass:
        assert len(decoded_frames(tmp_path / seg.path)) == seg.packets
    # the camera's own coded slices, from its first key frame on, none re-encoded
    sent = coded_slices(demuxed(videos["ts"]))
    got = coded_slices(recorded)
    assert got == sent[:len(got)] and len(got) >= 40
    assert not rec.writer.dropped


def test_a_dropped_stream_reconnects_and_reports_the_gap(videos: dict[str, Path],
                                                         tmp_path: Path) -> None:
    with RtspServer({"cam1": videos["long"]}) as server:
        rec = Recorder("cam1", tmp_path)
        with CameraSource("cam1", server.url("cam1"), rec, settings=fast()) as source:
            wait_for(lambda: rec.segments)
            server.stop()
            wait_for(lambda: rec.of(CameraOffline))
            assert not source.health().online and source.health().stalls == 1
            assert rec.of(ConnectFailed)
            server.start()
            wait_for(lambda: rec.of(StreamRecovered) and len(rec.segments) >= 3)
            assert source.health().online
    rec.writer.close()
    lost, back = rec.of(StreamLost)[0], rec.of(StreamRecovered)[0]
    assert lost.reason == "stream ended"
    assert back.gap_seconds >= 1.5 and back.lost_at <= lost.at
    assert rec.of(CameraOnline)[0].offline_seconds >= 1.5
    assert rec.segments[0].packets and rec.segments[-1].start >= back.at
    assert verify(rec.segments, lambda p: file_sha256(tmp_path / p)).ok


def test_an_unreachable_camera_is_marked_with_a_reason_and_retried(tmp_path: Path) -> None:
    rec = Recorder("cam9", tmp_path)
    url = f"rtsp://viewer:s3cret-pw@127.0.0.1:{free_port()}/cam9"
    with CameraSource("cam9", url, rec, settings=fast()) as source:
        wait_for(lambda: len(rec.of(ConnectFailed)) >= 3 and rec.of(CameraOffline))
        health = source.health()
    failures = rec.of(ConnectFailed)
    assert failures[0].reason == "ConnectionRefusedError: Connection refused"
    assert [f.retry_in for f in failures[:3]] == [0.2, 0.4, 0.8]
    assert not health.online and "Connection refused" in health.reason
    assert "s3cret" not in repr(rec.events) + repr(source) + health.reason
    assert not rec.segments


def test_two_cameras_record_side_by_side_and_one_failing_leaves_the_other(
        videos: dict[str, Path], rtsp: RtspServer, tmp_path: Path) -> None:
    good = Recorder("cam1", tmp_path)
    bad = Recorder("cam2", tmp_path)
    with RtspServer({"cam2": videos["long"]}) as doomed, \
            CameraSource("cam1", rtsp.url("cam1"), good, settings=fast()), \
            CameraSource("cam2", doomed.url("cam2"), bad, settings=fast()):
        wait_for(lambda: good.segments and bad.segments)
        doomed.stop()
        before = len(good.segments)
        wait_for(lambda: bad.of(CameraOffline) and len(good.segments) >= before + 1)
        assert not good.of(CameraOffline) and not good.of(StreamLost)
    for rec in (good, bad):
        rec.writer.close()
    assert {s.camera_id for s in good.segments} == {"cam1"}
    assert all(s.path.startswith("cam2/") for s in bad.segments)


def test_frames_come_from_the_detect_stream_when_there_is_one(rtsp: RtspServer,
                                                              tmp_path: Path) -> None:
    """Main 640x360 recorded, motion reads the 320x180 sub-stream (never upscaled)."""
    rec = Recorder("cam3", tmp_path)
    settings = SourceSettings(offline_after_seconds=2.0, reconnect_initial_seconds=0.2,
                              reconnect_max_seconds=0.8, analysis_fps=5.0, frame_height=360)
    with CameraSource("cam3", rtsp.url("main"), rec, detect_url=rtsp.url("sub"),
                      settings=settings):
        wait_for(lambda: len(rec.of(FrameEvent)) >= 5 and rec.segments)
    rec.writer.close()
    assert {(c.stream, c.width) for c in rec.of(Connected)} == {("main", 640), ("detect", 320)}
    assert {e.frame.grey.shape for e in rec.of(FrameEvent)} == {(180, 320)}
    assert decoded_frames(tmp_path / rec.segments[0].path)[0].width == 640
