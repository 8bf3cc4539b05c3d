"""The store's schema version, and the steps that bring an older store up to it.

Opening a store runs `upgrade()` inside one write transaction (the caller's): an empty database
gets schema.py's tables at SCHEMA_VERSION; an older store goes through every step from its
version to this one, all or nothing; a store newer than this code is refused (a collector is
never downgraded over its data).

Version 1 is the schema of the releases before the version table: a store with the store's
tables and no `schema_version` table. Such a store may come from a release that lacked some
tables or some late columns (schema.Column.late): those are added first, as those releases did
at every open, so every version-1 store is the same before step 2 runs. Late columns are also
added to a current store that lacks one (restored or edited by other means).

A change to schema.py is a new step here, appended, never edited; the test in
tests/test_store_schema.py opens a store made by the oldest release and compares it with a new
one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from floor_agent.protocol.event import utc_timestamp
from floor_agent.store import schema
from floor_agent.store.interface import StoreError

SCHEMA_VERSION = 6


@dataclass(frozen=True, slots=True)
class Dialect:
    """What upgrade() needs to know of a dialect besides its DDL: how to look itself up."""

    name: str  # schema.DIALECTS
    tables_sql: str  # table names of the store's schema
    columns_sql: str  # column names of one table (one placeholder: the table name)
    placeholder: str


SQLITE = Dialect("sqlite", "SELECT name FROM sqlite_master WHERE type = 'table'",
                 "SELECT name FROM pragma_table_info(?)", "?")
POSTGRES = Dialect("postgres",
                   "SELECT table_name FROM information_schema.tables "
                   "WHERE table_schema = current_schema()",
                   "SELECT column_name FROM information_schema.columns "
                   "WHERE table_schema = current_schema() AND table_name = %s", "%s")


@dataclass(frozen=True, slots=True)
class Step:
    version: int  # the version the store has after it
    note: str  # what it changes, stored in schema_version
    run: Callable[[Any, Dialect], None]


def _version_table(cur: Any, dialect: Dialect) -> None:
    cur.execute(schema.table("schema_version").create(dialect.name))


def _notifications(cur: Any, dialect: Dialect) -> None:
    """The notifications' outbox and the notifier's place: it starts after the alerts the
    store already holds (an upgrade does not notify, nor escalate, the past)."""
    added = tuple(t for t in schema.TABLES if t.since == 3)
    for statement in schema.create_statements(dialect.name, added):
        if not statement.startswith("INSERT"):
            cur.execute(statement)
    cur.execute("INSERT INTO notify_state (id, alerts_seen, first_alert) "
                "SELECT 1, coalesce(max(id), 0), coalesce(max(id), 0) FROM alerts")


def _policy(cur: Any, dialect: Dialect) -> None:
    """Central workstation policy: groups, the change log, assignments, device exceptions,
    and the site-wide change number (starting at 0: no policy yet)."""
    added = tuple(t for t in schema.TABLES if t.since == 4)
    for statement in schema.create_statements(dialect.name, added):
        cur.execute(statement)


def _site_state(cur: Any, dialect: Dialect) -> None:
    """Per-site state several collectors share: the replay memory of agent-signed requests
    (empty: what one process remembered before the upgrade is within its minute anyway)."""
    added = tuple(t for t in schema.TABLES if t.since == 5)
    for statement in schema.create_statements(dialect.name, added):
        cur.execute(statement)


def _alerts_without_lock(cur: Any, dialect: Dialect) -> None:
    """One open alert per fingerprint by a unique index, and each alert's own `planned`
    mark: alert rows are then inserted without a lock between collectors (ON CONFLICT), and
    the notifier no longer needs their ids in commit order. Alerts the notifier had passed
    (id <= alerts_seen) are marked planned. A second open row of one fingerprint (none
    should exist: one writer made them) is closed with a note naming the row that stays."""
    p = dialect.placeholder
    planned = next(c for c in schema.table("alerts").columns if c.name == "planned")
    cur.execute(dialect.columns_sql, ("alerts",))
    if "planned" not in {str(row[0]) for row in cur.fetchall()}:  # a table made at step 1 has it
        cur.execute(schema.add_column("alerts", planned, dialect.name))
    cur.execute("UPDATE alerts SET planned = 1 WHERE id <= "
                "(SELECT alerts_seen FROM notify_state WHERE id = 1)")
    cur.execute(f"UPDATE alerts SET acked_at = {p}, acked_by = {p}, ack_comment = {p} "
                "WHERE acked_at IS NULL AND id > (SELECT min(o.id) FROM alerts o "
                "WHERE o.fingerprint = alerts.fingerprint AND o.acked_at IS NULL)",
                (utc_timestamp(datetime.now(UTC)), "floor-agent schema 6",
                 "closed by the upgrade: a second open row of its fingerprint (the oldest "
                 "stays open)"))
    cur.execute("DROP INDEX IF EXISTS alerts_open")
    for index in schema.INDEXES:
        if index.since == 6:
            cur.execute(index.create())


# Appended, never edited: a store at version n runs STEPS[n - 1:].
STEPS: tuple[Step, ...] = (
    Step(2, "schema_version: the store's schema is versioned", _version_table),
    Step(3, "notifications: the outbox and the notifier's place in the alerts",
         _notifications),
    Step(4, "policy: workstation groups, policy changes, assignments, device exceptions",
         _policy),
    Step(5, "request_signatures: the signed-request replay memory, shared by collectors",
         _site_state),
    Step(6, "alerts: one open row per fingerprint (unique index), each alert marked planned",
         _alerts_without_lock),
)
assert [step.version for step in STEPS] == list(range(2, SCHEMA_VERSION + 1))


def _tables(cur: Any, dialect: Dialect) -> set[str]:
    cur.execute(dialect.tables_sql)
    return {str(row[0]) for row in cur.fetchall()}


def stored_version(cur: Any, dialect: Dialect) -> int | None:
    """The store's schema version; 1 for a store from before the version table, None for a
    database holding none of the store's tables."""
    tables = _tables(cur, dialect)
    if "schema_version" in tables:
        cur.execute("SELECT max(version) FROM schema_version")
        row = cur.fetchone()
        return 1 if row is None or row[0] is None else int(row[0])
    return 1 if tables & {t.name for t in schema.TABLES} else None


