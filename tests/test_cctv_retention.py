"""cctv retention: pure plans (what is past retention, what goes when the disk is low) and the
sweep on real files: deleted, retired with their hashes, reported, recording goes on."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from audit_events import SpooledEvents

from floor_agent.cctv.config import CameraConfig
from floor_agent.cctv.index import SegmentIndex, SegmentRecord
from floor_agent.cctv.model import GENESIS_SHA256, Segment
from floor_agent.cctv.retention_plan import bytes_needed, plan, purge_plan
from floor_agent.cctv.retention_sweep import DiskUsage, sweep

NOW = datetime(2025, 6, 20, 12, 0, 0, tzinfo=UTC)
MB = 1 << 20


class Events(SpooledEvents):
    """SpooledEvents, with the events of one kind as (severity, data)."""

    def of(self, kind: str) -> list[tuple[str, dict]]:
        return [(sev, d) for k, _, sev, d in self if k == kind]


def camera(camera_id: str, days: float, motion_days: float) -> CameraConfig:
    return CameraConfig(camera_id=camera_id, name=camera_id, url="rtsp://127.0.0.1/x",
                        retain_days=days, retain_motion_days=motion_days)


def seg(camera_id: str, seq: int, age_days: float, *, size: int = 1000, motion: bool = False,
        duration: float = 10.0) -> Segment:
    start = NOW - timedelta(days=age_days)
    return Segment(camera_id, seq, f"{camera_id}/{start:%Y-%m-%d}/{start:%H}/"
                   f"{start:%Y%m%dT%H%M%S%fZ}.mp4", start, duration, size, f"{seq:064x}",
                   GENESIS_SHA256, motion=motion)


def rec(segment: Segment, **kw: object) -> SegmentRecord:
    return SegmentRecord(segment, **kw)


CAMERAS = {"a": camera("a", 3, 14), "b": camera("b", 1, 2)}


def test_plan_keeps_motion_longer_and_each_camera_its_own_days() -> None:
    records = [rec(seg("a", 1, 5)), rec(seg("a", 2, 5, motion=True)), rec(seg("a", 3, 2.9)),
               rec(seg("a", 4, 15, motion=True)), rec(seg("b", 1, 1.5)),
               rec(seg("b", 2, 1.5, motion=True)), rec(seg("b", 3, 0.5))]
    due = plan(records, CAMERAS, NOW)
    assert [(r.segment.camera_id, r.segment.seq, why) for r, why in due] == [
        ("a", 4, "retention"), ("a", 1, "retention"), ("b", 1, "retention")]


def test_plan_measures_from_the_end_of_the_footage_and_skips_retired() -> None:
    ends_inside = seg("b", 1, 1.0 + 30 / 86400, duration=60.0)  # ended 30 s before the limit
    gone = rec(seg("b", 2, 9), retired_at=NOW, retired_reason="retention")
    assert plan([rec(ends_inside), gone], CAMERAS, NOW) == []
    assert plan([rec(ends_inside)], CAMERAS, NOW + timedelta(seconds=31)) != []


def test_plan_retention_wins_over_offload_and_unknown_cameras_get_the_defaults() -> None:
    never_offloaded = rec(seg("a", 1, 4))  # offloaded_at None: still deleted (GDPR)
    removed_camera = rec(seg("gone", 1, 3.5))  # CameraConfig default: 3 days
    kept = rec(seg("gone", 2, 2.5))
    due = plan([never_offloaded, removed_camera, kept], CAMERAS, NOW)
    assert {(r.segment.camera_id, r.segment.seq) for r, _ in due} == {("a", 1), ("gone", 1)}


def test_purge_plan_oldest_first_across_cameras_never_a_cameras_newest() -> None:
    records = [rec(seg("a", 1, 2.0, size=3 * MB)), rec(seg("b", 1, 1.9, size=2 * MB)),
               rec(seg("a", 2, 1.0, size=5 * MB, motion=True)), rec(seg("b", 2, 0.1, size=MB)),
               rec(seg("a", 3, 0.0, size=MB))]
    # 100 MB disk, 10 % floor, 6 MB free: 4 MB must go
    chosen = purge_plan(records, 6 * MB, 100 * MB, 10.0, 0)
    assert [(r.segment.camera_id, r.segment.seq) for r in chosen] == [("a", 1), ("b", 1)]
    # asking for everything still leaves each camera's newest segment
    everything = purge_plan(records, 0, 100 * MB, 90.0, 0)
    assert [(r.segment.camera_id, r.segment.seq) for r in everything] == [
        ("a", 1), ("b", 1), ("a", 2)]
    assert purge_plan(records, 50 * MB, 100 * MB, 10.0, 0) == []


def test_bytes_needed_uses_the_larger_floor_capped_at_the_disk() -> None:
    assert bytes_needed(5 * MB, 100 * MB, 10.0, 0) == 5 * MB
    assert bytes_needed(5 * MB, 100 * MB, 1.0, 8 * MB) == 3 * MB
    assert bytes_needed(0, 100 * MB, 1.0, 1 << 40) == 100 * MB
    assert bytes_needed(20 * MB, 100 * MB, 10.0, MB) == 0


# --- the sweep on real files ------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[Path, SegmentIndex]]:
    storage = tmp_path / "footage"
    storage.mkdir()
    with SegmentIndex.in_storage(storage) as index:
        yield storage, index


def record_file(storage: Path, index: SegmentIndex, camera_id: str, age_days: float,
                size: int, motion: bool = False) -> Segment:
    """Write a segment file and index it, continuing the camera's chain like the writer."""
    last = index.last(camera_id)
    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS_SHA256)
    data = os.urandom(size)
    start = NOW - timedelta(days=age_days)
    rel = f"{camera_id}/{start:%Y-%m-%d}/{start:%H}/{start:%Y%m%dT%H%M%S%fZ}.mp4"
    (storage / rel).parent.mkdir(parents=True, exist_ok=True)
    (storage / rel).write_bytes(data)
    segment = Segment(camera_id, seq, rel, start, 10.0, size, hashlib.sha256(data).hexdigest(),
                      prev, motion=motion)
    index.add(segment)
    return segment


