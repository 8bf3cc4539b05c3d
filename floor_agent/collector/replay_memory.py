"""The replay memory of agent-signed requests, kept in the store so it is the site's.

A request signed by an agent (protocol/request_signing.py) is accepted once: its signature is
remembered for twice the freshness window (a request is fresh for a window either side of a
collector's clock, and collectors' clocks differ a little). Remembered in the database, not in
the process: the same signed request sent to a second collector of the site, or to this one
after a restart, finds the row and is refused as a replay.
"""

from __future__ import annotations

import threading

from floor_agent.protocol.request_signing import (
    FRESH_MS,
    HEADER,
    ReplayGuard,
    RequestAuthError,
    SignedHeader,
)
from floor_agent.store.interface import Store

FORGET_EVERY_MS = 60_000  # expired signatures are deleted at most this often, per process


def keep_until(header: SignedHeader, fresh_ms: int) -> int:
    """Until when (Unix ms) a signature must be remembered (pure)."""
    return header.ts_ms + 2 * fresh_ms


def forget_due(last_ms: int | None, now_ms: int) -> bool:
    """Whether this process deletes the expired signatures now (pure)."""
    return last_ms is None or now_ms - last_ms >= FORGET_EVERY_MS


class StoreReplayGuard(ReplayGuard):
    """ReplayGuard whose memory is the store's request_signatures table; thread-safe."""

    def __init__(self, store: Store, fresh_ms: int = FRESH_MS) -> None:
        super().__init__(fresh_ms)
        self.store = store
        self._forgot_at: int | None = None
        self._forget_lock = threading.Lock()

    def remember(self, header: SignedHeader, now_ms: int) -> None:
        """Refuse a signature any collector of the site accepted; remember this one. Call
        after the signature verified, so forgeries cannot fill the table."""
        self.check_fresh(header, now_ms)
        with self._forget_lock:
            due = forget_due(self._forgot_at, now_ms)
            if due:
                self._forgot_at = now_ms
        if due:
            self.store.forget_requests(now_ms)
        if not self.store.remember_request(header.signature, header.agent_id,
                                           keep_until(header, self.fresh_ms)):
            raise RequestAuthError(f"{HEADER}: replayed request refused")
