"""Build signed ingest batches exactly as an agent does, for tests that play agent or attacker."""

from __future__ import annotations

from pathlib import Path

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from floor_agent.audit.keys import public_key_b64
from floor_agent.audit.spool import Spool
from floor_agent.protocol.batch import batch_body
from floor_agent.protocol.checkpoint import Checkpoint


class BatchMaker:
    """One agent identity (key + spool) whose batches tests can send, alter or replay."""

    def __init__(self, root: Path, agent_id: str, key: Ed25519PrivateKey | None = None,
                 spool_name: str | None = None) -> None:
        self.agent_id = agent_id
        self.key = key or Ed25519PrivateKey.generate()
        self.spool = Spool(root / f"{spool_name or agent_id}.db", agent_id)

    @property
    def public_key(self) -> str:
        return public_key_b64(self.key)

    def enroll_payload(self, token: str, role: str = "workstation") -> dict[str, str]:
        return {"token": token, "agent_id": self.agent_id, "role": role,
                "public_key": self.public_key, "hostname": "test-host"}

    def emit(self, count: int, kind: str = "test.event") -> None:
        self.spool.emit_many([(kind, f"item {i}", "info", {"i": i}) for i in range(count)])

    def body(self, limit: int = 500, key: Ed25519PrivateKey | None = None) -> bytes:
        """The next batch of pending events, ending in a freshly signed checkpoint."""
        acked, pending = self.spool.batch(limit)
        last_seq = pending[-1].seq if pending else acked.seq
        last_hash = pending[-1].hash if pending else acked.hash
        checkpoint = Checkpoint(self.agent_id, last_seq, last_hash,
                                self.spool.next_checkpoint_ts(), self.spool.boot_id)
        return batch_body(self.agent_id, acked.hash, [(p.body, p.hash) for p in pending],
                          checkpoint.sign(key or self.key))

    def ack(self, seq: int) -> None:
        self.spool.acknowledge(seq)


def alter_event(body: bytes, index: int, **changes: object) -> bytes:
    """The same batch with one event's fields changed but its chain hash kept."""
    batch = orjson.loads(body)
    batch["events"][index]["event"].update(changes)
    return orjson.dumps(batch)
