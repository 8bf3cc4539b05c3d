"""The collector's query, alert, enrollment and ops endpoints, on the real process over HTTPS."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from batches import BatchMaker
from collector_process import CollectorProcess, wait_for_kind

from floor_agent.audit.agent import EnrollmentError, enroll
from floor_agent.audit.forwarder import pinned_client
from floor_agent.collector import self_audit
from floor_agent.collector.core import Collector


@pytest.fixture
def client(collector: CollectorProcess) -> Iterator[httpx.Client]:
    with pinned_client(collector.url, collector.ca, 10) as c:
        yield c


def test_enrollment_tokens_are_one_time_and_role_bound(collector: CollectorProcess,
                                                       client: httpx.Client,
                                                       tmp_path: Path) -> None:
    config = collector.agent_config("ws-enroll")
    token = collector.token()
    assert enroll(config.audit, "workstation", token, None) == "ws-enroll"
    key = config.audit.state_dir / "agent.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    other = collector.agent_config("ws-enroll-2")
    with pytest.raises(EnrollmentError, match="401.*already used"):
        enroll(other.audit, "workstation", token, None)  # a token works once
    with pytest.raises(EnrollmentError, match="403.*role 'door'"):
        enroll(other.audit, "workstation", collector.token("door"), None)
    maker = BatchMaker(tmp_path, "ws-enroll")  # the id is taken: another key cannot claim it
    response = client.post("/api/v1/enroll", json=maker.enroll_payload(collector.token()))
    assert response.status_code == 409
    bad = maker.enroll_payload(collector.token()) | {"agent_id": "x", "public_key": "bm9wZQ=="}
    assert client.post("/api/v1/enroll", json=bad).status_code == 422


def test_ca_pinning_refuses_another_server(collector: CollectorProcess, tmp_path: Path) -> None:
    stranger = CollectorProcess(tmp_path / "other")  # a different CA
    with pinned_client(collector.url, stranger.ca, 5) as client, \
            pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        client.get("/healthz")


def test_reading_requires_an_api_key(client: httpx.Client) -> None:
    for path in ("/api/v1/events", "/api/v1/agents", "/api/v1/alerts", "/metrics"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"authorization": "Bearer fa-api-wrong"}
                          ).status_code == 401
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/openapi.json").json()["info"]["title"] == "floor-agent collector"


def test_event_filters_and_pagination(collector: CollectorProcess, client: httpx.Client,
                                      tmp_path: Path) -> None:
    client.headers["authorization"] = f"Bearer {collector.api_key()}"
    makers = {}
    for name in ("ws-a", "ws-b"):
        makers[name] = maker = BatchMaker(tmp_path, name)
        assert client.post("/api/v1/enroll", json=maker.enroll_payload(collector.token())
                           ).status_code == 201
        maker.spool.emit_many([("usb.blocked", "stick", "warning", {"i": i}) for i in range(30)]
                              + [("net.check", "egress", "info", {"i": i}) for i in range(45)]
                              + [("net.breach", "usb0", "critical", {})])
        assert client.post("/api/v1/ingest", content=maker.body()).status_code == 200

    def fetch(**params: object) -> list[dict]:
        out: list[dict] = []
        params = dict(params, limit=params.get("limit", 20))
        while True:
            page = client.get("/api/v1/events", params=params).json()
            # the collector's own trail (agent.started, ...) is in the store too
            out += [e for e in page["events"] if e["agent_id"] in makers]
            if not page["next_cursor"]:
                return out
            params["cursor"] = page["next_cursor"]

    everything = fetch()
    assert len(everything) == 152
    assert len({(e["agent_id"], e["seq"]) for e in everything}) == 152  # each exactly once
    keys = [(e["ts"], e["id"]) for e in everything]
    assert keys == sorted(keys, reverse=True)
    assert len(fetch(agent_id="ws-a")) == 76
    assert len(fetch(kind="usb.blocked")) == 60
    assert len(fetch(kind_prefix="net.")) == 92
    assert len(fetch(severity=["critical", "warning"])) == 62
    assert len(fetch(agent_id="ws-b", kind="net.breach")) == 1
    middle = everything[70]["ts"]
    assert len(fetch(since=middle)) + len(fetch(until=middle)) == 152
    assert client.get("/api/v1/events", params={"severity": "loud"}).status_code == 422
    assert client.get("/api/v1/events", params={"since": "yesterday"}).status_code == 422
    assert client.get("/api/v1/events", params={"cursor": "junk"}).status_code == 422
    agents = {a["agent_id"]: a for a in client.get("/api/v1/agents").json()["agents"]}
    assert agents["ws-a"]["head_seq"] == 76 and agents["ws-a"]["checkpoint_seq"] == 76
    assert agents["ws-a"]["chain_state"] == "intact"


def test_alerts_can_be_acknowledged_once_with_who_and_comment(
        collector: CollectorProcess, client: httpx.Client, tmp_path: Path) -> None:
    client.headers["authorization"] = f"Bearer {collector.api_key('alice')}"
    stranger = BatchMaker(tmp_path, "ws-unknown")
    stranger.emit(1)
    for _ in range(3):
        client.post("/api/v1/ingest", content=stranger.body())
    alerts = client.get("/api/v1/alerts", params={"open": "true"}).json()["alerts"]
    assert [(a["kind"], a["count"]) for a in alerts] == [("unknown_agent", 3)]  # counted once
    alert_id = alerts[0]["id"]
    assert client.post(f"/api/v1/alerts/{alert_id}/ack", json={}).status_code == 422
    response = client.post(f"/api/v1/alerts/{alert_id}/ack", json={"comment": "test rig"})
    assert response.json() == {"id": alert_id, "acked_by": "alice"}
    assert client.post(f"/api/v1/alerts/{alert_id}/ack", json={"comment": "again"}
                       ).status_code == 404
    acked = client.get("/api/v1/alerts").json()["alerts"][0]
    assert acked["acked_by"] == "alice" and acked["ack_comment"] == "test rig"
    assert acked["acked_at"] is not None
    assert client.get("/api/v1/alerts", params={"open": "true"}).json()["alerts"] == []
    # acknowledging is itself an audit event on the collector's own trail
    store = collector.store()
    try:
        own = wait_for_kind(store, self_audit.agent_id(collector.config), "alert.acknowledged")
    finally:
        store.close()
    assert own["data"]["alert_id"] == alert_id and own["data"]["who"] == "alice"
    assert own["data"]["comment"] == "test rig" and own["data"]["alert_kind"] == "unknown_agent"
    # issue 15: an unenrolled id's batches are counted per sending address, not per agent
    assert own["data"]["alert_agent"] is None and own["data"]["via"] == "api"


def test_metrics_in_prometheus_format(collector: CollectorProcess, client: httpx.Client,
                                      tmp_path: Path) -> None:
    client.headers["authorization"] = f"Bearer {collector.api_key()}"
    maker = BatchMaker(tmp_path, "ws-m")
    client.post("/api/v1/enroll", json=maker.enroll_payload(collector.token()))
    maker.emit(7)
    # the collector's own trail sends batches too: compare before and after, it adds >= 0
    before = metric_values(client.get("/metrics").text)
    client.post("/api/v1/ingest", content=maker.body())
    after = metric_values(client.get("/metrics").text)
    accepted = 'floor_ingest_batches_total{result="accepted"}'
    assert after[accepted] - before.get(accepted, 0.0) >= 1.0
    stored = "floor_ingest_events_stored_total"
    assert after[stored] - before.get(stored, 0.0) >= 7.0
    assert after["floor_agents_enrolled"] == 2.0  # ws-m and the collector itself


def metric_values(text: str) -> dict[str, float]:
    """Prometheus text format to {series: value}; every line must parse."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            values[series] = float(value)
    return values


def test_silent_agent_gets_a_stale_checkpoint_alert(collector: CollectorProcess,
                                                    tmp_path: Path) -> None:
    maker = BatchMaker(tmp_path, "ws-quiet")
    store = collector.store()
    try:
        store.add_agent("ws-quiet", "workstation", maker.public_key, "h",
                        "2026-01-01T00:00:00.000000Z")
        assert Collector(store).flag_stale_checkpoints(60) == ["ws-quiet"]
        assert [a["kind"] for a in store.list_alerts(agent_id="ws-quiet")] == \
            ["stale_checkpoint"]
    finally:
        store.close()
