"""The store's schema: one source for both dialects, a version, and upgrades that keep the data.

`tests/data/store_v1_*.sql` is the DDL the last release before the schema version ran (frozen),
and `store_v1_rows.json` every row of a store that release wrote through its own API
(tests/data/store_v1_make.py made both). A store made from them is what a site upgrading from
that release has; the new code must open it, keep every row and every chain verifying.
"""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from postgres_server import PostgresServer, postgres_server  # noqa: F401  (fixture)

from floor_agent.collector.core import Collector
from floor_agent.collector.verify import verify_store
from floor_agent.protocol.batch import batch_body
from floor_agent.protocol.checkpoint import Checkpoint, link
from floor_agent.protocol.event import AuditEvent, canonical, utc_timestamp
from floor_agent.store import migrations, open_store, schema
from floor_agent.store.interface import Store, StoreError
from floor_agent.store.records import AlertDraft

DATA = Path(__file__).parent / "data"
ROWS = orjson.loads((DATA / "store_v1_rows.json").read_bytes())
# the tables the version-1 store has (schema_mark: PostgreSQL's, outside schema.py)
V1_TABLES = [t.name for t in schema.TABLES if t.name != "schema_version" and t.since == 1]
# the tables later steps added (a version-1 store lacks them)
LATER = ["schema_version", *(t.name for t in schema.TABLES if t.since > 1)]


@dataclass
class Database:
    """One empty database of a dialect, and how to look into it beside the store."""

    dialect: str
    url: str
    path: Path | None = None

    def connect(self) -> Any:
        if self.path is not None:
            return sqlite3.connect(self.path, isolation_level=None)
        return psycopg.connect(self.url, autocommit=True)

    def execute(self, sql: str) -> None:
        db = self.connect()
        try:
            db.execute(sql)
        finally:
            db.close()

    def version(self) -> int | None:
        db = self.connect()
        try:
            return migrations.stored_version(
                db.cursor(), migrations.SQLITE if self.path else migrations.POSTGRES)
        finally:
            db.close()

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        db = self.connect()
        try:
            return [tuple(row) for row in db.execute(sql, params).fetchall()]
        finally:
            db.close()

    def make_v1(self, with_rows: bool = True) -> None:
        """The store as the release before the schema version left it: its DDL, its rows."""
        db = self.connect()
        try:
            ddl = (DATA / f"store_v1_{self.dialect}.sql").read_text()
            if self.path is not None:
                db.executescript(ddl)
                db.execute("BEGIN")
            else:
                db.execute(ddl)
            mark = "?" if self.path is not None else "%s"
            for table, content in ROWS["tables"].items() if with_rows else ():
                columns = content["columns"]
                sql = (f"INSERT INTO {table} ({', '.join(columns)}) "
                       f"VALUES ({', '.join(mark for _ in columns)})")
                db.execute(f"DELETE FROM {table}")  # the DDL's seed row (credentials_meta)
                for row in content["rows"]:
                    db.execute(sql, [bytes.fromhex(v["hex"]) if isinstance(v, dict) else v
                                     for v in row])
            if self.path is not None:
                db.execute("COMMIT")
            else:  # rows inserted with their ids: the sequences go on after them
                for table in ("events", "alerts", "credential_log", "quarantine"):
                    db.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                               f"max(id)) FROM {table} HAVING count(*) > 0")
        finally:
            db.close()

    def rows(self, table: str) -> list[bytes]:
        """A table's rows as the dump spells them, in a stable order."""
        columns = ROWS["tables"][table]["columns"]
        return sorted(orjson.dumps([{"hex": bytes(v).hex()} if isinstance(v, bytes) else v
                                    for v in row])
                      for row in self.query(f"SELECT {', '.join(columns)} FROM {table}"))

    def schema(self) -> dict[str, Any]:
        """Everything that defines the schema, in a form two databases can be compared by."""
        if self.path is not None:
            # the statement text without whitespace: an ALTER TABLE ADD COLUMN appends
            # ",name TYPE" to it, so a column added late and one created in place compare equal
            return {name: (kind, "".join(sql.replace("IF NOT EXISTS ", "").split()))
                    for kind, name, sql in self.query(
                        "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL")}
        return {
            "columns": self.query(
                "SELECT table_name, ordinal_position, column_name, data_type, is_nullable, "
                "column_default, collation_name FROM information_schema.columns "
                "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"),
            "constraints": self.query(
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
                "FROM pg_constraint WHERE connamespace = 'public'::regnamespace "
                "ORDER BY 1, 2"),
            "indexes": self.query("SELECT tablename, indexname, indexdef FROM pg_indexes "
                                  "WHERE schemaname = 'public' ORDER BY 1, 2"),
            "sequences": self.query("SELECT sequence_name, data_type FROM "
                                    "information_schema.sequences ORDER BY 1")}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def databases(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Database]:
    """A maker of empty databases of one dialect."""
    made = iter(range(100))

    def make() -> Database:
        if request.param == "sqlite":
            path = tmp_path / f"store-{next(made)}.db"
            return Database("sqlite", f"sqlite:///{path}", path)
        server: PostgresServer = request.getfixturevalue("postgres_server")
        return Database("postgres", server.new_database(icu_locale="en-US"))

    return make


