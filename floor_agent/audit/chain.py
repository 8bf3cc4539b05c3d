"""The per-agent hash chain and its Ed25519-signed checkpoints: pure functions, no I/O.

hash_n = SHA-256("floor-agent/event/v1" 0x00 || hash_{n-1} || canonical(event_n)), hash_0 = 32
zero bytes. A checkpoint signs (agent_id, seq, hash, ts, boot_id) of the head. The chain alone
shows that nothing inside it changed; the signed checkpoint, held off the host by the collector,
anchors the head so a truncated tail or a rewritten history is visible too.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from floor_agent.protocol.event import (
    AGENT_ID_RE,
    MAX_INT,
    AuditEvent,
    EventError,
    canonical,
    check_timestamp,
    shown,
)

EVENT_DOMAIN = b"floor-agent/event/v1\x00"
CHECKPOINT_DOMAIN = b"floor-agent/checkpoint/v1\x00"
GENESIS_HASH = bytes(32)


def link(prev_hash: bytes, event_bytes: bytes) -> bytes:
    """One step of the chain over already-canonical event bytes."""
    return hashlib.sha256(EVENT_DOMAIN + prev_hash + event_bytes).digest()


def event_hash(prev_hash: bytes, event: AuditEvent) -> bytes:
    return link(prev_hash, canonical(event))


def chain_hashes(events: Iterable[AuditEvent], prev_hash: bytes = GENESIS_HASH) -> list[bytes]:
    """The hash after each event, starting from prev_hash."""
    out: list[bytes] = []
    for event in events:
        prev_hash = event_hash(prev_hash, event)
        out.append(prev_hash)
    return out


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement by an agent: 'my chain has seq events and ends in hash, at ts'."""

    agent_id: str
    seq: int
    hash: bytes
    ts: str
    boot_id: str
    signature: bytes = b""

    def signed_bytes(self) -> bytes:
        body = {"agent_id": self.agent_id, "seq": self.seq, "hash": self.hash.hex(),
                "ts": self.ts, "boot_id": self.boot_id}
        return CHECKPOINT_DOMAIN + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)

    def sign(self, key: Ed25519PrivateKey) -> Checkpoint:
        return Checkpoint(self.agent_id, self.seq, self.hash, self.ts, self.boot_id,
                          key.sign(self.signed_bytes()))

    def signature_valid(self, key: Ed25519PublicKey) -> bool:
        try:
            key.verify(self.signature, self.signed_bytes())
        except InvalidSignature:
            return False
        return True

    def to_wire(self) -> dict[str, Any]:
        return {"agent_id": self.agent_id, "seq": self.seq, "hash": self.hash.hex(),
                "ts": self.ts, "boot_id": self.boot_id,
                "signature": base64.b64encode(self.signature).decode()}

    @classmethod
    def from_wire(cls, raw: Any) -> Checkpoint:
        """Parse a checkpoint from JSON; ValueError names the bad field (`checkpoint.<field>`).

        Every field is bounded here, before anything else looks at it: the id by the agent id
        pattern, seq to 0..2**63-1 (a store's integer), ts to the one timestamp form events
        use (a real date), boot_id to 1-64 characters; errors quote at most a short prefix.
        """
        if not isinstance(raw, dict):
            raise ValueError("checkpoint: expected an object")
        missing = [name for name in CHECKPOINT_FIELDS if name not in raw]
        if missing:
            raise ValueError(f"checkpoint: missing field {missing[0]}")
        agent_id, seq, ts, boot_id = raw["agent_id"], raw["seq"], raw["ts"], raw["boot_id"]
        if not isinstance(agent_id, str) or not AGENT_ID_RE.match(agent_id):
            raise ValueError(f"checkpoint.agent_id: expected 1-64 of [A-Za-z0-9._-], "
                             f"got {shown(agent_id)}")
        if type(seq) is not int or not 0 <= seq <= MAX_INT:
            raise ValueError(f"checkpoint.seq: expected an integer 0..{MAX_INT}, "
                             f"got {shown(seq)}")
        try:
            check_timestamp(ts)
        except EventError as exc:
            raise ValueError(f"checkpoint.{exc}") from None
        if not isinstance(boot_id, str) or not 1 <= len(boot_id) <= 64 or "\x00" in boot_id:
            raise ValueError(f"checkpoint.boot_id: expected 1-64 characters without NUL, "
                             f"got {shown(boot_id)}")
        for name, size, decode in (("hash", 32, bytes.fromhex), ("signature", 64, _b64)):
            value = raw[name]
            if not isinstance(value, str) or len(value) > 2 * size + 4:
                raise ValueError(f"checkpoint.{name}: expected {size} bytes as "
                                 f"{'hex' if name == 'hash' else 'base64'}")
            try:
                decoded = decode(value)
            except ValueError:
                decoded = b""
            if len(decoded) != size:
                raise ValueError(f"checkpoint.{name}: expected {size} bytes as "
                                 f"{'hex' if name == 'hash' else 'base64'}")
        return cls(agent_id, seq, bytes.fromhex(raw["hash"]), ts, boot_id,
                   _b64(raw["signature"]))


CHECKPOINT_FIELDS = ("agent_id", "seq", "hash", "ts", "boot_id", "signature")


def _b64(text: str) -> bytes:
    """Strict base64 (ValueError on anything else, binascii.Error being one)."""
    return base64.b64decode(text, validate=True)


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding of a verification: what kind, at which seq, in words."""

    kind: str  # altered | gap | reordered | duplicate | foreign | checkpoint | bad_signature
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
