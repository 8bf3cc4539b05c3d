"""What the store hands out and takes in besides plain dicts: an agent's chain record, the
stored row of an event, the alerts to store. Ingest decides with them; the store keeps them
(so they live here, below both)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from floor_agent.protocol.checkpoint import GENESIS_HASH

MAX_NOISE_SOURCES = 64  # open noise alerts per kind; further addresses share one row


class EventRow(NamedTuple):
    """One event as stored, in the column order of sql.INSERT_EVENT (ingest.event_params
    builds it once per event; a tuple, so it goes to executemany and COPY as it is)."""

    agent_id: str
    seq: int
    boot_id: str
    ts: str
    kind: str
    severity: str
    severity_rank: int
    subject: str
    data: str  # the event's data as JSON text
    hash: bytes  # the chain hash the agent signed through its checkpoint
    received_at: str


class LatestRow(NamedTuple):
    """The newest state event of one (agent, topic): a row of the `latest` table."""

    agent_id: str
    topic: str
    seq: int
    ts: str
    kind: str
    severity: str
    data: str


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """What the collector knows of an enrolled agent and of its chain."""

    agent_id: str
    role: str
    public_key: str
    head_seq: int = 0
    head_hash: bytes = GENESIS_HASH
    checkpoint_seq: int | None = None
    checkpoint_ts: str | None = None


@dataclass(frozen=True, slots=True)
class AlertDraft:
    kind: str
    severity: str
    agent_id: str | None  # None: not attributable to an agent (see `source`)
    detail: str
    seq: int | None = None
    # an alert raised by an agent's own event: counted per (kind, agent, subject) while open,
    # so a stick plugged ten times is one open alert seen ten times, not ten alerts
    subject: str | None = None
    count: int = 1  # times seen in this batch (one upsert per open alert, not per event)
    # the client address of an unauthenticated failure: counted per (kind, source) while open
    source: str | None = None

    @property
    def fingerprint(self) -> str:
        """Same kind, agent and place: the same open alert, counted rather than repeated."""
        if self.source is not None:
            return f"src:{self.kind}:{self.source}"
        if self.subject is not None:
            return f"{self.kind}:{self.agent_id}:s:{self.subject}"
        return f"{self.kind}:{self.agent_id}:{self.seq if self.seq is not None else '-'}"


@dataclass(frozen=True, slots=True)
class NotificationDraft:
    """One notification to put in the outbox (collector/notify_rules.py plans them). dedupe is
    unique in the outbox: planning the same thing twice (a restart) adds it once."""

    dedupe: str
    channel: str
    kind: str  # alert | escalation | digest
    payload: dict[str, Any]
    alert_id: int | None = None
    state: str = "pending"  # or folded: waits for its window's digest
    digest_window: str | None = None
