"""The overview's state of each workstation, door and camera, from their newest events (pure).

Inputs are plain data: the agents (store.list_agents), the newest event per (agent, topic)
(store.latest_states, protocol/topics.py), the open alerts and the time. Every cell is `ok`, `bad`
or `unknown`: unknown whenever the evidence is missing, never a guess towards ok.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from floor_agent.collector.camera_lag import CameraLag, camera_lags
from floor_agent.collector.ingest import CHAIN_BREAKS
from floor_agent.protocol.event import SEVERITIES, parse_timestamp
from floor_agent.protocol.kinds.cctv import CctvKind
from floor_agent.protocol.kinds.door import DOOR_ACCESS, DOOR_STATE, DoorKind
from floor_agent.protocol.kinds.net import NET_STATE, NetKind
from floor_agent.protocol.kinds.usb import USB_LOCK, UsbKind

RECORDING_FRESH = timedelta(minutes=5)  # a camera with no segment for longer is not recording


@dataclass(frozen=True, slots=True)
class Cell:
    state: str  # ok | bad | unknown
    text: str


@dataclass(frozen=True, slots=True)
class Workstation:
    agent_id: str
    hostname: str
    usb: Cell
    isolation: Cell
    heartbeat: Cell
    chain: Cell


@dataclass(frozen=True, slots=True)
class Door:
    door: str
    agent_id: str
    state: str
    cls: str
    since: str  # the full stamp of the state's event ("" when none)
    last_access: str  # "granted P-0001"
    last_ts: str = ""  # the full stamp of that access


@dataclass(frozen=True, slots=True)
class Camera:
    agent_id: str
    camera: str
    state: str  # recording | motion | tamper | offline | unknown
    cls: str
    detail: str
    # how far behind real time its last written packet was ("" when never reported), and
    # ok | bad (lagging, or its analysis shed) | unknown
    lag: str = ""
    lag_cls: str = "unknown"


@dataclass(slots=True)
class Overview:
    alerts_by_severity: dict[str, int] = field(default_factory=dict)
    workstations: list[Workstation] = field(default_factory=list)
    doors: list[Door] = field(default_factory=list)
    cameras: list[Camera] = field(default_factory=list)


def alerts_by_severity(open_alerts: list[dict[str, Any]]) -> dict[str, int]:
    counts = Counter(a["severity"] for a in open_alerts)
    return {s: counts.get(s, 0) for s in reversed(SEVERITIES)}


def usb_cell(event: dict[str, Any] | None) -> Cell:
    if event is None:
        return Cell("unknown", "no lock-down reported")
    if event["kind"] == UsbKind.LOCKED_DOWN:
        return Cell("ok", "locked")
    return Cell("bad", event["kind"].removeprefix("usb.").replace("_", " "))


def isolation_cell(event: dict[str, Any] | None) -> Cell:
    if event is None:
        return Cell("unknown", "not verified")
    kind, data = event["kind"], event["data"]
    if kind == NetKind.VERIFIED:
        critical = [c.get("id") for c in data.get("checks", [])
                    if c.get("verdict") == "fail" and c.get("severity") == "critical"]
        if critical:
            return Cell("bad", "breach: " + ", ".join(map(str, critical)))
        if data.get("unknown"):
            return Cell("unknown", f"{data['unknown']} checks unverifiable")
        return Cell("ok", "isolated")
    if kind == NetKind.RECOVERED:
        still = data.get("still_failing") or []
        return Cell("bad", "breach: " + ", ".join(still)) if still else Cell("ok", "isolated")
    if kind == NetKind.ENFORCED:
        return Cell("unknown", "enforced, not yet verified")
    if kind == NetKind.BREACH:
        return Cell("bad", "breach: " + ", ".join(map(str, data.get("new", []))))
    return Cell("bad", kind.removeprefix("net.").replace("_", " "))


def heartbeat_cell(agent: dict[str, Any], now: datetime, stale_seconds: int) -> Cell:
    last = agent.get("checkpoint_received_at")
    if not last:
        return Cell("unknown", "never")
    age = now - parse_timestamp(last)
    seconds = max(0, int(age.total_seconds()))
    if age > timedelta(seconds=stale_seconds):
        return Cell("bad", f"{seconds} s ago")
    return Cell("ok", f"{seconds} s ago")


def chain_cell(agent: dict[str, Any], open_kinds: set[str],
               verification: dict[str, Any] | None = None) -> Cell:
    breaks = sorted(open_kinds & set(CHAIN_BREAKS))
    if verification is not None and not verification["ok"]:
        breaks.append(f"verification failed {str(verification['verified_at'])[:19]}")
    if breaks:
        return Cell("bad", ", ".join(breaks))
    if agent.get("checkpoint_seq") is None:
        return Cell("unknown", "no checkpoint yet")
    if "stale_checkpoint" in open_kinds:
        return Cell("bad", "stale checkpoint")
    return Cell("ok", "intact")


DOOR_STATES = {
    DoorKind.RELOCKED: ("locked", "ok"), DoorKind.CLOSED: ("closed", "ok"),
    DoorKind.HELD_OPEN_CLEARED: ("closed", "ok"), DoorKind.UNLOCKED: ("unlocked", "ok"),
    DoorKind.OPENED: ("open", "ok"), DoorKind.HELD_OPEN: ("held open", "bad"),
    DoorKind.FORCED: ("forced", "bad"), DoorKind.ERROR: ("error", "bad"),
}


def door_rows(latest: list[dict[str, Any]]) -> list[Door]:
    access = {e["topic"].removeprefix(DOOR_ACCESS.name): e for e in latest
              if e["topic"].startswith(DOOR_ACCESS.name)}
    doors = {e["topic"].removeprefix(DOOR_STATE.name): e for e in latest
             if e["topic"].startswith(DOOR_STATE.name)}
    out = []
    for name in sorted(set(doors) | set(access)):
        event = doors.get(name)
        last = access.get(name)
        state, cls = DOOR_STATES.get(event["kind"], ("unknown", "unknown")) if event else (
            "unknown", "unknown")
        last_text = ""
        if last is not None:
            who = last["data"].get("person_id") or last["data"].get("uid") or "?"
            last_text = f"{last['kind'].removeprefix('door.')} {who}"
        agent = (event or last or {}).get("agent_id", "")
        out.append(Door(name, agent, state, cls, event["ts"] if event else "", last_text,
                        last["ts"] if last is not None else ""))
    return out


def camera_state(topics: dict[str, dict[str, Any]], now: datetime,
                 agent_fresh: bool) -> tuple[str, str]:
    """(state, detail) of one camera from its conn/tamper/motion/segment topics."""
    conn, tamper = topics.get("conn"), topics.get("tamper")
    motion, segment = topics.get("motion"), topics.get("segment")
    if conn is not None and conn["kind"] in (CctvKind.CAMERA_OFFLINE, CctvKind.STREAM_LOST):
        return "offline", conn["data"].get("reason", "") or conn["kind"]
    if not agent_fresh and (conn or segment):
        return "offline", "no heartbeat from the camera box"
    if tamper is not None and tamper["kind"] == CctvKind.TAMPER:
        return "tamper", str(tamper["data"].get("tamper", ""))
    if motion is not None and motion["kind"] == CctvKind.MOTION_START:
        return "motion", f"since {motion['ts'][11:19]}"
    if segment is not None and now - parse_timestamp(segment["ts"]) <= RECORDING_FRESH:
        return "recording", f"segment {segment['data'].get('seq', '')} at {segment['ts'][11:19]}"
    if conn is not None and conn["kind"] in (CctvKind.CAMERA_ONLINE, CctvKind.STREAM_GAP):
        return "unknown", "online, no recent segment"
    return "unknown", "no recent status"


def lag_text(lag: CameraLag | None) -> tuple[str, str]:
    """(text, class) of a camera's lag: "0.2 s", "7.1 s, lagging, analysis shed"."""
    if lag is None or (lag.seconds is None and not lag.lagging and not lag.analysis_shed):
        return "", "unknown"
    words = ["unknown" if lag.seconds is None else f"{lag.seconds:.1f} s"]
    if lag.lagging:
        words.append("lagging")
    if lag.analysis_shed:
        words.append("analysis shed")
    return ", ".join(words), "bad" if lag.lagging or lag.analysis_shed else "ok"


