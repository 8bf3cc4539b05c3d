"""End to end over real processes and real HTTPS on loopback: agent -> spool -> collector."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from collector_process import CollectorProcess

from floor_agent.audit.agent import enroll
from floor_agent.collector.verify import verify_agent
from floor_agent.store.interface import EventQuery

RUNNER = str(Path(__file__).with_name("agent_runner.py"))


def start_runner(config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, RUNNER, str(config), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def all_events(collector: CollectorProcess, agent_id: str) -> list[dict]:
    store = collector.store()
    try:
        out: list[dict] = []
        cursor = None
        while True:
            page = store.query_events(EventQuery(agent_id=agent_id, limit=1000, cursor=cursor))
            out += page.events
            if page.next_cursor is None:
                return out
            cursor = page.next_cursor
    finally:
        store.close()


def test_collector_down_10000_events_arrive_exactly_once(collector: CollectorProcess) -> None:
    config = collector.agent_config("ws-down", batch_max_events=500)
    enroll(config.audit, "workstation", collector.token(), None)
    collector.stop()
    runner = start_runner(collector.root / "ws-down.yaml", "emit", "10000")
    assert runner.stdout is not None
    acknowledged_emits = 0
    for line in runner.stdout:
        if line.startswith("ok "):
            acknowledged_emits += 1
        if line.strip() == "emitted":
            break
    assert acknowledged_emits == 10000
    time.sleep(0.5)  # the forwarder keeps failing: nothing can have been delivered
    assert all_events(collector, "ws-down") == []
    collector.start()
    assert runner.stdout.readline().strip() == "drained"
    assert runner.wait(60) == 0
    events = all_events(collector, "ws-down")
    loads = [e for e in events if e["kind"] == "test.load"]
    assert sorted(e["data"]["n"] for e in loads) == list(range(10000))
    seqs = sorted(e["seq"] for e in events)
    assert seqs == list(range(1, len(seqs) + 1))  # exactly once, no gaps
    store = collector.store()
    try:
        result = verify_agent(store, "ws-down")
    finally:
        store.close()
    assert result.ok, result.report.problems
    assert result.checkpoint_seq == seqs[-1]


def test_sigkill_20_times_loses_nothing_emit_returned(collector: CollectorProcess) -> None:
    config_path = collector.root / "ws-crash.yaml"
    config = collector.agent_config("ws-crash", batch_max_events=50)
    enroll(config.audit, "workstation", collector.token(), None)
    rng = random.Random(20261129)
    returned: dict[int, int] = {}  # seq -> n, for every emit() that returned
    next_n = 0
    for _ in range(20):
        runner = start_runner(config_path, "emit", "1000000", str(next_n))
        assert runner.stdout is not None
        os.set_blocking(runner.stdout.fileno(), True)
        time.sleep(rng.uniform(0.3, 1.2))
        os.kill(runner.pid, signal.SIGKILL)
        for line in runner.stdout.read().splitlines():
            if line.startswith("ok "):
                _, seq, n = line.split()
                returned[int(seq)] = int(n)
        runner.wait()
        next_n = max(returned.values(), default=-1) + 1
    assert len(returned) > 100
    drain = start_runner(config_path, "drain")
    assert drain.wait(120) == 0
    events = all_events(collector, "ws-crash")
    stored = {e["seq"]: e for e in events}
    assert len(stored) == len(events)  # nothing twice
    for seq, n in returned.items():
        assert seq in stored, f"emit() returned seq {seq} but it never reached the collector"
        assert stored[seq]["data"]["n"] == n
    assert sorted(stored) == list(range(1, max(stored) + 1))
    store = collector.store()
    try:
        result = verify_agent(store, "ws-crash")
        alerts = store.list_alerts(agent_id="ws-crash")
    finally:
        store.close()
    assert result.ok, result.report.problems
    assert alerts == []  # crashes are not attacks: no gap, fork or replay was raised


def test_idle_agent_sends_signed_heartbeat_checkpoints(collector: CollectorProcess) -> None:
    from floor_agent.audit.agent import AuditAgent

    config = collector.agent_config("ws-idle", heartbeat_seconds=1.0)
    enroll(config.audit, "workstation", collector.token(), None)
    agent = AuditAgent(config.audit, "workstation")
    agent.start()
    seen: list[tuple[int, str]] = []
    try:
        deadline = time.monotonic() + 15
        while len({ts for _, ts in seen}) < 3 and time.monotonic() < deadline:
            store = collector.store()
            try:
                record = store.get_agent("ws-idle")
            finally:
                store.close()
            assert record is not None
            if record.checkpoint_ts is not None:
                seen.append((record.head_seq, record.checkpoint_ts))
            time.sleep(0.2)
    finally:
        agent.stop()
    assert len({ts for _, ts in seen}) >= 3  # fresh checkpoints keep coming...
    assert {seq for seq, _ in seen} == {1}  # ...while the only event is agent.started


def test_agent_adapts_to_a_collector_that_takes_smaller_batches(tmp_path: Path) -> None:
    collector = CollectorProcess(tmp_path, max_batch_events=64)
    collector.start()
    try:
        config = collector.agent_config("ws-small", batch_max_events=500)
        enroll(config.audit, "workstation", collector.token(), None)
        runner = start_runner(collector.root / "ws-small.yaml", "emit", "1000")
        assert runner.wait(120) == 0
        loads = [e for e in all_events(collector, "ws-small") if e["kind"] == "test.load"]
        assert sorted(e["data"]["n"] for e in loads) == list(range(1000))
    finally:
        collector.stop()
