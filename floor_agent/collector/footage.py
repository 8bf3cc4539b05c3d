"""Footage behind an alert: which cameras cover it, their segments from the central SFTP copy,
each checked against the segment chain, and one MP4 for the browser (remuxed, never
re-encoded).

The truth about a segment is its `cctv.segment` event: sent by the camera box when the
segment was sealed, in the box's signed hash chain, stored by ingest only after its
checkpoint's signature and links verified. Those events give each segment's SHA-256 and its
predecessor's; a file read from central storage is used only when its bytes hash to what the
event says and the records link (cctv/chain.verify). One altered segment refuses the whole
clip, with the camera, seq and both hashes named: the browser never gets a byte of it.

Pure parts: `coverage` (alert -> cameras and time range), `segments_of` (events -> segment
records in range). Adapters: `fetch_verified` (paramiko, pinned host key, floor_agent.sftp),
`make_clip` (PyAV remux into an MP4 with its index first, so a browser starts playing at once
and seeks with range requests).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import Any

from floor_agent.cctv import chain
from floor_agent.cctv.model import Segment
from floor_agent.collector.footage_config import FootageCamera, FootageSettings, FootageSftp
from floor_agent.protocol.kinds.cctv import CctvKind
from floor_agent.protocol.kinds.door import DoorKind

# the door alerts a clip is offered for
DOOR_KINDS = frozenset({DoorKind.FORCED, DoorKind.HELD_OPEN, DoorKind.CLONE_SUSPECTED,
                        DoorKind.DURESS, DoorKind.CARD_SHARED})
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SHA_RE = re.compile(r"^[0-9a-f]{64}$")
# a segment file's name as segments.segment_relpath makes it: 20261207T030000.123Z(-2).mp4
FILE_RE = re.compile(r"^\d{8}T\d{6}\.\d{3}Z(?:-\d{1,4})?\.mp4$")
MAX_SEGMENT_SECONDS = 300  # cctv's segment_seconds at most: how far back a segment may start
CHUNK = 256 * 1024
BROWSER_CODECS = frozenset({"h264"})  # what every browser plays from MP4 (Chromium here too)


class FootageError(Exception):
    """No clip: the text says why, for the viewer (it names no key material)."""


class FootageAltered(FootageError):
    """A segment does not match the chain: the clip is refused."""


class FootageUnavailable(FootageError):
    """The range has no footage to show (not recorded, not reported, not offloaded yet)."""


@dataclass(frozen=True, slots=True)
class Coverage:
    """The cameras that cover an alert's place and the time range of its clip."""

    cameras: tuple[FootageCamera, ...]
    at: datetime  # the alert's event
    start: datetime
    end: datetime
    place: str  # "door front" | "camera cam1"


def _event_time(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(UTC)


def coverage(settings: FootageSettings, kind: str, agent_id: str | None,
             data: Mapping[str, Any], ts: str) -> Coverage | None:
    """Which mapped cameras show where the alert's event happened (pure): for a door alert
    (forced, held open, clone, duress, card sharing) the cameras listing its door; for a camera
    alert (any cctv.* event of a camera) that camera and those sharing one of its zones. None
    when footage is off, the alert is of another kind, or no camera covers it."""
    if not settings.enabled or agent_id is None:
        return None
    try:
        at = _event_time(ts)
    except (ValueError, AttributeError):
        return None
    cameras: list[FootageCamera] = []
    if kind in DOOR_KINDS:
        door = data.get("door_id")
        if not isinstance(door, str) or not ID_RE.match(door):
            return None
        place = f"door {door}"
        cameras = [c for c in settings.cameras if door in c.doors]
    elif kind.startswith("cctv.") and kind != CctvKind.SEGMENT:
        camera = data.get("camera_id")
        if not isinstance(camera, str) or not ID_RE.match(camera):
            return None
        place = f"camera {camera}"
        own = next((c for c in settings.cameras
                    if c.agent_id == agent_id and c.camera_id == camera), None)
        if own is None:
            return None
        zones = set(own.zones)
        cameras = [own] + [c for c in settings.cameras if c is not own and zones & set(c.zones)]
    if not cameras:
        return None
    return Coverage(tuple(cameras), at, at - timedelta(seconds=settings.before_seconds),
                    at + timedelta(seconds=settings.after_seconds), place)


def segment_of(data: Mapping[str, Any]) -> Segment | None:
    """A `cctv.segment` event's data as a Segment, or None when it is not well formed (an
    agent's data is checked like any input: ids, names, hashes, numbers)."""
    try:
        camera, seq, path = data["camera_id"], data["seq"], data["path"]
        sha, prev = data["sha256"], data["prev_sha256"]
        size, duration_ms = data["size"], data["duration_ms"]
        start = datetime.fromisoformat(data["start"]).astimezone(UTC)
    except (KeyError, TypeError, ValueError):
        return None
    ok = (isinstance(camera, str) and ID_RE.match(camera) and isinstance(path, str)
          and FILE_RE.match(PurePosixPath(path).name) and isinstance(sha, str)
          and SHA_RE.match(sha) and isinstance(prev, str) and SHA_RE.match(prev)
          and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                  for n in (seq, size, duration_ms)) and seq >= 1)
    if not ok:
        return None
    return Segment(camera, seq, path, start, duration_ms / 1000, size, sha, prev,
                   int(data.get("packets") or 0) if isinstance(data.get("packets"), int) else 0)


