"""Two collectors on one database, racing on one agent (issue 23, point 3).

Each "collector" is a Collector over its own store instance (its own connections, its own
in-process locks), both on one real PostgreSQL database or one SQLite file: only the database
can keep them apart, as it must for two collector processes. The agent behaves as it does
behind a load balancer: a batch that got no answer is sent again with a newer checkpoint, to
the same collector or the other, while the first copy is still being stored; a heartbeat goes
to one collector while its next batch goes to the other. Every round starts its requests
together behind a barrier.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from batches import BatchMaker, alter_event
from parallel_calls import at_once
from postgres_server import PostgresServer, postgres_server  # noqa: F401  (fixture)

from floor_agent.collector.core import Collector, create_token, secret_hash
from floor_agent.collector.verify import verify_agent
from floor_agent.store import open_store
from floor_agent.store.interface import Store
from floor_agent.store.records import AlertDraft

ROUNDS = 100


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def two_stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    """Two store instances on one database, as two collector processes have them."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/collector.db"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.new_database()
    a = open_store(url)
    b = open_store(url)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def enrolled(collector: Collector, root: Path, agent_id: str = "ws-1") -> BatchMaker:
    maker = BatchMaker(root, agent_id)
    token = create_token(collector.store, "workstation", 600)
    collector.enroll(token, agent_id, "workstation", maker.public_key, "pc")
    return maker



def assert_whole(store: Store, maker: BatchMaker, head: int) -> None:
    """Every event once, in order, the chain re-verifies, the checkpoint is at the head."""
    seqs = [row["seq"] for row, _ in store.chain_events(maker.agent_id, 1, 10**9)]
    assert seqs == list(range(1, head + 1))
    assert store.stats()["events"] == head
    agent = store.get_agent(maker.agent_id)
    assert agent is not None and agent.head_seq == head and agent.checkpoint_seq == head
    result = verify_agent(store, maker.agent_id)
    assert result.ok, result.report.problems


def test_the_same_batch_at_both_collectors_and_twice_at_one_is_stored_once(
        two_stores: tuple[Store, Store], tmp_path: Path) -> None:
    a, b = (Collector(store) for store in two_stores)
    maker = enrolled(a, tmp_path)
    head = 0
    with ThreadPoolExecutor(4) as pool:
        for round_no in range(ROUNDS):
            maker.emit(1 + round_no % 7)
            first = maker.body()
            retry = maker.body()  # the same events under a newer checkpoint
            results = at_once(pool=pool, calls=[lambda c=c, body=body: c.ingest(body)  # type: ignore[misc]
                                     for body in (first, retry) for c in (a, b)])
            head += 1 + round_no % 7
            assert [(r.status, r.acked_seq) for r in results] == [(200, head)] * 4, \
                [r.message for r in results]
            assert sum(r.stored for r in results) == 1 + round_no % 7, round_no
            maker.ack(head)
    assert a.store.list_alerts() == []
    assert a.counters["batch_rejected"] + b.counters["batch_rejected"] == 0
    assert_whole(b.store, maker, head)


def test_a_heartbeat_racing_the_next_batch_leaves_the_checkpoint_at_the_head(
        two_stores: tuple[Store, Store], tmp_path: Path) -> None:
    a, b = (Collector(store) for store in two_stores)
    maker = enrolled(a, tmp_path)
    maker.emit(3)
    assert a.ingest(maker.body()).status == 200
    maker.ack(3)
    head = 3
    # the interleaving that lost the checkpoint: the heartbeat signed first, stored last
    beat = maker.body()
    maker.emit(2)
    assert b.ingest(maker.body()).stored == 2
    late = a.ingest(beat)
    assert (late.status, late.acked_seq, late.stored) == (200, 3, 0), late.message
    head = 5
    maker.ack(head)
    assert_whole(a.store, maker, head)
    with ThreadPoolExecutor(2) as pool:
        for round_no in range(ROUNDS):
            beat = maker.body()
            maker.emit(1 + round_no % 5)
            batch = maker.body()
            results = at_once(pool=pool, calls=[lambda c=c, body=body: c.ingest(body)  # type: ignore[misc]
                                     for c, body in ((a, beat), (b, batch))])
            assert [r.status for r in results] == [200, 200], [r.message for r in results]
            head += 1 + round_no % 5
            maker.ack(head)
            agent = a.store.get_agent(maker.agent_id)
            assert agent is not None
            assert (agent.head_seq, agent.checkpoint_seq) == (head, head), round_no
    assert a.store.list_alerts() == []
    assert_whole(b.store, maker, head)


