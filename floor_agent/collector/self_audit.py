"""The collector's own audit trail: what people and timers do on the collector.

Acknowledging an alert, logging in to the dashboard, viewing footage, a backup or a retention
receipt recorded on this host: each is an audit event with who and when. The collector is an
agent like any other for this (Ed25519 key, spool, hash chain, signed checkpoints), registered
in its own store under role "collector" and delivered over its own HTTPS endpoint, so its
events are verified by exactly the code that verifies everyone else's.

`collector run` owns the forwarder (server.run); other processes on the host
(`collector backup`, timers) only append to the same spool with `open_writer`, and the running
collector delivers what they wrote. SQLite's write lock keeps the chain linear across processes.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from floor_agent.audit.agent import KEY_FILE
from floor_agent.audit.keys import load_or_create_private_key, public_key_b64
from floor_agent.audit.spool import Spool, open_spool
from floor_agent.collector.config import CollectorConfig
from floor_agent.collector.tls import TlsFiles
from floor_agent.config.audit import AuditClientConfig
from floor_agent.protocol.event import utc_timestamp
from floor_agent.store.interface import Store

ROLE = "collector"
ID_FILE = "collector-id"  # in state_dir, written by 'collector join-request'


class OwnAudit(Protocol):
    """The collector's own audit trail (AuditAgent or Spool): emit returns once durable."""

    def emit(self, kind: str, subject: str, severity: str = "info", **data: Any) -> Any: ...


def self_audit_config(config: CollectorConfig) -> AuditClientConfig:
    """Audit client settings pointing the collector's own agent at its own listener."""
    section = config.collector
    host = section.listen_host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1" if "127.0.0.1" in section.server_names else section.server_names[0]
    if ":" in host:
        host = f"[{host}]"
    return AuditClientConfig(
        agent_id=section.collector_id or joined_id(section.state_dir),
        state_dir=section.state_dir / "self-audit",
        collector_url=(f"https://{host}:{section.listen_port}",),
        ca_cert=TlsFiles.in_dir(section.state_dir).ca_cert,
        heartbeat_seconds=5,
    )


def joined_id(state_dir: Path) -> str | None:
    """The id 'collector join-request' chose for a second collector (state_dir/collector-id):
    two collectors on one host name would otherwise both be "<host>-collector" and the store
    would refuse the second key."""
    try:
        text = (state_dir / ID_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


def agent_id(config: CollectorConfig) -> str:
    return self_audit_config(config).resolved_agent_id(ROLE)


def ensure_registered(store: Store, config: CollectorConfig) -> str:
    """Create the collector's key (0600) and register it in the store; idempotent.

    Refuses to go on when the store holds a different key for this id: that is either a
    restored store from another collector or a replaced key, and an auditor must see it.
    """
    audit = self_audit_config(config)
    state: Path = audit.state_dir
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_path = state / KEY_FILE
    key = load_or_create_private_key(key_path)
    ident = audit.resolved_agent_id(ROLE)
    public = public_key_b64(key)
    known = store.get_agent(ident)
    if known is None:
        store.add_agent(ident, ROLE, public, socket.gethostname()[:253], utc_timestamp())
    elif known.public_key != public:
        raise RuntimeError(f"{key_path}: the store holds another public key for {ident!r}; "
                           f"the collector's own audit key was replaced or the store belongs "
                           f"to another collector")
    return ident


def open_writer(config: CollectorConfig) -> Spool:
    """Append-only access for other processes on the collector host (backup, timers)."""
    return open_spool(self_audit_config(config), ROLE)


def run_audited(args: argparse.Namespace,
                action: Callable[[argparse.Namespace, Store, OwnAudit, str], int]) -> int:
    """For `collector user` and `collector apikey`: open the store and the collector's own
    trail, run action(args, store, own, now); a refused change (ValueError) is an error message
    and exit status 2."""
    from floor_agent.config import load_role
    from floor_agent.store import open_store

    config = load_role(args.config, CollectorConfig)
    store = open_store(config.collector.resolved_database_url())
    try:
        ensure_registered(store, config)
        own = open_writer(config)
        try:
            return action(args, store, own, utc_timestamp())
        except ValueError as exc:  # user_admin.UserError, a refused API key change
            print(f"error: {exc}", file=sys.stderr)
            return 2
        finally:
            own.close()
    finally:
        store.close()