def segments_of(events: Iterable[Mapping[str, Any]], camera: FootageCamera, start: datetime,
                end: datetime) -> list[Segment]:
    """The camera's segments overlapping [start, end], by seq, from its box's cctv.segment
    events (pure; other cameras' and malformed events are skipped)."""
    found: dict[int, Segment] = {}
    for event in events:
        if event.get("agent_id") != camera.agent_id or event.get("kind") != CctvKind.SEGMENT:
            continue
        data = event.get("data")
        if not isinstance(data, Mapping) or data.get("camera_id") != camera.camera_id:
            continue
        seg = segment_of(data)
        if seg is None:
            continue
        if seg.start <= end and seg.start + timedelta(seconds=seg.duration) >= start:
            found.setdefault(seg.seq, seg)
    return [found[seq] for seq in sorted(found)]


def offset_in_clip(segments: Sequence[Segment], at: datetime) -> float:
    """Where `at` falls in a clip of these segments played one after another (gaps between
    them closed up), in seconds from its start (pure): 0 before the first, the end after
    the last, the end of the segment before a gap when `at` falls in that gap."""
    elapsed = 0.0
    for seg in segments:
        into = (at - seg.start).total_seconds()
        if into < 0:
            return elapsed
        if into < seg.duration:
            return elapsed + into
        elapsed += seg.duration
    return elapsed


def remote_path(remote_dir: str, seg: Segment) -> str:
    """Where the camera box's offload put it (cctv/offload.remote_path_of): remote_dir/CAMERA/
    YYYY-MM-DD/HH/<file>, from the segment's UTC start."""
    start = seg.start.astimezone(UTC)
    return str(PurePosixPath(remote_dir, seg.camera_id, start.strftime("%Y-%m-%d"),
                             start.strftime("%H"), PurePosixPath(seg.path).name))


@dataclass
class Fetched:
    """Segments read from central storage and checked: the files, and what was not there."""

    files: list[tuple[Segment, Path]] = field(default_factory=list)
    missing: list[Segment] = field(default_factory=list)  # not (yet) at central storage


def fetch_verified(sftp_settings: FootageSftp, segments: Sequence[Segment], workdir: Path
                   ) -> Fetched:
    """Download each segment into workdir and check it against its record and the chain;
    FootageAltered when any file differs, FootageError when storage cannot be read."""
    import paramiko

    from floor_agent.sftp import SftpConnectError, close_quietly, connect_pinned

    s = sftp_settings
    try:
        client, sftp = connect_pinned(s.host, s.port, s.user, s.key_file, s.known_hosts_file,
                                      s.timeout_seconds)
    except SftpConnectError as e:
        raise FootageError(f"central footage storage: {e}") from None
    result = Fetched()
    hashes: dict[str, str] = {}
    try:
        for seg in segments:
            remote = remote_path(s.remote_dir, seg)
            local = workdir / f"{seg.seq}.mp4"
            try:
                size = sftp.stat(remote).st_size
            except FileNotFoundError:
                result.missing.append(seg)
                continue
            if size != seg.size:
                raise FootageAltered(
                    f"camera {seg.camera_id} seq {seg.seq} ({remote}): {size} bytes at central "
                    f"storage, the camera box recorded {seg.size}: altered footage is not shown")
            digest = hashlib.sha256()
            fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out, sftp.open(remote, "rb") as src:
                src.prefetch(seg.size)
                got = 0
                while chunk := src.read(CHUNK):
                    got += len(chunk)
                    if got > seg.size:
                        raise FootageAltered(f"camera {seg.camera_id} seq {seg.seq}: longer "
                                             "than recorded: altered footage is not shown")
                    digest.update(chunk)
                    out.write(chunk)
            hashes[seg.path] = digest.hexdigest()
            result.files.append((seg, local))
    except (OSError, EOFError, paramiko.SSHException) as e:
        raise FootageError(f"central footage storage {s.user}@{s.host}:{s.port}: "
                           f"{getattr(e, 'strerror', None) or e or type(e).__name__}"
                           ) from None
    finally:
        close_quietly(sftp, client)
    missing = {(seg.camera_id, seg.seq) for seg in result.missing}
    report = chain.verify(segments, hashes.get, missing)
    if not report.ok:
        raise FootageAltered("; ".join(
            f"camera {p.camera_id} seq {p.seq} ({p.path}): {p.kind}: {p.detail}"
            for p in report.problems) + ": altered footage is not shown")
    return result


