"""What footage may go, decided over plain records (no files, no clock): the pure half of cctv
retention; retention_sweep.py deletes what these plans name.

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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from floor_agent.cctv.config import CameraConfig
from floor_agent.cctv.index import SegmentRecord

_DEFAULT_RETAIN_DAYS = float(CameraConfig.model_fields["retain_days"].default)
_DEFAULT_RETAIN_MOTION_DAYS = float(CameraConfig.model_fields["retain_motion_days"].default)


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
