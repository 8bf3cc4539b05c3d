"""The security headers on every response of the collector's app, API and dashboard alike."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from floor_agent.collector.edge import HSTS

CSP = ("default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


# On every response, API and pages alike, unless the route set its own.
SECURITY_HEADERS = ((b"content-security-policy", CSP.encode()), (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                    (b"strict-transport-security", HSTS.encode()))


class SecurityHeaders:
    """Pure ASGI middleware adding SECURITY_HEADERS (not starlette's BaseHTTPMiddleware, which
    runs every request through an extra task and stream: measurable CPU on the one event loop
    the collector has, under a flood of requests most of all)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
