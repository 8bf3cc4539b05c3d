"""Camera packets copied, unchanged, into MP4 segment files that form a per-camera hash chain.

Never re-encoded: the camera's H.264/H.265 packets go into the file as they came (bit for bit),
so the footage is the camera's own and costs almost no CPU. A segment is cut only on a key
frame once `segment_seconds` have passed (so every segment plays on its own), and whenever the
stream changes under us (a reconnect, a new resolution or codec).

Container: MP4. Segments are written under a temporary name and renamed only when complete, so
MP4's one weakness (a file cut off before its index is unreadable) never reaches a final name;
in exchange MP4 has exact per-frame timestamps and durations, a small index for seeking and
export, and plays in every player an investigator has. MPEG-TS would survive truncation we never
keep, at 5-10 % more bytes.

No silent loss: every packet the camera sent goes into a segment, or is counted.
- Open GOP (B-frames after a key frame in decode order that are shown before it and reference
  the previous GOP too, as Hikvision/Dahua-class cameras encode): these leading pictures stay
  in the segment of the key frame they follow, as the camera sent them (`Segment.leading`
  counts them). They decode with the previous segment before them (segments played in
  sequence, an export); a segment opened on its own shows every picture but those. The MP4
  is written without an edit list, which would hide them (see MP4_OPTIONS).
- RTSP gives a connection's first packets no decode timestamp: they are held until the first
  packet with one and given the dts the stream implies, never dropped as going backwards.
- A packet that still cannot be muxed (empty, not H.264/H.265-shaped, before a connection's
  first key frame, going backwards) is dropped and counted by reason (`dropped`), never a
  crash: a camera's bad bytes do not stop its recording. What was lost since the previous
  segment is counted in the next segment's record (`Segment.lost`, `lost_reasons`), which the
  recorder raises as `cctv.packets_lost`. So are H.264 reference pictures the camera numbered
  that never came (numbering.py: a gap in the slice headers' frame_num; counted, not
  dropped: they never reached us). A packet the demuxer flags corrupt (TS packets or
  RTP packets lost on the way) is kept as it came, and counted (`Segment.damaged`, raised in
  the same event). Reasons never contain footage bytes.

Audio, by decision (CameraConfig.audio, off by default: recording the spoken word at a
workplace is unlawful in many EU states). Off: the source never hands an audio packet on.
On: the camera's audio packets are copied, never re-encoded, into the same segment as its
video, interleaved by time (the muxer orders them) and cut with it at the video's key frames;
every audio packet is counted like a video one (`Segment.audio_packets`, or `lost` with its
reason). An audio packet that comes before the first key frame of a connection is held and
written at the start of the segment that key frame opens (audio precedes the first picture;
never dropped for want of a key frame). MP4 stores AAC (and Opus, MP3) but not G.711
(PCMA/PCMU) or G.726, which many IP cameras send: `audio_storable` says which, the recorder
raises `cctv.audio_not_recorded` naming the camera and the codec once per connection, and the
video is recorded without the audio (those packets are not counted as lost: the event says
the whole track is not recorded).

Time from the stream: a segment starts at its key frame's time on the stream's own clock, as
the source gives it with each timed packet (source.py: the arrival anchor, or RTCP once the
camera's first sender report came) until the connection's first segment is finished, then
fixed for the connection (so that segment has RTCP's time when the report came while it was
written, and segments of one connection follow each other exactly); so the key frame RTSP
sends without a pts (given one when its held packets are released) has its true time. A start
before the previous segment's end (a new connection whose clock disagrees) is moved to that
end, and that connection's clock with it: segments never overlap in the index. A segment's
duration is what FFmpeg reads from the finished file.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import av

from floor_agent.cctv.model import GENESIS_SHA256, Segment
from floor_agent.cctv.numbering import FrameNumbering
from floor_agent.common.clock import utc_now
from floor_agent.common.files import file_sha256

RECORDED_CODECS = ("h264", "hevc")
KEYFRAME_WAIT = "waiting for a key frame"  # why a packet before a connection's first is lost
# why reference pictures the camera numbered never came (lost before they reached us)
NUMBERING_GAP = "missing from the camera's frame numbering"
HOLD_PACKETS = 64  # packets held at most while waiting for the first decode timestamp
# No MP4 edit list: FFmpeg's muxer starts it at the first packet's (the key frame's) time, and
# readers then discard an open GOP's leading pictures, shown before the key frame, as outside
# the edit; without one every packet in the file is presented at its own timestamp.
MP4_OPTIONS = {"use_editlist": "0"}
HOLD_AUDIO = 512  # audio packets held at most before a connection's first key frame
AUDIO_UNSTORABLE = "audio codec cannot be stored in MP4"


def temp_path(final: Path) -> Path:
    """Where a segment is written until it is sealed and renamed to `final`."""
    return final.with_name("." + final.name + ".part")


@functools.lru_cache(maxsize=32)
def audio_storable(codec: str) -> bool:
    """Whether the segments' container (MP4) takes this audio codec without re-encoding:
    AAC, Opus, MP3 yes; G.711 (pcm_alaw, pcm_mulaw) and G.726 no (FFmpeg's mp4 muxer)."""
    with contextlib.suppress(av.FFmpegError, ValueError), \
            av.open(io.BytesIO(), "w", format="mp4") as probe:
        probe.add_stream(codec)
        return True
    return False


def segment_relpath(camera_id: str, start: datetime, suffix: str = ".mp4") -> str:
    """CAMERA/YYYY-MM-DD/HH/YYYYMMDDTHHMMSS.mmmZ.mp4, in UTC, relative to the storage dir."""
    start = start.astimezone(UTC)
    stamp = start.strftime("%Y%m%dT%H%M%S") + f".{start.microsecond // 1000:03d}Z"
    return f"{camera_id}/{start:%Y-%m-%d}/{start:%H}/{stamp}{suffix}"


def lost_reasons(lost: Counter[str]) -> str:
    """Lost packets by reason as one line, most first: "waiting for a key frame: 4; ..."."""
    return "; ".join(f"{reason}: {n}" for reason, n in lost.most_common())


def packet_shape_problem(data: bytes, extradata: bytes | None, codec: str) -> str | None:
    """Why these bytes cannot be an H.264/H.265 access unit, or None. Annex B (start codes, as
    RTSP delivers) or length-prefixed NAL units (as MP4 stores, sized by the extradata)."""
    if not data:
        return "empty packet"
    if codec not in RECORDED_CODECS:
        return None
    if data.startswith(b"\x00\x00\x01") or data.startswith(b"\x00\x00\x00\x01"):
        return None
    if not extradata or extradata[0] != 1:
        return "no start code in an Annex B stream"
    index = 21 if codec == "hevc" else 4
    if len(extradata) <= index:
        return "extradata too short for the NAL length size"
    size = (extradata[index] & 3) + 1
    pos = 0
    while pos < len(data):
        if pos + size > len(data):
            return f"truncated NAL length at byte {pos}"
        nal = int.from_bytes(data[pos:pos + size], "big")
        if nal == 0 or pos + size + nal > len(data):
            return f"NAL unit length {nal} at byte {pos} runs past the packet ({len(data)} bytes)"
        pos += size + nal
    return None


@dataclass(frozen=True, slots=True)
class StreamShape:
    """What must stay the same within one segment file."""

    codec: str
    width: int
    height: int
    extradata: bytes

    @staticmethod
    def of(stream: av.video.stream.VideoStream) -> StreamShape:
        ctx = stream.codec_context
        return StreamShape(ctx.name, ctx.width, ctx.height, bytes(ctx.extradata or b""))


class _OpenSegment:
    """The segment being written: its temporary file and what the packets told us so far."""

    def __init__(self, final: Path, start: datetime, in_stream: av.video.stream.VideoStream,
                 shape: StreamShape, keyframe_start: bool) -> None:
        self.final = final
        self.temp = temp_path(final)
        self.start = start
        self.shape = shape
        self.in_stream = in_stream
        self.time_base: Fraction = in_stream.time_base or Fraction(1, 90000)
        self.keyframe_start = keyframe_start
        final.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(self.temp), "w", format="mp4", options=MP4_OPTIONS)
        self.out_stream = self.container.add_stream_from_template(in_stream)
        # the camera's audio track, when kept and storable (SegmentWriter.audio)
        self.audio_in: av.audio.stream.AudioStream | None = None
        self.audio_out: av.audio.stream.AudioStream | None = None
        self.audio_base: int | None = None  # the video's base, in the audio's time base
        self.audio_last_dts: int | None = None
        self.audio_packets = 0
        self.first_pts: int | None = None
        self.first_dts: int | None = None
        self.last_dts: int | None = None
        self.end_pts: int = 0  # greatest pts + duration seen
        self.frame_step: int = 0  # last positive pts step, for packets without a duration
        self.packets = 0
        self.leading = 0  # leading pictures (open GOP), shown before the key frame
        self.damaged = 0  # packets the demuxer flagged corrupt, kept as they came

    def seconds_since_start(self, pts: int) -> float:
        if self.first_pts is None:
            return 0.0
        return float((pts - self.first_pts) * self.time_base)

    def duration(self) -> float:
        if self.first_pts is None:
            return 0.0
        return float((self.end_pts - self.first_pts) * self.time_base)

    def discard(self) -> None:
        with contextlib.suppress(av.FFmpegError, OSError, ValueError):
            self.container.close()
        self.temp.unlink(missing_ok=True)


