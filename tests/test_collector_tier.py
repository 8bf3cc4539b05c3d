"""The collector tier with all its real parts at once (issue 23, point 7).

One site for the whole module: a PostgreSQL primary with a synchronous streaming standby, and
two collector processes A and B (B as another host, its own state, audit identity and server
certificate from the site's CA) both on the multi-host database_url with
target_session_attrs=read-write. Agents, door and browser speak pinned HTTPS to the processes.
The tests: one batch at both collectors and twice at one; a signed request replayed across
them; a live feed on B of what A ingested; and last, because it destroys the site, the bad
day: A killed -9 and then the primary lost under load, with nothing lost or doubled.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from batches import BatchMaker, alter_event
from collector_process import CollectorProcess
from parallel_calls import at_once
from postgres_replication import PRIMARY_SETTINGS, StandbyServer
from postgres_server import PostgresServer
from test_database_outage import (
    Emitters,
    assert_one_outage_logged,
    every_event_once,
    stored_seqs,
    wait_for_database,
    wait_for_stored,
)
from test_failover_e2e import kill_9, second_collector
from test_site_state import Stream
from test_web_support import PASSWORD, csrf_of

from floor_agent.audit.collector_link import pinned_client
from floor_agent.collector.verify import verify_agent
from floor_agent.dashboard import passwords, sessions
from floor_agent.protocol.event import utc_timestamp
from floor_agent.protocol.kinds.agent import AgentKind
from floor_agent.protocol.request_signing import HEADER, sign_header
from floor_agent.store.interface import Store

pytestmark = pytest.mark.postgres

ROUNDS = 100
CREDENTIALS = "/api/v1/credentials"
# The signed-batch agents of the first tests fall silent when their test ends; a
# stale_checkpoint alert for them while the last test runs would be right, and is not what
# this module is about (tests/test_site_state.py covers the sweep).
SECTION: dict[str, Any] = {"stale_checkpoint_seconds": 3600}


@dataclass
class Site:
    primary: PostgresServer
    standby: StandbyServer
    a: CollectorProcess
    b: CollectorProcess
    root: Path

    def store(self) -> Store:
        return self.a.store()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("tier")
    primary = PostgresServer(settings=PRIMARY_SETTINGS).start()
    standby: StandbyServer | None = None
    started: list[CollectorProcess] = []
    try:
        standby = StandbyServer(primary).start()
        standby.make_synchronous()
        url = (f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/"
               f"{primary.dbname}?target_session_attrs=read-write")
        a = CollectorProcess(root / "a", url, **SECTION)
        b = second_collector(a, root / "b", url, **SECTION)
        for collector in (a, b):
            collector.start()
            started.append(collector)
        yield Site(primary, standby, a, b, root)
    finally:
        for collector in reversed(started):
            collector.stop()
        if standby is not None:
            standby.stop()
        primary.stop()



def enrolled(site: Site, agent_id: str, role: str = "workstation") -> BatchMaker:
    """A signed-batch agent enrolled over HTTPS at A with a one-time token."""
    maker = BatchMaker(site.root / "agents", agent_id)
    with pinned_client(site.a.url, site.a.ca, 10) as client:
        answer = client.post("/api/v1/enroll",
                             json=maker.enroll_payload(site.a.token(role), role))
    assert answer.status_code == 201, answer.text
    return maker


def alert_rows(site: Site) -> list[dict[str, Any]]:
    store = site.store()
    try:
        return store.list_alerts(limit=1000)
    finally:
        store.close()


def acknowledge(site: Site, rows: list[dict[str, Any]]) -> None:
    """The alerts a test raised on purpose, seen: the tests after it expect none open."""
    store = site.store()
    try:
        for row in rows:
            assert store.ack_alert(row["id"], "tests", "raised on purpose",
                                   utc_timestamp(datetime.now(UTC)))
    finally:
        store.close()


# -- a) one batch at both collectors and twice at one -------------------------------------
def test_the_same_batch_at_both_collectors_and_twice_at_one_is_stored_once(
        site: Site) -> None:
    maker = enrolled(site, "ws-race")
    before = alert_rows(site)
    clients = [pinned_client(c.url, site.a.ca, 60) for c in (site.a, site.b, site.a, site.b)]
    head = 0
    try:
        with ThreadPoolExecutor(4) as pool:
            for round_no in range(ROUNDS):
                count = 1 + round_no % 7
                maker.emit(count)
                first = maker.body()
                retry = maker.body()  # the same events under a newer checkpoint
                if round_no == 3:
                    old, old_head = first, head + count
                # first to A and B at once, and each gets the retry as well: twice at one
                answers = at_once(pool=pool, calls=[
                    lambda c=client, body=body: c.post(  # type: ignore[misc]
                        "/api/v1/ingest", content=body)
                    for client, body in zip(clients, (first, first, retry, retry),
                                            strict=True)])
                head += count
                assert [a.status_code for a in answers] == [200] * 4, \
                    (round_no, [a.text for a in answers])
                assert [a.json()["acked_seq"] for a in answers] == [head] * 4, round_no
                assert sum(a.json()["stored"] for a in answers) == count, round_no
                maker.ack(head)
    finally:
        for client in clients:
            client.close()
    assert alert_rows(site) == before  # no alert at all, not even a count raised
    store = site.store()
    try:
        seqs = [row["seq"] for row, _ in store.chain_events("ws-race", 1, 10**9)]
        assert seqs == list(range(1, head + 1))  # every event once
        agent = store.get_agent("ws-race")
        assert agent is not None and (agent.head_seq, agent.checkpoint_seq) == (head, head)
        result = verify_agent(store, "ws-race")
        assert result.ok, result.report.problems
    finally:
        store.close()

    # a genuine replay: the old checkpoint over events other than those it signed, at both
    forged = alter_event(old, 0, subject="/dev/elsewhere")
    with ThreadPoolExecutor(2) as pool, pinned_client(site.a.url, site.a.ca, 30) as to_a, \
            pinned_client(site.b.url, site.a.ca, 30) as to_b:
        refused = at_once(pool=pool, calls=[lambda: to_a.post("/api/v1/ingest", content=forged),
                                 lambda: to_b.post("/api/v1/ingest", content=forged)])
        assert [(r.status_code, r.json().get("problem")) for r in refused] == \
            [(409, "replay")] * 2, [r.text for r in refused]
        # the untouched old batch is a duplicate: acknowledged, and it moves nothing back
        again = to_b.post("/api/v1/ingest", content=old)
        assert again.status_code == 200, again.text
        assert (again.json()["acked_seq"], again.json()["stored"]) == (old_head, 0)
    raised = [row for row in alert_rows(site) if row not in before]
    assert [(r["kind"], r["severity"], r["agent_id"], r["count"]) for r in raised] == [
        ("replay", "critical", "ws-race", 2)]
    store = site.store()
    try:
        agent = store.get_agent("ws-race")
        assert agent is not None and (agent.head_seq, agent.checkpoint_seq) == (head, head)
        assert verify_agent(store, "ws-race").ok
    finally:
        store.close()
    acknowledge(site, raised)


# -- b) a signed request replayed to the other collector ----------------------------------
def test_a_signed_request_accepted_at_one_collector_is_refused_at_the_other(
        site: Site) -> None:
    door = enrolled(site, "door-tier", "door")
    with pinned_client(site.a.url, site.a.ca, 30) as to_a, \
            pinned_client(site.b.url, site.a.ca, 30) as to_b:

        def get(client: httpx.Client, header: str) -> httpx.Response:
            return client.get(CREDENTIALS, headers={HEADER: header})

        now = int(time.time() * 1000)
        for first, second in ((to_a, to_b), (to_b, to_a)):
            header = sign_header(door.key, "door-tier", "GET", CREDENTIALS, b"", now)
            now += 1
            accepted = get(first, header)
            assert accepted.status_code == 200, accepted.text
            replayed = get(second, header)  # the same request, captured, sent to the other
            assert replayed.status_code == 401, replayed.text
            assert "replayed" in replayed.json()["detail"]
        # one signed request at both at once, twice each: one answer, three refusals
        with ThreadPoolExecutor(4) as pool:
            for round_no in range(20):
                header = sign_header(door.key, "door-tier", "GET", CREDENTIALS, b"", now)
                now += 1
                answers = at_once(pool=pool, calls=[lambda c=c, h=header: get(c, h)  # type: ignore[misc]
                                         for c in (to_a, to_b, to_a, to_b)])
                assert sorted(r.status_code for r in answers) == [200, 401, 401, 401], \
                    (round_no, [r.text for r in answers])


# -- c) a live feed on B of what A ingested -----------------------------------------------
def logged_in_at(collector: CollectorProcess, name: str) -> str:
    """A viewer's session, logged in through the collector's own /login over HTTPS."""
    store = collector.store()
    try:
        assert store.add_user(name, "viewer", passwords.hash_password(PASSWORD), False,
                              utc_timestamp(datetime.now(UTC)))
    finally:
        store.close()
    with pinned_client(collector.url, collector.ca, 30) as client:
        form = client.get("/login")
        assert form.status_code == 200, form.text
        answer = client.post("/login", data={"username": name, "password": PASSWORD,
                                             "csrf_token": csrf_of(form.text), "next": "/"},
                             headers={"content-type": "application/x-www-form-urlencoded"},
                             follow_redirects=False)
        assert answer.status_code == 303, answer.text
        session = client.cookies.get(sessions.COOKIE)
    assert session
    return session


def test_a_live_feed_on_b_shows_what_a_ingested(site: Site) -> None:
    maker = enrolled(site, "ws-feed")
    session = logged_in_at(site.b, "ann")
    # B's own trail (the login just made) is on the feed too: this agent's events only
    events = Stream(site.b.url, "/events/stream?agent=ws-feed", session, ca=site.b.ca)
    alerts = Stream(site.b.url, "/alerts/stream", session, ca=site.b.ca)
    before = alert_rows(site)
    try:
        with pinned_client(site.a.url, site.a.ca, 30) as to_a:
            for batch in ([("usb.blocked", "/dev/sdb", "warning", {"vendor": "0781"}),
                           ("usb.allowed", "/dev/sdc", "info", {"vendor": "0951"})],
                          [("usb.allowed", "/dev/sdd", "info", {"vendor": "0951"})]):
                maker.spool.emit_many(batch)
                answer = to_a.post("/api/v1/ingest", content=maker.body())
                assert answer.status_code == 200, answer.text
                maker.ack(answer.json()["acked_seq"])
        seen = events.wait_for(lambda got: len(got) >= 3)
        store = site.store()
        try:
            stored = store.chain_events("ws-feed", 1, 3)
            raised = [row for row in store.list_alerts(agent_id="ws-feed") if row not in before]
        finally:
            store.close()
        assert [(n, e["agent_id"], e["seq"], e["kind"]) for n, e in seen] == [
            ("audit", "ws-feed", 1, "usb.blocked"), ("audit", "ws-feed", 2, "usb.allowed"),
            ("audit", "ws-feed", 3, "usb.allowed")]
        assert [e["hash"] for _, e in seen] == [row["hash"] for row, _ in stored]
        assert [(r["kind"], r["severity"]) for r in raised] == [("usb.blocked", "warning")]
        notes = alerts.wait_for(lambda got: any(e.get("agent_id") == "ws-feed"
                                                for _, e in got))
        assert [(n, e["kind"], e["severity"], e["detail"]) for n, e in notes
                if e.get("agent_id") == "ws-feed"] == [
            ("alert", "usb.blocked", "warning", raised[0]["detail"][:300])]
    finally:
        events.close()
        alerts.close()
    acknowledge(site, raised)


# -- d) the site's bad day (last: it kills A and the primary) -----------------------------
def switches(store: Store, agent_id: str) -> list[tuple[str, str, str]]:
    rows = [row for row, _ in store.chain_events(agent_id, 1, 10**9)
            if row["kind"] == AgentKind.COLLECTOR_SWITCHED]
    return [(r["data"]["from_url"], r["data"]["to_url"], r["data"]["reason"]) for r in rows]


def test_collector_killed_then_primary_lost_under_load(site: Site) -> None:
    a, b = site.a, site.b
    assert b.proc is not None
    pid = b.proc.pid
    emitters = Emitters(a, "day", collector_url=[a.url, b.url])
    names = [f"day-{i}" for i in range(len(emitters.agents))]
    url = a.config.collector.resolved_database_url()
    try:
        emitters.start()
        for name in names:
            wait_for_stored(url, name, 400)
        kill_9(a)  # A's box dies while its agents emit
        deadline = time.monotonic() + 60
        store = b.store()
        try:
            while not all(switches(store, name) for name in names):
                assert time.monotonic() < deadline, "the agents did not fail over to B"
                time.sleep(0.1)
        finally:
            store.close()
        moved = [len(stored_seqs(url, name)) for name in names]
        for name, count in zip(names, moved, strict=True):
            wait_for_stored(url, name, count + 200)  # B takes the load

        with pinned_client(b.url, b.ca, 10) as client:
            site.primary.halt("immediate")  # and then the database's primary box dies
            acked_at_loss = emitters.acked()
            wait_for_database(client, "down")
            time.sleep(2.0)  # what a failover manager takes to decide
            site.standby.promote()
            wait_for_database(client, "up")
        promoted = site.standby.url
        # what the agents were told was stored before the primary died is on the standby
        for name, acked in zip(names, acked_at_loss, strict=True):
            assert stored_seqs(promoted, name)[:acked] == list(range(1, acked + 1))
        for name, acked in zip(names, acked_at_loss, strict=True):
            wait_for_stored(promoted, name, acked + 200)  # still under load, on the standby
        emitters.stop_emitting()
        emitters.drain()
        every_event_once(promoted, emitters, "day")  # 0 lost, 0 duplicated, chains, no alert
    finally:
        emitters.close()
    assert b.proc.poll() is None and b.proc.pid == pid  # B followed without a restart
    store = b.store()
    try:
        for name in names:
            assert switches(store, name) == [(a.url, b.url, "failover")]  # once each
            agent = store.get_agent(name)
            assert agent is not None and agent.checkpoint_seq == agent.head_seq
    finally:
        store.close()
    assert_one_outage_logged(b)
