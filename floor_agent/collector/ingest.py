"""Ingest decisions, pure: parse a batch, verify it, and say what to store and what to alert.

The batch's wire format and its parsing are protocol/batch.py's (agents write it too). The
checkpoint's signature over the head hash authenticates every event in the batch through the
chain, so one Ed25519 verification covers the whole batch. Nothing here touches the store, the
clock or the network: `plan()` gets the agent's record and the stored hashes it needs, and
returns a Plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import orjson

from floor_agent.audit import chain
from floor_agent.audit.keys import KeyFileError, public_key_from_b64
from floor_agent.protocol.batch import MAX_DETAIL_CHARS, Batch, BatchError, WireEvent, parse
from floor_agent.protocol.checkpoint import GENESIS_HASH, Checkpoint
from floor_agent.protocol.event import (
    SEVERITY_RANK,
    EventError,
    parse_timestamp,
    utc_timestamp,
)
from floor_agent.store.records import AgentRecord, AlertDraft, EventRow

ALERT_RANK = SEVERITY_RANK["warning"]  # an agent's event this severe or worse is an alert
# Alert kinds the collector raises; every anomaly becomes one of these, stored with the data.
# The first group means an agent's record can no longer be trusted as complete and unaltered.
CHAIN_BREAKS = ("bad_signature", "altered_event", "fork", "gap", "replay", "rollback")
ALERT_KINDS = (*CHAIN_BREAKS, "stale_checkpoint", "unknown_agent", "malformed_batch",
               "clock_skew", "forged_rows")
# What fails before a batch is authenticated (nothing proves who sent it): counted per source
# address and kind on one open alert, never attributed to the agent the batch names.
UNAUTHENTICATED = ("unknown_agent", "bad_signature", "malformed_batch")
NOISE_SEVERITY = "warning"  # below every critical: noise never pushes a genuine one down


@dataclass(slots=True)
class Plan:
    """What to do with a batch: the HTTP answer, the rows to store, the alerts to raise."""

    status: int
    message: str
    store: list[EventRow] = field(default_factory=list)
    alerts: list[AlertDraft] = field(default_factory=list)
    acked_seq: int | None = None
    new_head: tuple[int, bytes] | None = None
    # stored rows above the agent's head that its signed batch contradicts: moved aside
    quarantine: list[int] = field(default_factory=list)
    # set when refused before authentication: the alert kind to count against the source
    noise: str | None = None
    # acknowledged, nothing written: every event (or a heartbeat's head) already stored as
    # the agent signed it, under an older checkpoint than the stored one
    duplicate: bool = False

    @property
    def accepted(self) -> bool:
        return self.status == 200


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
    rows: list[EventRow]
    problem: tuple[int, str, str, int | None] | None = None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Rows cross to and from the prepare worker as plain tuples: pickled one by one, a
        thousand NamedTuples took seven times as long as the tuples they are."""
        return _unpickle_prepared, (self.agent_id, self.prev_hash, self.checkpoint, self.seqs,
                                    self.hashes, [tuple(row) for row in self.rows],
                                    self.problem)


_new_row = tuple.__new__


def _unpickle_prepared(agent_id: str, prev_hash: bytes, checkpoint: Checkpoint, seqs: list[int],
                       hashes: list[bytes], rows: list[tuple[Any, ...]],
                       problem: tuple[int, str, str, int | None] | None) -> Prepared:
    return Prepared(agent_id, prev_hash, checkpoint, seqs, hashes,
                    [_new_row(EventRow, row) for row in rows], problem)


def event_params(wire: WireEvent, received_at: str) -> EventRow:
    """The stored row of one event, in the column order of floor_agent.store.sql.INSERT_EVENT."""
    e = wire.event
    # tuple.__new__: half the cost of EventRow(...)'s keyword-capable __new__, once per event
    return _new_row(EventRow, (e.agent_id, e.seq, e.boot_id, e.ts, e.kind, e.severity,
                               SEVERITY_RANK[e.severity], e.subject,
                               orjson.dumps(e.data).decode(), wire.claimed_hash, received_at))


