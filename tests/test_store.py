"""The Store contract, run against SQLite and a real PostgreSQL 15: both must behave the same.

Plus the whole ingest flow through Collector on each store, with batches built and signed the way
an agent builds them (spool + batch_body + signed checkpoint), and the attacks the collector must
turn into alerts without ever storing a rejected event.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from postgres_server import PostgresServer, postgres_server  # noqa: F401  (fixture)

from floor_agent.audit.keys import public_key_b64
from floor_agent.audit.spool import Spool
from floor_agent.collector.core import Collector, IngestResult, create_token
from floor_agent.collector.ingest import event_params
from floor_agent.collector.verify import verify_agent
from floor_agent.protocol.batch import WireEvent, batch_body
from floor_agent.protocol.checkpoint import GENESIS_HASH, Checkpoint, link
from floor_agent.protocol.event import AuditEvent, canonical
from floor_agent.store import open_store, postgres
from floor_agent.store.interface import EventQuery, Store, StoreError, StoreUnavailable
from floor_agent.store.postgres import PostgresStore, describe
from floor_agent.store.records import AlertDraft
from floor_agent.store.sql import INSERT_EVENT
from floor_agent.store.sqlite import SqliteStore

BOOT = "boot-1"


def ts(second: int) -> str:
    """A fixed event timestamp `second` seconds after 08:00 (sortable text, as stored)."""
    return f"2026-11-29T08:{second // 60:02d}:{second % 60:02d}.000000Z"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh, empty store: a SQLite file, or a new database on the session's PostgreSQL.

    The PostgreSQL database collates en-US by default, so any ORDER BY or comparison that is
    not bytewise like SQLite's shows up as a failure.
    """
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/collector.db"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.new_database(icu_locale="en-US")
    opened = open_store(url)
    assert isinstance(opened, SqliteStore if request.param == "sqlite" else PostgresStore)
    try:
        yield opened
    finally:
        opened.close()


def chained(agent_id: str, specs: list[tuple[str, str, str, str, dict[str, Any]]],
            start_seq: int = 1, prev: bytes = GENESIS_HASH) -> list[WireEvent]:
    """Wire events from (ts, kind, severity, subject, data), chained from prev."""
    out = []
    for seq, (when, kind, severity, subject, data) in enumerate(specs, start_seq):
        event = AuditEvent(agent_id, seq, BOOT, when, kind, severity, subject, data).validate()
        body = canonical(event)
        prev = link(prev, body)
        out.append(WireEvent(event, body, prev))
    return out


def head_checkpoint(events: list[WireEvent], when: str) -> Checkpoint:
    last = events[-1]
    return Checkpoint(last.event.agent_id, last.event.seq, last.claimed_hash, when, BOOT,
                      bytes(range(64)))


def rows(events: list[WireEvent], received_at: str) -> list[tuple[Any, ...]]:
    return [event_params(w, received_at) for w in events]


def store_events(store: Store, agent_id: str, events: list[WireEvent], received_at: str,
                 alerts: list[AlertDraft] | None = None) -> Checkpoint:
    checkpoint = head_checkpoint(events, received_at)
    store.commit_batch(agent_id, rows(events, received_at), checkpoint,
                       (checkpoint.seq, checkpoint.hash), alerts or [], received_at)
    return checkpoint


def stored_seqs(store: Store, agent_id: str) -> list[int]:
    return [row["seq"] for row, _ in store.chain_events(agent_id, 1, 10**9)]


# -- enrollment and credentials --------------------------------------------------------------

def test_tokens_are_one_time_expire_and_carry_their_role(store: Store) -> None:
    store.add_token(b"t" * 32, "door", ts(0), ts(10))
    store.add_token(b"e" * 32, "cctv", ts(0), ts(10))
    assert store.consume_token(b"t" * 32, ts(5), "door-1") == "door"
    assert store.consume_token(b"t" * 32, ts(6), "door-2") is None  # used
    assert store.consume_token(b"e" * 32, ts(10), "cam-1") is None  # expired at expires_at
    assert store.consume_token(b"x" * 32, ts(1), "ws-1") is None  # unknown
    assert store.consume_token(b"e" * 32, ts(9), "cam-1") == "cctv"  # the refusal used nothing


def test_agents_are_added_once_and_listed_in_bytewise_order(store: Store) -> None:
    assert store.get_agent("ws-1") is None
    for agent_id in ("ws-1", "Zone-9", "door-1"):
        assert store.add_agent(agent_id, "workstation", f"key-{agent_id}", "host", ts(1))
    assert not store.add_agent("ws-1", "door", "other-key", "other", ts(2))
    record = store.get_agent("ws-1")
    assert record is not None
    assert (record.agent_id, record.role, record.public_key) == ("ws-1", "workstation", "key-ws-1")
    assert (record.head_seq, record.head_hash) == (0, GENESIS_HASH)
    assert isinstance(record.head_hash, bytes)
    assert (record.checkpoint_seq, record.checkpoint_ts) == (None, None)
    listed = store.list_agents()
    assert [a["agent_id"] for a in listed] == ["Zone-9", "door-1", "ws-1"]  # "Z" < "d", as SQLite
    first = listed[2]
    assert first["head_hash"] == GENESIS_HASH.hex()
    assert first["checkpoint_hash"] is None
    assert (first["hostname"], first["enrolled_at"], first["events_total"]) == ("host", ts(1), 0)
    store.touch_agent("ws-1", ts(7))
    assert store.list_agents()[2]["last_seen_at"] == ts(7)


