"""The database's reachability for one collector process: what requests found, plus a probe.

Requests that found the database away report it here (api.py answers them 503); a thread
pings the database every second while it is away, so its return is logged and served within
about a second without waiting for traffic, and every few seconds while it is up, so /healthz
and /metrics show an outage no request has met yet. The decisions are database_health.py's.

A collector that starts while its database is away hands the rest of its start to the watch
(wait_to_start, from server.py): until that has run, `started` is False (start_gate.py
answers everything but /healthz 503) and the probe runs it instead of a ping, once a second.
A database that answers no (StoreRefused: a wrong password, no such database) or a start that
fails for any reason but the database being away is not waited out: `on_refused` is told.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from floor_agent.collector import database_health as health
from floor_agent.collector.database_health import DatabaseHealth
from floor_agent.store.interface import Store, StoreRefused, StoreUnavailable

log = logging.getLogger(__name__)


class DatabaseWatch:
    """Thread-safe holder of DatabaseHealth; logs one line per change, never a traceback."""

    def __init__(self, store: Store, up_probe_seconds: float = 5.0,
                 down_probe_seconds: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._start: Callable[[], None] | None = None
        self._on_refused: Callable[[BaseException], None] | None = None
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

    @property
    def started(self) -> bool:
        """False while the collector's start waits for its database."""
        return self._start is None

    def wait_to_start(self, exc: BaseException, start: Callable[[], None],
                      on_refused: Callable[[BaseException], None]) -> None:
        """The start found the database away (exc): one line; from now on the probe runs
        `start` until it returns, or tells `on_refused` what ended it for good."""
        with self._lock:
            self._state, line = health.waiting(self.clock(), _reason(exc))
            self._start, self._on_refused = start, on_refused
        log.warning("%s", line)

    def turned_away(self) -> None:
        """A request answered 503 because the start still waits (counted for the last line)."""
        with self._lock:
            self._state, _ = health.failed(self._state, self.clock(), "", refused=True)

    def failed(self, exc: BaseException, refused: bool = False) -> None:
        """A call found the database away (refused: a request answered 503 for it)."""
        with self._lock:
            self._state, line = health.failed(self._state, self.clock(), _reason(exc), refused)
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
        """Ping the database once (or run the start that waits for it) and record what it
        said; True when it answered."""
        start = self._start
        if start is not None:
            return self._try_start(start)
        try:
            self.store.ping()
        except Exception as exc:  # whatever the driver raised, the database did not answer
            self.failed(exc)
            return False
        self.answered()
        return True

    def _try_start(self, start: Callable[[], None]) -> bool:
        try:
            start()
        except Exception as exc:
            if isinstance(exc, StoreUnavailable) and not isinstance(exc, StoreRefused):
                self.failed(exc)  # away still (or again, halfway): later
            else:  # a refusal, or anything else waiting will not fix
                self._refused(exc)
            return False
        self._start = None  # the gate opens: requests reach the store from now on
        self.answered()
        return True

    def _refused(self, exc: BaseException) -> None:
        self._stop.set()
        if self._on_refused is not None:
            self._on_refused(exc)

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


def _reason(exc: BaseException) -> str:
    """An error as one short line (a driver's message may span several)."""
    return " ".join(str(exc).split())[:300] or exc.__class__.__name__
