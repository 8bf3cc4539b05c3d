"""Device identity: pure tests over sysfs attribute bytes, then the real pyudev path and the
real USBGuard on a umockdev bus, which must agree with the pure function field for field."""

from __future__ import annotations

import dataclasses
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from umockdev_bus import (
    BEHIND_HUB,
    COMPOSITE,
    EXT_HUB,
    HCD,
    HUB,
    KEYBOARD,
    NO_SERIAL,
    PHONE_MTP,
    PHONE_RNDIS,
    RNDIS_MISC,
    ROOT_HUB,
    ROOT_HUB_HASH,
    STICK,
    WACOM,
    WELL_FORMED,
    UsbSpec,
    attributes,
    descriptors,
    device_of,
    interface_attributes,
    root_hub_attributes,
    umockdev_text,
)

from floor_agent.usb_guard.descriptor import parse_descriptors, usbguard_hash
from floor_agent.usb_guard.device import (
    ID_PLACEHOLDER,
    STRING_MAX,
    UsbDevice,
    device_from_attributes,
    root_hub_parent_hash,
)

# Hashes printed by `usbguard generate-policy` (Debian usbguard 1.1.2) for these very specs on a
# umockdev bus: they pin the algorithm even where the usbguard binary is not run.
ROOT_HUB_PARENT_HASH = "rV9bfLq7c2eA4tYjVjwO4bxhm+y6GgZpl9J60L0fBkY="
STICK_HASH = "X7O4Nste5CvCu4cXlMyyhQJrnjCdVKS9Y2satSIw+RU="

make = device_of


def test_stick_identity_matches_usbguard() -> None:
    dev = make(STICK)
    assert dev == UsbDevice(
        id_vendor="0781", id_product="5567", serial="4C530001234567891234", name="Cruzer Blade",
        manufacturer="SanDisk", interfaces=("08:06:50",), port="1-1", connect_type="hotplug",
        hash=STICK_HASH, parent_hash=ROOT_HUB_HASH, sys_path="/sys" + STICK.devpath,
        busnum=1, devnum=2, problems=(),
    )
    assert dev.id == "0781:5567"


def test_root_hub_hash_and_parent_hash_match_usbguard() -> None:
    parent = root_hub_parent_hash(HCD)
    hub = device_from_attributes(root_hub_attributes(), descriptors(ROOT_HUB), parent,
                                 sys_path="/sys" + HUB)
    assert (parent, hub.hash) == (ROOT_HUB_PARENT_HASH, ROOT_HUB_HASH)
    assert (hub.port, hub.connect_type, hub.interfaces) == ("usb1", "", ("09:00:00",))
    assert hub.problems == ()


def test_root_hub_hash_ignores_kernel_version_but_devices_do_not() -> None:
    """USBGuard zeroes a Linux root hub's bcdDevice (the kernel version) before hashing."""
    newer_kernel = dataclasses.replace(ROOT_HUB, bcd_device=0x0612)
    a = device_from_attributes(root_hub_attributes(), descriptors(ROOT_HUB), "p")
    b = device_from_attributes(root_hub_attributes(), descriptors(newer_kernel), "p")
    assert a.hash == b.hash
    other_firmware = dataclasses.replace(STICK, bcd_device=0x0200)
    assert make(other_firmware).hash != make(STICK).hash


@pytest.mark.parametrize(
    ("spec", "interfaces", "connect_type"),
    [
        (KEYBOARD, ("03:01:01",), "hotplug"),
        (WACOM, ("03:00:00", "03:00:00"), "hotplug"),
        (COMPOSITE, ("03:01:01", "08:06:50"), "hardwired"),
        (PHONE_MTP, ("06:01:01", "ff:42:01"), "hotplug"),
        (PHONE_RNDIS, ("e0:01:03", "0a:00:00"), "hotplug"),
        (RNDIS_MISC, ("ef:04:01", "0a:00:00"), "hotplug"),
    ],
    ids=["keyboard", "wacom", "composite", "mtp", "rndis-e0", "rndis-ef"],
)
def test_device_classes(spec: UsbSpec, interfaces: tuple[str, ...], connect_type: str) -> None:
    dev = make(spec)
    assert dev.interfaces == interfaces
    assert dev.connect_type == connect_type
    assert dev.problems == ()
    assert dev.id == f"{spec.vid:04x}:{spec.pid:04x}"