def test_api_keys(store: Store) -> None:
    store.add_api_key(b"k" * 32, "soc-dashboard", ts(0))
    assert store.api_key_name(b"k" * 32) == "soc-dashboard"
    assert store.api_key_name(b"j" * 32) is None


# -- ingest ----------------------------------------------------------------------------------

def test_commit_batch_stores_events_head_checkpoint_and_alerts(store: Store) -> None:
    store.add_agent("ws-1", "workstation", "key", "host", ts(0))
    assert store.checkpoint_of("ws-1") is None
    events = chained("ws-1", [(ts(i), "usb.blocked", "warning", f"dev {i}", {"i": i})
                              for i in range(1, 6)])
    checkpoint = store_events(store, "ws-1", events, ts(30),
                              [AlertDraft("gap", "critical", "ws-1", "lost", 1)])
    assert store.stored_hashes("ws-1", [0, 1, 2, 3, 4, 5, 6]) == {
        0: GENESIS_HASH, **{w.event.seq: w.claimed_hash for w in events}}
    assert store.stored_hashes("ws-1", [4, 5]) == {4: events[3].claimed_hash,
                                                   5: events[4].claimed_hash}
    assert store.stored_hashes("ws-1", []) == {}
    assert store.stored_hashes("other", [1, 2]) == {}
    assert store.checkpoint_of("ws-1") == checkpoint
    record = store.get_agent("ws-1")
    assert record is not None
    assert (record.head_seq, record.head_hash) == (5, events[-1].claimed_hash)
    assert (record.checkpoint_seq, record.checkpoint_ts) == (5, ts(30))
    listed = store.list_agents()[0]
    assert listed["events_total"] == 5
    assert listed["checkpoint_hash"] == events[-1].claimed_hash.hex()
    assert (listed["checkpoint_received_at"], listed["last_seen_at"]) == (ts(30), ts(30))
    assert [a["kind"] for a in store.list_alerts()] == ["gap"]

    # A heartbeat: a new checkpoint, no events, no head change.
    beat = Checkpoint("ws-1", 5, events[-1].claimed_hash, ts(40), BOOT, bytes(64))
    store.commit_batch("ws-1", [], beat, None, [], ts(41))
    assert store.checkpoint_of("ws-1") == beat
    assert store.get_agent("ws-1").head_seq == 5  # type: ignore[union-attr]
    assert store.list_agents()[0]["events_total"] == 5


def test_a_failed_commit_leaves_nothing_behind(store: Store) -> None:
    store.add_agent("ws-1", "workstation", "key", "host", ts(0))
    events = chained("ws-1", [(ts(1), "usb.blocked", "warning", "dev", {})] * 3)
    store_events(store, "ws-1", events[:1], ts(2))
    with pytest.raises(Exception):  # noqa: B017  (sqlite3 / psycopg IntegrityError)
        store_events(store, "ws-1", events, ts(3),  # seq 1 again: UNIQUE (agent_id, seq)
                     [AlertDraft("gap", "critical", "ws-1", "never stored", 2)])
    assert stored_seqs(store, "ws-1") == [1]
    assert store.checkpoint_of("ws-1").ts == ts(2)  # type: ignore[union-attr]
    assert store.list_alerts() == []
    store_events(store, "ws-1", events[1:], ts(4))  # the store is still usable
    assert stored_seqs(store, "ws-1") == [1, 2, 3]


def test_chain_events_in_seq_order_with_stored_hashes(store: Store) -> None:
    store.add_agent("ws-1", "workstation", "key", "host", ts(0))
    subject = "Tür 3 — Halle Ü ✓ 😀 'quoted' \"double\" \\ %s ?"
    events = chained("ws-1", [(ts(60 - i), "door.granted", "info", subject,
                               {"badge": i, "name": "Zoë", "nested": {"b": [1, None, True]}})
                              for i in range(1, 9)])
    store_events(store, "ws-1", events[:4], ts(100))
    store_events(store, "ws-1", events[4:], ts(101))
    rows = store.chain_events("ws-1", 3, 6)
    assert [row["seq"] for row, _ in rows] == [3, 4, 5, 6]
    for (row, digest), wire in zip(rows, events[2:6], strict=True):
        assert isinstance(digest, bytes)
        assert digest == wire.claimed_hash
        assert row["hash"] == wire.claimed_hash.hex()
        # What the store gives back re-hashes to the same chain: verification depends on it.
        again = AuditEvent(row["agent_id"], row["seq"], row["boot_id"], row["ts"], row["kind"],
                           row["severity"], row["subject"], row["data"])
        assert again == wire.event
        assert canonical(again) == wire.body
        assert row["received_at"] in (ts(100), ts(101))
    assert store.chain_events("ws-1", 9, 20) == []
    assert store.chain_events("nobody", 1, 8) == []


# -- queries ---------------------------------------------------------------------------------

WS_KINDS = ("usb.blocked", "usb.allowed", "usbguard.started", "net.breach")
DOOR_KINDS = ("door.granted", "door.denied")
SEVERITY_CYCLE = ("info", "warning", "critical", "notice")


