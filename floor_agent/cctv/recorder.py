"""One camera's pipeline: source -> segments (packets copied) and small frames -> motion and
tamper -> audit events; each completed segment -> the index and a `cctv.segment` event.

The imperative shell around the pure parts (motion.py, tamper.py, chain.py). The source calls
`on_event` from its threads (main and detect stream), so everything here runs under one lock,
one event at a time. A camera that misbehaves (bad packets, bad frames, a lost stream) is
reported and keeps recording what it can; it never stops another camera: each camera has its
own recorder and source threads.

Audit data has no floats (see protocol/event.py): times are milliseconds, fractions are
per-mille, measured values strings.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from floor_agent.cctv import motion, tamper
from floor_agent.cctv.config import CameraConfig, CctvSection
from floor_agent.cctv.index import SegmentIndex
from floor_agent.cctv.model import GENESIS_SHA256, Segment
from floor_agent.cctv.segments import (
    KEYFRAME_WAIT,
    FrameSegmentWriter,
    SegmentWriter,
    audio_storable,
    lost_reasons,
)
from floor_agent.cctv.snapshot import SNAPSHOT_SECONDS, bgr_snapshot_jpeg
from floor_agent.cctv.source import (
    AnalysisRestored,
    AnalysisShed,
    AudioTrack,
    BadInput,
    CameraOffline,
    CameraOnline,
    CameraSource,
    ClockDrift,
    Connected,
    FrameEvent,
    OpenCvSource,
    PacketEvent,
    SourceFinished,
    SourceSettings,
    StreamLost,
    StreamRecovered,
)
from floor_agent.protocol.emit import Emit
from floor_agent.protocol.kinds.cctv import CctvKind

log = logging.getLogger(__name__)

BAD_INPUT_REPEAT_SECONDS = 60.0  # the same bad-input reason is reported at most this often


def segment_event(segment: Segment) -> dict[str, Any]:
    """A segment's `cctv.segment` data: enough to verify the chain from the audit trail."""
    return {"camera_id": segment.camera_id, "seq": segment.seq, "path": segment.path,
            "start": segment.start.isoformat(), "duration_ms": round(segment.duration * 1000),
            "size": segment.size, "sha256": segment.sha256, "prev_sha256": segment.prev_sha256,
            "packets": segment.packets, "keyframe_start": segment.keyframe_start,
            "motion": segment.motion, "leading": segment.leading, "lost": segment.lost,
            "damaged": segment.damaged, "audio_packets": segment.audio_packets}


OPENCV_SUFFIXES = (".mjpg", ".mjpeg", ".avi")


def uses_opencv(url: str) -> bool:
    """USB cameras (v4l2://) and MJPEG sources give decoded frames only: read through OpenCV
    and re-encoded (the one exception); everything else is demuxed and copied with PyAV."""
    lowered = url.lower().split("?", 1)[0]
    return lowered.startswith("v4l2://") or lowered.endswith(OPENCV_SUFFIXES)


TS_PACKET = {".ts": 188, ".m2ts": 192}  # an MPEG-TS file is a whole number of these


def truncated_ts(url: str) -> str | None:
    """Why an MPEG-TS file played to its end was cut off, or None: a file that ends inside
    a transport packet (a copy or a write cut short). Its last picture may be incomplete;
    everything before it is recorded. Other files end cleanly or do not open at all."""
    path = Path(url.removeprefix("file://"))
    size = TS_PACKET.get(path.suffix.lower())
    if size is None or "://" in url.removeprefix("file://"):
        return None
    try:
        length = path.stat().st_size
    except OSError:
        return None
    if length % size == 0:
        return None
    return (f"file truncated: it ends {length % size} bytes into a {size}-byte transport "
            "packet; recorded up to there")


def _plain(detail: Any) -> dict[str, str]:
    """Measured values as short strings (audit data refuses floats)."""
    return {str(k): (f"{v:.3f}" if isinstance(v, float) else str(v))
            for k, v in dict(detail).items()}


