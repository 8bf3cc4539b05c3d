"""Central workstation policy through the real collector process over HTTPS (SQLite and
PostgreSQL), and the `collector policy` CLI.

Admins set groups, assign workstations and approve device exceptions with an API key of the
`policy` scope; a workstation fetches its own document, signed by the policy key it pinned at
enrollment, and verifies it as protocol/policy.verify does; the long poll answers on a change
in its scope; the collector's expiry thread ends an exception (a new version, an event on the
collector's own trail). Hostile input is refused naming where; other roles, other scopes and
unsigned requests are refused.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from collector_process import CollectorProcess, wait_for_kind
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from postgres_server import PostgresServer, postgres_server  # noqa: F401  (fixture)

from floor_agent import cli
from floor_agent.audit.forwarder import pinned_client
from floor_agent.audit.keys import public_key_b64, public_key_from_b64
from floor_agent.collector import policy_key, self_audit
from floor_agent.collector.config import PolicySettings
from floor_agent.protocol import policy as wire
from floor_agent.protocol.request_signing import HEADER, sign_header

HASH = "Q" * 43 + "="
OFFICE = "allow with-interface equals { 03:*:* }\nreject with-interface 08:*:*\n"
LAB = "allow with-interface one-of { 03:*:* 08:*:* }\n"
ALLOW = [{"name": "collector", "addresses": ["10.0.0.5"], "tcp": [8443]}]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def policy_collector(request: pytest.FixtureRequest, tmp_path: Path
                     ) -> Iterator[CollectorProcess]:
    database_url = None
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        database_url = server.new_database()
    proc = CollectorProcess(tmp_path, database_url, policy=PolicySettings(
        default_group="office", expiry_check_seconds=1))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


class Agent:
    """An agent enrolled with its own key, signing its requests as agents do."""

    def __init__(self, collector: CollectorProcess, agent_id: str, role: str) -> None:
        self.agent_id = agent_id
        self.key = Ed25519PrivateKey.generate()
        self.client = pinned_client(collector.url, collector.ca, 30)
        answer = self.client.post("/api/v1/enroll", json={
            "token": collector.token(role), "agent_id": agent_id, "role": role,
            "public_key": public_key_b64(self.key), "hostname": agent_id})
        assert answer.status_code == 201, answer.text
        self.enrolled = answer.json()

    def get(self, target: str, signed: bool = True) -> httpx.Response:
        headers = {HEADER: sign_header(self.key, self.agent_id, "GET", target, b"")} \
            if signed else {}
        return self.client.get(target, headers=headers)

    def policy(self, pinned: Ed25519PublicKey, enforced: int | None = None
               ) -> wire.PolicyDocument:
        answer = self.get("/api/v1/policy")
        assert answer.status_code == 200, answer.text
        return wire.verify(answer.content, pinned, agent_id=self.agent_id,
                           enforced_version=enforced)


@pytest.fixture
def admin(policy_collector: CollectorProcess) -> Iterator[httpx.Client]:
    with pinned_client(policy_collector.url, policy_collector.ca, 30) as client:
        client.headers["authorization"] = \
            f"Bearer {policy_collector.api_key('admin', ('policy',))}"
        yield client


def soon(seconds: float = 1.5) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_groups_reach_their_workstations_signed_and_exceptions_expire(
        policy_collector: CollectorProcess, admin: httpx.Client) -> None:
    collector = policy_collector
    ws1, ws2 = Agent(collector, "ws-1", "workstation"), Agent(collector, "ws-2", "workstation")
    door = Agent(collector, "door-1", "door")
    pub_file = policy_key.key_dir(collector.config.collector) / policy_key.PUBLIC_FILE
    # the enrollment answer carries the policy key; the workstation pins it
    assert ws1.enrolled["policy_key"] == pub_file.read_text().strip()
    pinned = public_key_from_b64(ws1.enrolled["policy_key"])
    key = ws1.get("/api/v1/policy/key").json()
    assert key["policy_key"] == ws1.enrolled["policy_key"]
    assert key["fingerprint"] == policy_key.fingerprint(key["policy_key"])

    assert ws1.get("/api/v1/policy").status_code == 404  # nothing shapes it yet
    for group, rules, allow in (("office", OFFICE, ALLOW), ("lab", LAB, [])):
        answer = admin.post(f"/api/v1/policy/groups/{group}",
                            json={"usb_rules": rules, "netlock_allow": allow,
                                  "reason": f"{group} baseline"})
        assert answer.status_code == 200, answer.text
    assert admin.post("/api/v1/policy/assignments", json={
        "agent_id": "ws-2", "group": "lab", "reason": "CAD"}).json()["change"] == 3

    doc1, doc2 = ws1.policy(pinned), ws2.policy(pinned)
    assert (doc1.group, doc1.version, doc1.usb_rules) == ("office", 1, OFFICE)
    assert doc1.netlock_allow[0]["tcp"] == [8443]
    assert (doc2.group, doc2.version, doc2.usb_rules) == ("lab", 3, LAB)
    assert doc1.issuer == self_audit.agent_id(collector.config)
    assert ws1.get(f"/api/v1/policy?since={doc1.version}").status_code == 304
    # another workstation's document is refused by this one (and the key is not the TLS one)
    with pytest.raises(wire.PolicyRefused, match="wrong_agent"):
        wire.verify(ws2.get("/api/v1/policy").content, pinned, agent_id="ws-1",
                    enforced_version=None)
    with pytest.raises(wire.PolicyRefused, match="bad_signature"):
        wire.verify(ws1.get("/api/v1/policy").content,
                    Ed25519PrivateKey.generate().public_key(), agent_id="ws-1",
                    enforced_version=None)

    # the long poll: unchanged, it times out; an exception for ws-1 wakes it, not ws-2's
    quiet = ws1.get(f"/api/v1/policy/watch?since={doc1.version}&wait=0.3").json()
    assert quiet == {"version": 1, "changed": False}
    woken: dict[str, Any] = {}

    def watch() -> None:
        started = time.monotonic()
        woken["answer"] = ws1.get(f"/api/v1/policy/watch?since={doc1.version}&wait=30").json()
        woken["seconds"] = time.monotonic() - started

    waiter = threading.Thread(target=watch)
    waiter.start()
    time.sleep(0.5)
    approved = admin.post("/api/v1/policy/exceptions", json={
        "device": {"id": "056a:0374", "serial": "8CQ00N1005512", "hash": HASH},
        "scope": "agent:ws-1", "reason": "new tablet, ticket 42", "expires_at": soon(2.5)})
    assert approved.status_code == 201, approved.text
    item = approved.json()["exception"]
    waiter.join(30)
    assert woken["answer"] == {"version": item["approved_change"], "changed": True}
    assert woken["seconds"] < 10
    with_exception = ws1.policy(pinned, doc1.version)
    assert [e.exception_id for e in with_exception.exceptions] == [item["exception_id"]]
    assert with_exception.exceptions[0].rule == (
        f'allow id 056a:0374 serial "8CQ00N1005512" hash "{HASH}"')
    assert ws2.policy(pinned, doc2.version).exceptions == ()  # exactly one workstation

    # the expiry thread ends it: a new version without it, an event on the collector's trail
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        after = ws1.policy(pinned, with_exception.version)
        if after.version > with_exception.version:
            break
        time.sleep(0.3)
    assert after.exceptions == () and after.version > with_exception.version
    store = collector.store()
    try:
        event = wait_for_kind(store, self_audit.agent_id(collector.config),
                              "policy.exception_expired")
        assert event["subject"] == item["exception_id"]
        for kind in ("policy.changed", "policy.assigned", "policy.exception_approved"):
            wait_for_kind(store, self_audit.agent_id(collector.config), kind)
    finally:
        store.close()
    changes = admin.get("/api/v1/policy/changes").json()["changes"]
    assert [c["kind"] for c in changes] == ["exception_expired", "exception_approved",
                                            "assigned", "group_set", "group_set"]
    assert changes[2]["before"] == {"group": "office", "assigned": False}
    assert admin.get("/api/v1/policy/exceptions?active=true").json() == {"exceptions": []}
    shown = admin.get("/api/v1/policy/documents/ws-2").json()
    assert shown["document"]["group"] == "lab"
    assert shown["content_hash"] == wire.content_hash(ws2.policy(pinned))

    # other roles and unsigned requests
    for path in ("/api/v1/policy", "/api/v1/policy/key", "/api/v1/policy/watch?since=0&wait=0"):
        assert door.get(path).status_code == 403, path
        assert ws1.get(path, signed=False).status_code == 401, path
    door.client.close()
    ws1.client.close()
    ws2.client.close()


def test_hostile_admin_input_and_callers_are_refused(policy_collector: CollectorProcess,
                                                     admin: httpx.Client) -> None:
    collector = policy_collector
    Agent(collector, "ws-1", "workstation").client.close()
    Agent(collector, "door-1", "door").client.close()
    bad_rules = admin.post("/api/v1/policy/groups/office", json={
        "usb_rules": "allow id 1d6b:0002\nallow frobnicate\n", "netlock_allow": [],
        "reason": "x"})
    assert bad_rules.status_code == 422 and bad_rules.json()["detail"].startswith(
        "usb_rules line 2: ")
    bad_allow = admin.post("/api/v1/policy/groups/office", json={
        "usb_rules": OFFICE, "netlock_allow": [{"name": "x", "addresses": [],
                                                "tcp": [1]}], "reason": "x"})
    assert bad_allow.status_code == 422 and "netlock_allow[0].addresses" in \
        bad_allow.json()["detail"]
    assert admin.post("/api/v1/policy/groups/bad%20name", json={
        "usb_rules": OFFICE, "netlock_allow": [], "reason": "x"}).status_code == 422
    assert admin.post("/api/v1/policy/groups/office", json={
        "usb_rules": OFFICE, "netlock_allow": [], "reason": ""}).status_code == 422
    big = admin.post("/api/v1/policy/groups/office", json={
        "usb_rules": "block\n" * 30_000, "netlock_allow": [], "reason": "big but fine"})
    assert big.status_code == 200, big.text  # 180 KiB of rules pass the edge's body limit
    unknown = admin.post("/api/v1/policy/assignments", json={
        "agent_id": "ws-1", "group": "nowhere", "reason": "typo"})
    assert unknown.status_code == 422 and "unknown group 'nowhere'" in unknown.json()["detail"]
    a_door = admin.post("/api/v1/policy/assignments", json={
        "agent_id": "door-1", "group": "office", "reason": "x"})
    assert a_door.status_code == 422 and "door agent" in a_door.json()["detail"]
    for body in ({"device": {"id": "056a:0374", "hash": "nope"}, "scope": "all"},
                 {"device": {"id": "056a:0374", "hash": HASH}, "scope": "group:nowhere"},
                 {"device": {"id": "056a:0374", "hash": HASH}, "scope": "everyone"},
                 {"scope": "all"},
                 {"event_id": 999999, "scope": "all"}):
        answer = admin.post("/api/v1/policy/exceptions", json=body | {"reason": "x"})
        assert answer.status_code == 422, (body, answer.text)
    assert admin.post("/api/v1/policy/exceptions/x-1/withdraw",
                      json={"reason": "x"}).status_code == 404

    with pinned_client(collector.url, collector.ca, 10) as other:
        assert other.get("/api/v1/policy/groups").status_code == 401
        other.headers["authorization"] = f"Bearer {collector.api_key('reader', ('read',))}"
        assert other.get("/api/v1/policy/groups").status_code == 403
        assert other.post("/api/v1/policy/assignments", json={
            "agent_id": "ws-1", "group": "office", "reason": "x"}).status_code == 403
    groups = admin.get("/api/v1/policy/groups").json()
    assert groups["default_group"] == "office" and groups["change"] == 1


def test_the_policy_cli(policy_collector: CollectorProcess, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    collector = policy_collector
    Agent(collector, "ws-1", "workstation").client.close()
    config = ["--config", str(collector.config_path)]
    rules = tmp_path / "rules.conf"
    rules.write_text(OFFICE)
    allow = tmp_path / "allow.yaml"
    allow.write_text("netlock:\n  allow:\n    - name: collector\n      addresses: [10.0.0.5]\n"
                     "      tcp: [8443]\n")
    assert cli.main(["collector", "policy", "set-group", "office", "--rules", str(rules),
                     "--allow", str(allow), "--reason", "baseline", *config]) == 0
    rules.write_text(LAB)
    assert cli.main(["collector", "policy", "set-group", "lab", "--rules", str(rules),
                     "--reason", "lab", *config]) == 0
    assert cli.main(["collector", "policy", "assign", "ws-1", "lab", "--reason", "move",
                     *config]) == 0
    assert cli.main(["collector", "policy", "approve", "--device-id", "056a:0374", "--hash",
                     HASH, "--scope", "group:lab", "--reason", "scanner", *config]) == 0
    assert "exception x-4 (group:lab)" in capsys.readouterr().out
    assert cli.main(["collector", "policy", "withdraw", "x-4", "--reason", "returned",
                     *config]) == 0
    rules.write_text("allow\n  block\n")
    assert cli.main(["collector", "policy", "set-group", "lab", "--rules", str(rules),
                     "--reason", "broken", *config]) == 2
    assert "usb_rules line 2" in capsys.readouterr().err
    assert cli.main(["collector", "policy", "assign", "ws-1", "nowhere", "--reason", "x",
                     *config]) == 2
    assert cli.main(["collector", "policy", "show", "--agent", "ws-1", *config]) == 0
    shown = capsys.readouterr().out
    assert '"group": "lab"' in shown and '"version": 5' in shown
    assert cli.main(["collector", "policy", "log", "--limit", "2", *config]) == 0
    log = capsys.readouterr().out
    assert '"exception_withdrawn"' in log and '"actor": "cli:' in log
    assert cli.main(["collector", "policy", "key", *config]) == 0
    printed = capsys.readouterr().out.strip()
    assert base64.b64decode(printed) and printed == (
        policy_key.key_dir(collector.config.collector) / policy_key.PUBLIC_FILE
    ).read_text().strip()
    # the CLI's changes are on the collector's own trail, delivered by the running collector
    store = collector.store()
    try:
        wait_for_kind(store, self_audit.agent_id(collector.config),
                      "policy.exception_withdrawn")
    finally:
        store.close()
