"""The overview (`/`): the screen on the wall."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from floor_agent.collector.web import overview
from floor_agent.collector.web.auth import User, require
from floor_agent.collector.web.context import dashboard_of
from floor_agent.collector.web.render import page

router = APIRouter()


@router.get("/")
def overview_page(request: Request, user: Annotated[User, Depends(require("read"))],
                  wall: str | None = None) -> Response:
    dash = dashboard_of(request)
    store = dash.store
    view = overview.build(store.list_agents(), store.latest_states(),
                          store.list_alerts(open_only=True, limit=100_000), dash.clock(),
                          dash.stale_seconds)
    return page(request, "overview.html", user, view=view, wall=wall in ("1", "true", "yes"))
