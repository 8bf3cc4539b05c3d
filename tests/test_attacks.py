"""Attacks and bad requests against the real collector process over HTTPS."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest
from attack_clients import enrolled
from batches import BatchMaker, alter_event
from collector_process import CollectorProcess
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def ingest(client: httpx.Client, body: bytes) -> httpx.Response:
    return client.post("/api/v1/ingest", content=body)


def send_good(client: httpx.Client, maker: BatchMaker, count: int = 3) -> int:
    maker.emit(count)
    response = ingest(client, maker.body())
    assert response.status_code == 200, response.text
    acked = response.json()["acked_seq"]
    maker.ack(acked)
    return int(acked)


def alert_kinds(api: httpx.Client, agent_id: str) -> list[str]:
    return [a["kind"] for a in api.get("/api/v1/alerts", params={"agent_id": agent_id}).json()
            ["alerts"]]


def source_alerts(api: httpx.Client, kind: str) -> list[tuple[str | None, str | None]]:
    """(agent_id, source) of the `kind` alerts: issue 15 counts what fails before
    authentication against the sender's address, never against the agent a batch names."""
    return [(a["agent_id"], a["source"]) for a in api.get(
        "/api/v1/alerts", params={"kind": kind}).json()["alerts"]]


def stored_seqs(api: httpx.Client, agent_id: str) -> list[int]:
    events = api.get("/api/v1/events", params={"agent_id": agent_id, "limit": 1000}).json()
    return sorted(e["seq"] for e in events["events"])


def test_forged_signature_rejected_and_flagged(collector: CollectorProcess, client: httpx.Client,
                                               api: httpx.Client, tmp_path: Path) -> None:
    maker = enrolled(collector, client, tmp_path, "ws-forge")
    send_good(client, maker)
    maker.emit(2)
    response = ingest(client, maker.body(key=Ed25519PrivateKey.generate()))
    assert response.status_code == 401
    assert "signature" in response.json()["detail"]
    assert alert_kinds(api, "ws-forge") == []  # issue 15: not the agent's alert...
    assert source_alerts(api, "bad_signature") == [(None, "127.0.0.1")]  # ...the sender's
    assert stored_seqs(api, "ws-forge") == [1, 2, 3]  # good data before it kept...
    send_good(client, maker, 1)  # ...and good data after it still stored
    assert stored_seqs(api, "ws-forge") == [1, 2, 3, 4, 5, 6]


def test_altered_event_rejected_and_flagged(collector: CollectorProcess, client: httpx.Client,
                                            api: httpx.Client, tmp_path: Path) -> None:
    maker = enrolled(collector, client, tmp_path, "ws-alter")
    send_good(client, maker)
    maker.emit(3)
    response = ingest(client, alter_event(maker.body(), 1, subject="nothing to see here"))
    assert response.status_code == 422
    assert "seq 5" in response.json()["detail"]
    assert alert_kinds(api, "ws-alter") == ["altered_event"]
    assert stored_seqs(api, "ws-alter") == [1, 2, 3]  # nothing of the altered batch stored
    response = ingest(client, maker.body())  # the genuine batch still goes in
    assert response.status_code == 200
    assert stored_seqs(api, "ws-alter") == [1, 2, 3, 4, 5, 6]


def test_replayed_batch_rejected_and_flagged(collector: CollectorProcess, client: httpx.Client,
                                             api: httpx.Client, tmp_path: Path) -> None:
    maker = enrolled(collector, client, tmp_path, "ws-replay")
    maker.emit(3)
    body = maker.body()
    assert ingest(client, body).status_code == 200
    again = ingest(client, body)  # the agent's retry (no answer came): a duplicate
    assert again.status_code == 200 and again.json()["acked_seq"] == 3, again.text
    assert alert_kinds(api, "ws-replay") == []
    # the old checkpoint over other content: a replay
    replay = ingest(client, alter_event(body, 0, subject="nothing to see here"))
    assert replay.status_code == 409
    assert "replay" in replay.json()["detail"]
    assert alert_kinds(api, "ws-replay") == ["replay"]
    maker.ack(3)
    send_good(client, maker)
    assert stored_seqs(api, "ws-replay") == [1, 2, 3, 4, 5, 6]


