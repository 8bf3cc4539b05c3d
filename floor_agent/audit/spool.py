"""The agent's durable local queue: an event is chained and on disk before emit() returns.

SQLite in WAL mode with synchronous=FULL: a committed transaction survives a power cut. The
chain head lives in the same database as the events, so seq and hash advance in the same
transaction as the event is written: a crash can never leave a hole or a fork. Each write takes
the write lock first (BEGIN IMMEDIATE), so several processes (the agent daemon and the
`floor-agent emit` tool) can share one spool safely.

Capacity: past `alarm_ratio` of `max_events` the spool records one critical `agent.spool_high`
event; at `max_events` it stops accepting events below `warning` (counted, and the count is
recorded in a critical `agent.spool_full` event), while security events of severity warning and
above are always written: nothing that matters is dropped, silently or otherwise.

Damage: someone with the file can edit or delete spooled rows. Every row records the hash it
chains on from beside its own, and the head (seq, hash) is kept in `meta`, which deleting a row
does not change. Before anything is sent, `inspect()` recomputes each row's hash from that
predecessor and its canonical body and looks for missing seqs; what is damaged is moved aside
(table `damaged_rows`, for an investigator), recorded (`spool_damage`) and reported in a
critical, chained and signed `audit.spool_damaged` event, and the genuine rows after it are
delivered with their original hashes, so the collector sees a hole (a `gap` alert naming the
range), never a fork, and nothing genuine waits behind the damage.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from floor_agent.protocol.checkpoint import GENESIS_HASH, link
from floor_agent.protocol.event import (
    SEVERITY_RANK,
    AuditEvent,
    EventError,
    canonical,
    parse_timestamp,
    utc_timestamp,
)
from floor_agent.protocol.kinds.agent import AgentKind

if TYPE_CHECKING:
    from floor_agent.config.audit import AuditClientConfig

log = logging.getLogger(__name__)

SPOOL_FILE = "spool.db"  # in the agent's audit state_dir
FILE_MODE = 0o600  # the spool and its -wal/-shm: events, hashes and the chain head
DIR_MODE = 0o700

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
    seq INTEGER PRIMARY KEY,
    body BLOB NOT NULL,      -- canonical bytes of the event, exactly as hashed
    hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS spool_damage (   -- every damaged range found, kept for the record
    id INTEGER PRIMARY KEY,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    problem TEXT NOT NULL,   -- altered | missing
    detail TEXT NOT NULL,
    found_at TEXT NOT NULL,
    reported_seq INTEGER NOT NULL   -- the audit.spool_damaged event that said so
);
CREATE INDEX IF NOT EXISTS spool_damage_last ON spool_damage (last_seq);
CREATE TABLE IF NOT EXISTS damaged_rows (   -- altered rows, moved aside as they were found
    seq INTEGER NOT NULL,
    body BLOB,
    hash BLOB,
    prev BLOB,
    found_at TEXT NOT NULL
);
"""
# Columns a newer release adds to a spool an older one made (added at open, never by editing
# the CREATE TABLE above): the hash each row chains on from, so the row after a deleted one
# can still be delivered with its original chain hash.
ADDED_COLUMNS = (("pending", "prev", "BLOB"),)
SECURITY_RANK = SEVERITY_RANK["warning"]
DAMAGE_KIND = AgentKind.SPOOL_DAMAGED
MAX_REPORTED_RANGES = 50  # per audit.spool_damaged event; the totals are always exact


@dataclass(frozen=True, slots=True)
class PendingEvent:
    seq: int
    body: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class Head:
    seq: int
    hash: bytes


@dataclass(frozen=True, slots=True)
class SpooledRow:
    """One pending row as read from disk, not yet trusted."""

    seq: int
    body: bytes
    hash: bytes
    prev: bytes | None  # the hash it chains on from; None in a row an older release wrote


@dataclass(frozen=True, slots=True)
class Damage:
    """A range of seqs that cannot be delivered, and why."""

    first_seq: int
    last_seq: int
    problem: str  # altered: rows there but not what was chained | missing: rows gone
    detail: str


