"""SQLite store: the default, embedded, nothing to install.

WAL with synchronous=FULL: an acknowledged batch survives a power cut, which is the promise the
agents rely on when they delete what was acknowledged. One writer connection behind a lock
(SQLite serialises writers anyway), one reader connection per thread so queries run beside
ingest.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from floor_agent.store.interface import StoreError
from floor_agent.store.records import EventRow
from floor_agent.store.sql import (
    ADDED_COLUMNS,
    EVENT_INDEXES,
    INSERT_EVENT,
    SqlStore,
    missing_columns,
)

EVENT_PARAMS = INSERT_EVENT.count("?")

TABLES = """
CREATE TABLE IF NOT EXISTS agents (
    agent_id TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    public_key TEXT NOT NULL,
    hostname TEXT NOT NULL DEFAULT '',
    enrolled_at TEXT NOT NULL,
    head_seq INTEGER NOT NULL DEFAULT 0,
    head_hash BLOB NOT NULL,
    checkpoint_seq INTEGER,
    checkpoint_hash BLOB,
    checkpoint_ts TEXT,
    checkpoint_boot_id TEXT,
    checkpoint_sig BLOB,
    checkpoint_received_at TEXT,
    last_seen_at TEXT,
    events_total INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    agent_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    boot_id TEXT NOT NULL,
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    severity_rank INTEGER NOT NULL,
    subject TEXT NOT NULL,
    data TEXT NOT NULL,
    hash BLOB NOT NULL,
    received_at TEXT NOT NULL,
    UNIQUE (agent_id, seq)
);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash BLOB PRIMARY KEY,
    role TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT,
    used_by TEXT
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    agent_id TEXT,
    seq INTEGER,
    detail TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 1,
    acked_at TEXT,
    acked_by TEXT,
    ack_comment TEXT
);
CREATE INDEX IF NOT EXISTS alerts_open ON alerts (fingerprint) WHERE acked_at IS NULL;
"""
# Door credentials (sql.CredentialSql); templates hold sealed bytes only.
CREDENTIAL_TABLES = """
CREATE TABLE IF NOT EXISTS credentials_meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO credentials_meta (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS access_levels (
    level_id TEXT PRIMARY KEY,
    doors TEXT NOT NULL,
    windows TEXT NOT NULL,
    on_holidays INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS people (
    person_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    active INTEGER NOT NULL,
    access_levels TEXT NOT NULL,
    duress_fingers TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS cards (
    uid TEXT PRIMARY KEY,
    person_id TEXT NOT NULL REFERENCES people (person_id),
    active INTEGER NOT NULL,
    valid_from TEXT,
    valid_until TEXT,
    keyed INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cards_person ON cards (person_id);
CREATE TABLE IF NOT EXISTS holidays (
    day TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS templates (
    template_id TEXT PRIMARY KEY,
    person_id TEXT NOT NULL REFERENCES people (person_id),
    finger INTEGER NOT NULL,
    sealed BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS templates_person ON templates (person_id);
CREATE TABLE IF NOT EXISTS credential_log (
    id INTEGER PRIMARY KEY,
    ts TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    version INTEGER NOT NULL,
    detail TEXT NOT NULL
);
"""
# The dashboard (sql.DashboardSql): users, sessions (ids stored hashed), the newest
# state event per (agent, topic) kept at ingest, camera snapshots, last verifications.
DASHBOARD_TABLES = """
CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    must_change INTEGER NOT NULL,
    disabled INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    failures INTEGER NOT NULL,
    locked_until TEXT
);
CREATE TABLE IF NOT EXISTS sessions (
    id_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    csrf TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (username);
-- failed logins of names no user has: they lock like real ones (no enumeration)
CREATE TABLE IF NOT EXISTS login_failures (
    username TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    locked_until TEXT,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS latest (
    agent_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    seq BIGINT NOT NULL,
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (agent_id, topic)
);
CREATE TABLE IF NOT EXISTS snapshots (
    agent_id TEXT NOT NULL,
    camera_id TEXT NOT NULL,
    jpeg BLOB NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    size INTEGER NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (agent_id, camera_id)
);
CREATE TABLE IF NOT EXISTS verifications (
    agent_id TEXT PRIMARY KEY,
    verified_at TEXT NOT NULL,
    ok INTEGER NOT NULL,
    checkpoint_seq BIGINT,
    stored_events BIGINT NOT NULL,
    problems TEXT NOT NULL,
    by_user TEXT NOT NULL
);
-- rows found in the events table above an agent's signed head that contradict what the
-- agent then signed: moved here by ingest (kept as evidence, never served as events)
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    agent_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    boot_id TEXT NOT NULL,
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    subject TEXT NOT NULL,
    data TEXT NOT NULL,
    hash BLOB NOT NULL,
    received_at TEXT NOT NULL,
    quarantined_at TEXT NOT NULL,
    reason TEXT NOT NULL
);
"""
SCHEMA = TABLES + EVENT_INDEXES + CREDENTIAL_TABLES + DASHBOARD_TABLES



@lru_cache(maxsize=16)
def insert_events_sql(rows: int) -> str:
    """INSERT_EVENT with `rows` rows of placeholders in its VALUES list."""
    values = INSERT_EVENT[INSERT_EVENT.index("VALUES ") + len("VALUES "):]
    return INSERT_EVENT + (", " + values) * (rows - 1)
MAX_IDLE_READERS = 8


def private_file(path: Path) -> None:
    """The database file 0600 (its -wal and -shm take its mode), its directory 0700 when made
    here: audit events and password hashes are nobody else's to read, whatever the umask."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
        os.chmod(path.parent, 0o700)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)


def connect(path: Path) -> sqlite3.Connection:
    """A connection with the durability settings every collector connection must have."""
    db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    return db


def add_missing_columns(db: sqlite3.Connection) -> None:
    """Columns a newer release added (sql.ADDED_COLUMNS), on a store made before it."""
    tables = {table for table, _, _ in ADDED_COLUMNS}
    present = {table: {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
               for table in tables}
    for statement in missing_columns(present):
        db.execute(statement)


class SqliteStore(SqlStore):
    def __init__(self, url: str) -> None:
        self.url = url
        # sqlite:///relative.db or sqlite:////absolute/path.db, as SQLAlchemy spells them
        self.path = Path(url.removeprefix("sqlite:///"))
        try:
            private_file(self.path)
            self._writer = connect(self.path)
            self._writer.executescript(SCHEMA)
            add_missing_columns(self._writer)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{self.path}: cannot open the SQLite store ({exc})") from None
        # Largest power of two of rows whose parameters fit in one statement.
        limit = self._writer.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // EVENT_PARAMS
        self._max_rows_per_insert = 1 << min(10, max(0, limit.bit_length() - 1))
        self._write_lock = threading.Lock()
        # Idle reader connections, handed out per read and returned: the API's worker threads
        # come and go, so a connection per thread would pile up open files over the days.
        self._idle_readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()

    @contextmanager
    def _write(self) -> Iterator[Any]:
        with self._write_lock:
            cur = self._writer.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")
            finally:
                cur.close()

    def _event_rows(self, events: list[EventRow]) -> list[tuple[str, list[Any]]]:
        """The rows in order as multi-row INSERTs of power-of-two sizes (at most 11 shapes).

        executemany() steps the statement once per row, and the sqlite3 module lets go of the
        GIL around every step; while other ingest threads work, each take-back waits (up to the
        switch interval), and all that time the write lock is held. One statement per chunk
        lets go once while SQLite inserts the whole chunk. Same rows, same order (so the same
        ids), same constraints, same transaction.
        """
        out: list[tuple[str, list[Any]]] = []
        start, total, size = 0, len(events), self._max_rows_per_insert
        while start < total:
            while size > total - start:
                size >>= 1
            out.append((insert_events_sql(size),
                        [value for row in events[start:start + size] for value in row]))
            start += size
        return out

    def _insert_events(self, cur: Any, rows: list[tuple[str, list[Any]]]) -> None:
        for sql, params in rows:
            cur.execute(sql, params)

    @contextmanager
    def _read(self) -> Iterator[Any]:
        with self._readers_lock:
            db = self._idle_readers.pop() if self._idle_readers else None
        if db is None:
            db = connect(self.path)
        cur = db.cursor()
        try:
            yield cur
        finally:
            cur.close()
            with self._readers_lock:
                keep = len(self._idle_readers) < MAX_IDLE_READERS
                if keep:
                    self._idle_readers.append(db)
            if not keep:
                db.close()

    def close(self) -> None:
        with self._write_lock:
            self._writer.close()
        with self._readers_lock:
            for db in self._idle_readers:
                db.close()
            self._idle_readers.clear()