@pytest.fixture
def event_log(store: Store) -> list[dict[str, Any]]:
    """Two agents' events with repeated and out-of-order timestamps, stored in 4 batches."""
    expected: list[dict[str, Any]] = []
    for agent_id, kinds, count in (("ws-1", WS_KINDS, 30), ("door-1", DOOR_KINDS, 20)):
        store.add_agent(agent_id, "workstation", "key", "host", ts(0))
        specs = [(ts(1 + (i * 7) % 13), kinds[i % len(kinds)],
                  SEVERITY_CYCLE[i % len(SEVERITY_CYCLE)], f"{agent_id} #{i}", {"i": i})
                 for i in range(count)]
        events = chained(agent_id, specs)
        half = count // 2
        store_events(store, agent_id, events[:half], ts(50))
        checkpoint = head_checkpoint(events[half:], ts(51))
        store.commit_batch(agent_id, rows(events[half:], ts(51)), checkpoint,
                           (checkpoint.seq, checkpoint.hash), [], ts(51))
        expected += [{"agent_id": agent_id, "seq": w.event.seq, "ts": w.event.ts,
                      "kind": w.event.kind, "severity": w.event.severity} for w in events]
    return expected


def all_pages(store: Store, query: EventQuery) -> list[dict[str, Any]]:
    """Every event the query matches, following next_cursor page by page."""
    out: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        page = store.query_events(dataclasses.replace(query, cursor=cursor))
        assert len(page.events) <= query.limit
        out += page.events
        if page.next_cursor is None:
            return out
        assert page.events and len(page.events) == query.limit
        cursor = page.next_cursor
        assert cursor == (page.events[-1]["ts"], page.events[-1]["id"])
    raise AssertionError("pagination does not end")


QUERIES: list[tuple[str, dict[str, Any], Callable[[dict[str, Any]], bool]]] = [
    ("everything", {}, lambda e: True),
    ("agent", {"agent_id": "ws-1"}, lambda e: e["agent_id"] == "ws-1"),
    ("kind", {"kind": "usb.blocked"}, lambda e: e["kind"] == "usb.blocked"),
    ("kind prefix with dot", {"kind_prefix": "usb."}, lambda e: e["kind"].startswith("usb.")),
    ("kind prefix", {"kind_prefix": "usb"}, lambda e: e["kind"].startswith("usb")),
    ("kind prefix door", {"kind_prefix": "door.d"}, lambda e: e["kind"] == "door.denied"),
    ("no such prefix", {"kind_prefix": "zzz"}, lambda e: False),
    ("severities", {"severities": ("warning", "critical")},
     lambda e: e["severity"] in ("warning", "critical")),
    ("one severity", {"severities": ("notice",)}, lambda e: e["severity"] == "notice"),
    ("since", {"since": ts(7)}, lambda e: e["ts"] >= ts(7)),
    ("until", {"until": ts(7)}, lambda e: e["ts"] < ts(7)),
    ("window", {"since": ts(3), "until": ts(9)}, lambda e: ts(3) <= e["ts"] < ts(9)),
    ("all filters", {"agent_id": "ws-1", "kind_prefix": "usb", "severities": ("info", "critical"),
                     "since": ts(2), "until": ts(12)},
     lambda e: (e["agent_id"] == "ws-1" and e["kind"].startswith("usb")
                and e["severity"] in ("info", "critical") and ts(2) <= e["ts"] < ts(12))),
]


@pytest.mark.parametrize(("filters", "keep"), [(f, k) for _, f, k in QUERIES],
                         ids=[name for name, _, _ in QUERIES])
@pytest.mark.parametrize("limit", [1, 4, 7, 100])
def test_query_events_filters_and_keyset_pagination(
        store: Store, event_log: list[dict[str, Any]], filters: dict[str, Any],
        keep: Callable[[dict[str, Any]], bool], limit: int) -> None:
    everything = store.query_events(EventQuery(limit=1000)).events
    ids = {(e["agent_id"], e["seq"]): e["id"] for e in everything}
    # ids grow in insertion order, so ts ties are broken by arrival
    assert [ids[(e["agent_id"], e["seq"])] for e in event_log] == sorted(ids.values())
    wanted = sorted((e for e in event_log if keep(e)),
                    key=lambda e: (e["ts"], ids[(e["agent_id"], e["seq"])]), reverse=True)
    got = all_pages(store, EventQuery(limit=limit, **filters))
    assert [(e["agent_id"], e["seq"]) for e in got] == [(e["agent_id"], e["seq"])
                                                        for e in wanted]
    if limit == 100:
        single = store.query_events(EventQuery(limit=limit, **filters))
        assert single.next_cursor is None
        assert single.events == got


def test_query_events_row_shape(store: Store, event_log: list[dict[str, Any]]) -> None:
    page = store.query_events(EventQuery(agent_id="door-1", kind="door.denied", limit=1))
    (row,) = page.events
    assert set(row) == {"id", "agent_id", "seq", "boot_id", "ts", "kind", "severity", "subject",
                        "data", "hash", "received_at"}
    assert isinstance(row["id"], int) and isinstance(row["seq"], int)
    assert row["data"] == {"i": row["seq"] - 1}
    assert row["subject"] == f"door-1 #{row['seq'] - 1}"
    assert bytes.fromhex(row["hash"]) == store.stored_hashes("door-1", [row["seq"]])[row["seq"]]
    assert row["received_at"] in (ts(50), ts(51))
    orjson.dumps(page.events)  # the API serialises rows as they are


