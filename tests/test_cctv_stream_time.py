"""Time from the stream and lag (issue 22, points 2 and 3).

A live packet's time is the stream's own clock (RTCP sender reports where the camera sends
them, else the arrival of a connection's first timed packet plus the PTS difference), never
each packet's arrival: segments of one connection follow each other exactly, the index duration
is what the file says, a new connection's segment never overlaps the last one. A camera whose
clock is far from the box's is reported and timed by the box's clock. A reader that falls behind
real time raises `cctv.lagging`, and `cctv.lag_recovered` once it caught up.

Served by the real GStreamer RTSP server (floor_agent/simulated/camera.py) from frame-numbered
files (tests/numbered_video.py), which it plays in real time from each session's start.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import av
import pytest
from cctv_recording import Event, WatchedRecorder, of_kind, section, wait_for
from numbered_video import decode_numbers, encode_numbered

from floor_agent.cctv.index import SegmentIndex
from floor_agent.cctv.model import Segment
from floor_agent.cctv.segments import SegmentWriter
from floor_agent.cctv.source import (
    CameraSource,
    PacketEvent,
    SourceEvent,
    SourceSettings,
)
from floor_agent.common.clock import utc_now
from floor_agent.simulated.camera import RtspServer

FPS = 10


def end(segment: Segment) -> datetime:
    return segment.start + timedelta(seconds=segment.duration)


def probed_duration(path: Path) -> float:
    """The segment's duration as a reader sees it (PyAV's container duration: FFmpeg's, as
    ffprobe prints it)."""
    with av.open(str(path)) as container:
        assert container.duration is not None
        return container.duration / 1_000_000


@pytest.fixture(scope="module")
def b_frames_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """B-frames: RTSP gives a connection's first packets (the key frame) no timestamps."""
    video = tmp_path_factory.mktemp("video") / "camera.mp4"
    encode_numbered(video, 600, shape="closed_gop_b", gop=10, fps=FPS)
    return video


def test_live_segments_are_timed_by_the_stream_and_follow_each_other_exactly(
        tmp_path: Path, b_frames_video: Path) -> None:
    """Was: each segment started at its key frame's arrival, the first one's (sent without a
    pts) ~0.5 s late, overlapping the next; starts jittered with the network."""
    segments: list[Segment] = []
    writer = SegmentWriter("cam1", tmp_path, segments.append, segment_seconds=1.0)
    lock = threading.Lock()
    arrivals: list[datetime] = []

    def glue(event: SourceEvent) -> None:
        with lock:
            if isinstance(event, PacketEvent):
                arrivals.append(utc_now())
                assert writer.write(event.packet, event.at), dict(writer.dropped)

    with RtspServer({"cam1": b_frames_video}) as server, \
            CameraSource("cam1", server.url("cam1"), glue, settings=SourceSettings()):
        wait_for(lambda: len(segments) >= 4, 30, "four segments")
    with lock:
        writer.close()
    assert not writer.dropped and len(segments) >= 5
    for seg in segments:  # the index says what the file says
        assert abs(seg.duration - probed_duration(tmp_path / seg.path)) < 0.002, seg
    for before, after in zip(segments, segments[1:], strict=False):
        # one connection: each segment starts where the last one ended, to the millisecond
        assert abs((after.start - end(before)).total_seconds()) < 0.002, (before, after)
    # the first key frame has its true time: not stamped 0 on the stream's clock, and not
    # later than it arrived (it was the first packet of the connection)
    assert segments[0].start <= arrivals[0] + timedelta(seconds=0.05)
    assert abs((end(segments[-1]) - arrivals[-1]).total_seconds()) < 1.0


def test_a_new_connection_never_overlaps_the_last_segment(tmp_path: Path) -> None:
    """A reconnect whose clock says it started before the last segment ended (a camera clock
    stepped back, an anchor late): its segment starts at that end, never inside it."""
    video = tmp_path / "camera.mp4"
    encode_numbered(video, 40, shape="plain", gop=10, fps=FPS)
    segments: list[Segment] = []
    writer = SegmentWriter("cam1", tmp_path / "footage", segments.append, segment_seconds=1.0)
    t0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    for at in (t0, t0 + timedelta(seconds=2.5)):  # the first connection runs 4 s
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                if packet.size:
                    assert packet.pts is not None and stream.time_base is not None
                    writer.write(packet, at + timedelta(
                        seconds=float(packet.pts * stream.time_base)))
        writer.cut()
    assert len(segments) == 8
    for before, after in zip(segments, segments[1:], strict=False):
        assert after.start >= end(before), (before, after)
    assert segments[4].start == end(segments[3]) == t0 + timedelta(seconds=4)
    assert segments[5].start == t0 + timedelta(seconds=5)  # then the stream's own clock


