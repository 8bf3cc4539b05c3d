"""The agent spool: durable, chained, gap-free across restarts, never silently dropping."""

from __future__ import annotations

from pathlib import Path

import pytest

from floor_agent.audit.spool import Spool
from floor_agent.protocol.checkpoint import chain_hashes
from floor_agent.protocol.event import AuditEvent


def events_of(spool: Spool) -> list[AuditEvent]:
    import orjson

    _, pending = spool.batch(1_000_000)
    return [AuditEvent(**orjson.loads(p.body)) for p in pending]


def test_seq_grows_by_one_across_restarts(tmp_path: Path) -> None:
    first = Spool(tmp_path / "s.db", "ws-01")
    assert [first.emit("test.event", "a").seq for _ in range(3)] == [1, 2, 3]
    boot_one = first.boot_id
    first.close()
    second = Spool(tmp_path / "s.db", "ws-01")
    assert second.boot_id != boot_one
    assert second.emit("test.event", "b").seq == 4
    events = events_of(second)
    assert [e.seq for e in events] == [1, 2, 3, 4]
    _, pending = second.batch(10)
    assert chain_hashes(events) == [p.hash for p in pending]


def test_acknowledge_forgets_only_what_was_acked(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", "ws-01")
    for _ in range(5):
        spool.emit("test.event", "x")
    _, pending = spool.batch(10)
    assert spool.acknowledge(3) == 3
    acked, rest = spool.batch(10)
    assert acked.seq == 3 and acked.hash == pending[2].hash
    assert [p.seq for p in rest] == [4, 5]
    assert spool.acknowledge(99) == 0  # an ack for something we never had changes nothing
    assert spool.pending_count() == 2


def test_spool_belongs_to_one_agent(tmp_path: Path) -> None:
    Spool(tmp_path / "s.db", "ws-01").close()
    with pytest.raises(ValueError, match="belongs to agent 'ws-01'"):
        Spool(tmp_path / "s.db", "ws-02")


def test_cap_alarms_early_and_never_drops_security_events(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", "ws-01", max_events=10, alarm_ratio=0.5)
    for _ in range(5):
        spool.emit("test.event", "x")
    kinds = [e.kind for e in events_of(spool)]
    assert kinds.count("agent.spool_high") == 1  # alarm raised at half full
    for _ in range(10):
        spool.emit("test.event", "x")
    assert spool.emit("test.event", "low", "info") is None  # full: low severity refused...
    assert spool.dropped_count() >= 1
    kept = spool.emit("usb.blocked", "stick", "warning")  # ...security events still written
    assert kept is not None
    events = events_of(spool)
    assert any(e.kind == "agent.spool_full" and e.severity == "critical" for e in events)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))  # no hole in the chain
    assert spool.emit("test.event", "low", "info") is None
    assert [e.kind for e in events_of(spool)].count("agent.spool_full") == 1  # once per episode
    spool.acknowledge(events_of(spool)[-1].seq)
    recovered = events_of(spool)
    assert [e.kind for e in recovered] == ["agent.spool_recovered"]
    assert recovered[0].data["dropped_low_severity_total"] == spool.dropped_count() >= 2


def test_checkpoint_time_strictly_increases_even_if_clock_steps_back(tmp_path: Path) -> None:
    times = iter(["2026-11-29T08:00:00.000000Z", "2026-11-29T07:00:00.000000Z"])
    spool = Spool(tmp_path / "s.db", "ws-01", clock=lambda: next(times))
    first = spool.next_checkpoint_ts()
    second = spool.next_checkpoint_ts()
    assert second > first
