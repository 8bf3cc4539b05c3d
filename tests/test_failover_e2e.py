"""Agents fail over by themselves: two real collector processes on one real PostgreSQL, real
agent processes emitting as fast as their spools take it, collector A killed with SIGKILL in
the middle. Every event arrives exactly once, chains unbroken, no alert raised, and each agent
says the switch once on its own trail (issue 23, points 1 and 7)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from collector_process import CollectorProcess
from postgres_server import PostgresServer
from test_pipeline import RUNNER, all_events

from floor_agent.audit.agent import AuditAgent, enroll
from floor_agent.collector import tls
from floor_agent.collector.ingest import CHAIN_BREAKS
from floor_agent.collector.verify import verify_agent
from floor_agent.protocol.kinds.agent import AgentKind

pytestmark = pytest.mark.postgres

AGENTS = ("ws-fo-1", "ws-fo-2")
EVENTS = 6000  # per agent


def second_collector(first: CollectorProcess, root: Path, database_url: str,
                     **section: object) -> CollectorProcess:
    """Collector B on A's database, as another host: its own state dir, audit identity and
    server key, its certificate signed by A's CA (the CA key stays in A's directory).
    section: collector settings, as for CollectorProcess."""
    mine = tls.TlsFiles.in_dir(root / "collector")
    tls.create(tls.TlsFiles(first.files.ca_cert, first.files.ca_key, mine.server_cert,
                            mine.server_key), ["localhost", "127.0.0.1"])
    shutil.copyfile(first.files.ca_cert, mine.ca_cert)
    assert not mine.ca_key.exists()
    return CollectorProcess(root, database_url, hostname="collector-b", **section)


class Runner:
    """A real agent process (tests/agent_runner.py emit N), its stdout read as it goes."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        with log.open("wb") as stderr:
            self.proc = subprocess.Popen([sys.executable, RUNNER, str(config), "emit",
                                          str(EVENTS)], stdout=subprocess.PIPE,
                                         stderr=stderr, text=True)
        self.returned: dict[int, int] = {}  # seq -> n, for each emit() that returned
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())
            if line.startswith("ok "):
                _, seq, n = line.split()
                self.returned[int(seq)] = int(n)

    def finish(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code


def stored_count(collector: CollectorProcess, agent: str) -> int:
    store = collector.store()
    try:
        record = store.get_agent(agent)
        return record.head_seq if record is not None else 0
    finally:
        store.close()


@pytest.fixture
def two_collectors(postgres_server: PostgresServer, tmp_path: Path
                   ) -> Iterator[tuple[CollectorProcess, CollectorProcess]]:
    """A and B, both running, on one new database."""
    database_url = postgres_server.new_database()
    a = CollectorProcess(tmp_path / "a", database_url)
    b = second_collector(a, tmp_path / "b", database_url)
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        b.stop()
        a.stop()


def kill_9(collector: CollectorProcess) -> None:
    assert collector.proc is not None
    collector.proc.send_signal(signal.SIGKILL)
    collector.proc.wait()


def test_kill_9_collector_a_under_load_agents_fail_over_to_b(
        two_collectors: tuple[CollectorProcess, CollectorProcess], tmp_path: Path) -> None:
    a, b = two_collectors
    runners: list[Runner] = []
    try:
        for name in AGENTS:
            config = a.agent_config(name, collector_url=[a.url, b.url], batch_max_events=100,
                                    collector_return_after_seconds=2.0)
            enroll(config.audit, "workstation", a.token(), None)
        runners = [Runner(tmp_path / "a" / f"{name}.yaml", tmp_path / f"{name}.log")
                   for name in AGENTS]
        # kill A once it holds a good part of every agent's events, while they still emit
        deadline = time.monotonic() + 120
        while min(stored_count(a, name) for name in AGENTS) < EVENTS // 5:
            assert time.monotonic() < deadline, "collector A never got the first events"
            time.sleep(0.05)
        assert all("emitted" not in r.lines for r in runners), "emitting ended too soon"
        kill_9(a)
        killed_at = {name: stored_count(b, name) for name in AGENTS}
        codes = [r.finish(300) for r in runners]
        assert codes == [0, 0], [r.log.read_text()[-2000:] for r in runners]
        assert all(r.lines[-2:] == ["emitted", "drained"] for r in runners)

        store = b.store()
        try:
            for name, runner in zip(AGENTS, runners, strict=True):
                events = all_events(b, name)
                seqs = sorted(e["seq"] for e in events)
                assert seqs == list(range(1, len(seqs) + 1))  # no gap, nothing twice
                loads = {e["seq"]: e["data"]["n"] for e in events if e["kind"] == "test.load"}
                assert sorted(loads.values()) == list(range(EVENTS))  # 0 lost, 0 duplicated
                assert loads == runner.returned  # each where its emit() said it was
                assert killed_at[name] <= EVENTS  # A died with events still to deliver
                switches = [e for e in events if e["kind"] == AgentKind.COLLECTOR_SWITCHED]
                assert [(s["data"]["from_url"], s["data"]["to_url"], s["data"]["reason"])
                        for s in switches] == [(a.url, b.url, "failover")]
                result = verify_agent(store, name)
                assert result.ok, result.report.problems
                assert result.checkpoint_seq == seqs[-1]  # the checkpoint is at the head
                assert store.list_alerts(agent_id=name) == []
                # said once in the log too, while A's port refused every return probe
                log = runner.log.read_text()
                assert log.count(f"now reporting to collector {b.url}") == 1, log[-3000:]
                assert log.count(f"trying the first collector {a.url} again") >= 1, log[-3000:]
            breaks = [alert for alert in store.list_alerts() if alert["kind"] in CHAIN_BREAKS]
            assert breaks == []
        finally:
            store.close()
    finally:
        for runner in runners:
            if runner.proc.poll() is None:
                runner.proc.kill()
                runner.proc.wait()


def test_agent_returns_to_the_first_collector_once_it_is_back(
        two_collectors: tuple[CollectorProcess, CollectorProcess]) -> None:
    """A killed, the agent on B; A started again: after collector_return_after_seconds the
    real forwarder (in this process) is back on A by itself, every event stored once."""
    a, b = two_collectors
    config = a.agent_config("ws-back", collector_url=[a.url, b.url],
                            collector_return_after_seconds=1.0)
    enroll(config.audit, "workstation", a.token(), None)
    agent = AuditAgent(config.audit, "workstation")
    agent.start()
    try:
        kill_9(a)
        n = 0

        def switches() -> list[tuple[str, str, str]]:
            events = sorted(all_events(b, "ws-back"), key=lambda e: e["seq"])
            return [(e["data"]["from_url"], e["data"]["to_url"], e["data"]["reason"])
                    for e in events if e["kind"] == AgentKind.COLLECTOR_SWITCHED]

        def emit_until(done: Callable[[], bool]) -> None:
            nonlocal n
            deadline = time.monotonic() + 60
            while not done():
                assert time.monotonic() < deadline, switches()
                agent.emit("test.load", f"item {n}", "info", n=n)
                n += 1
                time.sleep(0.1)

        emit_until(lambda: switches() == [(a.url, b.url, "failover")])
        a.start()
        emit_until(lambda: len(switches()) == 2)
        assert switches() == [(a.url, b.url, "failover"), (b.url, a.url, "return")]
        assert agent.link.url == a.url
    finally:
        agent.stop(drain_seconds=30)
    events = all_events(a, "ws-back")
    assert sorted(e["seq"] for e in events) == list(range(1, len(events) + 1))
    assert sorted(e["data"]["n"] for e in events if e["kind"] == "test.load") == list(range(n))
    store = a.store()
    try:
        assert verify_agent(store, "ws-back").ok
        assert store.list_alerts(agent_id="ws-back") == []
    finally:
        store.close()
