"""How long an agent's forwarder waits before its next try: pure, over plain numbers.

Failures back off exponentially with full jitter, so two hundred workstations coming back
after an outage do not arrive in lockstep. A collector that answers 503 (its database is away)
or 429 says with Retry-After how long to stay away: that is the least wait, so every agent of a
site does not hammer a collector that has told it when to come back; still never longer than
the agent's own backoff_max_seconds (a collector, or whatever stands in its place, cannot park
an agent for an hour). A 503 is an answer: the collector is there and shares its database with
the others, so it is no reason to fail over (audit/failover.py moves only on no answer).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# the statuses whose Retry-After is honoured: "come back later", not "this batch is wrong"
RETRY_AFTER_STATUSES = frozenset({429, 503})
MAX_HEADER_CHARS = 64  # a delay or an HTTP date; anything longer is not read


def ceiling(failures: int, initial: float, maximum: float) -> float:
    """The longest wait after `failures` failures in a row (1 or more): doubling from
    `initial`, never past `maximum`."""
    return min(maximum, initial * 2 ** min(max(failures, 1) - 1, 30))


def retry_after(status: int, header: str | None, now: datetime) -> float | None:
    """The seconds a 503 or 429 asks the client to wait (Retry-After: delay-seconds or an
    HTTP date, RFC 9110 10.2.3); None for other statuses, no header, or one not understood
    (then the backoff alone applies). A date in the past asks for no wait: 0."""
    if status not in RETRY_AFTER_STATUSES or header is None:
        return None
    value = header.strip()
    if not value or len(value) > MAX_HEADER_CHARS:
        return None
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT
        when = when.replace(tzinfo=UTC)
    seconds = (when - now).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def wait(drawn: float, asked: float | None, maximum: float) -> float:
    """The wait before the next try: the backoff's draw, raised to what the collector asked,
    never past `maximum` (the agent's backoff_max_seconds) on account of the asking."""
    if asked is None:
        return drawn
    return max(drawn, min(asked, maximum))