class CameraRecorder:
    """Record one camera until stopped; report what happens to it."""

    def __init__(self, camera: CameraConfig, section: CctvSection, index: SegmentIndex,
                 emit: Emit, segment_done: Callable[[], None] | None = None,
                 snapshot_sink: Callable[[str, bytes], None] | None = None) -> None:
        # motion and tamper work on frames of ~256x144: OpenCV's thread pool costs more than it
        # saves there, for every camera of the process (bench/cctv.py)
        cv2.setNumThreads(1)
        self.camera = camera
        self.index = index
        self.emit = emit
        self.segment_done = segment_done
        self.snapshot_sink = snapshot_sink
        self.subject = f"camera {camera.camera_id}"
        last = index.last(camera.camera_id)
        seq, sha = last if last is not None else (0, GENESIS_SHA256)
        settings = SourceSettings.of(section, camera)
        if snapshot_sink is not None:
            settings = dataclasses.replace(settings, snapshot_seconds=SNAPSHOT_SECONDS)
        self._next_snapshot_t = 0.0
        self.section = section
        self.opencv = uses_opencv(camera.url)
        self.source: CameraSource | None = None
        if self.opencv:  # the one re-encoding exception: decoded frames only (USB, MJPEG)
            self.writer: SegmentWriter = FrameSegmentWriter(
                camera.camera_id, section.storage_dir, self._segment,
                segment_seconds=section.segment_seconds, last_seq=seq, last_sha256=sha)
            self._frames = OpenCvSource(camera.camera_id, camera.url, settings)
        else:
            self.writer = SegmentWriter(camera.camera_id, section.storage_dir, self._segment,
                                        segment_seconds=section.segment_seconds, last_seq=seq,
                                        last_sha256=sha, audio=camera.audio,
                                        last_end=index.last_end(camera.camera_id))
            self.source = CameraSource(camera.camera_id, camera.url, self.on_event,
                                       detect_url=camera.detect_url, settings=settings)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._motion = motion.MotionState()
        self._tamper = tamper.TamperState()
        self._mask: np.ndarray | None = None
        self._mask_shape: tuple[int, int] | None = None
        # motion's mask without the learned overlay (_motion_mask), and what it was made from
        self._overlay_seen: tamper.Overlay | None = None
        self._mask_base: np.ndarray | None = None
        self._motion_mask_cached: np.ndarray | None = None
        self._motion_in_segment = False
        self._bad_reported: dict[str, float] = {}
        self._codec: str | None = None  # the main stream's codec on its last connection
        self.segments = 0
        # how far behind real time the last written packet arrived (source.py's `behind`), and
        # since when (monotonic) the camera has been lagging, None while it is not
        self.lag_seconds = 0.0
        self._lagging_since: float | None = None
        self.analysis_shed = False  # motion and tamper on key frames only (the camera lags)

    def start(self) -> None:
        if self.source is not None:
            self.source.start()
        else:
            self._thread = threading.Thread(target=self._opencv_loop,
                                            name=f"cctv-{self.camera.camera_id}", daemon=True)
            self._thread.start()

    def begin_stop(self) -> None:
        """Tell the camera to stop (its source drains what was sent, source.py) without
        waiting: the runner stops every camera at once, then waits for each."""
        self._stop.set()
        if self.source is not None:
            self.source.stopping.set()

    def stop(self) -> None:
        self.begin_stop()
        if self.source is not None:
            self.source.stop()
        if self._thread is not None:
            self._thread.join(10)
        with self._lock:
            self.writer.close()
            lost, since, until = self.writer.take_lost()  # lost after the last segment
            if lost and since is not None and until is not None:
                self._packets_lost(lost, since, until)

    def _opencv_loop(self) -> None:
        """Frames from OpenCV (USB/MJPEG) into re-encoded segments and the analysis; a camera
        that cannot be opened or ends is reported and retried with backoff (a file ends)."""
        delay = self.section.reconnect_initial_seconds
        offline = False
        writer = self.writer
        assert isinstance(writer, FrameSegmentWriter), "an OpenCV camera writes decoded frames"
        while not self._stop.is_set():
            try:
                for bgr, t, small in self._frames.frames():
                    if offline:
                        offline = False
                        self.emit(CctvKind.CAMERA_ONLINE, self.subject, "notice",
                                  camera_id=self.camera.camera_id, offline_ms=0)
                    delay = self.section.reconnect_initial_seconds
                    with self._lock:
                        writer.write_frame(bgr, t)
                        if small is not None:
                            self._frame(FrameEvent(small, self._opencv_snapshot(bgr, t)))
                    if self._stop.is_set():
                        return
                with self._lock:
                    self.writer.close()
                if "://" not in self.camera.url:
                    return  # a file: played to its end
                reason = "stream ended"
            except (ConnectionError, OSError, ValueError) as e:
                reason = str(e)
            if not offline:
                offline = True
                self.emit(CctvKind.CAMERA_OFFLINE, self.subject, "critical",
                          camera_id=self.camera.camera_id, reason=reason,
                          since=datetime.now(UTC).isoformat())
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, self.section.reconnect_max_seconds)

    def _opencv_snapshot(self, bgr: np.ndarray, t: float) -> bytes | None:
        if self.snapshot_sink is None or t < self._next_snapshot_t:
            return None
        self._next_snapshot_t = t + SNAPSHOT_SECONDS
        return bgr_snapshot_jpeg(bgr)

    # -- events from the source --

    def on_event(self, event: object) -> None:
        with self._lock:
            self._handle(event)

    def _handle(self, event: object) -> None:
        if isinstance(event, PacketEvent):
            if self.camera.tamper.enabled and event.packet.stream.type == "video":
                self._packet_facts(event)
            self.writer.write(event.packet, event.at)
            self._lag(event.behind)
        elif isinstance(event, ClockDrift):
            self.emit(CctvKind.CLOCK_DRIFT, self.subject, "warning",
                      camera_id=self.camera.camera_id, stream=event.stream,
                      drift_ms=round(event.drift_seconds * 1000),
                      bound_ms=round(event.bound_seconds * 1000))
        elif isinstance(event, FrameEvent):
            self._frame(event)
        elif isinstance(event, StreamLost):
            if event.stream == "main":
                self.writer.cut()
            self.emit(CctvKind.STREAM_LOST, self.subject, "warning",
                      camera_id=self.camera.camera_id, stream=event.stream, reason=event.reason)
        elif isinstance(event, StreamRecovered):
            self.emit(CctvKind.STREAM_GAP, self.subject, "warning",
                      camera_id=self.camera.camera_id, stream=event.stream,
                      gap_ms=round(event.gap_seconds * 1000),
                      lost_at=event.lost_at.isoformat(), recovered_at=event.at.isoformat())
        elif isinstance(event, CameraOffline):
            self.emit(CctvKind.CAMERA_OFFLINE, self.subject, "critical",
                      camera_id=self.camera.camera_id, reason=event.reason,
                      since=event.since.isoformat())
        elif isinstance(event, CameraOnline):
            self.emit(CctvKind.CAMERA_ONLINE, self.subject, "notice",
                      camera_id=self.camera.camera_id,
                      offline_ms=round(event.offline_seconds * 1000))
        elif isinstance(event, BadInput):
            self._bad_input(event.stream, event.reason)
        elif isinstance(event, Connected) and event.stream == "main":
            self._connected(event)
        elif isinstance(event, AudioTrack):
            self._audio_track(event)
        elif isinstance(event, AnalysisShed | AnalysisRestored):
            self._analysis_rate(event)
        elif isinstance(event, SourceFinished) and event.stream == "main":
            self.writer.close()
            truncated = truncated_ts(self.camera.url)
            if truncated is not None:
                self._bad_input("main", truncated)

    def _lag(self, behind: float) -> None:
        """`cctv.lagging` once the last written packet is more than `lag_alarm_seconds` behind
        real time; `cctv.lag_recovered` once it is back under half of that."""
        self.lag_seconds = behind
        bound = self.section.lag_alarm_seconds
        if self._lagging_since is None and behind > bound:
            self._lagging_since = time.monotonic()
            self.emit(CctvKind.LAGGING, self.subject, "warning",
                      camera_id=self.camera.camera_id, lag_ms=round(behind * 1000),
                      bound_ms=round(bound * 1000))
        elif self._lagging_since is not None and behind < bound / 2:
            lagged = time.monotonic() - self._lagging_since
            self._lagging_since = None
            self.emit(CctvKind.LAG_RECOVERED, self.subject, "notice",
                      camera_id=self.camera.camera_id, lag_ms=round(behind * 1000),
                      lagging_ms=round(lagged * 1000))

    def _analysis_rate(self, event: AnalysisShed | AnalysisRestored) -> None:
        """`cctv.analysis_shed` / `cctv.analysis_restored`: the analysis rate in force, named
        for the auditor (what a shed camera still detects: README, cctv section)."""
        configured = self.camera.motion.analysis_fps
        rate = f"{configured:g} fps" if configured > 1.0 else "key frames only"
        if isinstance(event, AnalysisRestored):
            self.analysis_shed = False
            self.emit(CctvKind.ANALYSIS_RESTORED, self.subject, "notice",
                      camera_id=self.camera.camera_id, analysis=rate,
                      lag_ms=round(event.behind * 1000), shed_ms=round(event.shed_seconds * 1000))
            return
        self.analysis_shed = True
        every = event.keyframe_seconds
        shed = ("key frames only" if every is None
                else f"key frames only (one every {every:.2f} s: "
                     f"{min(configured, 1.0 / every):.2g} fps)")
        self.emit(CctvKind.ANALYSIS_SHED, self.subject, "warning",
                  camera_id=self.camera.camera_id, analysis=shed, configured=rate,
                  lag_ms=round(event.behind * 1000),
                  bound_ms=round(event.bound_seconds * 1000))

    def _packets_lost(self, lost: Counter[str], since: datetime, until: datetime,
                      seq: int | None = None, damaged: int = 0) -> None:
        """Packets the camera sent that no segment has (`count`, and why) and packets kept
        damaged (`damaged`): camera, time range (`seq`: the segment whose record counts them;
        none when recording stopped first)."""
        extra = {} if seq is None else {"seq": seq}
        # packets before a connection's first key frame alone are a notice: the reconnect
        # (or the start) is reported already; anything else is an alert for security staff
        expected = not damaged and set(lost) <= {KEYFRAME_WAIT}
        self.emit(CctvKind.PACKETS_LOST, self.subject, "notice" if expected else "warning",
                  camera_id=self.camera.camera_id, since=since.isoformat(),
                  until=until.isoformat(), count=sum(lost.values()), damaged=damaged,
                  reasons=lost_reasons(lost), **extra)

    def _audio_track(self, event: AudioTrack) -> None:
        """Audio is recorded by decision only: what is not, said once per connection (an
        auditor reads that the camera's sound was left out, and why)."""
        camera_id = self.camera.camera_id
        if event.codec is None:
            self.emit(CctvKind.AUDIO_NOT_RECORDED, self.subject, "notice", camera_id=camera_id,
                      codec=None, reason="audio: true, but the camera sends no audio")
        elif not event.recorded:
            self.emit(CctvKind.AUDIO_NOT_RECORDED, self.subject, "info", camera_id=camera_id,
                      codec=event.codec, reason="not recorded by policy (audio: false)")
        elif not audio_storable(event.codec):
            self.emit(CctvKind.AUDIO_NOT_RECORDED, self.subject, "warning",
                      camera_id=camera_id, codec=event.codec,
                      reason=f"audio: true, but the audio codec {event.codec} cannot be stored "
                             "in MP4 segments; the video is recorded without it")

    def _connected(self, event: Connected) -> None:
        """A camera that comes back with another codec (reconfigured, replaced, or another
        device answering on its URL) is named: its footage goes on in new segments of that
        codec, the segments recorded before stay as they are."""
        before, self._codec = self._codec, event.codec
        if before is not None and before != event.codec:
            self._bad_input("main", f"codec changed from {before} to {event.codec} "
                                    f"({event.width}x{event.height}) on reconnecting; "
                                    "recording goes on in new segments")

    def _bad_input(self, stream: str, reason: str) -> None:
        now = time.monotonic()
        key = f"{stream}:{reason.split(':')[0]}"
        if now - self._bad_reported.get(key, -BAD_INPUT_REPEAT_SECONDS) \
                < BAD_INPUT_REPEAT_SECONDS:
            return
        self._bad_reported[key] = now
        self.emit(CctvKind.BAD_INPUT, self.subject, "warning", camera_id=self.camera.camera_id,
                  stream=stream, reason=reason)

    def _frame(self, event: FrameEvent) -> None:
        if event.snapshot is not None and self.snapshot_sink is not None:
            self.snapshot_sink(self.camera.camera_id, event.snapshot)
        frame = event.frame
        grey = frame.grey
        shape = getattr(grey, "shape", None)
        if shape is not None and len(shape) == 2 and shape != self._mask_shape:
            if self._mask_shape is not None:  # the resolution changed: start over, say so
                self._motion, self._tamper = motion.MotionState(), tamper.TamperState()
            self._mask_shape = (int(shape[0]), int(shape[1]))
            self._mask = motion.mask_for(self.camera.motion.masks, self._mask_shape)
        try:
            if self.camera.motion.enabled:
                self._motion, result = motion.step(self._motion, frame, self.camera.motion,
                                                   self._motion_mask())
                if result.motion:
                    self._motion_in_segment = True
                if result.event is not None:
                    self.emit(CctvKind(f"cctv.{result.event}"), self.subject, "info",
                              camera_id=self.camera.camera_id, t_ms=round(result.t * 1000),
                              regions=len(result.regions),
                              moving_permille=round(result.moving_fraction * 1000))
            if self.camera.tamper.enabled:
                self._tamper, alarms = tamper.step(self._tamper, frame, self.camera.tamper)
                self._tamper_alarms(alarms)
        except ValueError as e:  # a frame the analysis refuses: reported, recording goes on
            self._bad_input("analysis", f"frame: {e}")

    def _motion_mask(self) -> np.ndarray | None:
        """The camera's motion mask without the overlay the tamper detector learned (its clock),
        made again only when the learned overlay changes."""
        overlay = self._tamper.overlay if self.camera.tamper.enabled else None
        if overlay is not self._overlay_seen or self._mask is not self._mask_base:
            self._overlay_seen, self._mask_base = overlay, self._mask
            self._motion_mask_cached = (
                self._mask if self._mask_shape is None
                else tamper.overlay_motion_mask(self._tamper, self._mask_shape, self._mask))
        return self._motion_mask_cached

    def _packet_facts(self, event: PacketEvent) -> None:
        """The stream's own evidence of a freeze: each main-stream packet's timestamp, size and
        a hash of its bytes (never the bytes) for tamper.observe_packet."""
        packet = event.packet
        pts = None
        if packet.pts is not None and packet.time_base is not None:
            pts = float(packet.pts * packet.time_base)
        # CRC-32 of the packet's buffer, read in place: a repeat is the same size and CRC on
        # every packet for frozen_seconds (hundreds of packets), which distinct packets never
        # are by chance; 5x cheaper than a 16-byte BLAKE2b (~7 us for a 35 kB packet)
        # arrival, not the stream's time: a stream whose timestamps stand while packets
        # arrive is evidence of a freeze
        arrived = event.arrived or event.at
        facts = tamper.PacketFacts(arrived.timestamp(), pts, packet.size,
                                   zlib.crc32(packet).to_bytes(4, "big"))
        self._tamper, alarms = tamper.observe_packet(self._tamper, facts, self.camera.tamper)
        self._tamper_alarms(alarms)

    def _tamper_alarms(self, alarms: list[tamper.TamperEvent]) -> None:
        for alarm in alarms:
            start = alarm.phase == "start"
            extra = {} if alarm.evidence is None else {"evidence": alarm.evidence}
            self.emit(CctvKind.TAMPER if start else CctvKind.TAMPER_CLEARED, self.subject,
                      alarm.severity if start else "notice",
                      camera_id=self.camera.camera_id, tamper=alarm.kind,
                      t_ms=round(alarm.t * 1000), detail=_plain(alarm.detail), **extra)

    def _segment(self, segment: Segment) -> None:
        """A completed segment (called by the writer, under our lock)."""
        segment = dataclasses.replace(segment, motion=self._motion_in_segment)
        self._motion_in_segment = self._motion.in_motion  # motion going on: the next too
        self.index.add(segment)
        self.segments += 1
        # the camera's lag rides on its periodic segment event: the collector's gauge
        self.emit(CctvKind.SEGMENT, self.subject, "info", **segment_event(segment),
                  lag_ms=round(self.lag_seconds * 1000))
        if segment.lost or segment.damaged:
            lost, since, until = self.writer.last_lost
            self._packets_lost(lost, since or segment.start, until or segment.start,
                               seq=segment.seq, damaged=segment.damaged)
        if self.segment_done is not None:
            self.segment_done()