class SegmentWriter:
    """One camera's segments. Feed `write(packet)` with demuxed video packets (decode a packet
    for motion BEFORE writing it: writing re-targets the packet at the segment's stream).

    Constructed with the camera's last seq and sha256 so the chain continues across restarts;
    every finished segment goes to `on_segment` as a `Segment`. `cut()` ends the current segment
    (a reconnect: the next one starts at the next key frame); `close()` at shutdown."""

    def __init__(self, camera_id: str, storage_dir: Path, on_segment: Callable[[Segment], None],
                 *, segment_seconds: float = 10.0, last_seq: int = 0,
                 last_sha256: str = GENESIS_SHA256,
                 clock: Callable[[], datetime] = utc_now, audio: bool = False,
                 last_end: datetime | None = None) -> None:
        self.camera_id = camera_id
        # keep the camera's audio track (CameraConfig.audio); off: audio packets are refused
        self.audio = audio
        # audio before a connection's first key frame, and id() of its input container (a
        # packet's stream must not be read once its container is closed)
        self._held_audio: list[tuple[av.Packet, datetime | None]] = []
        self._held_audio_from: int | None = None
        self._closing: _OpenSegment | None = None  # cut, open for its last audio (_finish)
        self.audio_unrecorded = 0  # audio packets of a codec MP4 cannot store (not "lost")
        self.storage_dir = Path(storage_dir)
        self.on_segment = on_segment
        self.segment_seconds = segment_seconds
        self.last_seq = last_seq
        self.last_sha256 = last_sha256
        self.clock = clock
        self.dropped: Counter[str] = Counter()
        # what was lost since the last finished segment: it goes into the next one's record
        self.lost: Counter[str] = Counter()
        self.lost_since: datetime | None = None
        self.lost_until: datetime | None = None
        self._seg: _OpenSegment | None = None
        self._stream_key: int | None = None  # id() of the input stream being recorded
        self._inferred_pts: int | None = None
        # packets held until their decode timestamps are known (RTSP: the first packets of a
        # connection come without one), and the input stream whose dts are known
        self._held: list[tuple[av.Packet, datetime | None]] = []
        self._dts_stream: int | None = None
        self._in_dts: int | None = None  # the last input dts, for a packet without one
        self._in_step = 0
        self._at: datetime | None = None
        # the H.264 stream's own picture numbering (numbering.py), per stream and shape
        self._numbering: FrameNumbering | None = None
        self._numbering_key: tuple[int, StreamShape] | None = None
        # what the last finished segment's record counted as lost, and when (for its event)
        self.last_lost: tuple[Counter[str], datetime | None, datetime | None] = (
            Counter(), None, None)
        # the stream's clock: UTC of pts 0 of the input stream `_clock_stream` (set by its
        # first packet with a pts and a time); where the last segment ended
        self._clock: datetime | None = None
        self._clock_stream: int | None = None
        self._clock_fixed = False
        # where the camera's last indexed segment ended (`last_end`: before a restart), so
        # a new run's first segment never starts inside it
        self._prev_end: datetime | None = last_end

    # ----------------------------------------------------------------- feeding

    def write(self, packet: av.Packet, at: datetime | None = None) -> bool:
        """Copy one packet into the current segment (opening or cutting as needed). False when
        the packet was dropped; the reason is counted in `dropped` and `lost`.

        A connection's first packets without a decode timestamp (RTSP sends B-frame streams so)
        are held until the first packet that has one, then given the dts the stream implies
        (one frame duration apart, back from that packet) and written in order: never dropped
        as "going backwards". A held packet returns True; should it still be refused when
        released, that is counted in `dropped` and `lost` like any other."""
        stream = packet.stream
        if stream is not None and stream.type == "audio":
            return self._write_audio(packet, at)
        if self._held and self._held[0][0].stream is not stream:
            self._release_held(None)  # another connection's: nothing of this one to go by
        if stream is not None and at is not None and packet.pts is not None \
                and stream.time_base and (id(stream) != self._clock_stream
                                          or not self._clock_fixed):
            # followed until the connection's first segment is finished (the source moves to
            # RTCP's clock at the first sender report), then fixed for the connection
            self._clock = at - timedelta(seconds=float(packet.pts * stream.time_base))
            self._clock_fixed = self._clock_fixed and id(stream) == self._clock_stream
            self._clock_stream = id(stream)
        if stream is not None and id(stream) != self._dts_stream:
            if packet.dts is None and stream.type == "video":
                self._held.append((packet, at))
                if len(self._held) >= HOLD_PACKETS:  # no dts in sight: derive from pts order,
                    self._release_held(None)  # then one frame duration after the last
                    self._dts_stream = id(stream)
                return True
            self._release_held(packet)
            self._dts_stream = id(stream)
            self._in_dts = None
        elif stream is not None and packet.dts is None and self._in_dts is not None \
                and self._in_step:
            packet.dts = self._in_dts + self._in_step  # a dts lost mid-stream: the next one
        if stream is not None and packet.dts is not None:
            if self._in_dts is not None and packet.dts > self._in_dts:
                self._in_step = packet.duration or (packet.dts - self._in_dts)
            self._in_dts = packet.dts
        return self._write(packet, at)

    def _release_held(self, known: av.Packet | None) -> None:
        """Give the held packets decode timestamps and write them: one frame duration apart
        back from `known` (the first packet with a dts), or, with none, from their
        presentation order (each dts the n-th smallest pts, shifted back as far as needed for
        dts <= pts). A held packet without a pts (the key frame RTSP starts on) is shown one
        frame before the earliest pts after it."""
        held, self._held = self._held, []
        if not held:
            return
        packets = [p for p, _ in held]
        step = (known.duration if known is not None else 0) or \
            max((p.duration or 0 for p in packets), default=0)
        shown = [p.pts for p in packets if p.pts is not None]
        if known is not None and known.pts is not None:
            shown.append(known.pts)
        if known is not None and known.dts is not None and step:
            dts = [known.dts - (len(packets) - i) * step for i in range(len(packets))]
        else:
            order = sorted(shown)
            if len(order) < len(packets) or not step:
                for p, at in held:  # nothing to derive from: as before, by pts
                    self._write(p, at)
                return
            dts = order[:len(packets)]
            back = max([0] + [d - p.pts for d, p in zip(dts, packets, strict=True)
                              if p.pts is not None])
            dts = [d - back for d in dts]
        first_shown = min(shown) if shown else None
        for (p, at), d in zip(held, dts, strict=True):
            if p.pts is None:
                p.pts = max(d, first_shown - step) if first_shown is not None and step else d
            p.dts = min(d, p.pts)
            self._in_dts, self._in_step = p.dts, step
            self._write(p, at)

    def _write(self, packet: av.Packet, at: datetime | None) -> bool:
        self._at = at
        stream = packet.stream
        if stream is None or stream.type != "video":
            return self._drop("not a video packet")
        try:
            data = bytes(packet)
        except (ValueError, av.FFmpegError):
            return self._drop("unreadable packet")
        shape = StreamShape.of(stream)
        problem = packet_shape_problem(data, shape.extradata, shape.codec)
        if problem is not None:
            return self._drop(problem)
        if shape.codec == "h264":
            self._check_numbering(stream, shape, data, packet.is_corrupt)
        seg = self._seg
        if seg is not None and (id(stream) != self._stream_key or shape != seg.shape):
            self._finish()  # a new connection, resolution or codec: a new file
            seg = None
        pts = self._timestamp(packet, seg)
        if pts is None:
            return self._drop("no timestamp")
        if seg is not None and packet.is_keyframe and \
                seg.seconds_since_start(pts) >= self.segment_seconds:
            self._finish(audio_to_come=True)
            seg = None
        if seg is None:
            if not packet.is_keyframe:
                return self._drop(KEYFRAME_WAIT)
            try:
                seg = self._open(stream, shape, self._start_time(stream, pts, at))
            except (av.FFmpegError, OSError, ValueError) as exc:
                return self._drop(f"cannot open a segment: {type(exc).__name__}")
        return self._mux(seg, packet, pts)

    def _write_audio(self, packet: av.Packet, at: datetime | None) -> bool:
        """An audio packet into the current segment, beside the video of its connection; held
        (up to HOLD_AUDIO) until a key frame opens one."""
        self._at = at
        stream = packet.stream
        if not self.audio:
            return self._drop("audio is not recorded (audio: false)")
        if not audio_storable(stream.codec_context.name):
            self.audio_unrecorded += 1  # the whole track: cctv.audio_not_recorded says so
            return False
        seg = self._seg
        closing = self._closing
        if closing is not None and closing.audio_in is stream:
            dts = packet.dts if packet.dts is not None else packet.pts
            if seg is None or seg.audio_base is None or (dts is not None
                                                         and dts < seg.audio_base):
                return self._mux_audio(closing, packet)  # timed before the cut
            self._finish_closing()
        if seg is None or seg.audio_in is not stream:
            if seg is not None and seg.in_stream.container is stream.container:
                return self._drop("audio stream not in the segment")
            if self._held_audio and self._held_audio_from != id(stream.container):
                self._drop(KEYFRAME_WAIT, len(self._held_audio))  # an earlier connection's
                self._held_audio = []
            self._held_audio_from = id(stream.container)
            self._held_audio.append((packet, at))
            if len(self._held_audio) > HOLD_AUDIO:
                self._held_audio.pop(0)
                return self._drop(KEYFRAME_WAIT)
            return True
        return self._mux_audio(seg, packet)

    def _mux_audio(self, seg: _OpenSegment, packet: av.Packet,
                   early: str = "audio timed before its segment") -> bool:
        """One audio packet into `seg`, on its video's time line; `early`: why a packet timed
        before the segment's first picture is lost (it cannot be stored without shifting the
        whole file: MP4 without an edit list)."""
        if packet.size == 0:
            return self._drop("empty packet")
        tb = seg.audio_in.time_base if seg.audio_in is not None else None
        if seg.audio_out is None or tb is None or seg.audio_base is None:
            return self._drop("audio stream not in the segment")
        dts = packet.dts if packet.dts is not None else packet.pts
        if dts is None:
            if seg.audio_last_dts is None or not packet.duration:
                return self._drop("no timestamp")
            dts = seg.audio_last_dts + seg.audio_base + packet.duration
        pts = packet.pts if packet.pts is not None else dts
        rel_dts, rel_pts = dts - seg.audio_base, pts - seg.audio_base
        if rel_dts < 0:  # before the segment's first picture: MP4 without an edit list would
            # shift the whole file (the video's timing too) to fit it
            return self._drop(early)
        if seg.audio_last_dts is not None and rel_dts <= seg.audio_last_dts:
            return self._drop("timestamps going backwards")
        try:
            packet.stream = seg.audio_out
            packet.time_base = tb
            packet.dts, packet.pts = rel_dts, rel_pts
            seg.container.mux(packet)
        except (av.FFmpegError, ValueError, OSError) as exc:
            return self._drop(f"mux refused the packet: {type(exc).__name__}")
        seg.audio_last_dts = rel_dts
        seg.audio_packets += 1
        return True

    def _add_audio(self, seg: _OpenSegment) -> None:
        """The connection's audio track into a segment being opened (before its first packet:
        MP4's header names every track)."""
        if not self.audio:
            return
        container = seg.in_stream.container
        audio_in = next(iter(container.streams.audio), None) if container else None
        if audio_in is None or not audio_storable(audio_in.codec_context.name):
            return
        seg.audio_out = seg.container.add_stream_from_template(audio_in)
        seg.audio_in = audio_in

    def _start_audio(self, seg: _OpenSegment, base: int) -> None:
        """After the segment's first video packet: the audio's time origin (the video's, in
        the audio's time base) and the audio held until this key frame, written first."""
        held, self._held_audio = self._held_audio, []
        if seg.audio_in is None:
            if held:
                self._drop("audio stream not in the segment", len(held))
            return
        a_tb = seg.audio_in.time_base or Fraction(1, seg.audio_in.codec_context.sample_rate
                                                  or 8000)
        seg.audio_base = round(base * seg.time_base / a_tb)
        for packet, at in held:
            self._at = at
            if packet.stream is seg.audio_in:  # before the first picture: lost, counted
                self._mux_audio(seg, packet, early=KEYFRAME_WAIT)
            else:
                self._drop(KEYFRAME_WAIT)

    def cut(self) -> Segment | None:
        """End the current segment now (a discontinuity); the next starts on a key frame."""
        self._release_held(None)
        if self._held_audio:  # audio of a connection that never gave a key frame
            self._drop(KEYFRAME_WAIT, len(self._held_audio))
            self._held_audio = []
        self._dts_stream = None
        self._clock_stream, self._clock_fixed = None, False  # the next one anchors its own
        self._numbering = None  # the next connection's numbering is its own
        self._inferred_pts = None
        return self._finish()

    def close(self) -> Segment | None:
        return self.cut()

    # ----------------------------------------------------------------- internals

    def _check_numbering(self, stream: av.video.stream.VideoStream, shape: StreamShape,
                         data: bytes, corrupt: bool) -> None:
        """Count the reference pictures the camera's own numbering says never came. A packet
        flagged corrupt is counted as damaged instead; its number is not trusted, and the
        numbering starts again after it."""
        key = (id(stream), shape)
        if self._numbering is None or key != self._numbering_key:
            self._numbering, self._numbering_key = FrameNumbering.for_extradata(
                shape.extradata), key
        if corrupt:
            self._numbering.prev_ref = None
            return
        missing = self._numbering.step(data)
        if missing:
            self.lost[NUMBERING_GAP] += missing
            self._note(self._at or self.clock())

    def _drop(self, reason: str, count: int = 1) -> bool:
        """A packet the camera sent that no segment will have: counted, and recorded with the
        next finished segment (`Segment.lost`)."""
        self.dropped[reason] += count
        self.lost[reason] += count
        self._note(self._at or self.clock())
        return False

    def _note(self, at: datetime) -> None:
        """A packet lost or damaged at `at`: the time range the next record reports."""
        self.lost_since = at if self.lost_since is None else min(self.lost_since, at)
        self.lost_until = at if self.lost_until is None else max(self.lost_until, at)

    def take_lost(self) -> tuple[Counter[str], datetime | None, datetime | None]:
        """What was lost since the last segment, its time range; and start counting afresh."""
        lost, since, until = self.lost, self.lost_since, self.lost_until
        self.lost, self.lost_since, self.lost_until = Counter(), None, None
        return lost, since, until

    def _timestamp(self, packet: av.Packet, seg: _OpenSegment | None) -> int | None:
        """The packet's pts; RTSP leaves the first packets without one: follow the last."""
        if packet.pts is not None:
            return packet.pts
        if packet.dts is not None:
            return packet.dts
        if seg is not None and seg.first_pts is not None:
            step = packet.duration or seg.frame_step
            return seg.end_pts if not step else max(seg.end_pts, (seg.last_dts or 0) + step)
        return 0 if packet.is_keyframe else None

    def _start_time(self, stream: av.video.stream.VideoStream, pts: int,
                    at: datetime | None) -> datetime:
        """A segment's start: its key frame on the stream's clock, never before the previous
        segment's end."""
        start = at or self.clock()
        timed = self._clock is not None and id(stream) == self._clock_stream
        if timed and self._clock is not None and stream.time_base:
            start = self._clock + timedelta(seconds=float(pts * stream.time_base))
        if self._prev_end is not None and start < self._prev_end:
            if timed and self._clock is not None:  # the connection's clock moves with it
                self._clock += self._prev_end - start
            start = self._prev_end
        return start

    def _open(self, stream: av.video.stream.VideoStream, shape: StreamShape,
              at: datetime) -> _OpenSegment:
        at = at.astimezone(UTC)
        final = self._final_path(at)
        self._seg = _OpenSegment(final, at, stream, shape, keyframe_start=True)
        self._stream_key = id(stream)
        try:
            self._add_audio(self._seg)
        except (av.FFmpegError, ValueError):
            self._seg.discard()
            self._seg = None
            raise
        return self._seg

    def _mux(self, seg: _OpenSegment, packet: av.Packet, pts: int) -> bool:
        dts = packet.dts if packet.dts is not None else pts
        if seg.last_dts is not None and dts <= seg.last_dts:
            return self._drop("timestamps going backwards")
        if seg.first_pts is None:
            seg.first_pts, seg.first_dts = pts, dts
        if pts < seg.first_pts:
            # a leading picture (open GOP: a B-frame after the key frame in decode order,
            # shown before it, referencing the previous GOP too): kept here, after its key
            # frame as the camera sent it; it decodes with the previous segment before it
            seg.leading += 1
        base = seg.first_dts if seg.first_dts is not None else seg.first_pts
        base = min(base, seg.first_pts)
        step = pts - (seg.last_dts if seg.last_dts is not None else pts)
        duration = packet.duration or (step if step > 0 else seg.frame_step)
        corrupt = packet.is_corrupt  # read before muxing: the muxer takes the packet over
        try:
            packet.stream = seg.out_stream
            packet.time_base = seg.time_base
            packet.pts = pts - base
            packet.dts = dts - base
            if duration:
                packet.duration = duration
            seg.container.mux(packet)
        except (av.FFmpegError, ValueError, OSError) as exc:
            return self._drop(f"mux refused the packet: {type(exc).__name__}")
        if step > 0:
            seg.frame_step = step
        seg.last_dts = dts
        seg.end_pts = max(seg.end_pts, pts + (duration or 0))
        seg.packets += 1
        if seg.packets == 1 and self.audio:
            self._start_audio(seg, base)
        if corrupt:  # kept as the camera sent it (decoders conceal), and counted
            seg.damaged += 1
            self._note(self._at or self.clock())
        return True

    def _finish_closing(self) -> Segment | None:
        """Seal the segment kept open for its last audio (see `_finish`)."""
        seg, self._closing = self._closing, None
        return None if seg is None else self._seal_open(seg)

    def _finish(self, audio_to_come: bool = False) -> Segment | None:
        """Seal the current segment. `audio_to_come` (a cut at a key frame, audio kept): it
        stays open for the audio packets timed before the cut that the camera sends after the
        key frame (audio and video come interleaved, not in strict time order), until the
        first audio packet of the next segment's time, the next cut or the end."""
        self._finish_closing()
        seg, self._seg = self._seg, None
        self._stream_key = None
        if seg is None:
            return None
        if audio_to_come and seg.audio_in is not None and seg.packets:
            self._closing = seg
            # its pictures' end: the next segment starts there, not over it (sealed later)
            self._prev_end = max(self._prev_end or seg.start,
                                 seg.start + timedelta(seconds=seg.duration()))
            return None
        return self._seal_open(seg)

    def _seal_open(self, seg: _OpenSegment) -> Segment | None:
        if seg.packets == 0:
            seg.discard()
            return None
        try:
            seg.container.close()
            if seg.first_pts is not None:  # its start on the stream's clock as it is now
                start = self._start_time(seg.in_stream, seg.first_pts, seg.start)
                self._clock_fixed = self._clock_fixed or id(seg.in_stream) == self._clock_stream
                if start != seg.start:
                    seg.final, seg.start = self._final_path(start), start
                    seg.final.parent.mkdir(parents=True, exist_ok=True)
        except (av.FFmpegError, OSError, ValueError) as exc:
            seg.discard()
            self._drop(f"segment could not be finished: {type(exc).__name__}", seg.packets)
            return None
        duration = file_duration(seg.temp, seg.duration())
        record = self._seal(seg.temp, seg.final, seg.start, duration, seg.packets,
                            seg.keyframe_start, seg.leading, seg.damaged, seg.audio_packets)
        if record is not None:
            self._prev_end = record.start + timedelta(seconds=record.duration)
        return record

    def _seal(self, temp: Path, final: Path, start: datetime, duration: float, packets: int,
              keyframe_start: bool, leading: int = 0, damaged: int = 0,
              audio_packets: int = 0) -> Segment | None:
        """Hash the finished temporary file, rename it to its final name, link it in."""
        try:
            with open(temp, "rb+") as f:
                os.fsync(f.fileno())
            digest = file_sha256(temp)
            size = temp.stat().st_size
            os.replace(temp, final)
            _fsync_dir(final.parent)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            self._drop(f"segment could not be finished: {type(exc).__name__}", packets)
            return None
        self.last_seq += 1
        self.last_lost = self.take_lost()
        lost = self.last_lost[0]
        record = Segment(
            camera_id=self.camera_id, seq=self.last_seq,
            path=final.relative_to(self.storage_dir).as_posix(), start=start,
            duration=round(duration, 3), size=size, sha256=digest,
            prev_sha256=self.last_sha256, packets=packets, keyframe_start=keyframe_start,
            leading=leading, lost=sum(lost.values()), lost_reasons=lost_reasons(lost),
            damaged=damaged, audio_packets=audio_packets)
        self.last_sha256 = digest
        self.on_segment(record)
        return record

    def _final_path(self, at: datetime) -> Path:
        rel = segment_relpath(self.camera_id, at)
        final = self.storage_dir / rel
        n = 1
        # two starts within a millisecond: keep both (a segment still open has only its
        # temporary file)
        while final.exists() or temp_path(final).exists():
            n += 1
            final = self.storage_dir / segment_relpath(self.camera_id, at, f"-{n}.mp4")
        return final


