"""The sysfs adapter that enforces USB decisions: authorize, deauthorize, reject, lock down.

Thin on purpose: plain file writes to the kernel's USB authorization attributes, every failure a
`SysfsError` naming the path and errno. Paths are taken from the caller (pyudev's `sys_path`)
or built under `sys_root`, so tests point it at a umockdev testbed. Fail closed: this module
never writes `authorized_default=1` (nor 1 to `interface_authorized_default`); undoing the lock
down is left to an operator, so a stopped or crashed agent leaves new devices off.

Kernel behaviour this relies on (Documentation/usb/authorization.rst):
- `usbN/authorized_default=0`: a device plugged later starts with `authorized=0`; the kernel does
  not configure it, so it has no interfaces until authorized.
- `usbN/interface_authorized_default=0` (kernel >= 4.4): interfaces of a device configured later
  start unauthorized and get no driver until their own `authorized` is set to 1, so a composite
  device can keep its HID interface while its storage interface stays off. This applies to hub
  interfaces too: devices behind an external hub appear only once its interface is authorized.
- An interface authorized after the kernel configured it gets no driver until something writes
  its name to `/sys/bus/usb/drivers_probe` (probe_interface).
- `remove` (write-only, where the kernel has it): logically disconnects the device, which is
  what USBGuard's reject does.
"""

from __future__ import annotations

import errno as errno_codes
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SYS_ROOT = "/sys"
_ROOT_HUB = re.compile(r"usb(\d+)")
_READ_MAX = 64  # every attribute read here is a short number


class SysfsError(Exception):
    """A sysfs read or write failed; says which operation, which file and the errno."""

    def __init__(self, operation: str, path: str | os.PathLike[str], err: int | None,
                 detail: str | None) -> None:
        self.operation = operation
        self.path = os.fspath(path)
        self.errno = err
        self.detail = detail
        code = f" [{errno_codes.errorcode.get(err, err)}]" if err is not None else ""
        super().__init__(f"{operation} {self.path} failed{code}: {detail}")