def worst(w: Workstation) -> str:
    """The workstation's tile colour on the wall: bad beats unknown beats ok."""
    states = {c.state for c in (w.usb, w.isolation, w.heartbeat, w.chain)}
    return "bad" if "bad" in states else "unknown" if "unknown" in states else "ok"


def problems(w: Workstation) -> list[str]:
    """What is not ok on a workstation, as the wall's tile says it ("usb: blocked")."""
    cells = (("usb", w.usb), ("isolation", w.isolation), ("heartbeat", w.heartbeat),
             ("chain", w.chain))
    return [f"{name}: {cell.text}" for name, cell in cells if cell.state != "ok"]


def _rank(w: Workstation) -> int:
    return {"bad": 0, "unknown": 1}.get(worst(w), 2)


def build(agents: list[dict[str, Any]], latest: list[dict[str, Any]],
          open_alerts: list[dict[str, Any]], now: datetime, stale_seconds: int,
          verifications: dict[str, dict[str, Any]] | None = None) -> Overview:
    """verifications: the last re-verification per agent (store.list_verifications)."""
    by_agent: dict[str, dict[str, dict[str, Any]]] = {}
    for event in latest:
        by_agent.setdefault(event["agent_id"], {})[event["topic"]] = event
    open_kinds: dict[str | None, set[str]] = {}
    for alert in open_alerts:
        open_kinds.setdefault(alert["agent_id"], set()).add(alert["kind"])
    view = Overview(alerts_by_severity(open_alerts))
    fresh: dict[str, bool] = {}
    for agent in agents:
        ident = agent["agent_id"]
        heartbeat = heartbeat_cell(agent, now, stale_seconds)
        fresh[ident] = heartbeat.state == "ok"
        if agent["role"] != "workstation":
            continue
        topics = by_agent.get(ident, {})
        view.workstations.append(Workstation(
            ident, agent.get("hostname") or "", usb_cell(topics.get(USB_LOCK.name)),
            isolation_cell(topics.get(NET_STATE.name)), heartbeat,
            chain_cell(agent, open_kinds.get(ident, set()),
                       (verifications or {}).get(ident))))
    # problems first: on a wall of 200 workstations the broken ones must be on screen
    view.workstations.sort(key=lambda w: (_rank(w), w.agent_id))
    door_agents = {a["agent_id"] for a in agents if a["role"] == "door"}
    view.doors = door_rows([e for e in latest if e["agent_id"] in door_agents])
    cameras: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for event in latest:
        if event["topic"].startswith("cam:"):
            camera, _, part = event["topic"].removeprefix("cam:").rpartition(":")
            cameras.setdefault((event["agent_id"], camera), {})[part] = event
    lags = camera_lags(latest)
    for (agent_id, camera), topics in sorted(cameras.items()):
        state, detail = camera_state(topics, now, fresh.get(agent_id, False))
        cls = {"recording": "ok", "motion": "ok", "unknown": "unknown"}.get(state, "bad")
        view.cameras.append(Camera(agent_id, camera, state, cls, detail,
                                   *lag_text(lags.get((agent_id, camera)))))
    return view
