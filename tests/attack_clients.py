"""Clients the attack tests share: a pinned HTTPS client, one with an API key, and an agent
enrolled over HTTPS that may already have delivered some events (tests/batches.py makes them).

conftest.py registers this module as a plugin, so `client` and `api` are fixtures everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from batches import BatchMaker
from collector_process import CollectorProcess

from floor_agent.audit.forwarder import pinned_client


@pytest.fixture
def client(collector: CollectorProcess) -> Iterator[httpx.Client]:
    with pinned_client(collector.url, collector.ca, 30) as c:
        yield c


@pytest.fixture
def api(collector: CollectorProcess) -> Iterator[httpx.Client]:
    with pinned_client(collector.url, collector.ca, 30) as c:
        c.headers["authorization"] = f"Bearer {collector.api_key('auditor')}"
        yield c


def enrolled(collector: CollectorProcess, client: httpx.Client, tmp_path: Path,
             agent_id: str, events: int = 0) -> BatchMaker:
    """An agent enrolled over HTTPS with a one-time token, that has delivered `events`."""
    maker = BatchMaker(tmp_path, agent_id)
    response = client.post("/api/v1/enroll", json=maker.enroll_payload(collector.token()))
    assert response.status_code == 201, response.text
    if events:
        maker.emit(events)
        response = client.post("/api/v1/ingest", content=maker.body())
        assert response.status_code == 200, response.text
        maker.ack(response.json()["acked_seq"])
    return maker