@dataclass(frozen=True, slots=True)
class Clip:
    path: Path
    codec: str  # h264 | hevc | mpeg4
    width: int
    height: int
    seconds: float
    packets: int
    sha256: str

    @property
    def plays_in_browser(self) -> bool:
        return self.codec in BROWSER_CODECS


def make_clip(files: Sequence[tuple[Segment, Path]], out_path: Path) -> Clip:
    """The segments' packets one after another in one MP4 (its index at the front), never
    re-encoded; a recording gap between segments is closed up (the page lists each segment's
    start). FootageError when a file does not demux or the camera's stream changed. A camera
    recorded with its audio (cctv CameraConfig.audio) keeps it: the clip has the first
    segment's audio track, each segment's audio placed on the same time line as its video."""
    import av

    if not files:
        raise FootageError("no segment to make a clip of")
    shape: tuple[str, int, int] | None = None
    ref_tb: Fraction | None = None
    offset = 0
    last_dts: int | None = None
    packets = 0
    audio_out: Any = None  # the clip's audio track, as the first segment's
    audio_tb: Fraction | None = None
    audio_last: int | None = None
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        with av.open(str(out_path), "w", format="mp4",
                     options={"movflags": "+faststart"}) as out:
            out_stream = None
            for seg, path in files:
                what = f"camera {seg.camera_id} seq {seg.seq}"
                try:
                    src = av.open(str(path))
                except av.error.FFmpegError as e:
                    raise FootageError(f"{what}: not a readable video file ({e})") from None
                with src:
                    if not src.streams.video:
                        raise FootageError(f"{what}: has no video stream")
                    stream = src.streams.video[0]
                    ctx = stream.codec_context
                    these = (ctx.name, ctx.width, ctx.height)
                    audio_in = next(iter(src.streams.audio), None)
                    if shape is None:
                        shape, ref_tb = these, stream.time_base
                        out_stream = out.add_stream_from_template(stream)
                        if audio_in is not None:
                            audio_out = out.add_stream_from_template(audio_in)
                            audio_tb = audio_in.time_base
                    elif these != shape:
                        raise FootageError(f"{what}: the camera's stream changed to {these} "
                                           f"from {shape} within the clip")
                    tb = stream.time_base
                    assert tb is not None and ref_tb is not None and out_stream is not None
                    if audio_in is not None and (audio_out is None or audio_in.codec_context.name
                                                 != audio_out.codec_context.name):
                        audio_in = None
                    first: int | None = None
                    end = offset
                    # the segment's tracks start together at 0 (cctv/segments.py): its audio
                    # goes where its video goes, `offset` on
                    a_offset = 0 if audio_tb is None else round(offset * ref_tb / audio_tb)
                    streams = [stream] if audio_in is None else [stream, audio_in]
                    try:
                        for pkt in src.demux(*streams):
                            if pkt.dts is None or pkt.size == 0:
                                continue
                            if pkt.stream.type == "audio":
                                assert audio_tb is not None
                                a_scale = pkt.time_base / audio_tb
                                dts = a_offset + round(pkt.dts * a_scale)
                                pts = a_offset + round(
                                    (pkt.pts if pkt.pts is not None else pkt.dts) * a_scale)
                                if audio_last is not None and dts <= audio_last:
                                    bump = audio_last + 1 - dts
                                    dts, pts = dts + bump, pts + bump
                                pkt.dts, pkt.pts = dts, max(pts, dts)
                                pkt.time_base = audio_tb
                                pkt.stream = audio_out
                                out.mux(pkt)
                                audio_last = dts
                                continue
                            pts0 = pkt.pts if pkt.pts is not None else pkt.dts
                            if first is None:
                                first = min(pts0, pkt.dts)
                            dts = offset + round((pkt.dts - first) * tb / ref_tb)
                            pts = offset + round((pts0 - first) * tb / ref_tb)
                            if last_dts is not None and dts <= last_dts:
                                bump = last_dts + 1 - dts
                                dts, pts = dts + bump, pts + bump
                            duration = round((pkt.duration or 0) * tb / ref_tb)
                            pkt.dts, pkt.pts = dts, max(pts, dts)
                            pkt.time_base = ref_tb
                            if duration:
                                pkt.duration = duration
                            pkt.stream = out_stream
                            out.mux(pkt)
                            last_dts = dts
                            end = max(end, pkt.pts + duration)
                            packets += 1
                    except av.error.FFmpegError as e:
                        raise FootageError(f"{what}: damaged video data ({e})") from None
                    offset = max(end, (last_dts or 0) + 1)
        if not packets or shape is None or ref_tb is None:
            raise FootageError("the segments hold no video packets")
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise
    digest = hashlib.sha256()
    with open(out_path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return Clip(out_path, shape[0], shape[1], shape[2], float(offset * ref_tb), packets,
                digest.hexdigest())
