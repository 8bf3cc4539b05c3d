"""What the charts show, from what the store counted and the state events it read (pure).

Plain data in (count rows `(bucket, kind, n)`, event dicts, the window), chart input out
(svg_charts.Series and Lane): no store, no clock. A kind's capability is its first part
(`usb.blocked` -> usb); the collector's own alerts for broken chains have no dot and count
as `integrity`. A workstation's lock and isolation over time use the overview's own cells
(overview.usb_cell, isolation_cell), so the chart and the overview never disagree.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from floor_agent.dashboard import overview
from floor_agent.dashboard.svg_charts import Lane, Series, Span, fraction
from floor_agent.protocol.event import parse_timestamp, utc_timestamp
from floor_agent.protocol.kinds.cctv import CctvKind
from floor_agent.protocol.kinds.door import DoorKind
from floor_agent.protocol.kinds.net import STATES as NET_STATES
from floor_agent.protocol.kinds.usb import STATES as USB_STATES
from floor_agent.protocol.kinds.usb import UsbKind

HOURS = (6, 24, 168)  # the windows a chart page offers
USB_STATE_KINDS = tuple(sorted(USB_STATES))
NET_STATE_KINDS = tuple(sorted(NET_STATES))
DEVICE_KINDS = (UsbKind.BLOCKED, UsbKind.ALLOWED, UsbKind.REJECTED, UsbKind.PARTIAL)
MOTION = (CctvKind.MOTION_START, CctvKind.MOTION_END)
TAMPER = (CctvKind.TAMPER, CctvKind.TAMPER_CLEARED)
LINK = (CctvKind.CAMERA_OFFLINE, CctvKind.STREAM_LOST, CctvKind.CAMERA_ONLINE)
CAMERA_KINDS = (*MOTION, *TAMPER, *LINK, CctvKind.STREAM_GAP)
MAX_WORKSTATIONS = 60  # lanes; the rest are named in a note (problems first)


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime
    bucket_chars: int  # 13: hours, 15: ten minutes

    @property
    def since(self) -> str:
        return utc_timestamp(self.start)

    @property
    def until(self) -> str:
        return utc_timestamp(self.end)

    @property
    def step(self) -> timedelta:
        return timedelta(hours=1) if self.bucket_chars == 13 else timedelta(minutes=10)


def window(now: datetime, hours: int) -> Window:
    """The last `hours` up to now, in hour buckets (ten-minute ones for 6 h or less)."""
    chars = 15 if hours <= 6 else 13
    end = now
    start = now - timedelta(hours=hours)
    return Window(start, end, chars)


def buckets(w: Window) -> list[str]:
    """Every bucket's stamp prefix in the window, oldest first (the empty ones too)."""
    step = w.step
    t = w.start.replace(second=0, microsecond=0)
    t = t.replace(minute=0) if w.bucket_chars == 13 else t.replace(minute=t.minute // 10 * 10)
    out = []
    while t < w.end:
        out.append(t.strftime("%Y-%m-%dT%H:%M")[:w.bucket_chars])
        t += step
    return out


def bucket_label(bucket: str) -> str:
    """2026-11-29T14 -> 14:00, 2026-11-29T14:3 -> 14:30 (UTC, as every time here)."""
    if len(bucket) == 13:
        return bucket[11:13] + ":00"
    return bucket[11:16].ljust(5, "0")


def bucket_start(bucket: str) -> datetime:
    """The moment a bucket (a stamp prefix of 10, 13, 15 or 16 characters) begins."""
    full = {10: "T00:00", 13: ":00", 15: "0", 16: ""}[len(bucket)]
    return parse_timestamp(bucket + full + ":00.000000Z")


def capability(kind: str) -> str:
    return kind.split(".", 1)[0] if "." in kind else "integrity"


def per_capability(counts: Iterable[tuple[str, str, int]], labels: Sequence[str]
                   ) -> list[Series]:
    """One series per capability over the buckets, the busiest first."""
    at = {b: i for i, b in enumerate(labels)}
    values: dict[str, list[int]] = defaultdict(lambda: [0] * len(labels))
    for bucket, kind, n in counts:
        if bucket in at:
            values[capability(kind)][at[bucket]] += n
    return [Series(name, vals) for name, vals in
            sorted(values.items(), key=lambda item: (-sum(item[1]), item[0]))]


def door_traffic(counts: Iterable[tuple[str, str, int]]) -> list[Series]:
    """Granted and denied door decisions by hour of the day (0..23, UTC) over the window."""
    granted, denied = [0] * 24, [0] * 24
    for bucket, kind, n in counts:
        hour = int(bucket[11:13])
        if kind == DoorKind.GRANTED:
            granted[hour] += n
        elif kind == DoorKind.DENIED:
            denied[hour] += n
    return [Series("granted", granted), Series("denied", denied)]


def ticks(w: Window, count: int = 6) -> list[tuple[float, str]]:
    """Time axis marks: evenly spaced, labelled HH:MM (with the day when the window spans
    more than one)."""
    out = []
    whole = w.end - w.start
    for i in range(count + 1):
        t = w.start + whole * i / count
        label = t.strftime("%m-%d %H:%M") if whole > timedelta(hours=24) else t.strftime("%H:%M")
        out.append((i / count, label))
    return out


def _spans(changes: list[tuple[datetime, str, str]], w: Window) -> list[Span]:
    """(moment, state, note) changes, oldest first -> spans until the next change or the end;
    the first change may lie before the window (the state it opened in)."""
    out = []
    for i, (at, state, note) in enumerate(changes):
        until = changes[i + 1][0] if i + 1 < len(changes) else w.end
        if until <= w.start:
            continue
        out.append(Span(fraction(at, w.start, w.end), fraction(until, w.start, w.end), state,
                        note))
    return out


def _opening(before: Iterable[tuple[str, str, str, str]], agent_id: str,
             kinds: Sequence[str]) -> dict[str, Any] | None:
    """The newest of these kinds before the window for an agent, as an event without data."""
    rows = [r for r in before if r[0] == agent_id and r[2] in kinds]
    if not rows:
        return None
    newest = max(rows, key=lambda r: r[3])
    return {"kind": newest[2], "ts": newest[3], "data": {}}


def _cell_changes(events: Iterable[dict[str, Any]], opening: dict[str, Any] | None,
                  cell: Any) -> list[tuple[datetime, str, str]]:
    out = []
    for e in ([opening] if opening else []) + list(events):
        c = cell(e)
        out.append((parse_timestamp(e["ts"]), c.state, c.text))
    return out


def workstation_lanes(agents: Sequence[dict[str, Any]], states: Sequence[dict[str, Any]],
                      devices: Sequence[dict[str, Any]],
                      before: Sequence[tuple[str, str, str, str]], w: Window
                      ) -> tuple[list[Lane], int]:
    """Two lanes per workstation (USB lock with its devices as marks, isolation), the ones
    with anything bad first; (lanes, workstations left out)."""
    by_agent: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in states:
        by_agent[e["agent_id"]].append(e)
    plugged: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in devices:
        plugged[e["agent_id"]].append(e)
    rows = []
    for agent in agents:
        if agent["role"] != "workstation":
            continue
        ident = agent["agent_id"]
        mine = by_agent.get(ident, [])
        usb = _spans(_cell_changes([e for e in mine if e["kind"] in USB_STATE_KINDS],
                                   _opening(before, ident, USB_STATE_KINDS),
                                   overview.usb_cell), w)
        if not usb:
            usb = [Span(0.0, 1.0, "unknown", "no lock-down reported")]
        for e in plugged.get(ident, []):
            at = fraction(parse_timestamp(e["ts"]), w.start, w.end)
            usb.append(Span(at, at, "device", f"{e['kind']} {e['data'].get('name', '')}"))
        net = _spans(_cell_changes([e for e in mine if e["kind"] in NET_STATE_KINDS],
                                   _opening(before, ident, NET_STATE_KINDS),
                                   overview.isolation_cell), w)
        if not net:
            net = [Span(0.0, 1.0, "unknown", "not verified")]
        bad = any(s.state == "bad" for s in usb + net)
        link = f"/workstations/{ident}"
        rows.append((0 if bad else 1, ident, [Lane(f"{ident} usb", usb, link),
                                              Lane(f"{ident} isolation", net, link)]))
    rows.sort(key=lambda r: (r[0], r[1]))
    lanes = [lane for _, _, pair in rows[:MAX_WORKSTATIONS] for lane in pair]
    return lanes, max(0, len(rows) - MAX_WORKSTATIONS)


def _intervals(events: Sequence[dict[str, Any]], opening: dict[str, Any] | None,
               starts: Sequence[str], state: str, w: Window,
               note: Any = lambda e: "") -> list[Span]:
    """Spans from a start kind until the next other kind (or the window's end)."""
    out = []
    began: datetime | None = None
    what = ""
    if opening is not None and opening["kind"] in starts:
        began, what = w.start, "since before this window"
    for e in events:
        at = parse_timestamp(e["ts"])
        if e["kind"] in starts:
            if began is None:
                began, what = at, note(e)
        elif began is not None:
            out.append(Span(fraction(began, w.start, w.end), fraction(at, w.start, w.end),
                            state, what))
            began = None
    if began is not None:
        out.append(Span(fraction(began, w.start, w.end), 1.0, state, what))
    return out


def camera_lanes(camera: str, agent_id: str, events: Sequence[dict[str, Any]],
                 segments: Iterable[tuple[str, str, int]],
                 before: Sequence[tuple[str, str, str, str]], w: Window,
                 segment_step: timedelta) -> list[Lane]:
    """recording (segments per bucket), motion, tamper and gaps of one camera."""
    mine = [e for e in events if e["data"].get("camera_id") == camera]
    subject = f"camera {camera}"
    opening = [r for r in before if r[1] == subject]
    recording = []
    for bucket, _, n in segments:
        if not n:
            continue
        start = bucket_start(bucket)
        recording.append(Span(fraction(start, w.start, w.end),
                              fraction(start + segment_step, w.start, w.end), "recording",
                              f"{n} segments from {bucket_label(bucket)}"))
    motion = _intervals([e for e in mine if e["kind"] in MOTION],
                        _opening(opening, agent_id, MOTION), (CctvKind.MOTION_START,),
                        "motion", w)
    tamper = _intervals([e for e in mine if e["kind"] in TAMPER],
                        _opening(opening, agent_id, TAMPER), (CctvKind.TAMPER,), "tamper", w,
                        lambda e: str(e["data"].get("tamper", "")))
    gaps = _intervals([e for e in mine if e["kind"] in LINK],
                      _opening(opening, agent_id, LINK),
                      (CctvKind.CAMERA_OFFLINE, CctvKind.STREAM_LOST), "gap", w,
                      lambda e: str(e["kind"]))
    for e in mine:
        if e["kind"] == CctvKind.STREAM_GAP:
            at = parse_timestamp(e["ts"])
            gap_ms = e["data"].get("gap_ms")
            ms = gap_ms if isinstance(gap_ms, int) and not isinstance(gap_ms, bool) else 0
            lasted = min(timedelta(milliseconds=min(max(ms, 0), 10**12)),
                         max(at - w.start, timedelta(0)))
            gaps.append(Span(fraction(at - lasted, w.start, w.end), fraction(at, w.start, w.end),
                             "gap", f"stream gap {gap_ms} ms"))
    return [Lane("recording", recording), Lane("motion", motion), Lane("tamper", tamper),
            Lane("gaps", gaps)]
