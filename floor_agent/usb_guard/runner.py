"""usb_guard as a capability of the workstation agent: rules from the config, audit through
the agent, stopped with the agent (floor_agent/roles/run.py starts, watches and stops it).

A rules file that cannot be read or parsed stops the agent, but only after the root hubs are
locked (authorized_default 0) and the refusal is an audit event: the bus stays closed to new
devices, and the security staff see why.

The rules file is the bootstrap: when the workstation enforces a central policy
(floor_agent/ws_policy/), its verified rules are handed in as `rules` before the guard starts
(so no device is ever judged under the bootstrap first), and later ones through
`UsbGuard.replace_rules`.
"""

from __future__ import annotations

import logging
import threading

from floor_agent.audit.agent import AuditAgent
from floor_agent.audit.capability import CapabilityRunner
from floor_agent.protocol.kinds.usb import UsbKind
from floor_agent.service import StartRefused
from floor_agent.usb_guard import sysfs
from floor_agent.usb_guard.config import UsbGuardConfig
from floor_agent.usb_guard.guard import UsbGuard
from floor_agent.usb_guard.rule import Rule
from floor_agent.usb_guard.rule_parser import RuleSyntaxError, parse_rules_file

log = logging.getLogger(__name__)


class UsbGuardStartError(StartRefused):
    """The guard cannot start; the message names the file, line and column where known."""

    refusal = "usb_guard refuses to start, the bus stays locked"
    stop_reason = "usb_guard rules invalid"


class UsbGuardRunner(CapabilityRunner[UsbGuardConfig, UsbGuard]):
    """The guard built from its config section; started, watched and stopped by the agent."""

    def __init__(self, config: UsbGuardConfig) -> None:
        super().__init__(config)
        # (parsed rules, where they came from) to start with instead of the rules file: set by
        # the workstation's policy before the guard starts
        self.rules: tuple[list[Rule], str] | None = None

    def launch(self, agent: AuditAgent, shutdown: threading.Event) -> UsbGuard:
        if self.rules is not None:
            rules, source = self.rules
            guard = UsbGuard(rules, agent.emit, sys_root=str(self.config.sys_root))
            guard.start(shutdown)
            log.info("usb_guard enforcing %d rule(s) from %s", len(rules), source)
            return guard
        return _start(self.config, agent, shutdown)


def _start(config: UsbGuardConfig, agent: AuditAgent, shutdown: threading.Event) -> UsbGuard:
    path = config.rules_file
    try:
        rules = parse_rules_file(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError, RuleSyntaxError) as exc:
        reason = str(exc) if isinstance(exc, RuleSyntaxError) else f"{path}: cannot read ({exc})"
        locked = sysfs.lock_down(config.sys_root)
        agent.emit(UsbKind.RULES_INVALID, str(path), "critical", error=reason,
                   hubs_locked=[str(p) for p in locked.locked],
                   lockdown_failures=[str(e) for e in locked.failed])
        raise UsbGuardStartError(reason) from None
    guard = UsbGuard(rules, agent.emit, sys_root=str(config.sys_root))
    guard.start(shutdown)
    log.info("usb_guard enforcing %d rule(s) from %s", len(rules), path)
    return guard