def test_stats(store: Store, event_log: list[dict[str, Any]]) -> None:
    store.add_alerts([AlertDraft("gap", "critical", "ws-1", "x", 3),
                      AlertDraft("gap", "critical", "ws-1", "x", 4),
                      AlertDraft("fork", "critical", "door-1", "y", 1)], ts(60))
    store.ack_alert(store.list_alerts(kind="fork")[0]["id"], "alice", "known", ts(61))
    store.add_agent("idle", "door", "key", "host", ts(0))
    assert store.stats() == {"agents": 3, "events": 50, "open_alerts": {"gap": 2}}


def test_stats_of_an_empty_store(store: Store) -> None:
    assert store.stats() == {"agents": 0, "events": 0, "open_alerts": {}}


def test_agents_with_stale_checkpoint(store: Store) -> None:
    store.add_agent("never", "door", "key", "host", ts(1))
    store.add_agent("recent", "door", "key", "host", ts(1))
    store.add_agent("late", "door", "key", "host", ts(30))
    store_events(store, "recent", chained("recent", [(ts(5), "door.granted", "info", "", {})]),
                 ts(10))
    assert store.agents_with_stale_checkpoint(ts(1)) == []
    assert store.agents_with_stale_checkpoint(ts(5)) == [("never", None)]
    assert sorted(store.agents_with_stale_checkpoint(ts(20))) == [("never", None),
                                                                  ("recent", ts(10))]
    assert sorted(store.agents_with_stale_checkpoint(ts(40))) == [("late", None), ("never", None),
                                                                  ("recent", ts(10))]


# -- alerts ----------------------------------------------------------------------------------

def test_alerts_are_deduplicated_by_fingerprint_while_open(store: Store) -> None:
    gap = AlertDraft("gap", "critical", "ws-1", "first", 5)
    store.add_alerts([gap], ts(1))
    store.add_alerts([AlertDraft("gap", "critical", "ws-1", "second", 5), gap], ts(2))
    store.add_alerts([AlertDraft("gap", "critical", "ws-1", "other place", 6),
                      AlertDraft("fork", "critical", "ws-1", "fork", 5),
                      AlertDraft("stale_checkpoint", "critical", "ws-2", "silent")], ts(3))
    store.add_alerts([], ts(4))
    alerts = store.list_alerts()
    assert [(a["kind"], a["agent_id"], a["seq"]) for a in alerts] == [
        ("stale_checkpoint", "ws-2", None), ("fork", "ws-1", 5), ("gap", "ws-1", 6),
        ("gap", "ws-1", 5)]  # newest first
    counted = alerts[3]
    assert (counted["count"], counted["created_at"], counted["last_seen_at"]) == (3, ts(1), ts(2))
    assert counted["detail"] == "first"  # the last one seen in ts(2)'s batch
    assert counted["severity"] == "critical"
    assert (counted["acked_at"], counted["acked_by"], counted["ack_comment"]) == (None,) * 3
    assert [a["seq"] for a in store.list_alerts(kind="gap")] == [6, 5]
    assert [a["kind"] for a in store.list_alerts(agent_id="ws-2")] == ["stale_checkpoint"]
    assert [a["seq"] for a in store.list_alerts(agent_id="ws-1", kind="gap", limit=1)] == [6]
    assert len(store.list_alerts(limit=2)) == 2


def test_ack_alert_once_then_the_same_fingerprint_opens_a_new_alert(store: Store) -> None:
    store.add_alerts([AlertDraft("replay", "critical", "ws-1", "replayed", 9)], ts(1))
    (alert,) = store.list_alerts()
    assert store.ack_alert(alert["id"], "alice", "test run, ignore", ts(5))
    (acked,) = store.list_alerts()
    assert (acked["acked_at"], acked["acked_by"], acked["ack_comment"]) == (
        ts(5), "alice", "test run, ignore")
    assert not store.ack_alert(alert["id"], "bob", "again", ts(6))
    assert store.list_alerts()[0]["acked_by"] == "alice"
    assert not store.ack_alert(alert["id"] + 1000, "bob", "no such alert", ts(6))
    assert store.list_alerts(open_only=True) == []
    store.add_alerts([AlertDraft("replay", "critical", "ws-1", "replayed again", 9)], ts(7))
    (reopened,) = store.list_alerts(open_only=True)
    assert reopened["id"] != alert["id"]
    assert (reopened["count"], reopened["created_at"]) == (1, ts(7))
    assert len(store.list_alerts()) == 2


