"""What footage may be kept, and what goes first when the disk runs low.

Two pure plans and one thin executor:

- `plan`: footage is personal data (GDPR), kept only as long as its purpose. Continuous footage
  goes `retain_days` after it ends, footage with motion `retain_motion_days` after it ends.
  Retention wins over offload: a segment past retention is deleted even if it never reached
  central storage (keeping it longer "until the copy succeeds" would keep personal data past
  its stated period with no end in sight). Footage of a camera no longer configured keeps the
  default periods of CameraConfig, so removing a camera never keeps its footage forever.
- `purge_plan`: when free space is below max(min_free_percent of the disk, min_free_bytes) the
  oldest footage goes first, across cameras, until enough would be free; motion or offload do
  not buy a segment a place (recording must never stop, and the oldest footage is the least
  useful). Each camera's newest segment is never purged: it is the freshest evidence and the
  end of the chain the writer continues. If even that is not enough, the plan takes all it may
  and the sweep reports the disk still low.
- `sweep`: deletes the files, retires the records (their hashes stay for the chain) and reports
  `cctv.retention_sweep` and, when purging for space, the critical `cctv.disk_low`. A file
  already gone is retired all the same and counted as missing, never a crash.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from floor_agent.cctv.config import CameraConfig
from floor_agent.cctv.index import SegmentIndex, SegmentRecord

Emit = Callable[..., object]  # AuditAgent.emit(kind, subject, severity, **data)
SUBJECT = "cctv storage"

_DEFAULT_RETAIN_DAYS = float(CameraConfig.model_fields["retain_days"].default)
_DEFAULT_RETAIN_MOTION_DAYS = float(CameraConfig.model_fields["retain_motion_days"].default)


class DiskUsage(NamedTuple):
    total: int
    used: int
    free: int


def _days(camera_id: str, cameras: Mapping[str, CameraConfig]) -> tuple[float, float]:
    camera = cameras.get(camera_id)
    if camera is None:
        return _DEFAULT_RETAIN_DAYS, _DEFAULT_RETAIN_MOTION_DAYS
    return camera.retain_days, camera.retain_motion_days


def plan(segments: Iterable[SegmentRecord], cameras: Mapping[str, CameraConfig],
         now: datetime) -> list[tuple[SegmentRecord, str]]:
    """The segments past retention, oldest first, each with the reason "retention"."""
    due: list[tuple[SegmentRecord, str]] = []
    for record in segments:
        if record.retired:
            continue
        days, motion_days = _days(record.segment.camera_id, cameras)
        keep = motion_days if record.segment.motion else days
        end = record.segment.start + timedelta(seconds=record.segment.duration)
        if end < now - timedelta(days=keep):
            due.append((record, "retention"))
    due.sort(key=lambda item: _age_key(item[0]))
    return due


def _age_key(record: SegmentRecord) -> tuple[float, str, int]:
    return record.segment.start.timestamp(), record.segment.camera_id, record.segment.seq


def bytes_needed(free_bytes: int, total_bytes: int, min_free_percent: float,
                 min_free_bytes: int) -> int:
    """How much must be freed to be back above the floor (0: enough is free). A min_free_bytes
    larger than the disk is capped at the disk."""
    floor = min(max(total_bytes * min_free_percent / 100.0, float(min_free_bytes)),
                float(total_bytes))
    return max(0, int(floor) - free_bytes)


def purge_plan(segments: Iterable[SegmentRecord], free_bytes: int, total_bytes: int,
               min_free_percent: float, min_free_bytes: int) -> list[SegmentRecord]:
    """The oldest segments, across cameras, whose deletion frees enough space; never a camera's
    newest segment. Empty when enough is free."""
    need = bytes_needed(free_bytes, total_bytes, min_free_percent, min_free_bytes)
    if need <= 0:
        return []
    live = sorted((r for r in segments if not r.retired), key=_age_key)
    newest: dict[str, SegmentRecord] = {}
    for record in live:
        newest[record.segment.camera_id] = record
    keep = {(r.segment.camera_id, r.segment.seq) for r in newest.values()}
    chosen: list[SegmentRecord] = []
    freed = 0
    for record in live:
        if freed >= need:
            break
        if (record.segment.camera_id, record.segment.seq) in keep:
            continue
        chosen.append(record)
        freed += record.segment.size
    return chosen


@dataclass
class SweepResult:
    """What one sweep did, per camera and reason: {camera: {reason: n}}."""

    segments: dict[str, dict[str, int]] = field(default_factory=dict)
    bytes: dict[str, dict[str, int]] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)  # files already gone
    failed: list[str] = field(default_factory=list)  # files that could not be deleted
    disk_low: bool = False
    still_low: bool = False
    free_before: int = 0
    free_after: int = 0

    def count(self, reason: str | None = None) -> int:
        return sum(n for per in self.segments.values() for r, n in per.items()
                   if reason is None or r == reason)

    def _add(self, record: SegmentRecord, reason: str, size: int, missing: bool) -> None:
        camera = record.segment.camera_id
        per = self.segments.setdefault(camera, {})
        per[reason] = per.get(reason, 0) + 1
        sizes = self.bytes.setdefault(camera, {})
        sizes[reason] = sizes.get(reason, 0) + size
        if missing:
            self.missing[camera] = self.missing.get(camera, 0) + 1


def footage_path(storage_dir: Path, record: SegmentRecord) -> Path:
    """The segment's file, refusing a recorded path that would leave the storage directory."""
    base = Path(storage_dir).resolve()
    path = (base / record.segment.path).resolve()
    if base not in path.parents:
        raise ValueError(f"segment camera {record.segment.camera_id} seq {record.segment.seq}: "
                         f"path {record.segment.path!r} leaves the storage directory")
    return path


