"""The collector's work, apart from HTTP: enroll agents, ingest batches, raise alerts.

api.py turns HTTP into calls here; the CLI calls the same functions for tokens and API keys,
so the rules (one-time tokens, hashed secrets, per-agent serialisation of ingest) live once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from typing import Any

from floor_agent.audit.keys import KeyFileError, public_key_from_b64
from floor_agent.collector import api_keys, ingest
from floor_agent.protocol.batch import BatchError
from floor_agent.protocol.event import AGENT_ID_RE, utc_timestamp
from floor_agent.store.interface import Store
from floor_agent.store.records import MAX_NOISE_SOURCES, AgentRecord, AlertDraft, EventRow

log = logging.getLogger(__name__)

AGENT_ROLES = ("workstation", "door", "cctv", "retention")
TOKEN_PREFIX = "fa-enroll-"
API_KEY_PREFIX = "fa-api-"


def secret_hash(secret: str) -> bytes:
    """Tokens and API keys are stored hashed: a stolen database opens nothing."""
    return hashlib.sha256(secret.encode()).digest()


def create_token(store: Store, role: str, ttl_seconds: int) -> str:
    if role not in AGENT_ROLES:
        raise ValueError(f"role: expected one of {', '.join(AGENT_ROLES)}, got {role!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(24)
    now = datetime.now(UTC)
    store.add_token(secret_hash(token), role, utc_timestamp(now),
                    utc_timestamp(now + timedelta(seconds=ttl_seconds)))
    return token


def create_api_key(store: Store, name: str, scopes: Iterable[str] = api_keys.SCOPES,
                   expires_at: str | None = None) -> str:
    """A new key with these scopes (api_keys.py), valid until expires_at (None: no expiry);
    shown once, stored hashed. Names are unique among unrevoked keys (revoke goes by name)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}", name):
        raise ValueError(f"name: expected 1-64 letters, digits, space or ._@-, got {name!r}")
    problem = api_keys.scopes_problem(scopes)
    if problem:
        raise ValueError(problem)
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    if not store.add_api_key(secret_hash(key), name, utc_timestamp(),
                             api_keys.stored_scopes(scopes), expires_at):
        raise ValueError(f"name: an unrevoked API key is named {name!r}; revoke it first or "
                         f"choose another name")
    return key


# A per-address noise alert is stored at once, then its further counts at most this often
# (the API flushes before it lists alerts); at most this many addresses held in memory.
NOISE_FLUSH_SECONDS = 0.5
MAX_NOISE_PENDING = 1024
AGENT_LOCKS = 64
STALE_SWEEP = "stale-checkpoints"  # the duty store.lead() elects one collector for


