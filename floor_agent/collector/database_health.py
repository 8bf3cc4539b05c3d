"""Whether the collector's database is reachable, as plain data and pure transitions.

A database outage (stopped, restarting, failing over to a standby) is the database's state,
not the collector's: the process goes on serving, answers agents 503 so they keep their events
spooled, and says so once when it starts and once when it ends, not once per request. The
shell (database_watch.py) feeds these functions what it sees and logs the lines they return.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from floor_agent.protocol.event import utc_timestamp

# What an agent is told to wait before it tries again while the database is away (the
# forwarder backs off on any non-200 with its own jittered backoff; this is for others).
RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True, slots=True)
class DatabaseHealth:
    """up, and since when (epoch seconds) it has been so; refused: requests answered 503
    during the current outage; outages: how many began since the process started."""

    up: bool = True
    since: float = 0.0
    reason: str | None = None
    refused: int = 0
    outages: int = 0
    # when the last outage ended (epoch seconds), None when there was none
    back_at: float | None = None
    # the database has not been reached since the process started: the collector serves
    # /healthz and answers the rest 503 until it is, then does what its start does
    starting: bool = False


def started(now: float) -> DatabaseHealth:
    """The state at start: the store was opened, so the database answered."""
    return DatabaseHealth(up=True, since=now)


def waiting(now: float, reason: str) -> tuple[DatabaseHealth, str]:
    """The state at a start that found the database away, and the one line that says so
    (counted as an outage: the database was away while the collector ran)."""
    state = DatabaseHealth(up=False, since=now, reason=reason, outages=1, starting=True)
    return state, (f"waiting for the database: {reason}; serving /healthz and answering "
                   f"everything else 503 (agents keep their events spooled), trying again "
                   f"every second")


def failed(state: DatabaseHealth, now: float, reason: str,
           refused: bool = False) -> tuple[DatabaseHealth, str | None]:
    """A call found the database away; the line to log when this begins an outage.
    refused: the call was a request answered 503 (counted for the line at the end)."""
    if not state.up:
        return replace(state, refused=state.refused + int(refused)), None
    new = replace(state, up=False, since=now, reason=reason, refused=int(refused),
                  outages=state.outages + 1)
    return new, (f"database unreachable: {reason}; answering agents 503 (their events stay "
                 f"spooled) and trying again every second")


def answered(state: DatabaseHealth, now: float) -> tuple[DatabaseHealth, str | None]:
    """A call reached the database; the line to log when this ends an outage."""
    if state.up:
        return state, None
    away = max(0.0, now - state.since)
    new = replace(state, up=True, since=now, reason=None, refused=0, back_at=now,
                  starting=False)
    if state.starting:
        return new, (f"database reachable after {away:.1f} s waiting for it since start; "
                     f"started ({state.refused} requests answered 503 meanwhile)")
    return new, (f"database reachable again after {away:.1f} s "
                 f"({state.refused} requests answered 503 meanwhile)")


def down_seconds(state: DatabaseHealth, now: float) -> float:
    """How long the current outage has lasted; 0 while the database is up."""
    return 0.0 if state.up else max(0.0, now - state.since)


def report(state: DatabaseHealth, now: float) -> dict[str, Any]:
    """The /healthz view: up or down, since when (UTC), for how long, why."""
    out: dict[str, Any] = {"state": "up" if state.up else "down",
                           "since": utc_timestamp(datetime.fromtimestamp(state.since, UTC))}
    if not state.up:
        out["down_seconds"] = round(down_seconds(state, now), 1)
        out["reason"] = state.reason
    if state.starting:
        out["starting"] = True  # not started yet: everything but /healthz is answered 503
    return out


def stale_sweep_due(state: DatabaseHealth, now: float, stale_seconds: float) -> bool:
    """Whether agents can be called silent: not while the database is away, nor until it has
    been back for stale_seconds (an agent needs that long to deliver its next checkpoint; a
    sweep at once would call every agent stale after an outage longer than that)."""
    if not state.up:
        return False
    return state.back_at is None or now - state.back_at >= stale_seconds

