"""The enforcement loop: udev events in, policy decisions applied through sysfs, audit out.

The imperative shell around the pure `policy.decide`. Start order closes the zero window (see
monitor.py): listen first, lock down, evaluate the devices already present (parents first),
then handle events. Everything here is idempotent because a device plugged during start is seen
twice (present and added). Fail closed: nothing here writes 1 to a root hub default; a device is
turned on only after its decision says so, and an interface only when the decision allows its
class; a failed write is an audit alarm, never a retry with looser settings.

The event data and subject are built by pure helpers (`decision_event`, `failure_event`,
`subject_of`, `interface_class`) so they are tested without udev.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyudev

from floor_agent.protocol.emit import Emit
from floor_agent.protocol.kinds.usb import UsbKind
from floor_agent.usb_guard import sysfs
from floor_agent.usb_guard.device import UsbDevice, device_from_udev
from floor_agent.usb_guard.monitor import UdevMonitor, present_devices
from floor_agent.usb_guard.policy import IMPLICIT, Decision, decide
from floor_agent.usb_guard.rule import Rule
from floor_agent.usb_guard.rule_set import ConditionContext, index_rules

log = logging.getLogger(__name__)


# target -> (event kind, severity)
EVENT_KINDS: Mapping[str, tuple[str, str]] = {
    "allow": (UsbKind.ALLOWED, "info"),
    "partial": (UsbKind.PARTIAL, "notice"),
    "block": (UsbKind.BLOCKED, "warning"),
    "reject": (UsbKind.REJECTED, "critical"),
}
INTERFACE_ATTRIBUTES = ("bInterfaceClass", "bInterfaceSubClass", "bInterfaceProtocol")


# --- pure helpers ---------------------------------------------------------------------------

def subject_of(device: UsbDevice) -> str:
    """What a human recognises in an alert list: "usb 1-2 0781:5567 SanDisk Cruzer Blade"."""
    words = ["usb", device.port or "?", device.id, device.manufacturer, device.name]
    return " ".join(w for w in words if w)


def device_data(device: UsbDevice) -> dict[str, Any]:
    """The identity fields an auditor needs to recognise the device or write a rule for it."""
    return {
        "id": device.id, "name": device.name, "manufacturer": device.manufacturer,
        "serial": device.serial, "port": device.port, "interfaces": list(device.interfaces),
        "hash": device.hash, "parent_hash": device.parent_hash,
        "connect_type": device.connect_type, "problems": list(device.problems),
    }


def decision_event(device: UsbDevice, decision: Decision,
                   action: str) -> tuple[str, str, dict[str, Any]]:
    """(kind, severity, data) of the one audit event a decision makes; `action` says what was
    done to the device ("authorized", "deauthorized", "removed", or "failed: ...")."""
    kind, severity = EVENT_KINDS.get(decision.target, EVENT_KINDS["block"])
    data = device_data(device)
    data.update(rule=decision.rule or IMPLICIT, reason=decision.reason,
                allowed_interfaces=list(decision.allowed_interfaces),
                blocked_interfaces=list(decision.blocked_interfaces), action=action)
    return kind, severity, data


def failure_event(device: UsbDevice, target: str,
                  error: sysfs.SysfsError) -> tuple[str, str, dict[str, Any]]:
    """(kind, severity, data) of a failed sysfs write: the path and errno an operator needs."""
    data = {
        "id": device.id, "port": device.port, "hash": device.hash, "target": target,
        "operation": error.operation, "path": error.path, "errno": error.errno,
        "errno_name": errno.errorcode.get(error.errno) if error.errno is not None else None,
        "error": str(error),
    }
    return UsbKind.ENFORCEMENT_FAILED, "critical", data


def interface_class(attrs: Mapping[str, str]) -> str | None:
    """"cc:ss:pp" from an interface's sysfs class attributes (hex text), as decisions spell
    interfaces; None when one is missing or not a hex byte (then nothing can allow it)."""
    parts = []
    for name in INTERFACE_ATTRIBUTES:
        value = attrs.get(name, "").strip()
        if not 1 <= len(value) <= 2:
            return None
        try:
            parts.append(f"{int(value, 16):02x}")
        except ValueError:
            return None
    return ":".join(parts)


def interface_allowed(decision: Decision, klass: str | None) -> bool:
    """Whether a decision turns an interface of this class on: every interface of an allowed
    device, only the allowed classes of a partial one, none otherwise."""
    if decision.target == "allow":
        return True
    return decision.target == "partial" and klass is not None \
        and klass in decision.allowed_interfaces


# --- the loop -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Enforced:
    """A device's decision as applied; kept per sys_path until the device is removed."""

    device: UsbDevice
    decision: Decision
    action: str