@pytest.fixture
def opened() -> Iterator[list[Store]]:
    stores: list[Store] = []
    yield stores
    for store in stores:
        store.close()


def open_(database: Database, opened: list[Store]) -> Store:
    store = open_store(database.url)
    opened.append(store)
    return store


def without(schema_: dict[str, Any], tables: list[str]) -> dict[str, Any]:
    """A schema description without some tables (their columns, constraints, indexes and
    sequences)."""
    if "columns" not in schema_:
        indexes = {i.name for i in schema.INDEXES if i.table in tables}
        return {k: v for k, v in schema_.items() if k not in tables and k not in indexes}
    return {part: [row for row in rows if row[0] not in tables
                   and not any(str(row[0]).startswith(f"{t}_") for t in tables)]
            for part, rows in schema_.items()}


# what schema 6 changed in a table of version 1: the alerts' planned column, and the open
# alerts' index made unique (renamed) beside a new one of the unplanned
SCHEMA_6_INDEXES = ("alerts_open", "alerts_open_fingerprint", "alerts_unplanned")


def without_schema_6(schema_: dict[str, Any]) -> dict[str, Any]:
    """A schema description without what step 6 changed in the alerts table."""
    if "columns" not in schema_:
        out = {k: v for k, v in schema_.items() if k not in SCHEMA_6_INDEXES}
        kind, sql = out["alerts"]
        out["alerts"] = (kind, sql.replace(",plannedINTEGERNOTNULLDEFAULT0", ""))
        return out
    out = dict(schema_)
    out["columns"] = [row for row in schema_["columns"] if row[:1] != ("alerts",)
                      or row[2] != "planned"]
    out["indexes"] = [row for row in schema_["indexes"] if row[1] not in SCHEMA_6_INDEXES]
    return out


def test_a_new_store_has_the_schema_of_the_release_before_the_version_table(
        databases: Callable[[], Database], opened: list[Store]) -> None:
    """The DDL rendered from schema.py is the DDL that release wrote by hand, table for table,
    column for column (types, NOT NULL, defaults, checks, keys, indexes, the partial one);
    the only differences are the tables of later versions (the version table first) and
    what step 6 changed in the alerts table, checked here to be just that."""
    new, old = databases(), databases()
    open_(new, opened)
    old.make_v1(with_rows=False)
    assert without_schema_6(without(new.schema(), LATER)) == without_schema_6(old.schema())
    assert without(new.schema(), LATER) != old.schema()


