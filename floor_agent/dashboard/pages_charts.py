"""Charts (`/charts`): events and alerts over time per capability, door traffic by hour of the
day, and each workstation's USB lock and isolation over time, as server-drawn SVG.

The store counts (store/chart_sql.py); charts.py shapes the counts and state changes;
svg_charts.py draws. Same role as the pages that list the same data (read).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from floor_agent.dashboard import charts
from floor_agent.dashboard.auth import User, require
from floor_agent.dashboard.context import dashboard_of
from floor_agent.dashboard.render import page
from floor_agent.dashboard.svg_charts import bar_chart, timeline
from floor_agent.protocol.kinds.door import DoorKind

router = APIRouter()
STATE_ROWS = 5000
HALF = 640  # the logical width of the charts drawn side by side (about their size at 1366 px)
DEVICE_ROWS = 2000


@router.get("/charts")
def charts_page(request: Request, user: Annotated[User, Depends(require("read"))],
                hours: str = "24") -> Response:
    dash = dashboard_of(request)
    choices = [str(h) for h in charts.HOURS]
    if hours not in choices:
        return page(request, "error.html", user, 422, title="Bad window",
                    message=f"hours: one of {', '.join(choices)}")
    store = dash.store
    w = charts.window(dash.clock(), int(hours))
    labels = charts.buckets(w)
    shown = [charts.bucket_label(b) for b in labels]
    per_hour = "per ten minutes" if w.bucket_chars == 15 else "per hour"
    events = bar_chart(shown, charts.per_capability(
        store.count_events(w.since, w.until, w.bucket_chars), labels),
        f"events {per_hour} by capability, the last {hours} h", "chart-events",
        empty="no events in this window", width=HALF)
    alerts = bar_chart(shown, charts.per_capability(
        store.count_alerts(w.since, w.until, w.bucket_chars), labels),
        f"alerts raised {per_hour} by capability, the last {hours} h", "chart-alerts",
        empty="no alerts in this window", width=HALF)
    doors = bar_chart([f"{h:02d}" for h in range(24)], charts.door_traffic(
        store.count_events(w.since, w.until, 13, (DoorKind.GRANTED, DoorKind.DENIED))),
        f"door decisions by hour of the day (UTC), the last {hours} h", "chart-doors",
        empty="no door decisions in this window", label_every=1, width=HALF)
    agents = store.list_agents()
    states = store.timeline_events((*charts.USB_STATE_KINDS, *charts.NET_STATE_KINDS),
                                   w.since, w.until, limit=STATE_ROWS)
    devices = store.timeline_events(charts.DEVICE_KINDS, w.since, w.until, limit=DEVICE_ROWS)
    before = store.last_kinds_before((*charts.USB_STATE_KINDS, *charts.NET_STATE_KINDS),
                                     w.since)
    lanes, left_out = charts.workstation_lanes(agents, states, devices, before, w)
    stations = timeline(lanes, charts.ticks(w), f"workstations' USB lock and isolation, the "
                        f"last {hours} h", "chart-workstations", empty="no workstations",
                        legend=("ok", "bad", "unknown", "device"))
    return page(request, "charts.html", user, hours=hours, choices=choices, events=events,
                alerts=alerts, doors=doors, stations=stations, left_out=left_out)