@dataclass
class LockDown:
    """What `lock_down` did: attributes it turned to 0, and hubs it could not lock."""

    changed: list[str] = field(default_factory=list)  # attribute paths that were not 0 before
    locked: list[str] = field(default_factory=list)  # root hubs whose authorized_default is 0
    failed: list[SysfsError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when at least one hub exists and none failed: the zero window is closed."""
        return bool(self.locked) and not self.failed


def is_root_hub(device_path: str | os.PathLike[str]) -> bool:
    """Whether a device directory is a root hub ("usb1"), not a device on a port ("1-2")."""
    return _ROOT_HUB.fullmatch(os.path.basename(os.fspath(device_path).rstrip("/"))) is not None


def _write(path: Path | str, value: bytes) -> None:
    """Write without O_CREAT: a missing attribute is an error, never a new file. Without
    O_TRUNC too: a sysfs attribute is not a file, the kernel parses the one write, and
    truncating only adds a setattr call (on a simulated sysfs's regular files, an ext4 journal
    update that cost up to 2 ms at p99 on the path from plug to block). Every value written
    here is one byte, so nothing of an older value can be left behind on such a file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        raise SysfsError(f"write {value.decode()!r} to", path, e.errno, e.strerror) from e
    try:
        written = os.write(fd, value)
        if written != len(value):
            raise SysfsError(f"write {value.decode()!r} to", path, None,
                             f"short write ({written} of {len(value)} bytes)")
    except OSError as e:
        raise SysfsError(f"write {value.decode()!r} to", path, e.errno, e.strerror) from e
    finally:
        os.close(fd)


def read_attribute(path: Path | str) -> str:
    """The attribute's value as text, trailing newline dropped."""
    try:
        with open(path, "rb") as f:
            raw = f.read(_READ_MAX)
    except OSError as e:
        raise SysfsError("read", path, e.errno, e.strerror) from e
    return raw.decode("ascii", "replace").strip()


def _read_flag(path: Path | str) -> int:
    value = read_attribute(path)
    try:
        return int(value)
    except ValueError:
        raise SysfsError("read", path, None, f"not a number: {value!r}") from None


def root_hubs(sys_root: str | os.PathLike[str] = DEFAULT_SYS_ROOT) -> list[Path]:
    """Every root hub (`usbN` under bus/usb/devices), in bus order."""
    devices = Path(sys_root) / "bus" / "usb" / "devices"
    try:
        names = os.listdir(devices)
    except OSError as e:
        raise SysfsError("list", devices, e.errno, e.strerror) from e
    hubs = [(int(m.group(1)), name) for name in names if (m := _ROOT_HUB.fullmatch(name))]
    return [devices / name for _, name in sorted(hubs)]


def lock_down(sys_root: str | os.PathLike[str] = DEFAULT_SYS_ROOT) -> LockDown:
    """Close the zero window: `authorized_default=0` on every root hub, and
    `interface_authorized_default=0` where the kernel has it. One failing hub does not stop the
    others; failures are in the result (a missing `interface_authorized_default` is not one,
    older kernels lack it). A bus with no root hub at all is reported as a failure."""
    result = LockDown()
    try:
        hubs = root_hubs(sys_root)
    except SysfsError as e:
        result.failed.append(e)
        return result
    if not hubs:
        result.failed.append(SysfsError("list", Path(sys_root) / "bus/usb/devices",
                                        errno_codes.ENOENT, "no root hub found"))
    for hub in hubs:
        for name, required in (("authorized_default", True),
                               ("interface_authorized_default", False)):
            attribute = hub / name
            if not required and not os.path.lexists(attribute):
                continue
            try:
                before = read_attribute(attribute)
                _write(attribute, b"0")
                after = _read_flag(attribute)
                if after != 0:
                    raise SysfsError("write '0' to", attribute, None, f"reads back {after}")
            except SysfsError as e:
                result.failed.append(e)
                continue
            if before != "0":
                result.changed.append(str(attribute))
            if required:
                result.locked.append(str(hub))
    return result


def authorize(device_sys_path: str | os.PathLike[str], allow: bool) -> None:
    """Write 1 (allow) or 0 (block) to a device's `authorized`. Deauthorizing unbinds every
    interface driver of the device (kernel); the device stays visible on the bus."""
    _write(Path(device_sys_path) / "authorized", b"1" if allow else b"0")


def authorize_interface(interface_sys_path: str | os.PathLike[str], allow: bool) -> None:
    """Write 1 or 0 to one interface's `authorized` (kernel >= 4.4): a composite device keeps
    the interfaces policy allows and loses the others."""
    _write(Path(interface_sys_path) / "authorized", b"1" if allow else b"0")


def probe_interface(interface_sys_path: str | os.PathLike[str],
                    sys_root: str | os.PathLike[str] = DEFAULT_SYS_ROOT) -> bool:
    """Ask the kernel to bind a driver to an interface authorized after it was configured.

    Under `interface_authorized_default=0` the kernel probes a new interface while it is still
    unauthorized and refuses it; authorizing it later does not probe again (authorization.rst:
    write the interface's name to /sys/bus/usb/drivers_probe). Without this an allowed keyboard
    is on with no driver. Returns False where the bus has no `drivers_probe` (a simulated sysfs);
    the kernel answers success for an interface that has a driver or for which none exists."""
    probe = Path(sys_root) / "bus" / "usb" / "drivers_probe"
    if not os.path.lexists(probe):
        return False
    _write(probe, os.path.basename(os.fspath(interface_sys_path).rstrip("/")).encode())
    return True


def reject(device_sys_path: str | os.PathLike[str]) -> str:
    """USBGuard's reject: deauthorize, then remove the device where the kernel has `remove`.
    Deauthorizing first means a failed or missing `remove` still leaves the device off.
    Returns "removed" or "deauthorized" (no `remove` attribute)."""
    authorize(device_sys_path, False)
    remove = Path(device_sys_path) / "remove"
    if not os.path.lexists(remove):
        return "deauthorized"
    _write(remove, b"1")
    return "removed"


def read_authorized(sys_path: str | os.PathLike[str]) -> bool:
    """Whether a device or interface is authorized (its `authorized` reads non-zero)."""
    return _read_flag(Path(sys_path) / "authorized") != 0
