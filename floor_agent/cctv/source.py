"""One camera's stream: demuxed packets for the recorder, small grey frames for motion and tamper.

A `CameraSource` runs a thread that opens the camera with PyAV (rtsp:// over TCP with a socket
timeout, http(s):// MPEG-TS, or a file), hands every video packet on unchanged, decodes only
what analysis needs (keyframes alone when `analysis_fps` <= 1, else every packet but converted
to a small grey frame only at `analysis_fps`, downscaled in the decoder), and reconnects with
exponential backoff when the stream ends or fails. A watchdog thread marks the camera offline
after `offline_after_seconds` without packets, wherever the reader is blocked.

Everything is reported as typed events to one callback (`on_event`), called from the source's
threads one at a time; nothing is raised out of a thread. Events, in the order a camera's life
produces them:

- `Connected` (stream opened: codec, size) / `ConnectFailed` (reason, attempt, retry delay)
- `PacketEvent` (a video packet to record, with its time on the stream's own clock and how far
  behind real time it arrived) and `FrameEvent` (a `SmallFrame` for motion/tamper)
- `ClockDrift` (the camera's own wall clock, from its RTCP sender reports, differs from the
  box's by more than `clock_drift_seconds`: its reports are not trusted for this connection)
- `StreamLost` (the stream ended or failed, with the reason) and, after reconnecting,
  `StreamRecovered` (with the gap in seconds: the hole in the footage, an audit event)
- `CameraOffline` (no packets for `offline_after_seconds`) / `CameraOnline` (with the time
  it was offline): cctv.camera_offline / cctv.camera_online
- `BadInput` (a packet the decoder refused, a zero-size frame: counted, the camera goes on)
- `AnalysisShed` / `AnalysisRestored` (the main stream's lag crossed `shed_analysis_seconds`:
  analysis on key frames only, and back)
- `AudioTrack` (once per connection of the main stream: the camera's audio codec, or None
  when it sends none, and whether its packets are handed on: `SourceSettings.audio`; off,
  the audio is never demuxed)
- `SourceFinished` (a file source reached its end; files are not reopened)

`stop()` does not drop what the camera already sent: a main stream that is behind real time
(packets waiting in the socket) is read on until a packet is within CAUGHT_UP_SECONDS of real
time, for at most `stop_drain_seconds` (3 s; then at most the socket timeout for a packet that
does not come), every packet handed on as usual before the reader ends.

Time from the stream (issue 22): a live packet's time is not its arrival. Once per connection
the arrival of the first packet with a timestamp anchors the stream's PTS to the box's clock;
every later packet is that anchor plus its PTS difference (moved earlier only when a packet
arrives before the anchor says it can have been sent: the first packet was held up). Where
the camera sends RTCP sender reports, FFmpeg's `start_time_realtime` gives the NTP wall time
of PTS 0 and that is used instead, unless it differs from the arrival anchor by more than
`clock_drift_seconds` (`ClockDrift`; the arrival anchor is used). How far a packet arrives
behind its anchored time (`PacketEvent.behind`) is the camera's lag: a reader that falls
behind real time (CPU starvation) reads packets ever later than the stream's clock says they
were sent.

Analysis is shed before recording (issue 22): while the main stream's reader is more than
`shed_analysis_seconds` behind real time (`AnalysisShed`), every reader that decodes for motion
and tamper decodes key frames only (FFmpeg's skip_frame NONKEY: the cheapest decode there is,
the frames between are not even parsed into pictures); once the lag has stayed under half of
that for `shed_restore_seconds` (`AnalysisRestored`; the hold doubles when it is shed again
soon after, up to MAX_RESTORE_HOLD_SECONDS: shedding.py) it decodes at its configured rate
again from the next key frame. Every packet is still handed on to the recording either way.

Reasons and events carry no credentials (URLs are shown without user:password) and no footage.
`v4l2:///dev/videoN` and MJPEG sources are read through OpenCV: see `OpenCvSource`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import av
import cv2
import numpy as np

from floor_agent.cctv import shedding
from floor_agent.cctv.downscale import small_grey, small_size
from floor_agent.cctv.model import CameraHealth, SmallFrame
from floor_agent.cctv.snapshot import snapshot_jpeg
from floor_agent.common.backoff import backoff_delay
from floor_agent.common.clock import utc_now
from floor_agent.common.urls import redact_url

# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Connected:
    camera_id: str
    stream: str  # "main" (recorded) or "detect" (analysis sub-stream)
    url: str  # without credentials
    codec: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    camera_id: str
    stream: str
    url: str
    reason: str
    attempt: int
    retry_in: float


@dataclass(frozen=True, slots=True)
class PacketEvent:
    """A demuxed video packet, unchanged. Whoever writes it takes it (the writer re-targets
    it); the source has already decoded what it needed from it."""

    camera_id: str
    packet: av.Packet = field(repr=False)
    # UTC, on the stream's own clock (see the module's docstring); a packet without a pts
    # (RTSP's first after a connect) has its arrival time here, the writer derives its own
    at: datetime
    behind: float = 0.0  # seconds it arrived after its anchored time: the camera's lag
    arrived: datetime | None = None  # wall-clock arrival (a file: its time), UTC


@dataclass(frozen=True, slots=True)
class ClockDrift:
    """The camera's clock (RTCP sender reports) against the box's at a connection's start."""

    camera_id: str
    stream: str
    drift_seconds: float  # camera minus box (positive: the camera's clock is ahead)
    bound_seconds: float


