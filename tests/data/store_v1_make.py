"""Make tests/data/store_v1_*.sql and store_v1_rows.json with the release whose store had no
schema version (floor_agent at c724cbd): its DDL as it ran it, and a store it wrote through
its own API (ingest of two agents' signed chains, alerts, a quarantined forged row,
credentials, keys, tokens, users, sessions, snapshots, a verification).

Run once, against an export of that release, never against the current tree:
    git archive c724cbd | tar -x -C /tmp/release
    PYTHONPATH=/tmp/release python tests/data/store_v1_make.py tests/data

(The imports name that release's modules: floor_agent.collector.store and its siblings.)
"""
# ruff: noqa: I001

from __future__ import annotations

import base64
import sqlite3
import sys
import tempfile
from datetime import date, time
from pathlib import Path

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from floor_agent.access.model import AccessLevel, Card, Person, Template, TimeWindow
from floor_agent.audit.chain import Checkpoint
from floor_agent.audit.forwarder import batch_body
from floor_agent.audit.keys import public_key_b64
from floor_agent.audit.spool import Spool
from floor_agent.collector import store_postgres, store_sql, store_sqlite
from floor_agent.collector.core import Collector, create_api_key, create_token
from floor_agent.collector.store import open_store
from floor_agent.collector.verify import record, verify_store

NOW = "2026-12-06T12:00:00.000000Z"


def send(collector: Collector, spool: Spool, key: Ed25519PrivateKey, agent_id: str) -> None:
    acked, pending = spool.batch(5000)
    last = pending[-1] if pending else acked
    checkpoint = Checkpoint(agent_id, last.seq, last.hash, spool.next_checkpoint_ts(),
                            spool.boot_id).sign(key)
    result = collector.ingest(batch_body(agent_id, acked.hash,
                                         [(p.body, p.hash) for p in pending], checkpoint))
    assert result.status == 200, result.message
    spool.acknowledge(result.acked_seq)


def main(out: Path) -> None:
    sqlite_ddl = store_sqlite.SCHEMA + "".join(
        s + ";\n" for s in store_sql.missing_columns({t: set() for t, _, _ in
                                                      store_sql.ADDED_COLUMNS}))
    postgres_ddl = (store_postgres.SCHEMA + "".join(
        s + ";\n" for s in store_sql.missing_columns(
            {t: set() for t, _, _ in store_sql.ADDED_COLUMNS}, text='TEXT COLLATE "C"'))
        + store_postgres.SCHEMA_MARK_TABLE.strip() + ";\n"
        + store_postgres.SCHEMA_MARK.replace("%s", f"'{store_postgres.SCHEMA_DIGEST}'") + ";\n")
    header = ("-- The collector store's schema before it had a version (\"version 1\"), "
              "exactly as\n-- floor_agent c724cbd created it ({}): frozen, never edit "
              "(tests/data/store_v1_make.py).\n")
    (out / "store_v1_sqlite.sql").write_text(header.format("SQLite") + sqlite_ddl)
    (out / "store_v1_postgres.sql").write_text(header.format("PostgreSQL") + postgres_ddl)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = open_store(f"sqlite:///{root}/collector.db")
        collector = Collector(store)
        keys = {}
        for agent_id, role in (("ws-1", "workstation"), ("door-1", "door")):
            key = Ed25519PrivateKey.generate()
            keys[agent_id] = key
            token = create_token(store, role, 600)
            collector.enroll(token, agent_id, role, public_key_b64(key), f"{agent_id}.site")
            spool = Spool(root / f"{agent_id}.spool", agent_id)
            if agent_id == "ws-1":
                spool.emit_many([("usb.allowed", f"/dev/sd{chr(97 + i)}", "info",
                                  {"vid": "0781", "n": i}) for i in range(12)])
                spool.emit("usb.blocked", "/dev/sdz", "warning", vid="dead")
                spool.emit("usb.locked_down", "usbguard", "notice", rules=3)
                spool.emit("net.breach", "eth0", "critical", probe="1.1.1.1")
                send(collector, spool, key, agent_id)
                # a row written into the store above the head: the next batch quarantines it
                with sqlite3.connect(root / "collector.db") as db:
                    db.execute(store_sql.INSERT_EVENT, ("ws-1", 16, "boot", NOW, "usb.allowed",
                                                        "info", 1, "forged", "{}", b"\1" * 32,
                                                        NOW))
                spool.emit_many([("usb.allowed", "/dev/sdb", "info", {"n": i})
                                 for i in range(5)])
                send(collector, spool, key, agent_id)
            else:
                spool.emit_many([("door.opened", "front", "info", {"door_id": "front"}),
                                 ("door.closed", "front", "info", {"door_id": "front"}),
                                 ("door.forced", "back", "critical", {"door_id": "back"}),
                                 ("door.granted", "front", "info",
                                  {"door_id": "front", "person_id": "p-1"})])
                send(collector, spool, key, agent_id)
                spool.emit("door.held_open", "back", "warning", door_id="back")
                send(collector, spool, key, agent_id)
        collector.flag_stale_checkpoints(0)
        create_api_key(store, "report")
        create_api_key(store, "old", expires_at="2027-01-01T00:00:00.000000Z")
        store.revoke_api_key("old", NOW)
        create_token(store, "cctv", 600)
        store.put_level(AccessLevel("staff", frozenset({"front", "back"}),
                                    (TimeWindow(frozenset({0, 1, 2, 3, 4}), time(7),
                                                time(19)),)), "admin", NOW)
        store.put_person(Person("p-1", "Ann Example", True, ("staff",), frozenset({2})),
                         "admin", NOW)
        store.put_person(Person("p-2", "Bob Example", True, ("staff",)), "admin", NOW)
        store.put_card(Card("04A224B2C35E80", "p-1"), "admin", NOW)
        store.put_card(Card("04B0000000000", "p-2", keyed=False), "admin", NOW)
        store.add_template(Template("t-1", "p-1", 1, b"\0sealed-bytes\xff" * 4), "admin", NOW)
        store.add_template(Template("t-2", "p-2", 3, b"\1other" * 5), "admin", NOW)
        store.put_holiday(date(2026, 12, 25), "Christmas Day", "admin", NOW)
        store.revoke_person("p-2", "admin", NOW)
        store.add_user("ann", "admin", "$argon2id$v=19$fake", False, NOW)
        store.add_session("session-hash", "ann", "csrf-token", NOW)
        store.count_login_failure("mallory", False, NOW, 5, NOW)
        store.put_snapshot("cam-1", "gate", b"\xff\xd8\xff\xe0jpeg\xff\xd9", 640, 480, NOW)
        result = verify_store(store)
        assert result.ok, result.problem_lines()
        record(store, result, "ann", NOW)
        assert store.list_quarantine(), "the forged row was not quarantined"
        collector.close()
        store.close()

        db = sqlite3.connect(root / "collector.db")
        tables = [name for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid")]
        dump: dict[str, object] = {
            "made_by": "floor_agent c724cbd, through its Store API (tests/data/store_v1_make.py)",
            "agent_keys": {a: base64.b64encode(k.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                serialization.NoEncryption())).decode() for a, k in keys.items()},
            "tables": {}}
        for table in tables:
            cur = db.execute(f"SELECT * FROM {table} ORDER BY rowid")
            columns = [c[0] for c in cur.description]
            rows = [[{"hex": v.hex()} if isinstance(v, bytes) else v for v in row]
                    for row in cur.fetchall()]
            dump["tables"][table] = {"columns": columns, "rows": rows}  # type: ignore[index]
        (out / "store_v1_rows.json").write_bytes(orjson.dumps(dump, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
