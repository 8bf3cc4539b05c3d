"""A damaged spool (issue 15, item 11): the agent finds the damage before sending, reports it in
a signed event, sets exactly the damaged rows aside and delivers every genuine event after it;
the collector records the hole as a `gap` naming the range. Also the spool's file modes (13).

Attack first (edit or delete rows of the agent's spool with sqlite3, as an insider with the
file would), then the expectation, against a real collector process over HTTPS.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from collector_process import CollectorProcess, wait_for_kind

from floor_agent.audit.agent import AuditAgent, enroll
from floor_agent.audit.spool import DAMAGE_KIND, SPOOL_FILE, Spool
from floor_agent.collector.ingest import CHAIN_BREAKS
from floor_agent.protocol.checkpoint import link
from floor_agent.store.interface import EventQuery


def wait_until(what: str, check: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.1)


@contextmanager
def running_agent(collector: CollectorProcess, name: str) -> Iterator[AuditAgent]:
    """An enrolled agent with its forwarder running (1 s heartbeats), everything delivered."""
    config = collector.agent_config(name, heartbeat_seconds=1.0)
    enroll(config.audit, "workstation", collector.token(), None)
    agent = AuditAgent(config.audit, "workstation")
    agent.start()
    try:
        wait_until("agent.started delivered", lambda: agent.spool.pending_count() == 0)
        yield agent
    finally:
        agent.stop(drain_seconds=1)


def spool_file(agent: AuditAgent) -> sqlite3.Connection:
    """The attacker's own connection to the agent's spool file."""
    return sqlite3.connect(agent.config.state_dir / SPOOL_FILE, isolation_level=None)


def stored_events(collector: CollectorProcess, agent_id: str) -> dict[int, dict]:
    store = collector.store()
    try:
        page = store.query_events(EventQuery(agent_id=agent_id, limit=1000))
    finally:
        store.close()
    return {e["seq"]: e for e in page.events}


def alerts_of(collector: CollectorProcess, agent_id: str) -> list[dict]:
    store = collector.store()
    try:
        return store.list_alerts(agent_id=agent_id)
    finally:
        store.close()


def checkpoint_ts(collector: CollectorProcess, agent_id: str) -> str | None:
    store = collector.store()
    try:
        record = store.get_agent(agent_id)
    finally:
        store.close()
    assert record is not None
    return record.checkpoint_ts


def delivered(agent: AuditAgent, collector: CollectorProcess, seqs: set[int]) -> None:
    """Wait until the spool is empty and every seq in `seqs` is in the collector's store."""
    wait_until(f"seqs {sorted(seqs)} delivered", lambda: agent.spool.pending_count() == 0
               and seqs <= set(stored_events(collector, agent.agent_id)))


def assert_hole_reported(collector: CollectorProcess, agent_id: str, first: int, last: int,
                         problem: str) -> None:
    """The agent's signed report names the range; the collector holds a gap naming exactly it,
    and nothing that would block the agent (a fork, an altered event in a batch)."""
    report = wait_for_kind(store := collector.store(), agent_id, DAMAGE_KIND)
    store.close()
    assert report["severity"] == "critical"
    assert {"first_seq": first, "last_seq": last, "problem": problem} in [
        {k: r[k] for k in ("first_seq", "last_seq", "problem")} for r in report["data"]["ranges"]]
    alerts = alerts_of(collector, agent_id)
    gaps = [a for a in alerts if a["kind"] == "gap"]
    assert [(a["seq"], f"events {first}..{last} never arrived" in a["detail"]) for a in gaps] \
        == [(first, True)], alerts
    assert not [a for a in alerts if a["kind"] in CHAIN_BREAKS and a["kind"] != "gap"], alerts
    assert any(a["kind"] == DAMAGE_KIND for a in alerts)  # critical: on the alerts page too