def test_device_behind_an_external_hub() -> None:
    dev = make(BEHIND_HUB)
    assert (dev.port, dev.connect_type) == ("1-9.3", "hardwired")
    assert dev.parent_hash == make(EXT_HUB).hash != ROOT_HUB_HASH


def test_interfaces_come_from_descriptors_when_sysfs_has_none() -> None:
    """A blocked device is never configured, so it has no interface nodes in sysfs."""
    dev = device_from_attributes(attributes(COMPOSITE), descriptors(COMPOSITE), "p")
    assert dev.interfaces == ("03:01:01", "08:06:50")
    assert dev.problems == ()


def test_interface_association_is_not_an_interface() -> None:
    parsed = parse_descriptors(descriptors(PHONE_RNDIS))
    assert parsed.interfaces == ("e0:01:03", "0a:00:00")
    assert parsed.device is not None and parsed.device.device_class == 0xEF


def test_alternate_settings_are_listed_like_usbguard() -> None:
    """USBGuard lists every interface descriptor, alternate settings included (UVC cameras)."""
    from umockdev_bus import configuration, device_descriptor, interface

    blob = device_descriptor(0x046D, 0x0825) + configuration(
        interface(0, (0x0E, 0x01, 0x00)) + interface(1, (0x0E, 0x02, 0x00))
        + interface(1, (0x0E, 0x02, 0x00), alt=1), 2)
    assert parse_descriptors(blob).interfaces == ("0e:01:00", "0e:02:00", "0e:02:00")


def test_missing_serial_is_the_empty_serial_usbguard_hashes() -> None:
    dev = make(NO_SERIAL)
    assert dev.serial == "" and dev.problems == ()
    empty = make(dataclasses.replace(NO_SERIAL, serial=b""))
    assert dev.hash == empty.hash


@pytest.mark.parametrize("bad", [b"zz12", b"781", b"07810", b"0x78", b"", b"07 1"])
def test_non_hex_ids_give_a_placeholder_and_a_problem(bad: bytes) -> None:
    spec = dataclasses.replace(STICK, overrides={"idVendor": bad, "idProduct": bad})
    dev = make(spec)
    assert (dev.id_vendor, dev.id_product) == (ID_PLACEHOLDER, ID_PLACEHOLDER)
    assert any(p.startswith("idVendor") for p in dev.problems)
    assert any(p.startswith("idProduct") for p in dev.problems)
    assert dev.interfaces == ("08:06:50",)
    assert dev.hash != STICK_HASH


def test_missing_ids_and_strings() -> None:
    attrs = {k: v for k, v in attributes(STICK).items()
             if k not in ("idVendor", "idProduct", "product", "manufacturer")}
    dev = device_from_attributes(attrs, descriptors(STICK), "p")
    assert dev.id == f"{ID_PLACEHOLDER}:{ID_PLACEHOLDER}"
    assert (dev.name, dev.manufacturer) == ("", "")
    assert "idVendor: missing" in dev.problems


def test_uppercase_ids_are_normalised() -> None:
    spec = dataclasses.replace(KEYBOARD, overrides={"idVendor": b"046D", "idProduct": b"C31C"})
    dev = make(spec)
    assert dev.id == "046d:c31c" and dev.problems == ()


def test_non_utf8_strings_are_escaped_and_hashed_raw() -> None:
    name = b"Cruzer \xff\xfe Blade"
    spec = dataclasses.replace(STICK, product=name, manufacturer=b"San\xc3Disk")
    dev = make(spec)
    assert dev.name == "Cruzer \\xff\\xfe Blade"
    assert dev.manufacturer == "San\\xc3Disk"
    assert "product: not valid UTF-8" in dev.problems
    assert "manufacturer: not valid UTF-8" in dev.problems
    parsed = parse_descriptors(descriptors(spec))
    assert dev.hash == usbguard_hash(name, b"0781", b"5567", STICK.serial or b"",
                                     parsed.hash_input)
    json.dumps(dataclasses.asdict(dev))  # audit events must still encode