def test_concurrent_reads_and_writes(store: Store) -> None:
    """Ingest, alerting and queries from many threads at once, as the API's thread pool does."""
    errors: list[BaseException] = []
    agents = [f"ws-{n}" for n in range(4)]
    for agent_id in agents:
        store.add_agent(agent_id, "workstation", "key", "host", ts(0))

    def ingest(agent_id: str) -> None:
        prev, seq = GENESIS_HASH, 1
        for batch in range(10):
            events = chained(agent_id, [(ts(batch), "usb.blocked", "info", "d", {})] * 20,
                             seq, prev)
            store_events(store, agent_id, events, ts(batch),
                         [AlertDraft("gap", "critical", agent_id, "x", 1)])
            prev, seq = events[-1].claimed_hash, seq + 20

    def read() -> None:
        for _ in range(30):
            store.query_events(EventQuery(kind_prefix="usb", limit=50))
            store.stats()
            store.get_agent("ws-0")

    def guarded(target: Callable[..., None], *args: Any) -> Callable[[], None]:
        def run() -> None:
            try:
                target(*args)
            except BaseException as exc:  # reported below
                errors.append(exc)
        return run

    threads = ([threading.Thread(target=guarded(ingest, a)) for a in agents]
               + [threading.Thread(target=guarded(read)) for _ in range(6)])
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert store.stats() == {"agents": 4, "events": 800, "open_alerts": {"gap": 4}}
    assert all(stored_seqs(store, a) == list(range(1, 201)) for a in agents)


# -- the ingest flow through Collector -------------------------------------------------------

class FakeAgent:
    """An agent's audit side: a spool and a key, building batches as Forwarder.step does."""

    def __init__(self, root: Path, collector: Collector, agent_id: str = "ws-1",
                 enroll: bool = True) -> None:
        self.agent_id = agent_id
        self.collector = collector
        self.key = Ed25519PrivateKey.generate()
        self.spool = Spool(root / f"{agent_id}.spool", agent_id)
        if enroll:
            token = create_token(collector.store, "workstation", 600)
            collector.enroll(token, agent_id, "workstation", public_key_b64(self.key), "pc")

    def emit(self, count: int) -> None:
        # info: these tests are about chain attacks, so the events raise no alert themselves
        # (warning-or-worse events are alerts: test_ingest.py)
        self.spool.emit_many([("usb.blocked", f"/dev/sd{chr(97 + i % 26)}", "info",
                               {"vid": "0781", "n": i}) for i in range(count)])

    def body(self, key: Ed25519PrivateKey | None = None) -> bytes:
        acked, pending = self.spool.batch(5000)
        last_seq = pending[-1].seq if pending else acked.seq
        last_hash = pending[-1].hash if pending else acked.hash
        checkpoint = Checkpoint(self.agent_id, last_seq, last_hash,
                                self.spool.next_checkpoint_ts(),
                                self.spool.boot_id).sign(key or self.key)
        return batch_body(self.agent_id, acked.hash, [(p.body, p.hash) for p in pending],
                          checkpoint)

    def deliver(self, body: bytes) -> IngestResult:
        """Send a batch; on success forget what the collector acknowledged, as the agent does."""
        result = self.collector.ingest(body)
        if result.status == 200 and result.acked_seq:
            self.spool.acknowledge(result.acked_seq)
        return result

    def send(self) -> IngestResult:
        return self.deliver(self.body())

    def forged_events(self, first_seq: int, prev: bytes, count: int) -> bytes:
        """Other events at seqs already stored, correctly chained and signed: a fork."""
        events = chained(self.agent_id, [(ts(i), "usb.allowed", "info", "rewritten", {})
                                         for i in range(count)], first_seq, prev)
        checkpoint = Checkpoint(self.agent_id, events[-1].event.seq, events[-1].claimed_hash,
                                self.spool.next_checkpoint_ts(), BOOT).sign(self.key)
        return batch_body(self.agent_id, prev, [(w.body, w.claimed_hash) for w in events],
                          checkpoint)


def alter(body: bytes, index: int, **changes: Any) -> bytes:
    batch = orjson.loads(body)
    batch["events"][index]["event"].update(changes)
    return orjson.dumps(batch)


def kinds_of_alerts(store: Store) -> list[str]:
    return sorted({a["kind"] for a in store.list_alerts(limit=1000)})


def assert_intact(store: Store, agent: FakeAgent) -> None:
    """All the agent emitted is stored once, in order, and re-verifies against its checkpoint."""
    head = agent.spool.head().seq
    assert stored_seqs(store, agent.agent_id) == list(range(1, head + 1))
    assert agent.spool.pending_count() == 0
    result = verify_agent(store, agent.agent_id)
    assert result.ok, result.report.problems


def test_ingest_stores_a_good_batch_and_skips_duplicates(store: Store, tmp_path: Path) -> None:
    collector = Collector(store)
    agent = FakeAgent(tmp_path, collector)
    agent.emit(5)
    first = agent.collector.ingest(agent.body())  # stored, but the agent never hears back
    assert (first.status, first.stored, first.acked_seq) == (200, 5, 5)
    resent = agent.send()  # same events, a new checkpoint
    assert (resent.status, resent.stored, resent.acked_seq) == (200, 0, 5)
    assert resent.message == "stored 0, duplicates 5"
    assert stored_seqs(store, "ws-1") == [1, 2, 3, 4, 5]
    heartbeat = agent.send()
    assert (heartbeat.status, heartbeat.stored, heartbeat.acked_seq) == (200, 0, 5)
    agent.emit(3)
    assert agent.send().stored == 3
    assert store.stats()["events"] == 8
    assert store.list_alerts() == []
    assert store.checkpoint_of("ws-1").seq == 8  # type: ignore[union-attr]
    assert_intact(store, agent)


