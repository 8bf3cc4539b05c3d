"""The segment index (SQLite, WAL, mode 0600) at storage_dir/index.db: what was recorded, where
it is, whether it is still on disk and whether it reached central storage.

A segment whose file retention or the disk-low purge deleted is *retired*, never removed: its
record and hash stay, so the per-camera chain still links through it and an auditor can see
when and why the footage went. `last` gives a restarted writer the end of its chain.

Rows that cannot be read back (a hand-edited or damaged file) raise IndexError_ naming the file,
the camera and the seq; the index never guesses.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from floor_agent.cctv.model import Segment
from floor_agent.private_db import open_private_db

SCHEMA_VERSION = 2
RETIRE_REASONS = ("retention", "disk_low")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS segments (
    camera_id TEXT NOT NULL, seq INTEGER NOT NULL, path TEXT NOT NULL,
    start TEXT NOT NULL, start_ts REAL NOT NULL, end_ts REAL NOT NULL, duration REAL NOT NULL,
    size INTEGER NOT NULL, sha256 TEXT NOT NULL, prev_sha256 TEXT NOT NULL,
    packets INTEGER NOT NULL, keyframe_start INTEGER NOT NULL, motion INTEGER NOT NULL,
    retired_at TEXT, retired_reason TEXT, offloaded_at TEXT, remote_path TEXT,
    leading INTEGER NOT NULL DEFAULT 0, lost INTEGER NOT NULL DEFAULT 0,
    lost_reasons TEXT NOT NULL DEFAULT '', damaged INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (camera_id, seq));
CREATE INDEX IF NOT EXISTS segments_by_time ON segments (start_ts);
CREATE INDEX IF NOT EXISTS segments_pending ON segments (offloaded_at, retired_at, start_ts);
"""
_COLUMNS = ("camera_id, seq, path, start, duration, size, sha256, prev_sha256, packets, "
            "keyframe_start, motion, retired_at, retired_reason, offloaded_at, remote_path, "
            "leading, lost, lost_reasons, damaged")
# schema 1 -> 2: what each segment lost or has damaged, its open-GOP leading pictures (issue 22)
_MIGRATE_1_TO_2 = (
    "ALTER TABLE segments ADD COLUMN leading INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE segments ADD COLUMN lost INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE segments ADD COLUMN lost_reasons TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE segments ADD COLUMN damaged INTEGER NOT NULL DEFAULT 0",
    "UPDATE meta SET value = '2' WHERE key = 'schema'",
)


def _migrate(path: Path) -> None:
    """Bring an index of schema 1 to 2 in one transaction (its rows: nothing lost, no leading
    pictures recorded, as schema 1 knew none of it). Anything else is left to open_private_db."""
    if not path.exists():
        return
    try:
        db = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error:
        return
    try:
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.Error:
            return  # not an index (open_private_db says so)
        if row is None or row[0] != "1":
            return
        db.execute("BEGIN IMMEDIATE")
        for sql in _MIGRATE_1_TO_2:
            db.execute(sql)
        db.execute("COMMIT")
    except sqlite3.Error as e:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise IndexError_(f"{path}: segment index schema 1 cannot be migrated ({e})") from None
    finally:
        db.close()

T = TypeVar("T")


class IndexError_(Exception):  # noqa: N801  (IndexError is a builtin with another meaning)
    """The index file cannot be used, or a record cannot be stored or read back."""


@dataclass(frozen=True, slots=True)
class SegmentRecord:
    """A segment as the index knows it: the recorded facts plus what happened to it since."""

    segment: Segment
    retired_at: datetime | None = None
    retired_reason: str | None = None  # "retention" | "disk_low"
    offloaded_at: datetime | None = None
    remote_path: str | None = None

    @property
    def retired(self) -> bool:
        return self.retired_at is not None

    @property
    def offloaded(self) -> bool:
        return self.offloaded_at is not None

    @property
    def end(self) -> float:
        """End of the footage as a POSIX timestamp."""
        return self.segment.start.timestamp() + self.segment.duration


@dataclass(frozen=True, slots=True)
class CameraTotals:
    """Per-camera counts for the dashboard and the sweep's report."""

    camera_id: str
    segments: int  # on disk (not retired)
    bytes: int  # on disk
    retired: int
    pending_offload: int


def _aware(value: datetime, what: str) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise IndexError_(f"{what}: datetime without a time zone")
    return value.isoformat()