def prepare(body: bytes, max_events: int, received_at: str) -> Prepared:
    """Parse and check a batch as far as it can be without the store. Raises BatchError."""
    batch = parse(body, max_events)
    seqs = [w.event.seq for w in batch.events]
    hashes = [w.claimed_hash for w in batch.events]
    return Prepared(batch.agent_id, batch.prev_hash, batch.checkpoint, seqs, hashes,
                    [event_params(w, received_at) for w in batch.events],
                    _chain_problem(batch, seqs, hashes))


def _chain_problem(batch: Batch, seqs: list[int], hashes: list[bytes]
                   ) -> tuple[int, str, str, int | None] | None:
    """The first event of another agent, or break in the chain from prev_hash to the head:
    the one chain walk (audit/chain.walk) over the batch's canonical bytes, reported as the
    ingest alert that refuses the batch."""
    for wire in batch.events:
        if wire.event.agent_id != batch.agent_id:
            return (422, "replay", f"batch carries an event of agent {wire.event.agent_id!r} "
                                   f"(seq {wire.event.seq}): another agent's events replayed",
                    wire.event.seq)
    if not batch.events:
        return None
    if seqs[0] == 1 and batch.prev_hash != GENESIS_HASH:
        return (422, "altered_event",
                "first event of the chain does not start from the genesis hash", 1)
    walked = chain.walk(batch.prev_hash, seqs, [w.body for w in batch.events], hashes,
                        first_only=True)
    if walked.breaks:
        brk = walked.breaks[0]
        if brk.expected is not None:
            return (422, "altered_event",
                    f"events out of order: expected seq {brk.expected}, found {brk.seq}", brk.seq)
        return (422, "altered_event", f"event seq {brk.seq} ({batch.events[brk.index].event.kind}) "
                                      f"does not hash to its chain hash: altered", brk.seq)
    cp = batch.checkpoint
    if cp.seq != seqs[-1] or cp.hash != walked.head:
        return (422, "altered_event", f"signed checkpoint (seq {cp.seq}) does not match the "
                                      f"batch head (seq {seqs[-1]})", cp.seq)
    return None


def _reject(status: int, kind: str, severity: str, agent_id: str, detail: str,
            seq: int | None = None, subject: str | None = None) -> Plan:
    return Plan(status, detail, alerts=[AlertDraft(kind, severity, agent_id, detail, seq,
                                                   subject=subject)])


def _unauthenticated(status: int, kind: str, claimed: str, detail: str) -> Plan:
    """A refusal before the batch is authenticated: nothing here is attributed to an agent;
    the caller counts it against the sending address (noise_alert with its real source)."""
    return Plan(status, detail, alerts=[noise_alert(kind, "unknown", claimed, detail)],
                noise=kind)


def noise_alert(kind: str, source: str, claimed: str | None, reason: str) -> AlertDraft:
    """The per-address alert of an unauthenticated failure; every part of it is bounded.

    `claimed` is the agent id the batch named (already checked against the id pattern, or
    None), kept in the words only: anyone can name any agent.
    """
    named = f"; last one named agent {claimed!r}" if claimed else ""
    detail = f"{kind} from {source[:64]}: {reason}"[:MAX_DETAIL_CHARS - 100] + named
    return AlertDraft(kind, NOISE_SEVERITY, None, detail, source=source[:64])


@dataclass(frozen=True, slots=True)
class Clock:
    """The collector's time and how far an agent's may be from it (collector config
    max_clock_skew_seconds)."""

    now: datetime
    max_skew: timedelta

    def offset(self, ts: str) -> str:
        """How far ts is from now, in words ("3 days 2:00:00 ahead", "25 years behind")."""
        delta = parse_timestamp(ts) - self.now
        ahead = delta >= timedelta(0)
        span = abs(delta)
        text = f"{span.days // 365} years" if span.days >= 730 else str(span).split(".")[0]
        return f"{text} {'ahead of' if ahead else 'behind'} the collector's clock"


