"""Alerts (`/alerts`): open and acknowledged, and acknowledging with a comment.

Listed as the store orders them (store/sql.py ALERT_ORDER): open first, the most severe first,
genuine before per-address noise, then newest: a genuine critical alert heads the page
however many junk batches were counted.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from floor_agent.collector.alerts import acknowledge
from floor_agent.dashboard import filters
from floor_agent.dashboard.auth import User, check_csrf, require
from floor_agent.dashboard.context import dashboard_of
from floor_agent.dashboard.csv_export import csv_response
from floor_agent.dashboard.pages_events import export_allowed
from floor_agent.dashboard.pages_footage import footage_links
from floor_agent.dashboard.pages_overview import stream
from floor_agent.dashboard.paths import RowId
from floor_agent.dashboard.render import csv_link, page
from floor_agent.dashboard.tables import Table
from floor_agent.protocol.event import utc_timestamp

router = APIRouter()
LIMIT = 1000
COLUMNS = ["id", "created", "last seen", "count", "kind", "severity", "agent", "detail", "state",
           "acknowledged by", "acknowledged at", "comment", "source"]
STATES = ("open", "acknowledged", "all")


def alerts_table(alerts: list[dict[str, Any]]) -> Table:
    table = Table(COLUMNS, testid="alerts")
    for a in alerts:
        table.add([str(a["id"]), a["created_at"], a["last_seen_at"], str(a["count"]), a["kind"],
                   a["severity"], a["agent_id"] or "", a["detail"],
                   "acknowledged" if a["acked_at"] else "open", a["acked_by"] or "",
                   a["acked_at"] or "", a["ack_comment"] or "", a.get("source") or ""])
    return table


def selected(alerts: list[dict[str, Any]], state: str,
             severity: str | None) -> list[dict[str, Any]]:
    """The alerts a filter keeps (pure); severity is a minimum."""
    keep = set(filters.at_least(severity)) if severity else None
    return [a for a in alerts
            if (state == "all" or (state == "open") == (a["acked_at"] is None))
            and (keep is None or a["severity"] in keep)]


@router.get("/alerts")
def alerts_page(request: Request, user: Annotated[User, Depends(require("read"))],
                state: str = "all", severity: str | None = None, agent: str | None = None,
                kind: str | None = None, format: str | None = None,  # noqa: A002
                error: str | None = None) -> Response:
    dash = dashboard_of(request)
    form = {"state": state, "severity": severity or "", "agent": agent or "", "kind": kind or ""}
    try:
        if state not in STATES:
            raise filters.FilterError(f"state: expected one of {', '.join(STATES)}")
        minimum = filters.severity("severity", severity)
        agent_id = filters.text("agent", agent, 64)
        kind_name = filters.text("kind", kind, 64)
    except filters.FilterError as exc:
        return page(request, "alerts.html", user, 422, alerts=[], form=form, error=str(exc),
                    csv_url=None)
    found = dash.store.list_alerts(open_only=state == "open", agent_id=agent_id,
                                   kind=kind_name, limit=LIMIT)
    found = selected(found, state, minimum)
    if export_allowed(user, format):
        return csv_response(alerts_table(found), "alerts")
    return page(request, "alerts.html", user, alerts=found, form=form,
                error=error if error in ACK_ERRORS else None,
                footage=footage_links(request, user, found),
                csv_url=csv_link(request) if user.may("export") else None)


@router.get("/alerts/stream")
async def alerts_stream(request: Request,
                        user: Annotated[User, Depends(require("read"))]) -> Response:
    """`alert` notes as alerts are stored: the open /alerts page offers to reload."""
    return stream(request, user, "alerts")


ACK_ERRORS = ("a comment is required to acknowledge",
              "that alert is not open any more (acknowledged meanwhile?)")


@router.post("/alerts/{alert_id}/ack")
def ack(request: Request, alert_id: RowId, user: Annotated[User, Depends(require("ack"))],
        comment: Annotated[str, Form(max_length=2000)] = "",
        csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
    check_csrf(user, csrf_token)
    dash = dashboard_of(request)
    text = comment.strip().replace("\x00", "")
    if not text:
        return RedirectResponse(f"/alerts?error={ACK_ERRORS[0]}", 303)
    if not acknowledge(dash.store, dash.own_audit, alert_id, user.username, text,
                       utc_timestamp(dash.clock()), via="dashboard"):
        return RedirectResponse(f"/alerts?error={ACK_ERRORS[1]}", 303)
    return RedirectResponse("/alerts", 303)
