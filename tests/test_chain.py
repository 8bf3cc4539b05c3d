"""Property tests: any altered byte, deleted, reordered, duplicated or truncated event is caught."""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from floor_agent.audit import chain
from floor_agent.protocol.checkpoint import GENESIS_HASH, Checkpoint, chain_hashes, event_hash, link
from floor_agent.protocol.event import AuditEvent, EventError, canonical

KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**63) + 1, 2**63 - 1),
                      st.text(max_size=20))
json_data = st.dictionaries(st.text(max_size=8),
                            st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3)
                                         | st.dictionaries(st.text(max_size=5), inner,
                                                           max_size=3), max_leaves=6),
                            max_size=4)


@st.composite
def event_runs(draw: st.DrawFn, min_size: int = 1) -> list[AuditEvent]:
    n = draw(st.integers(min_size, 12))
    return [AuditEvent("ws-01", seq, "boot-1", f"2026-11-29T08:00:{seq % 60:02d}.000000Z",
                       draw(st.sampled_from(["usb.blocked", "net.breach", "door.granted"])),
                       draw(st.sampled_from(["info", "warning", "critical"])),
                       draw(st.text(max_size=30)), draw(json_data))
            for seq in range(1, n + 1)]


def sign_head(events: list[AuditEvent], key: Ed25519PrivateKey = KEY) -> Checkpoint:
    hashes = chain_hashes(events)
    return Checkpoint("ws-01", events[-1].seq, hashes[-1], "2026-11-29T09:00:00.000000Z",
                      "boot-1").sign(key)


@given(event_runs())
def test_intact_chain_verifies(events: list[AuditEvent]) -> None:
    report = chain.verify(events, sign_head(events), KEY.public_key())
    assert report.ok, report.problems
    assert report.verified == len(events)


@given(event_runs(), st.data())
@settings(max_examples=300)
def test_any_altered_byte_is_detected(events: list[AuditEvent], data: st.DataObject) -> None:
    checkpoint = sign_head(events)
    index = data.draw(st.integers(0, len(events) - 1))
    body = bytearray(canonical(events[index]))
    pos = data.draw(st.integers(0, len(body) - 1))
    body[pos] ^= data.draw(st.integers(1, 255))
    hashes = chain_hashes(events[:index])
    prev = hashes[-1] if hashes else GENESIS_HASH
    # Re-chain from the altered bytes: the attacker cannot re-sign the checkpoint.
    current = link(prev, bytes(body))
    for later in events[index + 1:]:
        current = event_hash(current, later)
    assert current != checkpoint.hash


@given(event_runs(), st.data())
def test_altered_field_is_detected(events: list[AuditEvent], data: st.DataObject) -> None:
    checkpoint = sign_head(events)
    index = data.draw(st.integers(0, len(events) - 1))
    field = data.draw(st.sampled_from(["subject", "kind", "severity", "ts", "data", "boot_id"]))
    original = events[index]
    replacement = {"subject": original.subject + "x", "kind": "usb.allowed",
                   "severity": "debug", "ts": "2026-11-29T07:59:59.000000Z",
                   "data": {**original.data, "tampered": True}, "boot_id": "boot-2"}[field]
    if replacement == getattr(original, field):
        return
    altered = list(events)
    altered[index] = dataclasses.replace(original, **{field: replacement})
    report = chain.verify(altered, checkpoint, KEY.public_key())
    assert not report.ok
    assert any(p.kind == "altered" for p in report.problems)


@given(event_runs(min_size=2), st.data())
def test_deleted_event_is_detected(events: list[AuditEvent], data: st.DataObject) -> None:
    checkpoint = sign_head(events)
    index = data.draw(st.integers(0, len(events) - 1))
    report = chain.verify(events[:index] + events[index + 1:], checkpoint, KEY.public_key())
    assert not report.ok


