"""`collector backup` / `collector restore`: online, verified, round trip, refusals, pruning.

Real collector processes on loopback, real agents, real PostgreSQL 15 with pg_dump/pg_restore.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from collector_process import CollectorProcess, wait_for_kind
from postgres_server import PostgresServer, postgres_server  # noqa: F401  (fixture)

from floor_agent.audit.agent import enroll
from floor_agent.audit.spool import Spool
from floor_agent.collector import anchor, backup, backup_cli, self_audit
from floor_agent.common.files import file_sha256
from floor_agent.store.interface import Store

RUNNER = str(Path(__file__).with_name("agent_runner.py"))


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="floor-agent collector")
    backup_cli.add_parsers(parser.add_subparsers(dest="action", required=True))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def chains(store: Store, heads: dict[str, Any]) -> dict[str, list[tuple[dict, bytes]]]:
    """Every agent's events up to the given heads, in seq order, with their stored hashes."""
    out = {}
    for agent, head in heads.items():
        rows = store.chain_events(agent, 1, int(head["head_seq"]))
        out[agent] = rows
    return out


def same_anchor(collector: CollectorProcess) -> Path:
    """The trust anchor's directory of a collector, for another to restore its backups."""
    return anchor.anchor_dir(collector.config.collector)


def own_events(collector: CollectorProcess, kind: str) -> list[dict[str, Any]]:
    """What the collector's own spool holds of one kind (pending delivery or not yet sent)."""
    audit = self_audit.self_audit_config(collector.config)
    spool = Spool(audit.state_dir / "spool.db", self_audit.agent_id(collector.config))
    try:
        _, pending = spool.batch(10_000)
        bodies = [json.loads(p.body) for p in pending]
    finally:
        spool.close()
    return [b for b in bodies if b["kind"] == kind]


