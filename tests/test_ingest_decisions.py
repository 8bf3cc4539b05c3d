"""Issue 15's ingest decisions, pure (parse, plan over plain data): bounds at parse, the
replay check that one bad timestamp cannot turn into a blocked agent, clock skew, and what an
unauthenticated failure is allowed to say. The same attacks run against the real collector
process in test_ingest_attacks.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from batches import BatchMaker, alter_event

from floor_agent.collector import ingest
from floor_agent.collector.ingest import Clock
from floor_agent.protocol.batch import BatchError, batch_body, parse
from floor_agent.protocol.checkpoint import Checkpoint
from floor_agent.protocol.event import AuditEvent, EventError, utc_timestamp
from floor_agent.store.records import AgentRecord

# The collector's clock in these tests: set afresh for each test (autouse fixture below), as
# the agents' spools stamp with the real clock; a value from import time fell minutes behind
# when the suite ran long.
NOW = datetime.now(UTC)
CLOCK = Clock(NOW, timedelta(seconds=300))
_THE_CLOCK = object()


@pytest.fixture(autouse=True)
def collector_clock_now() -> None:
    global NOW, CLOCK
    NOW = datetime.now(UTC)
    CLOCK = Clock(NOW, timedelta(seconds=300))


def decide(body: bytes, agent: AgentRecord, stored: dict[int, bytes] | None = None,
           clock: Clock | None | object = _THE_CLOCK) -> ingest.Plan:
    batch = ingest.prepare(body, 100, utc_timestamp(NOW))
    chosen = CLOCK if clock is _THE_CLOCK else clock
    assert chosen is None or isinstance(chosen, Clock)
    return ingest.plan(batch, agent, stored or {0: bytes(32)}, clock=chosen)


def heartbeat(maker: BatchMaker, seq: int, digest: bytes, ts: str) -> bytes:
    checkpoint = Checkpoint(maker.agent_id, seq, digest, ts, maker.spool.boot_id)
    return batch_body(maker.agent_id, digest, [], checkpoint.sign(maker.key))


@pytest.fixture
def maker(tmp_path: Path) -> BatchMaker:
    return BatchMaker(tmp_path, "ws-1")


def test_fields_are_bounded_before_anything_quotes_them(maker: BatchMaker) -> None:
    huge = orjson.dumps({"agent_id": "w" * (4 * 1024 * 1024), "events": []})
    with pytest.raises(BatchError) as caught:
        parse(huge, 100)
    assert caught.value.agent_id is None and len(str(caught.value)) < 100
    maker.emit(1)
    batch = orjson.loads(maker.body())
    for field, value, words in (("seq", 2**63, "checkpoint.seq"), ("seq", -1, "checkpoint.seq"),
                                ("ts", "zzz", "checkpoint.ts"),
                                ("ts", "2026-02-30T00:00:00.000000Z", "checkpoint.ts"),
                                ("boot_id", "b" * 65, "checkpoint.boot_id"),
                                ("agent_id", "x" * 10_000, "checkpoint.agent_id")):
        bad = dict(batch, checkpoint=dict(batch["checkpoint"], **{field: value}))
        with pytest.raises(BatchError) as caught:
            parse(orjson.dumps(bad), 100)
        assert caught.value.status == 422 and words in str(caught.value)
        assert len(str(caught.value)) < 300
    event = dict(batch["events"][0]["event"], **{"k" * 100_000: 1})
    with pytest.raises(EventError) as error:
        AuditEvent.from_dict(event)
    assert len(str(error.value)) <= 303


def test_unauthenticated_failures_name_no_agent_and_stay_small(maker: BatchMaker) -> None:
    maker.emit(2)
    agent = AgentRecord("ws-1", "workstation", BatchMaker(maker.spool.path.parent, "other",
                                                          spool_name="o").public_key)
    plan = decide(maker.body(), agent)  # signed with another key than the enrolled one
    assert (plan.status, plan.noise) == (401, "bad_signature")
    assert all(a.agent_id is None for a in plan.alerts)
    alert = ingest.noise_alert("bad_signature", "10.0.0.9" * 100, "ws-1", "x" * 10_000)
    assert alert.agent_id is None and len(alert.detail) <= 500 and len(alert.source or "") == 64
    assert alert.fingerprint == f"src:bad_signature:{alert.source}"
    assert ingest.plan(ingest.prepare(maker.body(), 100, utc_timestamp()), None, {}).noise == \
        "unknown_agent"


def test_a_future_checkpoint_is_refused_and_a_bad_mark_blocks_nobody(maker: BatchMaker) -> None:
    maker.emit(3)
    body = maker.body()
    agent = AgentRecord("ws-1", "workstation", maker.public_key)
    stored = {0: bytes(32)}
    acked, pending = maker.spool.batch(10)
    head = pending[-1]
    future = heartbeat(maker, 0, bytes(32), utc_timestamp(NOW + timedelta(seconds=400)))
    plan = decide(future, agent)
    assert (plan.status, [a.kind for a in plan.alerts]) == (409, ["clock_skew"])
    assert "ahead of the collector's clock" in plan.message
    assert decide(heartbeat(maker, 0, bytes(32), utc_timestamp(NOW + timedelta(seconds=200))),
                  agent).accepted  # within the skew
    # a store whose mark is in 2099 or not a time at all (accepted before these checks):
    # the agent's new events go in; an old checkpoint behind the stored one is a replay
    # unless it signs exactly what is stored (then a duplicate: acknowledged, nothing moves)
    for mark in ("2099-01-01T00:00:00.000000Z", "zzz"):
        stuck = AgentRecord("ws-1", "workstation", maker.public_key, 0, bytes(32), 0, mark)
        assert decide(body, stuck, stored).accepted
        ahead = AgentRecord("ws-1", "workstation", maker.public_key, 3, head.hash, 3, mark)
        old = heartbeat(maker, 1, pending[0].hash, utc_timestamp(NOW))
        assert decide(old, ahead, {1: pending[1].hash}).status == 409  # not what is stored
        assert decide(old, ahead, {}).status == 409  # no longer stored
        same = decide(old, ahead, {1: pending[0].hash})
        assert (same.status, same.duplicate, same.acked_seq, same.alerts) == (200, True, 1, [])
    # with a sound mark: the same batch again is a duplicate, unless the store lacks or holds
    # other events than it carries; new ground is never a replay
    sent = AgentRecord("ws-1", "workstation", maker.public_key, 3, head.hash, 3,
                       utc_timestamp())  # accepted after the batch was signed
    held = {0: bytes(32), 1: pending[0].hash, 2: pending[1].hash, 3: head.hash}
    again = decide(body, sent, held)
    assert (again.status, again.duplicate, again.store, again.new_head, again.alerts) == \
        (200, True, [], None, [])
    for seq, other in ((2, None), (2, bytes(32)), (0, pending[0].hash)):
        differs = {k: v for k, v in held.items() if k != seq} | ({seq: other} if other else {})
        plan = decide(body, sent, differs)
        assert (plan.status, [a.kind for a in plan.alerts]) == (409, ["replay"]), seq
    assert decide(alter_event(body, 1, subject="rewritten"), sent, held).status == 409
    assert acked.seq == 0


def test_events_far_off_the_clock_are_stored_and_flagged(tmp_path: Path) -> None:
    stamps = iter(["2099-06-01T00:00:00.000000Z", "2001-06-01T00:00:00.000000Z"])
    maker = BatchMaker(tmp_path, "ws-2")
    maker.spool._clock = lambda: next(stamps, utc_timestamp())  # type: ignore[attr-defined]
    maker.spool.emit_many([("test.event", f"e{i}", "info", {}) for i in range(3)])
    earlier = utc_timestamp(NOW - timedelta(days=1))
    agent = AgentRecord("ws-2", "workstation", maker.public_key, 0, bytes(32), 0, earlier)
    plan = decide(maker.body(), agent)
    assert plan.accepted and len(plan.store) == 3
    (alert,) = plan.alerts
    assert (alert.kind, alert.agent_id, alert.seq) == ("clock_skew", "ws-2", 1)
    assert "seq 1..2" in alert.detail and "years ahead of" in alert.detail


def test_ranges_name_seqs_shortly() -> None:
    assert ingest._ranges([9, 3, 4, 5, 6, 7]) == "3..7, 9"
    assert ingest._ranges(list(range(0, 40, 2)), most=3) == "0, 2, 4 and 17 more"
