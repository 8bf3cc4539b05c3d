"""The pinned HTTPS clients of an agent's collector URLs, and the failover between them.

The choice is audit/failover.py's; this only keeps one client per URL, asks the choice before
each request, tells it what happened, and says each switch once (a log line, and the
`on_switch` callback: the agent's own audit event). Shared by the forwarder and the signed
requests; safe to use from several threads.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from floor_agent.audit import failover
from floor_agent.audit.failover import Route, Switch

log = logging.getLogger(__name__)


def pinned_client(collector_url: str, ca_path: Path, timeout: float) -> httpx.Client:
    """HTTPS client that trusts only the collector's own CA (never the system store)."""
    context = ssl.create_default_context(cafile=str(ca_path))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return httpx.Client(base_url=collector_url, verify=context, timeout=timeout,
                        headers={"content-type": "application/json"})


# what moves an agent to its next collector: no answer at all (refused, reset, timed out, TLS
# failed); an HTTP answer, even an error, means that collector is there
FAILOVER_ERRORS = (httpx.TransportError,)


class CollectorLink:
    """One client per collector URL; `pick()` the one to send on, then `answered()` or
    `failed()` with it."""

    def __init__(self, clients: Sequence[httpx.Client], return_after: float = float("inf"),
                 on_switch: Callable[[Switch], object] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not clients:
            raise ValueError("a collector link needs at least one client")
        self.clients = tuple(clients)
        self.return_after = return_after
        self.on_switch = on_switch
        self._clock = clock
        self._lock = threading.Lock()
        self._loss_said = False  # the collector that answered last is gone, and we said so
        self.route = Route(tuple(str(c.base_url).rstrip("/") for c in self.clients))

    @classmethod
    def pinned(cls, urls: Sequence[str], ca_path: Path, timeout: float,
               return_after: float = float("inf"),
               on_switch: Callable[[Switch], object] | None = None) -> CollectorLink:
        """A pinned client for each URL, in the order given."""
        return cls([pinned_client(url, ca_path, timeout) for url in urls], return_after,
                   on_switch)

    @property
    def current(self) -> httpx.Client:
        """The client in use now (no choice made: for its timeout or base URL)."""
        return self.clients[self.route.index]

    @property
    def url(self) -> str:
        return self.route.url

    def pick(self) -> httpx.Client:
        """The client to send the next request on (back to the first URL when it is time)."""
        with self._lock:
            self.route, returning = failover.before_request(self.route, self._clock(),
                                                            self.return_after)
            if returning:
                log.info("trying the first collector %s again (away from it for %g s or "
                         "more)", self.route.url, self.return_after)
            return self.clients[self.route.index]

    def answered(self, client: httpx.Client) -> None:
        """`client` got an HTTP answer: it sticks; a collector other than the last one that
        answered is a switch, said once."""
        with self._lock:
            if client is not self.current:
                return
            self.route, switch = failover.after_answer(self.route)
            self._loss_said = False
        if switch is not None:
            log.warning("now reporting to collector %s (before: %s, %s)", switch.to_url,
                        switch.from_url, switch.reason)
            if self.on_switch is not None:
                self.on_switch(switch)

    def failed(self, client: httpx.Client, error: BaseException) -> bool:
        """`client` got no answer (FAILOVER_ERRORS): move on to the next URL. Said once per
        loss of the collector that answered last, not at every attempt while all are down
        nor at a return to the first that finds it still down; True when said now."""
        with self._lock:
            if client is not self.current:  # another thread moved on already
                return False
            say = self.route.index == self.route.answered and not self._loss_said
            self._loss_said = self._loss_said or say
            before = self.route.url
            self.route = failover.after_failure(self.route, self._clock())
            after = self.route.url
        if after == before:
            return False  # one URL: the caller says it, as it always did
        if say:
            log.warning("collector %s unreachable (%s: %s); trying %s", before,
                        error.__class__.__name__, error, after)
        else:
            log.debug("collector %s unreachable (%s); trying %s", before,
                      error.__class__.__name__, after)
        return say

    def close(self) -> None:
        for client in self.clients:
            client.close()
