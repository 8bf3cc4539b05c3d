"""The event feed (`/events`), its live stream, and one event with its chain position."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response, StreamingResponse

from floor_agent.dashboard import event_check, filters
from floor_agent.dashboard.auth import Forbidden, User, require, stream_guard
from floor_agent.dashboard.context import dashboard_of
from floor_agent.dashboard.csv_export import csv_response
from floor_agent.dashboard.live import LiveFilter, sse
from floor_agent.dashboard.paths import AgentId, Seq
from floor_agent.dashboard.render import csv_link, page
from floor_agent.dashboard.tables import Cell, Table, short, time_cell
from floor_agent.store.interface import EventQuery

router = APIRouter()
PAGE_SIZE = 200
CSV_LIMIT = 10_000
# "time" is the agent's own (signed) stamp, "received" the collector's: the list is in
# received order (newest first), as the live feed adds rows, so a wrong agent clock can
# neither pin an event on top nor bury one (issue 15); with since/until, by the agents' time
COLUMNS = ["time", "agent", "seq", "kind", "severity", "subject", "data", "received"]


def live_filter(kind: str | None, severity: str | None, agent: str | None, since: str | None,
                until: str | None) -> LiveFilter:
    """The page's filters, checked (FilterError names the bad one)."""
    return LiveFilter(filters.text("kind", kind, 100), filters.severity("severity", severity),
                      filters.text("agent", agent, 64), filters.timestamp("since", since),
                      filters.timestamp("until", until))


def data_text(data: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in data.items())[:300]


def events_table(events: list[dict[str, Any]]) -> Table:
    table = Table(COLUMNS, element_id="feed", empty="no events match")
    for e in events:
        table.add([time_cell(e["ts"], link=f"/events/{e['agent_id']}/{e['seq']}"),
                   short(e["agent_id"]), short(str(e["seq"])), short(e["kind"]),
                   short(e["severity"], cls=f"sev-{e['severity']}"),
                   e["subject"], Cell(data_text(e["data"]), cls="data"),
                   time_cell(e["received_at"])],
                  data_testid="event-row", data_agent=e["agent_id"], data_seq=str(e["seq"]),
                  data_kind=e["kind"], data_severity=e["severity"])
    return table


def export_allowed(user: User, fmt: str | None) -> bool:
    if fmt != "csv":
        return False
    if not user.may("export"):
        raise Forbidden(f"your role ({user.role}) may not export CSV")
    return True


@router.get("/events")
def events_page(request: Request, user: Annotated[User, Depends(require("read"))],
                kind: str | None = None, severity: str | None = None, agent: str | None = None,
                since: str | None = None, until: str | None = None,
                format: str | None = None) -> Response:  # noqa: A002
    dash = dashboard_of(request)
    form = {"kind": kind or "", "severity": severity or "", "agent": agent or "",
            "since": since or "", "until": until or ""}
    try:
        live = live_filter(kind, severity, agent, since, until)
    except filters.FilterError as exc:
        return page(request, "events.html", user, 422, table=events_table([]), form=form,
                    error=str(exc), csv_url=None)
    csv = export_allowed(user, format)
    query = EventQuery(agent_id=live.agent_id, kind_prefix=live.kind_prefix,
                       severities=filters.at_least(live.min_severity), since=live.since,
                       until=live.until, limit=CSV_LIMIT if csv else PAGE_SIZE,
                       # a time window asked for is the agents' time, walked on its index
                       by_received=not (live.since or live.until))
    table = events_table(dash.store.query_events(query).events)
    if csv:
        return csv_response(table, "events")
    return page(request, "events.html", user, table=table, form=form, error=None,
                csv_url=csv_link(request) if user.may("export") else None)


@router.get("/events/stream")
async def event_stream(request: Request, user: Annotated[User, Depends(require("read"))],
                       kind: str | None = None, severity: str | None = None,
                       agent: str | None = None, since: str | None = None,
                       until: str | None = None) -> Response:
    try:
        live = live_filter(kind, severity, agent, since, until)
    except filters.FilterError as exc:
        raise HTTPException(422, str(exc)) from None
    return StreamingResponse(sse(dashboard_of(request).broadcaster, live,
                                 allowed=stream_guard(request, user, "read")),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/events/{agent_id}/{seq}")
def event_detail(request: Request, user: Annotated[User, Depends(require("read"))],
                 agent_id: AgentId, seq: Seq) -> Response:
    dash = dashboard_of(request)
    found = event_check.check(dash.store, agent_id, seq)
    if found is None:
        return page(request, "error.html", user, 404, title="No such event",
                    message=f"no stored event {agent_id} #{seq}")
    return page(request, "event.html", user, found=found)
