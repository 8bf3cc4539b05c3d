"""Simulated USB devices: real descriptor blobs, sysfs attributes, umockdev text.

The simulator twin of the udev/sysfs adapters, used by the tests and by `floor-agent demo`.

One `UsbSpec` gives both what the pure code receives (`attributes`, `descriptors`) and what a
umockdev testbed serves through libudev (`umockdev_text`), so a test can check that the pyudev
code path and the pure function agree. Descriptors are laid out as the kernel's sysfs
`descriptors` file: the 18-byte device descriptor, then the configuration descriptor set,
multi-byte fields little-endian.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

HCD = "/devices/pci0000:00/0000:00:14.0"
HUB = HCD + "/usb1"
HUB_INTERFACE = HUB + "/1-0:1.0"
HUB_PORTS = 10


def device_descriptor(
    vid: int, pid: int, bcd_device: int = 0x0100, cls: tuple[int, int, int] = (0, 0, 0),
    bcd_usb: int = 0x0200, strings: tuple[int, int, int] = (1, 2, 3), configurations: int = 1,
) -> bytes:
    return struct.pack("<BBHBBBBHHHBBBB", 18, 1, bcd_usb, *cls, 64, vid, pid, bcd_device,
                       *strings, configurations)


def configuration(body: bytes, interfaces: int, attributes: int = 0x80, power: int = 50) -> bytes:
    return struct.pack("<BBHBBBBB", 9, 2, 9 + len(body), interfaces, 1, 0, attributes,
                       power) + body


def interface(number: int, cls: tuple[int, int, int], endpoints: int = 0, alt: int = 0) -> bytes:
    return struct.pack("<BBBBBBBBB", 9, 4, number, alt, endpoints, *cls, 0)


def endpoint(address: int, attributes: int, max_packet: int, interval: int = 0) -> bytes:
    return struct.pack("<BBBBHB", 7, 5, address, attributes, max_packet, interval)


def hid(report_length: int) -> bytes:
    return struct.pack("<BBHBBBH", 9, 0x21, 0x0111, 0, 1, 0x22, report_length)


def association(first: int, count: int, cls: tuple[int, int, int]) -> bytes:
    """Interface association descriptor (type 0x0b): not an interface, USBGuard skips it."""
    return struct.pack("<BBBBBBBB", 8, 0x0B, first, count, *cls, 0)


def _interface_body(number: int, cls: tuple[int, int, int]) -> bytes:
    """A plausible interface: HID gets a HID descriptor and an interrupt IN endpoint, the rest
    a bulk pair, so the blob has every descriptor kind a real device shows."""
    if cls[0] == 0x03:
        return interface(number, cls, 1) + hid(65) + endpoint(0x81 + number, 3, 8, 10)
    if cls[0] == 0x09:
        return interface(number, cls, 1) + endpoint(0x81, 3, 4, 12)
    return (interface(number, cls, 2) + endpoint(0x81 + number, 2, 512)
            + endpoint(0x01 + number, 2, 512))


@dataclass(frozen=True)
class UsbSpec:
    """One simulated device; None for an attribute means the file does not exist."""

    vid: int
    pid: int
    product: bytes | None
    manufacturer: bytes | None
    serial: bytes | None
    interfaces: tuple[tuple[int, int, int], ...]
    port: int = 1
    devnum: int = 2
    bcd_device: int = 0x0100
    device_class: tuple[int, int, int] = (0, 0, 0)
    connect_type: bytes = b"hotplug"
    extra_descriptors: bytes = b""  # appended inside the configuration (IAD, class-specific)
    overrides: dict[str, bytes] = field(default_factory=dict)  # raw sysfs values, e.g. bad ids
    raw_descriptors: bytes | None = None  # replaces the generated blob (truncated, garbage)
    hub: UsbSpec | None = None  # the external hub it is plugged into; None: the root hub

    @property
    def sysname(self) -> str:
        """The kernel's name, which USBGuard reports as the port: "1-2", "1-2.3"."""
        return f"1-{self.port}" if self.hub is None else f"{self.hub.sysname}.{self.port}"

    @property
    def devpath(self) -> str:
        return f"{HUB if self.hub is None else self.hub.devpath}/{self.sysname}"


def descriptors(spec: UsbSpec) -> bytes:
    if spec.raw_descriptors is not None:
        return spec.raw_descriptors
    body = spec.extra_descriptors + b"".join(
        _interface_body(i, cls) for i, cls in enumerate(spec.interfaces)
    )
    strings = (1 if spec.manufacturer else 0, 2 if spec.product else 0, 3 if spec.serial else 0)
    return device_descriptor(spec.vid, spec.pid, spec.bcd_device, spec.device_class,
                             strings=strings) + configuration(body, len(spec.interfaces))


