"""The overview (`/`): the screen on the wall, its redrawable part and its live stream.

An open overview does not reload itself: its script listens to `/overview/stream` (a `changed`
note only when a state topic or an alert moved, live.py) and refetches `/overview/state`,
the tables alone, at most once every few seconds (dashboard.js).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from floor_agent.dashboard import overview
from floor_agent.dashboard.auth import User, require, stream_guard
from floor_agent.dashboard.context import dashboard_of
from floor_agent.dashboard.live import LiveFilter, sse
from floor_agent.dashboard.render import page

router = APIRouter()


def _view(request: Request) -> overview.Overview:
    dash = dashboard_of(request)
    store = dash.store
    return overview.build(store.list_agents(), store.latest_states(),
                          store.list_alerts(open_only=True, limit=100_000), dash.clock(),
                          dash.stale_seconds, store.list_verifications())


def _wall(wall: str | None) -> bool:
    return wall in ("1", "true", "yes")


@router.get("/")
def overview_page(request: Request, user: Annotated[User, Depends(require("read"))],
                  wall: str | None = None) -> Response:
    return page(request, "overview.html", user, view=_view(request), wall=_wall(wall))


@router.get("/overview/state")
def overview_state(request: Request, user: Annotated[User, Depends(require("read"))],
                   wall: str | None = None) -> Response:
    """The overview's tables alone (HTML), for the open page to swap in."""
    return page(request, "overview_state.html", user, view=_view(request), wall=_wall(wall))


def stream(request: Request, user: User, channel: str) -> Response:
    """The live feed of a channel; it ends once the viewer's session no longer allows it."""
    return StreamingResponse(sse(dashboard_of(request).broadcaster, LiveFilter(channel=channel),
                                 allowed=stream_guard(request, user, "read")),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/overview/stream")
async def overview_stream(request: Request,
                          user: Annotated[User, Depends(require("read"))]) -> Response:
    return stream(request, user, "overview")
