"""Audit integrity (`/integrity`): per agent the last checkpoint, gaps, forks and the last
re-verification of its whole chain, and the form that re-verifies (collector/verify.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from floor_agent.collector.ingest import CHAIN_BREAKS
from floor_agent.collector.verify import verify_agent
from floor_agent.dashboard.auth import User, check_csrf, require
from floor_agent.dashboard.context import Dashboard, dashboard_of
from floor_agent.dashboard.csv_export import csv_response
from floor_agent.dashboard.pages_events import export_allowed
from floor_agent.dashboard.render import csv_link, page
from floor_agent.dashboard.tables import Cell, Table
from floor_agent.protocol.event import parse_timestamp, utc_timestamp
from floor_agent.protocol.kinds.collector import CollectorKind

router = APIRouter()
COLUMNS = ["agent", "role", "last checkpoint", "checkpoint time", "age", "gaps", "forks",
           "other breaks", "open alerts", "last verification", "verified at", "by"]


def integrity_table(dash: Dashboard) -> Table:
    store = dash.store
    now = dash.clock()
    counts = store.alert_counts()
    open_kinds: dict[str | None, list[str]] = {}
    for alert in store.list_alerts(open_only=True, limit=100_000):
        open_kinds.setdefault(alert["agent_id"], []).append(alert["kind"])
    verifications = store.list_verifications()
    table = Table(COLUMNS, testid="integrity")
    for agent in store.list_agents():
        ident = agent["agent_id"]
        age = ""
        if agent["checkpoint_received_at"]:
            seconds = int((now - parse_timestamp(agent["checkpoint_received_at"])
                           ).total_seconds())
            age = f"{max(0, seconds)} s"
        other = sum(n for (a, kind), n in counts.items()
                    if a == ident and kind in CHAIN_BREAKS and kind not in ("gap", "fork"))
        check: dict[str, Any] | None = verifications.get(ident)
        if check is None:
            result = Cell("never verified here", cls="unknown", testid="verification")
        elif check["ok"]:
            result = Cell("verified", cls="ok", testid="verification")
        else:
            result = Cell("not verified: " + "; ".join(check["problems"])[:300], cls="bad",
                          testid="verification")
        gaps, forks = counts.get((ident, "gap"), 0), counts.get((ident, "fork"), 0)
        table.add([Cell(ident, link=f"/events?agent={ident}"), agent["role"],
                   str(agent["checkpoint_seq"] if agent["checkpoint_seq"] is not None else ""),
                   (agent["checkpoint_ts"] or "")[:19], age,
                   Cell(str(gaps), cls="bad" if gaps else "ok"),
                   Cell(str(forks), cls="bad" if forks else "ok"),
                   Cell(str(other), cls="bad" if other else "ok"),
                   ", ".join(sorted(set(open_kinds.get(ident, [])))), result,
                   (check or {}).get("verified_at", "")[:19], (check or {}).get("by_user", "")],
                  data_testid="integrity-row", data_agent=ident)
    return table


@router.get("/integrity")
def integrity(request: Request, user: Annotated[User, Depends(require("verify"))],
              format: str | None = None) -> Response:  # noqa: A002
    dash = dashboard_of(request)
    table = integrity_table(dash)
    if export_allowed(user, format):
        return csv_response(table, "integrity")
    return page(request, "integrity.html", user, table=table, results=None,
                csv_url=csv_link(request))


@router.post("/integrity/verify")
def verify(request: Request, user: Annotated[User, Depends(require("verify"))],
           csrf_token: Annotated[str, Form(max_length=200)] = "",
           agent: Annotated[str, Form(max_length=64)] = "") -> Response:
    """Re-verify every chain (or one) from the stored events against its signed checkpoint."""
    check_csrf(user, csrf_token)
    dash = dashboard_of(request)
    store = dash.store
    agents = [a["agent_id"] for a in store.list_agents()]
    if agent:
        if agent not in agents:
            return page(request, "integrity.html", user, 404, table=integrity_table(dash),
                        results=None, error=f"agent: {agent!r} is not enrolled",
                        csv_url=csv_link(request))
        agents = [agent]
    results = []
    for ident in agents:
        # agent keys against the trust anchor (set by server.run; absent: not checked)
        checked = verify_agent(store, ident, getattr(request.app.state, "anchor_key", None))
        problems = [f"{p.kind} at {p.seq}: {p.detail}" for p in checked.report.problems]
        store.put_verification(ident, checked.ok, checked.checkpoint_seq, checked.stored_events,
                               problems, user.username, utc_timestamp(dash.clock()))
        results.append((ident, checked.ok, checked.stored_events, problems))
    failed = [r[0] for r in results if not r[1]]
    dash.own_audit.emit(CollectorKind.INTEGRITY_VERIFIED, "audit chains",
                        "warning" if failed else "notice", who=user.username, agents=len(results),
                        failed=failed)
    return page(request, "integrity.html", user, table=integrity_table(dash), results=results,
                csv_url=csv_link(request))
