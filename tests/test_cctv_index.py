"""cctv index: segments recorded, found by camera and time, retired with their hashes kept,
offload tracked; the file is private and a damaged one is named, not trusted."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from floor_agent.cctv.index import IndexError_, SegmentIndex
from floor_agent.cctv.model import GENESIS_SHA256, Segment

T0 = datetime(2025, 1, 2, 3, 0, 0, tzinfo=UTC)


def seg(camera_id: str, seq: int, offset: float, *, size: int = 1000,
        prev: str = GENESIS_SHA256) -> Segment:
    start = T0 + timedelta(seconds=offset)
    return Segment(camera_id, seq, f"{camera_id}/{start:%Y-%m-%d}/{start:%H}/"
                   f"{start:%Y%m%dT%H%M%SZ}.mp4", start, 10.0, size, f"{seq:064x}", prev,
                   packets=150)


@pytest.fixture
def index(tmp_path: Path) -> Iterator[SegmentIndex]:
    with SegmentIndex.in_storage(tmp_path) as idx:
        yield idx


def test_file_is_private_wal_and_survives_reopening(tmp_path: Path) -> None:
    with SegmentIndex.in_storage(tmp_path) as idx:
        idx.add(seg("cam-1", 1, 0))
        idx.add(seg("cam-1", 2, 10, prev=f"{1:064x}"))
    for name in ("index.db", "index.db-wal", "index.db-shm"):
        path = tmp_path / name
        if path.exists():
            assert path.stat().st_mode & 0o777 == 0o600, name
    assert (tmp_path / "index.db").stat().st_mode & 0o777 == 0o600
    with SegmentIndex.in_storage(tmp_path) as idx:
        assert idx._read("PRAGMA journal_mode")[0][0] == "wal"
        assert idx.last("cam-1") == (2, f"{2:064x}")  # a restarted writer continues here
        assert idx.last("cam-2") is None
        (first, second) = idx.segments("cam-1")
        assert first.segment == seg("cam-1", 1, 0)
        assert second.segment.prev_sha256 == first.segment.sha256


def test_segments_by_camera_and_overlapping_time(index: SegmentIndex) -> None:
    for i in range(4):
        index.add(seg("cam-1", i + 1, 10 * i))
    index.add(seg("cam-2", 1, 15))
    assert [(r.segment.camera_id, r.segment.seq) for r in index.segments()] == [
        ("cam-1", 1), ("cam-1", 2), ("cam-2", 1), ("cam-1", 3), ("cam-1", 4)]
    # [12 s, 21 s]: seq 2 (10-20) and seq 3 (20-30) overlap it
    window = index.segments("cam-1", T0 + timedelta(seconds=12), T0 + timedelta(seconds=21))
    assert [r.segment.seq for r in window] == [2, 3]
    # the same instants in another zone
    cet = timezone(timedelta(hours=1))
    assert [r.segment.seq for r in index.segments(
        "cam-1", (T0 + timedelta(seconds=12)).astimezone(cet),
        (T0 + timedelta(seconds=21)).astimezone(cet))] == [2, 3]
    assert [r.segment.seq for r in index.segments("cam-1", since=T0 + timedelta(seconds=31))] \
        == [4]


def test_retired_records_stay_for_the_chain(index: SegmentIndex) -> None:
    index.add(seg("cam-1", 1, 0))
    index.add(seg("cam-1", 2, 10, prev=f"{1:064x}"))
    index.retire("cam-1", 1, "disk_low", T0 + timedelta(days=1))
    assert [r.segment.seq for r in index.segments("cam-1")] == [2]
    everything = index.segments("cam-1", include_retired=True)
    assert everything[0].retired_reason == "disk_low"
    assert everything[0].retired_at == T0 + timedelta(days=1)
    assert everything[0].segment.sha256 == everything[1].segment.prev_sha256
    # retiring the newest one keeps `last` pointing at it: the chain goes on from its hash
    index.retire("cam-1", 2, "retention", T0 + timedelta(days=2))
    assert index.last("cam-1") == (2, f"{2:064x}")
    with pytest.raises(IndexError_, match="already retired"):
        index.retire("cam-1", 2, "retention", T0 + timedelta(days=3))
    with pytest.raises(IndexError_, match="reason 'bored' is not one of retention, disk_low"):
        index.retire("cam-1", 1, "bored", T0)


def test_motion_offload_and_totals(index: SegmentIndex) -> None:
    index.add(seg("cam-1", 1, 0, size=100))
    index.add(seg("cam-1", 2, 10, size=200))
    index.add(seg("cam-2", 1, 5, size=50))
    index.set_motion("cam-1", 2)
    assert index.get("cam-1", 2).segment.motion and not index.get("cam-1", 1).segment.motion
    assert [(r.segment.camera_id, r.segment.seq) for r in index.pending_offload(2)] == [
        ("cam-1", 1), ("cam-2", 1)]
    index.mark_offloaded("cam-1", 1, "footage/cam-1/x.mp4", T0 + timedelta(minutes=1))
    index.retire("cam-2", 1, "retention", T0 + timedelta(days=9))  # gone before offload
    assert [(r.segment.camera_id, r.segment.seq) for r in index.pending_offload(10)] == [
        ("cam-1", 2)]
    assert index.get("cam-1", 1).remote_path == "footage/cam-1/x.mp4"
    totals = index.totals()
    assert (totals["cam-1"].segments, totals["cam-1"].bytes, totals["cam-1"].retired,
            totals["cam-1"].pending_offload) == (2, 300, 0, 1)
    assert (totals["cam-2"].segments, totals["cam-2"].bytes, totals["cam-2"].retired) == (0, 0, 1)
    with pytest.raises(IndexError_, match="no segment camera 'cam-3' seq 1"):
        index.set_motion("cam-3", 1)


@pytest.mark.parametrize(("change", "words"), [
    ({"seq": 0}, "seq must be an integer >= 1"),
    ({"sha256": "XYZ"}, "sha256 must be 64 lower-case hex digits"),
    ({"prev_sha256": "0" * 63}, "prev_sha256 must be 64"),
    ({"path": "../../etc/passwd"}, "must be relative, under the camera's own directory"),
    ({"path": "cam-2/2025-01-02/03/x.mp4"}, "under the camera's own directory"),
    ({"start": datetime(2025, 1, 2)}, "datetime without a time zone"),
    ({"size": -1}, "must not be negative"),
])
def test_bad_segments_are_refused_by_name(index: SegmentIndex, change: dict,
                                          words: str) -> None:
    with pytest.raises(IndexError_, match="segment 'cam-1' seq") as caught:
        index.add(replace(seg("cam-1", 1, 0), **change))
    assert words in str(caught.value)
    assert index.segments() == []


def test_a_seq_is_never_reused(index: SegmentIndex) -> None:
    index.add(seg("cam-1", 1, 0))
    with pytest.raises(IndexError_, match="cam-1 seq 1 is already recorded"):
        index.add(seg("cam-1", 1, 60))


def test_damaged_file_and_row_are_named(tmp_path: Path) -> None:
    (tmp_path / "index.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(IndexError_, match="index.db: not a segment index"):
        SegmentIndex.in_storage(tmp_path)

    other = tmp_path / "other"
    other.mkdir()
    with SegmentIndex.in_storage(other) as idx:
        idx.add(seg("cam-1", 7, 0))
    with sqlite3.connect(other / "index.db") as db:
        db.execute("UPDATE segments SET start = 'yesterday-ish'")
    with SegmentIndex.in_storage(other) as idx, \
            pytest.raises(IndexError_, match="camera 'cam-1' seq 7 cannot be read"):
        idx.segments()


SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE segments (
    camera_id TEXT NOT NULL, seq INTEGER NOT NULL, path TEXT NOT NULL,
    start TEXT NOT NULL, start_ts REAL NOT NULL, end_ts REAL NOT NULL, duration REAL NOT NULL,
    size INTEGER NOT NULL, sha256 TEXT NOT NULL, prev_sha256 TEXT NOT NULL,
    packets INTEGER NOT NULL, keyframe_start INTEGER NOT NULL, motion INTEGER NOT NULL,
    retired_at TEXT, retired_reason TEXT, offloaded_at TEXT, remote_path TEXT,
    PRIMARY KEY (camera_id, seq));
INSERT INTO meta VALUES ('schema', '1');
"""