def _delete(storage_dir: Path, record: SegmentRecord) -> tuple[bool, int, str | None]:
    """(was missing, bytes freed, error). Empty hour and day directories go with the file."""
    try:
        path = footage_path(storage_dir, record)
    except ValueError as e:
        return False, 0, str(e)
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return True, 0, None
    except OSError as e:
        return False, 0, (f"segment camera {record.segment.camera_id} seq {record.segment.seq}: "
                          f"cannot delete {record.segment.path} ({e.strerror})")
    base = Path(storage_dir).resolve()
    for parent in (path.parent, path.parent.parent):
        if parent == base or base not in parent.parents:
            break
        try:
            parent.rmdir()
        except OSError:
            break
    return False, size, None


def _execute(index: SegmentIndex, storage_dir: Path, items: Sequence[tuple[SegmentRecord, str]],
             now: datetime, result: SweepResult) -> None:
    for record, reason in items:
        missing, size, error = _delete(storage_dir, record)
        if error is not None:
            result.failed.append(error)
            continue
        index.retire(record.segment.camera_id, record.segment.seq, reason, now)
        result._add(record, reason, size if not missing else 0, missing)


def sweep(index: SegmentIndex, storage_dir: Path, cameras: Mapping[str, CameraConfig],
          emit: Emit, now: datetime, *, min_free_percent: float = 10.0,
          min_free_bytes: int = 1 << 30,
          disk_usage: Callable[[str], Any] = shutil.disk_usage) -> SweepResult:
    """Delete what is past retention, then, if the disk is low, the oldest footage; report."""
    result = SweepResult()
    live = index.segments()
    _execute(index, storage_dir, plan(live, cameras, now), now, result)

    usage = disk_usage(os.fspath(storage_dir))
    result.free_before = result.free_after = int(usage.free)
    need = bytes_needed(int(usage.free), int(usage.total), min_free_percent, min_free_bytes)
    if need > 0:
        result.disk_low = True
        purge = purge_plan(index.segments(), int(usage.free), int(usage.total),
                           min_free_percent, min_free_bytes)
        _execute(index, storage_dir, [(r, "disk_low") for r in purge], now, result)
        after = disk_usage(os.fspath(storage_dir))
        result.free_after = int(after.free)
        result.still_low = bytes_needed(int(after.free), int(after.total), min_free_percent,
                                        min_free_bytes) > 0
        emit("cctv.disk_low", SUBJECT, "critical", free_before=result.free_before,
             free_after=result.free_after, total=int(usage.total),
             needed=need, purged=result.count("disk_low"),
             purged_by_camera={c: n["disk_low"] for c, n in result.segments.items()
                               if "disk_low" in n},
             still_low=result.still_low)
    if result.count() or result.failed:
        emit("cctv.retention_sweep", SUBJECT, "warning" if result.failed else "info",
             segments=result.segments, bytes=result.bytes, missing=result.missing,
             failed=result.failed[:20], failed_count=len(result.failed))
    return result