def test_an_edited_event_is_set_aside_and_everything_after_it_delivered(
        collector: CollectorProcess) -> None:
    with running_agent(collector, "ws-edit") as agent:
        collector.stop()
        before = [agent.emit("test.event", f"item {n}", "info", n=n) for n in range(5)]
        victim = before[2].seq
        with spool_file(agent) as db:  # the attack: one event's text changed on disk
            assert db.execute("UPDATE pending SET body = CAST(replace(body, 'item 2', "
                              "'item 9') AS BLOB) WHERE seq = ?", (victim,)).rowcount == 1
        after = [agent.emit("test.event", f"later {n}", "info", n=n) for n in range(3)]
        collector.start()
        genuine = {e.seq for e in before + after} - {victim}
        delivered(agent, collector, genuine)
        stored = stored_events(collector, "ws-edit")
        assert victim not in stored
        assert all(stored[e.seq]["subject"] == e.subject for e in before + after
                   if e.seq != victim)
        assert_hole_reported(collector, "ws-edit", victim, victim, "altered")
        with spool_file(agent) as db:  # kept aside, as found, for an investigator
            kept = db.execute("SELECT seq, body FROM damaged_rows").fetchall()
        assert [(seq, b'"item 9"' in body) for seq, body in kept] == [(victim, True)]
        late = agent.emit("test.event", "after the damage")  # the agent keeps working
        delivered(agent, collector, {late.seq})
        assert late.seq == max(stored_events(collector, "ws-edit"))


def test_the_newest_event_deleted_is_reported_without_reusing_its_seq_or_spinning(
        sqlite_collector: CollectorProcess) -> None:
    collector = sqlite_collector  # the store's side is the same gap as above, on both stores
    with running_agent(collector, "ws-newest") as agent:
        collector.stop()
        emitted = [agent.emit("test.event", f"item {n}") for n in range(3)]
        newest = emitted[-1].seq
        with spool_file(agent) as db:
            assert db.execute("DELETE FROM pending WHERE seq = ?", (newest,)).rowcount == 1
        collector.start()
        delivered(agent, collector, {e.seq for e in emitted[:-1]})
        assert_hole_reported(collector, "ws-newest", newest, newest, "missing")
        assert newest not in stored_events(collector, "ws-newest")
        # Nothing left to send: the forwarder must idle (it spun at 75 % of a core) and keep
        # its heartbeats coming (it had stopped them). The whole process's CPU bounds the
        # forwarder thread's; the test thread only sleeps.
        first_ts = checkpoint_ts(collector, "ws-newest")
        cpu, wall = time.process_time(), time.monotonic()
        time.sleep(3.5)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        assert cpu < 0.2 * wall, f"{cpu:.2f} s of CPU in {wall:.1f} s"
        wait_until("a newer heartbeat", lambda: checkpoint_ts(collector, "ws-newest")
                   != first_ts, seconds=10)
        nxt = agent.emit("test.event", "next")
        assert nxt.seq > newest + 1  # after the report: the deleted seq is never reused
        delivered(agent, collector, {nxt.seq})
        assert stored_events(collector, "ws-newest")[nxt.seq]["subject"] == "next"


def test_a_deleted_middle_event_loses_nothing_else(sqlite_collector: CollectorProcess) -> None:
    collector = sqlite_collector
    with running_agent(collector, "ws-middle") as agent:
        collector.stop()
        emitted = [agent.emit("test.event", f"item {n}") for n in range(6)]
        victim = emitted[2].seq
        with spool_file(agent) as db:
            assert db.execute("DELETE FROM pending WHERE seq = ?", (victim,)).rowcount == 1
        collector.start()
        genuine = {e.seq for e in emitted} - {victim}
        delivered(agent, collector, genuine)  # the event right after the hole too
        assert victim not in stored_events(collector, "ws-middle")
        assert_hole_reported(collector, "ws-middle", victim, victim, "missing")


# -- the spool alone ---------------------------------------------------------------------------
def deliver_all(spool: Spool) -> list[int]:
    """Play the collector: take batches until none is left; the seqs sent, in order."""
    sent: list[int] = []
    while True:
        start, run = spool.batch(2)
        if not run:
            return sent
        prev = start.hash
        for event in run:  # each batch chains from its start, as the collector checks
            assert link(prev, event.body) == event.hash
            prev = event.hash
        sent += [e.seq for e in run]
        spool.acknowledge(run[-1].seq)


def reports(spool: Spool) -> list[dict]:
    return [dict(d) for d in spool.damage_log()]