def attributes(spec: UsbSpec) -> dict[str, bytes]:
    """sysfs attribute values as a read() returns them (kernel text ends in a newline)."""
    values: dict[str, bytes | None] = {
        "idVendor": b"%04x" % spec.vid,
        "idProduct": b"%04x" % spec.pid,
        "bcdDevice": b"%04x" % spec.bcd_device,
        "product": spec.product,
        "manufacturer": spec.manufacturer,
        "serial": spec.serial,
        "busnum": b"1",
        "devnum": b"%d" % spec.devnum,
        "authorized": b"1",
        "port/connect_type": spec.connect_type,
        "bDeviceClass": b"%02x" % spec.device_class[0],
    }
    values.update(spec.overrides)
    return {k: v + b"\n" for k, v in values.items() if v is not None}


def interface_attributes(spec: UsbSpec) -> list[dict[str, bytes]]:
    return [
        {"bInterfaceClass": b"%02x\n" % c, "bInterfaceSubClass": b"%02x\n" % s,
         "bInterfaceProtocol": b"%02x\n" % p}
        for c, s, p in spec.interfaces
    ]


ROOT_HUB = UsbSpec(
    vid=0x1D6B, pid=0x0002, product=b"xHCI Host Controller", manufacturer=b"Linux 6.1.0 xhci-hcd",
    serial=b"0000:00:14.0", interfaces=((9, 0, 0),), devnum=1, bcd_device=0x0601,
    device_class=(9, 0, 1), connect_type=b"",
)


def root_hub_attributes() -> dict[str, bytes]:
    attrs = attributes(ROOT_HUB)
    del attrs["port/connect_type"]  # a root hub has no port link
    return attrs


# --- umockdev-record text -------------------------------------------------------------------

def _block(path: str, props: Iterable[tuple[str, str]], attrs: dict[str, bytes],
           links: Iterable[tuple[str, str]] = ()) -> str:
    lines = [f"P: {path}"]
    lines += [f"E: {k}={v}" for k, v in props]
    for key, value in attrs.items():
        if value.isascii() and value.decode().isprintable() and value.strip() == value:
            lines.append(f"A: {key}={value.decode()}")
        else:  # binary or non-UTF-8 content: umockdev's hex form keeps the bytes exact
            lines.append(f"H: {key}={value.hex().upper()}")
    lines += [f"L: {k}={v}" for k, v in links]
    return "\n".join(lines) + "\n\n"


def _strip(attrs: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v[:-1] if v.endswith(b"\n") else v for k, v in attrs.items()}


def _usb_device(spec: UsbSpec, devpath: str, sysname: str, specs: Sequence[UsbSpec] = ()) -> str:
    attrs = _strip(attributes(spec))
    attrs.pop("port/connect_type", None)
    attrs["descriptors"] = descriptors(spec)
    props = [("SUBSYSTEM", "usb"), ("DEVTYPE", "usb_device"), ("DRIVER", "usb"),
             ("PRODUCT", f"{spec.vid:x}/{spec.pid:x}/{spec.bcd_device:x}"),
             ("BUSNUM", "001"), ("DEVNUM", f"{spec.devnum:03d}")]
    links = []
    if spec is not ROOT_HUB:
        hub_if, hub_name = ("1-0:1.0", "usb1") if spec.hub is None else (
            f"{spec.hub.sysname}:1.0", spec.hub.sysname)
        links.append(("port", f"../{hub_if}/{hub_name}-port{spec.port}"))
    text = _block(devpath, props, attrs, links)
    # an external hub's interface carries its ports, as the kernel lays them out
    ports = {f"{sysname}-port{d.port}/connect_type": d.connect_type
             for d in specs if d.hub is spec}
    for number, (c, s, p) in enumerate(spec.interfaces):
        text += _block(
            f"{devpath}/{sysname}:1.{number}",
            [("SUBSYSTEM", "usb"), ("DEVTYPE", "usb_interface"), ("INTERFACE", f"{c}/{s}/{p}")],
            {"bInterfaceClass": b"%02x" % c, "bInterfaceSubClass": b"%02x" % s,
             "bInterfaceProtocol": b"%02x" % p, "bInterfaceNumber": b"%02x" % number,
             "authorized": b"1", **(ports if number == 0 else {})},
        )
    return text


def umockdev_text(specs: Sequence[UsbSpec]) -> str:
    """A controller, its root hub (with port connect types) and `specs` plugged into it."""
    text = _block(HCD, [("SUBSYSTEM", "pci"), ("DRIVER", "xhci_hcd")],
                  {"class": b"0x0c0330", "vendor": b"0x8086"})
    text += _usb_device(ROOT_HUB, HUB, "1-0").split(f"P: {HUB}/1-0:1.0\n")[0]
    by_port = {spec.port: spec.connect_type for spec in specs if spec.hub is None}
    text += _block(
        HUB_INTERFACE,
        [("SUBSYSTEM", "usb"), ("DEVTYPE", "usb_interface"), ("INTERFACE", "9/0/0")],
        {"bInterfaceClass": b"09", "bInterfaceSubClass": b"00", "bInterfaceProtocol": b"00",
         **{f"usb1-port{n}/connect_type": by_port.get(n, b"hotplug")
            for n in range(1, HUB_PORTS + 1)}},
    )
    for spec in specs:  # a hub must come before the devices plugged into it
        text += _usb_device(spec, spec.devpath, spec.sysname, specs)
    return text


