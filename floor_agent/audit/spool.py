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
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from floor_agent.audit.chain import GENESIS_HASH, link
from floor_agent.audit.event import (
    SEVERITY_RANK,
    AuditEvent,
    canonical,
    parse_timestamp,
    utc_timestamp,
)

if TYPE_CHECKING:
    from floor_agent.config import AuditClientConfig

log = logging.getLogger(__name__)

SPOOL_FILE = "spool.db"  # in the agent's audit state_dir

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
    seq INTEGER PRIMARY KEY,
    body BLOB NOT NULL,      -- canonical bytes of the event, exactly as hashed
    hash BLOB NOT NULL
);
"""
SECURITY_RANK = SEVERITY_RANK["warning"]


@dataclass(frozen=True, slots=True)
class PendingEvent:
    seq: int
    body: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class Head:
    seq: int
    hash: bytes


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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        stored = self._meta("agent_id")
        if stored is None:
            self._set_meta_now("agent_id", agent_id)
        elif stored != agent_id:
            raise ValueError(f"{self.path}: spool belongs to agent {stored!r}, not {agent_id!r}")

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
                alarms.append(("agent.spool_high", self.agent_id, "critical",
                               {"pending": count, "max_events": self.max_events}))
        if dropped:
            total = self.dropped_count() + dropped
            self._put_meta("dropped_low_severity", str(total))
            log.error("spool full (%d events): dropped %d low-severity event(s), %d in all",
                      count, dropped, total)
            if self._meta("full_reported") != "1":  # one alarm per episode, not per drop
                self._put_meta("full_reported", "1")
                alarms.append(("agent.spool_full", self.agent_id, "critical",
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
        self._db.execute("INSERT INTO pending (seq, body, hash) VALUES (?, ?, ?)",
                         (seq, body, digest))
        return event, digest

    # -- forwarding -----------------------------------------------------------------------
    def batch(self, limit: int) -> tuple[Head, list[PendingEvent]]:
        """The oldest unacknowledged events and the hash they chain on from."""
        with self._transaction("BEGIN"):  # one snapshot: acked head and rows agree
            acked = self.acked()
            rows = self._db.execute(
                "SELECT seq, body, hash FROM pending ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return acked, [PendingEvent(int(s), bytes(b), bytes(h)) for s, b, h in rows]

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
                    head.seq + 1, head.hash, "agent.spool_recovered", self.agent_id,
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

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _after(ts: str) -> str:
    """The timestamp one microsecond after ts (same textual form)."""
    return utc_timestamp(parse_timestamp(ts) + timedelta(microseconds=1))


def open_spool(audit: AuditClientConfig, role: str) -> Spool:
    """The spool of the agent an audit section describes (its state_dir, id and limits): the
    agent itself, and commands that record an event for the running agent to deliver."""
    return Spool(audit.state_dir / SPOOL_FILE, audit.resolved_agent_id(role),
                 audit.spool_max_events, audit.spool_alarm_ratio)