@dataclass(frozen=True, slots=True)
class AnalysisShed:
    """The main stream's reader fell `behind` real time by more than `bound_seconds`: the
    analysis decoder now decodes key frames only (one every `keyframe_seconds` of the
    stream, None: not measured yet), recording goes on with every packet."""

    camera_id: str
    behind: float
    bound_seconds: float
    keyframe_seconds: float | None


@dataclass(frozen=True, slots=True)
class AnalysisRestored:
    """The reader caught up (under half the bound): the analysis decodes at its configured
    rate again, from the next key frame; `shed_seconds`: how long it was shed."""

    camera_id: str
    behind: float
    shed_seconds: float


@dataclass(frozen=True, slots=True)
class FrameEvent:
    frame: SmallFrame = field(repr=False)
    snapshot: bytes | None = field(default=None, repr=False)  # JPEG, every SNAPSHOT_SECONDS

    @property
    def camera_id(self) -> str:
        return self.frame.camera_id


@dataclass(frozen=True, slots=True)
class StreamLost:
    camera_id: str
    stream: str
    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class StreamRecovered:
    camera_id: str
    stream: str
    gap_seconds: float  # from the last packet before the loss to the first one after
    lost_at: datetime
    at: datetime


@dataclass(frozen=True, slots=True)
class CameraOffline:
    camera_id: str
    reason: str
    since: datetime  # the last packet (or the start, when there never was one)


@dataclass(frozen=True, slots=True)
class CameraOnline:
    camera_id: str
    offline_seconds: float


@dataclass(frozen=True, slots=True)
class BadInput:
    camera_id: str
    stream: str
    reason: str


@dataclass(frozen=True, slots=True)
class AudioTrack:
    """The main stream's audio at a connection: `codec` (None: the camera sends none) and
    whether its packets come as `PacketEvent`s (`recorded`: SourceSettings.audio)."""

    camera_id: str
    codec: str | None
    recorded: bool


@dataclass(frozen=True, slots=True)
class SourceFinished:
    camera_id: str
    stream: str
    reason: str


SourceEvent = (Connected | ConnectFailed | PacketEvent | FrameEvent | StreamLost
               | StreamRecovered | CameraOffline | CameraOnline | BadInput | SourceFinished
               | AudioTrack | ClockDrift | AnalysisShed | AnalysisRestored)

# --------------------------------------------------------------------------- pure helpers

CAUGHT_UP_SECONDS = 0.2  # a packet this little behind real time: nothing waits behind it
# a camera's RTCP time that disagrees with the arrival anchor is judged again for this long
# (the anchor settles as the packets buffered while connecting drain) before cctv.clock_drift
RTCP_SETTLE_SECONDS = 5.0
MAX_RESTORE_HOLD_SECONDS = 600.0  # a flapping camera's restore hold doubles up to this


def is_file_url(url: str) -> bool:
    scheme = urlsplit(url).scheme
    return scheme in ("", "file") or len(scheme) == 1  # a bare path (or a Windows drive)


# Opening a stream probes it by decoding its first frames (FFmpeg decodes seven of an H.264
# stream to guess its delay): 45 ms of CPU on a 1080p stream at every (re)connection. A stream
# that is only copied needs its size and codec, which the demuxer and parser give: its probe
# decodes nothing (one options dict per stream, a camera's audio included).
PROBE_UNDECODED = [{"skip_frame": "all"}] * 8