@dataclass(frozen=True, slots=True)
class Inspection:
    """What a window of the spool holds: the run to send now and any new damage."""

    start: Head  # the run's first event chains on from start.hash (start.seq = its seq - 1)
    run: list[PendingEvent]
    damage: list[Damage]
    altered: list[int]  # seqs of the rows to move aside


# -- the decisions, pure -----------------------------------------------------------------------
def body_fault(agent_id: str, seq: int, body: bytes) -> str | None:
    """Why these bytes are not an event the collector would take at seq, or None.

    The collector re-validates every event and re-encodes it canonically before hashing; a row
    it would refuse would block every later batch, so it is caught here, before sending.
    """
    try:
        event = AuditEvent.from_dict(orjson.loads(body))
    except (orjson.JSONDecodeError, EventError) as exc:
        return f"not a valid event ({str(exc)[:120]})"
    if event.agent_id != agent_id:
        return "an event of another agent"
    if event.seq != seq:
        return f"the event inside says seq {event.seq}"
    if canonical(event) != body:
        return "not in canonical form"
    return None


def _chained_from(row: SpooledRow, before: SpooledRow | None, acked: Head) -> bytes | None:
    """The hash a row chains on from: its recorded prev, or its predecessor's hash (the
    predecessor row, or the delivered head) when that is what its bytes link to; so an edited
    prev column alone damages nothing, and a row of an older release (no prev) still has one."""
    candidates = [row.prev]
    if before is not None and before.seq == row.seq - 1:
        candidates.append(before.hash)
    if row.seq == acked.seq + 1:
        candidates.append(acked.hash)
    known = [c for c in candidates if c is not None]
    return next((c for c in known if link(c, row.body) == row.hash), known[0] if known else None)


def _row_fault(agent_id: str, row: SpooledRow, prev: bytes | None, after_prev: bytes | None,
               acked: Head, head: Head) -> str | None:
    """Why one row cannot be delivered, judged from the hash it chains on from, its own
    bytes, what the next row chains on from, and the delivered and recorded heads."""
    if row.seq <= acked.seq:
        return "at or below the delivered head"
    if row.seq > head.seq:
        return f"beyond the spool's recorded head (seq {head.seq})"
    if prev is None:
        return "the hash it chains on from is not recorded"
    if link(prev, row.body) != row.hash:
        return "does not hash to its chain hash"
    if row.seq == acked.seq + 1 and prev != acked.hash:
        return "does not chain on from the delivered head"
    if row.seq == head.seq and row.hash != head.hash:
        return "is not the spool's recorded head"
    if after_prev is not None and after_prev != row.hash:
        return "the next event does not chain on from it"
    return body_fault(agent_id, row.seq, row.body)


