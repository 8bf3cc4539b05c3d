"""The collector while its PostgreSQL is away, over real parts: a collector process under a
watchdog, real agents (spool and forwarder) emitting while the database stops, and a primary
with a synchronous streaming standby that is promoted when the primary dies.

What must hold: one log line when the database goes, one when it is back, never a traceback;
/healthz and /metrics say so; agents are answered 503 and keep spooling; the watchdog is fed
all along (an outage longer than its timeout restarts nothing); the collector follows a
promoted standby through its multi-host database_url without a restart; and every event an
agent was told was stored is in the database that survives, each exactly once. A collector
started while its database is away serves and waits for it (no restart loop under systemd);
one whose database answers no stops at once, with the reason. An agent answered 503 waits at
least the Retry-After it was told before its next try, and stays with that collector.
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
from collector_process import CollectorProcess, free_port
from postgres_replication import PRIMARY_SETTINGS, StandbyServer
from postgres_server import PostgresServer, postgres_server  # noqa: F401  (fixture)
from sd_notify_socket import Notifications

from floor_agent.audit.agent import AuditAgent, enroll
from floor_agent.audit.forwarder import pinned_client
from floor_agent.collector import self_audit
from floor_agent.collector.database_health import RETRY_AFTER_SECONDS
from floor_agent.collector.verify import verify_agent
from floor_agent.store import postgres
from floor_agent.store.migrations import SCHEMA_VERSION

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


def assert_one_outage_logged(collector: CollectorProcess) -> None:
    """One line when the database went, one when it came back, and never a traceback."""
    lines = log_lines(collector)
    assert len([line for line in lines if "database unreachable" in line]) == 1, lines[-80:]
    assert len([line for line in lines if "database reachable again" in line]) == 1, lines[-80:]
    assert not [line for line in lines if "Traceback" in line], "\n".join(lines[-80:])


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
        assert_one_outage_logged(collector)
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
        assert_one_outage_logged(collector)
    finally:
        if emitters is not None:
            emitters.close()
        if collector is not None:
            collector.stop()
        if standby is not None:
            standby.stop()
        primary.stop()


class Attempts:
    """Every request a real agent's forwarder sends, as it goes: when (monotonic), where,
    and the status it got (None: no answer). Hooks on the agent's own pinned clients."""

    def __init__(self, agent: AuditAgent) -> None:
        self.sent: list[tuple[float, str]] = []
        self.statuses: list[int | None] = []
        for client in agent.link.clients:
            client.event_hooks = {"request": [self._request], "response": [self._response]}

    def _request(self, request: httpx.Request) -> None:
        if len(self.sent) > len(self.statuses):  # the one before got no answer
            self.statuses.append(None)
        self.sent.append((time.monotonic(), f"{request.url.scheme}://{request.url.netloc.decode()}"))

    def _response(self, response: httpx.Response) -> None:
        self.statuses.append(response.status_code)

    def gaps_after(self, status: int) -> list[float]:
        """Seconds from each try answered `status` to the try after it."""
        return [self.sent[i + 1][0] - self.sent[i][0]
                for i in range(min(len(self.sent) - 1, len(self.statuses)))
                if self.statuses[i] == status]


def count_kind(url: str, agent_id: str, kind: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM events WHERE agent_id = %s AND kind = %s",
                           (agent_id, kind)).fetchone()
    return int(row[0]) if row else 0


