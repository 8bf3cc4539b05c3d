"""A PostgreSQL store made before its database answers (open_store(url, wait=True)), and
which failed connections are waited out: the collector serves while its database is away at
start, and stops at once when the database answers no (store/pg_refusal.py).

Against a real PostgreSQL server of this module's own (it is stopped and started here) whose
pg_hba.conf asks one role for a password, so a wrong password is a real server's refusal.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from postgres_server import PostgresServer, _free_port

from floor_agent.store import open_store, pg_refusal
from floor_agent.store.interface import StoreError, StoreRefused, StoreUnavailable
from floor_agent.store.migrations import SCHEMA_VERSION

# what libpq and psycopg said, copied from real failures (PostgreSQL 15, libpq 18)
AWAY = [
    'connection failed: connection to server at "127.0.0.1", port 49305 failed: Connection '
    'refused\n\tIs the server running on that host and accepting TCP/IP connections?',
    "failed to resolve host 'db.invalid': [Errno -2] Name or service not known",
    'connection failed: connection to server at "10.0.0.5", port 5432 failed: timeout expired',
    'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  the '
    'database system is starting up',
    'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  the '
    'database system is shutting down',
    'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  sorry, '
    'too many clients already',
    'connection failed: connection to server at "127.0.0.1", port 5433 failed: session is '
    'read-only\nMultiple connection attempts failed. All failures were:\n- host: '
    "'127.0.0.1', port: '5432': connection failed: Connection refused",
    'connection failed: connection to server at "127.0.0.1", port 5432 failed: server closed '
    'the connection unexpectedly',
]
REFUSED = [
    'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  '
    'password authentication failed for user "collector"',
    'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  '
    'database "audit" does not exist',
    'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  role '
    '"nobody" does not exist',
    'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  no '
    'pg_hba.conf entry for host "10.1.1.1", user "collector", database "audit", no encryption',
    'connection failed: connection to server at "127.0.0.1", port 5432 failed: fe_sendauth: '
    'no password supplied',
    # one host refusing is a refusal, even when another of a multi-host URL is away
    'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  '
    'password authentication failed for user "collector"\nMultiple connection attempts '
    "failed. All failures were:\n- host: '127.0.0.1', port: '5433': connection failed: "
    "Connection refused",
]


@pytest.mark.parametrize("message", AWAY)
def test_a_database_that_cannot_take_us_now_is_waited_for(message: str) -> None:
    assert not pg_refusal.refused(message)


@pytest.mark.parametrize("message", REFUSED)
def test_a_database_that_says_no_is_a_refusal(message: str) -> None:
    assert pg_refusal.refused(message)


def test_hostile_or_empty_messages_are_judged_without_error() -> None:
    assert not pg_refusal.refused("")
    assert not pg_refusal.refused("FATAL:")  # nothing after it: no refusal named
    assert pg_refusal.refused("FATAL:  " + "x" * 100_000)
    assert not pg_refusal.refused("\x00" * 1000 + "Connection refused")


@pytest.fixture(scope="module")
def guarded() -> Iterator[PostgresServer]:
    """A server of its own (tests here stop it) where role `guarded` needs its password."""
    fd, name = tempfile.mkstemp(prefix="floor-hba-", suffix=".conf")
    hba = Path(name)
    with os.fdopen(fd, "w") as out:
        out.write("local all all trust\n"
                  "host all guarded 127.0.0.1/32 scram-sha-256\n"
                  "host all all 127.0.0.1/32 trust\n")
    hba.chmod(0o644)  # read by the postgres user
    server = PostgresServer(settings={"hba_file": str(hba)}).start()
    try:
        with psycopg.connect(server.admin_url, autocommit=True) as admin:
            admin.execute("CREATE ROLE guarded LOGIN PASSWORD 'right' CREATEDB")
        yield server
    finally:
        server.stop()
        hba.unlink(missing_ok=True)


@pytest.mark.postgres
def test_a_store_made_to_wait_answers_unavailable_until_opened(
        guarded: PostgresServer) -> None:
    url = guarded.new_database()
    guarded.halt()
    try:
        store = open_store(url, wait=True)  # reaches nothing: the server is down
        try:
            for call in (store.ping, store.list_agents, lambda: store.lead("stale-checkpoints"),
                         lambda: store.add_agent("ws-1", "workstation", "k", "h", "t")):
                with pytest.raises(StoreUnavailable) as caught:
                    call()
                assert not isinstance(caught.value, StoreRefused)
            with pytest.raises(StoreUnavailable) as refused_tcp:
                store.open()  # connection refused: away, not a refusal
            assert not isinstance(refused_tcp.value, StoreRefused)
            with pytest.raises(StoreUnavailable):
                store.ping()  # a failed open() leaves it waiting
        finally:
            guarded.resume()
        store.open()  # the fresh database gets this release's schema now
        store.open()  # and again is nothing
        store.ping()
        assert store.list_agents() == []
        with psycopg.connect(url) as conn:
            versions = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        assert versions == (SCHEMA_VERSION,)
        store.close()
        with pytest.raises(StoreError, match="closed"):
            store.open()
    finally:
        if not guarded._started:
            guarded.resume()


@pytest.mark.postgres
def test_a_database_that_answers_no_is_refused_not_waited_for(
        guarded: PostgresServer) -> None:
    dbname = "guarded_owned"
    with psycopg.connect(guarded.admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {dbname} OWNER guarded")
    host = f"127.0.0.1:{guarded.port}"
    for refused_url in (f"postgresql://guarded:wrong@{host}/{dbname}",
                        f"postgresql://guarded@{host}/{dbname}",  # no password at all
                        f"postgresql://postgres@{host}/no_such_database",
                        f"postgresql://nobody@{host}/{dbname}",
                        # one host away, the other refusing: still a refusal
                        f"postgresql://guarded:wrong@127.0.0.1:{_free_port()},{host}/{dbname}"):
        store = open_store(refused_url, wait=True)
        with pytest.raises(StoreRefused) as caught:
            store.open()
        assert "wrong" not in str(caught.value).replace("wrong@", "")  # never the password
        store.close()
    right = open_store(f"postgresql://guarded:right@{host}/{dbname}", wait=True)
    right.open()
    right.close()


@pytest.mark.postgres
def test_a_schema_from_a_newer_release_is_an_error_not_an_outage(
        guarded: PostgresServer) -> None:
    url = guarded.new_database()
    open_store(url).close()
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("DELETE FROM schema_mark")  # as a newer release would have marked it
        admin.execute("INSERT INTO schema_version (version, applied_at, note) VALUES "
                      "(%s, 'now', 'a newer release')", (SCHEMA_VERSION + 1,))
    store = open_store(url, wait=True)
    with pytest.raises(StoreError, match="never downgraded") as caught:
        store.open()
    assert not isinstance(caught.value, StoreUnavailable)
    store.close()
