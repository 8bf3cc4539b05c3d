"""One cctv retention sweep (the I/O half): deletes the files the plans in retention_plan.py
name, retires their records (their hashes stay for the chain) and reports
`cctv.retention_sweep` and, when purging for space, the critical `cctv.disk_low`. A file
already gone is retired all the same and counted as missing, never a crash.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from floor_agent.cctv.config import CameraConfig
from floor_agent.cctv.index import SegmentIndex, SegmentRecord
from floor_agent.cctv.retention_plan import bytes_needed, plan, purge_plan
from floor_agent.protocol.emit import Emit
from floor_agent.protocol.kinds.cctv import CctvKind

SUBJECT = "cctv storage"


class DiskUsage(NamedTuple):
    total: int
    used: int
    free: int


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
        emit(CctvKind.DISK_LOW, SUBJECT, "critical", free_before=result.free_before,
             free_after=result.free_after, total=int(usage.total),
             needed=need, purged=result.count("disk_low"),
             purged_by_camera={c: n["disk_low"] for c, n in result.segments.items()
                               if "disk_low" in n},
             still_low=result.still_low)
    if result.count() or result.failed:
        emit(CctvKind.RETENTION_SWEEP, SUBJECT, "warning" if result.failed else "info",
             segments=result.segments, bytes=result.bytes, missing=result.missing,
             failed=result.failed[:20], failed_count=len(result.failed))
    return result
