"""H.265 cameras: recorded bit for bit like H.264 ones, from a file and over a real RTSP server
(GStreamer's rtph265pay), with motion and tamper read through the HEVC decoder, the chain
verified and a clip exported without re-encoding."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import av
import pytest
from cctv_recording import FPS, of_kind, record_scene, wait_for

from floor_agent.cctv.export import export
from floor_agent.cctv.index import SegmentIndex
from floor_agent.cctv.model import Segment
from floor_agent.cctv.runner import verify_storage
from floor_agent.cctv.segments import SegmentWriter, packet_shape_problem
from floor_agent.cctv.source import CameraSource, PacketEvent, SourceSettings, StreamLost
from floor_agent.simulated.camera import RtspServer, file_launch, make_camera_file
from floor_agent.simulated.camera_scenes import Covered, MovingObject, Script

SCRIPT = Script(12.0, (
    MovingObject("worker", 1.0, 5.0, (-0.1, 0.55), (1.1, 0.45)),
    Covered(7.0, 10.0),
))


def packets_of(path: Path) -> list[av.Packet]:
    with av.open(str(path)) as container:
        return [p for p in container.demux(video=0) if p.size]


def codec_of(path: Path) -> str:
    with av.open(str(path)) as container:
        return container.streams.video[0].codec_context.name


def frames_in(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def vcl_units(packets: list[av.Packet]) -> list[bytes]:
    """The coded pictures (HEVC VCL NAL units, types 0-31), whatever the framing: Annex B
    start codes (RTSP) or 4-byte lengths (MP4); parameter sets and SEI aside."""
    units: list[bytes] = []
    for packet in packets:
        data = bytes(packet)
        if data.startswith(b"\x00\x00\x01") or data.startswith(b"\x00\x00\x00\x01"):
            found = [n.rstrip(b"\x00") for n in data.split(b"\x00\x00\x01") if n.strip(b"\x00")]
        else:
            found, pos = [], 0
            while pos < len(data):
                size = int.from_bytes(data[pos:pos + 4], "big")
                found.append(data[pos + 4:pos + 4 + size].rstrip(b"\x00"))
                pos += 4 + size
        units += [n for n in found if (n[0] >> 1) & 0x3F < 32]
    return units


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An H.265 camera file (a worker walks through, then the lens is covered) through the
    agent's own recorder, in 2 s segments."""
    root = tmp_path_factory.mktemp("hevc")
    recorder, events, _ = record_scene(root, SCRIPT, 11, codec="hevc")
    assert codec_of(root / "scene.mp4") == "hevc"
    return {"config": recorder.section, "video": root / "scene.mp4", "events": events}


def test_h265_packets_are_copied_bit_for_bit_into_playable_chained_segments(
        recorded: dict[str, Any]) -> None:
    storage = recorded["config"].storage_dir
    segments = of_kind(recorded["events"], "cctv.segment")
    assert [s["seq"] for s in segments] == list(range(1, len(segments) + 1))
    copied: list[av.Packet] = []
    for segment in segments:
        path = storage / segment["path"]
        assert codec_of(path) == "hevc"
        packets = packets_of(path)
        assert packets[0].is_keyframe
        assert frames_in(path) == len(packets) == segment["packets"]
        copied += packets
    assert [bytes(p) for p in copied] == [bytes(p) for p in packets_of(recorded["video"])]
    result = verify_storage(recorded["config"])
    assert result.report.ok, result.lines


def test_motion_and_tamper_read_through_the_hevc_decoder(recorded: dict[str, Any]) -> None:
    starts = [e["t_ms"] / 1000 for e in of_kind(recorded["events"], "cctv.motion_start")]
    assert any(0.9 <= t <= 1.8 for t in starts), starts
    covered = [e["t_ms"] / 1000 for e in of_kind(recorded["events"], "cctv.tamper")
               if e["tamper"] == "covered"]
    assert covered and 7.0 <= min(covered) <= 9.0, covered
    assert not of_kind(recorded["events"], "cctv.bad_input")


def test_an_h265_clip_is_exported_without_re_encoding(recorded: dict[str, Any],
                                                      tmp_path: Path) -> None:
    config = recorded["config"]
    with SegmentIndex.in_storage(config.storage_dir) as index:
        first = index.segments("cam1")[0].segment
        exports: list[tuple[Any, ...]] = []
        result = export(index, config.storage_dir, "cam1", first.start + timedelta(seconds=1),
                        first.start + timedelta(seconds=3), "incident 17, line 2", "auditor",
                        tmp_path / "clip.mp4",
                        lambda *args, **data: exports.append((args, data)))
    assert codec_of(result.clip_path) == "hevc"
    assert frames_in(result.clip_path) == result.packets >= 3 * FPS
    source = set(vcl_units(packets_of(recorded["video"])))
    assert set(vcl_units(packets_of(result.clip_path))) <= source
    assert len(exports) == 1


def test_an_h265_camera_over_rtsp_is_recorded_from_its_own_pictures(tmp_path: Path) -> None:
    video = make_camera_file(tmp_path / "hevc.mp4", codec="hevc")
    assert "h265parse ! rtph265pay" in file_launch(video)
    segments: list[Segment] = []
    lost: list[StreamLost] = []
    lock = threading.Lock()
    writer = SegmentWriter("cam1", tmp_path / "footage", segments.append, segment_seconds=1.0)

    def on_event(event: object) -> None:
        with lock:
            if isinstance(event, PacketEvent):
                writer.write(event.packet, event.at)
            elif isinstance(event, StreamLost):
                lost.append(event)

    settings = SourceSettings(offline_after_seconds=3.0, reconnect_initial_seconds=0.2,
                              reconnect_max_seconds=1.0, timeout_seconds=3.0)
    with RtspServer({"cam1": video}) as server, \
            CameraSource("cam1", server.url("cam1"), on_event, settings=settings):
        wait_for(lambda: len(segments) >= 2, 30, "two segments over RTSP")
    with lock:
        writer.close()
    assert not writer.dropped, writer.dropped
    source_pictures = vcl_units(packets_of(video))
    for segment in segments[:2]:
        path = tmp_path / "footage" / segment.path
        assert codec_of(path) == "hevc"
        packets = packets_of(path)
        assert packets[0].is_keyframe and frames_in(path) == len(packets) == segment.packets
        pictures = vcl_units(packets)
        # the camera's own coded pictures, in order, none re-encoded
        start = source_pictures.index(pictures[0])
        assert pictures == source_pictures[start:start + len(pictures)]


def test_a_truncated_length_prefixed_h265_packet_is_named() -> None:
    video_extradata = bytes(21) + bytes([0x03])  # hvcC, lengthSizeMinusOne = 3
    video_extradata = b"\x01" + video_extradata[1:]
    assert packet_shape_problem(b"\x00\x00\x00\x05abcde", video_extradata, "hevc") is None
    problem = packet_shape_problem(b"\x00\x00\x00\x09abcde", video_extradata, "hevc")
    assert problem == "NAL unit length 9 at byte 0 runs past the packet (9 bytes)"
