"""ws_policy/apply.py and cache.py: what a workstation does with a signed policy, directly.

The guard and netlock here are recorders of what they are handed (the USB guard on a umockdev
bus is tests/test_ws_policy_usb.py, netlock in namespaces tests/test_ws_policy_netlock.py);
events go through a real Spool (AuditRecorder). Documents are signed by a key the test made,
playing the collector's policy key.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from audit_events import AuditRecorder
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ws_policy_docs import AGENT, at, document, exception, signed

from floor_agent.audit.policy_key import POLICY_KEY_FILE, pin, read_pinned
from floor_agent.netlock.allowlist import Allowlist
from floor_agent.netlock.config import NetlockConfig
from floor_agent.netlock.firewall import FirewallError
from floor_agent.protocol import policy
from floor_agent.protocol.policy import content_hash, policy_hash
from floor_agent.usb_guard.rule import Rule, format_rule
from floor_agent.ws_policy.apply import PolicyEnforcer, prepare
from floor_agent.ws_policy.cache import PolicyCache

KEY = Ed25519PrivateKey.generate()
TABLET_RULE = 'allow id 056a:0374 hash "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789+/ABCD="'
CENTRAL = {"name": "central", "addresses": ["10.0.0.5"], "tcp": [8443], "must_reach": [8443]}
FILES = {"name": "files", "addresses": ["10.0.0.6"], "tcp": [445]}
LOCAL_NETLOCK = NetlockConfig.model_validate(
    {"enabled": True, "allow": [CENTRAL], "resolv_conf": "/etc/resolv.conf"})


class Targets:
    """Records what the guard and netlock are handed, in order."""

    def __init__(self, fail_load: bool = False) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail_load = fail_load

    def replace_rules(self, rules: list[Rule]) -> None:
        self.calls.append(("usb", [format_rule(r) for r in rules]))

    def replace_allowlist(self, config: NetlockConfig, allowlist: Allowlist,
                          reason: str = "policy") -> None:
        self.calls.append(("netlock", [d.name for d in config.allow]))

    def load(self, config: NetlockConfig, allowlist: Allowlist) -> None:
        if self.fail_load:
            raise FirewallError("nft said no", stderr="Error: no")
        self.calls.append(("ruleset", [d.name for d in allowlist.destinations]))


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def enforcer(tmp_path: Path, events: AuditRecorder, *, netlock: NetlockConfig | None = None,
             targets: Targets | None = None, clock: Clock | None = None,
             key: Ed25519PrivateKey = KEY) -> PolicyEnforcer:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    result = PolicyEnforcer(AGENT, events, PolicyCache(state), key.public_key(), netlock,
                            clock=clock or Clock(at()), resolve=lambda name: [])
    if targets is not None:
        result.usb = targets
        result.netlock = targets
        result.load_ruleset = targets.load
    return result


@pytest.fixture
def events(tmp_path: Path) -> Any:
    recorder = AuditRecorder(tmp_path / "audit-events", agent_id=AGENT)
    yield recorder
    recorder.close()


def test_a_verified_policy_is_applied_netlock_first_cached_and_reported(
        tmp_path: Path, events: AuditRecorder) -> None:
    targets = Targets()
    doc = document(3, netlock_allow=(CENTRAL, FILES),
                   exceptions=(exception(TABLET_RULE, expires=at(60)),))
    e = enforcer(tmp_path, events, netlock=LOCAL_NETLOCK, targets=targets)
    raw = signed(doc, KEY)
    assert e.offer(raw) is True
    assert [c[0] for c in targets.calls] == ["ruleset", "netlock", "usb"]
    assert targets.calls[1][1] == ["central", "files"]
    usb_rules = targets.calls[2][1]
    assert len(usb_rules) == len(prepare(document(), at(), None).rules) + 1  # the exception
    cache = tmp_path / "state" / "policy.json"
    assert cache.read_bytes() == raw
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    [applied] = events.of("policy.applied")
    assert applied["version"] == 3 and applied["source"] == "collector"
    assert applied["policy_hash"] == policy_hash(doc)
    assert applied["content_hash"] == content_hash(doc)
    assert applied["group"] == "editors" and applied["changed"] is True
    assert [x["exception_id"] for x in applied["exceptions"]] == ["x-7"]
    assert applied["next_expiry"] == "2026-12-07T11:00:00.000000Z"
    assert applied["netlock_allow"] == ["central", "files"]


def test_the_exception_comes_first_and_is_dropped_when_it_expires(
        tmp_path: Path, events: AuditRecorder) -> None:
    targets = Targets()
    clock = Clock(at())
    e = enforcer(tmp_path, events, targets=targets, clock=clock)
    doc = document(2, exceptions=(exception(TABLET_RULE, expires=at(30)),))
    assert e.offer(signed(doc, KEY))
    assert targets.calls[-1][1][0] == TABLET_RULE
    assert e.next_expiry() == at(30)
    clock.now = at(29)
    assert e.expire_due() == [] and len(targets.calls) == 1  # not yet: nothing re-applied
    clock.now = at(30)
    assert e.expire_due() == ["x-7"]
    assert TABLET_RULE not in targets.calls[-1][1]
    assert e.next_expiry() is None
    expired = events.of("policy.applied")[-1]
    assert (expired["source"], expired["expired"], expired["exceptions"]) == (
        "expiry", ["x-7"], [])
    assert e.expire_due() == []  # once


def _refusals(tmp_path: Path, events: AuditRecorder) -> tuple[PolicyEnforcer, Targets, bytes]:
    targets = Targets()
    e = enforcer(tmp_path, events, netlock=LOCAL_NETLOCK, targets=targets)
    raw = signed(document(5, netlock_allow=(CENTRAL,)), KEY)
    assert e.offer(raw)
    targets.calls.clear()
    return e, targets, raw


@pytest.mark.parametrize("offer, reason, severity", [
    (lambda: signed(document(6, netlock_allow=(CENTRAL,)), Ed25519PrivateKey.generate()),
     "bad_signature", "critical"),
    (lambda: signed(document(4, netlock_allow=(CENTRAL,)), KEY), "rollback", "critical"),
    (lambda: signed(document(6, netlock_allow=(CENTRAL,), agent_id="ws-13"), KEY),
     "wrong_agent", "critical"),
    (lambda: signed(document(5, netlock_allow=(CENTRAL, FILES)), KEY), "conflict", "critical"),
    (lambda: signed(document(6, usb_rules="allow with-interface 03:*:*\nallw all\n",
                             netlock_allow=(CENTRAL,)), KEY), "invalid_rules", "warning"),
    (lambda: signed(document(6, netlock_allow=({"name": "central", "addresses": ["10.0.0.5"],
                                                "ports": [8443]},)), KEY),
     "invalid_allowlist", "warning"),
    (lambda: signed(document(6, netlock_allow=()), KEY), "invalid_allowlist", "warning"),
    (lambda: signed(document(6, netlock_allow=({"name": "x", "addresses": ["no.such.host"],
                                                "tcp": [1]},)), KEY),
     "invalid_allowlist", "warning"),
    (lambda: b'{"format": 1, "document": {}, "signature": ""}', "malformed", "warning"),
])
def test_a_refused_envelope_changes_nothing(tmp_path: Path, events: AuditRecorder, offer: Any,
                                            reason: str, severity: str) -> None:
    e, targets, raw = _refusals(tmp_path, events)
    offered = offer()
    assert e.offer(offered) is False
    assert targets.calls == []
    assert e.version == 5
    assert (tmp_path / "state" / "policy.json").read_bytes() == raw
    [refused] = events.of("policy.refused")
    assert refused["reason"] == reason, refused
    assert refused["enforced_version"] == 5
    assert events.items[-1][2] == severity
    assert e.offer(offered) is False  # asked again: refused again, reported once
    assert len(events.of("policy.refused")) == 1


def test_a_ruleset_that_does_not_load_refuses_the_policy_and_the_guard_keeps_its_rules(
        tmp_path: Path, events: AuditRecorder) -> None:
    e, targets, raw = _refusals(tmp_path, events)
    targets.fail_load = True
    assert e.offer(signed(document(6, netlock_allow=(CENTRAL, FILES)), KEY)) is False
    assert targets.calls == [] and e.version == 5
    assert events.of("policy.refused")[0]["reason"] == "enforce_failed"
    # the machine's moment, not the document: the same version is tried again (the sync
    # backs off instead of waiting for a newer one) and applied once the ruleset loads
    assert e.refused_version == 0
    targets.fail_load = False
    assert e.offer(signed(document(6, netlock_allow=(CENTRAL, FILES)), KEY))
    assert [c[0] for c in targets.calls] == ["ruleset", "netlock", "usb"]
    assert e.version == 6


def test_a_new_version_with_the_same_content_changes_nothing_but_the_version(
        tmp_path: Path, events: AuditRecorder) -> None:
    e, targets, _ = _refusals(tmp_path, events)
    assert e.offer(signed(document(9, netlock_allow=(CENTRAL,)), KEY))
    assert targets.calls == [] and e.version == 9
    assert events.of("policy.applied")[-1]["changed"] is False
    # only the USB rules changed: netlock is not reloaded
    assert e.offer(signed(document(10, netlock_allow=(CENTRAL,), usb_rules="block\n"), KEY))
    assert [c[0] for c in targets.calls] == ["usb"]


def test_at_start_the_cache_is_verified_again_and_enforced(tmp_path: Path,
                                                           events: AuditRecorder) -> None:
    doc = document(4, exceptions=(exception(TABLET_RULE),))
    first = enforcer(tmp_path, events)
    assert first.offer(signed(doc, KEY))
    restarted = enforcer(tmp_path, events)  # a restart without the collector
    prepared = restarted.start_from_cache()
    assert prepared is not None and prepared.document == doc
    assert restarted.version == 4 and restarted.in_force == ("x-7",)
    assert format_rule(prepared.rules[0]) == TABLET_RULE
    assert events.of("policy.applied")[-1]["source"] == "cache"
    # a replay of an older version after the restart is still a rollback
    assert restarted.offer(signed(document(3), KEY)) is False
    assert events.of("policy.refused")[-1]["reason"] == "rollback"


def test_a_cache_edited_on_disk_is_refused_and_the_bootstrap_is_enforced(
        tmp_path: Path, events: AuditRecorder) -> None:
    first = enforcer(tmp_path, events)
    assert first.offer(signed(document(4, usb_rules="block\n"), KEY))
    cache = tmp_path / "state" / "policy.json"
    cache.write_bytes(cache.read_bytes().replace(b'"usb_rules":"block\\n"',
                                                 b'"usb_rules":"allow\\n"'))
    assert b'"allow\\n"' in cache.read_bytes()
    restarted = enforcer(tmp_path, events)
    assert restarted.start_from_cache() is None
    assert restarted.version is None
    refused = events.of("policy.refused")[-1]
    assert (refused["reason"], refused["source"], refused["version"]) == (
        "bad_signature", "cache", 4)
    bootstrap = events.of("policy.applied")[-1]
    assert bootstrap["source"] == "bootstrap" and bootstrap["version"] is None
    assert "cached policy refused (bad_signature)" in bootstrap["reason"]


def test_without_a_cache_the_bootstrap_is_enforced(tmp_path: Path,
                                                   events: AuditRecorder) -> None:
    assert enforcer(tmp_path, events).start_from_cache() is None
    assert events.of("policy.applied")[-1]["reason"] == "no policy cached yet"


def test_a_cache_for_another_agent_is_refused(tmp_path: Path, events: AuditRecorder) -> None:
    (tmp_path / "state").mkdir()
    PolicyCache(tmp_path / "state").store(signed(document(2, agent_id="ws-13"), KEY))
    assert enforcer(tmp_path, events).start_from_cache() is None
    assert events.of("policy.refused")[-1]["reason"] == "wrong_agent"


CRASH = r"""
import os, signal, sys
from pathlib import Path
from floor_agent.ws_policy.cache import PolicyCache
cache = PolicyCache(Path(sys.argv[1]))
real_replace = os.replace
def crash(*args, **kwargs):  # the new file is written and flushed; the rename never happens
    os.kill(os.getpid(), signal.SIGKILL)