def _uncovered(first: int, last: int, known: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of first..last not inside any known range (known sorted by first seq)."""
    out: list[tuple[int, int]] = []
    at = first
    for lo, hi in known:
        if hi < at or lo > last:
            continue
        if lo > at:
            out.append((at, lo - 1))
        at = max(at, hi + 1)
        if at > last:
            return out
    if at <= last:
        out.append((at, last))
    return out


def _ranges(seqs: list[int]) -> list[tuple[int, int]]:
    """Sorted seqs as contiguous (first, last) ranges."""
    out: list[tuple[int, int]] = []
    for seq in seqs:
        if out and out[-1][1] == seq - 1:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return out


def inspect(agent_id: str, acked: Head, head: Head, rows: Sequence[SpooledRow],
            complete: bool, known: Sequence[tuple[int, int]] = ()) -> Inspection:
    """Check a window of pending rows (oldest first) before any of it is sent.

    `complete` says the window reaches the newest row, so seqs between its last row and the
    recorded head are missing; `known` are the damaged ranges already reported. The run is
    contiguous and every row of it was checked against its successor too, so an incomplete
    window gives at most all its rows but the last.
    """
    prevs = [_chained_from(row, rows[index - 1] if index else None, acked)
             for index, row in enumerate(rows)]
    faults: dict[int, str] = {}
    for index, row in enumerate(rows):
        after = index + 1 < len(rows) and rows[index + 1].seq == row.seq + 1
        fault = _row_fault(agent_id, row, prevs[index], prevs[index + 1] if after else None,
                           acked, head)
        if fault is not None:
            faults[row.seq] = fault
    damage: list[Damage] = []
    for first, last in _ranges(sorted(faults)):
        details = sorted({faults[s] for s in range(first, last + 1)})
        damage.append(Damage(first, last, "altered", "; ".join(details)[:500]))
    holes: list[tuple[int, int]] = []
    expected = acked.seq + 1
    for row in rows:
        if acked.seq < row.seq <= head.seq:
            if row.seq > expected:
                holes.append((expected, row.seq - 1))
            expected = row.seq + 1
    if complete and expected <= head.seq:
        holes.append((expected, head.seq))
    for first, last in holes:
        for lo, hi in _uncovered(first, last, known):
            damage.append(Damage(lo, hi, "missing", "rows deleted from the spool"))
    damage.sort(key=lambda d: d.first_seq)
    run: list[PendingEvent] = []
    start = acked
    checked = rows if complete else rows[:-1]  # the last row's successor is not in the window
    for row, prev in zip(checked, prevs, strict=False):
        if row.seq in faults:  # set aside in the same transaction as the run is taken
            if run:
                break
            continue
        if run and row.seq != run[-1].seq + 1:
            break  # a hole already reported: the next batch starts after it
        if not run:
            assert prev is not None  # else it is a fault
            start = Head(row.seq - 1, prev)
        run.append(PendingEvent(row.seq, row.body, row.hash))
    return Inspection(start, run, damage, sorted(faults))


def damage_report(damage: Sequence[Damage], spool_path: Path) -> tuple[str, dict[str, Any]]:
    """Subject and data of the audit.spool_damaged event that reports `damage`."""
    first, last = damage[0].first_seq, max(d.last_seq for d in damage)
    if len(damage) == 1:
        subject = f"seq {first}..{last} {damage[0].problem}"
    else:
        subject = f"seq {first}..{last}: {len(damage)} damaged ranges"
    counts = {p: sum(d.last_seq - d.first_seq + 1 for d in damage if d.problem == p)
              for p in ("altered", "missing")}
    ranges = [{"first_seq": d.first_seq, "last_seq": d.last_seq, "problem": d.problem,
               "detail": d.detail} for d in damage[:MAX_REPORTED_RANGES]]
    return subject, {"first_seq": first, "last_seq": last, "ranges": ranges,
                     "ranges_total": len(damage), "altered_events": counts["altered"],
                     "missing_events": counts["missing"],
                     "kept_in": f"{spool_path} (tables damaged_rows, spool_damage)"}


# -- the file ----------------------------------------------------------------------------------
def _tighten(path: Path, mode: int) -> None:
    """chmod to `mode` when the file is more open (a umask of 022, an older release's file)."""
    try:
        current = path.stat().st_mode & 0o777
        if current & ~mode:
            os.chmod(path, mode)
    except FileNotFoundError:
        return
    except PermissionError as exc:  # not ours: whoever owns it decides, but say so
        log.warning("%s: mode %o, cannot make it %o (%s)", path, current, mode, exc.strerror)


def _private_file(path: Path) -> None:
    """The spool's directory 0700 and its file 0600, whatever umask started the process."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    _tighten(path.parent, DIR_MODE)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE))
    _tighten(path, FILE_MODE)


class Spool:
    """One agent's chain head plus the events the collector has not acknowledged yet."""

    def __init__(self, path: Path, agent_id: str, max_events: int = 1_000_000,
                 alarm_ratio: float = 0.8, boot_id: str | None = None,
                 clock: Callable[[], str] = utc_timestamp) -> None:
        self.path = Path(path)
        self.agent_id = agent_id
        self.max_events = max_events
        self.alarm_at = max(1, int(max_events * alarm_ratio))
        self.boot_id = boot_id or uuid.uuid4().hex
        self._clock = clock
        self._lock = threading.Lock()
        _private_file(self.path)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        for suffix in ("-wal", "-shm"):  # SQLite gives them the file's mode; make sure
            _tighten(self.path.with_name(self.path.name + suffix), FILE_MODE)
        self._add_columns()
        stored = self._meta("agent_id")
        if stored is None:
            self._set_meta_now("agent_id", agent_id)
        elif stored != agent_id:
            raise ValueError(f"{self.path}: spool belongs to agent {stored!r}, not {agent_id!r}")

    def _add_columns(self) -> None:
        """Columns of ADDED_COLUMNS a spool of an older release lacks; its rows' prev is filled
        from their predecessors (and the delivered head) while they are still whole."""
        with self._transaction():
            for table, column, kind in ADDED_COLUMNS:
                have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                    if (table, column) == ("pending", "prev"):
                        self._fill_prev_locked()

    def _fill_prev_locked(self) -> None:
        acked = self.acked()
        self._db.execute("UPDATE pending SET prev = ? WHERE seq = ?",
                         (acked.hash, acked.seq + 1))
        self._db.execute("UPDATE pending SET prev = (SELECT p.hash FROM pending p "
                         "WHERE p.seq = pending.seq - 1) WHERE prev IS NULL")

    # -- metadata -------------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _put_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) "
                         "DO UPDATE SET value = excluded.value", (key, value))

    def _set_meta_now(self, key: str, value: str) -> None:
        with self._transaction():
            self._put_meta(key, value)

    @contextmanager
    def _transaction(self, begin: str = "BEGIN IMMEDIATE") -> Iterator[None]:
        """One transaction under the thread lock; IMMEDIATE takes SQLite's write lock first."""
        with self._lock:
            self._db.execute(begin)
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def head(self) -> Head:
        """The newest event written: kept in meta, so deleting its row does not move it."""
        return Head(int(self._meta("head_seq") or 0),
                    bytes.fromhex(self._meta("head_hash") or GENESIS_HASH.hex()))

    def acked(self) -> Head:
        """The last event the collector confirmed; pending events chain on from its hash."""
        return Head(int(self._meta("acked_seq") or 0),
                    bytes.fromhex(self._meta("acked_hash") or GENESIS_HASH.hex()))

    def pending_count(self) -> int:
        """Events not yet acknowledged: exactly the seqs after the acked head up to the head."""
        return self.head().seq - self.acked().seq

    def dropped_count(self) -> int:
        return int(self._meta("dropped_low_severity") or 0)

    # -- writing --------------------------------------------------------------------------
    def emit(self, kind: str, subject: str, severity: str = "info",
             **data: Any) -> AuditEvent | None:
        """Chain and store one event; returns it once it is durable.

        Returns None only when the spool is full and the event is below `warning`: that drop
        is counted and reported in a critical event, never silent.
        """
        return self.emit_many([(kind, subject, severity, data)])[0]

    def emit_many(self, items: list[tuple[str, str, str, dict[str, Any]]]
                  ) -> list[AuditEvent | None]:
        """Chain and store several events in one durable transaction (one fsync).

        The result lines up with `items`: None where the full spool refused a low-severity one.
        """
        if not items:
            return []
        with self._transaction():
            return self._append_locked(items)

    def _append_locked(self, items: list[tuple[str, str, str, dict[str, Any]]]
                       ) -> list[AuditEvent | None]:
        head = self.head()
        stray = [int(r[0]) for r in self._db.execute(
            "SELECT seq FROM pending WHERE seq > ? ORDER BY seq", (head.seq,))]
        if stray:  # rows put past the head would take the next seqs: set aside, reported
            damage = [Damage(a, b, "altered", f"beyond the spool's recorded head (seq "
                                              f"{head.seq})") for a, b in _ranges(stray)]
            self._set_aside_locked(stray)
            self._report_locked(damage, head)
            head = self.head()
        count = head.seq - self.acked().seq
        seq, prev = head.seq, head.hash
        written: list[AuditEvent | None] = []
        dropped = 0
        alarms: list[tuple[str, str, str, dict[str, Any]]] = []
        for kind, subject, severity, data in items:
            if count >= self.max_events and SEVERITY_RANK.get(severity, 99) < SECURITY_RANK:
                dropped += 1
                written.append(None)
                continue
            event, prev = self._write_one(seq + 1, prev, kind, subject, severity, data)
            seq, count = seq + 1, count + 1
            written.append(event)
            if count == self.alarm_at:
                alarms.append((AgentKind.SPOOL_HIGH, self.agent_id, "critical",
                               {"pending": count, "max_events": self.max_events}))
        if dropped:
            total = self.dropped_count() + dropped
            self._put_meta("dropped_low_severity", str(total))
            log.error("spool full (%d events): dropped %d low-severity event(s), %d in all",
                      count, dropped, total)
            if self._meta("full_reported") != "1":  # one alarm per episode, not per drop
                self._put_meta("full_reported", "1")
                alarms.append((AgentKind.SPOOL_FULL, self.agent_id, "critical",
                               {"pending": count, "max_events": self.max_events,
                                "dropped_low_severity_total": total}))
        for kind, subject, severity, data in alarms:
            _, prev = self._write_one(seq + 1, prev, kind, subject, severity, data)
            seq += 1
            log.critical("%s: %d events waiting for the collector", kind, count)
        self._put_meta("head_seq", str(seq))
        self._put_meta("head_hash", prev.hex())
        return written

    def _write_one(self, seq: int, prev: bytes, kind: str, subject: str, severity: str,
                   data: dict[str, Any]) -> tuple[AuditEvent, bytes]:
        event = AuditEvent(self.agent_id, seq, self.boot_id, self._clock(), kind, severity,
                           subject, data).validate()
        body = canonical(event)
        digest = link(prev, body)
        self._db.execute("INSERT INTO pending (seq, body, hash, prev) VALUES (?, ?, ?, ?)",
                         (seq, body, digest, prev))
        return event, digest

    # -- damage ---------------------------------------------------------------------------
    def _set_aside_locked(self, seqs: Sequence[int]) -> None:
        """Move rows out of pending into damaged_rows, as they are, for an investigator."""
        now = self._clock()
        for seq in seqs:
            self._db.execute("INSERT INTO damaged_rows (seq, body, hash, prev, found_at) "
                             "SELECT seq, body, hash, prev, ? FROM pending WHERE seq = ?",
                             (now, seq))
            self._db.execute("DELETE FROM pending WHERE seq = ?", (seq,))

    def _report_locked(self, damage: Sequence[Damage], head: Head) -> None:
        """Record the ranges and say so in a critical, chained event at the head."""
        subject, data = damage_report(damage, self.path)
        event, digest = self._write_one(head.seq + 1, head.hash, DAMAGE_KIND, subject,
                                        "critical", data)
        self._put_meta("head_seq", str(event.seq))
        self._put_meta("head_hash", digest.hex())
        now = self._clock()
        self._db.executemany(
            "INSERT INTO spool_damage (first_seq, last_seq, problem, detail, found_at, "
            "reported_seq) VALUES (?, ?, ?, ?, ?, ?)",
            [(d.first_seq, d.last_seq, d.problem, d.detail, now, event.seq) for d in damage])
        log.critical("spool %s damaged: %s (%s); reported as seq %d, set aside in "
                     "damaged_rows, every other event is delivered", self.path, subject,
                     damage[0].detail, event.seq)

    def damage_log(self) -> list[dict[str, Any]]:
        """Every damaged range found in this spool, oldest first (for an investigator)."""
        rows = self._db.execute("SELECT first_seq, last_seq, problem, detail, found_at, "
                                "reported_seq FROM spool_damage ORDER BY id").fetchall()
        names = ("first_seq", "last_seq", "problem", "detail", "found_at", "reported_seq")
        return [dict(zip(names, row, strict=True)) for row in rows]

    # -- forwarding -----------------------------------------------------------------------
    def _window_locked(self, limit: int) -> Inspection:
        acked, head = self.acked(), self.head()
        rows = [SpooledRow(int(s), _blob(b) or b"", _blob(h) or b"", _blob(p))
                for s, b, h, p in self._db.execute(
                    "SELECT seq, body, hash, prev FROM pending ORDER BY seq LIMIT ?",
                    (limit + 1,))]
        complete = len(rows) <= limit
        upto = head.seq if complete else rows[-1].seq
        known = [(int(a), int(b)) for a, b in self._db.execute(
            "SELECT first_seq, last_seq FROM spool_damage WHERE last_seq > ? AND first_seq <= ? "
            "ORDER BY first_seq", (acked.seq, upto))]
        return inspect(self.agent_id, acked, head, rows, complete, known)

    def batch(self, limit: int) -> tuple[Head, list[PendingEvent]]:
        """The oldest deliverable events and the (seq, hash) they chain on from.

        Normally that is the acked head and the events after it. Damage found on the way is
        set aside and reported first; the run then starts after the hole, from the hash its
        first event was chained on from (recorded beside it), so it is delivered as it was.
        """
        with self._transaction("BEGIN"):  # one snapshot: heads and rows agree
            found = self._window_locked(limit)
        if found.damage:
            with self._transaction():  # again under the write lock, and act on it
                found = self._window_locked(limit)
                if found.damage:
                    self._set_aside_locked(found.altered)
                    self._report_locked(found.damage, self.head())
        return found.start, found.run

    def acknowledge(self, seq: int) -> int:
        """Forget events up to seq, which the collector has stored; returns how many went."""
        with self._transaction():
            row = self._db.execute("SELECT hash FROM pending WHERE seq = ?", (seq,)).fetchone()
            if row is None:
                return 0
            gone = self._db.execute("DELETE FROM pending WHERE seq <= ?", (seq,)).rowcount
            self._put_meta("acked_seq", str(seq))
            self._put_meta("acked_hash", bytes(row[0]).hex())
            if self._meta("full_reported") == "1" and self.pending_count() < self.alarm_at:
                self._put_meta("full_reported", "0")
                head = self.head()
                _, digest = self._write_one(
                    head.seq + 1, head.hash, AgentKind.SPOOL_RECOVERED, self.agent_id,
                    "warning", {"pending": self.pending_count(),
                                "dropped_low_severity_total": self.dropped_count()})
                self._put_meta("head_seq", str(head.seq + 1))
                self._put_meta("head_hash", digest.hex())
        return gone

    def next_checkpoint_ts(self) -> str:
        """A checkpoint time strictly after the previous one, even if the clock stepped back.

        The collector refuses a checkpoint that is not newer than the last it accepted (that is
        how it recognises a replayed batch), so this must hold across restarts: it is stored.
        """
        now = self._clock()
        with self._transaction():
            last = self._meta("last_checkpoint_ts")
            if last is not None and now <= last:
                now = _after(last)
            self._put_meta("last_checkpoint_ts", now)
        return now

    def restart_checkpoint_clock(self) -> None:
        """Stamp the next checkpoint by the clock again, whatever was stored.

        For when the collector refused a checkpoint as stamped in the future: the clock ran
        ahead once, and going on strictly after that stamp would sign future checkpoints for
        ever, even with the clock put right. Only the collector can tell this apart from a
        clock stepped back (where going on after the stored stamp is what keeps it accepted).
        """
        with self._transaction():
            self._db.execute("DELETE FROM meta WHERE key = 'last_checkpoint_ts'")

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _blob(value: object) -> bytes | None:
    """A column as bytes whatever type an edit left in it (sqlite3's replace() gives text)."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return str(value).encode()


def _after(ts: str) -> str:
    """The timestamp one microsecond after ts (same textual form)."""
    return utc_timestamp(parse_timestamp(ts) + timedelta(microseconds=1))


def open_spool(audit: AuditClientConfig, role: str) -> Spool:
    """The spool of the agent an audit section describes (its state_dir, id and limits): the
    agent itself, and commands that record an event for the running agent to deliver."""
    return Spool(audit.state_dir / SPOOL_FILE, audit.resolved_agent_id(role),
                 audit.spool_max_events, audit.spool_alarm_ratio)