def decode_for_analysis(ctx: av.codec.context.CodecContext, *, skip_deblocking: bool,
                        keyframes_only: bool = False) -> None:
    """Set up a stream's decoder (before its first packet) as the source decodes for motion
    and tamper, whose frames never reach the recording:
    - one thread: FFmpeg's default starts several per stream, which on a box with dozens of
      cameras costs more than it gives (bench/cctv.py);
    - `skip_deblocking`: no in-loop deblocking filter on frames that are not intra, ~16 % of
      the decode for a fraction of a grey level on the small frame (its drift ends at each
      intra frame; tests/test_cctv_analysis_decode.py);
    - `keyframes_only` (analysis at 1 fps or less, or shed while the camera lags: `_Reader._shed`
      sets it on an open decoder too): nothing else is decoded."""
    ctx.thread_count = 1
    if skip_deblocking:
        ctx.options = {"skip_loop_filter": "nointra"}
    if keyframes_only:
        ctx.skip_frame = "NONKEY"


def open_options(url: str, timeout_seconds: float) -> dict[str, str]:
    """PyAV/FFmpeg options for a camera URL (the notes' checked recipe for RTSP)."""
    options = {"analyzeduration": "500000", "probesize": "500000"}
    scheme = urlsplit(url).scheme
    micros = str(int(timeout_seconds * 1_000_000))
    if scheme in ("rtsp", "rtsps"):
        options |= {"rtsp_transport": "tcp", "timeout": micros}
    elif scheme in ("http", "https"):
        options |= {"timeout": micros, "reconnect": "0"}
    return options


def error_reason(exc: BaseException) -> str:
    """Words for a failure, without the URL (FFmpeg's messages quote the filename, which may
    carry a password)."""
    if isinstance(exc, av.FFmpegError):
        return f"{type(exc).__name__}: {exc.strerror or 'FFmpeg error'}"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or 'OS error'}"
    return type(exc).__name__


@dataclass
class HealthWindow:
    """Packet arrivals over the last `window` seconds, for the dashboard's fps."""

    window: float = 5.0
    arrivals: deque[float] = field(default_factory=deque)

    def add(self, now: float) -> None:
        self.arrivals.append(now)
        while self.arrivals and now - self.arrivals[0] > self.window:
            self.arrivals.popleft()

    def fps(self, now: float) -> float:
        recent = [t for t in self.arrivals if now - t <= self.window]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)


# --------------------------------------------------------------------------- the source


@dataclass(frozen=True, slots=True)
class SourceSettings:
    """What a source needs from the config (CctvSection + the camera's MotionConfig)."""

    offline_after_seconds: float = 10.0
    reconnect_initial_seconds: float = 1.0
    reconnect_max_seconds: float = 30.0
    timeout_seconds: float = 5.0  # socket timeout for rtsp/http
    analysis_fps: float = 5.0
    frame_height: int = 144
    skip_deblocking: bool = True  # in the analysis decoder, on frames that are not intra
    realtime_files: bool = False  # pace a file by its timestamps, as a live camera would
    snapshot_seconds: float = 0.0  # a JPEG for the dashboard this often (0: none)
    audio: bool = False  # hand the main stream's audio packets on (CameraConfig.audio)
    # RTCP wall time further than this from the box's clock: ClockDrift, arrival anchor used
    clock_drift_seconds: float = 2.0
    # at stop, a lagging stream is read on (what the camera sent is written) this long at most
    stop_drain_seconds: float = 3.0
    # the main stream's reader this far behind real time: analysis decodes key frames only
    # (AnalysisShed) until it is back under half of it (AnalysisRestored); recording is never
    # shed. 0: never shed.
    shed_analysis_seconds: float = 1.0
    # shed, full analysis comes back once the lag stayed under half the bound this long
    shed_restore_seconds: float = 10.0

    @staticmethod
    def of(section: object, camera: object) -> SourceSettings:
        """From a CctvSection and one of its CameraConfig."""
        return SourceSettings(
            offline_after_seconds=section.offline_after_seconds,  # type: ignore[attr-defined]
            reconnect_initial_seconds=section.reconnect_initial_seconds,  # type: ignore[attr-defined]
            reconnect_max_seconds=section.reconnect_max_seconds,  # type: ignore[attr-defined]
            analysis_fps=camera.motion.analysis_fps,  # type: ignore[attr-defined]
            frame_height=camera.motion.frame_height,  # type: ignore[attr-defined]
            skip_deblocking=camera.motion.skip_deblocking,  # type: ignore[attr-defined]
            audio=camera.audio,  # type: ignore[attr-defined]
            clock_drift_seconds=section.clock_drift_seconds,  # type: ignore[attr-defined]
            shed_analysis_seconds=section.shed_analysis_seconds,  # type: ignore[attr-defined]
            shed_restore_seconds=section.shed_restore_seconds)  # type: ignore[attr-defined]


