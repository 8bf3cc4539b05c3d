"""The per-agent hash chain and its Ed25519-signed checkpoints: the format, pure, no I/O.

hash_n = SHA-256("floor-agent/event/v1" 0x00 || hash_{n-1} || canonical(event_n)), hash_0 = 32
zero bytes. A checkpoint signs (agent_id, seq, hash, ts, boot_id) of the head. The chain alone
shows that nothing inside it changed; the signed checkpoint, held off the host by the collector,
anchors the head so a truncated tail or a rewritten history is visible too. Agents build it,
the collector checks it: both ends share this one definition (audit/chain.py verifies).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
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