def _forged_signature(agent: FakeAgent) -> IngestResult:
    agent.emit(2)
    return agent.deliver(agent.body(key=Ed25519PrivateKey.generate()))


def _altered_event(agent: FakeAgent) -> IngestResult:
    agent.emit(3)
    return agent.deliver(alter(agent.body(), 1, subject="/dev/nothing-to-see"))


def _replayed_batch(agent: FakeAgent) -> IngestResult:
    agent.emit(2)
    body = agent.body()
    assert agent.deliver(body).status == 200
    # the very same batch again is the agent's own retry: a duplicate, acknowledged
    again = agent.collector.ingest(body)
    assert (again.status, again.stored, again.acked_seq) == (200, 0, 7), again.message
    assert agent.collector.store.list_alerts() == []
    # its old checkpoint presented again over other content: a replay
    return agent.deliver(alter(body, 1, subject="/dev/nothing-to-see"))


def _fork(agent: FakeAgent) -> IngestResult:
    # seq 3 and 4 are stored; chain other events onto the stored hash of seq 2
    prev = agent.collector.store.stored_hashes(agent.agent_id, [2])[2]
    return agent.deliver(agent.forged_events(3, prev, 2))


def _unknown_agent(agent: FakeAgent) -> IngestResult:
    root = agent.spool.path.parent
    ghost = FakeAgent(root, agent.collector, "ghost-7", enroll=False)
    ghost.emit(2)
    return ghost.deliver(ghost.body())


ATTACKS = [
    ("forged signature", _forged_signature, 401, "bad_signature"),
    ("altered event", _altered_event, 422, "altered_event"),
    ("replayed batch", _replayed_batch, 409, "replay"),
    ("fork", _fork, 409, "fork"),
    ("unknown agent", _unknown_agent, 401, "unknown_agent"),
]


@pytest.mark.parametrize(("attack", "status", "alert"), [a[1:] for a in ATTACKS],
                         ids=[a[0] for a in ATTACKS])
def test_ingest_attack_is_refused_alerted_and_ingest_goes_on(
        store: Store, tmp_path: Path, attack: Callable[[FakeAgent], IngestResult], status: int,
        alert: str) -> None:
    collector = Collector(store)
    agent = FakeAgent(tmp_path, collector)
    agent.emit(5)
    assert agent.send().stored == 5
    before = store.stats()["events"]

    result = attack(agent)

    assert result.status == status, result.message
    assert result.stored == 0
    assert kinds_of_alerts(store) == [alert]
    (raised,) = store.list_alerts(open_only=True)
    # issue 15: what fails before authentication is counted against the sender's address,
    # never attributed to the agent the batch names
    unauthenticated = alert in ("bad_signature", "unknown_agent")
    assert raised["agent_id"] == (None if unauthenticated else "ws-1")
    assert raised["source"] == ("local" if unauthenticated else None)
    assert store.stats()["events"] == before + (2 if alert == "replay" else 0)
    assert store.get_agent("ghost-7") is None

    pending = agent.spool.pending_count()
    agent.emit(4)
    after = agent.send()
    assert (after.status, after.stored) == (200, pending + 4), after.message
    assert kinds_of_alerts(store) == [alert]
    assert_intact(store, agent)


def test_repeated_attacks_count_on_one_open_alert(store: Store, tmp_path: Path) -> None:
    collector = Collector(store)
    agent = FakeAgent(tmp_path, collector)
    agent.emit(4)
    body = agent.body()
    assert agent.deliver(body).status == 200
    for _ in range(3):
        assert agent.deliver(alter(body, 0, subject="rewritten")).status == 409
    (replay,) = store.list_alerts()
    assert (replay["kind"], replay["count"]) == ("replay", 3)
    assert collector.counters["alert_replay"] == 3
    assert_intact(store, agent)


# -- PostgreSQL specifics --------------------------------------------------------------------

def test_postgres_unreachable_is_a_store_error_without_the_password() -> None:
    url = "postgresql://collector:s3cr3t-pw@127.0.0.1:1/audit_db"
    with pytest.raises(StoreError) as caught:
        open_store(url)
    message = str(caught.value)
    assert "collector@127.0.0.1:1/audit_db" in message
    assert "s3cr3t-pw" not in message
    assert describe(url) == "collector@127.0.0.1:1/audit_db"


@pytest.mark.postgres
def test_postgres_missing_database_is_a_store_error(postgres_server: PostgresServer) -> None:  # noqa: F811
    with pytest.raises(StoreError, match=r"postgres@127\.0\.0\.1:\d+/no_such_db"):
        PostgresStore(postgres_server.url_of("no_such_db"))


