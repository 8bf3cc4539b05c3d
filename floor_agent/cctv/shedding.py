"""When a lagging camera sheds its analysis, and when it takes it back: a pure judgement over
the main stream's lag and a monotonic clock.

Shed as soon as the lag passes the bound (recording must not fall further behind). Restore
only once the lag has stayed under half the bound for a hold: full analysis is what made the
box fall behind, so taking it back at the first calm moment makes a starved box flap (bench:
24 cameras on two cores shed and restored 263 times in 30 s, each a warning on the trail).
A camera shed again soon after a restore (within twice the hold) doubles its hold, up to
`max_hold`; one that stayed restored longer starts from `hold` again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

Action = Literal["shed", "restore"] | None


@dataclass(frozen=True, slots=True)
class ShedState:
    shed: bool = False
    since: float = 0.0  # when it was shed (monotonic)
    calm_since: float | None = None  # while shed: since when the lag is under half the bound
    hold: float = 0.0  # the hold in force (0: the configured one)
    restored_at: float | None = None  # when it was last restored


def judge(state: ShedState, behind: float, now: float, bound: float, hold: float,
          max_hold: float) -> tuple[ShedState, Action]:
    """The next state and what to do, for a packet `behind` seconds late at `now`."""
    if bound <= 0:
        return state, None
    current = state.hold or hold
    if not state.shed:
        if behind <= bound:
            return state, None
        recent = state.restored_at is not None and now - state.restored_at < 2 * current
        next_hold = min(current * 2, max_hold) if recent else hold
        return ShedState(True, now, None, next_hold, state.restored_at), "shed"
    if behind >= bound / 2:
        return (replace(state, calm_since=None) if state.calm_since is not None else state), None
    calm_since = state.calm_since if state.calm_since is not None else now
    if now - calm_since < current:
        return (replace(state, calm_since=calm_since) if state.calm_since is None
                else state), None
    return ShedState(False, state.since, None, current, now), "restore"
