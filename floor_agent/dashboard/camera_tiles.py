"""The camera tiles (on /cameras, redrawn live from /cameras/tiles): each camera's latest
picture, its state and a timeline of the last 24 hours (recording, motion, tamper, gaps).

The recording lane is counted by the store (segments per ten minutes, store/chart_sql.py);
motion, tamper and gaps are state changes read as rows (bounded), paired into spans by
charts.camera_lanes. A camera's events are found by their subject (`camera <id>`, as the
recorder writes it) and, for the rows, checked against their `camera_id`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from floor_agent.dashboard import charts, overview
from floor_agent.dashboard.context import Dashboard
from floor_agent.dashboard.svg_charts import timeline
from floor_agent.protocol.kinds.cctv import CctvKind

HOURS = 24
SEGMENT_CHARS = 15  # ten-minute buckets
SEGMENT_STEP = timedelta(minutes=10)
EVENTS_PER_CAMERA = 2000
LEGEND = ("recording", "motion", "tamper", "gap")


@dataclass(frozen=True, slots=True)
class Tile:
    agent_id: str
    camera: str
    state: str
    cls: str
    detail: str
    lag: str  # how far behind real time, "" when never reported (overview.lag_text)
    lag_cls: str
    snapshot_at: str | None
    timeline: str  # SVG text, escaped by svg_charts


def camera_timeline(dash: Dashboard, agent_id: str, camera: str, width: int = 600) -> str:
    w = charts.window(dash.clock(), HOURS)
    subject = f"camera {camera}"
    store = dash.store
    segments = store.count_events(w.since, w.until, SEGMENT_CHARS, (CctvKind.SEGMENT,),
                                  agent_id, subject)
    events = store.timeline_events(charts.CAMERA_KINDS, w.since, w.until, agent_id, subject,
                                   EVENTS_PER_CAMERA)
    before = store.last_kinds_before(charts.CAMERA_KINDS, w.since, agent_id)
    lanes = charts.camera_lanes(camera, agent_id, events, segments, before, w, SEGMENT_STEP)
    return timeline(lanes, charts.ticks(w, 4), f"camera {camera}: the last {HOURS} hours",
                    "camera-timeline", legend=LEGEND, width=width, label_width=80,
                    label_chars=10)


def tiles(dash: Dashboard) -> list[Tile]:
    store = dash.store
    cameras = overview.build(store.list_agents(), store.latest_states(),
                             store.list_alerts(open_only=True, limit=100_000), dash.clock(),
                             dash.stale_seconds).cameras
    shots = {(s["agent_id"], s["camera_id"]): s["received_at"] for s in store.list_snapshots()}
    known = {(c.agent_id, c.camera) for c in cameras}
    # a camera that sent a picture but no event yet still gets its tile
    cameras += [overview.Camera(a, c, "unknown", "unknown", "no status yet")
                for a, c in sorted(shots) if (a, c) not in known]
    return [Tile(c.agent_id, c.camera, c.state, c.cls, c.detail, c.lag, c.lag_cls,
                 shots.get((c.agent_id, c.camera)),
                 camera_timeline(dash, c.agent_id, c.camera)) for c in cameras]
