"""API key scopes, expiry, revocation and last use, against a real collector process (SQLite
and PostgreSQL), keys made and revoked by the CLI as an admin would.

Old code: any key read metrics, acknowledged alerts and created door people and cards, never
expired, and could be neither listed nor revoked.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from collector_process import CollectorProcess
from dashboard_clients import own_events

from floor_agent.audit.forwarder import pinned_client
from floor_agent.collector import api_keys
from floor_agent.collector.core import secret_hash
from floor_agent.protocol.event import utc_timestamp
from floor_agent.store import open_store

# Each scope's routes: (method, path, body). A route a key may use answers anything but
# 401/403 (404 for an alert that does not exist, 422 for an empty body); one it may not: 403.
ROUTES: dict[str, list[tuple[str, str, dict | None]]] = {
    "read": [("GET", "/api/v1/events", None), ("GET", "/api/v1/agents", None),
             ("GET", "/api/v1/alerts", None)],
    "ack": [("POST", "/api/v1/alerts/999999/ack", {"comment": "checked"})],
    "credentials": [("GET", "/api/v1/people", None), ("GET", "/api/v1/credentials/log", None),
                    ("POST", "/api/v1/people", {}), ("POST", "/api/v1/cards", {}),
                    ("POST", "/api/v1/levels", {}), ("POST", "/api/v1/holidays", {}),
                    ("POST", "/api/v1/people/nobody/revoke", None)],
    "metrics": [("GET", "/metrics", None)],
}


def call(client: httpx.Client, key: str, method: str, path: str,
         body: dict | None) -> httpx.Response:
    return client.request(method, path, json=body,
                          headers={"authorization": f"Bearer {key}"})


def cli(collector: CollectorProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "floor_agent.cli", "collector", "apikey",
                           *args, "--config", str(collector.config_path)],
                          capture_output=True, text=True, timeout=60)


def listing(collector: CollectorProcess) -> dict[str, list[str]]:
    """`apikey list` as {name: columns} (name, scopes, state, created, expires, last used,
    revoked)."""
    done = cli(collector, "list")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["name", "scopes", "state"]
    return {line.split()[0]: line.split() for line in lines[1:]}


def test_each_scope_opens_exactly_its_routes(collector: CollectorProcess) -> None:
    keys = {scope: collector.api_key(f"only-{scope}", (scope,)) for scope in api_keys.SCOPES}
    with pinned_client(collector.url, collector.ca, 30.0) as client:
        for scope, key in keys.items():
            for route_scope, routes in ROUTES.items():
                for method, path, body in routes:
                    answer = call(client, key, method, path, body)
                    if route_scope == scope:
                        assert answer.status_code not in (401, 403), (scope, path, answer.text)
                    else:
                        assert answer.status_code == 403, (scope, path, answer.text)
                        assert f"lacks the scope '{route_scope}'" in answer.json()["detail"]


def test_cli_keys_expire_revoke_at_once_list_last_use_and_are_audited(
        collector: CollectorProcess) -> None:
    made = cli(collector, "create", "--name", "soc", "--scope", "read", "--scope", "ack",
               "--expires-days", "90")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("fa-api-") and "\n" not in key
    unused = cli(collector, "create", "--name", "spare", "--scope", "metrics")
    assert unused.returncode == 0, unused.stderr
    again = cli(collector, "create", "--name", "soc", "--scope", "read")
    assert again.returncode == 2 and "revoke it first" in again.stderr
    expired = collector.api_key("old-soc", ("read",), utc_timestamp(
        datetime.now(UTC) - timedelta(seconds=1)))
    with pinned_client(collector.url, collector.ca, 30.0) as client:
        assert call(client, key, "GET", "/api/v1/alerts", None).status_code == 200
        refused = call(client, expired, "GET", "/api/v1/alerts", None)
        assert refused.status_code == 401 and "expired" in refused.json()["detail"]
        rows = listing(collector)
        assert rows["soc"][1:3] == ["read,ack", "active"]
        assert rows["soc"][5] != "never"  # last used: just now
        assert rows["spare"][5] == "never" and rows["spare"][1] == "metrics"
        assert rows["old-soc"][2] == "expired"
        expires = datetime.strptime(rows["soc"][4], "%Y-%m-%dT%H:%M:%S.%fZ")
        assert 89 <= (expires - datetime.now()).days <= 90
        assert key not in str(rows)
        revoked = cli(collector, "revoke", "soc")
        assert revoked.returncode == 0, revoked.stderr
        gone = call(client, key, "GET", "/api/v1/alerts", None)
        assert gone.status_code == 401
        assert listing(collector)["soc"][2] == "revoked"
        assert cli(collector, "revoke", "soc").returncode == 2  # nothing left to revoke
    created = own_events(collector, "apikey.created", 2)
    assert sorted(e["data"]["name"] for e in created) == ["soc", "spare"]
    soc = next(e for e in created if e["data"]["name"] == "soc")
    assert soc["data"]["scopes"] == ["read", "ack"] and soc["data"]["by"] == "cli"
    assert soc["data"]["expires_at"] == rows["soc"][4]
    (gone_event,) = own_events(collector, "apikey.revoked")
    assert gone_event["data"]["name"] == "soc"
    assert key not in str(created)


def test_last_use_is_written_at_most_once_a_minute(collector: CollectorProcess) -> None:
    key = collector.api_key("poller", ("read",))
    store = collector.store()
    try:
        with pinned_client(collector.url, collector.ca, 30.0) as client:
            call(client, key, "GET", "/api/v1/alerts", None)
            first = store.get_api_key(secret_hash(key))
            assert first is not None and first["last_used_at"] is not None
            for _ in range(5):
                assert call(client, key, "GET", "/api/v1/alerts", None).status_code == 200
            assert store.get_api_key(secret_hash(key))["last_used_at"] == first["last_used_at"]
    finally:
        store.close()


def test_a_key_from_before_scopes_keeps_every_scope_and_is_listed_legacy(
        collector: CollectorProcess) -> None:
    key = "fa-api-made-by-the-old-release"
    store = collector.store()
    try:  # the old release's insert: no scopes, no expiry
        store.add_api_key(secret_hash(key), "old-script", utc_timestamp())
    finally:
        store.close()
    with pinned_client(collector.url, collector.ca, 30.0) as client:
        for routes in ROUTES.values():
            for method, path, body in routes:
                answer = call(client, key, method, path, body)
                assert answer.status_code not in (401, 403), (path, answer.text)
    row = listing(collector)["old-script"]
    assert row[1:4] == ["legacy", "(all)", "active"]


def test_an_old_store_gains_the_key_columns_and_its_keys_stay_legacy(tmp_path: Path) -> None:
    """A store made before scopes (api_keys without scopes, expires_at, last_used_at)."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE api_keys (key_hash BLOB PRIMARY KEY, name TEXT NOT NULL, "
                   "created_at TEXT NOT NULL, revoked_at TEXT)")
        db.execute("INSERT INTO api_keys VALUES (?, 'old-script', '2026-01-01T00:00:00.000000Z',"
                   " NULL)", (secret_hash("fa-api-old"),))
    db.close()
    store = open_store(f"sqlite:///{path}")
    try:
        key = api_keys.record(store.get_api_key(secret_hash("fa-api-old")))
        assert key.legacy and key.scopes == api_keys.LEGACY_SCOPES and key.expires_at is None
        assert api_keys.refusal(key, "credentials", utc_timestamp()) is None
    finally:
        store.close()


@pytest.mark.parametrize(("scopes", "problem"), [
    ([], "at least one"), (["read", "admin"], "unknown ['admin']")])
def test_scopes_are_checked_at_creation(scopes: list[str], problem: str) -> None:
    assert problem in (api_keys.scopes_problem(scopes) or "")
