"""Workstations: their state at a glance (with the central policy version each enforces, from
its latest `policy.applied`, beside the version the collector would serve it now), and per
workstation the devices seen, the blocked attempts and the isolation checks."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from floor_agent.dashboard import overview, pages_policy, policy_view
from floor_agent.dashboard.auth import User, require
from floor_agent.dashboard.context import dashboard_of
from floor_agent.dashboard.csv_export import csv_response
from floor_agent.dashboard.pages_events import export_allowed
from floor_agent.dashboard.paths import AgentId
from floor_agent.dashboard.render import csv_link, page
from floor_agent.dashboard.tables import Cell, Table, time_cell
from floor_agent.protocol.kinds.usb import UsbKind
from floor_agent.store.interface import EventQuery

router = APIRouter()
LIMIT = 200


def _cell(cell: overview.Cell, testid: str) -> Cell:
    return Cell(cell.text, cls=cell.state, testid=testid)


@router.get("/workstations")
def workstations(request: Request, user: Annotated[User, Depends(require("read"))],
                 format: str | None = None) -> Response:  # noqa: A002
    dash = dashboard_of(request)
    store = dash.store
    agents = store.list_agents()
    view = overview.build(agents, store.latest_states(),
                          store.list_alerts(open_only=True, limit=100_000), dash.clock(),
                          dash.stale_seconds, store.list_verifications())
    info = {a["agent_id"]: a for a in agents}
    enforcement = pages_policy.enforcement_of(store, pages_policy.default_group(request))
    table = Table(["workstation", "hostname", "enrolled", "events", "USB", "isolation",
                   "heartbeat", "chain", "enforces", "applied", "served", "policy"],
                  testid="workstations")
    for w in view.workstations:
        agent = info[w.agent_id]
        e = enforcement.get(w.agent_id) or policy_view.enforcement(None, None)
        table.add([Cell(w.agent_id, link=f"/workstations/{w.agent_id}"), w.hostname,
                   time_cell(agent["enrolled_at"]), str(agent["events_total"]),
                   _cell(w.usb, "usb"), _cell(w.isolation, "isolation"),
                   _cell(w.heartbeat, "heartbeat"), _cell(w.chain, "chain"),
                   Cell(e.enforced, cls="nowrap", testid="policy-enforced"),
                   time_cell(e.applied_at) if e.applied_at else Cell("-", cls="nowrap"),
                   Cell(e.served, cls="nowrap", testid="policy-served"),
                   Cell(e.state, cls=f"{e.cls} nowrap".strip(), testid="policy-state")],
                  data_testid="workstation-row", data_agent=w.agent_id)
    if export_allowed(user, format):
        return csv_response(table, "workstations")
    return page(request, "list.html", user, title="Workstations", tables=[("", table)],
                fields=None, form={}, csv_url=csv_link(request) if user.may("export") else None)


def _device(e: dict[str, Any]) -> str:
    d = e["data"]
    name = " ".join(str(d.get(k) or "") for k in ("manufacturer", "name")).strip()
    return f"{name} [{d.get('id', '')}]" if d.get("id") else name


@router.get("/workstations/{agent_id}")
def workstation(request: Request, agent_id: AgentId,
                user: Annotated[User, Depends(require("read"))],
                format: str | None = None) -> Response:  # noqa: A002
    dash = dashboard_of(request)
    store = dash.store
    if store.get_agent(agent_id) is None:
        return page(request, "error.html", user, 404, title="No such workstation",
                    message=f"no agent {agent_id!r} is enrolled")
    usb = store.query_events(EventQuery(agent_id=agent_id, kind_prefix="usb.",
                                        limit=LIMIT)).events
    net = store.query_events(EventQuery(agent_id=agent_id, kind_prefix="net.",
                                        limit=LIMIT)).events
    devices = Table(["time", "event", "device", "serial", "port", "rule", "action"],
                    testid="devices")
    blocked = Table(["time", "event", "device", "serial", "port", "reason"], testid="blocked")
    checks = Table(["time", "event", "severity", "summary"], testid="isolation-checks")
    combined = Table(["time", "section", "event", "severity", "summary"])
    for e in usb:
        d = e["data"]
        link = f"/events/{agent_id}/{e['seq']}"
        if "id" in d or "name" in d:
            devices.add([time_cell(e["ts"], link=link), e["kind"], _device(e),
                         str(d.get("serial", "")),
                         str(d.get("port", "")), str(d.get("rule", "")), str(d.get("action", ""))],
                        data_testid="device-row")
            combined.add([e["ts"], "devices", e["kind"], e["severity"], _device(e)])
        if e["kind"] in (UsbKind.BLOCKED, UsbKind.REJECTED):
            blocked.add([time_cell(e["ts"], link=link), e["kind"], _device(e),
                         str(d.get("serial", "")), str(d.get("port", "")),
                         str(d.get("reason", ""))], data_testid="blocked-row")
            combined.add([e["ts"], "blocked", e["kind"], e["severity"], _device(e)])
    for e in net:
        d = e["data"]
        summary = d.get("summary") or ", ".join(
            f"{k}={d[k]}" for k in ("pass", "fail", "unknown", "error") if k in d)
        checks.add([time_cell(e["ts"], link=f"/events/{agent_id}/{e['seq']}"), e["kind"],
                    Cell(e["severity"], cls=f"sev-{e['severity']}"), str(summary)],
                   data_testid="isolation-row")
        combined.add([e["ts"], "isolation", e["kind"], e["severity"], str(summary)])
    if export_allowed(user, format):
        return csv_response(combined, f"workstation-{agent_id}")
    return page(request, "list.html", user, title=f"Workstation {agent_id}",
                tables=[("Devices seen", devices), ("Blocked attempts", blocked),
                        ("Isolation checks", checks)], fields=None, form={},
                intro=f"the newest {LIMIT} USB and network events of this workstation",
                csv_url=csv_link(request) if user.may("export") else None)