def test_huge_values_are_bounded() -> None:
    spec = dataclasses.replace(
        STICK, product=b"P" * 100_000, serial=b"S" * 5000, manufacturer=b"\xff" * 3000,
        connect_type=b"c" * 1000,
        overrides={"idVendor": b"0781" * 10_000, "busnum": b"9" * 50, "devnum": b"-3"},
    )
    dev = make(spec)
    assert len(dev.name) == STRING_MAX and len(dev.serial) == STRING_MAX
    assert len(dev.manufacturer) <= 4 * STRING_MAX and len(dev.connect_type) == STRING_MAX
    assert dev.id_vendor == ID_PLACEHOLDER and dev.id_product == "5567"
    assert dev.busnum is None and dev.devnum is None
    assert len(dev.problems) >= 6
    assert len(json.dumps(dataclasses.asdict(dev))) < 8000


def test_every_truncation_of_the_descriptors_is_evaluated() -> None:
    blob = descriptors(COMPOSITE)
    boundaries = set()
    pos = 0
    while pos < len(blob):
        pos += blob[pos]
        boundaries.add(pos)
    for cut in range(len(blob)):
        dev = device_from_attributes(attributes(COMPOSITE), blob[:cut], "p",
                                     interface_attrs=interface_attributes(COMPOSITE))
        assert dev.id == "1a2c:2124"
        assert set(dev.interfaces) <= {"03:01:01", "08:06:50"}
        if cut not in boundaries:
            assert any(p.startswith("descriptors:") for p in dev.problems), cut
    empty = device_from_attributes(attributes(COMPOSITE), b"", "p",
                                   interface_attrs=interface_attributes(COMPOSITE))
    assert empty.interfaces == ("03:01:01", "08:06:50")
    assert "descriptors: empty" in empty.problems
    assert "interfaces: taken from sysfs, not from descriptors" in empty.problems


def test_problems_are_bounded() -> None:
    bad_nodes = [{"bInterfaceClass": b"zz"}] * 500
    dev = device_from_attributes({}, b"\x00", "p", interface_attrs=bad_nodes)
    assert len(dev.problems) == 33 and dev.problems[-1].endswith("more problems")


def test_unreadable_and_oversized_descriptors() -> None:
    dev = device_from_attributes(attributes(STICK), None, "p")
    assert "descriptors: unreadable" in dev.problems and dev.interfaces == ()
    dev = device_from_attributes(attributes(STICK), descriptors(STICK) + b"\x02\x99" * 40_000,
                                 "p")
    assert dev.interfaces == ("08:06:50",)
    assert any("only" in p for p in dev.problems)


@pytest.mark.parametrize(
    "blob",
    [
        b"\x00" * 40,  # bLength 0 would loop forever in a naive parser
        b"\x01\x01",
        b"\x12\x01" + b"\xff" * 16 + b"\x09\x04" + b"\x00" * 7,  # interface outside config
        descriptors(STICK)[:18] * 3,  # repeated device descriptors
        b"\x05\x02\x00\x00\x00" + descriptors(STICK),  # short configuration descriptor
        b"\x07\x05\x81\x02\x00\x02\x00",  # endpoint with nothing above it
    ],
    ids=["zero-length", "short-device", "orphan-interface", "repeated", "short-config",
         "orphan-endpoint"],
)
def test_malformed_descriptors_are_problems(blob: bytes) -> None:
    dev = device_from_attributes(attributes(STICK), blob, "p")
    assert dev.problems and dev.id == "0781:5567"


def test_random_garbage_never_raises() -> None:
    rng = random.Random(1234)
    valid = descriptors(PHONE_RNDIS)
    for _ in range(2000):
        blob = bytearray(valid)
        for _ in range(rng.randint(1, 6)):
            blob[rng.randrange(len(blob))] = rng.randrange(256)
        if rng.random() < 0.3:
            blob = bytearray(rng.randbytes(rng.randint(0, 300)))
        dev = device_from_attributes(attributes(PHONE_RNDIS), bytes(blob), "p")
        assert len(dev.problems) <= 40
        assert all(re.fullmatch(r"[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2}", i) for i in dev.interfaces)


# --- the real stack: libudev/pyudev on a umockdev bus, and the real USBGuard ---------------

MALFORMED = (
    dataclasses.replace(STICK, port=1, devnum=2, product=b"Cruzer \xff Blade",
                        overrides={"idVendor": b"zz81"}),
    dataclasses.replace(KEYBOARD, port=2, devnum=3,
                        raw_descriptors=descriptors(KEYBOARD)[:25]),
)

