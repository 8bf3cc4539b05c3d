"""Device identity from udev: what policy decisions and audit events say about a USB device.

`device_from_attributes` holds all the logic and is pure (attribute bytes in, `UsbDevice` out)
so it is tested without udev; `device_from_udev` is the thin pyudev adapter. Fields follow
USBGuard's device model (name = sysfs `product`, port = sysname, connect type = raw
`port/connect_type`, hash/parent-hash computed the same way) so USBGuard rules match the same
devices. Malformed input never raises: it yields a device whose `problems` say what was wrong,
and which policy still evaluates (rules on a malformed field simply do not match).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from floor_agent.usb_guard.descriptor import (
    ParsedDescriptors,
    parse_descriptors,
    usbguard_hash,
    usbguard_string_hash,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pyudev

ID_PLACEHOLDER = "????"  # a malformed id: matches no `id` rule except wildcards
SYSFS_READ_MAX = 4096  # USBGuard reads one page of an attribute, so it hashes at most this
STRING_MAX = 253  # USBGuard's limit for name/serial/connect-type (UINT8_MAX - 2)
DESCRIPTORS_MAX = 64 * 1024  # far above any real device; bounds work on a hostile file
PROBLEMS_MAX = 32  # problems go into audit events: a hostile device must not bloat them
_HEX4 = re.compile(rb"[0-9a-fA-F]{4}")
_HEX2 = re.compile(rb"[0-9a-fA-F]{1,2}")
_TRIM = b"\x00\n\r\t\b"


@dataclass(frozen=True, slots=True)
class UsbDevice:
    """A USB device as policy and audit see it (all plain data, comparable, hashable)."""

    id_vendor: str  # 4 lowercase hex digits, or ID_PLACEHOLDER
    id_product: str
    serial: str  # "" when the device has none
    name: str  # sysfs `product`; non-UTF-8 bytes spelled \xHH
    manufacturer: str
    interfaces: tuple[str, ...]  # "cc:ss:pp" per interface descriptor, in descriptor order
    port: str  # sysname as USBGuard's via-port: "1-2", "1-2.3", "usb1"
    connect_type: str  # kernel's port/connect_type: "hotplug", "hardwired", "not used" or ""
    hash: str  # USBGuard `hash`
    parent_hash: str  # USBGuard `parent-hash`
    sys_path: str
    busnum: int | None
    devnum: int | None
    problems: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        """The "vvvv:pppp" form that USBGuard's `id` attribute uses."""
        return f"{self.id_vendor}:{self.id_product}"


def _trim(value: bytes | None) -> bytes:
    """USBGuard's reading of an attribute: first page, trailing NUL/CR/LF/TAB/BS dropped."""
    if not value:
        return b""
    return value[:SYSFS_READ_MAX].rstrip(_TRIM)


def _text(label: str, raw: bytes, problems: list[str], limit: int = STRING_MAX) -> str:
    """Decode for display and matching; note invalid UTF-8 and oversize values."""
    if len(raw) > limit:
        problems.append(f"{label}: {len(raw)} bytes, longer than {limit} (truncated)")
        raw = raw[:limit]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        problems.append(f"{label}: not valid UTF-8")
        return raw.decode("utf-8", "backslashreplace")


def _hex_id(label: str, raw: bytes, problems: list[str]) -> str:
    if not raw:
        problems.append(f"{label}: missing")
        return ID_PLACEHOLDER
    if _HEX4.fullmatch(raw) is None:
        shown = raw[:16].decode("ascii", "backslashreplace")
        problems.append(f"{label}: not 4 hex digits: {shown!r}")
        return ID_PLACEHOLDER
    return raw.decode("ascii").lower()


def _decimal(label: str, raw: bytes, problems: list[str]) -> int | None:
    text = raw.strip()
    if not text:
        return None
    if not text.isdigit() or len(text) > 6:
        problems.append(f"{label}: not a small decimal number")
        return None
    return int(text)


def _sysfs_interfaces(
    interface_attrs: Sequence[Mapping[str, bytes]], problems: list[str]
) -> tuple[str, ...]:
    """Interface classes from sysfs interface nodes (only present once the device is configured)."""
    found: list[str] = []
    for attrs in interface_attrs:
        parts = []
        for key in ("bInterfaceClass", "bInterfaceSubClass", "bInterfaceProtocol"):
            raw = _trim(attrs.get(key)).strip()
            if _HEX2.fullmatch(raw) is None:
                problems.append(f"interface {key}: not a hex byte")
                break
            parts.append(f"{int(raw, 16):02x}")
        else:
            found.append(":".join(parts))
    return tuple(found)


