"""Mount the dashboard on the collector's FastAPI app: routes, static files, headers, errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from floor_agent.collector.edge import HSTS
from floor_agent.collector.web import (
    pages_admin,
    pages_alerts,
    pages_auth,
    pages_cameras,
    pages_doors,
    pages_events,
    pages_integrity,
    pages_overview,
    pages_workstations,
    snapshots_api,
)
from floor_agent.collector.web.auth import (
    PASSWORD_PATH,
    Forbidden,
    LoginRequired,
    MustChangePassword,
    login_url,
    session_user,
)
from floor_agent.collector.web.context import DASHBOARD_DIR, Dashboard
from floor_agent.collector.web.render import page

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


def install(app: FastAPI, dashboard: Dashboard) -> None:
    app.state.dashboard = dashboard
    app.mount("/static", StaticFiles(directory=str(DASHBOARD_DIR / "static")), name="static")
    for module in (pages_auth, pages_overview, pages_events, pages_alerts, pages_workstations,
                   pages_doors, pages_cameras, pages_integrity, pages_admin):
        app.include_router(module.router, include_in_schema=False)
    app.include_router(snapshots_api.router)

    app.add_middleware(SecurityHeaders)

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        if exc.api:
            return PlainTextResponse("not logged in", 401, headers={"Cache-Control": "no-store"})
        return RedirectResponse(login_url(exc.next_path), 303)

    @app.exception_handler(MustChangePassword)
    async def must_change(request: Request, exc: MustChangePassword) -> Response:
        return RedirectResponse(PASSWORD_PATH, 303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        from fastapi.concurrency import run_in_threadpool

        user = await run_in_threadpool(session_user, request)
        return page(request, "error.html", user, 403, title="Forbidden", message=str(exc))