def test_another_agents_events_replayed_are_flagged(collector: CollectorProcess,
                                                    client: httpx.Client, api: httpx.Client,
                                                    tmp_path: Path) -> None:
    victim = enrolled(collector, client, tmp_path, "ws-victim")
    thief = enrolled(collector, client, tmp_path, "ws-thief")
    victim.emit(2)
    stolen = orjson.loads(victim.body())
    thief.emit(1)
    own = orjson.loads(thief.body())
    own["events"] = stolen["events"] + own["events"]
    response = ingest(client, orjson.dumps(own))
    assert response.status_code == 422
    assert alert_kinds(api, "ws-thief") == ["replay"]


def test_unenrolled_agent_refused(collector: CollectorProcess, client: httpx.Client,
                                  api: httpx.Client, tmp_path: Path) -> None:
    stranger = BatchMaker(tmp_path, "ws-stranger")
    stranger.emit(2)
    response = ingest(client, stranger.body())
    assert response.status_code == 401
    assert "not enrolled" in response.json()["detail"]
    assert source_alerts(api, "unknown_agent") == [(None, "127.0.0.1")]  # issue 15
    assert stored_seqs(api, "ws-stranger") == []


def test_fork_rejected_and_flagged(collector: CollectorProcess, client: httpx.Client,
                                   api: httpx.Client, tmp_path: Path) -> None:
    maker = enrolled(collector, client, tmp_path, "ws-fork")
    send_good(client, maker)
    # Same identity, a second history: e.g. a spool restored from an old backup and rewritten.
    twin = BatchMaker(tmp_path, "ws-fork", key=maker.key, spool_name="ws-fork-twin")
    twin.emit(3, kind="test.other")
    response = ingest(client, twin.body())
    assert response.status_code == 409
    assert "fork" in response.json()["detail"]
    assert alert_kinds(api, "ws-fork") == ["fork"]
    send_good(client, maker)  # the true chain goes on
    assert stored_seqs(api, "ws-fork") == [1, 2, 3, 4, 5, 6]


def test_heartbeat_past_the_stored_head_flags_a_lost_tail(
        collector: CollectorProcess, client: httpx.Client, api: httpx.Client,
        tmp_path: Path) -> None:
    maker = enrolled(collector, client, tmp_path, "ws-tail")
    send_good(client, maker)
    maker.emit(4)
    maker.ack(7)  # the events are dropped from the spool without being delivered
    response = ingest(client, maker.body())  # an empty batch: the signed head at seq 7
    assert response.status_code == 200
    assert alert_kinds(api, "ws-tail") == ["gap"]


@pytest.mark.parametrize(("body", "status", "words"), [
    (b"{not json", 400, "not valid JSON"),
    (b"[]", 422, "expected a JSON object"),
    (b'{"agent_id": 7}', 422, "agent_id"),
    (b'{"agent_id": "ws-x", "events": "many"}', 422, "batch.events"),
    (b'{"agent_id": "ws-x", "events": [], "prev_hash": "00"}', 422, "prev_hash"),
])
def test_malformed_batches_get_a_clear_4xx(client: httpx.Client, body: bytes, status: int,
                                           words: str) -> None:
    response = ingest(client, body)
    assert response.status_code == status
    assert words in response.json()["detail"]


def test_wrong_types_oversized_and_partial_batches_store_nothing(
        collector: CollectorProcess, client: httpx.Client, api: httpx.Client,
        tmp_path: Path) -> None:
    maker = enrolled(collector, client, tmp_path, "ws-bad")
    maker.emit(5)
    batch = orjson.loads(maker.body())
    batch["events"][3]["event"]["seq"] = "four"
    response = ingest(client, orjson.dumps(batch))
    assert response.status_code == 422
    assert "batch.events[3].event.seq" in response.json()["detail"]
    too_many = dict(batch, events=batch["events"] * 2000)
    response = ingest(client, orjson.dumps(too_many))
    assert response.status_code == 413
    huge = b'{"agent_id": "ws-bad", "pad": "' + b"x" * (17 * 1024 * 1024) + b'"}'
    assert ingest(client, huge).status_code == 413
    response = ingest(client, alter_event(maker.body(), 0, subject="stick\x00"))
    assert response.status_code == 422 and "NUL" in response.json()["detail"]
    payload = BatchMaker(tmp_path, "ws-nul").enroll_payload(collector.token())
    response = client.post("/api/v1/enroll", json=payload | {"hostname": "host\x00"})
    assert response.status_code == 422
    assert api.get("/api/v1/events", params={"kind": "usb.\x00"}).status_code == 422
    assert stored_seqs(api, "ws-bad") == []
    assert ingest(client, maker.body()).status_code == 200  # and the collector still serves
    assert stored_seqs(api, "ws-bad") == [1, 2, 3, 4, 5]
