"""One stored event's place in its chain, re-verified: the auditor's "is this record intact".

The event links to the stored one before it, every stored event from it up to the agent's last
signed checkpoint links on (audit/chain.walk, the walk ingest and `collector verify` run), and
that checkpoint's signature verifies with the enrolled key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from floor_agent.audit import chain
from floor_agent.audit.keys import KeyFileError, public_key_from_b64
from floor_agent.protocol.checkpoint import GENESIS_HASH, Checkpoint
from floor_agent.protocol.event import AuditEvent, canonical
from floor_agent.store.interface import Store

PAGE = 10_000
MAX_WALK = 500_000


@dataclass(frozen=True, slots=True)
class EventCheck:
    event: dict[str, Any]
    prev_hash: str
    checkpoint: Checkpoint | None
    problem: str | None  # None: verified

    @property
    def verification(self) -> str:
        return "verified" if self.problem is None else f"not verified: {self.problem}"


def _audit_event(row: dict[str, Any]) -> AuditEvent:
    return AuditEvent(row["agent_id"], row["seq"], row["boot_id"], row["ts"], row["kind"],
                      row["severity"], row["subject"], row["data"])


def check(store: Store, agent_id: str, seq: int) -> EventCheck | None:
    """None when no such event is stored."""
    if seq < 1:
        return None
    rows = store.chain_events(agent_id, max(1, seq - 1), seq)
    found = {row["seq"]: (row, digest) for row, digest in rows}
    if seq not in found:
        return None
    event, digest = found[seq]
    checkpoint = store.checkpoint_of(agent_id)
    if seq == 1:
        prev: bytes | None = GENESIS_HASH
    else:
        prev = found[seq - 1][1] if seq - 1 in found else None
    result = EventCheck(event, prev.hex() if prev else "(missing)", checkpoint,
                        problem(store, agent_id, event, digest, prev, checkpoint))
    return result


def problem(store: Store, agent_id: str, event: dict[str, Any], digest: bytes,
            prev: bytes | None, checkpoint: Checkpoint | None) -> str | None:
    seq = event["seq"]
    if prev is None:
        return f"event {seq - 1} is missing from the store (gap)"
    if chain.walk(prev, [seq], [canonical(_audit_event(event))], [digest]).breaks:
        return "the stored event does not match its chain hash (altered)"
    if checkpoint is None or checkpoint.seq < seq:
        return "not yet covered by a signed checkpoint"
    record = store.get_agent(agent_id)
    try:
        key = public_key_from_b64(record.public_key) if record else None
    except KeyFileError:
        key = None
    if key is None or not checkpoint.signature_valid(key):
        return "the covering checkpoint's signature does not verify"
    if checkpoint.seq - seq > MAX_WALK:
        return (f"more than {MAX_WALK} events before the checkpoint; use the integrity page's "
                f"full verification")
    last, expected = digest, seq + 1
    start = seq + 1
    while start <= checkpoint.seq:
        page = store.chain_events(agent_id, start, min(checkpoint.seq, start + PAGE - 1))
        if page:
            if page[0][0]["seq"] != expected:
                return f"event {expected} is missing from the store (gap)"
            run = chain.walk(last, [row["seq"] for row, _ in page],
                             [canonical(_audit_event(row)) for row, _ in page],
                             [stored for _, stored in page], first_only=True)
            if run.breaks:
                found = run.breaks[0]
                if found.expected is not None:
                    return f"event {found.expected} is missing from the store (gap)"
                return f"event {found.seq} after it does not link (altered)"
            last, expected = run.head, page[-1][0]["seq"] + 1
        start += PAGE
    if expected != checkpoint.seq + 1:
        return f"event {expected} is missing from the store (gap)"
    if last != checkpoint.hash:
        return "the chain does not end at the checkpoint's hash (fork)"
    return None
