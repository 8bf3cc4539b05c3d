"""The collector while its PostgreSQL is away, over real parts: a collector process under a
watchdog, real agents (spool and forwarder) emitting while the database stops, and a primary
with a synchronous streaming standby that is promoted when the primary dies.

What must hold: one log line when the database goes, one when it is back, never a traceback;
/healthz and /metrics say so; agents are answered 503 and keep spooling; the watchdog is fed
all along (an outage longer than its timeout restarts nothing); the collector follows a
promoted standby through its multi-host database_url without a restart; and every event an
agent was told was stored is in the database that survives, each exactly once.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from batches import BatchMaker
from collector_process import CollectorProcess
from postgres_replication import PRIMARY_SETTINGS, StandbyServer
from postgres_server import PostgresServer
from sd_notify_socket import Notifications

from floor_agent.audit.agent import AuditAgent, enroll
from floor_agent.audit.forwarder import pinned_client
from floor_agent.collector.verify import verify_agent

pytestmark = pytest.mark.postgres

AGENTS = 3
WATCHDOG_SECONDS = 2.0
OUTAGE_SECONDS = 3 * WATCHDOG_SECONDS  # well past the watchdog's timeout


@pytest.fixture
def notifications() -> Iterator[Notifications]:
    path = Path(f"/tmp/outage-notify-{os.getpid()}.sock")  # AF_UNIX paths are short
    path.unlink(missing_ok=True)
    notes = Notifications(path)
    yield notes
    notes.close()
    path.unlink(missing_ok=True)


def watched(collector: CollectorProcess, notifications: Notifications) -> None:
    """Start the collector as systemd would, with a watchdog of WATCHDOG_SECONDS."""
    collector.start(env={"NOTIFY_SOCKET": str(notifications.path),
                         "WATCHDOG_USEC": str(int(WATCHDOG_SECONDS * 1_000_000))})


class Emitters:
    """Real agents (spool, forwarder, pinned HTTPS) emitting in their own threads until
    stopped; each event's n is its agent's count, so loss and duplicates are countable."""

    def __init__(self, collector: CollectorProcess, prefix: str, **audit: object) -> None:
        """audit: agent settings over the defaults (collector_url: an ordered list)."""
        self.agents: list[AuditAgent] = []
        for i in range(AGENTS):
            config = collector.agent_config(f"{prefix}-{i}", **({"batch_max_events": 200}
                                                                 | audit))
            enroll(config.audit, "workstation", collector.token(), None)
            self.agents.append(AuditAgent(config.audit, "workstation"))
        self.emitted = [0] * AGENTS
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._emit, args=(i,), daemon=True)
                         for i in range(AGENTS)]

    def start(self) -> None:
        for agent in self.agents:
            agent.start()
        for thread in self._threads:
            thread.start()

    def _emit(self, index: int) -> None:
        agent = self.agents[index]
        while not self._stop.is_set():
            for _ in range(20):
                agent.emit("test.load", f"item {self.emitted[index]}", "info",
                           n=self.emitted[index])
                self.emitted[index] += 1
            self._stop.wait(0.05)  # about 400 events/s per agent: load, not a benchmark

    def acked(self) -> list[int]:
        """Each agent's acknowledged head: what the collector told it was stored."""
        return [agent.spool.acked().seq for agent in self.agents]

    def stop_emitting(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def drain(self, seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        while any(agent.spool.pending_count() for agent in self.agents):
            assert time.monotonic() < deadline, [a.spool.pending_count() for a in self.agents]
            time.sleep(0.1)

    def close(self) -> None:
        self.stop_emitting()
        for agent in self.agents:
            if agent.forwarder.alive:
                agent.stop(drain_seconds=0, reason="test over")


def stored_seqs(url: str, agent_id: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute(
            "SELECT seq FROM events WHERE agent_id = %s ORDER BY seq", (agent_id,))]


def load_ns(url: str, agent_id: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute(
            "SELECT (data::jsonb ->> 'n')::int FROM events WHERE agent_id = %s AND "
            "kind = 'test.load' ORDER BY seq", (agent_id,))]


def open_alerts(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return list(conn.execute("SELECT kind, detail FROM alerts WHERE acked_at IS NULL"))


def health(client: httpx.Client) -> dict:
    answer = client.get("/healthz")
    assert answer.status_code == 200, answer.text
    return answer.json()


def wait_for_database(client: httpx.Client, state: str, seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        seen = health(client)
        if seen["database"]["state"] == state:
            return seen
        assert time.monotonic() < deadline, seen
        time.sleep(0.1)


def wait_for_stored(url: str, agent_id: str, count: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while len(stored_seqs(url, agent_id)) < count:
        assert time.monotonic() < deadline, f"{agent_id}: fewer than {count} events stored"
        time.sleep(0.1)


def metric(client: httpx.Client, key: str, name: str) -> float:
    answer = client.get("/metrics", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.text
    for line in answer.text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the metrics")


def every_event_once(url: str, emitters: Emitters, prefix: str) -> None:
    """Every event each agent emitted is stored exactly once, its chain verifies, and no
    alert was raised (a lost acknowledged batch would show as a gap; a retry stored twice
    would break the unique (agent_id, seq))."""
    for i, agent in enumerate(emitters.agents):
        agent_id = f"{prefix}-{i}"
        seqs = stored_seqs(url, agent_id)
        assert seqs == list(range(1, len(seqs) + 1))
        assert seqs[-1] == agent.spool.head().seq
        assert load_ns(url, agent_id) == list(range(emitters.emitted[i]))
    from floor_agent.store import open_store

    store = open_store(url)
    try:
        for i in range(AGENTS):
            result = verify_agent(store, f"{prefix}-{i}")
            assert result.ok, result.report.problems
    finally:
        store.close()
    assert open_alerts(url) == []


def log_lines(collector: CollectorProcess) -> list[str]:
    return collector.log_path.read_text(errors="replace").splitlines()


def test_database_stopped_longer_than_the_watchdog(tmp_path: Path,
                                                   notifications: Notifications) -> None:
    server = PostgresServer().start()
    collector = CollectorProcess(tmp_path, database_url=server.new_database())
    emitters = None
    try:
        url = collector.config.collector.database_url
        assert url is not None
        metrics_key = collector.api_key("prometheus", ("metrics",))
        watched(collector, notifications)
        assert collector.proc is not None
        pid = collector.proc.pid
        emitters = Emitters(collector, "out")
        emitters.start()
        probe = BatchMaker(tmp_path, "out-probe")
        with pinned_client(collector.url, collector.ca, 10) as client:
            assert client.post("/api/v1/enroll", json=probe.enroll_payload(
                collector.token())).status_code == 201
            assert metric(client, metrics_key, "floor_collector_database_up") == 1
            for i in range(AGENTS):
                wait_for_stored(url, f"out-{i}", 200)

            server.halt()
            stopped = time.monotonic()
            seen = wait_for_database(client, "down")
            assert seen["status"] == "ok" and "since" in seen["database"]
            probe.emit(3)
            refused = client.post("/api/v1/ingest", content=probe.body())
            assert refused.status_code == 503, refused.text
            assert refused.json()["problem"] == "database_unavailable"
            assert int(refused.headers["retry-after"]) > 0
            assert metric(client, metrics_key, "floor_collector_database_up") == 0
            while time.monotonic() - stopped < OUTAGE_SECONDS:
                time.sleep(0.2)
            assert metric(client, metrics_key, "floor_collector_database_down_seconds") > \
                WATCHDOG_SECONDS
            # the watchdog was fed through an outage three times its timeout
            assert notifications.pinged_since(stopped + 2 * WATCHDOG_SECONDS)
            assert health(client)["database"]["down_seconds"] > WATCHDOG_SECONDS
            pending = sum(a.spool.pending_count() for a in emitters.agents)
            assert pending > 0  # the agents spooled meanwhile

            server.resume()
            wait_for_database(client, "up")
            assert metric(client, metrics_key, "floor_collector_database_up") == 1
            assert metric(client, metrics_key, "floor_collector_database_outages_total") == 1
            answer = client.post("/api/v1/ingest", content=probe.body())
            assert answer.status_code == 200, answer.text
            probe.ack(answer.json()["acked_seq"])
            emitters.stop_emitting()
            emitters.drain()
        assert collector.proc.poll() is None and collector.proc.pid == pid  # no restart
        every_event_once(url, emitters, "out")
        lines = log_lines(collector)
        assert len([line for line in lines if "database unreachable" in line]) == 1, lines
        assert len([line for line in lines if "database reachable again" in line]) == 1
        assert not [line for line in lines if "Traceback" in line], "\n".join(lines[-80:])
    finally:
        if emitters is not None:
            emitters.close()
        collector.stop()
        server.stop()


def test_primary_lost_and_standby_promoted_under_load(tmp_path: Path,
                                                      notifications: Notifications) -> None:
    primary = PostgresServer(settings=PRIMARY_SETTINGS).start()
    standby: StandbyServer | None = None
    collector: CollectorProcess | None = None
    emitters = None
    try:
        standby = StandbyServer(primary).start()
        standby.make_synchronous()
        url = (f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/"
               f"{primary.dbname}?target_session_attrs=read-write")
        collector = CollectorProcess(tmp_path, database_url=url)
        watched(collector, notifications)
        assert collector.proc is not None
        pid = collector.proc.pid
        emitters = Emitters(collector, "fo")
        emitters.start()
        with pinned_client(collector.url, collector.ca, 10) as client:
            for i in range(AGENTS):
                wait_for_stored(url, f"fo-{i}", 400)

            primary.halt("immediate")  # the primary's box dies: no shutdown at all
            acked_at_loss = emitters.acked()
            wait_for_database(client, "down")
            time.sleep(WATCHDOG_SECONDS)  # what a failover manager takes to decide
            standby.promote()
            wait_for_database(client, "up")
            # what the agents were told was stored before the primary died is on the standby
            promoted = standby.url
            for i, acked in enumerate(acked_at_loss):
                assert stored_seqs(promoted, f"fo-{i}")[:acked] == list(range(1, acked + 1))
            emitters.stop_emitting()
            emitters.drain()
        assert collector.proc.poll() is None and collector.proc.pid == pid  # followed, alive
        every_event_once(standby.url, emitters, "fo")
        lines = log_lines(collector)
        assert len([line for line in lines if "database unreachable" in line]) == 1, lines
        assert len([line for line in lines if "database reachable again" in line]) == 1
        assert not [line for line in lines if "Traceback" in line], "\n".join(lines[-80:])
    finally:
        if emitters is not None:
            emitters.close()
        if collector is not None:
            collector.stop()
        if standby is not None:
            standby.stop()
        primary.stop()
