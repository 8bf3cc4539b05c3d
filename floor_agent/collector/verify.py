"""Re-verify every stored chain against its last signed checkpoint (`collector verify`).

Ingest verifies each batch as it arrives; this proves later that nothing in the store was
altered, removed or inserted since: the auditor's question, answered from the data alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from floor_agent.audit import chain
from floor_agent.audit.event import AuditEvent
from floor_agent.audit.keys import KeyFileError, public_key_from_b64
from floor_agent.collector.store import Store

PAGE = 10_000


@dataclass
class AgentVerification:
    agent_id: str
    checkpoint_seq: int | None
    stored_events: int
    report: chain.Report

    @property
    def ok(self) -> bool:
        return self.report.ok


def verify_agent(store: Store, agent_id: str) -> AgentVerification:
    record = store.get_agent(agent_id)
    if record is None:
        raise KeyError(agent_id)
    checkpoint = store.checkpoint_of(agent_id)
    try:
        key = public_key_from_b64(record.public_key)
    except KeyFileError:
        key = None
    upto = max(record.head_seq, checkpoint.seq if checkpoint else 0)
    events: list[AuditEvent] = []
    hashes: list[bytes] = []
    start = 1
    while start <= upto:
        rows = store.chain_events(agent_id, start, min(upto, start + PAGE - 1))
        for row, digest in rows:
            events.append(AuditEvent(row["agent_id"], row["seq"], row["boot_id"], row["ts"],
                                     row["kind"], row["severity"], row["subject"], row["data"]))
            hashes.append(digest)
        start += PAGE
    anchored = [e for e in events if checkpoint is None or e.seq <= checkpoint.seq]
    report = chain.verify(anchored, checkpoint, key, chain.GENESIS_HASH, hashes[:len(anchored)])
    if anchored and anchored[0].seq != 1:
        report.problems.insert(0, chain.Problem("gap", 1, f"events 1..{anchored[0].seq - 1} "
                                                          f"are missing from the store"))
    if checkpoint is not None and checkpoint.seq > 0 and not anchored:
        report.problems.append(chain.Problem("gap", 1, "no stored events under the checkpoint"))
    # Events past the last checkpoint cannot be anchored yet, but must still link up.
    tail = events[len(anchored):]
    if tail:
        prev = hashes[len(anchored) - 1] if anchored else chain.GENESIS_HASH
        for event, digest in zip(tail, hashes[len(anchored):], strict=True):
            if chain.event_hash(prev, event) != digest:
                report.problems.append(chain.Problem("altered", event.seq,
                                                     "unanchored event does not link"))
            prev = digest
    return AgentVerification(agent_id, checkpoint.seq if checkpoint else None, len(events),
                             report)


def verify_all(store: Store) -> list[AgentVerification]:
    return [verify_agent(store, item["agent_id"]) for item in store.list_agents()]