def test_collector_started_while_its_database_is_away(tmp_path: Path,
                                                      notifications: Notifications) -> None:
    """The site's power returns and the collector's box boots before its database: under a
    watchdog it serves at once (READY, /healthz, 503 with Retry-After to everything else),
    one line says it waits, and when the database answers it does what its start does
    (schema, its own audit identity, the feeds) and takes what the agents spooled: every
    event once, one line back, no traceback, the same process."""
    server = PostgresServer().start()
    collector = CollectorProcess(tmp_path, database_url=server.new_database())
    emitters = None
    patient = None
    try:
        url = collector.config.collector.database_url
        assert url is not None
        collector.start()  # its agents enrolled while it ran once
        emitters = Emitters(collector, "boot")
        # an agent with a long backoff, a second URL where nothing listens, and a counter on
        # its requests: it must wait what the 503 asks, and stay with the collector that said it
        dead = f"https://127.0.0.1:{free_port()}"
        patient_config = collector.agent_config(
            "boot-patient", collector_url=[collector.url, dead], backoff_initial_seconds=0.05,
            backoff_max_seconds=30.0)
        enroll(patient_config.audit, "workstation", collector.token(), None)
        collector.stop()
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("DELETE FROM schema_mark")  # its start must check the schema again
        server.halt()  # the power cut: the database is not back when the collector boots

        booted = time.monotonic()
        watched(collector, notifications)  # returns once /healthz answers: it serves
        assert collector.proc is not None
        pid = collector.proc.pid
        assert notifications.ready, "READY=1 not sent while waiting for the database"
        emitters.start()
        patient = AuditAgent(patient_config.audit, "workstation")
        attempts = Attempts(patient)
        patient.start()
        with pinned_client(collector.url, collector.ca, 10) as client:
            seen = health(client)
            assert seen["status"] == "ok"
            assert seen["database"]["state"] == "down" and seen["database"]["starting"] is True
            for method, path in (("POST", "/api/v1/ingest"), ("GET", "/api/v1/agents"),
                                 ("GET", "/metrics"), ("GET", "/login")):
                answer = client.request(method, path, content=b"{}",
                                        headers={"Authorization": "Bearer not-read"})
                assert answer.status_code == 503, (path, answer.text)
                assert answer.json()["problem"] == "database_unavailable"
                assert int(answer.headers["retry-after"]) == RETRY_AFTER_SECONDS
            n = 0
            while time.monotonic() - booted < OUTAGE_SECONDS:
                patient.emit("test.load", f"item {n}", "info", n=n)  # wakes its forwarder
                n += 1
                time.sleep(0.2)
            # the watchdog was fed through a wait three times its timeout
            assert notifications.pinged_since(booted + 2 * WATCHDOG_SECONDS)
            assert health(client)["database"]["down_seconds"] > WATCHDOG_SECONDS
            assert sum(a.spool.pending_count() for a in emitters.agents) > 0  # spooled

            server.resume()
            seen = wait_for_database(client, "up")
            assert "starting" not in seen["database"]
            emitters.stop_emitting()
            emitters.drain()
            deadline = time.monotonic() + 60
            while patient.spool.pending_count():
                assert time.monotonic() < deadline, patient.forwarder.last_error
                time.sleep(0.1)
        assert collector.proc.poll() is None and collector.proc.pid == pid  # no restart
        assert len(notifications.ready) == 1
        every_event_once(url, emitters, "boot")
        # the start ran when the database came: the schema checked and marked again, the
        # collector's own trail (its second agent.started) delivered under its own identity
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT digest FROM schema_mark").fetchone() == (
                postgres.SCHEMA_DIGEST,)
            assert conn.execute("SELECT max(version) FROM schema_version").fetchone() == (
                SCHEMA_VERSION,)
        own = self_audit.agent_id(collector.config)
        deadline = time.monotonic() + 30
        while count_kind(url, own, "agent.started") < 2:
            assert time.monotonic() < deadline, "the collector's own trail was not delivered"
            time.sleep(0.2)
        # the patient agent: every event once, never sent elsewhere, each 503 waited out
        assert load_ns(url, "boot-patient") == list(range(n))
        assert {where for _, where in attempts.sent} == {collector.url}
        waits = attempts.gaps_after(503)
        assert waits, (attempts.sent, attempts.statuses)
        assert min(waits) >= RETRY_AFTER_SECONDS - 0.01, waits
        assert count_kind(url, "boot-patient", "agent.collector_switched") == 0
        lines = log_lines(collector)
        assert len([line for line in lines if "waiting for the database" in line]) == 1, lines
        assert len([line for line in lines if "database reachable after" in line]) == 1, lines
        assert not [line for line in lines if "database unreachable" in line], lines
        assert not [line for line in lines if "Traceback" in line], "\n".join(lines[-80:])
    finally:
        if patient is not None and patient.forwarder.alive:
            patient.stop(drain_seconds=0, reason="test over")
        if emitters is not None:
            emitters.close()
        collector.stop()
        server.stop()


@pytest.mark.parametrize("refusal", ["no such database", "newer schema"])
def test_a_database_that_answers_no_stops_the_start_at_once(
        tmp_path: Path, postgres_server: PostgresServer,  # noqa: F811
        notifications: Notifications, refusal: str) -> None:
    """Only unreachability is waited out: a database that answers but refuses (it does not
    exist, its schema is a newer release's) stops `collector run` with the reason, exit
    status 2, no traceback and no READY (systemd sees a failed start, not a healthy unit)."""
    url = postgres_server.new_database()
    collector = CollectorProcess(tmp_path, database_url=url)
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_server.admin_url, autocommit=True) as admin:
        if refusal == "no such database":
            admin.execute(f'DROP DATABASE "{name}"')
        else:
            with psycopg.connect(url, autocommit=True) as db:
                db.execute("DELETE FROM schema_mark")
                db.execute("INSERT INTO schema_version (version, applied_at, note) VALUES "
                           "(%s, 'later', 'a newer release')", (SCHEMA_VERSION + 1,))
    done = collector.run_to_exit(env={"NOTIFY_SOCKET": str(notifications.path),
                                      "WATCHDOG_USEC": str(int(WATCHDOG_SECONDS * 1_000_000))})
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    expected = "does not exist" if refusal == "no such database" else "never downgraded"
    assert "cannot start" in output and expected in output, output
    assert "Traceback" not in output and "waiting for the database" not in output, output
    assert not notifications.ready


def test_a_refusal_found_after_waiting_still_stops_the_collector(
        tmp_path: Path, notifications: Notifications) -> None:
    """Away at start, then back but refusing (its database gone): the collector waited while
    nothing answered, and stops with the reason once something says no (exit status 2)."""
    server = PostgresServer().start()
    collector: CollectorProcess | None = None
    try:
        url = server.new_database()
        collector = CollectorProcess(tmp_path, database_url=url)
        with psycopg.connect(server.admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{url.rsplit("/", 1)[1]}"')
        server.halt()
        watched(collector, notifications)  # serves: nothing answers yet
        assert collector.proc is not None
        with pinned_client(collector.url, collector.ca, 10) as client:
            assert health(client)["database"]["starting"] is True
        server.resume()
        assert collector.proc.wait(60) == 2
        lines = log_lines(collector)
        assert len([line for line in lines if "waiting for the database" in line]) == 1, lines
        refused = [line for line in lines if "cannot start" in line]
        assert len(refused) == 1 and "does not exist" in refused[0], lines
        assert not [line for line in lines if "Traceback" in line], "\n".join(lines[-80:])
    finally:
        if collector is not None and collector.proc is not None \
                and collector.proc.poll() is None:
            collector.proc.kill()
            collector.proc.wait()
        server.stop()