def _check(segment: Segment) -> None:
    where = f"segment {segment.camera_id!r} seq {segment.seq!r}"
    if not isinstance(segment.seq, int) or segment.seq < 1:
        raise IndexError_(f"{where}: seq must be an integer >= 1")
    if not segment.camera_id or "/" in segment.camera_id:
        raise IndexError_(f"{where}: camera_id must be a non-empty name without '/'")
    for name in ("sha256", "prev_sha256"):
        value = getattr(segment, name)
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise IndexError_(f"{where}: {name} must be 64 lower-case hex digits")
    path = Path(segment.path)
    if path.is_absolute() or ".." in path.parts or not path.parts \
            or path.parts[0] != segment.camera_id:
        raise IndexError_(f"{where}: path {segment.path!r} must be relative, under the "
                          "camera's own directory")
    if segment.size < 0 or segment.duration < 0:
        raise IndexError_(f"{where}: size and duration must not be negative")
    _aware(segment.start, f"{where}: start")


class SegmentIndex:
    """One SQLite file shared by the writer, the sweep, the offloader and exports."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        _migrate(self.path)
        self._db = open_private_db(self.path, _SCHEMA, SCHEMA_VERSION, "segment index",
                                   IndexError_)

    @classmethod
    def in_storage(cls, storage_dir: Path) -> SegmentIndex:
        """The index of a storage directory: storage_dir/index.db."""
        return cls(Path(storage_dir) / "index.db")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> SegmentIndex:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SegmentIndex({str(self.path)!r})"

    # --- plumbing -------------------------------------------------------------------------------

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in one write transaction: all of it lands, or none of it."""
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    result = work(db)
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.Error as e:
                raise IndexError_(f"{self.path}: write failed ({e})") from None
            return result

    def _read(self, sql: str, args: Iterable[object] = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, tuple(args)).fetchall()
            except sqlite3.Error as e:
                raise IndexError_(f"{self.path}: read failed ({e})") from None

    def _record(self, row: tuple) -> SegmentRecord:
        (camera_id, seq, path, start, duration, size, sha256, prev, packets, keyframe_start,
         motion, retired_at, retired_reason, offloaded_at, remote_path, leading, lost,
         lost_reasons, damaged) = row
        try:
            segment = Segment(camera_id=str(camera_id), seq=int(seq), path=str(path),
                              start=datetime.fromisoformat(start), duration=float(duration),
                              size=int(size), sha256=str(sha256), prev_sha256=str(prev),
                              packets=int(packets), keyframe_start=bool(keyframe_start),
                              motion=bool(motion), leading=int(leading), lost=int(lost),
                              lost_reasons=str(lost_reasons), damaged=int(damaged))
            return SegmentRecord(
                segment,
                datetime.fromisoformat(retired_at) if retired_at else None,
                str(retired_reason) if retired_reason else None,
                datetime.fromisoformat(offloaded_at) if offloaded_at else None,
                str(remote_path) if remote_path else None)
        except (TypeError, ValueError) as e:
            raise IndexError_(f"{self.path}: segments row camera {camera_id!r} seq {seq!r} "
                              f"cannot be read ({e})") from None

    # --- the writer -----------------------------------------------------------------------------

    def add(self, segment: Segment) -> None:
        """Record a completed segment. A (camera, seq) already present is refused: seqs are
        never reused, so a second one means two writers or a replay."""
        _check(segment)
        start_ts = segment.start.timestamp()

        def write(db: sqlite3.Connection) -> None:
            if db.execute("SELECT 1 FROM segments WHERE camera_id = ? AND seq = ?",
                          (segment.camera_id, segment.seq)).fetchone():
                raise IndexError_(f"{self.path}: camera {segment.camera_id} seq {segment.seq} "
                                  "is already recorded (seqs are never reused)")
            db.execute(
                "INSERT INTO segments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, "
                "NULL, NULL, ?, ?, ?, ?)",
                (segment.camera_id, segment.seq, segment.path, segment.start.isoformat(),
                 start_ts, start_ts + segment.duration, segment.duration, segment.size,
                 segment.sha256, segment.prev_sha256, segment.packets,
                 int(segment.keyframe_start), int(segment.motion), segment.leading,
                 segment.lost, segment.lost_reasons, segment.damaged))

        self._write(write)

    def last(self, camera_id: str) -> tuple[int, str] | None:
        """(seq, sha256) of the camera's latest segment, retired or not: where its chain goes on
        after a restart. None for a camera never recorded."""
        rows = self._read("SELECT seq, sha256 FROM segments WHERE camera_id = ? "
                          "ORDER BY seq DESC LIMIT 1", (camera_id,))
        return (int(rows[0][0]), str(rows[0][1])) if rows else None

    def last_end(self, camera_id: str) -> datetime | None:
        """Where the camera's footage in the index ends (retired or not): a restarted writer's
        first segment starts no earlier, so segments never overlap across runs."""
        rows = self._read("SELECT MAX(end_ts) FROM segments WHERE camera_id = ?", (camera_id,))
        return datetime.fromtimestamp(float(rows[0][0]), UTC) if rows and rows[0][0] is not None \
            else None

    def set_motion(self, camera_id: str, seq: int) -> None:
        """Motion was seen during the segment (motion may end after the segment was closed)."""
        self._update("UPDATE segments SET motion = 1 WHERE camera_id = ? AND seq = ?",
                     (camera_id, seq), camera_id, seq)

    def _update(self, sql: str, args: tuple, camera_id: str, seq: int, unless: str = "") -> None:
        def write(db: sqlite3.Connection) -> None:
            if db.execute(sql, args).rowcount != 1:
                raise IndexError_(f"{self.path}: no segment camera {camera_id!r} seq {seq!r}"
                                  f"{unless}")

        self._write(write)

    # --- queries --------------------------------------------------------------------------------

    def get(self, camera_id: str, seq: int) -> SegmentRecord | None:
        rows = self._read(f"SELECT {_COLUMNS} FROM segments WHERE camera_id = ? AND seq = ?",
                          (camera_id, seq))
        return self._record(rows[0]) if rows else None

    def segments(self, camera_id: str | None = None, since: datetime | None = None,
                 until: datetime | None = None, include_retired: bool = False
                 ) -> list[SegmentRecord]:
        """Segments whose footage overlaps [since, until] (either end open), oldest first."""
        where: list[str] = []
        args: list[object] = []
        if camera_id is not None:
            where.append("camera_id = ?")
            args.append(camera_id)
        if since is not None:
            where.append("end_ts >= ?")
            args.append(datetime.fromisoformat(_aware(since, "since")).timestamp())
        if until is not None:
            where.append("start_ts <= ?")
            args.append(datetime.fromisoformat(_aware(until, "until")).timestamp())
        if not include_retired:
            where.append("retired_at IS NULL")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._read(f"SELECT {_COLUMNS} FROM segments {clause} "
                          "ORDER BY start_ts, camera_id, seq", args)
        return [self._record(row) for row in rows]

    def pending_offload(self, limit: int = 100) -> list[SegmentRecord]:
        """Segments still on disk and not yet at central storage, oldest first."""
        rows = self._read(f"SELECT {_COLUMNS} FROM segments WHERE offloaded_at IS NULL AND "
                          "retired_at IS NULL ORDER BY start_ts, camera_id, seq LIMIT ?",
                          (int(limit),))
        return [self._record(row) for row in rows]

    def totals(self) -> dict[str, CameraTotals]:
        """Per camera: segments and bytes on disk, retired segments, segments pending offload."""
        rows = self._read(
            "SELECT camera_id, "
            "SUM(retired_at IS NULL), COALESCE(SUM(CASE WHEN retired_at IS NULL THEN size END), 0),"
            " SUM(retired_at IS NOT NULL), SUM(retired_at IS NULL AND offloaded_at IS NULL) "
            "FROM segments GROUP BY camera_id ORDER BY camera_id")
        return {str(r[0]): CameraTotals(str(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]))
                for r in rows}

    # --- what happened to a segment --------------------------------------------------------------

    def retire(self, camera_id: str, seq: int, reason: str, at: datetime) -> None:
        """The segment's file was deleted (retention or the disk-low purge); its record and hash
        stay so the chain still links through it. Retiring twice is refused."""
        if reason not in RETIRE_REASONS:
            raise IndexError_(f"retire camera {camera_id!r} seq {seq!r}: reason {reason!r} is "
                              f"not one of {', '.join(RETIRE_REASONS)}")
        self._update("UPDATE segments SET retired_at = ?, retired_reason = ? "
                     "WHERE camera_id = ? AND seq = ? AND retired_at IS NULL",
                     (_aware(at, "retired at"), reason, camera_id, seq), camera_id, seq,
                     " (or it is already retired)")

    def mark_offloaded(self, camera_id: str, seq: int, remote_path: str, at: datetime) -> None:
        """The segment is at central storage, its hash checked there."""
        self._update("UPDATE segments SET offloaded_at = ?, remote_path = ? "
                     "WHERE camera_id = ? AND seq = ?",
                     (_aware(at, "offloaded at"), remote_path, camera_id, seq), camera_id, seq)
