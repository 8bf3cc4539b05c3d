"""netlock as a capability of the workstation agent: enforce the ruleset, then watch (started,
watched and stopped by floor_agent/roles/run.py).

A config whose allowlist cannot be built (unknown host, bad network) stops the agent: it could
neither enforce nor prove anything, and the refusal is a critical audit event. A ruleset that
fails to load is a critical event too, but the watcher still runs: its checks then show the
floor's real state, which is exactly what the security staff must see.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from floor_agent.audit.agent import AuditAgent
from floor_agent.audit.capability import CapabilityRunner
from floor_agent.netlock import firewall
from floor_agent.netlock.allowlist import Allowlist, AllowlistError, build
from floor_agent.netlock.config import NetlockConfig
from floor_agent.netlock.watch import SUBJECT, NetlockWatcher
from floor_agent.protocol.emit import Emit
from floor_agent.protocol.kinds.net import NetKind
from floor_agent.service import StartRefused

log = logging.getLogger(__name__)


class NetlockStartError(StartRefused):
    """netlock cannot start; the message names the config entry."""

    refusal = "netlock refuses to start"
    stop_reason = "netlock config invalid"


def enforce(config: NetlockConfig, allowlist: Allowlist, emit: Emit, *,
            source: str | os.PathLike[str] | None = None) -> firewall.ApplyResult:
    """Load the ruleset and record it (`net.enforced`); on failure record why
    (`net.enforce_failed`, critical) and raise the FirewallError. Shared by the agent's start
    and `floor-agent netlock apply`, both of which have built the allowlist already (its host
    names are resolved once)."""
    try:
        result = firewall.apply(config, allowlist, source=source)
    except firewall.FirewallError as e:
        emit(NetKind.ENFORCE_FAILED, SUBJECT, "critical", error=str(e), where=e.where,
             stderr=e.stderr[-2000:], table=config.table)
        raise
    emit(NetKind.ENFORCED, SUBJECT, "info", table=f"inet {config.table}",
         chains=result.verified, previous_tables=_tables(result.previous),
         source=None if source is None else os.fspath(source))
    return result


def _tables(ruleset: dict[str, Any]) -> list[str]:
    return [f"{t['table']['family']} {t['table']['name']}"
            for t in ruleset.get("nftables", []) if isinstance(t, dict) and "table" in t]


class NetlockRunner(CapabilityRunner[NetlockConfig, NetlockWatcher]):
    """netlock built from its config section (and the file it came from, named in the
    ruleset); started, watched and stopped by the agent."""

    def __init__(self, config: NetlockConfig, *,
                 source: str | os.PathLike[str] | None = None) -> None:
        super().__init__(config)
        self.source = source

    def launch(self, agent: AuditAgent, shutdown: threading.Event) -> NetlockWatcher:
        return _start(self.config, agent, shutdown, source=self.source)


def _start(config: NetlockConfig, agent: AuditAgent, shutdown: threading.Event, *,
           source: str | os.PathLike[str] | None = None) -> NetlockWatcher:
    try:
        allowlist = build(config)
    except AllowlistError as e:
        agent.emit(NetKind.CONFIG_INVALID, SUBJECT, "critical", error=str(e), where=e.where)
        raise NetlockStartError(str(e)) from None
    if config.enforce:
        try:
            enforce(config, allowlist, agent.emit, source=source)
        except firewall.FirewallError as e:  # recorded; the checks will show what is open
            log.error("netlock could not load its ruleset: %s", e)
    watcher = NetlockWatcher(config, allowlist, agent.emit)
    watcher.start(shutdown)
    failing = [v.id for v in watcher.verdicts.values() if not v.ok]
    log.info("netlock watching (%d checks, %s)", len(watcher.verdicts),
             "failing: " + ", ".join(failing) if failing else "all pass")
    return watcher