class _Reader:
    """One URL's loop: open, demux, decode what is asked, reconnect with backoff."""

    def __init__(self, owner: CameraSource, url: str, stream: str, *, packets: bool,
                 frames: bool) -> None:
        self.owner = owner
        self.url = url
        self.stream = stream
        self.packets = packets
        self.frames = frames
        self._rtcp_seen: float | None = None  # when a report first disagreed (monotonic)
        self.shown_url = redact_url(url, keep_user=False)
        self.thread = threading.Thread(target=self._run, name=f"cctv-{owner.camera_id}-{stream}",
                                       daemon=True)
        self.t_offset = 0.0  # keeps SmallFrame.t monotonic across reconnects
        self.last_t = 0.0
        self.next_analysis_t = 0.0
        self.next_snapshot_t = 0.0
        # the analysis decoder's context while connected, and whether it is shed (key frames
        # only because the camera lags) at the moment
        self.ctx: av.codec.context.CodecContext | None = None
        self.shedding = False
        self.last_key_pts: float | None = None

    def _run(self) -> None:
        owner = self.owner
        attempt = 0
        lost_at: datetime | None = None
        lost_mono = 0.0
        while not owner.stopping.is_set():
            try:
                timeout = owner.settings.timeout_seconds
                container = av.open(self.url, options=open_options(self.url, timeout),
                                    # PyAV's stubs say list[str]; it takes one dict a stream
                                    stream_options=(None if self.frames  # type: ignore[arg-type]
                                                    else PROBE_UNDECODED),
                                    timeout=timeout)
            except (av.FFmpegError, OSError, ValueError) as exc:
                attempt += 1
                delay = backoff_delay(attempt, owner.settings.reconnect_initial_seconds,
                                      owner.settings.reconnect_max_seconds)
                failure = error_reason(exc)
                owner.mark_reason(failure, self.stream)
                owner.emit(ConnectFailed(owner.camera_id, self.stream, self.shown_url, failure,
                                         attempt, delay))
                owner.stopping.wait(delay)
                continue
            try:
                reason = self._read(container, lost_at, lost_mono)
            except Exception as exc:  # noqa: BLE001  (a bad stream must not end the thread)
                reason = error_reason(exc)
            finally:
                with contextlib.suppress(Exception):
                    container.close()
            if owner.stopping.is_set():
                return
            if reason is None:  # a file at its end
                owner.emit(SourceFinished(owner.camera_id, self.stream, "end of file"))
                owner.finished(self.stream)
                return
            attempt = 0 if self._got_packets else attempt + 1
            if self._got_packets:  # the gap runs from the last packet we had
                lost_at, lost_mono = self._last_packet_at, self._last_packet_mono
            elif lost_at is None:
                lost_at, lost_mono = owner.utcnow(), time.monotonic()
            owner.mark_reason(reason, self.stream, lost=True)
            owner.emit(StreamLost(owner.camera_id, self.stream, reason, owner.utcnow()))
            delay = backoff_delay(max(1, attempt), owner.settings.reconnect_initial_seconds,
                                  owner.settings.reconnect_max_seconds)
            owner.stopping.wait(delay)

    def _read(self, container: av.container.InputContainer, lost_at: datetime | None,
              lost_mono: float) -> str | None:
        """Demux until the stream ends; the reason it ended (None: a file at its end)."""
        owner = self.owner
        self._got_packets = False
        self._last_packet_at = owner.utcnow()
        self._last_packet_mono = time.monotonic()
        if not container.streams.video:
            return "no video stream"
        stream = container.streams.video[0]
        ctx = stream.codec_context
        if self.frames:
            self.ctx, self.shedding, self.last_key_pts = ctx, owner.analysis_shed, None
            decode_for_analysis(ctx, skip_deblocking=owner.settings.skip_deblocking,
                                keyframes_only=owner.settings.analysis_fps <= 1.0
                                or self.shedding)
        owner.emit(Connected(owner.camera_id, self.stream, self.shown_url, ctx.name,
                             ctx.width, ctx.height))
        audio = None
        if self.packets:  # the main stream: its audio said once per connection
            audio = next(iter(container.streams.audio), None)
            if audio is not None or owner.settings.audio:
                owner.emit(AudioTrack(owner.camera_id,
                                      None if audio is None else audio.codec_context.name,
                                      owner.settings.audio))
            if not owner.settings.audio:
                audio = None
        file_source = is_file_url(self.url)
        started, opened_at = time.monotonic(), owner.utcnow()
        first_pts: float | None = None
        self.t_offset = self.last_t + (time.monotonic() - lost_mono if lost_at else 0.0)
        conn_base: float | None = None
        # a float once per connection: Fraction arithmetic on every packet costs more
        seconds_per_tick = float(stream.time_base) if stream.time_base else 0.0
        # the stream's clock on the box's: arrival of the first timed packet (wall, monotonic)
        # and its pts; RTCP's wall time of pts 0 once known and trusted (None: not (yet))
        anchor: tuple[datetime, float, float] | None = None
        lag_anchor: tuple[float, float] | None = None  # (monotonic, dts) for the lag
        rtcp_base: float | None = None
        rtcp_judged = file_source
        self._rtcp_seen = None
        behind, drain_until = 0.0, None
        last_stream_at: datetime | None = None  # audio goes by its video's clock
        for packet in container.demux(stream) if audio is None else \
                container.demux(stream, audio):
            if owner.stopping.is_set():
                # what the camera sent before the stop is written first: read on while the
                # last packet was behind real time (the rest waits in the socket), for at
                # most `stop_drain_seconds`
                now_mono = time.monotonic()
                drain_until = drain_until or now_mono + owner.settings.stop_drain_seconds
                if file_source or self.stream != "main" or behind <= CAUGHT_UP_SECONDS \
                        or now_mono >= drain_until:
                    return "stopped"
            if packet.size == 0 and packet.pts is None:
                continue  # the demuxer's flush packet
            if audio is not None and packet.stream is audio:  # copied as it came, no analysis
                owner.emit(PacketEvent(owner.camera_id, packet,
                                       last_stream_at or self._last_packet_at, behind,
                                       self._last_packet_at))
                continue
            now_mono = time.monotonic()
            at = owner.utcnow()
            pts_s = packet.pts * seconds_per_tick if packet.pts is not None and \
                seconds_per_tick else None
            behind = 0.0
            if file_source and pts_s is not None:
                # a file has no arrival time: its packets are as late as their timestamps
                first_pts = pts_s if first_pts is None else first_pts
                at = opened_at + timedelta(seconds=pts_s - first_pts)
                wait = (pts_s - first_pts) - (now_mono - started)
                if owner.settings.realtime_files and wait > 0:
                    if owner.stopping.wait(wait):
                        return "stopped"
                    now_mono = time.monotonic()
            stream_at = at  # arrival, or a file's time: what the packet is timed by
            if not file_source and pts_s is not None:
                if anchor is None:
                    anchor = (at, now_mono, pts_s)
                if (now_mono - anchor[1]) - (pts_s - anchor[2]) < 0:
                    anchor = (at, now_mono, pts_s)  # sent before the anchor allows: it was late
                # the lag goes by decode order (dts: packets arrive in it); by pts, a B-frame
                # stream's reordering read as a lag of up to its reorder delay on every GOP
                dts_s = packet.dts * seconds_per_tick if packet.dts is not None else pts_s
                if lag_anchor is None:
                    lag_anchor = (now_mono, dts_s)
                behind = (now_mono - lag_anchor[0]) - (dts_s - lag_anchor[1])
                if behind < 0:
                    lag_anchor, behind = (now_mono, dts_s), 0.0
                if not rtcp_judged:
                    rtcp_base, rtcp_judged = self._rtcp_base(container, anchor)
                stream_at = (datetime.fromtimestamp(rtcp_base + pts_s, UTC)
                             if rtcp_base is not None
                             else anchor[0] + timedelta(seconds=pts_s - anchor[2]))
                if self.packets:
                    owner.judge_lag(behind)
            if not self._got_packets:
                self._got_packets = True
                if lost_at is not None:
                    owner.emit(StreamRecovered(owner.camera_id, self.stream,
                                               round(now_mono - lost_mono, 3), lost_at, at))
            self._last_packet_at, self._last_packet_mono = at, now_mono
            if packet.is_corrupt:  # the demuxer saw it damaged: recorded as it came, reported
                where = f" at {pts_s:.2f} s" if pts_s is not None else ""
                owner.emit(BadInput(owner.camera_id, self.stream, f"corrupt packet{where}"))
            if self.frames:
                if pts_s is not None and conn_base is None:
                    conn_base = pts_s
                t = self.t_offset + ((pts_s - conn_base) if pts_s is not None and
                                     conn_base is not None else now_mono - started)
                if packet.is_keyframe and pts_s is not None:
                    if self.last_key_pts is not None and pts_s > self.last_key_pts:
                        owner.keyframe_seconds = pts_s - self.last_key_pts
                    self.last_key_pts = pts_s
                self._shed(packet)
                self._analyse(packet, t)
            owner.packet_arrived(self.stream, at, now_mono)
            if self.packets:
                owner.emit(PacketEvent(owner.camera_id, packet, stream_at, behind, at))
            last_stream_at = stream_at
        return None if file_source else "stream ended"

    def _rtcp_base(self, container: av.container.InputContainer,
                   anchor: tuple[datetime, float, float]) -> tuple[float | None, bool]:
        """The camera's wall time (seconds since the epoch) of pts 0 from its RTCP sender
        reports, and whether that is settled for this connection: (None, False) while no
        report came, or while one disagrees with an anchor not yet settled; (None, True) when
        it is still too far from the arrival anchor RTCP_SETTLE_SECONDS after the first
        report (ClockDrift).

        The anchor is the first packet's arrival, late by however long the connection took to
        hand it over (FFmpeg probes an RTSP stream before the first packet comes out, longer
        on a starved box), and moved earlier as the packets buffered meanwhile drain. Judged
        at the first report, 24 cameras connecting on a box with one core busy raised false
        `cctv.clock_drift` (bench/cctv_live.py); the verdict waits for the anchor to settle."""
        realtime = container.start_time_realtime
        if realtime is None or realtime <= 0:
            return None, False
        base = realtime / 1_000_000
        drift = (base + anchor[2]) - anchor[0].timestamp()
        bound = self.owner.settings.clock_drift_seconds
        if abs(drift) > bound:
            now = time.monotonic()
            self._rtcp_seen = self._rtcp_seen or now
            if now - self._rtcp_seen < RTCP_SETTLE_SECONDS:
                return None, False
            self.owner.emit(ClockDrift(self.owner.camera_id, self.stream, round(drift, 3),
                                       bound))
            return None, True
        return base, True

    def _shed(self, packet: av.Packet) -> None:
        """Follow the camera's shed state (CameraSource.judge_lag) in this reader's analysis
        decoder: key frames only at once; the configured rate again from a key frame (the
        frames between need the ones skipped)."""
        shed, ctx = self.owner.analysis_shed, self.ctx
        if ctx is None or shed == self.shedding or (not shed and not packet.is_keyframe):
            return
        self.shedding = shed
        ctx.skip_frame = "NONKEY" if shed or self.owner.settings.analysis_fps <= 1.0 \
            else "DEFAULT"

    def _analyse(self, packet: av.Packet, t: float) -> None:
        """Decode the packet (always: later frames need it) and, at the analysis rate, hand
        on a small grey frame scaled in the decoder."""
        owner = self.owner
        try:
            decoded = packet.decode()
        except (av.FFmpegError, ValueError) as exc:
            owner.emit(BadInput(owner.camera_id, self.stream,
                                f"undecodable packet: {error_reason(exc)}"))
            return
        for frame in decoded:
            if t < self.next_analysis_t:
                continue
            if frame.width <= 0 or frame.height <= 0:
                owner.emit(BadInput(owner.camera_id, self.stream, "zero-size frame"))
                continue
            try:
                # read from the luma plane in place, strided and averaged (downscale.py):
                # a quarter of the scaler's cost on 1080p (bench/cctv.py)
                grey = small_grey(frame, owner.settings.frame_height)
            except (av.FFmpegError, ValueError, cv2.error) as exc:
                owner.emit(BadInput(owner.camera_id, self.stream,
                                    f"frame not convertible: {error_reason(exc)}"))
                continue
            self.next_analysis_t = t + 1.0 / owner.settings.analysis_fps - 1e-6
            self.last_t = max(self.last_t, t)
            snapshot = None
            if owner.settings.snapshot_seconds > 0 and t >= self.next_snapshot_t:
                self.next_snapshot_t = t + owner.settings.snapshot_seconds
                try:
                    snapshot = snapshot_jpeg(frame)
                except (av.FFmpegError, ValueError, cv2.error) as exc:
                    owner.emit(BadInput(owner.camera_id, self.stream,
                                        f"snapshot not encodable: {error_reason(exc)}"))
            owner.emit(FrameEvent(SmallFrame(owner.camera_id, self.last_t, grey), snapshot))


