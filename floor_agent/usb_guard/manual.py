"""`floor-agent usb allow|block DEVICE`: a local admin's manual decision, always audited.

For the moments the policy is not enough yet (a vendor's flasher needed today, a suspicious
device to cut off now). The change is temporary by design: the running guard judges the device
again on its next udev event (re-plug, reboot, agent restart) and its rules win, so the lasting
fix is a rule. Every action is a warning-level audit event in the agent's spool (the running
agent forwards it), with who did it, why, and the device's identity; the spool is opened before
sysfs is touched, so no manual change happens that cannot be recorded.
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from floor_agent.protocol.emit import Emit
from floor_agent.protocol.kinds.usb import UsbKind
from floor_agent.usb_guard import sysfs
from floor_agent.usb_guard.device import (
    DESCRIPTORS_MAX,
    IDENTITY_ATTRIBUTES,
    SYSFS_READ_MAX,
    UsbDevice,
    device_from_attributes,
    root_hub_parent_hash,
)
from floor_agent.usb_guard.guard import INTERFACE_ATTRIBUTES, device_data, subject_of

DEVICE_NAME = re.compile(r"\d+-\d+(\.\d+)*")  # "1-2", "1-2.3": not interfaces ("1-2:1.0")
ROOT_HUB_NAME = re.compile(r"usb\d+")
TEMPORARY = ("temporary: the running guard judges this device again on its next udev event "
             "(re-plug, reboot, agent restart) and its rules win")


class ManualError(Exception):
    """The device cannot be acted on (unknown, not a USB device, a root hub); nothing done."""


@dataclass(frozen=True, slots=True)
class ManualResult:
    """What was done: the device, the action ("authorized", "deauthorized", "failed: ..."),
    the interfaces written, and the audit event's kind."""

    device: UsbDevice
    action: str
    interfaces: tuple[str, ...]
    kind: str
    ok: bool


def resolve_device(device: str, sys_root: str | os.PathLike[str]) -> Path:
    """A device's real sysfs directory from its name ("1-2") or a path under sys_root
    (/sys/bus/usb/devices/1-2 or /sys/devices/.../1-2). Raises ManualError otherwise."""
    root = Path(os.path.realpath(sys_root))
    name = os.path.basename(device.rstrip("/"))
    if ROOT_HUB_NAME.fullmatch(name):
        raise ManualError(f"{device}: a root hub; acting on it would cut off every device on "
                          "its bus, keyboards included")
    if DEVICE_NAME.fullmatch(name) is None:
        raise ManualError(f"{device}: not a USB device name (like 1-2 or 1-2.3) nor its sysfs "
                          "path; `floor-agent usb list` shows them")
    candidate = Path(device) if "/" in device else root / "bus" / "usb" / "devices" / name
    if not os.path.lexists(candidate):
        raise ManualError(f"{device}: no such USB device (`floor-agent usb list` shows them)")
    real = Path(os.path.realpath(candidate))
    if not real.is_relative_to(root / "devices"):
        raise ManualError(f"{device}: not under {root}/devices")
    if real.name != name or not (real / "authorized").exists() \
            or not (real / "idVendor").is_file():
        raise ManualError(f"{device}: no such USB device (`floor-agent usb list` shows them)")
    return real


def _read(path: Path, limit: int) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(limit)
    except OSError:
        return None


def _attributes(path: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    found = {}
    for name in names:
        value = _read(path / name, SYSFS_READ_MAX)
        if value is not None:
            found[name] = value
    return found


def interfaces_of(path: Path) -> list[Path]:
    """The device's interface directories ("1-2:1.0"), as configured now."""
    try:
        entries = sorted(os.listdir(path))
    except OSError:
        return []
    return [path / e for e in entries if e.startswith(path.name + ":")]


def identity(path: Path, sys_root: str | os.PathLike[str], depth: int = 0) -> UsbDevice:
    """The same identity the guard reports (device.py's rules, read straight from sysfs), so
    the manual event and the guard's events name the device alike."""
    root = Path(os.path.realpath(sys_root))
    parent = path.parent
    parent_is_device = (DEVICE_NAME.fullmatch(parent.name) or ROOT_HUB_NAME.fullmatch(
        parent.name)) and (parent / "idVendor").is_file()
    if parent_is_device and depth < 16:
        parent_hash = identity(parent, sys_root, depth + 1).hash
    else:
        parent_hash = root_hub_parent_hash("/" + str(parent.relative_to(root)))
    interface_attrs = [] if depth else [
        _attributes(i, INTERFACE_ATTRIBUTES) for i in interfaces_of(path)]
    return device_from_attributes(
        _attributes(path, IDENTITY_ATTRIBUTES), _read(path / "descriptors", DESCRIPTORS_MAX + 1),
        parent_hash, sys_path=str(path), interface_attrs=interface_attrs)


def invoking_user(env: Mapping[str, str], uid: int) -> str:
    """Who ran the command: the sudo caller, else the login name, else the uid's name."""
    for key in ("SUDO_USER", "LOGNAME", "USER"):
        if env.get(key):
            return env[key]
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def apply(path: Path, allow: bool, sys_root: str | os.PathLike[str] = sysfs.DEFAULT_SYS_ROOT
          ) -> tuple[str, tuple[str, ...]]:
    """Authorize (device, then each interface, each probed for its driver) or deauthorize (the
    device: the kernel unbinds every interface). Returns the action and the interfaces
    written; SysfsError on failure."""
    sysfs.authorize(path, allow)
    if not allow:
        return "deauthorized", ()
    written = []
    for interface in interfaces_of(path):  # configured by the kernel once authorized
        sysfs.authorize_interface(interface, True)
        sysfs.probe_interface(interface, sys_root)
        written.append(interface.name)
    return "authorized", tuple(written)


def manual_event(device: UsbDevice, allow: bool, who: str, uid: int, reason: str, action: str,
                 interfaces: tuple[str, ...], was_authorized: bool | None
                 ) -> tuple[str, str, str, dict[str, Any]]:
    """(kind, subject, severity, data) of the audit event for one manual action."""
    data = device_data(device)
    data.update(who=who, uid=uid, reason=reason, action=action,
                interfaces_authorized=list(interfaces), was_authorized=was_authorized,
                note=TEMPORARY)
    kind = UsbKind.MANUAL_ALLOW if allow else UsbKind.MANUAL_BLOCK
    return kind, subject_of(device), "warning", data


def run_manual(device: str, allow: bool, reason: str, sys_root: str | os.PathLike[str],
               emit: Emit, env: Mapping[str, str] | None = None,
               uid: int | None = None) -> ManualResult:
    """Resolve, act, record. ManualError (nothing done, nothing recorded) when the device is
    not one; a failed sysfs write is recorded too, with ok False. `emit` is Spool.emit."""
    if not reason.strip():
        raise ManualError("--reason must say why (it goes into the audit trail)")
    path = resolve_device(device, sys_root)
    usb = identity(path, sys_root)
    try:
        was: bool | None = sysfs.read_authorized(path)
    except sysfs.SysfsError:
        was = None
    try:
        action, interfaces = apply(path, allow, sys_root)
        ok = True
    except sysfs.SysfsError as e:
        action, interfaces, ok = f"failed: {e}", (), False
    uid = os.getuid() if uid is None else uid
    who = invoking_user(os.environ if env is None else env, uid)
    kind, subject, severity, data = manual_event(usb, allow, who, uid, reason.strip(), action,
                                                 interfaces, was)
    emit(kind, subject, severity, **data)
    return ManualResult(usb, action, interfaces, kind, ok)
