"""Until a collector's start has run, only /healthz is served: everything else is 503.

A collector that starts while its database is away serves at once (systemd is told READY, the
watchdog is fed through /healthz) and runs the rest of its start (schema, its own audit
identity, the site feed, the notifier) once the database answers (database_watch.py). Until
then no route may reach the store: the gate answers them as a database outage is answered,
503 with Retry-After, so agents keep their events spooled and try again later.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from floor_agent.collector.database_health import RETRY_AFTER_SECONDS
from floor_agent.collector.database_watch import DatabaseWatch

OPEN_PATHS = frozenset({"/healthz"})  # answered without the store
BODY = orjson.dumps({"detail": "the collector is waiting for its database; retry later",
                     "problem": "database_unavailable"})


class StartGate:
    """Pure ASGI middleware: 503 for every request but OPEN_PATHS until `watch.started`."""

    def __init__(self, app: Any, watch: DatabaseWatch) -> None:
        self.app = app
        self.watch = watch

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if (self.watch.started or scope["type"] not in ("http", "websocket")
                or scope.get("path") in OPEN_PATHS):
            await self.app(scope, receive, send)
            return
        self.watch.turned_away()
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1013})  # try again later
            return
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(BODY)).encode()),
            (b"retry-after", str(RETRY_AFTER_SECONDS).encode())]})
        await send({"type": "http.response.body", "body": BODY})
