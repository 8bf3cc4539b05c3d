"""The pure ingest decisions, fuzzed: no input crashes them, no altered batch is accepted."""

from __future__ import annotations

from pathlib import Path

import pytest
from batches import BatchMaker
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from floor_agent.collector import ingest
from floor_agent.protocol.batch import BatchError, parse
from floor_agent.store.records import AgentRecord


@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, AgentRecord]:
    maker = BatchMaker(Path(tmp_path_factory.mktemp("ingest")), "ws-01")
    maker.spool.emit_many([("usb.blocked", "Stick «Ü»", "warning", {"port": "1-2", "n": 1}),
                           ("net.check", "egress", "info", {"ok": True, "list": [1, None]})])
    return maker.body(), AgentRecord("ws-01", "workstation", maker.public_key)


def accepted_bodies(body: bytes, agent: AgentRecord) -> list[tuple] | None:
    """The rows a batch would store, or None when it is refused."""
    try:
        batch = ingest.prepare(body, 100, "2026-11-29T09:00:00.000000Z")
    except BatchError as exc:
        assert 400 <= exc.status < 500
        return None
    plan = ingest.plan(batch, agent, {0: bytes(32)})
    if not plan.accepted:
        assert 400 <= plan.status < 500 and plan.alerts
        return None
    return plan.store


def test_genuine_batch_is_accepted(genuine: tuple[bytes, AgentRecord]) -> None:
    body, agent = genuine
    stored = accepted_bodies(body, agent)
    assert stored is not None and len(stored) == 2


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_single_byte_change_gets_altered_content_stored(
        genuine: tuple[bytes, AgentRecord], data: st.DataObject) -> None:
    body, agent = genuine
    original = accepted_bodies(body, agent)
    position = data.draw(st.integers(0, len(body) - 1))
    mutated = bytearray(body)
    mutated[position] = data.draw(st.integers(0, 255).filter(lambda b: b != body[position]))
    stored = accepted_bodies(bytes(mutated), agent)
    assert stored is None or stored == original


@settings(max_examples=300)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_garbage_is_a_clean_4xx(raw: bytes) -> None:
    with pytest.raises(BatchError) as error:
        parse(raw, 100)
    assert 400 <= error.value.status < 500


leaves = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text()
json_values = st.recursive(leaves,
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=3),
                           max_leaves=8)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(["agent_id", "prev_hash", "events", "checkpoint"]),
       value=json_values)
def test_wrong_types_in_any_field_are_a_clean_4xx(genuine: tuple[bytes, AgentRecord],
                                                  field: str, value: object) -> None:
    import orjson

    body, agent = genuine
    batch = orjson.loads(body)
    batch[field] = value
    stored = accepted_bodies(orjson.dumps(batch), agent)
    # The one well-formed variant: no events is a heartbeat; nothing stored, the gap flagged.
    assert stored is None or (field == "events" and value == [] and stored == [])


def test_heartbeat_beyond_the_stored_head_is_a_gap(genuine: tuple[bytes, AgentRecord]) -> None:
    import orjson

    body, agent = genuine
    batch = orjson.loads(body)
    batch["events"] = []
    prepared = ingest.prepare(orjson.dumps(batch), 100, "2026-11-29T09:00:00.000000Z")
    plan = ingest.plan(prepared, agent, {0: bytes(32)})
    assert plan.accepted and plan.store == []
    assert [a.kind for a in plan.alerts] == ["gap"]


def test_agents_warning_or_worse_events_are_alerts_counted_per_subject(tmp_path: Path) -> None:
    """A blocked stick, a breach, a forced door: each an alert for security staff; the same
    kind on the same subject again is the same open alert seen once more."""
    maker = BatchMaker(tmp_path, "ws-02")
    maker.spool.emit_many([
        ("usb.blocked", "usb 1-2 SanDisk", "warning", {"n": 1}),
        ("usb.allowed", "usb 1-1 keyboard", "info", {}),
        ("usb.blocked", "usb 1-2 SanDisk", "warning", {"n": 2}),
        ("usb.blocked", "usb 1-3 phone", "warning", {"n": 3}),
        ("net.breach", "netlock", "critical", {"new": ["egress"]}),
        ("door.denied", "door front", "notice", {}),
    ])
    batch = ingest.prepare(maker.body(), 100, "2026-11-29T09:00:00.000000Z")
    plan = ingest.plan(batch, AgentRecord("ws-02", "workstation", maker.public_key),
                       {0: bytes(32)})
    assert plan.accepted
    alerts = {(a.kind, a.severity, a.subject, a.count, a.seq) for a in plan.alerts}
    assert alerts == {("usb.blocked", "warning", "usb 1-2 SanDisk", 2, 3),
                      ("usb.blocked", "warning", "usb 1-3 phone", 1, 4),
                      ("net.breach", "critical", "netlock", 1, 5)}
    fingerprints = {a.fingerprint for a in plan.alerts}
    assert len(fingerprints) == 3 and all(f.startswith(("usb.", "net.")) for f in fingerprints)