class FrameSegmentWriter(SegmentWriter):
    """The one exception to "never re-encoded": USB (V4L2/MJPEG) cameras give decoded frames,
    not H.264 packets, so their frames are encoded by OpenCV's VideoWriter (MPEG-4 Part 2,
    "mp4v", in MP4: what OpenCV's bundled FFmpeg always has) into the same kind of segments,
    under the same names, in the same hash chain. Cut every `segment_seconds` of frame time."""

    FOURCC = "mp4v"

    def __init__(self, *args: object, fps: float = 10.0, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fps = fps
        self._cv: object | None = None
        self._cv_paths: tuple[Path, Path] | None = None
        self._cv_first_t = 0.0
        self._cv_last_t = 0.0
        self._cv_start = datetime.now(UTC)
        self._cv_size: tuple[int, int] = (0, 0)
        self._cv_frames = 0

    def write_frame(self, bgr: object, t: float, at: datetime | None = None) -> bool:
        """One decoded BGR frame (numpy, h x w x 3) at stream time `t` seconds."""
        import cv2
        import numpy as np

        if not isinstance(bgr, np.ndarray) or bgr.ndim != 3 or bgr.shape[2] != 3 \
                or bgr.size == 0 or bgr.dtype != np.uint8:
            return self._drop("not a BGR frame")
        size = (bgr.shape[1], bgr.shape[0])
        if self._cv is not None and (size != self._cv_size or t < self._cv_last_t
                                     or t - self._cv_first_t >= self.segment_seconds):
            self._finish()
        if self._cv is None:
            at = (at or self.clock()).astimezone(UTC)
            final = self._final_path(at)
            final.parent.mkdir(parents=True, exist_ok=True)
            temp = final.with_name("." + final.stem + ".part.mp4")
            # OpenCV's stubs miss the module-level VideoWriter_fourcc that cv2 has.
            fourcc = cv2.VideoWriter_fourcc(*self.FOURCC)  # type: ignore[attr-defined]
            writer = cv2.VideoWriter(str(temp), fourcc, self.fps, size)
            if not writer.isOpened():
                return self._drop("OpenCV cannot open a segment for writing")
            self._cv, self._cv_paths, self._cv_size = writer, (temp, final), size
            self._cv_first_t, self._cv_start, self._cv_frames = t, at, 0
        self._cv.write(bgr)  # type: ignore[attr-defined]
        self._cv_last_t = t
        self._cv_frames += 1
        return True

    def _finish(self, audio_to_come: bool = False) -> Segment | None:
        if self._cv is None:
            return super()._finish(audio_to_come)
        writer, self._cv = self._cv, None
        writer.release()  # type: ignore[attr-defined]
        assert self._cv_paths is not None
        temp, final = self._cv_paths
        return self._seal(temp, final, self._cv_start, self._cv_frames / self.fps,
                          self._cv_frames, True)


def file_duration(path: Path, counted: float) -> float:
    """A finished segment's duration as FFmpeg (ffprobe, a player, an export) reads the file:
    the index says what the file holds. It differs from the timestamps counted while writing
    where the pictures a packet's timestamp leaves room for never came (a segment cut by a
    stop before a GOP's B-frames). `counted` where the file cannot be read back."""
    try:
        with av.open(str(path)) as container:
            if container.duration is not None and container.duration > 0:
                return container.duration / 1_000_000
    except (av.FFmpegError, OSError, ValueError):
        pass
    return counted


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