_LIST_DEVICES = """
import dataclasses, json, pyudev
from floor_agent.usb_guard.device import device_from_udev
for d in pyudev.Context().list_devices(subsystem="usb", DEVTYPE="usb_device"):
    print(json.dumps(dataclasses.asdict(device_from_udev(d))))
"""


def _udev_devices(tmp_path: Path, specs: tuple[UsbSpec, ...]) -> dict[str, UsbDevice]:
    bus = tmp_path / "bus.umockdev"
    bus.write_text(umockdev_text(specs))
    out = subprocess.run(
        ["umockdev-run", "--device", str(bus), "--", sys.executable, "-c", _LIST_DEVICES],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    found = {}
    for line in out.splitlines():
        fields = json.loads(line)
        fields["interfaces"] = tuple(fields["interfaces"])
        fields["problems"] = tuple(fields["problems"])
        found[fields["sys_path"]] = UsbDevice(**fields)
    return found


@pytest.mark.parametrize("specs", [WELL_FORMED, MALFORMED], ids=["well-formed", "malformed"])
def test_pyudev_on_umockdev_gives_the_pure_result(
    tmp_path: Path, specs: tuple[UsbSpec, ...]
) -> None:
    found = _udev_devices(tmp_path, specs)
    hub = device_from_attributes(root_hub_attributes(), descriptors(ROOT_HUB),
                                 root_hub_parent_hash(HCD), sys_path="/sys" + HUB,
                                 interface_attrs=interface_attributes(ROOT_HUB))
    assert found.pop("/sys" + HUB) == hub
    assert hub.hash == ROOT_HUB_HASH
    expected = {"/sys" + s.devpath: make(s, parent_hash=hub.hash) for s in specs}
    assert found == expected


_RULE = re.compile(r'^allow id (\S+) serial "([^"]*)" name "([^"]*)" hash "([^"]+)" '
                   r'parent-hash "([^"]+)" (?:via-port "([^"]+)" )?with-interface '
                   r'(\{ [^}]+ \}|\S+) with-connect-type "([^"]*)"$')


def _usbguard_rules(tmp_path: Path, specs: tuple[UsbSpec, ...]) -> list[re.Match[str]]:
    bus = tmp_path / "bus.umockdev"
    bus.write_text(umockdev_text(specs))
    out = subprocess.run(
        ["umockdev-run", "--device", str(bus), "--", "usbguard", "generate-policy"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    rules = [_RULE.match(line) for line in out.splitlines()]
    assert all(rules), out
    return [m for m in rules if m is not None]


def test_hashes_match_the_real_usbguard(tmp_path: Path) -> None:
    """`usbguard generate-policy` reads the same fake sysfs through its own code."""
    rules = _usbguard_rules(tmp_path, WELL_FORMED)
    assert len(rules) == len(WELL_FORMED) + 1
    ours = {d.hash: d for d in (make(s) for s in WELL_FORMED)}
    hub = [m for m in rules if m[1] == "1d6b:0002"]
    assert [(m[4], m[5]) for m in hub] == [(ROOT_HUB_HASH, ROOT_HUB_PARENT_HASH)]
    for m in rules:
        if m[1] == "1d6b:0002":
            continue
        dev = ours.pop(m[4])
        interfaces = m[7].strip("{} ").split()
        assert (m[1], m[2], m[3], m[5], interfaces, m[8]) == (
            dev.id, dev.serial, dev.name, dev.parent_hash, list(dev.interfaces),
            dev.connect_type)
        assert m[6] in (None, dev.port)
    assert ours == {}


def test_malformed_devices_against_the_real_usbguard(tmp_path: Path) -> None:
    """USBGuard hashes a non-hex id and non-UTF-8 name as raw bytes, as we do; it rejects the
    truncated descriptors outright, where we keep the device (with problems) for policy."""
    rules = _usbguard_rules(tmp_path, MALFORMED)
    theirs = {m[4]: m for m in rules if m[1] != "1d6b:0002"}
    odd_stick, truncated = (make(s) for s in MALFORMED)
    assert list(theirs) == [odd_stick.hash]
    m = theirs[odd_stick.hash]
    assert (m[1], m[3]) == ("zz81:5567", "Cruzer \\xff Blade")
    assert odd_stick.name == "Cruzer \\xff Blade" and odd_stick.id == "????:5567"
    assert truncated.problems and truncated.id == "046d:c31c"
