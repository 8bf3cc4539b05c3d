"""The signed workstation policy (protocol/policy.py): what a workstation accepts and refuses."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from floor_agent.protocol import policy
from floor_agent.protocol.policy import DeviceException, PolicyDocument, PolicyRefused

KEY = Ed25519PrivateKey.generate()
PUB = KEY.public_key()
TABLET = DeviceException(
    exception_id="x-1", rule='allow id 056a:0374 serial "8AB1" hash "abc="',
    scope="agent:ws-1", reason="new tablet\nmodel", approved_by="alice",
    approved_at="2026-12-07T10:00:00.000000Z", expires_at="2026-12-08T10:00:00.000000Z")


def document(version: int = 5, agent_id: str = "ws-1", **changes: object) -> PolicyDocument:
    base = PolicyDocument(
        issuer="site-collector", agent_id=agent_id, group="editors", version=version,
        issued_at="2026-12-07T10:00:00.000000Z",
        usb_rules="allow with-interface equals { 03:*:* }\nreject with-interface 08:*:*\n",
        netlock_allow=({"name": "collector", "addresses": ["10.0.0.5"], "tcp": [8443]},),
        exceptions=(TABLET,))
    return PolicyDocument(**{**{f: getattr(base, f) for f in base.__slots__}, **changes})


def test_a_signed_document_round_trips_and_verifies() -> None:
    envelope = policy.sign(document(), KEY)
    wire = policy.envelope_bytes(envelope)
    got = policy.verify(wire, PUB, agent_id="ws-1", enforced_version=None)
    assert got == document()
    assert policy.policy_hash(got) == policy.policy_hash(document())
    # the same version fetched again (same content) is fine
    assert policy.verify(envelope, PUB, agent_id="ws-1", enforced_version=5,
                         enforced_content=policy.content_hash(got)) == got


@pytest.mark.parametrize("path, value", [
    (("document", "usb_rules"), "allow\n"),
    (("document", "version"), 6),
    (("document", "agent_id"), "ws-2"),
    (("document", "exceptions", 0, "expires_at"), None),
    (("document", "exceptions", 0, "scope"), "all"),
    (("document", "netlock_allow", 0, "tcp"), [8443, 443]),
])
def test_any_change_after_signing_is_refused(path: tuple[object, ...], value: object) -> None:
    envelope = copy.deepcopy(policy.sign(document(), KEY))
    target = envelope
    for step in path[:-1]:
        target = target[step]  # type: ignore[index]
    target[path[-1]] = value  # type: ignore[index]
    with pytest.raises(PolicyRefused) as refused:
        policy.verify(envelope, PUB, agent_id="ws-1", enforced_version=None)
    assert refused.value.reason == "bad_signature"


def test_another_key_is_refused() -> None:
    envelope = policy.sign(document(), Ed25519PrivateKey.generate())
    with pytest.raises(PolicyRefused, match="bad_signature"):
        policy.verify(envelope, PUB, agent_id="ws-1", enforced_version=None)


def test_another_workstations_policy_is_refused() -> None:
    envelope = policy.sign(document(agent_id="ws-2"), KEY)
    with pytest.raises(PolicyRefused) as refused:
        policy.verify(envelope, PUB, agent_id="ws-1", enforced_version=None)
    assert refused.value.reason == "wrong_agent"


def test_an_older_version_is_a_rollback() -> None:
    envelope = policy.sign(document(version=4), KEY)
    with pytest.raises(PolicyRefused) as refused:
        policy.verify(envelope, PUB, agent_id="ws-1", enforced_version=5)
    assert refused.value.reason == "rollback"
    assert "4 is older than the enforced 5" in refused.value.detail


def test_one_version_signed_with_two_contents_is_a_conflict() -> None:
    enforced = policy.content_hash(document())
    other = policy.sign(document(usb_rules="allow\n"), KEY)
    with pytest.raises(PolicyRefused) as refused:
        policy.verify(other, PUB, agent_id="ws-1", enforced_version=5,
                      enforced_content=enforced)
    assert refused.value.reason == "conflict"
    # a newer version with other content is simply the next policy
    newer = policy.sign(document(version=6, usb_rules="allow\n"), KEY)
    assert policy.verify(newer, PUB, agent_id="ws-1", enforced_version=5,
                         enforced_content=enforced).version == 6


@pytest.mark.parametrize("mutate, field", [
    (lambda e: e.pop("signature"), "envelope: missing 'signature'"),
    (lambda e: e.update(format=2), "envelope.format"),
    (lambda e: e.update(signature="***"), "envelope.signature: not base64"),
    (lambda e: e["document"].update(version=0), "document.version"),
    (lambda e: e["document"].update(version=True), "document.version"),
    (lambda e: e["document"].update(group="../etc"), "document.group"),
    (lambda e: e["document"].update(extra=1), "document: unknown key(s) 'extra'"),
    (lambda e: e["document"]["exceptions"][0].update(rule="allow\nreject"),
     "document.exceptions[0].rule: must be one line"),
    (lambda e: e["document"]["exceptions"][0].update(scope="everyone"),
     "document.exceptions[0].scope"),
    (lambda e: e["document"]["exceptions"][0].update(expires_at="tomorrow"),
     "document.exceptions[0].expires_at"),
    (lambda e: e["document"]["exceptions"].append(e["document"]["exceptions"][0]),
     "an exception id appears twice"),
    (lambda e: e["document"].update(netlock_allow=[1]), "document.netlock_allow[0]"),
    (lambda e: e["document"].update(usb_rules="a\x00b"), "document.usb_rules"),
])
def test_malformed_envelopes_are_refused_naming_the_field(mutate: object, field: str) -> None:
    envelope = copy.deepcopy(policy.sign(document(), KEY))
    mutate(envelope)  # type: ignore[operator]
    with pytest.raises(PolicyRefused) as refused:
        policy.verify(envelope, PUB, agent_id="ws-1", enforced_version=None)
    assert refused.value.reason == "malformed"
    assert field in refused.value.detail


@pytest.mark.parametrize("wire", [b"", b"{", b"[]", b"null", orjson.dumps("x"),
                                  b"{" + b" " * (policy.MAX_ENVELOPE_BYTES) + b"}"])
def test_garbage_is_malformed_not_a_crash(wire: bytes) -> None:
    with pytest.raises(PolicyRefused) as refused:
        policy.verify(wire, PUB, agent_id="ws-1", enforced_version=None)
    assert refused.value.reason == "malformed"


def test_exceptions_come_first_and_expire_on_the_workstations_clock() -> None:
    doc = document()
    before = datetime(2026, 12, 8, 9, 59, tzinfo=UTC)
    text = policy.effective_usb_rules(doc, before)
    lines = text.splitlines()
    assert lines[0] == "# exception x-1 (agent:ws-1), approved by alice: new tablet model"
    assert lines[1] == TABLET.rule
    assert lines[-2:] == doc.usb_rules.splitlines()
    assert policy.next_expiry(doc, before) == datetime(2026, 12, 8, 10, 0, tzinfo=UTC)
    after = datetime(2026, 12, 8, 10, 0, tzinfo=UTC)
    assert TABLET.rule not in policy.effective_usb_rules(doc, after)
    assert policy.next_expiry(doc, after) is None
    assert policy.in_force(doc, after) == ()