class EnrollError(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class IngestResult:
    status: int
    message: str
    acked_seq: int | None = None
    stored: int = 0
    # why an authenticated batch was refused (its alert kind), for the agent to act on: a
    # `clock_skew` refusal makes it stamp its next checkpoint by its clock again
    problem: str | None = None


def _die_with_parent() -> None:
    """In an ingest worker: end when the collector ends, however it ends.

    Not prctl(PR_SET_PDEATHSIG): that fires when the *thread* that spawned the worker ends,
    and the pool spawns from whichever request thread submits first; the server retires idle
    request threads, which killed healthy workers. A daemon thread watching the parent's pid
    ends the worker within a second of the collector's death instead."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


class Collector:
    """Ingest and enrollment over one store; safe to call from many threads."""

    def __init__(self, store: Store, max_batch_events: int = 5000,
                 prepare_processes: int = 0, max_clock_skew_seconds: int = 300) -> None:
        self.store = store
        self.max_batch_events = max_batch_events
        # how far an agent's signed times may run ahead of ours (collector.max_clock_skew_seconds)
        self.max_clock_skew = timedelta(seconds=max_clock_skew_seconds)
        self._noise_logged: dict[str, float] = {}  # fingerprint -> when it was last logged
        # per-address noise counted in memory between writes (see _noise): a flood of junk
        # batches costs a signature check each, not a write transaction each
        self._noise_guard = threading.Lock()
        self._noise_pending: dict[str, AlertDraft] = {}
        self._noise_written: dict[str, float] = {}  # fingerprint -> when it was last stored
        self._noise_timer: threading.Timer | None = None
        # one agent's batches are decided one at a time; a fixed set of locks (by hash of the
        # id), so ids named by junk batches cannot grow memory
        self._agent_locks = [threading.Lock() for _ in range(AGENT_LOCKS)]
        self.counters: Counter[str] = Counter()
        self.prepare_processes = prepare_processes
        self._pool: ProcessPoolExecutor | None = None
        self._pool_guard = threading.Lock()
        # Called after each committed batch with (agent_id, stored rows, received_at): the
        # dashboard's live feed. A listener must be quick and must not raise into ingest.
        self.listeners: list[Callable[[str, list[EventRow], str], None]] = []
        # Called with (alerts, now) once alerts are stored, wherever they are raised (a batch,
        # a refused batch, an enrollment, a stale checkpoint): the dashboard's live alerts.
        self.alert_listeners: list[Callable[[list[AlertDraft], str], None]] = []
        self.anchor: Any = None  # collector/anchor.Anchor: endorses enrolled keys (server.run)
        self._sweeping: bool | None = None  # whether this one led the last stale sweep
        # whether anyone watches the live feeds now (the dashboard's open browsers): a batch
        # another collector of the site stored is read back for them only then (site_feed.py)
        self.watching: list[Callable[[], bool]] = []

    def _alerts_stored(self, alerts: list[AlertDraft], now: str) -> None:
        """Tell the alert listeners; like listeners, they must be quick and never raise."""
        if not alerts:
            return
        for listener in self.alert_listeners:
            try:
                listener(alerts, now)
            except Exception:  # the alerts are stored whatever a viewer does
                log.exception("alert listener failed")

    def _add_alerts(self, alerts: list[AlertDraft], now: str) -> None:
        self.store.add_alerts(alerts, now)
        self._alerts_stored(alerts, now)

    def _prepare(self, body: bytes, now: str) -> ingest.Prepared:
        """Parse and check a batch; in a worker process when configured.

        Parsing is most of ingest's CPU and holds the GIL; in its own process it runs on the
        other core while this one inserts (measured in bench/collector_ingest.py). A worker
        that died is replaced, and that batch is prepared here instead.
        """
        if self.prepare_processes <= 0:
            return ingest.prepare(body, self.max_batch_events, now)
        with self._pool_guard:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.prepare_processes,
                                                 mp_context=get_context("spawn"),
                                                 initializer=_die_with_parent)
            pool = self._pool
        try:
            return pool.submit(ingest.prepare, body, self.max_batch_events, now).result()
        except BrokenProcessPool:
            log.error("ingest worker process died; starting a new one")
            with self._pool_guard:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False)
            return ingest.prepare(body, self.max_batch_events, now)

    def close(self) -> None:
        self.flush_noise()
        with self._pool_guard:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None

    def _lock_for(self, agent_id: str) -> threading.Lock:
        return self._agent_locks[hash(agent_id) % AGENT_LOCKS]

    def enroll(self, token: str, agent_id: str, role: str, public_key: str,
               hostname: str, source: str = "local") -> None:
        """Register an agent's public key against a one-time token of the same role.

        source: the client's address, which a refused token is counted against."""
        if not isinstance(agent_id, str) or not AGENT_ID_RE.match(agent_id):
            raise EnrollError(422, "agent_id: expected 1-64 of [A-Za-z0-9._-]")
        if role not in AGENT_ROLES:
            raise EnrollError(422, f"role: expected one of {', '.join(AGENT_ROLES)}")
        try:
            public_key_from_b64(public_key)
        except KeyFileError as exc:
            raise EnrollError(422, str(exc)) from None
        now = utc_timestamp()
        token_role = self.store.consume_token(secret_hash(token), now, agent_id)
        if token_role is None:  # anyone can name any id: counted against the sender
            self._noise("unknown_agent", source, agent_id, "enrollment with an unknown, used "
                        "or expired token refused", now)
            raise EnrollError(401, "token: unknown, already used or expired")
        if token_role != role:
            raise EnrollError(403, f"token is for role {token_role!r}, not {role!r}")
        if not self.store.add_agent(agent_id, role, public_key, hostname[:253], now):
            # taken, or a look-alike of a taken id (RT-WS-01 / rt-ws-01): one host, one id
            existing = self.store.enrolled_id_like(agent_id) or agent_id
            raise EnrollError(409, f"agent_id {agent_id!r} is already enrolled as "
                                   f"{existing!r} (ids differing only in case are one id); "
                                   f"remove it before enrolling again")
        if self.anchor is not None:  # the key, as registered, signed from outside the store
            self.anchor.endorse_enrolled(self.store, agent_id, role, public_key, now)
        log.info("enrolled agent %s (%s) from %s", agent_id, role, hostname)

    def _noise(self, kind: str, source: str, claimed: str | None, reason: str,
               now: str) -> None:
        """Count an unauthenticated failure against its source address: one open alert per
        (kind, address) whose count grows, never an agent's alert or state. Logged at most
        once a minute per alert, so a flood cannot fill the log either."""
        alert = ingest.noise_alert(kind, source, claimed, reason)
        self.counters[f"alert_{kind}"] += 1
        moment = time.monotonic()
        key = alert.fingerprint
        store_now = True
        with self._noise_guard:
            held = self._noise_pending.pop(key, None)
            if held is not None:
                alert = replace(alert, count=held.count + 1)
            if (moment - self._noise_written.get(key, float("-inf")) < NOISE_FLUSH_SECONDS
                    and len(self._noise_pending) < MAX_NOISE_PENDING):
                # stored moments ago: count it here, stored within NOISE_FLUSH_SECONDS
                self._noise_pending[key] = alert
                if self._noise_timer is None:
                    self._noise_timer = threading.Timer(NOISE_FLUSH_SECONDS, self.flush_noise)
                    self._noise_timer.daemon = True
                    self._noise_timer.start()
                store_now = False
            else:
                if len(self._noise_written) >= MAX_NOISE_PENDING:
                    self._noise_written.clear()
                self._noise_written[key] = moment
        if store_now:
            self._add_alerts([alert], now)
        if moment - self._noise_logged.get(alert.fingerprint, -60.0) >= 60.0:
            if len(self._noise_logged) > 4 * MAX_NOISE_SOURCES:
                self._noise_logged.clear()
            self._noise_logged[alert.fingerprint] = moment
            log.warning("alert %s (unauthenticated, counted per address): %s", kind,
                        alert.detail)

    def flush_noise(self) -> None:
        """Store the per-address counts held in memory (timer, readers of alerts, close)."""
        with self._noise_guard:
            pending = list(self._noise_pending.values())
            self._noise_pending.clear()
            if self._noise_timer is not None:
                self._noise_timer.cancel()
                self._noise_timer = None
            moment = time.monotonic()
            for alert in pending:
                self._noise_written[alert.fingerprint] = moment
        if pending:
            self._add_alerts(pending, utc_timestamp())

    def ingest(self, body: bytes, source: str = "local") -> IngestResult:
        """Verify and store one batch; every anomaly becomes a stored alert.

        source: the client's address. What fails before the batch is authenticated (it cannot
        be read, names no enrolled agent, or its signature does not verify) is counted against
        it and changes nothing of any agent.
        """
        moment = datetime.now(UTC)
        now = utc_timestamp(moment)
        try:
            batch = self._prepare(body, now)
        except BatchError as exc:
            self.counters["batch_malformed"] += 1
            self._noise("malformed_batch", source, exc.agent_id, ingest.error_reason(exc), now)
            return IngestResult(exc.status, str(exc))
        clock = ingest.Clock(moment, self.max_clock_skew)

        def decide(agent: AgentRecord | None, stored: Mapping[int, bytes],
                   last_stored: int | None) -> ingest.Plan:
            return ingest.plan(batch, agent, stored, last_stored=last_stored, clock=clock)

        # The store reads, decides and writes in one transaction under the agent's lock (its
        # row, across collectors); this lock only keeps one process's threads from queueing
        # on that row.
        with self._lock_for(batch.agent_id):
            plan = self.store.ingest_batch(batch.agent_id, ingest.needed_seqs(batch),
                                           batch.checkpoint, now, decide, batch.rows)
        if plan.noise is not None:
            self.counters["batch_rejected"] += 1
            self._noise(plan.noise, source, batch.agent_id, plan.message, now)
            return IngestResult(plan.status, plan.message)
        for alert in plan.alerts:
            self.counters[f"alert_{alert.kind}"] += 1
            log.warning("alert %s on %s: %s", alert.kind, alert.agent_id, alert.detail)
        if not plan.accepted:
            self.counters["batch_rejected"] += 1
            self._alerts_stored(plan.alerts, now)  # stored with the decision
            return IngestResult(plan.status, plan.message,
                                problem=plan.alerts[0].kind if plan.alerts else None)
        if plan.duplicate:
            self.counters["batch_duplicate"] += 1
            return IngestResult(200, plan.message, plan.acked_seq, 0)
        self.counters["batch_accepted"] += 1
        self.counters["events_stored"] += len(plan.store)
        for listener in self.listeners:
            try:
                listener(batch.agent_id, plan.store, now)
            except Exception:  # the batch is stored and acknowledged whatever a viewer does
                log.exception("ingest listener failed")
        self._alerts_stored(plan.alerts, now)
        return IngestResult(200, plan.message, plan.acked_seq, len(plan.store))

    def flag_stale_checkpoints(self, stale_seconds: int) -> list[str]:
        """Raise stale_checkpoint for agents silent too long: their tail may be cut off.

        One collector of a site sweeps (store.lead: the one holding the duty's lock, taken
        over when it dies); the others return [] without reading, so an alert's count is
        one per sweep of the site, not one per collector."""
        leading = self.store.lead(STALE_SWEEP)
        if leading != self._sweeping:
            self._sweeping = leading
            log.info("stale checkpoint sweep: %s", "this collector leads it" if leading
                     else "another collector of the site leads it")
        if not leading:
            return []
        now = datetime.now(UTC)
        older = utc_timestamp(now - timedelta(seconds=stale_seconds))
        stale = self.store.agents_with_stale_checkpoint(older)
        alerts = [AlertDraft("stale_checkpoint", "critical", agent_id,
                             f"no signed checkpoint since {last or 'enrollment'} "
                             f"(more than {stale_seconds} s): agent down, cut off, or its "
                             f"tail withheld") for agent_id, last in stale]
        self._add_alerts(alerts, utc_timestamp(now))
        return [agent_id for agent_id, _ in stale]