def test_an_index_of_schema_1_is_migrated_and_lost_packets_are_kept(tmp_path: Path) -> None:
    """Schema 2 adds what each segment lost and its open-GOP leading pictures; an index
    recorded before keeps its rows (nothing lost known) and goes on."""
    old = seg("cam-1", 1, 0)
    db = sqlite3.connect(tmp_path / "index.db")
    db.executescript(SCHEMA_1)
    db.execute("INSERT INTO segments VALUES (?, 1, ?, ?, 0, 10, 10.0, 1000, ?, ?, 150, 1, 0, "
               "NULL, NULL, NULL, NULL)", ("cam-1", old.path, old.start.isoformat(),
                                           old.sha256, old.prev_sha256))
    db.commit()
    db.close()
    new = replace(seg("cam-1", 2, 10, prev=old.sha256), leading=3, lost=5,
                  lost_reasons="waiting for a key frame: 4; empty packet: 1", damaged=2)
    with SegmentIndex.in_storage(tmp_path) as idx:
        assert idx._read("SELECT value FROM meta WHERE key = 'schema'") == [("2",)]
        idx.add(new)
    with SegmentIndex.in_storage(tmp_path) as idx:
        first, second = idx.segments("cam-1")
    assert first.segment == old
    assert (first.segment.lost, first.segment.leading, first.segment.damaged) == (0, 0, 0)
    assert second.segment == new
