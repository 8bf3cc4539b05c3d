"""The database's reachability for one collector process: what requests found, plus a probe.

Requests that found the database away report it here (api.py answers them 503); a thread
pings the database every second while it is away, so its return is logged and served within
about a second without waiting for traffic, and every few seconds while it is up, so /healthz
and /metrics show an outage no request has met yet. The decisions are database_health.py's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from floor_agent.collector import database_health as health
from floor_agent.collector.database_health import DatabaseHealth
from floor_agent.store.interface import Store

log = logging.getLogger(__name__)


class DatabaseWatch:
    """Thread-safe holder of DatabaseHealth; logs one line per change, never a traceback."""

    def __init__(self, store: Store, up_probe_seconds: float = 5.0,
                 down_probe_seconds: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.up_probe_seconds = up_probe_seconds
        self.down_probe_seconds = down_probe_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._state = health.started(clock())
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> DatabaseHealth:
        with self._lock:
            return self._state

    def failed(self, exc: BaseException, refused: bool = False) -> None:
        """A call found the database away (refused: a request answered 503 for it)."""
        reason = " ".join(str(exc).split())[:300] or exc.__class__.__name__
        with self._lock:
            self._state, line = health.failed(self._state, self.clock(), reason, refused)
        if line is not None:
            log.warning("%s", line)
            self._wake.set()  # probe at the outage's pace from now on

    def answered(self) -> None:
        """A call reached the database."""
        with self._lock:
            self._state, line = health.answered(self._state, self.clock())
        if line is not None:
            log.warning("%s", line)

    def probe(self) -> bool:
        """Ping the database once and record what it said; True when it answered."""
        try:
            self.store.ping()
        except Exception as exc:  # whatever the driver raised, the database did not answer
            self.failed(exc)
            return False
        self.answered()
        return True

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="database-watch",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            period = self.up_probe_seconds if self.state.up else self.down_probe_seconds
            self._wake.wait(period)
            self._wake.clear()
            if self._stop.is_set():
                return
            self.probe()
