"""The one place that wires each role's capabilities and runs them under the service loop.

workstation = usb_guard + netlock, door = access, cctv = cctv; retention has no agent loop (its
sweep is a command) and the collector runs its server. Every capability is built from its own
config section, started in order, watched by the systemd watchdog and stopped in reverse order
when the agent stops, whether by a signal, a failing part or another capability's refusal.
"""

from __future__ import annotations

import logging
import os
import threading

from floor_agent import service
from floor_agent.access.config import DoorConfig
from floor_agent.audit.agent import AuditAgent
from floor_agent.audit.capability import Capability
from floor_agent.cctv.config import CctvConfig
from floor_agent.collector.config import CollectorConfig
from floor_agent.roles.config import AgentConfig, WorkstationConfig

log = logging.getLogger("floor_agent")


def capabilities(config: AgentConfig, source: str | os.PathLike[str]) -> list[Capability]:
    """The capabilities the role's file turns on, in start order. Imported here, not at the
    top, so that one role's agent never loads another role's drivers."""
    found: list[Capability] = []
    if isinstance(config, WorkstationConfig):
        return _workstation(config, source)
    if isinstance(config, DoorConfig) and config.access.doors:
        from floor_agent.access.runner import AccessRunner

        found.append(AccessRunner(config))
    elif isinstance(config, CctvConfig) and config.cctv.cameras:
        from floor_agent.cctv.runner import CctvRunner

        found.append(CctvRunner(config))
    return found


def _workstation(config: WorkstationConfig, source: str | os.PathLike[str]
                 ) -> list[Capability]:
    """usb_guard and netlock; with a central policy, its bootstrap before them (what they
    start with: the cached policy, verified again) and its sync after them."""
    from floor_agent.netlock.runner import NetlockRunner
    from floor_agent.usb_guard.runner import UsbGuardRunner

    usb = UsbGuardRunner(config.usb_guard) if config.usb_guard.enabled else None
    netlock = NetlockRunner(config.netlock, source=source) if config.netlock.enabled else None
    parts: list[Capability] = [c for c in (usb, netlock) if c is not None]
    if not config.policy.enabled:
        return parts
    from floor_agent.ws_policy.runner import WorkstationPolicy

    policy = WorkstationPolicy(config.policy, config.audit, config.role, usb=usb,
                               netlock=netlock, source=source)
    return [policy.bootstrap, *parts, policy]


def stop_all(started: list[Capability]) -> None:
    """Stop in reverse start order; one that fails to stop does not keep the others running."""
    for capability in reversed(started):
        try:
            capability.stop()
        except Exception:
            log.exception("stopping %s failed", type(capability).__name__)


def run_agent(config: AgentConfig, source: str | os.PathLike[str]) -> int:
    """Run an agent role until SIGTERM/SIGINT: 0 when signalled, 1 when a part failed (systemd
    restarts the agent), 2 when the agent or a capability refuses to start."""
    from floor_agent.audit.keys import KeyFileError

    service.setup_logging(config.log_level)
    stop = threading.Event()
    signalled: list[int] = []
    service.install_shutdown_handlers(stop, signalled.append)
    try:
        agent = AuditAgent(config.audit, config.role)
    except (KeyFileError, OSError, ValueError) as exc:
        log.error("%s agent cannot start: %s", config.role, exc)
        return 2
    agent.start()
    started: list[Capability] = []
    for capability in capabilities(config, source):
        try:
            capability.start(agent, stop)
        except service.StartRefused as exc:
            log.error("%s: %s", exc.refusal, exc)
            stop_all(started)
            agent.stop(reason=exc.stop_reason)
            return 2
        started.append(capability)
    watchdog = service.Watchdog(
        stop, lambda: agent.healthy() and all(c.healthy() for c in started))
    service.ready(f"{config.role} agent {agent.agent_id} running")
    watchdog.start()
    log.info("%s agent %s started, reporting to %s (in that order)", config.role, agent.agent_id,
             ", ".join(config.audit.collector_url))
    stop.wait()
    service.stopping()
    stop_all(started)
    if not signalled:  # a component stopped us (e.g. udev events lost): exit non-zero so
        # systemd restarts the agent, which locks down and re-evaluates every device
        log.error("%s agent stopping because a component failed", config.role)
        agent.stop(reason="a component failed")
        return 1
    agent.stop()
    return 0


def run_collector(config: CollectorConfig) -> int:
    """The collector role: its server, with the security staff's dashboard installed on its
    app (the collector does not import the dashboard; this is where the two meet)."""
    from floor_agent.collector import server
    from floor_agent.dashboard.app import extension as dashboard

    section = config.collector
    return server.run(config, [dashboard(section.dashboard, section.stale_checkpoint_seconds)])