def plan(batch: Prepared, agent: AgentRecord | None, stored: Mapping[int, bytes], *,
         clock: Clock | None = None, last_stored: int | None = None) -> Plan:
    """Decide what happens to a prepared batch.

    `stored` maps seq -> stored hash for every seq of the batch and for the seq just before its
    first event (and for the checkpoint's seq, for a heartbeat); `last_stored` is the highest
    seq stored for the agent at or below its head (None: unknown), which names the range of
    deleted rows. Without a clock, timestamps are only checked for their form.
    All-or-nothing: a batch is either stored whole (duplicates skipped) or not at all.
    """
    cp = batch.checkpoint
    if agent is None:
        return _unauthenticated(401, "unknown_agent", batch.agent_id,
                                f"agent {batch.agent_id!r} is not enrolled")
    if cp.agent_id != agent.agent_id or batch.agent_id != agent.agent_id:
        return _unauthenticated(401, "bad_signature", batch.agent_id,
                                f"checkpoint names agent {cp.agent_id!r}, batch "
                                f"{batch.agent_id!r}: not signed by that agent")
    try:
        key = public_key_from_b64(agent.public_key)
    except KeyFileError:
        return _reject(500, "bad_signature", "critical", agent.agent_id,
                       "stored public key of this agent is unusable")
    if not cp.signature_valid(key):
        return _unauthenticated(401, "bad_signature", batch.agent_id,
                                f"checkpoint signature at seq {cp.seq} does not verify "
                                f"with the key of {agent.agent_id!r}")
    # From here the batch is the agent's own (its key signed it): what is wrong is its doing.
    if clock is not None and cp.ts > utc_timestamp(clock.now + clock.max_skew):
        return _reject(409, "clock_skew", "warning", agent.agent_id,
                       f"signed checkpoint stamped {cp.ts}, {clock.offset(cp.ts)} (more than "
                       f"{int(clock.max_skew.total_seconds())} s): refused, the agent keeps its "
                       f"events until its clock is right", cp.seq, subject="checkpoint")
    if _replayed(cp, agent, clock):
        if batch.problem is None and _all_stored(batch, stored):
            return Plan(200, f"duplicate: {len(batch.seqs)} event(s) to seq {cp.seq} already "
                             f"stored", acked_seq=cp.seq, duplicate=True)
        return _reject(409, "replay", "critical", agent.agent_id,
                       f"checkpoint of {cp.ts} is not newer than the last accepted one "
                       f"({agent.checkpoint_ts}): replayed batch", cp.seq)
    if batch.problem is not None:
        status, kind, detail, seq = batch.problem
        return _reject(status, kind, "critical", agent.agent_id, detail, seq)
    result = (_plan_events(batch, agent, stored, last_stored) if batch.seqs
              else _plan_heartbeat(batch, agent, stored, last_stored))
    if result.accepted and clock is not None and result.store:
        skewed = _skewed_events(result.store, agent, clock)
        if skewed is not None:
            result.alerts.append(skewed)
    return result


def _all_stored(batch: Prepared, stored: Mapping[int, bytes]) -> bool:
    """Whether the store already holds exactly what this (authenticated) batch says: every
    event at its seq with its hash, chained from the stored predecessor; for a heartbeat, the
    event its checkpoint signs. Such a batch is the agent's own retry (sent again after a
    timeout, to this collector or another, or overtaken by its next batch): storing it again
    would change nothing, and refusing it raised a false replay alarm. A copy replayed by
    someone else is the same bytes and is answered the same: it moves no checkpoint, no head
    and no last-seen time, so it cannot make a silent agent look alive nor roll anything back.
    What differs from the store (an event missing or other) stays a replay."""
    cp = batch.checkpoint
    if not batch.seqs:
        return (GENESIS_HASH if cp.seq == 0 else stored.get(cp.seq)) == cp.hash
    return (stored.get(batch.seqs[0] - 1) == batch.prev_hash
            and all(stored.get(seq) == digest
                    for seq, digest in zip(batch.seqs, batch.hashes, strict=True)))


