"""The one verifier of a per-agent hash chain against its signed checkpoint: pure, no I/O.

The chain and checkpoint format lives in protocol/checkpoint.py; this says what is wrong with
a run of stored or received events, in Problems that name the seq.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from floor_agent.protocol.checkpoint import GENESIS_HASH, Checkpoint, event_hash
from floor_agent.protocol.event import AuditEvent

# What a verification can find wrong: the chain walk's own kinds (verify below), then those of
# the store's verification around it (collector/verify.py: rows below seq 1 or past the signed
# head, a rolled-back history, a key the collector's anchor did not endorse).
ProblemKind = Literal[
    "altered", "gap", "reordered", "duplicate", "foreign", "checkpoint", "bad_signature",
    "inserted", "unsigned", "rollback", "unendorsed", "endorsement",
]


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding of a verification: what kind, at which seq, in words."""

    kind: ProblemKind
    seq: int | None
    detail: str


@dataclass(slots=True)
class Report:
    """Result of verifying a run of events against a checkpoint."""

    agent_id: str
    first_seq: int | None = None
    last_seq: int | None = None
    verified: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(
    events: Sequence[AuditEvent],
    checkpoint: Checkpoint | None,
    key: Ed25519PublicKey | None,
    prev_hash: bytes = GENESIS_HASH,
    claimed_hashes: Sequence[bytes] | None = None,
) -> Report:
    """Verify a contiguous run of one agent's events, ending at a signed checkpoint.

    `prev_hash` is the hash before the first event (genesis when it starts at seq 1).
    `claimed_hashes`, when the stored or sent hash of each event is known, lets the report say
    WHICH event was altered rather than only that the run does not reach the checkpoint.
    Detects: altered bytes, deleted (gap), reordered, duplicated, foreign (another agent's)
    events, a truncated tail (checkpoint beyond the last event), a bad or missing signature.
    """
    agent_id = checkpoint.agent_id if checkpoint else (events[0].agent_id if events else "")
    report = Report(agent_id=agent_id)
    if checkpoint is None:
        report.problems.append(Problem("checkpoint", None, "no checkpoint to anchor the head"))
    elif key is None or not checkpoint.signature_valid(key):
        report.problems.append(Problem("bad_signature", checkpoint.seq,
                                       "checkpoint signature does not verify"))
    expected_seq = events[0].seq if events else None
    current = prev_hash
    for index, event in enumerate(events):
        if index == 0:
            report.first_seq = event.seq
        if event.agent_id != agent_id:
            report.problems.append(Problem("foreign", event.seq,
                                           f"event of agent {event.agent_id!r} in {agent_id!r}"))
        if event.seq != expected_seq:
            assert expected_seq is not None
            kind: ProblemKind
            if event.seq < expected_seq:
                kind = "duplicate" if event.seq == expected_seq - 1 else "reordered"
            else:
                kind = "gap"
            report.problems.append(Problem(kind, event.seq,
                                           f"expected seq {expected_seq}, found {event.seq}"))
        expected_seq = event.seq + 1
        current = event_hash(current, event)
        claimed = claimed_hashes[index] if claimed_hashes and index < len(claimed_hashes) else None
        if claimed is not None and claimed != current:
            report.problems.append(Problem("altered", event.seq,
                                           "event does not hash to its recorded hash"))
            current = claimed  # resynchronise: report each altered event once
        report.last_seq = event.seq
        report.verified += 1
    if checkpoint is not None:
        head_seq = report.last_seq if events else None
        if events and checkpoint.seq == head_seq and checkpoint.hash != current:
            report.problems.append(Problem("altered", head_seq,
                                           "events do not hash to the signed checkpoint"))
        elif events and head_seq is not None and checkpoint.seq > head_seq:
            report.problems.append(Problem("gap", head_seq + 1,
                                           f"checkpoint covers seq {checkpoint.seq} but events "
                                           f"end at {head_seq}: tail truncated"))
        elif events and head_seq is not None and checkpoint.seq < head_seq:
            report.problems.append(Problem("checkpoint", checkpoint.seq,
                                           f"events run past the checkpoint (seq {head_seq})"))
        elif not events and checkpoint.hash != prev_hash:
            report.problems.append(Problem("altered", checkpoint.seq,
                                           "checkpoint does not match the chain head"))
    if report.problems:
        report.verified = 0
    return report
