"""Start usb_guard inside the workstation agent: rules from the config, audit through the agent.

A rules file that cannot be read or parsed stops the agent, but only after the root hubs are
locked (authorized_default 0) and the refusal is an audit event: the bus stays closed to new
devices, and the security staff see why.
"""

from __future__ import annotations

import logging
import threading

from floor_agent.audit.agent import AuditAgent
from floor_agent.usb_guard import sysfs
from floor_agent.usb_guard.config import UsbGuardConfig
from floor_agent.usb_guard.guard import UsbGuard
from floor_agent.usb_guard.rules import RuleSyntaxError, parse_rules_file

log = logging.getLogger(__name__)


class UsbGuardStartError(RuntimeError):
    """The guard cannot start; the message names the file, line and column where known."""


def start_usb_guard(config: UsbGuardConfig, agent: AuditAgent,
                    shutdown: threading.Event) -> UsbGuard:
    path = config.rules_file
    try:
        rules = parse_rules_file(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError, RuleSyntaxError) as exc:
        reason = str(exc) if isinstance(exc, RuleSyntaxError) else f"{path}: cannot read ({exc})"
        locked = sysfs.lock_down(config.sys_root)
        agent.emit("usb.rules_invalid", str(path), "critical", error=reason,
                   hubs_locked=[str(p) for p in locked.locked],
                   lockdown_failures=[str(e) for e in locked.failed])
        raise UsbGuardStartError(reason) from None
    guard = UsbGuard(rules, agent.emit, sys_root=str(config.sys_root))
    guard.start(shutdown)
    log.info("usb_guard enforcing %d rule(s) from %s", len(rules), path)
    return guard
