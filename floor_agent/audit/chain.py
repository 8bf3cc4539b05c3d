"""The one verifier of a per-agent hash chain against its signed checkpoint: pure, no I/O.

The chain and checkpoint format lives in protocol/checkpoint.py; this says what is wrong with
a run of stored or received events, in Problems that name the seq.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from floor_agent.protocol.checkpoint import GENESIS_HASH, Checkpoint, link
from floor_agent.protocol.event import AuditEvent, canonical

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


@dataclass(frozen=True, slots=True)
class Break:
    """Where a run stops being one chain: the event at `index` (its `seq`) came out of order
    (`expected` is the seq that should have come) or, with `expected` None, does not hash to
    the hash claimed for it."""

    index: int
    seq: int
    expected: int | None


@dataclass(slots=True)
class Walk:
    head: bytes  # the hash after the last event walked (a claimed one after an altered event)
    breaks: list[Break]


def walk(prev_hash: bytes, seqs: Sequence[int], bodies: Sequence[bytes],
         claimed: Sequence[bytes | None] | None = None, *, first_only: bool = False) -> Walk:
    """The one chain walk, over canonical event bytes: what verify() and the collector's
    ingest both run. Each event must follow the one before (seq + 1) and, where a hash is
    claimed for it, hash to exactly that. An altered event is reported once: the walk goes on
    from its claimed hash. `first_only` stops at the first break (ingest refuses the batch)."""
    breaks: list[Break] = []
    current = prev_hash
    expected = seqs[0] if seqs else 0
    claims: Sequence[bytes | None] = claimed if claimed is not None else ()
    count = len(claims)
    for index, seq in enumerate(seqs):
        if seq != expected:
            breaks.append(Break(index, seq, expected))
            if first_only:
                return Walk(current, breaks)
        expected = seq + 1
        current = link(current, bodies[index])
        claim = claims[index] if index < count else None
        if claim is not None and claim != current:
            breaks.append(Break(index, seq, None))
            if first_only:
                return Walk(current, breaks)
            current = claim
    return Walk(current, breaks)


def verify(
    events: Sequence[AuditEvent],
    checkpoint: Checkpoint | None,
    key: Ed25519PublicKey | None,
    prev_hash: bytes = GENESIS_HASH,
    claimed_hashes: Sequence[bytes | None] | None = None,
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
    walked = walk(prev_hash, [event.seq for event in events],
                  [canonical(event) for event in events], claimed_hashes)
    # each event's findings in the order it always had: foreign, then order, then altered
    found = [(index, 0, Problem("foreign", event.seq,
                                f"event of agent {event.agent_id!r} in {agent_id!r}"))
             for index, event in enumerate(events) if event.agent_id != agent_id]
    for brk in walked.breaks:
        if brk.expected is None:
            found.append((brk.index, 2, Problem("altered", brk.seq,
                                                "event does not hash to its recorded hash")))
        else:
            kind: ProblemKind = "gap" if brk.seq > brk.expected else (
                "duplicate" if brk.seq == brk.expected - 1 else "reordered")
            found.append((brk.index, 1, Problem(kind, brk.seq, f"expected seq {brk.expected}, "
                                                               f"found {brk.seq}")))
    report.problems += [problem for _, _, problem in sorted(found, key=lambda f: f[:2])]
    if events:
        report.first_seq, report.last_seq = events[0].seq, events[-1].seq
        report.verified = len(events)
    current = walked.head
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