def _trusted_mark(agent: AgentRecord, clock: Clock | None) -> str | None:
    """The last accepted checkpoint's ts, unless it cannot be right: not a timestamp, or
    beyond the allowed skew (a store written before these checks): then it decides nothing."""
    mark = agent.checkpoint_ts
    if mark is None:
        return None
    try:
        parse_timestamp(mark)
    except EventError:
        return None
    if clock is not None and mark > utc_timestamp(clock.now + clock.max_skew):
        return None
    return mark


def _replayed(cp: Checkpoint, agent: AgentRecord, clock: Clock | None) -> bool:
    """A batch seen before: its checkpoint is not newer than the last accepted one and it
    covers no seq beyond what the store already has. A checkpoint on new ground (a seq past
    both the stored head and the last checkpoint) was never sent before whatever its ts says,
    so one bad timestamp cannot block an agent; and a mark that cannot be right (see
    _trusted_mark) is not compared with at all: then a checkpoint behind the last one is the
    replay."""
    known = max(agent.checkpoint_seq or 0, agent.head_seq)
    mark = _trusted_mark(agent, clock)
    if mark is None:
        return agent.checkpoint_ts is not None and cp.seq < known
    return cp.ts <= mark and cp.seq <= known


def _skewed_events(rows: list[EventRow], agent: AgentRecord,
                   clock: Clock) -> AlertDraft | None:
    """A clock_skew alert for the events of an accepted batch stamped beyond the skew: in the
    future of the collector's clock, or before the agent's previous checkpoint (an event after
    a checkpoint was written after it). They are stored all the same: signed and genuine."""
    future = utc_timestamp(clock.now + clock.max_skew)
    mark = _trusted_mark(agent, clock)
    past = utc_timestamp(parse_timestamp(mark) - clock.max_skew) if mark else None
    after = agent.checkpoint_seq or 0
    off = [(row.seq, row.ts) for row in rows
           if row.ts > future or (past is not None and row.seq > after and row.ts < past)]
    if not off:
        return None
    worst = max(off, key=lambda item: abs(parse_timestamp(item[1]) - clock.now))
    seqs = _ranges([seq for seq, _ in off])
    return AlertDraft("clock_skew", "warning", agent.agent_id,
                      f"{len(off)} event(s) of {agent.agent_id} (seq {seqs}) stamped off the "
                      f"collector's clock by more than {int(clock.max_skew.total_seconds())} s: "
                      f"seq {worst[0]} at {worst[1]}, {clock.offset(worst[1])}; stored with "
                      f"their received time"[:MAX_DETAIL_CHARS], off[0][0], subject="events")


def _ranges(seqs: list[int], most: int = 8) -> str:
    """'3..7, 9' for [3, 4, 5, 6, 7, 9]: seqs in words, at most `most` runs."""
    runs: list[list[int]] = []
    for seq in sorted(seqs):
        if runs and seq == runs[-1][1] + 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    words = [f"{a}..{b}" if a != b else str(a) for a, b in runs[:most]]
    return ", ".join(words) + (f" and {len(runs) - most} more" if len(runs) > most else "")


def _deleted(agent: AgentRecord, missing: int, last_stored: int | None) -> AlertDraft:
    """A stored predecessor missing at or below the signed head: rows deleted from the store."""
    low = last_stored + 1 if last_stored is not None and last_stored < missing else missing
    return AlertDraft("gap", "critical", agent.agent_id,
                      f"stored events {low}..{agent.head_seq} of {agent.agent_id} are missing "
                      f"at or below its signed head ({agent.head_seq}; seq {missing} at least): "
                      f"deleted from the store", low)


