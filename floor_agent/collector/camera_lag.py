"""Each camera's lag as the collector knows it (pure): how far behind real time its last
written packet was, whether it is lagging and whether its analysis is shed (issue 22).

A camera box reports the figure with every `cctv.segment` (`lag_ms`, at the segment's close:
every `segment_seconds`) and at the crossings of its bounds (`cctv.lagging` /
`cctv.lag_recovered`, `cctv.analysis_shed` / `cctv.analysis_restored`, each with `lag_ms`).
The newest of those, from the collector's table of each camera's latest states
(store.latest_states: topics cam:<id>:segment, :lag and :analysis), is the figure. An agent's
data is input: a lag that is not a non-negative integer is not a figure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from floor_agent.protocol.kinds.cctv import CctvKind


@dataclass(frozen=True, slots=True)
class CameraLag:
    agent_id: str
    camera: str
    seconds: float | None  # None: no figure reported yet
    at: str  # the reporting event's time ("" when none)
    lagging: bool  # cctv.lagging not yet followed by cctv.lag_recovered
    analysis_shed: bool  # cctv.analysis_shed not yet followed by cctv.analysis_restored


def _lag_ms(event: Mapping[str, Any] | None) -> int | None:
    if event is None:
        return None
    value = event.get("data", {}).get("lag_ms")
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return value if ok else None


def camera_lags(latest: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], CameraLag]:
    """(agent_id, camera) -> its lag, for every camera with a segment, lag or analysis state."""
    topics: dict[tuple[str, str], dict[str, Mapping[str, Any]]] = {}
    for event in latest:
        topic = str(event.get("topic", ""))
        if not topic.startswith("cam:"):
            continue
        camera, _, part = topic.removeprefix("cam:").rpartition(":")
        if part in ("segment", "lag", "analysis"):
            topics.setdefault((str(event["agent_id"]), camera), {})[part] = event
    out = {}
    for (agent_id, camera), parts in sorted(topics.items()):
        figures = [(str(e["ts"]), ms) for e in parts.values()
                   if (ms := _lag_ms(e)) is not None]
        at, ms = max(figures) if figures else ("", None)
        lag, analysis = parts.get("lag"), parts.get("analysis")
        out[(agent_id, camera)] = CameraLag(
            agent_id, camera, None if ms is None else ms / 1000, at,
            lag is not None and lag["kind"] == CctvKind.LAGGING,
            analysis is not None and analysis["kind"] == CctvKind.ANALYSIS_SHED)
    return out
