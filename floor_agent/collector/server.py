"""Run the collector: TLS files, store, uvicorn over HTTPS, sd_notify and the watchdog.

A database that is away at start is waited for while serving (database_start.py); one that
answers no stops the start with its reason (exit status 2), as a missing TLS file does."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import os
import signal
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import uvicorn
from uvicorn.config import STARTUP_FAILURE

from floor_agent import service
from floor_agent.audit.agent import AuditAgent
from floor_agent.audit.forwarder import pinned_client
from floor_agent.collector import anchor, edge, policy_key, self_audit, state_lock, tls
from floor_agent.collector.api import AppExtension, create_app
from floor_agent.collector.api_policy import PolicyServing
from floor_agent.collector.api_snapshots import MAX_BYTES as SNAPSHOT_MAX_BYTES
from floor_agent.collector.config import CollectorConfig, CollectorSection
from floor_agent.collector.core import Collector
from floor_agent.collector.database_start import DatabaseStart, rebuild_latest_if_needed
from floor_agent.collector.database_watch import DatabaseWatch
from floor_agent.collector.notify_senders import SecretError, make_senders
from floor_agent.protocol.kinds.collector import CollectorKind
from floor_agent.store import open_store
from floor_agent.store.interface import Store, StoreError, StoreRefused, StoreUnavailable
from floor_agent.store.sqlite import SqliteStore

log = logging.getLogger(__name__)


class EdgeServer(uvicorn.Server):
    """uvicorn behind the edge (edge.py): its own accept loop admits per address before the
    TLS handshake and its protocol puts deadlines on the client; says READY only once the
    socket really listens (not at app startup)."""

    def __init__(self, config: uvicorn.Config, limits: edge.EdgeLimits,
                 context: ssl.SSLContext, on_listening: Callable[[], None],
                 warden: edge.Warden | None = None,
                 on_stopping: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self._limits = limits
        self._context = context
        self._on_listening = on_listening
        self._warden = warden
        self._on_stopping = on_stopping

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # the listener closes first: the watchdog must stop asking it (a stopping collector
        # is not an unhealthy one), then uvicorn drains the requests in flight
        if self._on_stopping is not None:
            self._on_stopping()
        await super().shutdown(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn's own startup, with EdgeListener in place of loop.create_server
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(STARTUP_FAILURE)
        config = self.config
        try:
            sock = edge.listen_socket(str(config.host), config.port, config.backlog)
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", config.host, config.port, exc)
            await self.lifespan.shutdown()
            sys.exit(STARTUP_FAILURE)
        protocol = functools.partial(edge.EdgeProtocol, config=config,
                                     server_state=self.server_state,
                                     app_state=self.lifespan.state)
        listener = edge.EdgeListener(sock, self._context, self._limits, protocol, self._warden)
        listener.start()
        self.servers = [listener]  # type: ignore[list-item]  # close/wait_closed as a Server
        self.started = True
        self._on_listening()


def health_url(section: CollectorSection) -> str:
    """The listener as seen from this host: loopback when it listens on every address."""
    host = section.listen_host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and address.is_unspecified:
        host = "::1" if address.version == 6 else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"https://{host}:{section.listen_port}"


def listener_healthy(url: str, ca: Path, server_name: str, timeout: float = 5.0) -> bool:
    """One real request to the collector's own listener, over TLS pinned to its CA: true only
    when the listener admits, handshakes and answers /healthz in time, so a collector that
    serves nobody (a wedged loop, a saturated listener) is not called healthy. /healthz makes
    no database call: a database outage is the database's, the collector answers agents 503
    meanwhile and a restart would change nothing (it reconnects by itself).
    server_name: a name the certificate carries (the URL may be loopback)."""
    try:
        with pinned_client(url, ca, timeout) as client:
            answer = client.get("/healthz", extensions={"sni_hostname": server_name})
            return answer.status_code == 200
    except httpx.HTTPError:
        return False


def shut_out_recorder(own: AuditAgent) -> Callable[[str, float, dict[str, int]], None]:
    """An address shut out by the edge, as a `collector.shut_out` event on the collector's own
    trail (info: the per-address alerts of what it sent already tell staff; this is the
    record of what the collector did about it). Written off the event loop: emit waits for
    the spool's disk write."""

    def record(address: str, seconds: float, reasons: dict[str, int]) -> None:
        asyncio.get_running_loop().run_in_executor(None, functools.partial(
            own.emit, CollectorKind.SHUT_OUT, edge.offender(address), "info",
            address=address, seconds=int(seconds), offences=reasons))

    return record


def init(config: CollectorConfig, force_certs: bool = False) -> tls.TlsFiles:
    """Create the CA, the server certificate and the store schema (idempotent)."""
    section = config.collector
    section.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(section.state_dir, 0o700)  # the CA key and (by default) the store live here
    files = tls.TlsFiles.in_dir(section.state_dir)
    if force_certs or not files.exist():
        tls.create(files, section.server_names, force=False)
    signer = anchor.create(config)  # the trust anchor, outside the store (collector/anchor.py)
    policy_key.create(section)  # signs the workstations' policy (collector/policy_key.py)
    store = open_store(section.resolved_database_url())
    try:
        self_audit.ensure_registered(store, config)
        signer.endorse_own(store, config)
    finally:
        store.close()
    return files


def collector_over(config: CollectorConfig, store: Store) -> Collector:
    section = config.collector
    return Collector(store, section.max_batch_events, section.ingest_processes,
                     section.max_clock_skew_seconds)


def open_collector(config: CollectorConfig) -> tuple[Store, Collector]:
    """The store, opened now, and a collector over it (for the admin commands)."""
    store = open_store(config.collector.resolved_database_url())
    rebuild_latest_if_needed(store)
    return store, collector_over(config, store)


