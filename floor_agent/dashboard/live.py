"""The live feeds: ingest publishes each committed batch and each stored alert; every browser
gets what its page needs.

Ingest threads call `Broadcaster.publish` after the batch's transaction committed (so a browser
never sees an event the store does not hold), and `publish_alerts` once alerts are stored.
Three channels: `events` (the /events feed: every matching event), `overview` (only a small
`changed` note when a state topic (protocol/topics.py) or an alert moved: the overview refetches its
fragment, throttled, instead of reloading on every event) and `alerts` (the /alerts page: one
`alert` note per new or re-seen alert). Each subscriber has a bounded queue in the event loop:
a slow browser loses its oldest-unsent messages (and is told how many) instead of slowing
ingest, and publishing with nobody watching costs one empty-list check.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi.concurrency import run_in_threadpool

from floor_agent.protocol.event import SEVERITY_RANK
from floor_agent.protocol.topics import topic_of
from floor_agent.store.interface import StoreUnavailable
from floor_agent.store.records import AlertDraft, EventRow

QUEUE_SIZE = 2000
KEEPALIVE_SECONDS = 15.0
# An open feed re-checks its viewer's session this often: logout, expiry, a disabled user or
# a role that lost the permission ends the stream within about this many seconds.
RECHECK_SECONDS = 2.0
CHANNELS = ("events", "overview", "alerts")
Message = tuple[str, dict[str, Any]]  # (SSE event name, JSON payload)


@dataclass(frozen=True, slots=True)
class LiveFilter:
    """The /events filters, as the feed applies them to each new event."""

    kind_prefix: str | None = None
    min_severity: str | None = None
    agent_id: str | None = None
    since: str | None = None
    until: str | None = None
    channel: str = "events"


def matches(live: LiveFilter, event: dict[str, Any]) -> bool:
    """Whether a new event belongs in a feed with these filters (pure)."""
    if live.kind_prefix and not event["kind"].startswith(live.kind_prefix):
        return False
    if live.min_severity and SEVERITY_RANK[event["severity"]] < SEVERITY_RANK[live.min_severity]:
        return False
    if live.agent_id and event["agent_id"] != live.agent_id:
        return False
    if live.since and event["ts"] < live.since:
        return False
    return not (live.until and event["ts"] >= live.until)


def state_changes(rows: list[EventRow]) -> int:
    """How many rows of a batch set a state the overview shows (pure; protocol.topics.topic_of)."""
    return sum(1 for row in rows if topic_of(row.kind, row.data) is not None)


def alert_note(alert: AlertDraft, at: str) -> dict[str, Any]:
    """What the /alerts page is told of a stored alert (it reloads to see the row itself)."""
    return {"kind": alert.kind, "severity": alert.severity, "agent_id": alert.agent_id,
            "detail": alert.detail[:300], "at": at}


def row_event(row: EventRow) -> dict[str, Any]:
    """A stored row (floor_agent.store.sql.INSERT_EVENT order) as the feed's JSON object."""
    return {"agent_id": row.agent_id, "seq": row.seq, "boot_id": row.boot_id, "ts": row.ts,
            "kind": row.kind, "severity": row.severity, "subject": row.subject,
            "data": orjson.loads(row.data), "hash": bytes(row.hash).hex(),
            "ingested_at": row.received_at}


