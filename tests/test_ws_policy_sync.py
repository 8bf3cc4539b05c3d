"""ws_policy/sync.py's transport and runner.py's start, against a minimal in-test collector.

The collector's policy routes are being written beside this (issue 20's collector side); until
they exist, `Collector` below answers exactly the contract (GET /api/v1/policy with ?since and
304, the long-polled /api/v1/policy/watch, /api/v1/policy/key), checking every request's agent
signature as the real one does, behind httpx's in-process transport. Only what needs a
transport is tested here: pulls, 304, the long poll delivering a new version within seconds,
trust on first use of the key, a changed key refused, the outage and its end. Verification,
apply and cache are tests/test_ws_policy*.py.
"""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import orjson
import pytest
from audit_events import AuditRecorder
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from ws_policy_docs import AGENT, at, document, signed

from floor_agent.audit.policy_key import POLICY_KEY_FILE, pin
from floor_agent.config.audit import AuditClientConfig
from floor_agent.protocol.request_signing import HEADER, parse_header, verify
from floor_agent.usb_guard.config import UsbGuardConfig
from floor_agent.usb_guard.rule import format_rule
from floor_agent.usb_guard.runner import UsbGuardRunner
from floor_agent.ws_policy.apply import PolicyEnforcer
from floor_agent.ws_policy.cache import PolicyCache
from floor_agent.ws_policy.config import PolicyConfig
from floor_agent.ws_policy.runner import WorkstationPolicy
from floor_agent.ws_policy.sync import PolicyClient, PolicySync

AGENT_KEY = Ed25519PrivateKey.generate()
CONFIG = PolicyConfig(enabled=True, watch_wait_seconds=20, backoff_initial_seconds=0.05,
                      backoff_max_seconds=0.2)


def b64(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
                            ).decode()