class UsbGuard:
    """Applies the rules to every USB device, present at start or plugged later.

    `emit` has AuditAgent.emit's signature; `sys_root` is where lock down finds the root hubs
    (device paths come from udev); `clock` gives the local time for localtime() conditions.
    """

    def __init__(self, rules: list[Rule], emit: Emit, sys_root: str = sysfs.DEFAULT_SYS_ROOT,
                 context: pyudev.Context | None = None,
                 clock: Callable[[], datetime] = datetime.now) -> None:
        self.rules = list(rules)
        self._index = index_rules(self.rules)  # same decisions, fewer rules tried per device
        self.emit = emit
        self.sys_root = sys_root
        self.context = context
        self.clock = clock  # local time, for localtime() conditions
        self.monitor: UdevMonitor | None = None
        self.thread: threading.Thread | None = None
        self.lockdown: sysfs.LockDown | None = None
        self._enforced: dict[str, Enforced] = {}
        self._lock = threading.Lock()
        # held while a device is judged and enforced (the udev thread) and while the rules are
        # replaced and every device judged again (replace_rules): one judge at a time
        self._judging = threading.RLock()

    # -- lifecycle --

    def start(self, shutdown: threading.Event) -> threading.Thread:
        """Listen, lock down, evaluate present devices, then handle events in a thread until
        `shutdown` is set. A failed lock down is a critical event; the guard keeps going and
        blocks what the rules block (never restoring authorized_default=1)."""
        if self.monitor is not None:
            raise RuntimeError("UsbGuard already started")
        if self.context is None:
            self.context = pyudev.Context()
        self.monitor = UdevMonitor(self.context)  # first: nothing plugged from now is missed
        self.lockdown = sysfs.lock_down(self.sys_root)
        if self.lockdown.ok:
            self.emit(UsbKind.LOCKED_DOWN, "usb", "info", hubs=self.lockdown.locked,
                      changed=self.lockdown.changed)
        else:
            self.emit(UsbKind.LOCKDOWN_FAILED, "usb", "critical", hubs=self.lockdown.locked,
                      changed=self.lockdown.changed,
                      failures=[{"path": e.path, "errno": e.errno, "error": str(e)}
                                for e in self.lockdown.failed])
        for device in present_devices(self.context):  # parents before children
            try:
                self.handle("add", device, present=True)
            except Exception:  # one odd device must not keep the others unevaluated
                log.exception("usb guard: evaluating present device %s failed", device.sys_path)
        self.thread = self.monitor.start(self.handle, shutdown)
        return self.thread

    def stop(self, timeout: float = 5.0) -> None:
        """End the event thread, whether or not the agent's shutdown was set (a capability
        started after the guard may have refused). Devices stay as the guard left them: the
        root hubs locked down, every decision applied."""
        if self.monitor is not None:
            self.monitor.stop(timeout)

    def healthy(self) -> bool:
        """For the watchdog: the event thread runs and its event source has not failed."""
        return (self.monitor is not None and self.thread is not None
                and self.thread.is_alive() and self.monitor.error is None)

    def decisions(self) -> dict[str, Enforced]:
        """The current decision per device sys_path (a copy)."""
        with self._lock:
            return dict(self._enforced)

    # -- events --

    def handle(self, action: str, device: pyudev.Device, *, present: bool = False) -> None:
        """One udev event; present devices at start come as "add" with `present=True`."""
        with self._judging:
            self._handle(action, device, present=present)

    def _handle(self, action: str, device: pyudev.Device, *, present: bool) -> None:
        if device.device_type == "usb_interface":
            if action in ("add", "bind"):
                self._interface(device.sys_path)
            return
        if action == "remove":
            with self._lock:
                self._enforced.pop(device.sys_path, None)
            return
        if action == "add" and not present:
            self._hold(device.sys_path)
        self.evaluate(device)  # add, and bind/change too: a missed add must not leave it unjudged

    def _hold(self, path: str) -> None:
        """Deauthorize a newly plugged device before judging it: fail closed first, decide
        after. Behind a locked hub the kernel has it off already and this write changes
        nothing; behind a hub that could not be locked (or a kernel without
        authorized_default) it closes the window in which the device would be on while its
        identity is read and the rules are matched. An allowed device is turned on by its
        decision right after. Root hubs are never held (that would cut every keyboard), nor
        a device already judged at this path (a repeated add, e.g. seen present and added)."""
        if sysfs.is_root_hub(path):
            return
        with self._lock:
            if path in self._enforced:
                return
        try:
            sysfs.authorize(path, False)
        except sysfs.SysfsError as e:  # the decision's own write reports the failure
            log.warning("usb guard: holding new device %s failed: %s", path, e)

    def evaluate(self, udev_device: pyudev.Device) -> Enforced | None:
        """Decide and enforce for one device. A repeated event for the same device (same
        identity at the same path, still in the state its decision left it) changes nothing and
        emits nothing; if its state differs (a remove was missed and it came back authorized
        from a hub that could not be locked), it is judged again."""
        decisions = self.decisions()
        parent = decisions.get(os.path.dirname(udev_device.sys_path.rstrip("/")))
        device = device_from_udev(udev_device, parent.device.hash if parent else None)
        known = decisions.get(device.sys_path)
        if known is not None and known.device.hash == device.hash \
                and self._still_enforced(known):
            return None
        decision = self._decide(device)
        enforced = self._enforce(device, decision)
        kind, severity, data = decision_event(device, decision, enforced.action)
        self.emit(kind, subject_of(device), severity, **data)
        return enforced

    # -- a new rule set --

    def replace_rules(self, rules: list[Rule]) -> list[Enforced]:
        """Enforce `rules` from now on and judge every known device again under them, parents
        first; returns the devices whose decision changed (each also an audit event, as on
        plug). A device allowed before and blocked now is deauthorized, one blocked before and
        allowed now is authorized (its interfaces as the new decision allows). Thread-safe
        against the udev event thread: no event is judged while the rules change, and an event
        waiting meanwhile is judged under the new rules."""
        index = index_rules(list(rules))  # before taking the lock: nothing changes on failure
        changed: list[Enforced] = []
        with self._judging:
            self.rules = list(rules)
            self._index = index
            known = sorted(self.decisions().values(),
                           key=lambda e: (e.device.sys_path.count("/"), e.device.sys_path))
            for before in known:
                try:
                    after = self._rejudge(before)
                except Exception:  # one odd device must not keep the others unjudged
                    log.exception("usb guard: judging %s again failed", before.device.sys_path)
                    continue
                if after is not None:
                    changed.append(after)
        return changed

    def _rejudge(self, before: Enforced) -> Enforced | None:
        """One known device under the current rules; None when its decision is the same."""
        device = before.device
        if before.action == "removed" or device.sys_path not in self.decisions():
            return None  # on its way out
        decision = self._decide(device)
        old = before.decision
        if (decision.target, decision.allowed_interfaces) == (old.target,
                                                              old.allowed_interfaces):
            if decision.rule != old.rule or decision.reason != old.reason:
                with self._lock:  # same effect, another rule: remember which one decides now
                    self._enforced[device.sys_path] = Enforced(device, decision, before.action)
            return None
        enforced = self._enforce(device, decision)
        kind, severity, data = decision_event(device, decision, enforced.action)
        self.emit(kind, subject_of(device), severity, **data)
        return enforced

    def _decide(self, device: UsbDevice) -> Decision:
        try:
            return decide(self._index, device, ConditionContext(now=self.clock()))
        except Exception as e:  # a rule that cannot be evaluated: fail closed
            log.exception("usb guard: deciding on %s failed", device.sys_path)
            return Decision("block", IMPLICIT, blocked_interfaces=device.interfaces,
                            reason=f"evaluation failed, fail closed: {e}")

    # -- enforcement --

    @staticmethod
    def _still_enforced(known: Enforced) -> bool:
        """Whether the device's `authorized` still reads as its decision left it."""
        if known.action.startswith("failed"):
            return True  # already alarmed; the next remove/add judges it again
        try:
            return sysfs.read_authorized(known.device.sys_path) == \
                known.decision.authorize_device
        except sysfs.SysfsError:
            return known.action == "removed"  # gone, as the decision wanted

    def _enforce(self, device: UsbDevice, decision: Decision) -> Enforced:
        """Apply a decision and remember it, so later interface events of the device find it
        (events are handled one at a time, in order, so they come after this)."""
        path = device.sys_path
        try:
            if decision.target == "reject":
                action = sysfs.reject(path)
            elif decision.authorize_device:
                sysfs.authorize(path, True)
                action = "authorized"
            else:
                sysfs.authorize(path, False)
                action = "deauthorized"
        except sysfs.SysfsError as e:
            # authorizing failed: the device stays off, nothing more to do. Deauthorizing or
            # removing failed: the device may be on, and this event is the alarm.
            self._failed(device, decision.target, e)
            action = f"failed: {e.operation} {e.path}"
            enforced = Enforced(device, decision, action)
            with self._lock:
                self._enforced[path] = enforced
            return enforced
        enforced = Enforced(device, decision, action)
        with self._lock:
            self._enforced[path] = enforced
        if decision.authorize_device:
            for interface in self._interfaces_of(path):  # configured already (present devices)
                self._interface(interface)
        return enforced

    def _interfaces_of(self, device_path: str) -> list[str]:
        """The device's interface directories now in sysfs ("1-2:1.0" under "1-2")."""
        name = os.path.basename(device_path)
        try:
            entries = sorted(os.listdir(device_path))
        except OSError:
            return []
        return [os.path.join(device_path, e) for e in entries if e.startswith(name + ":")]

    def _interface(self, interface_path: str) -> None:
        """Turn an interface on if its device's decision allows its class, else keep it off
        (writing 0 only if it is on, e.g. a present device or a kernel without
        interface_authorized_default)."""
        device_path = os.path.dirname(interface_path)
        enforced = self.decisions().get(device_path)
        if enforced is None or enforced.action != "authorized":
            return  # undecided or not authorized: the kernel's default (0) stands
        attrs: dict[str, str] = {}
        for name in INTERFACE_ATTRIBUTES:
            try:
                attrs[name] = sysfs.read_attribute(os.path.join(interface_path, name))
            except sysfs.SysfsError:
                break
        allow = interface_allowed(enforced.decision, interface_class(attrs))
        try:
            try:
                if sysfs.read_authorized(interface_path) == allow:
                    return
            except sysfs.SysfsError:
                pass  # unreadable: write what the decision says, and report if that fails
            sysfs.authorize_interface(interface_path, allow)
            if allow:
                sysfs.probe_interface(interface_path, self.sys_root)
        except sysfs.SysfsError as e:
            self._failed(enforced.device, enforced.decision.target, e)

    def _failed(self, device: UsbDevice, target: str, error: sysfs.SysfsError) -> None:
        log.error("usb guard: %s", error)
        kind, severity, data = failure_event(device, target, error)
        self.emit(kind, subject_of(device), severity, **data)
