"""Times as the dashboard shows them: compact in the cell, the full ISO stamp in its title.

A stored stamp is `2026-11-29T14:03:05.123456Z` (27 characters); in a table it wrapped mid-way
and pushed the short columns apart. Shown as `11-29 14:03:05` (UTC, like the stamp), it fits
one line; the year and the microseconds are one hover away, and exports keep the full stamp.
"""

from __future__ import annotations

from floor_agent.protocol.event import TS_RE


def short_time(ts: str | None) -> str:
    """`MM-DD HH:MM:SS` of a stored UTC stamp (pure); anything else is returned unchanged."""
    if not ts or not TS_RE.match(ts):
        return ts or ""
    return f"{ts[5:10]} {ts[11:19]}"
