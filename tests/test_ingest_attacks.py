"""Issue 15, items 5, 6, 10, 12 and 13 (look-alike ids), against the real collector process
over HTTPS, on SQLite and PostgreSQL: junk batches from the LAN, oversized fields and integers,
rows forged into or deleted from the store, wrong clocks, and ids differing only in case.

Each test plays the attacker first, then checks what the issue expects of the collector.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
from attack_clients import enrolled
from batches import BatchMaker
from collector_process import CollectorProcess
from dashboard_clients import add_user, browser, login

from floor_agent.collector.ingest import event_params
from floor_agent.protocol.batch import WireEvent, batch_body
from floor_agent.protocol.checkpoint import Checkpoint, link
from floor_agent.protocol.event import AuditEvent, canonical, utc_timestamp
from floor_agent.store.sql import INSERT_EVENT

INGEST = "/api/v1/ingest"


def deliver(client: httpx.Client, maker: BatchMaker, expect: int = 200) -> httpx.Response:
    """Send the agent's next batch; on success forget what was acknowledged, as agents do."""
    response = client.post(INGEST, content=maker.body())
    assert response.status_code == expect, response.text
    if expect == 200:
        maker.ack(response.json()["acked_seq"])
    return response


def signed_heartbeat(maker: BatchMaker, ts: str) -> bytes:
    """The agent's own key signing its current head at `ts` (a wrong clock, or a thief's)."""
    acked, _ = maker.spool.batch(1)
    checkpoint = Checkpoint(maker.agent_id, acked.seq, acked.hash, ts, maker.spool.boot_id)
    return batch_body(maker.agent_id, acked.hash, [], checkpoint.sign(maker.key))


def junk_heartbeat(agent_id: str, seq: int) -> bytes:
    """What anyone on the LAN can send: a real agent's id, a random signature."""
    checkpoint = {"agent_id": agent_id, "seq": seq, "hash": secrets.token_hex(32),
                  "ts": utc_timestamp(), "boot_id": "boot",
                  "signature": base64.b64encode(os.urandom(64)).decode()}
    return orjson.dumps({"agent_id": agent_id, "prev_hash": "00" * 32, "events": [],
                         "checkpoint": checkpoint})


def agent_row(api: httpx.Client, agent_id: str) -> dict[str, Any]:
    agents = {a["agent_id"]: a for a in api.get("/api/v1/agents").json()["agents"]}
    return agents[agent_id]