class ArrivalRecorder(WatchedRecorder):
    """The real recorder; it also notes when (truly) each packet reached it."""

    def on_event(self, event: object) -> None:
        if isinstance(event, PacketEvent):
            self.arrived.append(utc_now())
        super().on_event(event)

    arrived: list[datetime]


def _record(tmp_path: Path, video: Path, events: list[Event], box_ahead: float
            ) -> tuple[list[Segment], list[datetime]]:
    """A few segments of `video` over RTSP through the real recorder (events through a real
    spool), on a box whose clock runs `box_ahead` seconds ahead of the camera's; the segments
    and the true arrival time of each packet."""
    with RtspServer({"cam1": video}) as server:
        config = section(tmp_path / "footage", ("cam1", server.url("cam1")))
        config = config.model_copy(update={"segment_seconds": 4.0})
        with SegmentIndex.in_storage(config.storage_dir) as index:
            recorder = ArrivalRecorder(config, 0, index, events)
            recorder.arrived = []
            assert recorder.source is not None
            recorder.source.utcnow = lambda: utc_now() + timedelta(seconds=box_ahead)
            recorder.start()
            try:
                # a clock far off is reported once it stayed so for source.RTCP_SETTLE_SECONDS
                wait_for(lambda: recorder.segments >= 2 and (
                    abs(box_ahead) < 2 or bool(of_kind(events, "cctv.clock_drift"))), 30,
                    "two segments (and the drift reported)")
            finally:
                recorder.stop()
            return [r.segment for r in index.segments(include_retired=True)], recorder.arrived


def test_a_camera_clock_far_from_the_box_is_reported_and_the_box_clock_used(
        tmp_path: Path, b_frames_video: Path) -> None:
    events: list[Event] = []
    segments, arrived = _record(tmp_path, b_frames_video, events, box_ahead=30.0)
    drift = of_kind(events, "cctv.clock_drift")
    assert drift and drift[0]["camera_id"] == "cam1" and drift[0]["stream"] == "main"
    assert -30_500 < drift[0]["drift_ms"] < -29_500 and drift[0]["bound_ms"] == 2000
    assert {s for k, s, _ in events if k == "cctv.clock_drift"} == {"warning"}
    # the footage is on the box's clock (30 s ahead here), not the camera's
    assert abs((end(segments[-1]) - arrived[-1]).total_seconds() - 30) < 0.5


def test_a_camera_clock_within_the_bound_times_the_footage(
        tmp_path: Path, b_frames_video: Path) -> None:
    """The camera's sender reports (NTP time) are used where they agree with the box: the box
    runs 1.5 s ahead here, the footage keeps the camera's time. GStreamer sends its first
    report ~2 s into a session, while the first 4 s segment is written: the connection's
    clock is RTCP's from its first segment on."""
    events: list[Event] = []
    segments, arrived = _record(tmp_path, b_frames_video, events, box_ahead=1.5)
    assert not of_kind(events, "cctv.clock_drift")
    # on the box's clock the segments would start and end 1.5 s after their packets arrived
    assert abs((segments[0].start - arrived[0]).total_seconds()) < 0.5
    assert abs((end(segments[-1]) - arrived[-1]).total_seconds()) < 0.5
    for before, after in zip(segments, segments[1:], strict=False):
        assert abs((after.start - end(before)).total_seconds()) < 0.002, (before, after)


class SlowRecorder(WatchedRecorder):
    """The recorder on a starved box: each packet takes 0.25 s while `slow` is set (the
    stream sends one every 0.1 s)."""

    slow = threading.Event()

    def on_event(self, event: object) -> None:
        if isinstance(event, PacketEvent) and self.slow.is_set():
            time.sleep(0.25)
        super().on_event(event)