class FakeDisk:
    """A disk of `total` bytes whose use is the footage really on it plus `other` bytes."""

    def __init__(self, storage: Path, total: int, other: int) -> None:
        self.storage, self.total, self.other = storage, total, other
        self.calls: list[str] = []

    def __call__(self, path: str) -> DiskUsage:
        self.calls.append(path)
        used = self.other + sum(p.stat().st_size for p in self.storage.rglob("*.mp4"))
        return DiskUsage(self.total, used, self.total - used)


def test_sweep_deletes_retires_and_reports(store: tuple[Path, SegmentIndex]) -> None:
    storage, index = store
    old = record_file(storage, index, "a", 5, 2000)
    old_motion = record_file(storage, index, "a", 4.9, 3000, motion=True)
    fresh = record_file(storage, index, "a", 0.1, 1000)
    missing = record_file(storage, index, "b", 3, 500)
    (storage / missing.path).unlink()  # someone removed it by hand
    events = Events()
    disk = FakeDisk(storage, 1 << 40, 0)
    result = sweep(index, storage, CAMERAS, events, NOW, disk_usage=disk)

    assert not (storage / old.path).exists()
    assert not (storage / old.path).parent.exists()  # empty hour directory tidied away
    assert (storage / old_motion.path).exists() and (storage / fresh.path).exists()
    retired = index.get("a", old.seq)
    assert retired.retired_reason == "retention" and retired.retired_at == NOW
    assert retired.segment.sha256 == old.sha256  # the chain still links through it
    assert index.get("b", 1).retired_reason == "retention"
    assert result.segments == {"a": {"retention": 1}, "b": {"retention": 1}}
    assert result.missing == {"b": 1}
    assert events.of("cctv.retention_sweep") == [("info", {
        "segments": {"a": {"retention": 1}, "b": {"retention": 1}},
        "bytes": {"a": {"retention": 2000}, "b": {"retention": 0}},
        "missing": {"b": 1}, "failed": [], "failed_count": 0})]
    assert events.of("cctv.disk_low") == [] and disk.calls == [str(storage)]

    again = Events()
    sweep(index, storage, CAMERAS, again, NOW, disk_usage=disk)
    assert again == []  # nothing to do, nothing said


def test_disk_low_purges_oldest_first_with_an_alarm_and_recording_goes_on(
        store: tuple[Path, SegmentIndex]) -> None:
    storage, index = store
    for age in (2.0, 1.5, 1.0, 0.5):
        record_file(storage, index, "a", age, 100_000)
    for age in (1.8, 0.2):
        record_file(storage, index, "b", age, 100_000, motion=True)
    # 10 MB disk, a 1 MB floor (10 %), free 250 kB below it: three 100 kB segments must go
    disk = FakeDisk(storage, 10 * MB, 9 * MB - 600_000 + 250_000)
    events = Events()
    result = sweep(index, storage, CAMERAS, events, NOW, min_free_percent=10.0,
                   min_free_bytes=0, disk_usage=disk)

    # the three oldest go (a1, b1, a2), across cameras; motion buys no place
    retired = [(r.segment.camera_id, r.segment.seq) for r in index.segments(include_retired=True)
               if r.retired]
    assert retired == [("a", 1), ("b", 1), ("a", 2)]
    assert all(index.get(c, s).retired_reason == "disk_low" for c, s in retired)
    assert result.disk_low and not result.still_low
    ((severity, alarm),) = events.of("cctv.disk_low")
    assert severity == "critical"
    assert alarm["free_after"] - alarm["free_before"] == 300_000 and alarm["purged"] == 3
    assert alarm["purged_by_camera"] == {"a": 2, "b": 1} and alarm["still_low"] is False

    # recording goes on: the writer continues each chain and its file fits
    for cam in ("a", "b"):
        last = index.last(cam)
        nxt = record_file(storage, index, cam, 0.0, 100_000)
        assert (nxt.seq, nxt.prev_sha256) == (last[0] + 1, last[1])
    assert disk(str(storage)).free > 0
    assert [r.segment.seq for r in index.segments("a")] == [3, 4, 5]


def test_disk_low_with_nothing_left_to_purge_still_alarms(
        store: tuple[Path, SegmentIndex]) -> None:
    storage, index = store
    only = record_file(storage, index, "a", 0.0, 10_000)
    events = Events()
    disk = FakeDisk(storage, 10 * MB, 10 * MB - 10_000)
    result = sweep(index, storage, CAMERAS, events, NOW, disk_usage=disk)
    assert (storage / only.path).exists()  # the newest segment is never purged
    assert result.still_low
    ((severity, alarm),) = events.of("cctv.disk_low")
    assert severity == "critical" and alarm["purged"] == 0 and alarm["still_low"] is True
