"""Charts as inline SVG text, drawn on the server (pure: plain data in, SVG text out).

No script and no CDN: the dashboard's CSP (`default-src 'self'`) and an offline floor allow
neither. Every chart is a `viewBox` drawing at a fixed logical size that the page scales to
its column's width (`width="100%"`), so no chart can make the page scroll sideways at any
window width. Every label is escaped here (html.escape with quotes) and cut to a fixed number
of characters (the whole text stays in a `<title>` tooltip), so an agent id of 200 characters
or a label with markup neither breaks the layout nor injects anything. Counts are scaled to
the largest bar, whatever its size (a million-count bar is as tall as a ten-count one would
be alone); a chart with nothing to show says so instead of drawing an empty frame.

Colours are fixed per series and state (`COLOURS`, `STATE_COLOURS`): the browser tests find
the bars and spans by those exact colours in the screenshots.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

WIDTH = 1000  # the logical width every chart is drawn at (scaled to its column)
LABEL_CHARS = 22  # longer lane labels are cut (the full text is in the tooltip)
MIN_BAR = 3.0  # the least height of a bar with any count, in logical units
AXIS = "#8a98a6"
GRID = "#26313b"
TEXT = "#cfd8e0"

# one colour per capability (a kind's first part) and per door outcome
COLOURS = {
    "usb": "#3b82f6", "net": "#f59e0b", "door": "#10b981", "cctv": "#a855f7",
    "integrity": "#ef4444", "collector": "#64748b", "dashboard": "#64748b",
    "retention": "#14b8a6", "alert": "#64748b", "agent": "#64748b",
    "granted": "#10b981", "denied": "#ef4444",
}
OTHER = "#94a3b8"
# one colour per timeline state
STATE_COLOURS = {
    "ok": "#22c55e", "bad": "#ef4444", "unknown": "#475569",
    "recording": "#22c55e", "motion": "#f59e0b", "tamper": "#ef4444", "gap": "#e11d48",
    "device": "#3b82f6",
}


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def cut(text: str, chars: int = LABEL_CHARS) -> str:
    return text if len(text) <= chars else text[:chars - 1] + "\u2026"


def compact(n: int) -> str:
    """1234 -> 1.2k, 1000000 -> 1M: axis labels that fit however large the count."""
    for size, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if abs(n) >= size:
            text = f"{n / size:.1f}".removesuffix(".0")
            return text + suffix
    return str(n)


def _tick(value: float) -> str:
    """An axis value: compact when whole (the top of 5 has its half at 2.5, not 2)."""
    return compact(int(value)) if value == int(value) else f"{value:g}"


def colour_of(name: str) -> str:
    return COLOURS.get(name, OTHER)


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    values: Sequence[int]
    colour: str = ""

    @property
    def fill(self) -> str:
        return self.colour or colour_of(self.name)


def _nice_max(top: int) -> int:
    """The axis' top: the largest count rounded up to 1, 2 or 5 times a power of ten."""
    if top <= 0:
        return 1
    step = 1
    while True:
        for m in (1, 2, 5):
            if step * m >= top:
                return step * m
        step *= 10


def _open(testid: str, height: int, title: str, width: int = WIDTH) -> list[str]:
    return [f'<svg class="chart" data-testid="{esc(testid)}" viewBox="0 0 {width} {height}" '
            f'width="100%" role="img" aria-label="{esc(title)}" '
            f'xmlns="http://www.w3.org/2000/svg">', f"<title>{esc(title)}</title>"]


def _legend(names: Sequence[tuple[str, str]], y: int, x: int = 60,
            width: int = WIDTH) -> list[str]:
    out = []
    for name, colour in names:
        label = cut(name, 18)
        out.append(f'<rect x="{x}" y="{y - 10}" width="12" height="12" fill="{colour}"/>'
                   f'<text x="{x + 16}" y="{y}" fill="{TEXT}" font-size="13">{esc(label)}</text>')
        x += 30 + 8 * len(label)
        if x > width - 120:
            break
    return out


def _empty(parts: list[str], height: int, message: str, width: int = WIDTH) -> str:
    parts.append(f'<text class="empty" x="{width // 2}" y="{height // 2}" fill="{AXIS}" '
                 f'font-size="16" text-anchor="middle">{esc(message)}</text></svg>')
    return "".join(parts)