def device_from_attributes(
    attrs: Mapping[str, bytes],
    descriptors: bytes | None,
    parent_hash: str,
    *,
    sys_path: str = "",
    interface_attrs: Sequence[Mapping[str, bytes]] = (),
) -> UsbDevice:
    """Build the identity from sysfs attribute bytes (keys as sysfs names them, plus
    "port/connect_type"), the raw `descriptors` file and the parent's hash (see
    `root_hub_parent_hash` for controllers). Interfaces come from the descriptors, as USBGuard
    takes them; `interface_attrs` (sysfs interface nodes) are the fallback when those are
    unusable."""
    problems: list[str] = []
    raw_vendor = _trim(attrs.get("idVendor"))
    raw_product = _trim(attrs.get("idProduct"))
    raw_name = _trim(attrs.get("product"))
    raw_serial = _trim(attrs.get("serial"))
    raw_manufacturer = _trim(attrs.get("manufacturer"))
    raw_connect = _trim(attrs.get("port/connect_type"))

    id_vendor = _hex_id("idVendor", raw_vendor, problems)
    id_product = _hex_id("idProduct", raw_product, problems)
    name = _text("product", raw_name, problems)
    serial = _text("serial", raw_serial, problems)
    manufacturer = _text("manufacturer", raw_manufacturer, problems)
    connect_type = _text("port/connect_type", raw_connect, problems)

    if descriptors is None:
        problems.append("descriptors: unreadable")
        descriptors = b""
    elif len(descriptors) > DESCRIPTORS_MAX:
        problems.append(f"descriptors: {len(descriptors)} bytes, only {DESCRIPTORS_MAX} parsed")
        descriptors = descriptors[:DESCRIPTORS_MAX]
    parsed: ParsedDescriptors = parse_descriptors(descriptors)
    problems.extend(parsed.problems)

    interfaces = parsed.interfaces
    if not interfaces:
        interfaces = _sysfs_interfaces(interface_attrs, problems)
        if interface_attrs and interfaces:
            problems.append("interfaces: taken from sysfs, not from descriptors")

    port = os.path.basename(sys_path.rstrip("/"))
    device_hash = usbguard_hash(raw_name, raw_vendor, raw_product, raw_serial, parsed.hash_input)
    return UsbDevice(
        id_vendor=id_vendor,
        id_product=id_product,
        serial=serial,
        name=name,
        manufacturer=manufacturer,
        interfaces=interfaces,
        port=port,
        connect_type=connect_type,
        hash=device_hash,
        parent_hash=parent_hash,
        sys_path=sys_path,
        busnum=_decimal("busnum", _trim(attrs.get("busnum")), problems),
        devnum=_decimal("devnum", _trim(attrs.get("devnum")), problems),
        problems=tuple(problems[:PROBLEMS_MAX]) + (
            (f"... {len(problems) - PROBLEMS_MAX} more problems",)
            if len(problems) > PROBLEMS_MAX else ()
        ),
    )


def root_hub_parent_hash(parent_devpath: str) -> str:
    """parent-hash of a device whose sysfs parent is not a USB device (a root hub): USBGuard
    hashes the parent's devpath, e.g. "/devices/pci0000:00/0000:00:14.0"."""
    return usbguard_string_hash(parent_devpath)


# --- pyudev adapter -------------------------------------------------------------------------

IDENTITY_ATTRIBUTES = (
    "idVendor", "idProduct", "product", "serial", "manufacturer", "busnum", "devnum",
    "port/connect_type",
)
_INTERFACE_ATTRIBUTES = ("bInterfaceClass", "bInterfaceSubClass", "bInterfaceProtocol")


def _read_sysfs(sys_path: str, name: str, limit: int) -> bytes | None:
    """Read an attribute file directly: `descriptors` is binary (libudev stops at NUL)."""
    try:
        with open(os.path.join(sys_path, name), "rb") as f:
            return f.read(limit)
    except OSError:
        return None


def _udev_attributes(device: pyudev.Device, names: Sequence[str]) -> dict[str, bytes]:
    """Read the files themselves, as USBGuard does: libudev caches values and trims them its
    own way, which would make the hash input differ from USBGuard's."""
    found: dict[str, bytes] = {}
    for name in names:
        value = _read_sysfs(device.sys_path, name, SYSFS_READ_MAX)
        if value is not None:
            found[name] = value
    return found


def _parent_hash(device: pyudev.Device, depth: int) -> str:
    """The parent usb_device's hash, or the devpath hash when the parent is a controller."""
    parent_devpath = os.path.dirname(device.device_path.rstrip("/"))
    parent = device.parent
    if (
        parent is not None
        and parent.device_path.rstrip("/") == parent_devpath
        and parent.device_type == "usb_device"
        and depth < 16  # USB allows 7 tiers; a loop in a fake sysfs must not recurse forever
    ):
        return _device_from_udev(parent, depth + 1, with_interfaces=False).hash
    return root_hub_parent_hash(parent_devpath)


def _device_from_udev(device: pyudev.Device, depth: int, with_interfaces: bool,
                      parent_hash: str | None = None) -> UsbDevice:
    attrs = _udev_attributes(device, IDENTITY_ATTRIBUTES)
    descriptors = _read_sysfs(device.sys_path, "descriptors", DESCRIPTORS_MAX + 1)
    # The sysfs interface nodes are only the fallback when the descriptors list none, and
    # listing them is a libudev scan: skip it on the hot path of every plug.
    listed = bool(descriptors and parse_descriptors(descriptors[:DESCRIPTORS_MAX]).interfaces)
    interfaces = [
        _udev_attributes(child, _INTERFACE_ATTRIBUTES)
        for child in (device.children if with_interfaces and not listed else ())
        if child.device_type == "usb_interface" and child.parent == device
    ]
    return device_from_attributes(
        attrs,
        descriptors,
        parent_hash if parent_hash is not None else _parent_hash(device, depth),
        sys_path=device.sys_path,
        interface_attrs=interfaces,
    )


def device_from_udev(device: pyudev.Device, parent_hash: str | None = None) -> UsbDevice:
    """Identity of a pyudev `usb_device` (reads its sysfs attributes and `descriptors`).

    `parent_hash`, when the caller already knows the parent hub's hash (the guard judged the
    hub before its children), saves re-reading the whole chain of hubs on every plug.
    """
    return _device_from_udev(device, 0, with_interfaces=True, parent_hash=parent_hash)