def _forged(agent: AgentRecord, seqs: list[int]) -> AlertDraft:
    return AlertDraft("forged_rows", "critical", agent.agent_id,
                      f"stored rows of {agent.agent_id} at seq {_ranges(seqs)}, above its signed "
                      f"head ({agent.head_seq}), differ from what the agent signed: written into "
                      f"the store, never sent by the agent; moved to quarantine", seqs[0])


def _plan_events(batch: Prepared, agent: AgentRecord, stored: Mapping[int, bytes],
                 last_stored: int | None) -> Plan:
    cp = batch.checkpoint
    first = batch.seqs[0]
    forged: list[int] = []  # stored rows above the head that the signed batch contradicts
    deleted: AlertDraft | None = None
    before = stored.get(first - 1)
    if before is not None and before != batch.prev_hash:
        if first - 1 <= agent.head_seq:
            return _reject(409, "fork", "critical", agent.agent_id,
                           f"batch chains on from a hash at seq {first - 1} that differs from "
                           f"the stored one: fork", first - 1)
        forged.append(first - 1)  # never covered by a signed checkpoint: not the agent's
    elif before is None and 0 < first - 1 <= agent.head_seq:
        deleted = _deleted(agent, first - 1, last_stored)
    new: list[int] = []
    for index, (seq, claimed) in enumerate(zip(batch.seqs, batch.hashes, strict=True)):
        have = stored.get(seq)
        if have is None:
            new.append(index)
        elif have != claimed:
            if seq <= agent.head_seq:
                return _reject(409, "fork", "critical", agent.agent_id,
                               f"seq {seq} already stored with another hash: fork", seq)
            forged.append(seq)
            new.append(index)
    rows = batch.rows if len(new) == len(batch.rows) else [batch.rows[i] for i in new]
    result = Plan(200, "stored", store=rows, acked_seq=cp.seq, alerts=event_alerts(rows),
                  quarantine=forged)
    if forged:
        result.alerts.append(_forged(agent, forged))
    if deleted is not None:
        result.alerts.append(deleted)
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


def event_alerts(rows: list[EventRow]) -> list[AlertDraft]:
    """Agents' own events of severity warning or worse become alerts for security staff (a
    blocked stick, a breach, a forced door, a covered lens), as they are stored."""
    alerts: dict[str, AlertDraft] = {}
    for row in rows:
        if row.severity_rank >= ALERT_RANK:
            draft = AlertDraft(row.kind, row.severity, row.agent_id,
                               f"{row.kind}: {row.subject}"[:500], row.seq,
                               subject=row.subject[:200])
            seen = alerts.get(draft.fingerprint)
            alerts[draft.fingerprint] = draft if seen is None else replace(
                draft, count=seen.count + 1)
    return list(alerts.values())


def _plan_heartbeat(batch: Prepared, agent: AgentRecord, stored: Mapping[int, bytes],
                    last_stored: int | None) -> Plan:
    cp = batch.checkpoint
    result = Plan(200, "checkpoint", acked_seq=cp.seq)
    have = GENESIS_HASH if cp.seq == 0 else stored.get(cp.seq)
    if have is not None and have != cp.hash:
        if cp.seq <= agent.head_seq:
            return _reject(409, "fork", "critical", agent.agent_id,
                           f"signed head at seq {cp.seq} differs from the stored event: fork",
                           cp.seq)
        result.quarantine = [cp.seq]
        result.alerts.append(_forged(agent, [cp.seq]))
    elif have is None and cp.seq <= agent.head_seq:
        result.alerts.append(_deleted(agent, cp.seq, last_stored))
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


def error_reason(error: BatchError) -> str:
    """What a malformed batch's noise alert says (bounded: BatchError cuts its message)."""
    return f"malformed batch refused ({error.status}): {error}"