class CameraSource:
    """One camera: packets from `url`, small frames from `detect_url` (or `url`), health, and
    the offline watchdog. `start()` starts its threads, `stop()` ends them; `on_event` gets
    every `SourceEvent` (one call at a time, from the source's threads)."""

    def __init__(self, camera_id: str, url: str, on_event: Callable[[SourceEvent], None], *,
                 detect_url: str | None = None, settings: SourceSettings = SourceSettings(),
                 utcnow: Callable[[], datetime] = utc_now) -> None:
        self.camera_id = camera_id
        self.settings = settings
        self.utcnow = utcnow
        self._on_event = on_event
        self._emit_lock = threading.Lock()
        self._state = threading.Lock()
        self.stopping = threading.Event()
        self.callback_errors = 0
        self._window = HealthWindow()
        self._online = False
        self._offline_reported = False
        self._went_offline_mono = 0.0
        self._last_packet_mono: float | None = None
        self._last_packet_at: datetime | None = None
        self._started_mono = 0.0
        self._started_at: datetime | None = None
        self._stalls = 0
        self._reason = "not started"
        self._done: set[str] = set()
        # analysis shed (key frames only) while the main stream lags (shedding.py)
        self._shed_state = shedding.ShedState()
        self.keyframe_seconds: float | None = None  # the analysed stream's key-frame interval
        self._readers = [_Reader(self, url, "main", packets=True, frames=detect_url is None)]
        if detect_url is not None:
            self._readers.append(_Reader(self, detect_url, "detect", packets=False, frames=True))
        self._watchdog = threading.Thread(target=self._watch, name=f"cctv-{camera_id}-watchdog",
                                          daemon=True)

    def __repr__(self) -> str:
        return f"CameraSource({self.camera_id!r}, {self._readers[0].shown_url!r})"

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._started_mono = time.monotonic()
        self._started_at = self.utcnow()
        self._reason = "connecting"
        for reader in self._readers:
            reader.thread.start()
        self._watchdog.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        for reader in self._readers:
            if reader.thread.is_alive():
                reader.thread.join(timeout)
        if self._watchdog.is_alive():
            self._watchdog.join(timeout)

    def __enter__(self) -> CameraSource:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- health

    def health(self) -> CameraHealth:
        now = time.monotonic()
        with self._state:
            return CameraHealth(self.camera_id, self._online, round(self._window.fps(now), 2),
                                self._last_packet_at, self._stalls,
                                "" if self._online else self._reason)

    # ----------------------------------------------------------------- for the readers

    def emit(self, event: SourceEvent) -> None:
        with self._emit_lock:
            try:
                self._on_event(event)
            except Exception:  # noqa: BLE001  (the consumer's bug must not stop the camera)
                self.callback_errors += 1

    def mark_reason(self, reason: str, stream: str, *, lost: bool = False) -> None:
        with self._state:
            self._reason = reason if stream == "main" else f"detect stream: {reason}"
            if lost and stream == "main":
                self._stalls += 1

    def packet_arrived(self, stream: str, at: datetime, now_mono: float) -> None:
        if stream != "main":
            return
        with self._state:
            self._window.add(now_mono)
            self._last_packet_mono, self._last_packet_at = now_mono, at
            back = self._offline_reported
            offline_for = now_mono - self._went_offline_mono
            self._online, self._offline_reported = True, False
        if back:
            self.emit(CameraOnline(self.camera_id, round(offline_for, 3)))

    @property
    def analysis_shed(self) -> bool:
        """Whether analysis is on key frames only because the main stream lags."""
        return self._shed_state.shed

    def judge_lag(self, behind: float) -> None:
        """The main stream's lag against `shed_analysis_seconds`: analysis shed above it,
        restored once under half of it for `shed_restore_seconds` (doubled after a re-shed,
        shedding.py); the readers follow at their next packet (_Reader._shed)."""
        settings = self.settings
        now = time.monotonic()
        self._shed_state, action = shedding.judge(
            self._shed_state, behind, now, settings.shed_analysis_seconds,
            settings.shed_restore_seconds, MAX_RESTORE_HOLD_SECONDS)
        if action == "shed":
            self.emit(AnalysisShed(self.camera_id, round(behind, 3),
                                   settings.shed_analysis_seconds, self.keyframe_seconds))
        elif action == "restore":
            self.emit(AnalysisRestored(self.camera_id, round(behind, 3),
                                       round(now - self._shed_state.since, 3)))

    def finished(self, stream: str) -> None:
        with self._state:
            self._done.add(stream)
            self._online = False
            self._reason = "end of file"

    def _watch(self) -> None:
        """Offline after `offline_after_seconds` without packets, whatever the reader is
        blocked in (opening, a hung socket, a backoff sleep)."""
        limit = self.settings.offline_after_seconds
        tick = min(0.25, limit / 4)
        while not self.stopping.wait(tick):
            now = time.monotonic()
            with self._state:
                if self._offline_reported or "main" in self._done:
                    continue
                last = self._last_packet_mono
                silent = now - (last if last is not None else self._started_mono)
                if silent < limit:
                    continue
                self._online, self._offline_reported = False, True
                self._went_offline_mono = now - silent
                since = self._last_packet_at or self._started_at or self.utcnow()
                reason = f"no frames for {silent:.1f} s ({self._reason})"
            self.emit(CameraOffline(self.camera_id, reason, since))