def test_a_row_rewritten_with_a_recomputed_hash_is_caught_at_the_break(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", "ws-01")
    for n in range(6):
        spool.emit("test.event", f"item {n}")
    with sqlite3.connect(tmp_path / "s.db") as db:  # body changed and re-hashed consistently
        prev, body = db.execute("SELECT prev, body FROM pending WHERE seq = 3").fetchone()
        body = body.replace(b"item 2", b"item 7")
        db.execute("UPDATE pending SET body = ?, hash = ? WHERE seq = 3",
                   (body, link(prev, body)))
    sent = deliver_all(spool)
    assert 3 not in sent and {1, 2, 4, 5, 6} <= set(sent)
    assert [(d["first_seq"], d["last_seq"], d["problem"]) for d in reports(spool)] \
        == [(3, 3, "altered")]


def test_an_edited_prev_column_alone_damages_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", "ws-01")
    for n in range(3):
        spool.emit("test.event", f"item {n}")
    with sqlite3.connect(tmp_path / "s.db") as db:  # the event and its hash are intact
        db.execute("UPDATE pending SET prev = zeroblob(32) WHERE seq = 2")
    assert deliver_all(spool) == [1, 2, 3]
    assert reports(spool) == []


def test_a_column_left_as_text_by_an_edit_is_damage_not_a_crash(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", "ws-01")
    for n in range(3):
        spool.emit("test.event", f"item {n}")
    with sqlite3.connect(tmp_path / "s.db") as db:  # replace() on a BLOB gives TEXT
        db.execute("UPDATE pending SET body = replace(body, 'item 1', 'item 8') WHERE seq = 2")
        db.execute("UPDATE pending SET hash = 'x' WHERE seq = 3")
    assert deliver_all(spool) == [1, 4]  # 4: the report
    assert [(d["first_seq"], d["last_seq"]) for d in reports(spool)] == [(2, 3)]


def test_a_row_planted_past_the_head_never_takes_a_seq(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", "ws-01")
    spool.emit("test.event", "one")
    with sqlite3.connect(tmp_path / "s.db") as db:
        db.execute("INSERT INTO pending (seq, body, hash) SELECT 2, body, hash FROM pending")
    event = spool.emit("test.event", "two")  # failed with a UNIQUE constraint before
    assert event is not None and event.seq == 3  # 2 is the report of the planted row
    assert [(d["first_seq"], d["problem"]) for d in reports(spool)] == [(2, "altered")]
    assert deliver_all(spool) == [1, 2, 3]


def test_a_spool_of_an_older_release_gets_its_prev_column_and_delivers(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", "ws-01")
    for n in range(4):
        spool.emit("test.event", f"item {n}")
    spool.close()
    with sqlite3.connect(tmp_path / "s.db") as db:
        db.execute("ALTER TABLE pending DROP COLUMN prev")  # the table as it used to be
    spool = Spool(tmp_path / "s.db", "ws-01")
    with sqlite3.connect(tmp_path / "s.db") as db:
        db.execute("DELETE FROM pending WHERE seq = 2")
    assert deliver_all(spool) == [1, 3, 4, 5]  # 5: the report
    assert spool.batch(10)[1] == []
    assert [(d["first_seq"], d["problem"]) for d in reports(spool)] == [(2, "missing")]


def test_spool_files_are_private_under_umask_022(tmp_path: Path) -> None:
    state = tmp_path / "state"
    old = os.umask(0o022)
    try:
        spool = Spool(state / SPOOL_FILE, "ws-01")
        spool.emit("test.event", "x")
        mode = {p.name: stat.S_IMODE(p.stat().st_mode) for p in state.iterdir()}
        assert mode == {"spool.db": 0o600, "spool.db-wal": 0o600, "spool.db-shm": 0o600}
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        spool.close()
        os.chmod(state, 0o755)  # as an older release, or a hand, left them
        os.chmod(state / SPOOL_FILE, 0o644)
        Spool(state / SPOOL_FILE, "ws-01").close()
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        assert stat.S_IMODE((state / SPOOL_FILE).stat().st_mode) == 0o600
    finally:
        os.umask(old)
