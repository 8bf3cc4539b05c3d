"""The trust anchor (issue 15, items 9 and 10): forged backups and stores, rows nobody signed.

Attacks first, as someone with the store's files would mount them, against real collector
processes on SQLite and PostgreSQL, then what `collector verify` / `collector restore` say.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from attack_clients import enrolled
from collector_process import CollectorProcess
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dashboard_clients import add_user, browser, csrf_of, login
from postgres_server import PostgresServer, postgres_server  # noqa: F401  (fixture)

from floor_agent.audit.forwarder import pinned_client
from floor_agent.audit.keys import public_key_b64
from floor_agent.collector import anchor, backup
from floor_agent.collector.ingest import SEVERITY_RANK
from floor_agent.collector.verify import verify_agent, verify_store
from floor_agent.common.files import file_sha256
from floor_agent.protocol.checkpoint import GENESIS_HASH, Checkpoint, event_hash
from floor_agent.protocol.event import AuditEvent
from floor_agent.store import open_store
from floor_agent.store.interface import Store
from floor_agent.store.sql import INSERT_EVENT

# --------------------------------------------------------------------------- helpers

def cli(config: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """`floor-agent collector ...` as an admin runs it."""
    return subprocess.run([sys.executable, "-m", "floor_agent.cli", "collector", *argv,
                           "--config", str(config)], capture_output=True, text=True,
                          timeout=120)


def backed_up_site(tmp_path: Path, agent_id: str, events: int
                   ) -> tuple[CollectorProcess, backup.BackupResult]:
    """A collector (stopped again) with one agent that delivered `events`, and its backup."""
    source = CollectorProcess(tmp_path / "site", backup={"directory": str(tmp_path / "bk")})
    source.start()
    try:
        with pinned_client(source.url, source.ca, 10) as client:
            enrolled(source, client, tmp_path, agent_id, events)
        made = backup.backup(source.config)
    finally:
        source.stop()
    assert made.ok and made.path is not None, made.reason
    return source, made


def events_of(store: Store, agent_id: str) -> list[tuple[AuditEvent, bytes]]:
    return [(AuditEvent(r["agent_id"], r["seq"], r["boot_id"], r["ts"], r["kind"],
                        r["severity"], r["subject"], r["data"]), digest)
            for r, digest in store.chain_events(agent_id, -10, 10**9)]


def forge(store: Store, agent_id: str, seq: int) -> str:
    """What the issue did to the file: event `seq` changed, every later hash recomputed, the
    agent's key replaced by a new one that re-signs the checkpoint over the new head. Returns
    the new head hash (hex), for the attacker to put in a backup manifest too."""
    rows = events_of(store, agent_id)
    checkpoint = store.checkpoint_of(agent_id)
    assert checkpoint is not None and rows[-1][0].seq == checkpoint.seq
    key = Ed25519PrivateKey.generate()
    current, hashes = GENESIS_HASH, []
    for event, _ in rows:
        if event.seq == seq:
            event = AuditEvent(event.agent_id, event.seq, event.boot_id, event.ts, event.kind,
                               event.severity, "nothing happened here", {"forged": True})
        current = event_hash(current, event)
        hashes.append((current, agent_id, event.seq))
    signed = Checkpoint(agent_id, checkpoint.seq, current, checkpoint.ts,
                        checkpoint.boot_id).sign(key)
    with store._write() as cur:  # the attacker writes the file, not through the collector
        cur.execute(store._q("UPDATE events SET subject = 'nothing happened here', data = ? "
                             "WHERE agent_id = ? AND seq = ?"),
                    (json.dumps({"forged": True}), agent_id, seq))
        for update in hashes:
            cur.execute(store._q("UPDATE events SET hash = ? WHERE agent_id = ? AND seq = ?"),
                        update)
        cur.execute(store._q("UPDATE agents SET public_key = ?, head_hash = ?, "
                             "checkpoint_hash = ?, checkpoint_sig = ? WHERE agent_id = ?"),
                    (public_key_b64(key), current, current, signed.signature, agent_id))
    # the forgery is good enough for the checks from before the anchor: the chain verifies
    # against the key the store now holds
    assert verify_agent(store, agent_id).ok
    return current.hex()


def insert_row(store: Store, agent_id: str, seq: int, prev: bytes) -> bytes:
    """A fabricated event, correctly chained on `prev`; its hash."""
    event = AuditEvent(agent_id, seq, "b" * 32, "2026-12-01T00:00:00.000000Z", "usb.allowed",
                       "info", "nothing to see", {"port": "1-1"})
    digest = event_hash(prev, event)
    with store._write() as cur:
        cur.execute(store._q(INSERT_EVENT), (
            agent_id, seq, event.boot_id, event.ts, event.kind, event.severity,
            SEVERITY_RANK[event.severity], event.subject, json.dumps(event.data), digest,
            event.ts))
    return digest


def fix_manifest(backup_file: Path, agent_id: str, head_hash: str) -> dict[str, Any]:
    """The manifest "fixed" as the issue did: the new sha256 and the forged head."""
    path = backup.manifest_path(backup_file)
    manifest = json.loads(path.read_text())
    manifest["sha256"] = file_sha256(backup_file)
    manifest["agents"][agent_id]["head_hash"] = head_hash
    path.write_text(json.dumps(manifest))
    return manifest


# --------------------------------------------------------------------------- item 9: forgeries

def test_forged_live_store_fails_verify_naming_the_agent(
        collector: CollectorProcess, client: httpx.Client, tmp_path: Path) -> None:
    enrolled(collector, client, tmp_path, "ws-genuine", 5)
    enrolled(collector, client, tmp_path, "ws-forged", 12)
    collector.stop()
    store = collector.store()
    try:
        forge(store, "ws-forged", 4)
    finally:
        store.close()
    result = cli(collector.config_path, "verify")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ws-forged: BROKEN" in result.stdout
    assert "endorsement: public key is not the one anchor" in result.stdout
    assert "ws-genuine: intact" in result.stdout
    store = collector.store()
    try:  # kept for the integrity page and the API's chain_state
        stored = store.list_verifications()
    finally:
        store.close()
    assert stored["ws-forged"]["ok"] is False and stored["ws-genuine"]["ok"] is True
    assert "endorsement" in stored["ws-forged"]["problems"][0]


def test_forged_sqlite_backup_is_refused_naming_the_agent(tmp_path: Path) -> None:
    source, made = backed_up_site(tmp_path, "ws-forged", 12)
    # the attack, on a copy the attacker can write: edit, re-chain, new key, manifest fixed
    work = tmp_path / "work.sqlite3"
    shutil.copyfile(made.path, work)
    forged = open_store(f"sqlite:///{work}")
    try:
        head = forge(forged, "ws-forged", 7)
    finally:
        forged.close()
    shutil.copyfile(work, made.path)
    manifest = fix_manifest(made.path, "ws-forged", head)
    assert manifest["sha256"] == file_sha256(made.path)  # sha256 and heads agree

    target = CollectorProcess(tmp_path / "target",
                              anchor_dir=str(anchor.anchor_dir(source.config.collector)))
    result = cli(target.config_path, "restore", "--from", str(made.path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "restored" not in result.stdout
    assert "ws-forged: endorsement" in result.stderr
    assert "manifest signature does not verify" in result.stderr
    store = target.store()
    try:
        assert store.stats()["events"] == 0  # nothing restored
    finally:
        store.close()
    # the manifest's signature stripped (as if from before the anchor): refused as unsigned,
    # and even when the admin accepts unanchored backups the swapped key is named
    path = backup.manifest_path(made.path)
    unsigned = json.loads(path.read_text())
    del unsigned[anchor.MANIFEST_FIELD]
    path.write_text(json.dumps(unsigned))
    result = cli(target.config_path, "restore", "--from", str(made.path))
    assert result.returncode == 1 and "not signed by the collector's anchor" in result.stderr
    result = cli(target.config_path, "restore", "--from", str(made.path), "--allow-unanchored")
    assert result.returncode == 1 and "ws-forged: endorsement" in result.stderr


@pytest.mark.postgres
def test_forged_postgresql_backup_is_refused_naming_the_agent(
        postgres_server: PostgresServer, tmp_path: Path) -> None:  # noqa: F811
    source = CollectorProcess(tmp_path / "pg-site", postgres_server.new_database(),
                              backup={"directory": str(tmp_path / "pg-bk")})
    source.start()
    try:
        with pinned_client(source.url, source.ca, 10) as client:
            enrolled(source, client, tmp_path, "ws-forged", 12)
        made = backup.backup(source.config)
    finally:
        source.stop()
    assert made.ok and made.path is not None, made.reason
    # the attacker restores the dump somewhere, forges, dumps it again
    scratch = postgres_server.new_database()
    backup.pg_restore(scratch, made.path)
    forged = open_store(scratch)
    try:
        head = forge(forged, "ws-forged", 3)
    finally:
        forged.close()
    redone = tmp_path / "redone.pgdump"
    backup.pg_dump(scratch, redone)
    shutil.copyfile(redone, made.path)
    fix_manifest(made.path, "ws-forged", head)

    target = CollectorProcess(tmp_path / "pg-target", postgres_server.new_database(),
                              anchor_dir=str(anchor.anchor_dir(source.config.collector)))
    result = cli(target.config_path, "restore", "--from", str(made.path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ws-forged: endorsement" in result.stderr
    assert "manifest signature does not verify" in result.stderr


def test_edited_manifest_and_missing_anchor_key(tmp_path: Path) -> None:
    source = CollectorProcess(tmp_path / "site", backup={"directory": str(tmp_path / "bk")})
    made = backup.backup(source.config)
    assert made.ok and made.path is not None, made.reason
    # the manifest edited, the file untouched: sha256 and chains still agree with it
    path = backup.manifest_path(made.path)
    manifest = json.loads(path.read_text())
    manifest["created"] = "2026-01-01T00:00:00.000000Z"
    path.write_text(json.dumps(manifest))
    assert manifest["sha256"] == file_sha256(made.path)
    target = CollectorProcess(tmp_path / "target",
                              anchor_dir=str(anchor.anchor_dir(source.config.collector)))
    result = cli(target.config_path, "restore", "--from", str(made.path))
    assert result.returncode == 1 and "manifest signature does not verify" in result.stderr

    # the anchor gone from disk: every command says so and where, nothing runs unchecked
    pinned = public_key_b64(anchor.trusted_key(source.config).key)
    shutil.rmtree(anchor.anchor_dir(source.config.collector))
    for argv in (["verify"], ["restore", "--from", str(made.path), "--force"],
                 ["anchor", "show"]):
        result = cli(source.config_path, *argv)
        assert result.returncode == 2, (argv, result.stdout, result.stderr)
        assert "no anchor public key" in result.stderr and "collector init" in result.stderr
    result = cli(source.config_path, "backup")
    assert result.returncode == 2 and "no anchor key" in result.stderr
    result = subprocess.run([sys.executable, "-m", "floor_agent.cli", "collector", "run",
                             "--config", str(source.config_path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "no anchor key" in result.stderr
    # an auditor's pinned key still checks the restore, without the local anchor.pub
    result = cli(source.config_path, "restore", "--from", str(made.path), "--force",
                 "--anchor-key", pinned)
    assert result.returncode == 1 and "manifest signature does not verify" in result.stderr


def test_old_release_store_is_reported_then_endorsed_once(
        collector: CollectorProcess, client: httpx.Client, tmp_path: Path) -> None:
    enrolled(collector, client, tmp_path, "ws-old", 6)
    enrolled(collector, client, tmp_path, "ws-older", 4)
    collector.stop()
    # the store as the release before the anchor left it: no endorsement column, no anchor
    store = collector.store()
    try:
        with store._write() as cur:
            cur.execute("ALTER TABLE agents DROP COLUMN anchor_endorsement")
    finally:
        store.close()
    shutil.rmtree(anchor.anchor_dir(collector.config.collector))
    result = cli(collector.config_path, "verify")
    assert result.returncode == 2 and "collector init" in result.stderr

    result = cli(collector.config_path, "init")  # the upgrade: makes the anchor
    assert result.returncode == 0 and "trust anchor" in result.stdout, result.stderr
    result = cli(collector.config_path, "verify")
    assert result.returncode == 1
    assert "ws-old: UNENDORSED" in result.stdout and "ws-older: UNENDORSED" in result.stdout
    assert "endorse-existing" in result.stdout

    # a chain that does not verify: nothing is endorsed
    store = collector.store()
    try:
        with store._write() as cur:
            cur.execute(store._q("UPDATE events SET subject = 'edited' WHERE agent_id = ? "
                                 "AND seq = 2"), ("ws-older",))
    finally:
        store.close()
    result = cli(collector.config_path, "anchor", "endorse-existing")
    assert result.returncode == 1 and "ws-older: altered at seq 2" in result.stderr
    store = collector.store()
    try:
        identity = store.agent_identity("ws-old")
        assert identity is not None and identity["endorsement"] is None
        with store._write() as cur:  # put back: the chains verify again
            cur.execute(store._q("UPDATE events SET subject = 'item 1' WHERE agent_id = ? "
                                 "AND seq = 2"), ("ws-older",))
    finally:
        store.close()

    result = cli(collector.config_path, "anchor", "endorse-existing")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "endorsed ws-old (workstation)" in result.stdout
    assert "endorsed ws-older (workstation)" in result.stdout
    result = cli(collector.config_path, "verify")
    assert result.returncode == 0, result.stdout
    assert "ws-old: intact" in result.stdout and "ws-older: intact" in result.stdout
    # once endorsed, a later swap of the key is caught
    store = collector.store()
    try:
        forge(store, "ws-old", 2)
    finally:
        store.close()
    result = cli(collector.config_path, "verify")
    assert result.returncode == 1 and "ws-old: BROKEN" in result.stdout


# --------------------------------------------------------------------------- item 10

def test_verify_reports_rows_past_the_head_and_orphans(
        collector: CollectorProcess, client: httpx.Client, tmp_path: Path) -> None:
    enrolled(collector, client, tmp_path, "ws-a", 5)
    enrolled(collector, client, tmp_path, "ws-b", 3)
    store = collector.store()
    try:
        # a fabricated row chained correctly on ws-a's head: what verify used to call intact
        rows = events_of(store, "ws-a")
        first = insert_row(store, "ws-a", 6, rows[-1][1])
        insert_row(store, "ws-a", 7, first)
        # ws-b: a row past the signed checkpoint, with the stored head raised to cover it
        head = insert_row(store, "ws-b", 4, events_of(store, "ws-b")[-1][1])
        with store._write() as cur:
            cur.execute(store._q("UPDATE agents SET head_seq = 4, head_hash = ? "
                                 "WHERE agent_id = ?"), (head, "ws-b"))
        # rows of an agent id that never enrolled
        prev = GENESIS_HASH
        for seq in (1, 2, 3):
            prev = insert_row(store, "ghost-01", seq, prev)
    finally:
        store.close()
    api_key = collector.api_key("auditor")
    served = client.get("/api/v1/events", params={"agent_id": "ghost-01"},
                        headers={"authorization": f"Bearer {api_key}"}).json()["events"]
    assert len(served) == 3  # the API serves them: verify must not ignore them

    result = cli(collector.config_path, "verify")
    assert result.returncode == 1
    out = result.stdout
    assert "ws-a: BROKEN" in out and "inserted at seq 6: seq 6..7 (2 rows) past the signed " \
                                     "head (seq 5) and the stored head (seq 5)" in out
    assert "ws-b: BROKEN" in out and "unsigned at seq 4" in out
    assert "ghost-01: ORPHAN: orphan rows at seq 1..3 (3 rows)" in out
    store = collector.store()
    try:
        stored = store.list_verifications()
        checked = verify_store(store, anchor.trusted_key(collector.config).key)
    finally:
        store.close()
    assert stored["ws-a"]["ok"] is False and "inserted" in stored["ws-a"]["problems"][0]
    assert stored["ghost-01"]["ok"] is False
    assert [o.agent_id for o in checked.orphans] == ["ghost-01"]
    assert {a.agent_id: a.endorsement for a in checked.agents}["ws-a"] == anchor.VALID


def test_newest_rows_deleted_with_their_checkpoint_show_against_the_seal(
        collector: CollectorProcess, client: httpx.Client, tmp_path: Path) -> None:
    maker = enrolled(collector, client, tmp_path, "ws-cut", 5)
    enrolled(collector, client, tmp_path, "ws-gone", 2)
    store = collector.store()
    try:
        older = store.checkpoint_of("ws-cut")  # what an attacker watching the file keeps
        older_head = store.get_agent("ws-cut")
    finally:
        store.close()
    assert older is not None and older_head is not None
    maker.emit(5)
    response = client.post("/api/v1/ingest", content=maker.body())
    assert response.status_code == 200 and response.json()["acked_seq"] == 10
    result = cli(collector.config_path, "verify")  # seals the heads it verified
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ws-cut: intact: 10 events" in result.stdout
    collector.stop()

    # the attack: rows 6..10 deleted, the older checkpoint and head put back; another agent
    # removed with all its rows
    store = collector.store()
    try:
        with store._write() as cur:
            cur.execute(store._q("DELETE FROM events WHERE agent_id = ? AND seq > 5"),
                        ("ws-cut",))
            cur.execute(store._q(
                "UPDATE agents SET head_seq = ?, head_hash = ?, checkpoint_seq = ?, "
                "checkpoint_hash = ?, checkpoint_ts = ?, checkpoint_boot_id = ?, "
                "checkpoint_sig = ? WHERE agent_id = ?"),
                (older_head.head_seq, older_head.head_hash, older.seq, older.hash, older.ts,
                 older.boot_id, older.signature, "ws-cut"))
            for table in ("events", "agents"):
                cur.execute(store._q(f"DELETE FROM {table} WHERE agent_id = ?"), ("ws-gone",))
        # what the checks from before the seal say: a shorter chain, intact
        assert verify_agent(store, "ws-cut", anchor.trusted_key(collector.config).key).ok
    finally:
        store.close()
    result = cli(collector.config_path, "verify")
    assert result.returncode == 1
    assert "ws-cut: BROKEN" in result.stdout and "rollback at seq 10" in result.stdout
    assert "holds head seq 5" in result.stdout
    assert "STORE: ws-gone: sealed at seq 2" in result.stdout
    # a forged seal is no way out
    path = anchor.anchor_dir(collector.config.collector) / anchor.SEAL_FILE
    seal = json.loads(path.read_text())
    seal["heads"]["ws-cut"]["head_seq"] = 5
    path.write_text(json.dumps(seal))
    result = cli(collector.config_path, "verify")
    assert result.returncode == 1 and "head seal signature does not verify" in result.stdout


def test_the_seal_only_moves_forward() -> None:
    old = {"a": {"head_seq": 10, "head_hash": "aa"}, "b": {"head_seq": 3, "head_hash": "bb"}}
    new = {"a": {"head_seq": 4, "head_hash": "a4"}, "b": {"head_seq": 7, "head_hash": "b7"},
           "c": {"head_seq": 1, "head_hash": "c1"}}
    assert anchor.merge_heads(old, new) == {"a": {"head_seq": 10, "head_hash": "aa"},
                                            "b": {"head_seq": 7, "head_hash": "b7"},
                                            "c": {"head_seq": 1, "head_hash": "c1"}}


def test_dashboard_reverify_checks_keys_against_the_anchor(
        collector: CollectorProcess, client: httpx.Client, tmp_path: Path) -> None:
    enrolled(collector, client, tmp_path, "ws-swapped", 6)
    store = collector.store()
    try:  # the key swapped while the collector runs: the stored chain still verifies with it
        forge(store, "ws-swapped", 2)
    finally:
        store.close()
    add_user(collector, "audrey", "auditor")
    with browser(collector) as web:
        assert login(web, "audrey").status_code == 303
        page = web.get("/integrity")
        done = web.post("/integrity/verify", data={"csrf_token": csrf_of(page.text),
                                                   "agent": "ws-swapped"})
    assert done.status_code == 200
    store = collector.store()
    try:
        stored = store.list_verifications()["ws-swapped"]
    finally:
        store.close()
    assert stored["ok"] is False and stored["by_user"] == "audrey"
    assert "endorsement" in stored["problems"][0]


def test_backup_from_before_the_anchor_restores_only_when_accepted(tmp_path: Path) -> None:
    source, made = backed_up_site(tmp_path, "ws-was", 4)
    # what the release before the anchor wrote: no endorsements, an unsigned manifest
    db = sqlite3.connect(made.path)
    db.execute("UPDATE agents SET anchor_endorsement = NULL")
    db.commit()
    db.close()
    path = backup.manifest_path(made.path)
    manifest = json.loads(path.read_text())
    del manifest[anchor.MANIFEST_FIELD]
    manifest["sha256"] = file_sha256(made.path)
    path.write_text(json.dumps(manifest))

    target = CollectorProcess(tmp_path / "target",
                              anchor_dir=str(anchor.anchor_dir(source.config.collector)))
    result = cli(target.config_path, "restore", "--from", str(made.path))
    assert result.returncode == 1 and "--allow-unanchored" in result.stderr
    result = cli(target.config_path, "restore", "--from", str(made.path), "--allow-unanchored")
    assert result.returncode == 0, result.stdout + result.stderr
    result = cli(target.config_path, "verify")  # restored, but not vouched for
    assert result.returncode == 1 and "ws-was: UNENDORSED" in result.stdout
    assert cli(target.config_path, "anchor", "endorse-existing").returncode == 0
    result = cli(target.config_path, "verify")
    assert "ws-was: intact" in result.stdout, result.stdout