def test_an_upgraded_store_has_the_schema_of_a_new_one(
        databases: Callable[[], Database], opened: list[Store]) -> None:
    new, old = databases(), databases()
    open_(new, opened)
    old.make_v1()
    open_(old, opened)
    assert old.schema() == new.schema()
    assert [v for v, *_ in old.query("SELECT version, applied_at, note FROM schema_version")
            ] == [2, 3, 4, 5, 6]
    assert [v for v, *_ in new.query("SELECT version, applied_at, note FROM schema_version")
            ] == [migrations.SCHEMA_VERSION]


def test_a_store_of_the_release_before_the_version_keeps_its_data_and_chains(
        databases: Callable[[], Database], opened: list[Store]) -> None:
    database = databases()
    database.make_v1()
    store = open_(database, opened)

    assert migrations.SCHEMA_VERSION == 6
    (note,) = database.query("SELECT note FROM schema_version WHERE version = 2")
    assert "schema_version" in note[0]
    for table in V1_TABLES:
        assert database.rows(table) == sorted(orjson.dumps(row) for row in
                                              ROWS["tables"][table]["rows"]), table
    result = verify_store(store)
    assert result.ok, result.problem_lines()
    assert sorted(a.agent_id for a in result.agents) == ["door-1", "ws-1"]
    # what the API reads from it is what that release wrote
    assert store.credentials_version() == ROWS["tables"]["credentials_meta"]["rows"][0][1]
    assert {p["person_id"]: p["active"] for p in store.list_people()} == {"p-1": True,
                                                                         "p-2": False}
    assert len(store.list_quarantine("ws-1")) == 1
    assert {a["kind"] for a in store.list_alerts()} >= {"usb.blocked", "forged_rows",
                                                         "door.forced"}
    assert {s["topic"] for s in store.latest_states("door-1")} >= {"door:front", "door:back"}

    # and the agent goes on where it was: its next batch chains onto the stored head
    before = store.get_agent("ws-1")
    assert before is not None
    key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(ROWS["agent_keys"]["ws-1"]))
    prev, events = before.head_hash, []
    for seq in range(before.head_seq + 1, before.head_seq + 4):
        event = AuditEvent("ws-1", seq, "after-upgrade", utc_timestamp(), "usb.allowed", "info",
                           "/dev/sdc", {"n": seq}).validate()
        prev = link(prev, canonical(event))
        events.append((canonical(event), prev))
    checkpoint = Checkpoint("ws-1", before.head_seq + 3, prev, utc_timestamp(),
                            "after-upgrade").sign(key)
    collector = Collector(store)
    try:
        result_ = collector.ingest(batch_body("ws-1", before.head_hash, events, checkpoint))
    finally:
        collector.close()
    assert (result_.status, result_.stored) == (200, 3), result_.message
    after = verify_store(store)
    assert after.ok, after.problem_lines()
    assert store.stats()["events"] == sum(
        row[ROWS["tables"]["agents"]["columns"].index("events_total")]
        for row in ROWS["tables"]["agents"]["rows"]) + 3


def test_opening_a_current_store_changes_nothing(
        databases: Callable[[], Database], opened: list[Store]) -> None:
    database = databases()
    open_(database, opened).close()
    before = database.query("SELECT version, applied_at, note FROM schema_version")
    open_(database, opened)
    assert database.query("SELECT version, applied_at, note FROM schema_version") == before


def test_a_store_newer_than_the_code_is_refused(
        databases: Callable[[], Database], opened: list[Store]) -> None:
    database = databases()
    open_(database, opened).close()
    db = database.connect()
    try:
        db.execute("INSERT INTO schema_version (version, applied_at, note) VALUES "
                   "(99, 'later', 'a release from the future')")
    finally:
        db.close()
    with pytest.raises(StoreError, match=r"schema is version 99, this release of floor-agent "
                                         r"knows versions up to 6"):
        open_store(database.url)