os.replace = crash
cache.store(sys.stdin.buffer.read())
"""


def test_a_crash_between_write_and_rename_leaves_the_old_cache(tmp_path: Path,
                                                               events: AuditRecorder) -> None:
    first = enforcer(tmp_path, events)
    old = signed(document(4), KEY)
    assert first.offer(old)
    new = signed(document(5, usb_rules="block\n"), KEY)
    state = tmp_path / "state"
    done = subprocess.run([sys.executable, "-c", CRASH, str(state)], input=new,
                          env=dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent)),
                          capture_output=True, timeout=60)
    assert done.returncode == -9, done.stderr
    assert (state / "policy.json").read_bytes() == old
    assert (state / "policy.json.tmp").read_bytes() == new  # written, never renamed
    restarted = enforcer(tmp_path, events)
    assert restarted.start_from_cache() is not None and restarted.version == 4
    assert restarted.offer(new) and (state / "policy.json").read_bytes() == new
    assert not (state / "policy.json.tmp").exists()


def test_the_policy_key_file(tmp_path: Path) -> None:
    import base64

    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from floor_agent.audit.policy_key import PolicyKeyError

    assert read_pinned(tmp_path) is None
    text = base64.b64encode(KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
                            ).decode()
    pin(tmp_path, text)
    pinned = read_pinned(tmp_path)
    assert pinned is not None and pinned[1] == text
    assert (tmp_path / POLICY_KEY_FILE).read_text() == text + "\n"
    (tmp_path / POLICY_KEY_FILE).write_text("bm90IGEga2V5\n")
    with pytest.raises(PolicyKeyError, match="9 bytes"):
        read_pinned(tmp_path)
    with pytest.raises(PolicyKeyError, match="not base64"):
        pin(tmp_path, "???")


def test_without_a_pinned_key_nothing_is_applied(tmp_path: Path, events: AuditRecorder) -> None:
    e = enforcer(tmp_path, events)
    e.key = None
    assert e.offer(signed(document(1), KEY)) is False
    assert events.of("policy.refused")[-1]["reason"] == "no_key"
    assert policy.FORMAT == 1


def test_enrollment_pins_the_policy_key_it_is_given_and_never_another(tmp_path: Path) -> None:
    import base64

    import httpx
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from floor_agent.audit.agent import _pin_policy_key

    def b64(key: Ed25519PrivateKey) -> str:
        return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
                                ).decode()

    _pin_policy_key(tmp_path, httpx.Response(201, json={"agent_id": AGENT}))
    assert read_pinned(tmp_path) is None  # a collector without policies: pinned on first use
    _pin_policy_key(tmp_path, httpx.Response(201, json={"policy_key": b64(KEY)}))
    pinned = read_pinned(tmp_path)
    assert pinned is not None and pinned[1] == b64(KEY)
    _pin_policy_key(tmp_path, httpx.Response(
        201, json={"policy_key": b64(Ed25519PrivateKey.generate())}))
    pinned = read_pinned(tmp_path)
    assert pinned is not None and pinned[1] == b64(KEY)


def test_the_applied_policy_is_the_workstations_current_state() -> None:
    """Ingest keeps the newest `policy.applied` per workstation (the `policy` topic), so the
    dashboard shows the policy each one enforces; a refusal does not replace it."""
    from floor_agent.protocol.topics import topic_of

    assert topic_of("policy.applied", {"version": 3}) == "policy"
    assert topic_of("policy.refused", {"reason": "rollback"}) is None


def test_a_workstation_with_the_central_policy_starts_its_bootstrap_first_and_its_sync_last(
        ) -> None:
    from floor_agent.roles.config import WorkstationConfig
    from floor_agent.roles.run import capabilities
    from floor_agent.usb_guard.runner import UsbGuardRunner
    from floor_agent.ws_policy.runner import PolicyBootstrap, WorkstationPolicy

    config = WorkstationConfig.model_validate({"role": "workstation",
                                               "policy": {"enabled": True}})
    found = capabilities(config, "workstation.yaml")
    assert [type(c) for c in found] == [PolicyBootstrap, UsbGuardRunner, WorkstationPolicy]
    policy = found[2]
    assert isinstance(policy, WorkstationPolicy) and policy.bootstrap is found[0]
    assert policy.usb is found[1] and policy.netlock is None
    off = WorkstationConfig.model_validate({"role": "workstation"})
    assert [type(c) for c in capabilities(off, "workstation.yaml")] == [UsbGuardRunner]
