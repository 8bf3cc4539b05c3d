"""Clips for investigators, with the proof that they are what the cameras recorded.

`export` copies the packets of the segments overlapping [start, end] into one MP4 (PyAV remux,
never re-encoded: the pixels are the camera's), from the last key frame at or before `start`
to just before the first key frame after `end`, so the clip decodes from its first frame. Next
to it goes `<clip>.proof.json`: the camera, the range, each source segment with its seq,
sha256 and prev_sha256 (the chain an auditor re-checks against the `cctv.segment` events), the
clip's own sha256, who, why and when. A source file whose hash differs from its record is
refused: altered footage is never exported silently.

A camera recorded with its audio (CameraConfig.audio) has it in the clip too, copied the same
way, from the clip's first picture on; the clip has an audio track when its first segment has
one (a later segment's audio of another codec is left out: MP4 fixes its tracks up front).

Every export and every view is an audit event with who and why (`cctv.export`, `cctv.view`).
Neither carries footage bytes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import av

from floor_agent.cctv.index import SegmentIndex, SegmentRecord
from floor_agent.cctv.retention_sweep import footage_path
from floor_agent.common.files import file_sha256
from floor_agent.protocol.emit import Emit
from floor_agent.protocol.kinds.cctv import CctvKind


class ExportError(Exception):
    """The clip cannot be made (or may not be): the text says which segment and why."""


@dataclass(frozen=True, slots=True)
class ExportResult:
    clip_path: Path
    proof_path: Path
    sha256: str
    start: datetime  # the clip's first packet (a key frame at or before the asked start)
    end: datetime  # the clip's last packet
    segments: tuple[int, ...]  # source seqs
    packets: int


def _need(text: str, what: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ExportError(f"{what} is required: every export and view is audited with who "
                          "and why")
    return text.strip()


def _verified_sources(index: SegmentIndex, storage_dir: Path, camera_id: str, start: datetime,
                      end: datetime) -> tuple[list[tuple[SegmentRecord, Path]],
                                              list[SegmentRecord]]:
    """The live segments overlapping the range with their files, each checked against its
    recorded hash; and the retired ones (footage gone by retention or purge) for the proof."""
    records = index.segments(camera_id, start, end, include_retired=True)
    live = [r for r in records if not r.retired]
    retired = [r for r in records if r.retired]
    if not live:
        raise ExportError(f"camera {camera_id}: no footage on disk between {start.isoformat()} "
                          f"and {end.isoformat()}"
                          + (f" ({len(retired)} segments retired)" if retired else ""))
    checked: list[tuple[SegmentRecord, Path]] = []
    for record in live:
        seg = record.segment
        what = f"camera {camera_id} seq {seg.seq} ({seg.path})"
        try:
            path = footage_path(storage_dir, record)
            actual = file_sha256(path)
        except ValueError as e:
            raise ExportError(str(e)) from None
        except OSError as e:
            raise ExportError(f"{what}: cannot read the segment ({e.strerror})") from None
        if actual != seg.sha256:
            raise ExportError(f"{what}: file does not match its recorded SHA-256 "
                              f"(recorded {seg.sha256[:16]}..., file {actual[:16]}...): "
                              "altered footage is not exported")
        checked.append((record, path))
    return checked, retired


@dataclass
class _Clip:
    """The clip being written: its time origin and what went in."""

    out: av.container.OutputContainer
    stream: av.stream.Stream | None = None
    origin: float | None = None  # wall time of the first packet
    last_wall: float = 0.0
    last_dts: int | None = None
    packets: int = 0  # video packets
    used: list[int] | None = None
    audio: av.stream.Stream | None = None  # the camera's audio track, when recorded
    audio_last_dts: int | None = None
    audio_packets: int = 0

    def write(self, pkt: av.Packet, wall: float, seg_origin: float, base: int, seq: int) -> None:
        if pkt.stream.type == "audio":
            if self.origin is None or wall < self.origin:
                return  # before the clip's first picture
            self.audio_last_dts = _mux(self.out, self.audio, pkt, self.origin, seg_origin,
                                       base, self.audio_last_dts)
            self.audio_packets += 1
            return
        if self.origin is None:
            self.origin = wall
        self.last_dts = _mux(self.out, self.stream, pkt, self.origin, seg_origin, base,
                             self.last_dts)
        self.packets += 1
        self.last_wall = max(self.last_wall, wall)
        if self.used is None:
            self.used = []
        if seq not in self.used:
            self.used.append(seq)


def _remux(sources: Sequence[tuple[SegmentRecord, Path]], start: datetime, end: datetime,
           out_path: Path) -> tuple[datetime, datetime, list[int], int]:
    """Copy the video packets of [key frame <= start, key frame > end) into out_path."""
    t_start, t_end = start.timestamp(), end.timestamp()
    params: tuple | None = None
    # before the clip begins: the GOP up to start, from its key frame (it may span segments)
    pending: list[tuple[av.Packet, float, float, int, int]] = []
    with av.open(str(out_path), "w", format="mp4") as out:
        clip = _Clip(out)
        for record, path in sources:
            seg = record.segment
            what = f"camera {seg.camera_id} seq {seg.seq}"
            seg_origin = seg.start.timestamp()
            try:
                src = av.open(str(path))
            except av.error.FFmpegError as e:
                raise ExportError(f"{what}: not a readable video file ({e})") from None
            with src:
                if not src.streams.video:
                    raise ExportError(f"{what}: has no video stream")
                in_stream = src.streams.video[0]
                ctx = in_stream.codec_context
                these = (ctx.name, ctx.width, ctx.height)
                audio_in = next(iter(src.streams.audio), None)
                if params is None:
                    params = these
                    clip.stream = out.add_stream_from_template(in_stream)
                    if audio_in is not None:
                        clip.audio = out.add_stream_from_template(audio_in)
                if audio_in is not None and (clip.audio is None or audio_in.codec_context.name
                                             != clip.audio.codec_context.name):
                    audio_in = None
                if these != params:
                    raise ExportError(f"{what}: stream {these} differs from the clip's {params};"
                                      " export the ranges separately")
                base: int | None = None
                tb = in_stream.time_base
                assert tb is not None, "a demuxed stream has a time base"
                # the segment's tracks start together at 0 (segments.py): the audio's own
                # base is 0 too, its packets placed by their own time base
                streams = [in_stream] if audio_in is None else [in_stream, audio_in]
                try:
                    for pkt in src.demux(*streams):
                        if pkt.dts is None or pkt.size == 0:
                            continue
                        if pkt.stream.type == "audio":
                            a_tb = pkt.time_base
                            a_wall = seg_origin + float(
                                (pkt.pts if pkt.pts is not None else pkt.dts) * a_tb)
                            a_item = (pkt, a_wall, seg_origin, 0, seg.seq)
                            if clip.origin is not None:
                                clip.write(*a_item)
                            elif pending:
                                pending.append(a_item)
                            continue
                        if base is None:
                            base = pkt.dts if pkt.pts is None else min(pkt.pts, pkt.dts)
                        pts = pkt.pts if pkt.pts is not None else pkt.dts
                        wall = seg_origin + float((pts - base) * tb)
                        item = (pkt, wall, seg_origin, base, seg.seq)
                        if clip.origin is not None:
                            if pkt.is_keyframe and wall > t_end:
                                return _finish(clip)
                            clip.write(*item)
                        elif pkt.is_keyframe and wall <= t_start:
                            pending = [item]
                        elif wall < t_start:
                            if pending:
                                pending.append(item)
                        elif pending or (pkt.is_keyframe and wall <= t_end):
                            for held in [*pending, item]:
                                clip.write(*held)
                            pending = []
                except av.error.FFmpegError as e:
                    raise ExportError(f"{what}: damaged video data ({e})") from None
        return _finish(clip)


def _finish(clip: _Clip) -> tuple[datetime, datetime, list[int], int]:
    if clip.origin is None or not clip.packets:
        raise ExportError("no decodable footage (no key frame) in the range")
    return (datetime.fromtimestamp(clip.origin, UTC), datetime.fromtimestamp(clip.last_wall, UTC),
            list(clip.used or []), clip.packets)


def _mux(out: av.container.OutputContainer, stream: av.stream.Stream | None, pkt: av.Packet,
         clip_origin: float, seg_origin: float, base: int, last_dts: int | None) -> int:
    """Shift the packet onto the clip's time line (in its own time base) and write it."""
    tb: Fraction = pkt.time_base
    shift = round((seg_origin - clip_origin) / tb) - base
    assert pkt.dts is not None, "packets without a dts were skipped when demuxed"
    dts = pkt.dts + shift
    pts = (pkt.pts if pkt.pts is not None else pkt.dts) + shift
    if last_dts is not None and dts <= last_dts:
        step = last_dts + 1 - dts
        dts += step
        pts += step
    pkt.dts, pkt.pts = dts, max(pts, dts)
    pkt.stream = stream
    out.mux(pkt)
    return dts