# A catalogue of realistic devices, shared by the usb_guard tests.
STICK = UsbSpec(0x0781, 0x5567, b"Cruzer Blade", b"SanDisk", b"4C530001234567891234",
                ((0x08, 0x06, 0x50),), port=1, devnum=2)
KEYBOARD = UsbSpec(0x046D, 0xC31C, b"USB Keyboard", b"Logitech", b"", ((0x03, 0x01, 0x01),),
                   port=2, devnum=3, bcd_device=0x6400)
WACOM = UsbSpec(0x056A, 0x0357, b"Intuos Pro M", b"Wacom Co.,Ltd.", b"8JQ00A1000123",
                ((0x03, 0x00, 0x00), (0x03, 0x00, 0x00)), port=3, devnum=4)
COMPOSITE = UsbSpec(0x1A2C, 0x2124, b"USB Keyboard + Disk", b"SEM", b"0123456789AB",
                    ((0x03, 0x01, 0x01), (0x08, 0x06, 0x50)), port=4, devnum=5,
                    connect_type=b"hardwired")
PHONE_MTP = UsbSpec(0x18D1, 0x4EE2, b"Pixel 7", b"Google", b"27161FDH2001XY",
                    ((0x06, 0x01, 0x01), (0xFF, 0x42, 0x01)), port=5, devnum=6)
PHONE_RNDIS = UsbSpec(0x18D1, 0x4EE4, b"Pixel 7", b"Google", b"27161FDH2001XY",
                      ((0xE0, 0x01, 0x03), (0x0A, 0x00, 0x00)), port=6, devnum=7,
                      device_class=(0xEF, 0x02, 0x01),
                      extra_descriptors=association(0, 2, (0xE0, 0x01, 0x03)))
RNDIS_MISC = UsbSpec(0x0525, 0xA4A2, b"RNDIS/Ethernet Gadget", b"Linux", b"",
                     ((0xEF, 0x04, 0x01), (0x0A, 0x00, 0x00)), port=7, devnum=8,
                     device_class=(0xEF, 0x02, 0x01),
                     extra_descriptors=association(0, 2, (0xEF, 0x04, 0x01)))
NO_SERIAL = UsbSpec(0x0951, 0x1666, b"DataTraveler 3.0", b"Kingston", None,
                    ((0x08, 0x06, 0x50),), port=8, devnum=9)
EXT_HUB = UsbSpec(0x05E3, 0x0610, b"USB2.0 Hub", b"GenesysLogic", None, ((0x09, 0x00, 0x00),),
                  port=9, devnum=10, device_class=(0x09, 0x00, 0x01))
BEHIND_HUB = dataclasses.replace(STICK, hub=EXT_HUB, port=3, devnum=11, serial=b"BEHIND0001",
                                 connect_type=b"hardwired")
WELL_FORMED = (STICK, KEYBOARD, WACOM, COMPOSITE, PHONE_MTP, PHONE_RNDIS, RNDIS_MISC, NO_SERIAL,
               EXT_HUB, BEHIND_HUB)


# Buses and hot-plugged devices as the kernel shows them (see floor_agent/simulated/usb_bus.py).
SECOND_HUB = "/devices/pci0000:00/0000:00:1d.0/usb2"


def bus_text(specs: tuple[UsbSpec, ...], second_hub: bool = False) -> str:
    """umockdev_bus's bus, with the root hub attributes the kernel has and it lacks
    (authorized_default, interface_authorized_default: 1 at boot), optionally a second
    controller with its own root hub (usb2)."""
    text = umockdev_text(specs)
    hub_text = text[: text.index(f"P: {HUB}/")]  # controller, root hub: no interface, no device
    if second_hub:
        text += (hub_text.replace("0000:00:14.0", "0000:00:1d.0").replace("/usb1", "/usb2")
                 .replace("BUSNUM=001", "BUSNUM=002").replace("A: busnum=1", "A: busnum=2"))
    for hub in (HUB, SECOND_HUB):
        text = text.replace(f"P: {hub}\n", f"P: {hub}\nA: authorized_default=1\n"
                            "A: interface_authorized_default=1\nA: remove=\n", 1)
    return text


def device_text(spec: UsbSpec, authorized: int = 1) -> str:
    """One device's paragraph, as plugged later, without its interfaces."""
    text = umockdev_text((spec,))
    text = text[text.index(f"P: {spec.devpath}\n"):text.index(f"P: {spec.devpath}/")]
    return text.replace("A: authorized=1\n", f"A: authorized={authorized}\n")


def interfaces_text(spec: UsbSpec, authorized: int = 1) -> str:
    """The paragraphs of a device's interfaces, as created when it is configured."""
    text = umockdev_text((spec,))
    text = text[text.index(f"P: {spec.devpath}/"):]
    return text.replace("A: authorized=1\n", f"A: authorized={authorized}\n")
