"""collector/verify.judge_agent, the verdict on one agent's stored rows (pure): the rows under
the signed checkpoint, and those past it, which cannot be anchored but must still link up."""

from __future__ import annotations

from dataclasses import replace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from floor_agent.audit.keys import public_key_b64
from floor_agent.collector.verify import StoredAgent, judge_agent
from floor_agent.protocol.checkpoint import Checkpoint, chain_hashes
from floor_agent.protocol.event import AuditEvent
from floor_agent.store.records import AgentRecord

KEY = Ed25519PrivateKey.generate()


def stored(count: int, signed: int) -> StoredAgent:
    """An agent with `count` stored rows, the first `signed` under its signed checkpoint."""
    events = [AuditEvent("ws-1", seq, "boot", "2026-12-06T10:00:00.000000Z", "test.event",
                         "info", "x", {"i": seq}) for seq in range(1, count + 1)]
    hashes = chain_hashes(events)
    checkpoint = Checkpoint("ws-1", signed, hashes[signed - 1], "2026-12-06T10:00:01.000000Z",
                            "boot").sign(KEY)
    record = AgentRecord("ws-1", "workstation", public_key_b64(KEY.public_key()),
                         head_seq=count, head_hash=hashes[-1], checkpoint_seq=signed)
    return StoredAgent(record, {}, checkpoint, events, hashes)


def test_a_whole_chain_with_linked_rows_past_the_checkpoint_verifies_but_says_unsigned() -> None:
    verdict = judge_agent(stored(6, 4))
    assert [p.kind for p in verdict.report.problems] == ["unsigned"]  # 5..6: no signature


def test_an_altered_row_past_the_checkpoint_is_named() -> None:
    agent = stored(6, 4)
    agent.events[4] = replace(agent.events[4], subject="edited")  # seq 5, unanchored
    problems = judge_agent(agent).report.problems
    assert ("altered", 5, "unanchored event does not link") in [
        (p.kind, p.seq, p.detail) for p in problems]
    assert not [p for p in problems if p.kind == "altered" and p.seq != 5]


def test_an_altered_row_under_the_checkpoint_is_named() -> None:
    agent = stored(6, 4)
    agent.events[1] = replace(agent.events[1], data={"i": 99})
    problems = judge_agent(agent).report.problems
    assert [(p.kind, p.seq) for p in problems if p.kind == "altered"] == [("altered", 2)]