def test_a_camera_falling_behind_real_time_is_lagging_until_it_catches_up(
        tmp_path: Path, b_frames_video: Path) -> None:
    events: list[Event] = []
    with RtspServer({"cam1": b_frames_video}) as server:
        config = section(tmp_path / "footage", ("cam1", server.url("cam1")))
        config = config.model_copy(update={"lag_alarm_seconds": 1.0})
        with SegmentIndex.in_storage(config.storage_dir) as index:
            recorder = SlowRecorder(config, 0, index, events)
            recorder.start()
            try:
                wait_for(lambda: recorder.segments >= 1, 30, "a segment")
                assert not of_kind(events, "cctv.lagging")
                recorder.slow.set()
                wait_for(lambda: bool(of_kind(events, "cctv.lagging")), 30, "cctv.lagging")
                assert recorder.lag_seconds > 1.0
                recorder.slow.clear()
                wait_for(lambda: bool(of_kind(events, "cctv.lag_recovered")), 30,
                         "cctv.lag_recovered")
                assert recorder.lag_seconds < 0.5
            finally:
                recorder.slow.clear()
                recorder.stop()
    lagging, recovered = of_kind(events, "cctv.lagging"), of_kind(events, "cctv.lag_recovered")
    assert len(lagging) == len(recovered) == 1
    assert lagging[0]["camera_id"] == "cam1" and lagging[0]["bound_ms"] == 1000
    assert 1000 < lagging[0]["lag_ms"] < 2000  # raised as soon as it passed the bound
    assert recovered[0]["lag_ms"] < 500 and recovered[0]["lagging_ms"] > 0
    severities = {k: s for k, s, _ in events}
    assert severities["cctv.lagging"] == "warning"
    assert severities["cctv.lag_recovered"] == "notice"
    kinds = [k for k, _, _ in events]
    assert kinds.index("cctv.lagging") < kinds.index("cctv.lag_recovered")
    assert not of_kind(events, "cctv.packets_lost")  # slow, yet nothing lost


def test_the_tamper_detector_gets_arrival_times_not_the_stream_clock(
        tmp_path: Path, b_frames_video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream whose timestamps stand while packets keep arriving is frozen evidence: the
    packet facts must keep arrival times (on the stream's clock they would stand too)."""
    from floor_agent.cctv import recorder as recorder_module

    seen: list[float] = []
    real = recorder_module.tamper.observe_packet

    def spy(state: object, facts: object, config: object) -> object:
        seen.append(facts.arrival)  # type: ignore[attr-defined]
        return real(state, facts, config)  # type: ignore[arg-type]

    monkeypatch.setattr(recorder_module.tamper, "observe_packet", spy)
    config = section(tmp_path / "footage", ("cam1", "rtsp://127.0.0.1:9/cam1"))
    events: list[Event] = []
    stream_at = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    with SegmentIndex.in_storage(config.storage_dir) as index, \
            av.open(str(b_frames_video)) as container:
        recorder = WatchedRecorder(config, 0, index, events)
        try:
            packet = next(iter(container.demux(container.streams.video[0])))
            arrived = stream_at + timedelta(seconds=7)
            recorder.on_event(PacketEvent("cam1", packet, stream_at, 0.0, arrived))
        finally:
            recorder.stop()
    assert seen == [arrived.timestamp()]


class StarvedRecorder(WatchedRecorder):
    """A recorder on a starved box: each packet takes 0.15 s (the stream sends one every
    0.1 s) while `slow` is set, until it is told to stop."""

    slow = threading.Event()
    first_arrival: float | None = None

    def on_event(self, event: object) -> None:
        if isinstance(event, PacketEvent):
            self.first_arrival = self.first_arrival or time.monotonic()
            if self.slow.is_set() and not self._stop.is_set():
                time.sleep(0.15)
        super().on_event(event)


def test_a_stop_writes_what_the_camera_sent_before_it(tmp_path: Path,
                                                      b_frames_video: Path) -> None:
    """Was: a lagging camera's backlog (sent, waiting in the socket) was never written when
    the service stopped. The server plays the file in real time from the session's start: by
    the stop it had sent (stop - first packet) x FPS frames, and that many are in the
    segments, decodable, in order (within two frames: the timing of the first packet)."""
    events: list[Event] = []
    with RtspServer({"cam1": b_frames_video}) as server:
        config = section(tmp_path / "footage", ("cam1", server.url("cam1")))
        with SegmentIndex.in_storage(config.storage_dir) as index:
            recorder = StarvedRecorder(config, 0, index, events)
            recorder.start()
            try:
                wait_for(lambda: recorder.segments >= 1, 30, "a segment")
                recorder.slow.set()
                wait_for(lambda: recorder.lag_seconds > 2.0, 30, "2 s of lag")
                stopped = time.monotonic()
                recorder.stop()
                took = time.monotonic() - stopped
            finally:
                recorder.slow.clear()
                recorder.stop()
            segments = [r.segment for r in index.segments(include_retired=True)]
    assert recorder.first_arrival is not None
    sent = (stopped - recorder.first_arrival) * FPS
    numbers = decode_numbers([tmp_path / "footage" / s.path for s in segments])
    # from the first frame, none missing, in order (the last few may skip numbers: B-frames
    # shown before the last P-frame that the server had not sent yet)
    assert numbers[:-4] == list(range(len(numbers) - 4)), numbers[-8:]
    assert numbers == sorted(set(numbers))
    assert len(numbers) >= sent - 2, (len(numbers), sent)
    assert took < 3.0 + 1.0  # stop_drain_seconds, and the rest of the stop
    assert not of_kind(events, "cctv.packets_lost")