class Subscriber:
    def __init__(self, live: LiveFilter, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.filter = live
        self.loop = loop
        self.queue: asyncio.Queue[Message] = asyncio.Queue(size)
        self.dropped = 0

    def offer(self, messages: list[Message]) -> None:
        """In the loop: queue what fits, count what does not."""
        for message in messages:
            try:
                self.queue.put_nowait(message)
            except asyncio.QueueFull:
                self.dropped += 1

    def send(self, messages: list[Message]) -> bool:
        """From any thread; False when the subscriber's loop has closed (browser gone)."""
        try:
            self.loop.call_soon_threadsafe(self.offer, messages)
        except RuntimeError:
            return False
        return True


class Broadcaster:
    """Fan-out of committed events to the connected browsers; thread-safe."""

    def __init__(self, queue_size: int = QUEUE_SIZE) -> None:
        self.queue_size = queue_size
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def subscribe(self, live: LiveFilter) -> Subscriber:
        sub = Subscriber(live, asyncio.get_running_loop(), self.queue_size)
        with self._lock:
            self._subscribers = [*self._subscribers, sub]
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            self._subscribers = [s for s in self._subscribers if s is not sub]

    def publish(self, agent_id: str, rows: list[EventRow], received_at: str) -> None:
        """Called by Collector.ingest after commit, from an ingest thread."""
        subscribers = self._subscribers
        if not subscribers or not rows:
            return
        feeds = [s for s in subscribers if s.filter.channel == "events"]
        events = [row_event(row) for row in rows] if feeds else []
        for sub in feeds:
            wanted = [("audit", e) for e in events if matches(sub.filter, e)]
            if wanted and not sub.send(wanted):
                self.unsubscribe(sub)
        overviews = [s for s in subscribers if s.filter.channel == "overview"]
        changed = state_changes(rows) if overviews else 0
        if changed:
            self._send(overviews, [("changed", {"states": changed, "alerts": 0})])

    def publish_alerts(self, alerts: list[AlertDraft], at: str) -> None:
        """Called by the Collector once alerts are stored (ingest, enrollment, stale checks)."""
        subscribers = self._subscribers
        if not subscribers or not alerts:
            return
        self._send([s for s in subscribers if s.filter.channel == "overview"],
                   [("changed", {"states": 0, "alerts": len(alerts)})])
        self._send([s for s in subscribers if s.filter.channel == "alerts"],
                   [("alert", alert_note(a, at)) for a in alerts])

    def _send(self, subscribers: list[Subscriber], messages: list[Message]) -> None:
        for sub in subscribers:
            if not sub.send(messages):
                self.unsubscribe(sub)


async def sse(broadcaster: Broadcaster, live: LiveFilter,
              keepalive: float = KEEPALIVE_SECONDS,
              allowed: Callable[[], bool] | None = None,
              recheck: float = RECHECK_SECONDS) -> AsyncIterator[bytes]:
    """The text/event-stream body: one SSE event per message (`audit`, `changed` or
    `alert`, by channel), `lagged` after dropped ones, comments to keep it alive.

    allowed: whether the viewer may still see this feed (auth.stream_guard: the session
    exists, is within its lifetimes, its user enabled and permitted). Asked in a worker
    thread at least every `recheck` seconds, also while nothing is published, and before
    sending whenever the last answer is older than that; the stream ends on the first no.
    """
    sub = broadcaster.subscribe(live)
    loop = asyncio.get_running_loop()
    checked = loop.time()

    async def still_allowed() -> bool:
        nonlocal checked
        if allowed is None or loop.time() - checked < recheck:
            return True
        checked = loop.time()
        try:
            return await run_in_threadpool(allowed)
        except StoreUnavailable:
            # the database away: no session can be ended or changed meanwhile either, so the
            # feed goes on (an ended stream answered 503 is one a browser never reopens)
            return True

    try:
        yield b"retry: 2000\n: connected\n\n"
        reported = 0
        quiet_since = loop.time()
        while True:
            wait = keepalive if allowed is None else min(keepalive, recheck)
            try:
                name, payload = await asyncio.wait_for(sub.queue.get(), wait)
            except TimeoutError:
                if not await still_allowed():
                    return
                if loop.time() - quiet_since >= keepalive:
                    quiet_since = loop.time()
                    yield b": keep-alive\n\n"
                continue
            if not await still_allowed():
                return
            quiet_since = loop.time()
            if sub.dropped != reported:
                yield b"event: lagged\ndata: " + orjson.dumps(
                    {"dropped": sub.dropped - reported}) + b"\n\n"
                reported = sub.dropped
            yield b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
    finally:
        broadcaster.unsubscribe(sub)