@given(event_runs(min_size=2), st.data())
def test_reordered_events_are_detected(events: list[AuditEvent], data: st.DataObject) -> None:
    checkpoint = sign_head(events)
    i = data.draw(st.integers(0, len(events) - 2))
    j = data.draw(st.integers(i + 1, len(events) - 1))
    swapped = list(events)
    swapped[i], swapped[j] = swapped[j], swapped[i]
    report = chain.verify(swapped, checkpoint, KEY.public_key())
    assert not report.ok
    assert {p.kind for p in report.problems} & {"reordered", "gap", "duplicate", "altered"}


@given(event_runs(), st.data())
def test_duplicated_event_is_detected(events: list[AuditEvent], data: st.DataObject) -> None:
    checkpoint = sign_head(events)
    index = data.draw(st.integers(0, len(events) - 1))
    doubled = events[:index + 1] + [events[index]] + events[index + 1:]
    report = chain.verify(doubled, checkpoint, KEY.public_key())
    assert not report.ok


@given(event_runs(min_size=2), st.data())
def test_truncated_tail_is_detected(events: list[AuditEvent], data: st.DataObject) -> None:
    checkpoint = sign_head(events)
    keep = data.draw(st.integers(1, len(events) - 1))
    report = chain.verify(events[:keep], checkpoint, KEY.public_key())
    assert not report.ok
    assert any(p.kind == "gap" for p in report.problems)


@given(event_runs())
def test_forged_or_foreign_signature_is_detected(events: list[AuditEvent]) -> None:
    forged = sign_head(events, OTHER_KEY)
    report = chain.verify(events, forged, KEY.public_key())
    assert [p.kind for p in report.problems] == ["bad_signature"]
    moved = dataclasses.replace(sign_head(events), seq=events[-1].seq + 1)
    assert not chain.verify(events, moved, KEY.public_key()).ok


@given(event_runs())
def test_foreign_events_are_detected(events: list[AuditEvent]) -> None:
    checkpoint = sign_head(events)
    foreign = [dataclasses.replace(events[0], agent_id="ws-02")] + events[1:]
    report = chain.verify(foreign, checkpoint, KEY.public_key())
    assert any(p.kind == "foreign" for p in report.problems)


def test_claimed_hashes_name_the_altered_event() -> None:
    events = [AuditEvent("ws-01", s, "b", "2026-11-29T08:00:00.000000Z", "usb.blocked", "info",
                         "s", {"n": s}) for s in range(1, 6)]
    hashes = chain_hashes(events)
    altered = list(events)
    altered[2] = dataclasses.replace(events[2], subject="changed")
    report = chain.verify(altered, sign_head(events), KEY.public_key(), claimed_hashes=hashes)
    assert [(p.kind, p.seq) for p in report.problems] == [("altered", 3)]


def test_canonical_form_is_stable_and_sorted() -> None:
    event = AuditEvent("ws-01", 1, "b", "2026-11-29T08:00:00.000000Z", "usb.blocked", "info",
                       "Gerät", {"z": 1, "a": [True, None, "ü"]})
    assert canonical(event) == (
        '{"agent_id":"ws-01","boot_id":"b","data":{"a":[true,null,"ü"],"z":1},'
        '"kind":"usb.blocked","seq":1,"severity":"info","subject":"Gerät",'
        '"ts":"2026-11-29T08:00:00.000000Z"}').encode()
    # the documented formula, spelled out
    import hashlib
    expected = hashlib.sha256(b"floor-agent/event/v1\x00" + bytes(32) + canonical(event))
    assert event_hash(GENESIS_HASH, event) == expected.digest()


@pytest.mark.parametrize(("field", "value", "message"), [
    ("seq", 0, "seq"), ("kind", "USB", "kind"), ("severity", "loud", "severity"),
    ("ts", "yesterday", "ts"), ("data", {"x": 1.5}, "floats"), ("agent_id", "a b", "agent_id"),
])
def test_invalid_events_are_refused(field: str, value: object, message: str) -> None:
    event = AuditEvent("ws-01", 1, "b", "2026-11-29T08:00:00.000000Z", "usb.blocked", "info",
                       "s", {})
    with pytest.raises(EventError, match=message):
        dataclasses.replace(event, **{field: value}).validate()