def test_a_failed_upgrade_leaves_the_store_as_it_was(
        databases: Callable[[], Database], opened: list[Store],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The steps run in one transaction: a step that fails takes every change back (the
    version table step 2 made, the late columns), and the store stays a version-1 store."""
    database = databases()
    database.make_v1()
    database.execute("ALTER TABLE alerts DROP COLUMN source")
    before = database.schema()

    def broken(cur: Any, dialect: migrations.Dialect) -> None:
        raise RuntimeError("the last step failed")

    last = migrations.SCHEMA_VERSION + 1
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", last)
    monkeypatch.setattr(migrations, "STEPS",
                        (*migrations.STEPS, migrations.Step(last, "breaks", broken)))
    with pytest.raises(RuntimeError, match="the last step failed"):
        open_store(database.url)
    assert database.schema() == before
    assert database.version() == 1


def test_an_unversioned_store_of_an_older_release_gains_what_it_lacked(
        databases: Callable[[], Database], opened: list[Store]) -> None:
    """A store from before the late columns and the dashboard's tables: brought to version 1
    first (as those releases did at every open), then upgraded; the same schema as a new one."""
    new, old = databases(), databases()
    open_(new, opened)
    db = old.connect()
    try:
        db.execute(schema.table("agents").create(old.dialect).replace(
            ",\n    anchor_endorsement " + schema.TEXT.__getattribute__(old.dialect), ""))
        db.execute("INSERT INTO agents (agent_id, role, public_key, enrolled_at, head_hash) "
                   "VALUES ('ws-9', 'workstation', 'key', 'then', 'x')".replace(
                       "'x'", "X'00'" if old.path else "'\\x00'::bytea"))
    finally:
        db.close()
    open_(old, opened)
    assert old.schema() == new.schema()
    assert old.query("SELECT agent_id, anchor_endorsement FROM agents") == [("ws-9", None)]


def test_an_upgraded_store_notifies_from_its_newest_alert_on(
        databases: Callable[[], Database], opened: list[Store]) -> None:
    """Step 3 (the notifications' outbox) starts the notifier after the alerts the store
    holds: an upgrade neither notifies nor escalates the past; a new store starts at 0."""
    old, new = databases(), databases()
    old.make_v1()
    store = open_(old, opened)
    newest = max(row[0] for row in old.query("SELECT id FROM alerts"))
    assert newest > 0
    assert store.notify_first_alert() == newest
    assert store.unplanned_alerts() == []  # step 6 marks what the notifier had passed
    assert open_(new, opened).notify_first_alert() == 0


def test_a_second_open_row_of_one_fingerprint_is_closed_by_step_6(
        databases: Callable[[], Database], opened: list[Store]) -> None:
    """Step 6 makes one open row per fingerprint a unique index. A store holding two (none
    should: one writer made them) is not refused: the newer is closed with a note naming why,
    the oldest stays open and counts what comes next."""
    old = databases()
    old.make_v1()
    db = old.connect()
    try:
        db.execute("INSERT INTO alerts (id, fingerprint, kind, severity, agent_id, seq, detail, "
                   "created_at, last_seen_at, count) SELECT 99, fingerprint, kind, severity, "
                   "agent_id, seq, detail, created_at, last_seen_at, count FROM alerts "
                   "WHERE id = 1")
        if old.path is not None:
            db.commit()
    finally:
        db.close()
    store = open_(old, opened)
    rows = {a["id"]: a for a in store.list_alerts() if a["id"] in (1, 99)}
    assert rows[1]["acked_at"] is None
    assert rows[99]["acked_by"] == "floor-agent schema 6"
    assert "second open row" in rows[99]["ack_comment"]
    again = AlertDraft("usb.blocked", "warning", "ws-1", "usb.blocked: /dev/sdz", 20,
                       subject="/dev/sdz")
    assert again.fingerprint == ROWS["tables"]["alerts"]["rows"][0][1]
    store.add_alerts([again], utc_timestamp())
    assert {a["id"]: a["count"] for a in store.list_alerts()
            if a["id"] in (1, 99)} == {1: 2, 99: 1}
