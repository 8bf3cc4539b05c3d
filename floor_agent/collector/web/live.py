"""The live event feed: ingest publishes each committed batch, every browser gets its matches.

Ingest threads call `Broadcaster.publish` after the batch's transaction committed (so a browser
never sees an event the store does not hold). Each subscriber has a bounded queue in the event
loop: a slow browser loses its oldest-unsent events (and is told how many) instead of slowing
ingest, and publishing with nobody watching costs one empty-list check.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from floor_agent.audit.event import SEVERITY_RANK

QUEUE_SIZE = 2000
KEEPALIVE_SECONDS = 15.0


@dataclass(frozen=True, slots=True)
class LiveFilter:
    """The /events filters, as the feed applies them to each new event."""

    kind_prefix: str | None = None
    min_severity: str | None = None
    agent_id: str | None = None
    since: str | None = None
    until: str | None = None


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


def row_event(row: tuple[Any, ...]) -> dict[str, Any]:
    """A stored row (store_sql.INSERT_EVENT order) as the feed's JSON object."""
    return {"agent_id": row[0], "seq": row[1], "boot_id": row[2], "ts": row[3], "kind": row[4],
            "severity": row[5], "subject": row[7], "data": orjson.loads(row[8]),
            "hash": bytes(row[9]).hex(), "ingested_at": row[10]}


class Subscriber:
    def __init__(self, live: LiveFilter, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.filter = live
        self.loop = loop
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(size)
        self.dropped = 0

    def offer(self, events: list[dict[str, Any]]) -> None:
        """In the loop: queue what fits, count what does not."""
        for event in events:
            try:
                self.queue.put_nowait(event)
            except asyncio.QueueFull:
                self.dropped += 1


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

    def publish(self, agent_id: str, rows: list[tuple[Any, ...]], received_at: str) -> None:
        """Called by Collector.ingest after commit, from an ingest thread."""
        subscribers = self._subscribers
        if not subscribers or not rows:
            return
        events = [row_event(row) for row in rows]
        for sub in subscribers:
            wanted = [e for e in events if matches(sub.filter, e)]
            if wanted:
                try:
                    sub.loop.call_soon_threadsafe(sub.offer, wanted)
                except RuntimeError:  # its loop has closed: the browser is gone
                    self.unsubscribe(sub)


async def sse(broadcaster: Broadcaster, live: LiveFilter,
              keepalive: float = KEEPALIVE_SECONDS) -> AsyncIterator[bytes]:
    """The text/event-stream body: `event: audit` per event, comments to keep it alive."""
    sub = broadcaster.subscribe(live)
    try:
        yield b"retry: 2000\n: connected\n\n"
        reported = 0
        while True:
            try:
                event = await asyncio.wait_for(sub.queue.get(), keepalive)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if sub.dropped != reported:
                yield b"event: lagged\ndata: " + orjson.dumps(
                    {"dropped": sub.dropped - reported}) + b"\n\n"
                reported = sub.dropped
            yield b"event: audit\ndata: " + orjson.dumps(event) + b"\n\n"
    finally:
        broadcaster.unsubscribe(sub)
