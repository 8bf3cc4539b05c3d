"""Cameras: status, the latest snapshot (viewing it is logged), recording gaps, packets the
recorder could not keep, motion, and the footage view/export log."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from floor_agent.collector import self_audit
from floor_agent.dashboard import camera_tiles, overview
from floor_agent.dashboard.auth import User, require
from floor_agent.dashboard.camera_gaps import recording_gaps
from floor_agent.dashboard.context import dashboard_of
from floor_agent.dashboard.csv_export import csv_response
from floor_agent.dashboard.pages_events import export_allowed
from floor_agent.dashboard.paths import AgentId, CameraId
from floor_agent.dashboard.render import csv_link, page
from floor_agent.dashboard.tables import NOWRAP, Cell, Table, short, time_cell
from floor_agent.dashboard.timefmt import short_time
from floor_agent.protocol.kinds.cctv import CctvKind
from floor_agent.protocol.kinds.dashboard import DashboardKind
from floor_agent.store.interface import EventQuery

router = APIRouter()
SCAN = 2000
MOTION_KINDS = (CctvKind.MOTION_START, CctvKind.MOTION_END, CctvKind.TAMPER,
                CctvKind.TAMPER_CLEARED)
FOOTAGE_KINDS = (CctvKind.VIEW, CctvKind.EXPORT)


def _cameras(request: Request) -> list[overview.Camera]:
    dash = dashboard_of(request)
    store = dash.store
    return overview.build(store.list_agents(), store.latest_states(),
                          store.list_alerts(open_only=True, limit=100_000), dash.clock(),
                          dash.stale_seconds).cameras


@router.get("/cameras")
def cameras(request: Request, user: Annotated[User, Depends(require("read"))],
            format: str | None = None) -> Response:  # noqa: A002
    dash = dashboard_of(request)
    shots = {(s["agent_id"], s["camera_id"]): s for s in dash.store.list_snapshots()}
    table = Table(["camera", "camera box", "state", "detail", "lag", "snapshot"],
                  testid="cameras")
    for c in _cameras(request):
        shot = shots.get((c.agent_id, c.camera))
        # a camera's name comes from its events: a long one breaks instead of widening
        table.add([Cell(c.camera, link=f"/cameras/{c.agent_id}/{c.camera}", cls="data"),
                   c.agent_id,
                   Cell(c.state, cls=c.cls, testid="camera-state"), c.detail,
                   Cell(c.lag, cls=c.lag_cls, testid="camera-lag"),
                   time_cell(shot["received_at"]) if shot else ""],
                  data_testid="camera-row", data_camera=c.camera, data_agent=c.agent_id)
    if export_allowed(user, format):
        return csv_response(table, "cameras")
    return page(request, "cameras.html", user, table=table, tiles=camera_tiles.tiles(dash),
                csv_url=csv_link(request) if user.may("export") else None)


def _of_camera(events: list[dict[str, Any]], camera: str) -> list[dict[str, Any]]:
    return [e for e in events if e["data"].get("camera_id") == camera]


def _instant(value: Any) -> Cell:
    """A camera box's ISO time as MM-DD HH:MM:SS.mmm UTC (lost packets are a fraction of a
    second apart), the stamp as sent in its title; anything else as it came."""
    text = str(value or "")
    try:
        at = datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        return short(text)
    return Cell(f"{at:%m-%d %H:%M:%S}.{at.microsecond // 1000:03d}", cls=NOWRAP, title=text)


def _describe(e: dict[str, Any]) -> str:
    d = {k: v for k, v in e["data"].items() if k != "camera_id"}
    return " ".join(f"{k}={v}" for k, v in d.items())[:200]


@router.get("/cameras/{agent_id}/{camera}")
def camera_page(request: Request, agent_id: AgentId, camera: CameraId,
                user: Annotated[User, Depends(require("read"))],
                format: str | None = None) -> Response:  # noqa: A002
    dash = dashboard_of(request)
    store = dash.store
    state = next((c for c in _cameras(request) if c.agent_id == agent_id and c.camera == camera),
                 None)
    events = _of_camera(store.query_events(EventQuery(agent_id=agent_id, kind_prefix="cctv.",
                                                      limit=SCAN)).events, camera)
    if state is None and not events and store.get_snapshot(agent_id, camera) is None:
        return page(request, "error.html", user, 404, title="No such camera",
                    message=f"nothing known about camera {camera!r} of {agent_id!r}")
    gaps = Table(["time", "event", "lasted", "detail"], testid="recording-gaps",
                 empty="no recording gap")
    lost = Table(["time", "segment", "packets lost", "kept damaged", "from", "until", "why"],
                 testid="packets-lost", empty="no packet lost")
    lost_total = damaged_total = 0
    motion = Table(["time", "event", "detail"], testid="motion-events")
    footage = Table(["time", "event", "who", "why", "detail"], testid="footage-log")
    combined = Table(["time", "section", "event", "who", "detail"])
    for e, lasted in recording_gaps(events):
        link = f"/events/{agent_id}/{e['seq']}"
        gaps.add([time_cell(e["ts"], link=link), short(e["kind"]), short(lasted), _describe(e)],
                 data_testid="gap-row")
        combined.add([e["ts"], "gaps", e["kind"], "", " ".join(filter(None, (lasted,
                                                                            _describe(e))))])
    for e in events:
        link = f"/events/{agent_id}/{e['seq']}"
        if e["kind"] == CctvKind.PACKETS_LOST:
            d = e["data"]
            count = d.get("count") if isinstance(d.get("count"), int) else 0
            damaged = d.get("damaged") if isinstance(d.get("damaged"), int) else 0
            lost_total += count
            damaged_total += damaged
            lost.add([time_cell(e["ts"], link=link), str(d.get("seq", "")), str(count),
                      str(damaged),
                      _instant(d.get("since")), _instant(d.get("until")),
                      Cell(str(d.get("reasons", "")), cls="data")], data_testid="lost-row")
            combined.add([e["ts"], "lost", e["kind"], "", _describe(e)])
        elif e["kind"] in MOTION_KINDS:
            motion.add([time_cell(e["ts"], link=link), e["kind"], _describe(e)],
                       data_testid="motion-row")
            combined.add([e["ts"], "motion", e["kind"], "", _describe(e)])
        elif e["kind"] in FOOTAGE_KINDS:
            who, why = str(e["data"].get("who", "")), str(e["data"].get("why", ""))
            footage.add([time_cell(e["ts"], link=link), e["kind"], who, why, _describe(e)],
                        data_testid="footage-row")
            combined.add([e["ts"], "footage", e["kind"], who, _describe(e)])
    if user.may("footage_log"):
        own = self_audit_id(request)
        if own:
            views = store.query_events(EventQuery(agent_id=own, kind=DashboardKind.FOOTAGE_VIEWED,
                                                  limit=SCAN)).events
            for e in views:
                d = e["data"]
                if d.get("camera_id") == camera and d.get("camera_agent") == agent_id:
                    why, what = _own_view(d)
                    footage.add([time_cell(e["ts"], link=f"/events/{own}/{e['seq']}"), e["kind"],
                                 str(d.get("who", "")), why, what], data_testid="footage-row")
                    combined.add([e["ts"], "footage", e["kind"], str(d.get("who", "")), why])
        footage.rows.sort(key=lambda r: r.cells[0].title or r.cells[0].text, reverse=True)
    else:
        combined.rows = [r for r in combined.rows if r.cells[1].text != "footage"]
    if export_allowed(user, format):
        combined.rows.sort(key=lambda r: r.cells[0].text, reverse=True)
        return csv_response(combined, f"camera-{camera}")
    shot = store.get_snapshot(agent_id, camera)
    return page(request, "camera.html", user, agent_id=agent_id, camera=camera, state=state,
                timeline=camera_tiles.camera_timeline(dash, agent_id, camera, 1000),
                snapshot_at=shot["received_at"] if shot else None, gaps=gaps, motion=motion,
                lost=lost, lost_total=lost_total, damaged_total=damaged_total,
                footage=footage if user.may("footage_log") else None,
                csv_url=csv_link(request) if user.may("export") else None)


def _own_view(d: dict[str, Any]) -> tuple[str, str]:
    """(why, what) of a footage.viewed on the collector's trail: a snapshot or an alert's clip
    (pages_footage.py)."""
    if d.get("what") == "clip":
        return (str(d.get("why", "")), f"clip of alert #{d.get('alert_id')}, segments "
                f"{d.get('segments')} from {str(d.get('start', ''))[:19].replace('T', ' ')}")
    return "dashboard snapshot", f"snapshot of {short_time(d.get('snapshot_at', ''))}"


def self_audit_id(request: Request) -> str | None:
    """The collector's own agent id (its role is `collector`), where footage views go."""
    for agent in dashboard_of(request).store.list_agents():
        if agent["role"] == self_audit.ROLE:
            return str(agent["agent_id"])
    return None


@router.get("/cameras/{agent_id}/{camera}/snapshot.jpg")
def snapshot(request: Request, agent_id: AgentId, camera: CameraId,
             user: Annotated[User, Depends(require("read"))]) -> Response:
    dash = dashboard_of(request)
    shot = dash.store.get_snapshot(agent_id, camera)
    if shot is None:
        return Response("no snapshot", 404, media_type="text/plain")
    # footage leaves the camera box only as this picture: who looked is on the record (a
    # refreshing tile: the first look, then once per view_log.REPEAT_SECONDS)
    if dash.views.record(user.username, agent_id, camera, time.monotonic()):
        dash.own_audit.emit(DashboardKind.FOOTAGE_VIEWED, f"camera {camera}", "notice",
                            who=user.username, role=user.role, camera_agent=agent_id,
                            camera_id=camera,
                            what="snapshot", snapshot_at=shot["received_at"])
    # never cached (footage stays off the viewer's disk); the tiles' URL adds ?at=<received
    # at> (ignored here) so a redraw keeps an unchanged picture instead of fetching it
    return Response(shot["jpeg"], media_type="image/jpeg",
                    headers={"Cache-Control": "no-store"})