# --------------------------------------------------------------------------- OpenCV fallback


def is_opencv_url(url: str) -> bool:
    """USB cameras (v4l2:///dev/videoN) go through OpenCV: they give MJPEG or raw frames,
    never H.264 packets to copy."""
    return urlsplit(url).scheme == "v4l2"


def opencv_target(url: str) -> int | str:
    """What cv2.VideoCapture opens for a v4l2:// URL (the device index) or another URL."""
    parts = urlsplit(url)
    if parts.scheme == "v4l2":
        name = Path(parts.path).name
        if not name.startswith("video") or not name[5:].isdigit():
            raise ValueError(f"v4l2 URL must name /dev/videoN, got {parts.path!r}")
        return int(name[5:])
    return url


class OpenCvSource:
    """The one exception to "never re-encoded": a USB (V4L2/MJPEG) camera gives decoded
    frames only, so they are re-encoded by OpenCV's VideoWriter (`segments.FrameSegmentWriter`).
    Here: the frames, as BGR arrays with their stream time, and small grey frames at the
    analysis rate. A plain iterator, not a thread: the recorder runs it in its own.

    Thin on purpose: no USB camera exists on the test machine; it is exercised with an MJPEG
    file through the same cv2.VideoCapture path."""

    def __init__(self, camera_id: str, url: str, settings: SourceSettings = SourceSettings()
                 ) -> None:
        self.camera_id = camera_id
        self.url = url
        self.settings = settings

    def frames(self) -> Iterator[tuple[np.ndarray, float, SmallFrame | None]]:
        """(BGR frame, t, SmallFrame at the analysis rate or None) until the source ends."""

        capture = cv2.VideoCapture(opencv_target(self.url))
        if not capture.isOpened():
            raise ConnectionError(f"camera {self.camera_id}: OpenCV cannot open "
                                  f"{redact_url(self.url, keep_user=False)}")
        started = time.monotonic()
        next_t, last_pos, count = 0.0, -1.0, 0
        try:
            while True:
                ok, bgr = capture.read()
                if not ok or bgr is None or bgr.size == 0:
                    return
                # the frame's own time where the backend knows it (files), else arrival time
                pos = capture.get(cv2.CAP_PROP_POS_MSEC)
                t = pos / 1000.0 if pos > last_pos or (count == 0 and pos == 0) \
                    else time.monotonic() - started
                last_pos, count = max(pos, last_pos), count + 1
                small = None
                if t >= next_t:
                    h, w = bgr.shape[:2]
                    sw, sh = small_size(w, h, self.settings.frame_height)
                    grey = cv2.cvtColor(cv2.resize(bgr, (sw, sh), interpolation=cv2.INTER_AREA),
                                        cv2.COLOR_BGR2GRAY)
                    small = SmallFrame(self.camera_id, t, grey)
                    next_t = t + 1.0 / self.settings.analysis_fps - 1e-6
                yield bgr, t, small
        finally:
            capture.release()