def run(config: CollectorConfig, extensions: Sequence[AppExtension] = ()) -> int:
    """Serve until SIGTERM/SIGINT; READY=1 once the socket listens, then watchdog pings.
    extensions: installed on the app (the dashboard; `collector run` gives it)."""
    section = config.collector
    files = tls.TlsFiles.in_dir(section.state_dir)
    if not files.exist():
        log.error("no TLS files in %s: run 'floor-agent collector init' first",
                  files.ca_cert.parent)
        return 2
    try:  # one collector per state dir: two would forward one audit chain twice
        lock = state_lock.hold(section.state_dir)
    except state_lock.StateDirBusy as exc:
        log.error("%s", exc)
        return 2
    try:
        return _serve(config, files, extensions)
    finally:
        os.close(lock)


def _serve(config: CollectorConfig, files: tls.TlsFiles,
           extensions: Sequence[AppExtension]) -> int:
    section = config.collector
    try:
        signer = anchor.load(config)
    except anchor.AnchorError as exc:
        log.error("%s", exc)
        return 2
    try:  # the secrets are read now: one that cannot be read stops the start
        senders = make_senders(section.notifications)
    except SecretError as exc:
        log.error("notifications: %s", exc)
        return 2
    try:  # made when missing: a collector upgraded from a release before central policy;
        # never on a joined collector (no CA key): a key of its own would fork the site's policy
        signing_key = policy_key.create(section) if files.ca_key.exists() \
            else policy_key.load(section)
    except (policy_key.PolicyKeyError, OSError) as exc:
        log.error("%s", exc)
        return 2
    # PostgreSQL: nothing reached yet; the start below reaches it now or, when it is away,
    # once it answers (database_start.py), the collector serving meanwhile
    store = open_store(section.resolved_database_url(), wait=True)
    collector = collector_over(config, store)
    # The collector's own events (acknowledgements, logins, footage views, backups): spooled
    # from the start, delivered over its own listener once that listens.
    own = AuditAgent(self_audit.self_audit_config(config), self_audit.ROLE)
    start = DatabaseStart(config, store, collector, signer, own, senders)
    stop = threading.Event()
    exit_code = [0]
    server: EdgeServer | None = None

    def start_refused(exc: BaseException) -> None:
        """The database answered no, or the start failed for good: stop, with the reason."""
        log.error("cannot start: %s", " ".join(str(exc).split()) or exc.__class__.__name__)
        exit_code[0] = 2
        if server is not None:
            server.should_exit = True

    watch = DatabaseWatch(store)
    try:
        start.run()
    except StoreRefused as exc:
        start_refused(exc)
    except StoreUnavailable as exc:  # away: serve, and start once it answers
        watch.wait_to_start(exc, start.run, start_refused)
    except (StoreError, RuntimeError, OSError) as exc:  # refused, or not this collector's
        start_refused(exc)
    if exit_code[0]:
        own.spool.close()
        own.link.close()
        collector.close()
        store.close()
        return exit_code[0]

    url = health_url(section)

    def healthy() -> bool:
        return listener_healthy(url, files.ca_cert, section.server_names[0])

    watchdog = service.Watchdog(stop, healthy)

    def on_ready() -> None:
        service.ready(f"listening on https://{section.listen_host}:{section.listen_port}")
        watchdog.start()
        own.start()
        log.info("collector listening on https://%s:%d (store %s)", section.listen_host,
                 section.listen_port, section.resolved_database_url().split("@")[-1])

    # SQLite: one ingest thread when it parses in-process (see create_app); with worker
    # processes a few, so one inserts while others wait for their batch to be parsed.
    # PostgreSQL overlaps round trips.
    threads = 1 + 2 * section.ingest_processes if isinstance(store, SqliteStore) else None
    serving = PolicyServing(signing_key, section.policy.default_group,
                            self_audit.agent_id(config))
    app = create_app(collector, section.max_request_bytes, section.stale_checkpoint_seconds,
                     ingest_threads=threads, self_audit=own, extensions=extensions,
                     policy=serving, database=watch)
    app.state.policy = serving  # the dashboard's policy pages use it (default group, key)
    app.state.anchor_key = signer.key.public_key()  # the integrity page checks keys with it
    limits = edge.EdgeLimits.of(section, SNAPSHOT_MAX_BYTES)
    # every connection is a file descriptor; the store, spool and workers need some more
    edge.raise_open_files_limit(limits.max_connections + 256)
    warden = edge.Warden(edge.Offences.of(section.edge), shut_out_recorder(own))
    # No limit_concurrency: the edge bounds connections per address and in all (uvicorn's
    # single process-wide limit let idle connections answer everyone 503).
    server = EdgeServer(uvicorn.Config(
        edge.BodyGuard(app, limits, warden), host=section.listen_host,
        port=section.listen_port, log_level=config.log_level, access_log=False,
        timeout_graceful_shutdown=10, timeout_keep_alive=section.edge.idle_timeout_seconds,
        backlog=512,
    ), limits, tls.server_context(files), on_ready, warden, on_stopping=stop.set)
    # uvicorn handles SIGTERM/SIGINT itself, drains requests, then re-raises the signal to the
    # handler that was there before it: make that a no-op, so the cleanup below runs.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    try:
        server.run()
    finally:
        stop.set()
        service.stopping()
        start.stop()
        if own.forwarder.alive:
            own.stop(drain_seconds=0, reason="shutdown")
        else:
            own.spool.close()
            own.link.close()
        collector.close()
        store.close()
    return exit_code[0]
