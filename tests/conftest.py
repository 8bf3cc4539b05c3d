"""Shared fixtures: a real collector process on loopback HTTPS, over each store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from collector_process import CollectorProcess
from postgres_server import PostgresServer, postgres_server  # noqa: F401  (fixture)

# `client` and `api` (pinned HTTPS clients of the `collector` fixture) for the attack tests
# `audit_events` (AuditRecorder, and the record of every kind emitted, see test_event_kinds)
pytest_plugins = ["attack_clients", "audit_events"]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def collector(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CollectorProcess]:
    """The collector process, once on SQLite and once on a real PostgreSQL 15."""
    database_url = None
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        database_url = server.new_database()
    proc = CollectorProcess(tmp_path, database_url)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def sqlite_collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    """For tests that open the SQLite file themselves (tampering with the store)."""
    proc = CollectorProcess(tmp_path)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def web(tmp_path: Path) -> Iterator[object]:
    """The dashboard app on a real store (test_web_support.WebApp) whose clock is the real time,
    as the agents' events carry it; modules that need other settings define their own."""
    from datetime import UTC, datetime

    from test_web_support import WebApp

    app = WebApp(tmp_path)
    app.now = datetime.now(UTC)
    try:
        yield app
    finally:
        app.close()

