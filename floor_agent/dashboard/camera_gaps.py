"""Which camera events are recording gaps, and how long each lasted (pure).

A camera box reports `cctv.camera_online` whenever a camera's stream (re)starts, also at its
first start and with `offline_ms=0` when it cannot tell how long it was away. Only a real gap
belongs under "Recording gaps": a stream gap, a lost stream, a camera going offline, and the
`camera_online` that ends an offline spell (one with a duration, or one after an offline).
"""

from __future__ import annotations

from typing import Any

from floor_agent.protocol.event import parse_timestamp
from floor_agent.protocol.kinds.cctv import CctvKind

STARTS = (CctvKind.CAMERA_OFFLINE, CctvKind.STREAM_LOST)


def duration_text(ms: int) -> str:
    seconds = max(0, ms) // 1000
    if seconds < 120:
        return f"{seconds} s" if seconds else f"{max(0, ms)} ms"
    if seconds < 7200:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _ms(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def recording_gaps(events: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    """(event, how long) of the gap events among one camera's events, newest first as given.

    `how long` is the reported duration (gap_ms, offline_ms) or, for a camera_online after a
    camera_offline with none, the time between the two; "" while a gap is still open."""
    out: list[tuple[dict[str, Any], str]] = []
    offline_at: dict[str, Any] | None = None
    for e in reversed(events):  # oldest first, to pair offline..online
        kind, data = e["kind"], e["data"]
        if kind == CctvKind.STREAM_GAP:
            out.append((e, duration_text(_ms(data.get("gap_ms")))))
        elif kind in STARTS:
            if kind == CctvKind.CAMERA_OFFLINE:
                offline_at = e
            out.append((e, ""))
        elif kind == CctvKind.CAMERA_ONLINE:
            reported = _ms(data.get("offline_ms"))
            if reported > 0:
                out.append((e, duration_text(reported)))
            elif offline_at is not None:
                spell = parse_timestamp(e["ts"]) - parse_timestamp(offline_at["ts"])
                out.append((e, duration_text(int(spell.total_seconds() * 1000))))
            offline_at = None
    out.reverse()
    return out
