"""Mount the dashboard on the collector's FastAPI app: routes, static files, errors."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from floor_agent.collector.api import AppExtension
from floor_agent.collector.config import DashboardSettings
from floor_agent.collector.core import Collector
from floor_agent.common.clock import utc_now
from floor_agent.dashboard import (
    pages_admin,
    pages_alerts,
    pages_auth,
    pages_camera_tiles,
    pages_cameras,
    pages_charts,
    pages_doors,
    pages_events,
    pages_footage,
    pages_integrity,
    pages_overview,
    pages_policy,
    pages_workstations,
)
from floor_agent.dashboard.auth import (
    PASSWORD_PATH,
    Forbidden,
    LoginRequired,
    MustChangePassword,
    login_url,
    session_user,
)
from floor_agent.dashboard.context import DASHBOARD_DIR, Dashboard
from floor_agent.dashboard.live import Broadcaster
from floor_agent.dashboard.render import page


def extension(settings: DashboardSettings, stale_seconds: int = 180,
              clock: Callable[[], datetime] = utc_now) -> AppExtension:
    """The dashboard as an extension of the collector's app (api.create_app): its live feeds
    listen to what the collector stores, its pages read the collector's store.

    stale_seconds: a heartbeat older than this is shown stale (the collector's
    stale_checkpoint_seconds). clock: the dashboard's time (session lifetimes, lockouts,
    heartbeat ages)."""

    def install_on(app: FastAPI, collector: Collector) -> None:
        broadcaster = Broadcaster()
        collector.listeners.append(broadcaster.publish)
        collector.alert_listeners.append(broadcaster.publish_alerts)
        # the other collectors' batches are read back only while a browser watches
        collector.watching.append(lambda: broadcaster.subscribers > 0)
        install(app, Dashboard(collector.store, settings, app.state.self_audit, broadcaster,
                               stale_seconds, clock))

    return install_on


def install(app: FastAPI, dashboard: Dashboard) -> None:
    app.state.dashboard = dashboard
    app.mount("/static", StaticFiles(directory=str(DASHBOARD_DIR / "static")), name="static")
    for module in (pages_auth, pages_overview, pages_events, pages_alerts, pages_workstations,
                   pages_doors, pages_camera_tiles, pages_cameras, pages_charts,
                   pages_integrity, pages_admin, pages_footage, pages_policy):
        app.include_router(module.router, include_in_schema=False)

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