def fill(collector: CollectorProcess, name: str, count: int) -> None:
    """An enrolled agent process that emits `count` events and stays until they are stored."""
    config = collector.agent_config(name, batch_max_events=200)
    enroll(config.audit, "workstation", collector.token(), None)
    result = subprocess.run([sys.executable, RUNNER, str(collector.root / f"{name}.yaml"),
                             "emit", str(count)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "drained" in result.stdout, result.stderr[-2000:]


@pytest.fixture
def running(tmp_path: Path) -> Iterator[CollectorProcess]:
    proc = CollectorProcess(tmp_path / "site", backup={"directory": str(tmp_path / "backups"),
                                                       "keep": 3})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def test_online_backup_while_ingesting_restores_identical_chains(
        running: CollectorProcess, tmp_path: Path) -> None:
    config = running.agent_config("ws-busy", batch_max_events=50)
    enroll(config.audit, "workstation", running.token(), None)
    agent = subprocess.Popen([sys.executable, RUNNER, str(running.root / "ws-busy.yaml"),
                              "forever"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True)
    results = []
    try:
        assert agent.stdout is not None
        for _ in range(300):  # the agent is well under way before the first copy
            agent.stdout.readline()
        for _ in range(2):
            results.append(backup.backup(running.config))
            for _ in range(200):
                agent.stdout.readline()
    finally:
        agent.kill()
        agent.wait()
    for result in results:
        assert result.ok and result.verified, result.reason
        assert result.path is not None and result.path.stat().st_mode & 0o777 == 0o600
        assert result.path.parent.stat().st_mode & 0o777 == 0o700
        assert file_sha256(result.path) == result.sha256
    first, second = (json.loads(r.manifest.read_text()) for r in results if r.manifest)
    # taken while events kept arriving: the second copy is further along, both are consistent
    assert 0 < first["agents"]["ws-busy"]["head_seq"] < second["agents"]["ws-busy"]["head_seq"]
    assert first["events"] == results[0].events

    live = running.store()
    try:
        note = wait_for_kind(live, self_audit.agent_id(running.config), "collector.backup")
        assert note["severity"] == "notice" and note["data"]["verified"] is True
        assert note["data"]["sha256"] in (results[0].sha256, results[1].sha256)
        running.stop()
        expected = chains(live, second["agents"])
    finally:
        live.close()

    # restore into another, freshly initialised (empty) collector, given the first one's trust
    # anchor (anchor.key is restored before the store, as on a replacement host)
    other = CollectorProcess(tmp_path / "restored", anchor_dir=str(same_anchor(running)))
    assert run_cli("restore", "--config", str(other.config_path), "--from",
                   str(results[1].path)) == 0
    restored = other.store()
    try:
        assert chains(restored, second["agents"]) == expected
        assert {a["agent_id"]: a["head_hash"] for a in restored.list_agents()} == {
            agent: head["head_hash"] for agent, head in second["agents"].items()}
    finally:
        restored.close()
    (note,) = own_events(other, "collector.restore")
    assert note["severity"] == "notice" and note["data"]["ok"] is True


def test_restore_refuses_a_running_collector_and_a_non_empty_store(
        running: CollectorProcess) -> None:
    fill(running, "ws-a", 30)
    result = backup.backup(running.config)
    assert result.ok and result.path is not None, result.reason
    # while `collector run` listens: refused, and the running collector delivers the record
    assert run_cli("restore", "--config", str(running.config_path), "--from",
                   str(result.path)) == 2
    live = running.store()
    try:
        note = wait_for_kind(live, self_audit.agent_id(running.config), "collector.restore")
    finally:
        live.close()
    assert note["data"]["refused"] is True and "running" in note["data"]["reason"]
    assert note["severity"] == "warning"
    running.stop()
    # the store holds events: only with --force
    assert run_cli("restore", "--config", str(running.config_path), "--from",
                   str(result.path)) == 2
    (refusal,) = own_events(running, "collector.restore")
    assert refusal["data"]["refused"] is True and "--force" in refusal["data"]["reason"]
    assert run_cli("restore", "--config", str(running.config_path), "--from",
                   str(result.path), "--force") == 0
    # no manifest beside the file: bad input, nothing touched
    lone = result.path.with_name("copy.sqlite3")
    lone.write_bytes(result.path.read_bytes())
    assert run_cli("restore", "--config", str(running.config_path), "--from", str(lone),
                   "--force") == 2


def test_corrupted_backup_fails_verification_and_is_reported(running: CollectorProcess,
                                                             tmp_path: Path) -> None:
    fill(running, "ws-c", 40)
    result = backup.backup(running.config)
    assert result.ok and result.path is not None
    running.stop()
    target = CollectorProcess(tmp_path / "target", anchor_dir=str(same_anchor(running)))
    pristine = result.path.read_bytes()

    # 1. bytes changed on disk: the sha256 no longer matches the manifest
    damaged = bytearray(pristine)
    damaged[len(damaged) // 2] ^= 0xFF
    result.path.write_bytes(bytes(damaged))
    assert run_cli("restore", "--config", str(target.config_path), "--from",
                   str(result.path)) == 1
    # 2. an event altered and the manifest's sha256 "fixed": the chains give it away
    result.path.write_bytes(pristine)
    db = sqlite3.connect(result.path)
    db.execute("UPDATE events SET data = '{\"n\":999}' WHERE agent_id = 'ws-c' AND seq = 7")
    db.commit()
    db.close()
    manifest = json.loads(result.manifest.read_text())
    manifest["sha256"] = file_sha256(result.path)
    result.manifest.write_text(json.dumps(manifest))
    assert run_cli("restore", "--config", str(target.config_path), "--from",
                   str(result.path)) == 1
    sha_fail, chain_fail = own_events(target, "collector.restore")
    assert sha_fail["severity"] == chain_fail["severity"] == "critical"
    assert "sha256" in sha_fail["data"]["reason"]
    assert "ws-c" in chain_fail["data"]["reason"] and "7" in chain_fail["data"]["reason"]
    store = target.store()
    try:
        assert store.stats()["events"] == 0  # nothing was restored from either
    finally:
        store.close()


def test_backup_of_a_tampered_store_is_not_verified(running: CollectorProcess) -> None:
    fill(running, "ws-t", 20)
    running.stop()
    db = sqlite3.connect(running.config.collector.state_dir / "collector.db")
    db.execute("UPDATE events SET subject = 'edited' WHERE agent_id = 'ws-t' AND seq = 3")
    db.commit()
    db.close()
    result = backup.backup(running.config)
    assert not result.ok and not result.verified
    assert "ws-t" in result.reason and "3" in result.reason
    manifest = json.loads(result.manifest.read_text())
    assert manifest["verified"] is False and manifest["problems"]
    (note,) = own_events(running, "collector.backup")
    assert note["severity"] == "critical" and note["data"]["ok"] is False


def test_keeps_the_newest_verified_backups_and_only_its_own_files(tmp_path: Path) -> None:
    collector = CollectorProcess(tmp_path / "site", backup={
        "directory": str(tmp_path / "backups"), "keep": 2})
    directory = tmp_path / "backups"
    directory.mkdir(mode=0o700)
    strangers = [directory / "notes.txt", directory / "floor-collector-20200101T000000000Z.sqlite3"]
    for path in strangers:  # the second has the name but no manifest: not ours
        path.write_text("keep me")
    start = datetime(2026, 11, 1, tzinfo=UTC)
    made = [backup.backup(collector.config, now=start + timedelta(days=d)) for d in range(4)]
    assert all(r.ok for r in made)
    left = sorted(p.name for p in directory.iterdir())
    ours = [r.path.name for r in made if r.path]
    assert left == sorted([*ours[2:], *(n + ".json" for n in ours[2:]),
                           *(p.name for p in strangers)])
    assert made[2].pruned == [ours[0]] and made[3].pruned == [ours[1]]


def test_prune_plan_never_drops_the_last_good_backups_for_failures() -> None:
    entries = [("b1", True), ("b2", True), ("b3", False), ("b4", False), ("b5", True)]
    assert backup.prune_plan(entries, 2) == ["b1"]
    assert backup.prune_plan(entries, 1) == ["b1", "b2", "b3", "b4"]  # failures older too
    assert backup.prune_plan(entries, 3) == []


def test_postgresql_round_trip_with_pg_dump(postgres_server: PostgresServer,  # noqa: F811
                                            tmp_path: Path) -> None:
    source = CollectorProcess(tmp_path / "pg-site", postgres_server.new_database(),
                              backup={"directory": str(tmp_path / "pg-backups")})
    source.start()
    try:
        fill(source, "ws-pg", 60)
        result = backup.backup(source.config)
    finally:
        source.stop()
    assert result.ok and result.verified and result.path is not None, result.reason
    assert result.path.suffix == ".pgdump" and result.events >= 60
    manifest = json.loads(result.manifest.read_text())
    assert manifest["store"] == "postgresql" and "pg_dump" in manifest["tool"]
    # the scratch databases are gone
    import psycopg

    with psycopg.connect(postgres_server.admin_url) as conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database")]
    assert not [n for n in names if n.startswith("floor_verify_")]

    target = CollectorProcess(tmp_path / "pg-target", postgres_server.new_database(),
                              anchor_dir=str(same_anchor(source)))
    assert run_cli("restore", "--config", str(target.config_path), "--from",
                   str(result.path)) == 0
    before, after = source.store(), target.store()
    try:
        assert chains(after, manifest["agents"]) == chains(before, manifest["agents"])
    finally:
        before.close()
        after.close()
    # the target now holds events: a second restore needs --force
    assert run_cli("restore", "--config", str(target.config_path), "--from",
                   str(result.path)) == 2
    assert run_cli("restore", "--config", str(target.config_path), "--from",
                   str(result.path), "--force") == 0
