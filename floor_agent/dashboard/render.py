"""Rendering a page: the template, the user's nav, no caching of data."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from floor_agent.dashboard.auth import User
from floor_agent.dashboard.context import dashboard_of

NO_STORE = {"Cache-Control": "no-store"}


def page(request: Request, template: str, user: User | None, status: int = 200,
         **context: Any) -> HTMLResponse:
    dash = dashboard_of(request)
    return dash.templates.TemplateResponse(
        request, template, {"user": user, "path": request.url.path, **context},
        status_code=status, headers=NO_STORE)


def csv_link(request: Request) -> str:
    """The current page with the same filters plus format=csv."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "format"]
    params.append(("format", "csv"))
    from urllib.parse import urlencode

    return request.url.path + "?" + urlencode(params)