def test_a_genuine_replay_is_still_refused_and_alarmed_at_either_collector(
        two_stores: tuple[Store, Store], tmp_path: Path) -> None:
    a, b = (Collector(store) for store in two_stores)
    maker = enrolled(a, tmp_path)
    maker.emit(4)
    old = maker.body()
    assert a.ingest(old).status == 200
    maker.ack(4)
    maker.emit(2)
    assert b.ingest(maker.body()).status == 200
    maker.ack(6)
    # the old checkpoint over events other than those it signed, to both at once
    forged = alter_event(old, 2, subject="/dev/elsewhere")
    with ThreadPoolExecutor(2) as pool:
        results = at_once(pool=pool, calls=[lambda: a.ingest(forged), lambda: b.ingest(forged)])
    assert [(r.status, r.problem) for r in results] == [(409, "replay")] * 2
    (alert,) = a.store.list_alerts()
    assert (alert["kind"], alert["severity"], alert["count"]) == ("replay", "critical", 2)
    # the untouched old batch: a duplicate, and it moves nothing back
    again = b.ingest(old)
    assert (again.status, again.acked_seq, again.stored) == (200, 4, 0)
    assert_whole(a.store, maker, 6)


def test_an_alert_raised_at_both_collectors_at_once_is_one_open_row(
        two_stores: tuple[Store, Store]) -> None:
    a, b = two_stores
    alert = AlertDraft("usb.blocked", "warning", "ws-1", "usb.blocked: /dev/sdb", 3,
                       subject="/dev/sdb")
    with ThreadPoolExecutor(8) as pool:
        for round_no in range(20):
            now = f"2026-01-01T00:00:{round_no:02d}Z"
            at_once(pool=pool, calls=[lambda s=store, now=now: s.add_alerts(  # type: ignore[misc]
                [alert], now) for store in (a, b) * 4])
            if round_no == 9:  # acknowledged: the next one opens a new row
                (open_row,) = a.list_alerts(open_only=True)
                assert open_row["count"] == 80
                assert b.ack_alert(open_row["id"], "ann", "seen", "2026-01-01T00:01:00Z")
    rows = a.list_alerts()
    assert sorted(r["count"] for r in rows) == [80, 80]
    assert len(a.list_alerts(open_only=True)) == 1


def test_one_token_enrolls_one_agent_whichever_collector_gets_it(
        two_stores: tuple[Store, Store]) -> None:
    a, b = two_stores
    with ThreadPoolExecutor(8) as pool:
        for round_no in range(20):
            digest = secret_hash(create_token(a, "door", 600))
            roles = at_once(pool=pool, calls=[
                lambda s=store, n=n, digest=digest: s.consume_token(  # type: ignore[misc]
                    digest, "2000-01-01T00:00:00.000000Z", f"door-{n}")
                for n, store in enumerate((a, b) * 4)])
            assert sorted(roles, key=str) == [None] * 7 + ["door"], round_no


@pytest.mark.postgres
def test_an_alert_committed_after_a_newer_one_is_still_planned(
        postgres_server: PostgresServer) -> None:  # noqa: F811  (the fixture)
    """Alerts are opened without a lock between collectors, so ids no longer come in commit
    order: collector A opens alert 1 in a batch still committing while B opens and commits
    alert 2, and the notifier plans alert 2. Old code kept a place in the table (the highest
    id planned) and passed alert 1 over for ever; each alert now marks itself planned."""
    url = postgres_server.new_database()
    a, b = open_store(url), open_store(url)
    try:
        opened, commit = threading.Event(), threading.Event()

        def slow_batch() -> None:
            # the store's own batch transaction, held open as a batch with many rows is
            with a._row_write() as cur:  # noqa: SLF001
                a._upsert_alerts(cur, [AlertDraft("usb.blocked", "warning", "ws-1", "slow",  # noqa: SLF001
                                                  subject="/dev/sdb")], "2026-12-07T10:00:00Z")
                opened.set()
                assert commit.wait(30)

        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(slow_batch)
            assert opened.wait(30)
            b.add_alerts([AlertDraft("usb.blocked", "warning", "ws-2", "fast",
                                     subject="/dev/sdc")], "2026-12-07T10:00:01Z")
            (fast,) = b.unplanned_alerts()
            assert b.enqueue_notifications([], "2026-12-07T10:00:02Z", [fast["id"]])
            commit.set()
            first.result()
        (slow,) = b.unplanned_alerts()
        assert slow["detail"] == "slow" and slow["id"] < fast["id"]
    finally:
        a.close()
        b.close()
