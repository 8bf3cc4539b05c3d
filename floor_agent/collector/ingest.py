"""Ingest decisions, pure: parse a batch, verify it, and say what to store and what to alert.

The wire format of one batch (POST /api/v1/ingest):

    {"agent_id": "...", "prev_hash": "<hex of the hash before the first event>",
     "events": [{"event": {<the 8 event fields>}, "hash": "<hex>"}, ...],
     "checkpoint": {"agent_id", "seq", "hash", "ts", "boot_id", "signature": "<base64>"}}

An empty `events` list is an idle agent's heartbeat checkpoint. The checkpoint's signature over
the head hash authenticates every event in the batch through the chain, so one Ed25519
verification covers the whole batch. Nothing here touches the store, the clock or the network:
`plan()` gets the agent's record and the stored hashes it needs, and returns a Plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from floor_agent.audit.chain import GENESIS_HASH, Checkpoint, link
from floor_agent.audit.event import SEVERITY_RANK, AuditEvent, EventError
from floor_agent.audit.keys import KeyFileError, public_key_from_b64

ALERT_RANK = SEVERITY_RANK["warning"]  # an agent's event this severe or worse is an alert
# Alert kinds the collector raises; every anomaly becomes one of these, stored with the data.
# The first group means an agent's record can no longer be trusted as complete and unaltered.
CHAIN_BREAKS = ("bad_signature", "altered_event", "fork", "gap", "replay", "rollback")
ALERT_KINDS = (*CHAIN_BREAKS, "stale_checkpoint", "unknown_agent", "malformed_batch")


class BatchError(ValueError):
    """A batch that cannot even be read; status is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, agent_id: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.agent_id = agent_id

    def __reduce__(self) -> tuple[type[BatchError], tuple[int, str, str | None]]:
        """Pickled whole: it travels back from the ingest worker process, and the default
        (args only) could not be unpickled, which broke the worker pool on every bad batch."""
        return BatchError, (self.status, str(self), self.agent_id)


@dataclass(frozen=True, slots=True)
class WireEvent:
    event: AuditEvent
    body: bytes  # canonical bytes, recomputed here: what was signed through the chain
    claimed_hash: bytes


@dataclass(frozen=True, slots=True)
class Batch:
    agent_id: str
    prev_hash: bytes
    events: list[WireEvent]
    checkpoint: Checkpoint


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
    agent_id: str
    detail: str
    seq: int | None = None
    # an alert raised by an agent's own event: counted per (kind, agent, subject) while open,
    # so a stick plugged ten times is one open alert seen ten times, not ten alerts
    subject: str | None = None
    count: int = 1  # times seen in this batch (one upsert per open alert, not per event)

    @property
    def fingerprint(self) -> str:
        """Same kind, agent and place: the same open alert, counted rather than repeated."""
        if self.subject is not None:
            return f"{self.kind}:{self.agent_id}:s:{self.subject}"
        return f"{self.kind}:{self.agent_id}:{self.seq if self.seq is not None else '-'}"


@dataclass(slots=True)
class Plan:
    """What to do with a batch: the HTTP answer, the rows to store, the alerts to raise."""

    status: int
    message: str
    store: list[tuple[Any, ...]] = field(default_factory=list)  # rows, see event_params()
    alerts: list[AlertDraft] = field(default_factory=list)
    acked_seq: int | None = None
    new_head: tuple[int, bytes] | None = None

    @property
    def accepted(self) -> bool:
        return self.status == 200


