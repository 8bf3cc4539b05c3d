"""Ships spooled events to the collector and forgets only what it acknowledged.

One thread per agent. Each batch ends with a freshly signed checkpoint; an idle agent sends a
checkpoint alone every `heartbeat_seconds`. Failures back off exponentially with full jitter,
so two hundred workstations coming back after a collector outage do not arrive in lockstep.
A batch that gets no answer moves the agent to its next collector URL (audit/collector_link.py),
paced by the same backoff. A 503 or 429 with Retry-After is waited at least that long, new
events or not (audit/backoff.py), and keeps the agent where it is: that collector answered.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from floor_agent.audit import backoff
from floor_agent.audit.collector_link import FAILOVER_ERRORS, CollectorLink
from floor_agent.audit.collector_link import pinned_client as pinned_client  # re-exported
from floor_agent.audit.spool import Spool
from floor_agent.protocol.batch import batch_body
from floor_agent.protocol.checkpoint import Checkpoint

log = logging.getLogger(__name__)


@dataclass
class ForwarderSettings:
    batch_max_events: int = 500
    heartbeat_seconds: float = 30.0
    backoff_initial_seconds: float = 0.5
    backoff_max_seconds: float = 30.0


class Forwarder:
    """Sends the spool's pending events in order; sole writer of the spool's acked head."""

    def __init__(self, spool: Spool, key: Ed25519PrivateKey, link: CollectorLink,
                 settings: ForwarderSettings, stop: threading.Event,
                 rng: Callable[[float, float], float] = random.uniform) -> None:
        self.spool = spool
        self.key = key
        self.link = link
        self.settings = settings
        self.stop = stop
        self.wake = threading.Event()
        self._rng = rng
        self._failures = 0
        self._last_checkpoint = 0.0
        self._hold_until = 0.0  # monotonic: no try before this (the collector's Retry-After)
        self.batch_limit = settings.batch_max_events
        self.last_error: str | None = None
        self.last_success: float | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="audit-forwarder", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                delay = self.step()
            except Exception as exc:  # keep forwarding whatever one failure was
                log.exception("forwarder step failed")
                delay = self._backoff(f"internal error: {exc}")
            if delay > 0:
                self.wake.wait(delay)
                self.wake.clear()
                self._hold()

    def _hold(self) -> None:
        """Stay away until the wait the collector asked for has passed: new events wake the
        forwarder from its backoff, but not from that."""
        while not self.stop.is_set():
            left = self._hold_until - time.monotonic()
            if left <= 0:
                return
            self.stop.wait(left)

    def step(self) -> float:
        """Send one batch (or a heartbeat when due); returns how long to wait before the next.

        Returns 0 only after progress (a batch acknowledged, or a smaller batch size to try):
        with nothing deliverable it waits for the next heartbeat or a wake-up, so no spool
        content, a damaged one least of all, can make it spin or stop its heartbeats.
        """
        start, pending = self.spool.batch(self.batch_limit)  # damage is set aside first
        now = time.monotonic()
        if not pending:
            due = self._last_checkpoint + self.settings.heartbeat_seconds
            if now < due:
                return min(due - now, 1.0)
        last_seq = pending[-1].seq if pending else start.seq
        last_hash = pending[-1].hash if pending else start.hash
        checkpoint = Checkpoint(self.spool.agent_id, last_seq, last_hash,
                                self.spool.next_checkpoint_ts(), self.spool.boot_id).sign(self.key)
        body = batch_body(self.spool.agent_id, start.hash,
                          [(p.body, p.hash) for p in pending], checkpoint)
        client = self.link.pick()
        try:
            response = client.post("/api/v1/ingest", content=body)
        except httpx.HTTPError as exc:
            quiet = False
            if isinstance(exc, FAILOVER_ERRORS):  # the next try goes to the next collector
                quiet = not self.link.failed(client, exc) and len(self.link.clients) > 1
            return self._backoff(f"collector unreachable: {exc.__class__.__name__}: {exc}",
                                 quiet)
        self.link.answered(client)
        if response.status_code == 413 and len(pending) > 1:
            # The collector takes smaller batches than configured here: halve and go on,
            # rather than retrying a batch that can never fit.
            self.batch_limit = max(1, len(pending) // 2)
            log.warning("collector refused a batch of %d events as too large; sending %d "
                        "at a time", len(pending), self.batch_limit)
            return 0.0
        if response.status_code != 200:
            detail = response.text[:300]
            if response.status_code == 409 and _problem(response) == "clock_skew":
                # our checkpoint was stamped in the future: stamp the next one by the clock
                # again, or a clock that once ran ahead would be refused for ever
                self.spool.restart_checkpoint_clock()
            asked = backoff.retry_after(response.status_code,
                                        response.headers.get("retry-after"), datetime.now(UTC))
            return self._backoff(f"collector refused batch ({response.status_code}): {detail}",
                                 asked=asked)
        acked_seq = _acked_seq(response)
        if pending and (acked_seq is None or acked_seq < last_seq):
            return self._backoff(f"collector answered 200 but acknowledged seq {acked_seq}, "
                                 f"not {last_seq}")
        if acked_seq is not None and acked_seq > start.seq:
            self.spool.acknowledge(acked_seq)
        self._last_checkpoint = now
        if self._failures:
            log.info("collector reachable again after %d failed attempt(s)", self._failures)
        self._failures = 0
        self.last_error = None
        self.last_success = time.time()
        return 0.0 if pending else min(self.settings.heartbeat_seconds, 1.0)

    def _backoff(self, reason: str, quiet: bool = False, asked: float | None = None) -> float:
        """Exponential backoff with full jitter, at least `asked` seconds (the collector's
        Retry-After) up to backoff_max_seconds; the reason is logged once per change (not
        when quiet: the collector link has said it, or had nothing new to say)."""
        if reason != self.last_error and not quiet:
            log.warning("%s; events stay in the spool (%d pending)", reason,
                        self.spool.pending_count())
        self.last_error = reason
        self._failures += 1
        settings = self.settings
        drawn = self._rng(settings.backoff_initial_seconds / 2, backoff.ceiling(
            self._failures, settings.backoff_initial_seconds, settings.backoff_max_seconds))
        delay = backoff.wait(drawn, asked, settings.backoff_max_seconds)
        self._hold_until = time.monotonic() + delay if asked is not None else 0.0
        return delay


def _answer(response: httpx.Response, name: str) -> object:
    """Field `name` of the collector's JSON answer, or None when it has no such field."""
    try:
        answer = response.json()
    except ValueError:
        return None
    return answer.get(name) if isinstance(answer, dict) else None


def _acked_seq(response: httpx.Response) -> int | None:
    """The seq the collector says it stored up to, or None when its answer does not say."""
    seq = _answer(response, "acked_seq")
    return seq if type(seq) is int else None


def _problem(response: httpx.Response) -> str | None:
    """The alert kind the collector names for a refused batch, or None."""
    problem = _answer(response, "problem")
    return problem if isinstance(problem, str) else None