@pytest.mark.postgres
def test_postgres_schema_is_created_once_and_reopened(
        postgres_server: PostgresServer) -> None:  # noqa: F811
    url = postgres_server.new_database()
    first = PostgresStore(url)
    first.add_agent("ws-1", "workstation", "key", "host", ts(0))
    second = PostgresStore(url)  # CREATE ... IF NOT EXISTS on an existing schema
    assert second.get_agent("ws-1") is not None
    second.close()
    first.close()
    with psycopg.connect(url) as conn:
        collations = conn.execute(
            "SELECT table_name, column_name, collation_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND data_type = 'text'").fetchall()
        partial = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = "
                               "'alerts_open_fingerprint'").fetchone()
    assert collations and {c for _, _, c in collations} == {"C"}
    assert partial is not None and "WHERE (acked_at IS NULL)" in partial[0]
    assert partial[0].startswith("CREATE UNIQUE INDEX")


@pytest.mark.postgres
def test_opening_a_current_postgres_store_beside_a_writer_takes_no_ddl_lock(
        postgres_server: PostgresServer) -> None:  # noqa: F811
    """A second opener (an admin command, a test) beside a collector mid-write: the schema's
    CREATE INDEX IF NOT EXISTS took a share lock on tables the writer held, and deadlocked
    with it. A store whose schema mark is this release's runs no DDL."""
    url = postgres_server.new_database()
    PostgresStore(url).close()
    with psycopg.connect(url) as writer:  # a collector's write transaction, held open
        writer.execute("LOCK TABLE events, alerts, agents, sessions, users IN ROW EXCLUSIVE "
                       "MODE")
        opened: list[PostgresStore] = []
        opener = threading.Thread(target=lambda: opened.append(PostgresStore(url)))
        opener.start()
        opener.join(10)
        assert opened, "opening the store waited on the writer's locks"
        writer.rollback()
    opened[0].close()
    # a store whose mark is another release's (an upgrade) gets the DDL again, and the mark
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("UPDATE schema_mark SET digest = 'older release'")
    PostgresStore(url).close()
    with psycopg.connect(url) as check:
        (digest,) = check.execute("SELECT digest FROM schema_mark").fetchone() or ("",)
    assert digest == postgres.SCHEMA_DIGEST


