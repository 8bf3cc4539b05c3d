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

from floor_agent.store import migrations, schema
from floor_agent.store.interface import FeedChannel, StoreError
from floor_agent.store.records import EventRow
from floor_agent.store.sql import INSERT_EVENT, SqlStore

EVENT_PARAMS = INSERT_EVENT.count("?")

# The whole schema as one script, for a benchmark's raw store (stores use migrations.upgrade).
SCHEMA = schema.script("sqlite")


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


def upgrade_schema(db: sqlite3.Connection, where: str) -> None:
    """Create or upgrade the schema (migrations.py) in one immediate transaction: a second
    process opening the same file waits, then finds it current."""
    cur = db.cursor()
    cur.execute("BEGIN IMMEDIATE")
    try:
        migrations.upgrade(cur, migrations.SQLITE, where)
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    else:
        cur.execute("COMMIT")
    finally:
        cur.close()


class SqliteStore(SqlStore):
    def __init__(self, url: str) -> None:
        self.url = url
        # sqlite:///relative.db or sqlite:////absolute/path.db, as SQLAlchemy spells them
        self.path = Path(url.removeprefix("sqlite:///"))
        try:
            private_file(self.path)
            self._writer = connect(self.path)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{self.path}: cannot open the SQLite store ({exc})") from None
        try:
            upgrade_schema(self._writer, str(self.path))
        except sqlite3.Error as exc:
            self._writer.close()
            raise StoreError(f"{self.path}: cannot open the SQLite store ({exc})") from None
        except BaseException:
            self._writer.close()
            raise
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

    def lead(self, duty: str) -> bool:
        """One box, one collector: it leads every duty."""
        return True

    def feed_channel(self) -> FeedChannel | None:
        """No other collector shares a SQLite store: the live feeds stay in the process."""
        return None

    def open(self) -> None:
        """A local file, opened (and its schema brought up to date) when the store was made:
        there is no database to wait for."""

    def close(self) -> None:
        with self._write_lock:
            self._writer.close()
        with self._readers_lock:
            for db in self._idle_readers:
                db.close()
            self._idle_readers.clear()
