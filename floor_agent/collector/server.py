"""Run the collector: TLS files, store, uvicorn over HTTPS, sd_notify and the watchdog."""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable

import uvicorn

from floor_agent import service
from floor_agent.audit.agent import AuditAgent
from floor_agent.collector import self_audit, tls
from floor_agent.collector.api import create_app
from floor_agent.collector.core import Collector
from floor_agent.collector.store import Store, open_store
from floor_agent.collector.store_sqlite import SqliteStore
from floor_agent.config import CollectorConfig

log = logging.getLogger(__name__)


class NotifyingServer(uvicorn.Server):
    """uvicorn that says READY only once its socket really listens (not at app startup)."""

    def __init__(self, config: uvicorn.Config, on_listening: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_listening = on_listening

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_listening()


def init(config: CollectorConfig, force_certs: bool = False) -> tls.TlsFiles:
    """Create the CA, the server certificate and the store schema (idempotent)."""
    section = config.collector
    files = tls.TlsFiles.in_dir(section.state_dir)
    if force_certs or not files.exist():
        tls.create(files, section.server_names, force=False)
    store = open_store(section.resolved_database_url())
    try:
        self_audit.ensure_registered(store, config)
    finally:
        store.close()
    return files


def open_collector(config: CollectorConfig) -> tuple[Store, Collector]:
    store = open_store(config.collector.resolved_database_url())
    if not store.latest_states() and store.stats()["events"]:
        # a store from before the dashboard: the overview's state comes from the newest state
        # event per agent and topic, kept at ingest from now on; fill it once from the events
        rows = store.rebuild_latest()
        log.info("dashboard state rebuilt from the stored events: %d entries", rows)
    return store, Collector(store, config.collector.max_batch_events,
                            config.collector.ingest_processes)


def run(config: CollectorConfig) -> int:
    """Serve until SIGTERM/SIGINT; READY=1 once the socket listens, then watchdog pings."""
    section = config.collector
    files = tls.TlsFiles.in_dir(section.state_dir)
    if not files.exist():
        log.error("no TLS files in %s: run 'floor-agent collector init' first",
                  files.ca_cert.parent)
        return 2
    store, collector = open_collector(config)
    self_audit.ensure_registered(store, config)
    # The collector's own events (acknowledgements, logins, footage views, backups): spooled
    # from the start, delivered over its own listener once that listens.
    own = AuditAgent(self_audit.self_audit_config(config), self_audit.ROLE)
    stop = threading.Event()

    def healthy() -> bool:
        store.stats()
        return True

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
    app = create_app(collector, section.max_request_bytes, section.stale_checkpoint_seconds,
                     ingest_threads=threads, self_audit=own, dashboard=section.dashboard)
    server = NotifyingServer(uvicorn.Config(
        app, host=section.listen_host, port=section.listen_port,
        ssl_certfile=str(files.server_cert), ssl_keyfile=str(files.server_key),
        log_level=config.log_level, access_log=False, timeout_graceful_shutdown=10,
        limit_concurrency=1024, backlog=512,
    ), on_ready)
    # uvicorn handles SIGTERM/SIGINT itself, drains requests, then re-raises the signal to the
    # handler that was there before it: make that a no-op, so the cleanup below runs.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    try:
        server.run()
    finally:
        stop.set()
        service.stopping()
        if own.forwarder.alive:
            own.stop(drain_seconds=0, reason="shutdown")
        else:
            own.spool.close()
            own.client.close()
        collector.close()
        store.close()
    return 0