def missing_late_columns(cur: Any, dialect: Dialect) -> list[tuple[str, schema.Column]]:
    """Late columns (schema.Column.late) the store lacks: a store of an older release, or one
    restored or edited by other means. Reads the catalog only (no lock DDL would take)."""
    missing = []
    for table in schema.TABLES:
        late = [c for c in table.columns if c.late]
        if not late:
            continue
        cur.execute(dialect.columns_sql, (table.name,))
        present = {str(row[0]) for row in cur.fetchall()}
        if present:  # a table the store lacks altogether is created whole
            missing += [(table.name, c) for c in late if c.name not in present]
    return missing


def is_current(cur: Any, dialect: Dialect) -> bool:
    """Whether upgrade() would change nothing (read-only)."""
    return (stored_version(cur, dialect) == SCHEMA_VERSION
            and not missing_late_columns(cur, dialect))


def _stamp(cur: Any, dialect: Dialect, version: int, note: str) -> None:
    cur.execute(f"INSERT INTO schema_version (version, applied_at, note) VALUES "
                f"({dialect.placeholder}, {dialect.placeholder}, {dialect.placeholder})",
                (version, utc_timestamp(datetime.now(UTC)), note))


def upgrade(cur: Any, dialect: Dialect, where: str) -> list[int]:
    """Bring the store to SCHEMA_VERSION inside the caller's write transaction; the versions
    it went through (empty: it was current). StoreError for a store newer than this code."""
    version = stored_version(cur, dialect)
    if version is None:
        for statement in schema.create_statements(dialect.name):
            cur.execute(statement)
        _stamp(cur, dialect, SCHEMA_VERSION, "created")
        return [SCHEMA_VERSION]
    if version > SCHEMA_VERSION:
        raise StoreError(f"{where}: the store's schema is version {version}, this release of "
                         f"floor-agent knows versions up to {SCHEMA_VERSION}: run the release "
                         f"that wrote it, or a newer one (a store is never downgraded)")
    if version == 1:
        # what the releases before the version table did at every open: create the tables
        # a store of an older release still lacks
        version_1 = tuple(t for t in schema.TABLES
                          if t.name != "schema_version" and t.since == 1)
        for statement in schema.create_statements(dialect.name, version_1, version=1):
            cur.execute(statement)
    for table_name, column in missing_late_columns(cur, dialect):
        cur.execute(schema.add_column(table_name, column, dialect.name))
    done = []
    for step in STEPS[version - 1:]:
        step.run(cur, dialect)
        _stamp(cur, dialect, step.version, step.note)
        done.append(step.version)
    return done
