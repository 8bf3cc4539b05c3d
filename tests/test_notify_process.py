"""Notifications in the real collector process (`floor-agent collector run`): alerts raised by
an agent's batch over HTTPS reach a webhook receiver; killed (SIGKILL) with notifications
pending for a receiver that is down, the collector restarted delivers every one, none twice;
each sent or failed notification is an event on its own trail, verified like any agent's."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from batches import BatchMaker
from collector_process import CollectorProcess
from notify_receivers import WebhookReceiver, wait_until
from postgres_server import PostgresServer, postgres_server  # noqa: F401  (fixture)

from floor_agent.audit.forwarder import pinned_client
from floor_agent.collector import self_audit
from floor_agent.store.interface import EventQuery

KEY = b"process-hook-key-0123456789"


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(KEY)
    try:
        yield receiver
    finally:
        receiver.stop()


def notifications(receiver: WebhookReceiver, key_file: Path) -> dict[str, Any]:
    return {"channels": {"hook": {"type": "webhook", "url": receiver.url,
                                  "hmac_key": {"file": str(key_file)},
                                  "timeout_seconds": 2.0}},
            "routes": [{"name": "doors", "kinds": ["door.*"], "to": ["hook"]}],
            "retry": {"initial_seconds": 0.2, "max_seconds": 1.0},
            "digest": {"max_per_window": 100}, "poll_seconds": 0.2}


def door_alerts(collector: CollectorProcess, maker: BatchMaker, first: int, n: int) -> None:
    """n door.forced events (distinct doors: n alerts) delivered in one batch."""
    maker.spool.emit_many([("door.forced", f"door d{i}", "critical", {"door": f"d{i}"})
                           for i in range(first, first + n)])
    with pinned_client(collector.url, collector.ca, 10.0) as client:
        answer = client.post("/api/v1/ingest", content=maker.body())
    assert answer.status_code == 200, answer.text
    maker.ack(answer.json()["acked_seq"])


def trail_kinds(collector: CollectorProcess, kind: str) -> list[dict[str, Any]]:
    store = collector.store()
    try:
        own = self_audit.agent_id(collector.config)
        return store.query_events(EventQuery(agent_id=own, kind=kind, limit=1000)).events
    finally:
        store.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.new_database()


def test_killed_with_notifications_pending_the_restarted_collector_sends_each_once(
        tmp_path: Path, webhook: WebhookReceiver, database_url: str | None) -> None:
    key_file = tmp_path / "hook.key"
    key_file.write_bytes(KEY)
    key_file.chmod(0o600)
    collector = CollectorProcess(tmp_path / "c", database_url,
                                 notifications=notifications(webhook, key_file))
    collector.start()
    try:
        maker = BatchMaker(tmp_path, "door-1")
        with pinned_client(collector.url, collector.ca, 10.0) as client:
            answer = client.post("/api/v1/enroll",
                                 json=maker.enroll_payload(collector.token("door"), "door"))
        assert answer.status_code == 201, answer.text

        # the receiver is down: the notifications wait in the outbox, attempts counted
        door_alerts(collector, maker, 0, 12)
        store = collector.store()
        try:
            wait_until(lambda: len(store.list_notifications()) == 12
                       and store.list_notifications()[0]["attempts"] >= 2)
            assert {r["state"] for r in store.list_notifications()} == {"pending"}
        finally:
            store.close()
        assert collector.proc is not None
        os.kill(collector.proc.pid, signal.SIGKILL)  # no goodbye, nothing flushed
        collector.proc.wait()
        collector.proc = None

        webhook.start()
        collector.start()
        wait_until(lambda: len(webhook.hooks) >= 12)
        door_alerts(collector, maker, 12, 3)  # and the restarted collector goes on
        wait_until(lambda: len(webhook.hooks) >= 15)
        time.sleep(1.0)  # a few more polls: anything sent twice would arrive now
        assert len(webhook.hooks) == 15
        assert all(h.verified for h in webhook.hooks)
        assert len(set(webhook.ids())) == 15
        doors = sorted(h.doc["alert"]["detail"] for h in webhook.hooks)
        assert doors == sorted(f"door.forced: door d{i}" for i in range(15))

        sent = wait_until(lambda: len(trail_kinds(collector, "collector.notification_sent"))
                          == 15 and trail_kinds(collector, "collector.notification_sent"))
        assert sorted(e["data"]["notification_id"] for e in sent) == sorted(webhook.ids())
        failed = trail_kinds(collector, "collector.notification_failed")
        assert failed and all(e["data"]["channel"] == "hook" for e in failed)
        with pinned_client(collector.url, collector.ca, 10.0) as client:
            metrics = client.get("/metrics", headers={
                "authorization": f"Bearer {collector.api_key()}"}).text
        assert 'floor_notifications{channel="hook",state="sent"} 15.0' in metrics
    finally:
        collector.stop()
