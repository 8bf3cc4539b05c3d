"""Two collectors on one database share the site's state (issue 23, point 4).

Each collector is the real app (create_app with the dashboard) over its own store instance,
its own connections, locks and memory, both on one real PostgreSQL database (or one SQLite
file, where that is a setup that exists): only the database can make them agree. Old code: a
signed door request replayed to the other collector was accepted (the replay memory was per
process); both collectors swept for stale checkpoints, each counting the site's alert; a live
feed showed only what its own process ingested. Failed logins of unknown names were already
counted in the store (login_failures); the test here holds that across two collectors.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
import uvicorn
from parallel_calls import at_once
from postgres_server import PostgresServer, postgres_server  # noqa: F401  (fixture)
from test_web_support import WebApp, csrf_of

from floor_agent.collector.site_feed import (
    AlertsNote,
    BatchNote,
    SiteFeed,
    alert_notes,
    batch_notes,
    parse_note,
    seq_ranges,
)
from floor_agent.dashboard import sessions
from floor_agent.protocol.request_signing import HEADER, sign_header
from floor_agent.store import pg_feed
from floor_agent.store.interface import NOTE_BYTES
from floor_agent.store.records import AlertDraft, EventRow

LOCKOUT = 5
LOCKED = "this account is locked"
WRONG = "wrong user name"
CREDENTIALS = "/api/v1/credentials"
# each guess waits for a hashing slot however long it takes (the test counts every guess)
# (cookies not Secure: the served apps speak plain HTTP on loopback)
SETTINGS: dict[str, Any] = {"lockout_failures": LOCKOUT, "address_failures": 1000,
                            "login_wait_seconds": 60.0, "secure_cookies": False}



def database_url(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/collector.db"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.new_database()


def pair(url: str, tmp_path: Path) -> Iterator[tuple[WebApp, WebApp]]:
    """Collectors A and B on one database, closed after."""
    a = WebApp(tmp_path / "a", url, **SETTINGS)
    b = WebApp(tmp_path / "b", url, **SETTINGS)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def two(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[WebApp, WebApp]]:
    """Collectors A and B on one database (SQLite: one file, as on one box)."""
    yield from pair(database_url(request, tmp_path, request.param), tmp_path)


@pytest.fixture
def two_pg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[WebApp, WebApp]]:
    yield from pair(database_url(request, tmp_path, "postgres"), tmp_path)


# -- signed-request replay memory -----------------------------------------------------------
def test_a_signed_request_replayed_to_the_other_collector_is_refused(
        two: tuple[WebApp, WebApp], tmp_path: Path) -> None:
    a, b = two
    door = a.agent("door-1", "door")
    clients = [a.client(), b.client(), a.client(), b.client()]

    def get(i: int, header: str) -> httpx.Response:
        return clients[i].get(CREDENTIALS, headers={HEADER: header})

    once = sign_header(door.key, "door-1", "GET", CREDENTIALS, b"")
    assert get(0, once).status_code == 200
    replayed = get(1, once)  # the same request, captured, sent to B
    assert replayed.status_code == 401 and "replayed" in replayed.json()["detail"]
    assert get(0, once).status_code == 401
    # a collector started afterwards (a restart, a third one) remembers it too
    c = WebApp(tmp_path / "c", a.store.url, **SETTINGS)
    try:
        assert c.client().get(CREDENTIALS, headers={HEADER: once}).status_code == 401
    finally:
        c.close()
    # one signed request sent twice to each collector at once: one answer, three refusals
    for round_ in range(20):
        header = sign_header(door.key, "door-1", "GET", CREDENTIALS, b"",
                             int(time.time() * 1000) + round_)
        answers = at_once([lambda i=i, h=header: get(i, h)  # type: ignore[misc]
                           for i in range(4)])
        assert sorted(r.status_code for r in answers) == [200, 401, 401, 401], round_
        assert all("replayed" in r.json()["detail"] for r in answers if r.status_code == 401)


# -- failed logins of unknown names ---------------------------------------------------------
def guess(url: str, name: str, password: str) -> str:
    """One login at a served collector, as a browser does it: the form, then the post."""
    with httpx.Client(base_url=url, timeout=120) as client:
        form = client.get("/login")
        return client.post("/login", data={"username": name, "password": password,
                                           "csrf_token": csrf_of(form.text), "next": "/"},
                           follow_redirects=False).text


def test_an_unknown_name_locks_when_guesses_alternate_between_collectors(
        two: tuple[WebApp, WebApp]) -> None:
    served = [Served(web) for web in two]
    try:
        urls = [one.url for one in served]
        answers = [guess(urls[i % 2], "ghost", f"wrong-{i}") for i in range(2 * LOCKOUT)]
        assert [WRONG in text for text in answers[:LOCKOUT - 1]] == [True] * (LOCKOUT - 1)
        assert LOCKED in answers[LOCKOUT - 1]  # the 5th failure, wherever it landed, locks
        assert all(LOCKED in text for text in answers[LOCKOUT:])
        assert two[0].store.login_locked_until("ghost") is not None
        # guesses at both at once: exactly the limit's failure locks, once
        parallel = at_once([lambda i=i: guess(urls[i % 2], "phantom",  # type: ignore[misc]
                                              f"wrong-{i}") for i in range(LOCKOUT)])
        assert sum(LOCKED in text for text in parallel) == 1
        assert sum(WRONG in text for text in parallel) == LOCKOUT - 1
        assert all(LOCKED in guess(url, "phantom", "another") for url in urls)
    finally:
        for one in served:
            one.stop()


# -- the stale-checkpoint sweep ------------------------------------------------------------
LEADER = """
import sys, time
from floor_agent.store import open_store
store = open_store(sys.argv[1])
assert store.lead("stale-checkpoints")
print("leading", flush=True)
time.sleep(600)
"""


@pytest.mark.postgres
def test_the_stale_sweep_runs_at_one_collector_and_moves_when_it_dies(
        two_pg: tuple[WebApp, WebApp]) -> None:
    a, b = two_pg
    a.agent("ws-1")  # enrolled days ago (the app's clock), never a checkpoint since

    def sweep_both() -> list[list[str]]:
        return at_once([lambda: a.collector.flag_stale_checkpoints(60),
                        lambda: b.collector.flag_stale_checkpoints(60)])

    # a third collector process leads; killed -9, the lead moves to A or B
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    leader = subprocess.Popen([sys.executable, "-c", LEADER, a.store.url], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert leader.stdout is not None and leader.stdout.readline().strip() == "leading"
        for _ in range(5):
            assert sweep_both() == [[], []]
        assert a.store.list_alerts(kind="stale_checkpoint") == []
    finally:
        os.kill(leader.pid, signal.SIGKILL)
        leader.wait()
    deadline = time.monotonic() + 60
    swept = sweep_both()
    while swept == [[], []] and time.monotonic() < deadline:
        time.sleep(0.1)  # PostgreSQL ends the dead session's backend, and its lock
        swept = sweep_both()
    assert sorted(swept) == [[], ["ws-1"]]
    first = swept.index(["ws-1"])
    for _ in range(20):
        assert sweep_both()[first] == ["ws-1"]  # the same one, every time
    (alert,) = a.store.list_alerts(kind="stale_checkpoint")
    assert alert["count"] == 21  # one per sweep of the site, not one per collector
    # the leader closes (a collector stopped): the other takes over at its next sweep
    (a, b)[first].store.close()
    other = (a, b)[1 - first]
    assert other.collector.flag_stale_checkpoints(60) == ["ws-1"]
    assert other.store.list_alerts(kind="stale_checkpoint")[0]["count"] == 22


@pytest.mark.postgres
def test_a_leader_that_closes_has_let_go_when_close_returns(
        postgres_server: PostgresServer) -> None:  # noqa: F811  (the fixture)
    """A collector stopped cleanly hands its duty over at once: the next collector to ask
    leads (before: the lock went only when the server had ended the closed session)."""
    from floor_agent.store import open_store
    from floor_agent.store.postgres import LEAD_KEYS

    url = postgres_server.new_database()
    key = LEAD_KEYS["stale-checkpoints"]
    with psycopg.connect(url, autocommit=True) as other:
        for round_ in range(30):
            leader = open_store(url)
            assert leader.lead("stale-checkpoints")
            leader.close()
            taken = other.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            assert taken == (True,), round_
            other.execute("SELECT pg_advisory_unlock(%s)", (key,))


def test_a_sqlite_collector_leads_every_sweep(tmp_path: Path) -> None:
    web = WebApp(tmp_path)
    try:
        web.agent("ws-1")
        assert web.collector.flag_stale_checkpoints(60) == ["ws-1"]
        assert web.store.feed_channel() is None  # live feeds stay in the process
    finally:
        web.close()


# -- live feeds ----------------------------------------------------------------------------
class Served:
    """A WebApp's app on a loopback port (plain HTTP, uvicorn in a thread) with its feed."""

    def __init__(self, web: WebApp) -> None:
        self.web = web
        self.server = uvicorn.Server(uvicorn.Config(web.app, host="127.0.0.1", port=0,
                                                    log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.feed = SiteFeed.start(web.store, web.collector)

    def stop(self) -> None:
        if self.feed is not None:
            self.feed.stop()
        self.server.should_exit = True
        self.thread.join(30)


class Stream:
    """One SSE stream read in a thread; its events collected as (name, payload)."""

    def __init__(self, url: str, path: str, session: str, ca: Path | None = None) -> None:
        """ca: the CA to pin for an https url (a collector process)."""
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.arrived = threading.Condition()
        self.opened = threading.Event()
        verify: ssl.SSLContext | bool = True
        if ca is not None:
            verify = ssl.create_default_context(cafile=str(ca))
        self.client = httpx.Client(base_url=url, timeout=httpx.Timeout(10, read=120),
                                   headers={"cookie": f"{sessions.COOKIE}={session}"},
                                   verify=verify)
        self.thread = threading.Thread(target=self._read, args=(path,), daemon=True)
        self.thread.start()
        assert self.opened.wait(30), f"{path} did not open"

    def _read(self, path: str) -> None:
        name = ""
        try:
            with self.client.stream("GET", path) as response:
                assert response.status_code == 200
                for line in response.iter_lines():
                    self.opened.set()
                    if line.startswith("event: "):
                        name = line[len("event: "):]
                    elif line.startswith("data: "):
                        with self.arrived:
                            self.events.append((name, orjson.loads(line[len("data: "):])))
                            self.arrived.notify_all()
        except httpx.HTTPError:
            pass
        finally:
            self.opened.set()

    def wait_for(self, done: Callable[[list[tuple[str, dict[str, Any]]]], bool],
                 seconds: float = 30) -> list[tuple[str, dict[str, Any]]]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: done(self.events), seconds), self.events
            return list(self.events)

    def close(self) -> None:
        self.client.close()


def session_of(web: WebApp, name: str) -> str:
    client = web.logged_in(name, "viewer")
    session = client.cookies.get(sessions.COOKIE)
    assert session
    return session


@pytest.mark.postgres
def test_a_live_feed_on_b_shows_what_a_ingested(two_pg: tuple[WebApp, WebApp]) -> None:
    a, b = two_pg
    served = [Served(a), Served(b)]
    streams: list[Stream] = []
    try:
        maker = a.agent("ws-1")
        session = session_of(b, "ann")
        events = Stream(served[1].url, "/events/stream", session)
        alerts = Stream(served[1].url, "/alerts/stream", session)
        streams += [events, alerts]
        # notes anyone who may NOTIFY on the database can send: dropped, the feed goes on
        hostile = psycopg.connect(a.store.url, autocommit=True)
        for junk in ("not json", '{"v": 1}', orjson.dumps({  # a note asking for a huge read
                "v": 1, "o": "x", "b": "ws-1", "r": [[1, 10**9]],
                "at": "2026-11-29T08:00:00.000000Z"}).decode()):
            hostile.execute("SELECT pg_notify(%s, %s)", (pg_feed.CHANNEL, junk))
        hostile.close()
        a.send("ws-1", [("usb.blocked", "/dev/sdb", "warning", {"vendor": "0781"}),
                        ("usb.allowed", "/dev/sdc", "info", {"vendor": "0951"})])
        seen = events.wait_for(lambda got: len(got) >= 2)
        assert [(n, e["agent_id"], e["seq"], e["kind"]) for n, e in seen] == [
            ("audit", "ws-1", 1, "usb.blocked"), ("audit", "ws-1", 2, "usb.allowed")]
        stored = a.store.chain_events("ws-1", 1, 2)
        assert [e["hash"] for _, e in seen] == [row["hash"] for row, _ in stored]
        notes = alerts.wait_for(lambda got: any(e.get("kind") == "usb.blocked"
                                                for _, e in got))
        assert ("alert", "ws-1") in {(n, e["agent_id"]) for n, e in notes}
        # what B ingests itself reaches its feed once (its own note coming back is skipped)
        maker.spool.emit_many([("usb.allowed", "/dev/sdd", "info", {"vendor": "0951"})])
        result = b.collector.ingest(maker.body())
        assert result.status == 200, result.message
        maker.ack(result.acked_seq)
        seen = events.wait_for(lambda got: any(e["seq"] == 3 for _, e in got))
        a.send("ws-1", [("usb.allowed", "/dev/sde", "info", {"vendor": "0951"})])
        seen = events.wait_for(lambda got: any(e["seq"] == 4 for _, e in got))
        assert [e["seq"] for n, e in seen if n == "audit"] == [1, 2, 3, 4]
    finally:
        for stream in streams:
            stream.close()
        for one in served:
            one.stop()


AT = "2026-11-29T08:00:00.000000Z"


def row(seq: int) -> EventRow:
    return EventRow("ws-1", seq, "b", AT, "test.event", "info", 1, "s", "{}", b"h" * 32, AT)


def test_notes_round_trip_and_hostile_ones_are_dropped() -> None:
    assert seq_ranges([1, 2, 3, 7, 9, 10]) == [(1, 3), (7, 7), (9, 10)]
    (note,) = batch_notes("me", "ws-1", [row(5), row(3), row(4), row(9)], AT)
    assert parse_note(note) == BatchNote("me", "ws-1", ((3, 5), (9, 9)), AT)
    scattered = batch_notes("me", "ws-1", [row(seq) for seq in range(1, 400, 2)], AT)
    assert len(scattered) > 1 and all(len(n.encode()) <= NOTE_BYTES for n in scattered)
    alerts = [AlertDraft("usb.blocked", "warning", "ws-1", "x" * 2000) for _ in range(60)]
    notes = alert_notes("me", alerts, AT)
    assert len(notes) > 1 and all(len(n.encode()) <= NOTE_BYTES for n in notes)
    parsed = [parse_note(n) for n in notes]
    assert all(isinstance(p, AlertsNote) for p in parsed)
    assert sum(len(p.alerts) for p in parsed if isinstance(p, AlertsNote)) == 60
    good = {"v": 1, "o": "me", "b": "ws-1", "r": [[1, 2]], "at": AT}
    for bad in ("", "[]", "null", orjson.dumps(good | {"v": 2}).decode(),
                orjson.dumps(good | {"b": "../etc"}).decode(),
                orjson.dumps(good | {"r": [[2, 1]]}).decode(),
                orjson.dumps(good | {"r": [[0, 1]]}).decode(),
                orjson.dumps(good | {"r": [[1, 10**6]]}).decode(),
                orjson.dumps(good | {"r": [[1, True]]}).decode(),
                orjson.dumps(good | {"r": [[1, 2]] * 65}).decode(),
                orjson.dumps(good | {"at": "yesterday"}).decode(),
                orjson.dumps(good | {"o": ""}).decode(),
                orjson.dumps({"v": 1, "o": "me", "a": [["k", "loud", None, ""]],
                              "at": AT}).decode(),
                orjson.dumps({"v": 1, "o": "me", "a": [], "at": AT}).decode()):
        assert parse_note(bad) is None, bad
    assert parse_note(orjson.dumps(good).decode()) == BatchNote("me", "ws-1", ((1, 2),), AT)