def parse(body: bytes, max_events: int) -> Batch:
    """Decode and check the shape of a batch. Raises BatchError naming what is wrong."""
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BatchError(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise BatchError(422, "batch: expected a JSON object")
    agent_id = raw.get("agent_id")
    if not isinstance(agent_id, str):
        raise BatchError(422, "batch.agent_id: expected a string")
    events_raw = raw.get("events")
    if not isinstance(events_raw, list):
        raise BatchError(422, "batch.events: expected a list", agent_id)
    if len(events_raw) > max_events:
        raise BatchError(413, f"batch.events: {len(events_raw)} events, at most {max_events} "
                              f"in one batch", agent_id)
    try:
        prev_hash = bytes.fromhex(raw.get("prev_hash", ""))
    except (TypeError, ValueError):
        prev_hash = b""
    if len(prev_hash) != 32:
        raise BatchError(422, "batch.prev_hash: expected 64 hex digits", agent_id)
    try:
        checkpoint = Checkpoint.from_wire(raw.get("checkpoint"))
    except ValueError as exc:
        raise BatchError(422, f"batch.{exc}", agent_id) from None
    events: list[WireEvent] = []
    for index, item in enumerate(events_raw):
        where = f"batch.events[{index}]"
        if not isinstance(item, dict):
            raise BatchError(422, f"{where}: expected an object", agent_id)
        try:
            event = AuditEvent.from_dict(item.get("event"), f"{where}.event")
            claimed = bytes.fromhex(item["hash"])
        except EventError as exc:
            raise BatchError(422, str(exc), agent_id) from None
        except (KeyError, TypeError, ValueError):
            raise BatchError(422, f"{where}.hash: expected 64 hex digits", agent_id) from None
        if len(claimed) != 32:
            raise BatchError(422, f"{where}.hash: expected 64 hex digits", agent_id)
        body_bytes = orjson.dumps(item["event"], option=orjson.OPT_SORT_KEYS)
        events.append(WireEvent(event, body_bytes, claimed))
    return Batch(agent_id, prev_hash, events, checkpoint)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A parsed batch reduced to what the store side needs; cheap to pass between processes.

    Everything that needs no database (parsing, validation, the links inside the batch, the
    row values) is done by prepare(), which may run in another process; plan() then decides
    against the agent's record and the stored hashes. `problem` is the first thing wrong
    inside the batch, applied only after the signature and replay checks (status, alert kind,
    detail, seq).
    """

    agent_id: str
    prev_hash: bytes
    checkpoint: Checkpoint
    seqs: list[int]
    hashes: list[bytes]
    rows: list[tuple[Any, ...]]
    problem: tuple[int, str, str, int | None] | None = None


def event_params(wire: WireEvent, received_at: str) -> tuple[Any, ...]:
    """The stored row of one event, in the column order of store_sql.INSERT_EVENT."""
    e = wire.event
    return (e.agent_id, e.seq, e.boot_id, e.ts, e.kind, e.severity, SEVERITY_RANK[e.severity],
            e.subject, orjson.dumps(e.data).decode(), wire.claimed_hash, received_at)


def prepare(body: bytes, max_events: int, received_at: str) -> Prepared:
    """Parse and check a batch as far as it can be without the store. Raises BatchError."""
    batch = parse(body, max_events)
    return Prepared(batch.agent_id, batch.prev_hash, batch.checkpoint,
                    [w.event.seq for w in batch.events], [w.claimed_hash for w in batch.events],
                    [event_params(w, received_at) for w in batch.events], _chain_problem(batch))


def _chain_problem(batch: Batch) -> tuple[int, str, str, int | None] | None:
    """The first event of another agent, or break in the chain from prev_hash to the head."""
    for wire in batch.events:
        if wire.event.agent_id != batch.agent_id:
            return (422, "replay", f"batch carries an event of agent {wire.event.agent_id!r} "
                                   f"(seq {wire.event.seq}): another agent's events replayed",
                    wire.event.seq)
    if not batch.events:
        return None
    current = batch.prev_hash
    expected = batch.events[0].event.seq
    if expected == 1 and batch.prev_hash != GENESIS_HASH:
        return (422, "altered_event",
                "first event of the chain does not start from the genesis hash", 1)
    for wire in batch.events:
        seq = wire.event.seq
        if seq != expected:
            return (422, "altered_event",
                    f"events out of order: expected seq {expected}, found {seq}", seq)
        current = link(current, wire.body)
        if current != wire.claimed_hash:
            return (422, "altered_event", f"event seq {seq} ({wire.event.kind}) does not hash "
                                          f"to its chain hash: altered", seq)
        expected = seq + 1
    cp = batch.checkpoint
    if cp.seq != batch.events[-1].event.seq or cp.hash != current:
        return (422, "altered_event", f"signed checkpoint (seq {cp.seq}) does not match the "
                                      f"batch head (seq {batch.events[-1].event.seq})", cp.seq)
    return None


def _reject(status: int, kind: str, severity: str, agent_id: str, detail: str,
            seq: int | None = None) -> Plan:
    return Plan(status, detail, alerts=[AlertDraft(kind, severity, agent_id, detail, seq)])


def plan(batch: Prepared, agent: AgentRecord | None, stored: Mapping[int, bytes]) -> Plan:
    """Decide what happens to a prepared batch.

    `stored` maps seq -> stored hash for every seq of the batch and for the seq just before its
    first event (and for the checkpoint's seq, for a heartbeat). All-or-nothing: a batch is
    either stored whole (duplicates skipped) or not at all, so nothing is stored partially.
    """
    cp = batch.checkpoint
    if agent is None:
        return _reject(401, "unknown_agent", "warning", batch.agent_id,
                       f"agent {batch.agent_id!r} is not enrolled")
    if cp.agent_id != agent.agent_id or batch.agent_id != agent.agent_id:
        return _reject(401, "bad_signature", "critical", agent.agent_id,
                       f"checkpoint names agent {cp.agent_id!r}, batch {batch.agent_id!r}, "
                       f"enrolled key {agent.agent_id!r}")
    try:
        key = public_key_from_b64(agent.public_key)
    except KeyFileError:
        return _reject(500, "bad_signature", "critical", agent.agent_id,
                       "stored public key of this agent is unusable")
    if not cp.signature_valid(key):
        return _reject(401, "bad_signature", "critical", agent.agent_id,
                       f"checkpoint signature at seq {cp.seq} does not verify", cp.seq)
    if agent.checkpoint_ts is not None and cp.ts <= agent.checkpoint_ts:
        return _reject(409, "replay", "critical", agent.agent_id,
                       f"checkpoint of {cp.ts} is not newer than the last accepted one "
                       f"({agent.checkpoint_ts}): replayed batch", cp.seq)
    if batch.problem is not None:
        status, kind, detail, seq = batch.problem
        return _reject(status, kind, "critical", agent.agent_id, detail, seq)
    if batch.seqs:
        return _plan_events(batch, agent, stored)
    return _plan_heartbeat(batch, agent, stored)


def _plan_events(batch: Prepared, agent: AgentRecord, stored: Mapping[int, bytes]) -> Plan:
    cp = batch.checkpoint
    first = batch.seqs[0]
    before = stored.get(first - 1)
    if before is not None and before != batch.prev_hash:
        return _reject(409, "fork", "critical", agent.agent_id,
                       f"batch chains on from a hash at seq {first - 1} that differs from the "
                       f"stored one: fork", first - 1)
    new: list[int] = []
    for index, (seq, claimed) in enumerate(zip(batch.seqs, batch.hashes, strict=True)):
        have = stored.get(seq)
        if have is None:
            new.append(index)
        elif have != claimed:
            return _reject(409, "fork", "critical", agent.agent_id,
                           f"seq {seq} already stored with another hash: fork", seq)
    rows = batch.rows if len(new) == len(batch.rows) else [batch.rows[i] for i in new]
    result = Plan(200, "stored", store=rows, acked_seq=cp.seq, alerts=event_alerts(rows))
    if cp.seq > agent.head_seq:
        result.new_head = (cp.seq, cp.hash)
        above = [batch.seqs[i] for i in new if batch.seqs[i] > agent.head_seq]
        if above and above[0] > agent.head_seq + 1:
            result.alerts.append(AlertDraft(
                "gap", "critical", agent.agent_id,
                f"events {agent.head_seq + 1}..{above[0] - 1} never arrived: "
                f"removed from the agent's spool?", agent.head_seq + 1))
    elif cp.seq < agent.head_seq:
        result.alerts.append(_rollback(agent, cp.seq))
    result.message = f"stored {len(new)}, duplicates {len(batch.seqs) - len(new)}"
    return result


def event_alerts(rows: list[tuple[Any, ...]]) -> list[AlertDraft]:
    """Agents' own events of severity warning or worse become alerts for security staff (a
    blocked stick, a breach, a forced door, a covered lens), as they are stored."""
    alerts: dict[str, AlertDraft] = {}
    for row in rows:  # event_params' order
        agent_id, seq, kind, severity, rank, subject = row[0], row[1], row[4], row[5], row[6], \
            row[7]
        if rank >= ALERT_RANK:
            draft = AlertDraft(kind, severity, agent_id, f"{kind}: {subject}"[:500], seq,
                               subject=subject[:200])
            seen = alerts.get(draft.fingerprint)
            alerts[draft.fingerprint] = draft if seen is None else replace(
                draft, count=seen.count + 1)
    return list(alerts.values())


def _plan_heartbeat(batch: Prepared, agent: AgentRecord, stored: Mapping[int, bytes]) -> Plan:
    cp = batch.checkpoint
    result = Plan(200, "checkpoint", acked_seq=cp.seq)
    have = GENESIS_HASH if cp.seq == 0 else stored.get(cp.seq)
    if have is not None and have != cp.hash:
        return _reject(409, "fork", "critical", agent.agent_id,
                       f"signed head at seq {cp.seq} differs from the stored event: fork", cp.seq)
    if cp.seq > agent.head_seq:
        result.alerts.append(AlertDraft(
            "gap", "critical", agent.agent_id,
            f"agent's signed head is seq {cp.seq} but events after {agent.head_seq} never "
            f"arrived: tail lost or withheld", agent.head_seq + 1))
    elif cp.seq < agent.head_seq:
        result.alerts.append(_rollback(agent, cp.seq))
    return result


def _rollback(agent: AgentRecord, seq: int) -> AlertDraft:
    return AlertDraft("rollback", "critical", agent.agent_id,
                      f"agent signs a head at seq {seq}, behind the {agent.head_seq} events "
                      f"already stored: its chain was truncated or restored", seq)


def needed_seqs(batch: Prepared) -> list[int]:
    """The seqs whose stored hashes plan() needs to see."""
    if batch.seqs:
        return [batch.seqs[0] - 1, *batch.seqs]
    return [batch.checkpoint.seq]


def alert_for_error(error: BatchError) -> AlertDraft | None:
    """A malformed batch from a known agent is worth an alert; anonymous garbage is not."""
    if error.agent_id is None:
        return None
    return AlertDraft("malformed_batch", "warning", error.agent_id, str(error)[:500])
