"""What bounds password guessing before any hashing: failed logins per source address, and
how many logins may hash at once.

The per-account lockout lives in the store (one atomic statement per failure, store/sql.py);
this module holds what is per process: a window of failed attempts per source address (an
IPv6 client counts per /64, which one host can fill), and the admission of logins to the
hashing slots (passwords.GATE), waited for in the event loop so a queue of logins holds no
worker thread that /healthz and the pages need.

An attempt is reserved when it starts and refunded when it succeeds (or was never checked),
so N parallel guesses from one address are N attempts, not N reads of the same count.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, replace

import anyio

from floor_agent.collector.edge import offender
from floor_agent.dashboard import passwords

MAX_ADDRESSES = 10_000  # tracked windows; past that, new addresses share one window
OVERFLOW = "*overflow*"


def address_key(host: str | None) -> str:
    """The throttled unit of a client address: an IPv4 address, an IPv6 /64 (pure)."""
    return offender(host) if host else "unknown"


@dataclass(frozen=True, slots=True)
class Window:
    started: float  # epoch seconds of the first attempt in this window
    attempts: int  # failed ones, and those still being checked
    refused: bool = False  # the throttle engaged in this window (recorded once)


@dataclass(frozen=True, slots=True)
class Verdict:
    retry_after: int  # 0: admitted (one attempt reserved); else seconds until the window ends
    first_refusal: bool  # the first refusal of this window: record it on the audit trail
    key: str
    started: float


def admit(window: Window | None, now: float, limit: int, seconds: float
          ) -> tuple[Window, int]:
    """The window after one more attempt, and 0 when it is admitted or else the seconds until
    the window ends (pure). A new window starts when the old one is over."""
    if window is None or now - window.started >= seconds:
        window = Window(now, 0)
    if window.attempts >= limit:
        return replace(window, refused=True), max(1, math.ceil(window.started + seconds - now))
    return replace(window, attempts=window.attempts + 1), 0


class AddressThrottle:
    """Failed logins per source address per window; thread-safe, bounded in memory."""

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self._windows: dict[str, Window] = {}
        self._lock = threading.Lock()

    def begin(self, host: str | None, now: float) -> Verdict:
        """Reserve one attempt for this address, or say how long it must wait."""
        key = address_key(host)
        with self._lock:
            if key not in self._windows and len(self._windows) >= MAX_ADDRESSES:
                self._windows = {k: w for k, w in self._windows.items()
                                 if now - w.started < self.seconds}
                if len(self._windows) >= MAX_ADDRESSES:
                    key = OVERFLOW
            before = self._windows.get(key)
            after, retry = admit(before, now, self.limit, self.seconds)
            self._windows[key] = after
        first = retry > 0 and not (before is not None and before.started == after.started
                                   and before.refused)
        return Verdict(retry, first, key, after.started)

    def refund(self, verdict: Verdict) -> None:
        """The reserved attempt succeeded or was never checked: it is not a failure."""
        with self._lock:
            window = self._windows.get(verdict.key)
            if window is not None and window.started == verdict.started and window.attempts:
                self._windows[verdict.key] = replace(window, attempts=window.attempts - 1)


class HashAdmission:
    """Logins waiting for a hashing slot, in the event loop (no thread held while waiting)."""

    def __init__(self, slots: int = passwords.HASH_SLOTS) -> None:
        self.slots = slots
        self._limiter: anyio.CapacityLimiter | None = None  # made in the loop, on first use

    async def acquire(self, wait: float) -> bool:
        """True with a slot taken (release() it), False when none came free within wait."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.slots)
        with anyio.move_on_after(wait):
            await self._limiter.acquire()
            return True
        return False

    def release(self) -> None:
        assert self._limiter is not None
        self._limiter.release()


@dataclass
class LoginLimits:
    """The per-process login limits of one dashboard."""

    addresses: AddressThrottle
    hashing: HashAdmission
    wait_seconds: float
