"""The ingest batch: one agent's run of chained events and the signed checkpoint of its head.

The wire format of one batch (POST /api/v1/ingest):

    {"agent_id": "...", "prev_hash": "<hex of the hash before the first event>",
     "events": [{"event": {<the 8 event fields>}, "hash": "<hex>"}, ...],
     "checkpoint": {"agent_id", "seq", "hash", "ts", "boot_id", "signature": "<base64>"}}

An empty `events` list is an idle agent's heartbeat checkpoint. The forwarder writes it
(batch_body), the collector reads it (parse): both ends share this one definition.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from floor_agent.protocol.checkpoint import Checkpoint
from floor_agent.protocol.event import AGENT_ID_RE, AuditEvent, EventError

MAX_DETAIL_CHARS = 500  # a refusal's message is answered and stored as an alert's detail


def batch_body(agent_id: str, prev_hash: bytes, events: list[tuple[bytes, bytes]],
               checkpoint: Checkpoint) -> bytes:
    """The ingest body, assembled from the spooled canonical bytes without re-encoding them."""
    parts = [b'{"event":' + body + b',"hash":"' + digest.hex().encode() + b'"}'
             for body, digest in events]
    return (b'{"agent_id":' + orjson.dumps(agent_id) + b',"prev_hash":"'
            + prev_hash.hex().encode() + b'","events":[' + b",".join(parts)
            + b'],"checkpoint":' + orjson.dumps(checkpoint.to_wire()) + b"}")


class BatchError(ValueError):
    """A batch that cannot even be read; status is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, agent_id: str | None = None) -> None:
        super().__init__(message[:MAX_DETAIL_CHARS])
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
    if not AGENT_ID_RE.match(agent_id):  # before it is quoted, looked up, logged or stored
        raise BatchError(422, "batch.agent_id: expected 1-64 of [A-Za-z0-9._-]")
    events_raw = raw.get("events")
    if not isinstance(events_raw, list):
        raise BatchError(422, "batch.events: expected a list", agent_id)
    if len(events_raw) > max_events:
        raise BatchError(413, f"batch.events: {len(events_raw)} events, at most {max_events} "
                              f"in one batch", agent_id)
    try:
        prev_text = raw.get("prev_hash", "")
        prev_hash = bytes.fromhex(prev_text) if len(prev_text) == 64 else b""
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
            claimed = bytes.fromhex(item["hash"]) if len(item["hash"]) == 64 else b""
        except EventError as exc:
            raise BatchError(422, str(exc), agent_id) from None
        except (KeyError, TypeError, ValueError):
            raise BatchError(422, f"{where}.hash: expected 64 hex digits", agent_id) from None
        if len(claimed) != 32:
            raise BatchError(422, f"{where}.hash: expected 64 hex digits", agent_id)
        body_bytes = orjson.dumps(item["event"], option=orjson.OPT_SORT_KEYS)
        events.append(WireEvent(event, body_bytes, claimed))
    return Batch(agent_id, prev_hash, events, checkpoint)