def alerts(api: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = api.get("/api/v1/alerts", params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["alerts"])


def tamper(collector: CollectorProcess, sql: str, params: tuple[Any, ...]) -> None:
    """An insider with the database: a statement straight into the store."""
    store = collector.store()
    try:
        with store._write() as cur:  # type: ignore[attr-defined]
            cur.execute(store._q(sql), params)  # type: ignore[attr-defined]
    finally:
        store.close()


def test_junk_batches_are_counted_per_sender_and_change_no_agent(
        collector: CollectorProcess, client: httpx.Client, api: httpx.Client,
        tmp_path: Path) -> None:
    real = enrolled(collector, client, tmp_path, "ws-real")
    real.emit(3)
    real.spool.emit_many([("net.breach", "egress", "critical", {"new": ["wan"]})])
    deliver(client, real)  # a genuine critical alert, then the noise
    before = agent_row(api, "ws-real")
    noisy = ["127.0.0.2", "127.0.0.3"]
    # the attack: junk naming the real agent (random signatures at ever new seqs, as 10,000
    # of them stored 10,000 critical alerts), unenrolled ids, unreadable batches, a 4 MiB id,
    # integers past 64 bits; each address below the edge's 30 offences a minute, past which
    # it would be shut out at accept (tests/test_collector_edge.py)
    for address in noisy:
        with browser(collector, address) as attacker:
            for seq in range(1, 19):
                assert attacker.post(INGEST, content=junk_heartbeat("ws-real", seq)
                                     ).status_code == 401
            for n in range(5):
                ghost = junk_heartbeat(f"ghost-{n}", 1)
                assert attacker.post(INGEST, content=ghost).status_code == 401
                assert attacker.post(INGEST, content=b'{"agent_id": "ws-real", "events": 7}'
                                     ).status_code == 422
    with browser(collector, "127.0.0.4") as attacker:
        huge = orjson.dumps({"agent_id": "w" * (4 * 1024 * 1024), "events": [],
                             "prev_hash": "00" * 32})
        response = attacker.post(INGEST, content=huge)
        assert response.status_code == 422 and len(response.text) < 1000
        assert "batch.agent_id" in response.json()["detail"]
        beyond = orjson.loads(junk_heartbeat("ws-real", 1))
        beyond["checkpoint"]["seq"] = 2**63
        response = attacker.post(INGEST, content=orjson.dumps(beyond))
        assert response.status_code == 422, response.text  # was a 500 with a traceback
        assert "checkpoint.seq" in response.json()["detail"]
        real.emit(1)
        event = orjson.loads(real.body())
        event["events"][0]["event"]["seq"] = 2**63
        response = attacker.post(INGEST, content=orjson.dumps(event))
        assert response.status_code == 422 and "events[0].event.seq" in response.text

    after = agent_row(api, "ws-real")
    for name in ("chain_state", "last_seen_at", "checkpoint_seq", "checkpoint_ts", "head_seq",
                 "open_alerts"):
        assert after[name] == before[name], name
    assert after["chain_state"] == "intact" and after["open_alerts"] == ["net.breach"]
    noise = [a for a in alerts(api, open="true", limit=1000) if a["source"] is not None]
    assert all(a["agent_id"] is None for a in noise)
    counted = {(a["kind"], a["source"]): a["count"] for a in noise}
    for address in noisy:
        assert counted[("bad_signature", address)] == 18
        assert counted[("unknown_agent", address)] == 5
        assert counted[("malformed_batch", address)] == 5
    assert counted[("malformed_batch", "127.0.0.4")] == 3
    assert len(noise) == 7  # one row per (kind, address), whatever was sent
    assert max(len(orjson.dumps(a)) for a in alerts(api, limit=1000)) < 2000  # bounded

    # the genuine critical alert is on the first screen, whatever the noise
    first = alerts(api)[0]
    assert (first["kind"], first["agent_id"], first["severity"]) == (
        "net.breach", "ws-real", "critical")
    add_user(collector, "ann", "viewer")
    with browser(collector) as viewer:
        assert login(viewer, "ann").status_code == 303
        page = viewer.get("/alerts?state=open").text
    row = page[page.index('data-testid="alert-row"'):]
    assert "net.breach" in row[:row.index("</tr>")]
    assert "from 127.0.0.2" in page  # the noise is listed by sender, below it


def test_noise_rows_are_bounded_however_many_addresses(
        collector: CollectorProcess, api: httpx.Client) -> None:
    for n in range(70):  # more addresses than MAX_NOISE_SOURCES open rows per kind
        with browser(collector, f"127.0.0.{100 + n}") as attacker:
            assert attacker.post(INGEST, content=junk_heartbeat(f"ghost-{n}", 1)
                                 ).status_code == 401
    rows = alerts(api, kind="unknown_agent", open="true", limit=1000)
    assert len(rows) == 65  # 64 addresses, then one row they share
    shared = [r for r in rows if r["source"] == "other addresses"]
    assert len(shared) == 1 and shared[0]["count"] == 6
    assert sum(r["count"] for r in rows) == 70  # every batch counted


def test_forged_row_past_the_head_is_quarantined_and_the_agent_goes_on(
        collector: CollectorProcess, client: httpx.Client, api: httpx.Client,
        tmp_path: Path) -> None:
    maker = enrolled(collector, client, tmp_path, "ws-victim")
    maker.emit(3)
    deliver(client, maker)
    head = bytes.fromhex(agent_row(api, "ws-victim")["head_hash"])
    # the attack: a correctly chained row appended past the agent's head, straight into the
    # store (it made every later genuine batch a `fork`, for ever)
    forged = AuditEvent("ws-victim", 4, "boot-x", utc_timestamp(), "usb.allowed", "info",
                        "forged stick", {}).validate()
    row = event_params(WireEvent(forged, canonical(forged), link(head, canonical(forged))),
                       utc_timestamp())
    tamper(collector, INSERT_EVENT, row)
    maker.emit(2)
    deliver(client, maker)  # the genuine batch is stored...
    maker.emit(1)
    deliver(client, maker)  # ...and the next one too: the agent is not stuck
    events = api.get("/api/v1/events", params={"agent_id": "ws-victim"}).json()["events"]
    assert sorted(e["seq"] for e in events) == [1, 2, 3, 4, 5, 6]
    assert "forged stick" not in {e["subject"] for e in events}
    (alert,) = alerts(api, agent_id="ws-victim")
    assert (alert["kind"], alert["severity"], alert["seq"]) == ("forged_rows", "critical", 4)
    assert "seq 4" in alert["detail"] and "quarantine" in alert["detail"]
    store = collector.store()
    try:
        (kept,) = store.list_quarantine("ws-victim")
    finally:
        store.close()
    assert (kept["seq"], kept["subject"]) == (4, "forged stick")  # kept as evidence


def test_deleted_rows_are_alerted_and_chain_state_follows_the_last_verification(
        collector: CollectorProcess, client: httpx.Client, api: httpx.Client,
        tmp_path: Path) -> None:
    maker = enrolled(collector, client, tmp_path, "ws-cut")
    maker.emit(25)
    deliver(client, maker)
    # the attack: the newest 20 rows deleted from the store (the next batch went in silently)
    tamper(collector, "DELETE FROM events WHERE agent_id = ? AND seq > ?", ("ws-cut", 5))
    maker.emit(2)
    deliver(client, maker)  # the genuine batch is accepted...
    (gap,) = alerts(api, agent_id="ws-cut")
    assert (gap["kind"], gap["severity"]) == ("gap", "critical")  # ...and the hole named
    assert "6..25" in gap["detail"] and "deleted" in gap["detail"]
    assert agent_row(api, "ws-cut")["chain_state"] == "broken"
    assert api.post(f"/api/v1/alerts/{gap['id']}/ack", json={"comment": "seen"}
                    ).status_code == 200
    # `collector verify` finds the chain broken: the acknowledged alert does not make it intact
    verify = subprocess.run([sys.executable, "-m", "floor_agent.cli", "collector", "verify",
                             "--config", str(collector.config_path)], capture_output=True,
                            text=True, timeout=120)
    assert verify.returncode == 1, verify.stdout + verify.stderr
    row = agent_row(api, "ws-cut")
    assert row["chain_state"] == "broken" and row["last_verification"]["ok"] is False
    add_user(collector, "eve", "auditor")
    with browser(collector) as auditor:
        assert login(auditor, "eve").status_code == 303
        page = auditor.get("/workstations").text
    cells = page[page.index('data-agent="ws-cut"'):]
    assert 'class="bad" data-testid="chain"' in cells[:cells.index("</tr>")]


def test_clocks_are_checked_and_received_time_orders_the_feed(
        collector: CollectorProcess, client: httpx.Client, api: httpx.Client,
        tmp_path: Path) -> None:
    maker = enrolled(collector, client, tmp_path, "ws-clock")
    maker.emit(2)
    deliver(client, maker)
    # the attack: a checkpoint signed with the agent's key at a time far ahead (it moved the
    # replay mark to 2099 and every later genuine batch was refused as replayed)
    response = client.post(INGEST, content=signed_heartbeat(maker,
                                                            "2099-01-01T00:00:00.000000Z"))
    assert response.status_code == 409 and "clock" in response.json()["detail"]
    response = client.post(INGEST, content=signed_heartbeat(maker, "zzz"))
    assert response.status_code == 422 and "checkpoint.ts" in response.json()["detail"]
    (skew,) = alerts(api, agent_id="ws-clock")
    assert (skew["kind"], skew["count"]) == ("clock_skew", 1) and "ahead" in skew["detail"]
    assert agent_row(api, "ws-clock")["checkpoint_ts"] < "2099"  # the mark did not move
    maker.emit(210)
    deliver(client, maker)  # nothing lost, nothing refused as a replay
    # events stamped far off: stored (signed, genuine), flagged, and not pinned nor buried
    clock = maker.spool._clock  # type: ignore[attr-defined]
    for stamp in ("2099-06-01T00:00:00.000000Z", "2001-06-01T00:00:00.000000Z"):
        maker.spool._clock = lambda stamp=stamp: stamp  # type: ignore[attr-defined]
        maker.spool.emit_many([("test.event", f"stamped {stamp[:4]}", "info", {})])
    maker.spool._clock = clock  # type: ignore[attr-defined]
    maker.emit(1)
    deliver(client, maker)
    skewed = [a for a in alerts(api, agent_id="ws-clock") if a["seq"] == 213]
    assert len(skewed) == 1 and skewed[0]["kind"] == "clock_skew"
    assert "ws-clock" in skewed[0]["detail"] and "years" in skewed[0]["detail"]
    events = {e["seq"]: e for e in api.get("/api/v1/events", params={
        "agent_id": "ws-clock", "limit": 1000}).json()["events"]}
    assert events[213]["ts"].startswith("2099") and events[213]["received_at"] < "2099"
    add_user(collector, "ann", "viewer")
    with browser(collector) as viewer:
        assert login(viewer, "ann").status_code == 303
        page = viewer.get("/events?agent=ws-clock").text
    seqs = [int(part.split('"')[0]) for part in page.split('data-seq="')[1:]]
    assert seqs[:3] == [215, 214, 213]  # newest received first: the 2001 one is on top too
    assert ">received</th>" in page  # the collector's time beside the agent's


def test_an_id_differing_only_in_case_cannot_enroll(
        collector: CollectorProcess, client: httpx.Client, tmp_path: Path) -> None:
    enrolled(collector, client, tmp_path, "RT-WS-01")
    twin = BatchMaker(tmp_path, "rt-ws-01")
    response = client.post("/api/v1/enroll", json=twin.enroll_payload(collector.token()))
    assert response.status_code == 409
    assert "'RT-WS-01'" in response.json()["detail"]
