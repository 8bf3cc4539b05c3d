"""The dashboard app on a real store, collector and own-audit spool, for the web tests.

Route tests use Starlette's TestClient over https://testserver (so Secure cookies travel) and a
clock the test moves; agents are real signed batches (tests/batches.py) ingested by the real
Collector. The one test here checks the headers every page carries.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from batches import BatchMaker
from fastapi.testclient import TestClient

from floor_agent.audit.spool import Spool
from floor_agent.collector.api import create_app
from floor_agent.collector.config import DashboardSettings
from floor_agent.collector.core import Collector
from floor_agent.dashboard import passwords
from floor_agent.dashboard.app import extension
from floor_agent.protocol.event import utc_timestamp
from floor_agent.store import open_store

PASSWORD = "correct horse battery staple"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "no csrf_token in the page"
    return match[1]


class WebApp:
    """create_app over a fresh SQLite store, with the collector's own trail in a real Spool."""

    def __init__(self, root: Path, database_url: str | None = None, **settings: Any) -> None:
        self.root = root
        self.store = open_store(database_url or f"sqlite:///{root}/collector.db")
        self.own = Spool(root / "own-audit.db", "collector-self")
        self.now = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
        self.collector = Collector(self.store)
        dashboard = extension(DashboardSettings(**settings), clock=lambda: self.now)
        self.app = create_app(self.collector, self_audit=self.own, extensions=[dashboard])
        self.makers: dict[str, BatchMaker] = {}

    def close(self) -> None:
        self.own.close()
        self.store.close()

    def client(self) -> TestClient:
        return TestClient(self.app, base_url="https://testserver")

    def add_user(self, name: str, role: str, password: str = PASSWORD,
                 must_change: bool = False) -> None:
        assert self.store.add_user(name, role, passwords.hash_password(password), must_change,
                                   utc_timestamp(self.now))

    def login(self, client: TestClient, name: str, password: str = PASSWORD,
              next_path: str = "/") -> httpx.Response:
        form = client.get("/login")
        assert form.status_code == 200
        return client.post("/login", data={"username": name, "password": password,
                                           "csrf_token": csrf_of(form.text),
                                           "next": next_path}, follow_redirects=False)

    def logged_in(self, name: str, role: str) -> TestClient:
        self.add_user(name, role)
        client = self.client()
        assert self.login(client, name).status_code == 303
        return client

    def own_events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """What the dashboard wrote on the collector's own trail, oldest first."""
        _, pending = self.own.batch(100_000)
        events = [orjson.loads(p.body) for p in pending]
        return [e for e in events if kind is None or e["kind"] == kind]

    def agent(self, agent_id: str, role: str = "workstation") -> BatchMaker:
        maker = BatchMaker(self.root / "agents", agent_id)
        assert self.store.add_agent(agent_id, role, maker.public_key, f"{agent_id}.floor",
                                    utc_timestamp(self.now))
        self.makers[agent_id] = maker
        return maker

    def send(self, agent_id: str, events: list[tuple[str, str, str, dict[str, Any]]]) -> None:
        """Events emitted by an agent's spool, delivered as one signed batch through ingest."""
        maker = self.makers[agent_id]
        maker.spool.emit_many(events)
        result = self.collector.ingest(maker.body())
        assert result.status == 200, result.message
        maker.ack(result.acked_seq)


def test_pages_carry_security_headers_and_no_store(tmp_path: Path) -> None:
    web = WebApp(tmp_path)
    try:
        client = web.logged_in("ann", "viewer")
        for path in ("/login", "/", "/events", "/alerts"):
            response = client.get(path)
            assert response.status_code == 200, path
            assert "default-src 'self'" in response.headers["content-security-policy"]
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["cache-control"] == "no-store"
            assert "<script>" not in response.text and " style=" not in response.text
        assert client.get("/static/dashboard.css").status_code == 200
        assert client.get("/static/dashboard.js").status_code == 200
    finally:
        web.close()