def bar_chart(labels: Sequence[str], series: Sequence[Series], title: str, testid: str,
              height: int = 240, empty: str = "nothing in this window",
              label_every: int = 0, width: int = WIDTH) -> str:
    """Stacked bars: one bar per label (a time bucket or an hour), one stack per series.

    labels: the x axis (each series has one value per label). label_every: write every n-th
    label (0: as many as fit). width: the logical width (the plot is 60..width-10)."""
    parts = _open(testid, height, title, width)
    n = len(labels)
    totals = [sum(max(0, int(s.values[i])) for s in series) for i in range(n)]
    if n == 0 or not any(totals):
        return _empty(parts, height, empty, width)
    left, right, top, bottom = 60, width - 10, 24, height - 44
    top_value = _nice_max(max(totals))
    # the grid and the y axis: 0, half, top
    for frac in (0.0, 0.5, 1.0):
        y = bottom - (bottom - top) * frac
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" '
                     f'stroke="{GRID}" stroke-width="1"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" fill="{AXIS}" font-size="12" '
                     f'text-anchor="end">{esc(_tick(top_value * frac))}</text>')
    slot = (right - left) / n
    bar = max(1.0, slot * 0.8)
    every = label_every or max(1, -(-n * 44 // (right - left)))  # about 44 units per label
    for i, label in enumerate(labels):
        x = left + slot * i + (slot - bar) / 2
        y = float(bottom)
        stack = []
        for s in series:
            value = max(0, int(s.values[i]))
            if not value:
                continue
            # one event beside a million is still a visible bar (its count is in the tooltip)
            h = max((bottom - top) * value / top_value, MIN_BAR)
            y -= h
            stack.append(f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" '
                         f'height="{h:.1f}" fill="{s.fill}" '
                         f'data-series="{esc(s.name)}"><title>{esc(cut(label, 40))} '
                         f'{esc(cut(s.name, 40))}: {value}</title></rect>')
        parts.extend(stack)
        if i % every == 0:
            parts.append(f'<text x="{left + slot * i + slot / 2:.1f}" y="{bottom + 16}" '
                         f'fill="{AXIS}" font-size="12" text-anchor="middle">'
                         f'{esc(cut(label, 8))}</text>')
    parts.extend(_legend([(s.name, s.fill) for s in series if any(s.values)], height - 8,
                         width=width))
    parts.append("</svg>")
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class Span:
    """A stretch of one lane in one state, as fractions of the window (0..1)."""

    start: float
    end: float
    state: str
    note: str = ""


@dataclass(slots=True)
class Lane:
    label: str
    spans: list[Span] = field(default_factory=list)
    link: str = ""


def fraction(ts: datetime, start: datetime, end: datetime) -> float:
    """Where a moment lies in the window, clamped to 0..1."""
    whole = (end - start).total_seconds()
    if whole <= 0:
        return 0.0
    return min(1.0, max(0.0, (ts - start).total_seconds() / whole))


def timeline(lanes: Sequence[Lane], ticks: Sequence[tuple[float, str]], title: str,
             testid: str, empty: str = "nothing to show", legend: Sequence[str] = (),
             width: int = WIDTH, label_width: int = 190, label_chars: int = LABEL_CHARS) -> str:
    """Lanes of coloured spans over one window: a state over time per camera or workstation.

    ticks: (fraction, label) for the time axis. legend: the states to explain, in order.
    width, label_width: the logical size (a camera tile draws a narrower one)."""
    lane_h, gap, top = 18, 6, 8
    height = top + max(1, len(lanes)) * (lane_h + gap) + 46
    parts = _open(testid, height, title, width)
    if not lanes:
        return _empty(parts, height, empty, width)
    left, right = label_width, width - 10
    span_w = right - left
    y = top
    for lane in lanes:
        label = f'<text x="{left - 8}" y="{y + 13}" fill="{TEXT}" font-size="13" ' \
                f'text-anchor="end"><title>{esc(lane.label)}</title>' \
                f'{esc(cut(lane.label, label_chars))}</text>'
        if lane.link:
            label = f'<a href="{esc(lane.link)}">{label}</a>'
        parts.append(label)
        parts.append(f'<rect x="{left}" y="{y}" width="{span_w}" height="{lane_h}" '
                     f'fill="#161d24"/>')
        for s in lane.spans:
            a, b = min(max(s.start, 0.0), 1.0), min(max(s.end, 0.0), 1.0)
            w = max((b - a) * span_w, 2.0)  # an instant stays visible
            colour = STATE_COLOURS.get(s.state, OTHER)
            note = f"{s.state}: {s.note}" if s.note else s.state
            parts.append(f'<rect class="span" x="{left + a * span_w:.1f}" y="{y}" '
                         f'width="{w:.1f}" height="{lane_h}" fill="{colour}" '
                         f'data-state="{esc(s.state)}"><title>{esc(cut(note, 120))}</title>'
                         f'</rect>')
        y += lane_h + gap
    for frac, label in ticks:
        at = min(max(frac, 0.0), 1.0)
        x = left + span_w * at
        # the last label ends at the edge, so it is never cut off
        anchor = "end" if at > 0.95 else "middle"
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{y}" stroke="{GRID}" '
                     f'stroke-width="1"/><text x="{x:.1f}" y="{y + 14}" fill="{AXIS}" '
                     f'font-size="12" text-anchor="{anchor}">{esc(cut(label, 12))}</text>')
    parts.extend(_legend([(s, STATE_COLOURS.get(s, OTHER)) for s in legend], height - 8,
                         min(left, 60), width))
    parts.append("</svg>")
    return "".join(parts)