def export(index: SegmentIndex, storage_dir: Path, camera_id: str, start: datetime,
           end: datetime, reason: str, who: str, out_path: Path, emit: Emit,
           now: datetime | None = None) -> ExportResult:
    """Write the clip and its proof, emit `cctv.export`; ExportError when it may not be made."""
    who = _need(who, "who")
    reason = _need(reason, "reason")
    if start.tzinfo is None or end.tzinfo is None:
        raise ExportError("start and end need a time zone")
    if end <= start:
        raise ExportError(f"end {end.isoformat()} is not after start {start.isoformat()}")
    out_path = Path(out_path)
    proof_path = out_path.with_name(out_path.name + ".proof.json")
    for path in (out_path, proof_path):
        if path.exists():
            raise ExportError(f"{path}: already exists; an export never overwrites")
    sources, retired = _verified_sources(index, Path(storage_dir), camera_id, start, end)
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        first, last, used, packets = _remux(sources, start, end, out_path)
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise
    clip_sha = file_sha256(out_path)
    when = now or datetime.now(UTC)
    by_seq = {r.segment.seq: r.segment for r, _ in sources}
    proof = {
        "camera_id": camera_id,
        "requested": {"start": start.isoformat(), "end": end.isoformat()},
        "clip": {"file": out_path.name, "sha256": clip_sha, "start": first.isoformat(),
                 "end": last.isoformat(), "packets": packets, "re_encoded": False},
        "segments": [{"seq": s.seq, "path": s.path, "start": s.start.isoformat(),
                      "duration": s.duration, "size": s.size, "sha256": s.sha256,
                      "prev_sha256": s.prev_sha256}
                     for s in (by_seq[q] for q in used)],
        "retired_in_range": [{"seq": r.segment.seq, "sha256": r.segment.sha256,
                              "prev_sha256": r.segment.prev_sha256,
                              "reason": r.retired_reason} for r in retired],
        "who": who,
        "why": reason,
        "exported_at": when.isoformat(),
    }
    fd = os.open(proof_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(proof, f, indent=2)
        f.write("\n")
    emit(CctvKind.EXPORT, f"camera {camera_id}", "notice", camera_id=camera_id, who=who,
         why=reason, start=first.isoformat(), end=last.isoformat(), segments=used,
         clip_sha256=clip_sha, clip=str(out_path))
    return ExportResult(out_path, proof_path, clip_sha, first, last, tuple(used), packets)


def view(index: SegmentIndex, storage_dir: Path, camera_id: str, start: datetime,
         end: datetime, who: str, why: str, emit: Emit) -> list[Path]:
    """The verified segment files of a time range, handed out only after the view is recorded
    (who, why, which segments): an admin opens them with any player on the camera box."""
    who, why = _need(who, "who"), _need(why, "why")
    if end <= start:
        raise ExportError(f"--to ({end.isoformat()}) must be after --from "
                          f"({start.isoformat()})")
    checked, _ = _verified_sources(index, storage_dir, camera_id, start, end)
    record_view(camera_id, [record for record, _ in checked], who, why, emit)
    return [path for _, path in checked]


def record_view(camera_id: str, segments: SegmentRecord | Sequence[SegmentRecord], who: str,
                why: str, emit: Emit) -> None:
    """Someone looked at footage: recorded before any of it is handed out."""
    who = _need(who, "who")
    why = _need(why, "why")
    items = [segments] if isinstance(segments, SegmentRecord) else list(segments)
    for record in items:
        if record.segment.camera_id != camera_id:
            raise ExportError(f"segment seq {record.segment.seq} belongs to camera "
                              f"{record.segment.camera_id}, not {camera_id}")
    start = min((r.segment.start for r in items), default=None)
    end = max((r.segment.start + timedelta(seconds=r.segment.duration) for r in items),
              default=None)
    emit(CctvKind.VIEW, f"camera {camera_id}", "notice", camera_id=camera_id, who=who, why=why,
         segments=[r.segment.seq for r in items],
         start=start.isoformat() if start else None, end=end.isoformat() if end else None)
