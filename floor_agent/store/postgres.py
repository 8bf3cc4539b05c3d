"""PostgreSQL store, for sites that outgrow one SQLite file. Same SQL as SQLite (sql.py).

Two kinds of write. Ingest (a batch, its alerts, enrollment tokens, touches) runs on pooled
connections with no site-wide lock: a batch's transaction holds its agent's row FOR UPDATE
from the first read to commit, so collectors sharing the database decide an agent's batches
one at a time while other agents' batches commit beside them; alerts are opened or counted
with INSERT ... ON CONFLICT on the unique index of open fingerprints, with no lock between
collectors (only unauthenticated noise from client addresses, bounded per kind, takes an
advisory lock to open a row). The rare writes that
read then write across tables (enrollment, credentials, policy, users, the outbox) keep one
writer connection behind a lock, and each of their transactions takes the site-wide advisory
lock WRITE_LOCK_KEY, so that still holds when another process (the CLI, a second collector)
writes to the same database. Reads use the same pool of autocommit connections, checked out
per call and returned, so a thread pool that recycles its threads does not leak connections.
Every text column is COLLATE "C": comparisons and ORDER BY on timestamps and kinds are
bytewise, exactly as in SQLite, whatever locale the database was created with.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from psycopg import conninfo
from psycopg.pq import TransactionStatus

from floor_agent.store import migrations, pg_refusal, schema
from floor_agent.store.interface import (
    FeedChannel,
    StoreError,
    StoreRefused,
    StoreUnavailable,
)
from floor_agent.store.pg_feed import PgFeedChannel
from floor_agent.store.records import EventRow
from floor_agent.store.sql import INSERT_EVENT, SqlStore

SCHEMA = schema.script("postgres")


# COPY takes the columns of INSERT_EVENT, in the order event_params() gives the values.
COPY_EVENTS = ("COPY events (" + INSERT_EVENT[INSERT_EVENT.index("(") + 1:INSERT_EVENT.index(")")]
               + ") FROM STDIN")

# pg_advisory_xact_lock key of the collector's write lock ("floorag" in ASCII).
WRITE_LOCK_KEY = 0x666C6F6F72_6167
SCHEMA_LOCK_KEY = WRITE_LOCK_KEY + 1
NOISE_ALERTS_LOCK_KEY = WRITE_LOCK_KEY + 2  # held to open an alert row of a client address
# pg_try_advisory_lock keys (session level) of the duties one collector of a site leads
LEAD_KEYS = {"stale-checkpoints": WRITE_LOCK_KEY + 3}


# SQLSTATEs that say "this server cannot take the work now", not "the work is wrong": the
# server shutting down, crashed or still starting (57P01-57P03), and a read-only transaction
# (25006: a standby answered, or a primary demoted under us). Class 08 is the connection's.
UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03", "25006"})

# TCP keepalives and a send timeout unless the URL sets them: a primary that vanishes without
# a reset (its host powered off in a failover) is given up after about 25 s, not the kernel's
# 2 h, so the next attempt goes to the host that now takes writes.
KEEPALIVES = {"keepalives": "1", "keepalives_idle": "10", "keepalives_interval": "5",
              "keepalives_count": "3", "tcp_user_timeout": "25000"}


def unavailable(exc: psycopg.Error, connection_lost: bool) -> bool:
    """Whether an error means the database is away for now (answer 503, retry later) rather
    than a refusal of this work: the connection was lost, or the server said so."""
    if connection_lost:
        return True
    state = exc.sqlstate
    return state is not None and (state.startswith("08") or state in UNAVAILABLE_STATES)


def describe(url: str) -> str:
    """user@host:port/dbname of a URL, never its password: safe for logs and errors."""
    try:
        params = conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparsable PostgreSQL URL>"
    user = params.get("user") or "<default user>"
    host = params.get("host") or params.get("hostaddr") or "<local socket>"
    return f"{user}@{host}:{params.get('port') or 5432}/{params.get('dbname') or user}"


# What this release's schema is: stored once it is in place. Opening a store whose mark
# matches and whose schema is current (migrations.is_current, catalog reads only) runs no DDL
# at all: CREATE INDEX IF NOT EXISTS takes a share lock on its table even when the index
# exists, and a second opener (an admin command, a test) running it beside a collector's write
# transaction deadlocked with it.
SCHEMA_DIGEST = hashlib.sha256(
    f"{SCHEMA}version {migrations.SCHEMA_VERSION}".encode()).hexdigest()
SCHEMA_MARK_TABLE = """
CREATE TABLE IF NOT EXISTS schema_mark (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    digest TEXT COLLATE "C" NOT NULL
)"""
SCHEMA_MARK = ("INSERT INTO schema_mark (id, digest) VALUES (1, %s) "
               "ON CONFLICT (id) DO UPDATE SET digest = excluded.digest")


def schema_current(db: psycopg.Connection[Any]) -> bool:
    """Whether the store's schema is this release's: its mark, and its version and columns
    (a store restored or edited by other means may carry a mark but lack a column)."""
    if db.execute("SELECT to_regclass('schema_mark')").fetchone() == (None,):
        return False
    row = db.execute("SELECT digest FROM schema_mark WHERE id = 1").fetchone()
    if row is None or row[0] != SCHEMA_DIGEST:
        return False
    with db.cursor() as cur:
        return migrations.is_current(cur, migrations.POSTGRES)


class PostgresStore(SqlStore):
    placeholder = "%s"
    snapshot_begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
    lock_agent_row = " FOR UPDATE"
    # two batches whose alerts lock rows in crossing order: PostgreSQL aborts one, run again
    retry_errors = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)

    def __init__(self, url: str, connect_timeout: int = 10, max_idle_readers: int = 16,
                 connect: bool = True) -> None:
        """connect=False: nothing is reached until open() (see open_store(wait=True))."""
        self.url = url
        self.where = describe(url)
        self._connect_timeout = connect_timeout
        self._max_idle_readers = max_idle_readers
        self._write_lock = threading.Lock()
        self._readers_lock = threading.Lock()
        self._idle_readers: list[psycopg.Connection[Any]] = []
        self._closed = False
        # the connection holding the session advisory locks of the duties this instance
        # leads (lead()): they go when it closes, or with the process however it dies
        self._lead_lock = threading.Lock()
        self._leader: psycopg.Connection[Any] | None = None
        self._leading: set[str] = set()
        self._writer: psycopg.Connection[Any] | None = None  # set by open()
        if connect:
            self.open()

    def open(self) -> None:
        """Connect, check the encoding, bring the schema to this release's (idempotent).
        StoreUnavailable when the database is away (try again later), StoreRefused when it
        refused the connection, StoreError when it cannot be used (encoding, a newer schema)."""
        with self._write_lock:
            if self._closed:
                raise StoreError(f"{self.where}: store is closed")
            if self._writer is not None:
                return
            writer = self._connect()
            try:
                encoding = writer.info.parameter_status("server_encoding")
                if encoding != "UTF8":
                    raise StoreError(f"{self.where}: the database encoding is "
                                     f"{encoding}, the collector needs UTF8 "
                                     f"(CREATE DATABASE ... ENCODING 'UTF8' TEMPLATE template0)")
                if not schema_current(writer):
                    with writer.transaction(), writer.cursor() as cur:
                        cur.execute(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY})")
                        migrations.upgrade(cur, migrations.POSTGRES, self.where)
                        cur.execute(SCHEMA_MARK_TABLE)
                        cur.execute(SCHEMA_MARK, (SCHEMA_DIGEST,))
            except psycopg.Error as exc:
                lost = self._lost(writer, exc)  # the database went away halfway: later
                writer.close()
                if lost is not None:
                    raise lost from None
                raise StoreError(f"{self.where}: cannot create the schema "
                                 f"({' '.join(str(exc).split())})") from None
            except BaseException:
                writer.close()
                raise
            self._writer = writer

    def _opened(self) -> None:
        """StoreUnavailable until open() succeeded: no call runs on a schema not checked."""
        if self._writer is None and not self._closed:
            raise StoreUnavailable(f"{self.where}: the database has not been reached since "
                                   f"the collector started")

    def _connect(self) -> psycopg.Connection[Any]:
        """An autocommit connection, or a StoreError naming the server without the password."""
        try:
            params = conninfo.conninfo_to_dict(self.url)
        except psycopg.ProgrammingError as exc:
            raise StoreError(f"database_url: not a PostgreSQL URL ({' '.join(str(exc).split())})"
                             ) from None
        extra: dict[str, Any] = {"client_encoding": "UTF8",
                                 "application_name": "floor-agent collector"}
        if "connect_timeout" not in params:
            extra["connect_timeout"] = self._connect_timeout
        extra.update({name: value for name, value in KEEPALIVES.items() if name not in params})
        try:
            return psycopg.connect(self.url, autocommit=True, **extra)
        except psycopg.Error as exc:
            message = " ".join(str(exc).split())
            password = params.get("password")
            if password:
                message = message.replace(str(password), "***")
            # refused, timed out, shutting down, no read-write host among a multi-host URL's;
            # a server that answered no (password, role, database) is a refusal
            kind: type[StoreError] = StoreError
            if isinstance(exc, psycopg.OperationalError):
                kind = StoreRefused if pg_refusal.refused(message) else StoreUnavailable
            raise kind(f"{self.where}: cannot connect to PostgreSQL ({message})") from None

    def _lost(self, conn: psycopg.Connection[Any], exc: psycopg.Error) -> StoreUnavailable | None:
        """StoreUnavailable for an error that means the database is away (the connection is
        closed then), None for one that refuses this work on a sound connection."""
        if not unavailable(exc, conn.closed or conn.broken):
            return None
        conn.close()
        return StoreUnavailable(f"{self.where}: the database went away "
                                f"({' '.join(str(exc).split())[:200]})")

    @contextmanager
    def _write(self) -> Iterator[Any]:
        with self._write_lock:
            if self._closed:
                raise StoreError(f"{self.where}: store is closed")
            self._opened()
            assert self._writer is not None
            if self._writer.closed:  # lost with the server (restart, failover): reconnect
                self._writer = self._connect()
            writer = self._writer
            try:
                with writer.transaction(), writer.cursor() as cur:
                    cur.execute(f"SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})")
                    yield cur
            except psycopg.Error as exc:
                lost = self._lost(writer, exc)
                if lost is None:
                    raise
                raise lost from exc

    @contextmanager
    def _row_write(self) -> Iterator[Any]:
        with self._connection() as conn, conn.transaction(), conn.cursor() as cur:
            yield cur

    def _lock_noise_alerts(self, cur: Any) -> None:
        cur.execute(f"SELECT pg_advisory_xact_lock({NOISE_ALERTS_LOCK_KEY})")

    def _insert_events(self, cur: Any, rows: list[EventRow]) -> None:
        """COPY: 2-3x the rows/s of executemany (pipelined, yet one INSERT per row).

        Same rows in the same order (ids), same constraints, same transaction: a duplicate
        (agent_id, seq) still aborts the whole batch.
        """
        with cur.copy(COPY_EVENTS) as copy:
            for row in rows:
                copy.write_row(row)

    @contextmanager
    def _read(self) -> Iterator[Any]:
        with self._connection() as conn, conn.cursor() as cur:
            yield cur

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled autocommit connection, given back idle (or closed) after use."""
        with self._readers_lock:
            if self._closed:
                raise StoreError(f"{self.where}: store is closed")
            self._opened()
            conn = self._idle_readers.pop() if self._idle_readers else None
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        except psycopg.Error as exc:
            lost = self._lost(conn, exc)
            if lost is None:  # a refusal of this work (a deadlock to retry, a constraint)
                raise
            self._drop_idle_readers()  # the server went away: the idle ones are dead as well
            raise lost from exc
        finally:
            self._give_back(conn)

    def _give_back(self, conn: psycopg.Connection[Any]) -> None:
        if conn.closed:
            return
        if conn.info.transaction_status != TransactionStatus.IDLE:
            conn.close()
            return
        with self._readers_lock:
            if not self._closed and len(self._idle_readers) < self._max_idle_readers:
                self._idle_readers.append(conn)
                return
        conn.close()

    def _drop_idle_readers(self) -> None:
        with self._readers_lock:
            idle, self._idle_readers = self._idle_readers, []
        for conn in idle:
            conn.close()

    def lead(self, duty: str) -> bool:
        key = LEAD_KEYS.get(duty)
        if key is None:
            raise ValueError(f"duty: expected one of {sorted(LEAD_KEYS)}, got {duty!r}")
        with self._lead_lock:
            if self._closed:
                raise StoreError(f"{self.where}: store is closed")
            self._opened()
            try:
                if self._leader is not None and not self._leader.closed:
                    # the lock lives as long as this session: if it answers, it is ours
                    self._leader.execute("SELECT 1")
                    if duty in self._leading:
                        return True
                else:
                    self._leader, self._leading = self._connect(), set()
                row = self._leader.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            except psycopg.Error as exc:
                if self._leader is not None:
                    self._leader.close()
                self._leader, self._leading = None, set()
                raise StoreError(f"{self.where}: cannot take the lead of {duty} "
                                 f"({' '.join(str(exc).split())})") from None
            if row is not None and row[0]:
                self._leading.add(duty)
                return True
            return False

    def feed_channel(self) -> FeedChannel:
        return PgFeedChannel(self._connect, self.where)

    def close(self) -> None:
        with self._readers_lock:
            self._closed = True
        self._drop_idle_readers()
        with self._lead_lock:
            if self._leader is not None:
                if self._leading and not self._leader.closed:
                    # let go now: a closed socket frees the lock only once the server has
                    # ended the session, and the next collector may ask before that
                    with suppress(psycopg.Error):
                        self._leader.execute("SELECT pg_advisory_unlock_all()")
                self._leader.close()
            self._leader, self._leading = None, set()
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