class Collector:
    """The policy routes as the contract gives them, agent-signed requests checked."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self.key = key
        self.version = 0
        self.envelope = b""
        self.down = False
        self.requests: list[str] = []
        self.changed = threading.Condition()

    def publish(self, version: int, **fields: Any) -> None:
        with self.changed:
            self.version = version
            self.envelope = signed(document(version, **fields), self.key)
            self.changed.notify_all()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        target = request.url.raw_path.decode()
        header = parse_header(request.headers.get(HEADER))
        verify(header, AGENT_KEY.public_key(), request.method, target, request.content)
        assert header.agent_id == AGENT
        self.requests.append(target)
        query = {k: v[0] for k, v in parse_qs(request.url.query.decode()).items()}
        path = request.url.path
        if path == "/api/v1/policy/key":
            return httpx.Response(200, json={"policy_key": b64(self.key)})
        if path == "/api/v1/policy":
            if not self.version:
                return httpx.Response(404, json={"detail": "no policy for ws-12"})
            if query.get("since") == str(self.version):
                return httpx.Response(304)
            return httpx.Response(200, content=self.envelope,
                                  headers={"content-type": "application/json"})
        if path == "/api/v1/policy/watch":
            since, wait = int(query["since"]), float(query["wait"])
            with self.changed:
                self.changed.wait_for(lambda: self.version != since, timeout=wait)
                return httpx.Response(200, json={"version": self.version,
                                                 "changed": self.version != since})
        return httpx.Response(404, json={"detail": "Not Found"})


def client(collector: Collector) -> PolicyClient:
    return PolicyClient(httpx.Client(base_url="https://collector.test",
                                     transport=httpx.MockTransport(collector)),
                        AGENT_KEY, AGENT)


def sync_for(tmp_path: Path, events: AuditRecorder, collector: Collector,
             pinned: Ed25519PrivateKey | None) -> PolicySync:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    text = None
    if pinned is not None:
        text = b64(pinned)
        pin(state, text)
    enforcer = PolicyEnforcer(AGENT, events, PolicyCache(state),
                              None if pinned is None else pinned.public_key(), None,
                              clock=lambda: at())
    return PolicySync(client(collector), enforcer, events, CONFIG, state, text)


@pytest.fixture
def events(tmp_path: Path) -> Any:
    recorder = AuditRecorder(tmp_path / "audit-events", agent_id=AGENT)
    yield recorder
    recorder.close()


def wait_for(condition: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.01)


def test_first_use_pins_the_key_pulls_and_the_long_poll_brings_a_new_version_at_once(
        tmp_path: Path, events: AuditRecorder) -> None:
    policy_key = Ed25519PrivateKey.generate()
    collector = Collector(policy_key)
    collector.publish(1)
    sync = sync_for(tmp_path, events, collector, pinned=None)
    sync.start()
    try:
        wait_for(lambda: sync.enforcer.version == 1)
        assert (tmp_path / "state" / POLICY_KEY_FILE).read_text().strip() == b64(policy_key)
        [pinned] = events.of("policy.key_pinned")
        assert pinned["policy_key"] == b64(policy_key)
        wait_for(lambda: any("/watch?since=1&wait=20" in r for r in collector.requests))
        published = time.monotonic()
        collector.publish(2, usb_rules="block\n")
        wait_for(lambda: sync.enforcer.version == 2)
        assert time.monotonic() - published < 2.0  # the held poll answered, not a 20 s round
    finally:
        sync.stop_event.set()
        collector.publish(3)  # wake the held poll so the thread ends now
        sync.stop(5)
    assert not sync.alive
    assert [a["version"] for a in events.of("policy.applied")][:2] == [1, 2]
    assert "/api/v1/policy?since=1" in collector.requests  # asked with what it enforces


def test_a_collector_serving_an_older_version_is_not_asked_again_and_again(
        tmp_path: Path, events: AuditRecorder) -> None:
    """A collector restored from an older backup (its version below the one enforced), or a
    proxy replaying an old envelope: refused once (rollback), then the long poll waits for the
    collector's version to change instead of pulling the same refused answer in a loop (200
    workstations doing that would flood the collector)."""
    key = Ed25519PrivateKey.generate()
    collector = Collector(key)
    collector.publish(5)
    sync = sync_for(tmp_path, events, collector, pinned=key)
    assert sync.step() and sync.enforcer.version == 5
    collector.publish(3)  # the restored collector
    sync.start()
    try:
        wait_for(lambda: events.of("policy.refused"))
        time.sleep(1.0)
        pulls = [r for r in collector.requests if r.startswith("/api/v1/policy?")]
        assert len(pulls) <= 3, f"{len(pulls)} pulls in a second"
        assert collector.requests[-1].startswith("/api/v1/policy/watch?since=3&")
        collector.publish(6)  # a new change on the restored collector: pulled at once
        wait_for(lambda: sync.enforcer.version == 6)
    finally:
        sync.stop_event.set()
        collector.publish(7)
        sync.stop(5)
    [refused] = events.of("policy.refused")
    assert (refused["reason"], refused["version"]) == ("rollback", 3)


def test_an_unchanged_policy_is_a_304_and_nothing_is_offered(tmp_path: Path,
                                                             events: AuditRecorder) -> None:
    key = Ed25519PrivateKey.generate()
    collector = Collector(key)
    collector.publish(4)
    sync = sync_for(tmp_path, events, collector, pinned=key)
    assert sync.step() and sync.enforcer.version == 4
    assert sync.step()
    assert collector.requests[-1] == "/api/v1/policy?since=4"
    assert len(events.of("policy.applied")) == 1


def test_a_collector_signing_with_another_key_is_refused_and_not_pinned(
        tmp_path: Path, events: AuditRecorder) -> None:
    pinned, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    collector = Collector(other)
    collector.publish(2)
    sync = sync_for(tmp_path, events, collector, pinned=pinned)
    assert sync.step() is True  # the collector answered; the policy was refused
    assert sync.enforcer.version is None
    reasons = [r["reason"] for r in events.of("policy.refused")]
    assert reasons == ["bad_signature", "key_changed"]
    assert b64(other) in events.of("policy.refused")[1]["detail"]
    assert (tmp_path / "state" / POLICY_KEY_FILE).read_text().strip() == b64(pinned)
    assert sync.enforcer.refused_version == 2  # the watch waits for a newer one


def test_an_outage_keeps_the_policy_is_recorded_once_and_its_end(tmp_path: Path,
                                                                 events: AuditRecorder) -> None:
    key = Ed25519PrivateKey.generate()
    collector = Collector(key)
    collector.publish(1)
    sync = sync_for(tmp_path, events, collector, pinned=key)
    assert sync.step()
    collector.down = True
    assert sync.step() is False and sync.step() is False
    assert sync.enforcer.version == 1 and sync.failures == 2
    [failed] = events.of("policy.sync_failed")
    assert failed["enforced_version"] == 1 and "unreachable" in failed["reason"]
    collector.down = False
    collector.publish(2)
    assert sync.step() and sync.enforcer.version == 2
    [recovered] = events.of("policy.sync_recovered")
    assert recovered["version"] == 2


def test_a_restart_without_the_collector_starts_the_guard_with_the_cached_policy(
        tmp_path: Path, events: AuditRecorder) -> None:
    """runner.py's bootstrap: the cached policy, verified again, is what the USB guard's
    runner starts with (never the rules file first); its sync then runs against nothing."""
    key = Ed25519PrivateKey.generate()
    state = tmp_path / "state"
    state.mkdir()
    pin(state, b64(key))
    PolicyCache(state).store(signed(document(7, usb_rules="block\n"), key))
    usb = UsbGuardRunner(UsbGuardConfig(rules_file=tmp_path / "absent.conf"))
    audit = AuditClientConfig(agent_id=AGENT, state_dir=state,
                              collector_url="https://collector.test")
    collector = Collector(key)
    collector.down = True
    policy = WorkstationPolicy(CONFIG, audit, "workstation", usb=usb, netlock=None,
                               client=lambda: client(collector))

    class Agent:
        agent_id = AGENT
        emit = events

    policy.bootstrap.start(Agent(), threading.Event())  # type: ignore[arg-type]
    assert usb.rules is not None
    rules, source = usb.rules
    assert source == "policy version 7 (group editors)"
    assert [format_rule(r) for r in rules] == ["block"]
    assert events.of("policy.applied")[-1]["source"] == "cache"
    policy.start(Agent(), threading.Event())  # type: ignore[arg-type]
    try:
        wait_for(lambda: bool(events.of("policy.sync_failed")))
        assert policy.healthy()
        assert policy.enforcer is not None and policy.enforcer.version == 7
    finally:
        policy.stop()
    assert not policy.healthy()
    assert orjson.loads((state / "policy.json").read_bytes())["document"]["version"] == 7


def test_the_expiry_timer_drops_an_exception_at_its_time_without_the_collector(
        tmp_path: Path, events: AuditRecorder) -> None:
    from datetime import timedelta

    from ws_policy_docs import exception

    from floor_agent.common.clock import utc_now

    key = Ed25519PrivateKey.generate()
    state = tmp_path / "state"
    state.mkdir()
    pin(state, b64(key))
    rule = 'allow id 0781:5567 hash "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789+/ABCD="'
    expires = utc_now() + timedelta(seconds=1.5)
    PolicyCache(state).store(signed(document(
        8, usb_rules="block\n", exceptions=(exception(rule, expires=expires),)), key))
    usb = UsbGuardRunner(UsbGuardConfig(rules_file=tmp_path / "absent.conf"))
    audit = AuditClientConfig(agent_id=AGENT, state_dir=state,
                              collector_url="https://collector.test")
    collector = Collector(key)
    collector.down = True
    policy = WorkstationPolicy(CONFIG, audit, "workstation", usb=usb, netlock=None,
                               client=lambda: client(collector))
    handed: list[list[str]] = []

    class Guard:
        def replace_rules(self, rules: list[Any]) -> None:
            handed.append([format_rule(r) for r in rules])

        def healthy(self) -> bool:
            return True

        def stop(self) -> None:
            pass

    class Agent:
        agent_id = AGENT
        emit = events

    policy.bootstrap.start(Agent(), threading.Event())  # type: ignore[arg-type]
    assert usb.rules is not None and [format_rule(r) for r in usb.rules[0]] == [rule, "block"]
    usb.running = Guard()  # type: ignore[assignment]
    policy.start(Agent(), threading.Event())  # type: ignore[arg-type]
    try:
        wait_for(lambda: bool(handed), seconds=10)
    finally:
        policy.stop()
    assert handed == [["block"]]
    assert utc_now() >= expires
    expiry = events.of("policy.applied")[-1]
    assert (expiry["source"], expiry["expired"]) == ("expiry", ["x-7"])