@pytest.mark.postgres
def test_postgres_store_recovers_when_the_server_drops_its_connections(
        postgres_server: PostgresServer) -> None:  # noqa: F811
    url = postgres_server.new_database()
    store = PostgresStore(url)
    try:
        store.add_agent("ws-1", "workstation", "key", "host", ts(0))
        store.get_agent("ws-1")
        dbname = url.rsplit("/", 1)[1]
        with psycopg.connect(postgres_server.admin_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s", (dbname,))

        def eventually(call: Callable[[], Any]) -> Any:
            """The call that meets a dead connection fails as StoreUnavailable (the API
            answers it 503), whatever the driver raised; the next one reconnects."""
            try:
                return call()
            except StoreUnavailable:
                return call()

        eventually(lambda: store.touch_agent("ws-1", ts(9)))
        assert eventually(lambda: store.get_agent("ws-1")) is not None
        assert store.list_agents()[0]["last_seen_at"] == ts(9)
    finally:
        store.close()
    with pytest.raises(StoreError, match="closed"):
        store.get_agent("ws-1")


def test_ingest_worker_outlives_the_thread_that_spawned_it(tmp_path: Path) -> None:
    """The pool spawns its worker from whichever request thread submits first; the server
    retires idle request threads, and that must not kill the worker (it did, with
    PR_SET_PDEATHSIG, which follows the spawning thread). A bad batch comes back from the
    worker as the BatchError it is, and leaves the worker in place."""
    from floor_agent.protocol.batch import BatchError

    store = open_store(f"sqlite:///{tmp_path}/c.db")
    collector = Collector(store, prepare_processes=1)
    errors: list[BaseException] = []

    def submit() -> None:
        try:
            collector._prepare(b'{"agent_id": "x"}', "now")
        except BaseException as e:
            errors.append(e)

    try:
        spawner = threading.Thread(target=submit)
        spawner.start()
        spawner.join()
        [error] = errors
        assert isinstance(error, BatchError) and error.status == 422, error
        assert "batch.events" in str(error)
        assert collector._pool is not None
        [pid] = list(collector._pool._processes)  # type: ignore[attr-defined]
        time.sleep(1.0)
        with pytest.raises(BatchError):
            collector._prepare(b'{"agent_id": "x"}', "now")
        assert list(collector._pool._processes) == [pid]  # type: ignore[attr-defined]
        os.kill(pid, 0)  # still alive
    finally:
        collector.close()
        store.close()


# -- the dashboard ---------------------------------------------------------------------------

def test_users_are_created_once_and_updated_by_field(store: Store) -> None:
    assert store.add_user("ann", "viewer", "$argon2id$hash", True, ts(0))
    assert not store.add_user("ann", "admin", "other", False, ts(1))
    assert store.get_user("nobody") is None
    assert store.update_user("ann", ts(2), role="auditor", must_change=False, failures=3,
                             locked_until=ts(9))
    assert store.get_user("ann") == {
        "username": "ann", "role": "auditor", "password_hash": "$argon2id$hash",
        "must_change": False, "disabled": False, "created_at": ts(0), "updated_at": ts(2),
        "failures": 3, "locked_until": ts(9)}
    assert not store.update_user("nobody", ts(3), disabled=True)
    with pytest.raises(ValueError, match="unknown fields"):
        store.update_user("ann", ts(3), created_at=ts(0))
    store.add_user("Bob", "admin", "h", False, ts(4))
    assert [u["username"] for u in store.list_users()] == ["Bob", "ann"]  # bytewise


def test_sessions_by_hash_touched_and_deleted(store: Store) -> None:
    store.add_session("h1", "ann", "csrf-1", ts(0))
    store.add_session("h2", "ann", "csrf-2", ts(1))
    store.add_session("h3", "bob", "csrf-3", ts(1))
    store.touch_session("h1", ts(5))
    assert store.get_session("h1") == {"username": "ann", "created_at": ts(0),
                                       "last_seen_at": ts(5), "csrf": "csrf-1"}
    store.delete_session("h1")
    assert store.get_session("h1") is None
    assert store.delete_sessions_of("ann") == 1
    assert store.get_session("h2") is None and store.get_session("h3") is not None
    store.add_session("h4", "cid", "csrf-4", ts(10))
    store.touch_session("h3", ts(3))
    assert store.prune_sessions(created_before=ts(1), seen_before=ts(4)) == 1  # h3: idle
    assert store.get_session("h3") is None and store.get_session("h4") is not None
    assert store.prune_sessions(created_before=ts(11), seen_before=ts(0)) == 1  # h4: too old


def test_ingest_keeps_the_newest_event_per_state_topic(store: Store) -> None:
    store.add_agent("cam-box", "cctv", "key", "h", ts(0))
    first = chained("cam-box", [
        (ts(1), "cctv.motion_start", "info", "c", {"camera_id": "a"}),
        (ts(2), "cctv.segment", "info", "c", {"camera_id": "a", "seq": 1}),
        (ts(3), "test.other", "info", "c", {}),
    ])
    store_events(store, "cam-box", first, ts(3))
    second = chained("cam-box", [(ts(4), "cctv.motion_end", "info", "c", {"camera_id": "a"})],
                     start_seq=4, prev=first[-1].claimed_hash)
    store_events(store, "cam-box", second, ts(4))
    latest = {row["topic"]: (row["seq"], row["kind"], row["data"])
              for row in store.latest_states()}
    assert latest == {"cam:a:motion": (4, "cctv.motion_end", {"camera_id": "a"}),
                      "cam:a:segment": (2, "cctv.segment", {"camera_id": "a", "seq": 1})}
    assert store.latest_states("other") == []


def test_snapshots_keep_the_latest_per_camera(store: Store) -> None:
    store.put_snapshot("box", "cam1", b"\xff\xd8old", 4, 3, ts(0))
    store.put_snapshot("box", "cam1", b"\xff\xd8new", 8, 6, ts(1))
    store.put_snapshot("box", "cam2", b"\xff\xd8two", 2, 2, ts(2))
    assert store.get_snapshot("box", "cam1") == {"jpeg": b"\xff\xd8new", "width": 8,
                                                 "height": 6, "received_at": ts(1)}
    assert store.get_snapshot("box", "cam9") is None
    assert [(s["camera_id"], s["size"]) for s in store.list_snapshots()] == [("cam1", 5),
                                                                            ("cam2", 5)]


def test_verifications_and_alert_lookups(store: Store) -> None:
    store.put_verification("ws-1", False, 7, 9, ["gap at 3: missing"], "audrey", ts(0))
    store.put_verification("ws-1", True, 9, 9, [], "audrey", ts(1))
    assert store.list_verifications() == {"ws-1": {
        "agent_id": "ws-1", "verified_at": ts(1), "ok": True, "checkpoint_seq": 9,
        "stored_events": 9, "problems": [], "by_user": "audrey"}}
    store.add_alerts([AlertDraft("gap", "critical", "ws-1", "missing", 3),
                      AlertDraft("gap", "critical", "ws-1", "missing", 5),
                      AlertDraft("fork", "critical", "ws-2", "other hash", 2)], ts(2))
    assert store.alert_counts() == {("ws-1", "gap"): 2, ("ws-2", "fork"): 1}
    (fork,) = store.list_alerts(kind="fork")
    assert store.get_alert(fork["id"]) == fork
    assert store.get_alert(10**6) is None


def test_latest_is_rebuilt_from_events_stored_before_the_dashboard(store: Store) -> None:
    store.add_agent("box", "cctv", "key", "h", ts(0))
    events = chained("box", [
        (ts(1), "usb.locked_down", "info", "u", {}),
        (ts(2), "cctv.tamper", "critical", "c", {"camera_id": "a"}),
        (ts(3), "test.other", "info", "c", {}),
        (ts(4), "cctv.tamper_cleared", "notice", "c", {"camera_id": "a"}),
        (ts(5), "cctv.tamper", "critical", "c", {"camera_id": "b"}),
    ])
    with store._write() as cur:  # type: ignore[attr-defined]  # as an older collector wrote them
        cur.executemany(store._q(INSERT_EVENT), rows(events, ts(5)))  # type: ignore[attr-defined]
    assert store.latest_states() == []
    assert store.rebuild_latest() == 3
    latest = {r["topic"]: (r["seq"], r["kind"]) for r in store.latest_states()}
    assert latest == {"usb.lock": (1, "usb.locked_down"),
                      "cam:a:tamper": (4, "cctv.tamper_cleared"),
                      "cam:b:tamper": (5, "cctv.tamper")}
    assert store.rebuild_latest() == 3  # idempotent
