"""The zero window at boot: a stick in its port at power-on never becomes a disk.

The image gets image.BOOT_LOCK (usbcore's option authorized_default=0 in /etc/modprobe.d, and
the initramfs rebuilt), the machine is powered on with a stick and a keyboard already plugged,
and the agent is not even enrolled: the kernel alone must keep the stick off from the first
moment. Then the agent is enrolled and started, and judges both.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from conftest import HostCollector, enroll, timing
from image import BOOT_LOCK_FILE, build
from test_workstation import block_devices, unit_show, usb_device
from vm import Guest, stick_at_power_on


@pytest.fixture(scope="module")
def locked(collector: HostCollector, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Guest]:
    image = build(boot_lock=True)
    workdir = tmp_path_factory.mktemp("vm-bootlock")
    vm = Guest(image, workdir, collector.port, extra_args=(
        *stick_at_power_on(workdir / "bootstick.img", "VMBOOTSTICK"),
        "-device", "usb-kbd,bus=xhci.0,serial=VMBOOTKBD"))
    try:
        timing("bootlock_qemu_start_to_system_running", vm.boot())
        yield vm
    finally:
        vm.close()


def test_the_kernel_alone_keeps_a_stick_plugged_at_power_on_off(locked: Guest) -> None:
    assert locked.run(f"cat /{BOOT_LOCK_FILE}").stdout.strip()
    # The option reached usbcore (loaded from the initramfs) and every root hub.
    assert locked.run("cat /sys/module/usbcore/parameters/authorized_default").stdout.strip() \
        == "0"
    assert set(locked.run("cat /sys/bus/usb/devices/usb*/authorized_default").stdout.split()) \
        == {"0"}
    # Not enrolled: the agent refused to start (exit 2), so nothing but the kernel is at work.
    assert unit_show(locked, "ActiveState")["ActiveState"] != "active"
    stick, stick_authorized = usb_device(locked, "VMBOOTSTICK")
    keyboard, keyboard_authorized = usb_device(locked, "VMBOOTKBD")
    assert stick_authorized == "0"
    # The price: a USB keyboard is off too until the agent runs (no typing in the initramfs).
    assert keyboard_authorized == "0"
    kernel_log = locked.run("journalctl -b -k --no-pager").stdout
    port = stick.rsplit("/", 1)[1]
    assert re.search(rf"usb {port}: Device is not authorized for usage", kernel_log)
    assert not re.search(r"\bsd[a-z]+\b|usb-storage [0-9]|Attached SCSI", kernel_log)
    assert block_devices(locked) == []


def test_the_agent_then_allows_the_keyboard_and_keeps_the_stick_off(
        locked: Guest, collector: HostCollector) -> None:
    enroll(locked, collector)
    stick, _ = usb_device(locked, "VMBOOTSTICK")
    keyboard, _ = usb_device(locked, "VMBOOTKBD")
    locked.wait_until(f"test $(cat {keyboard}/authorized) = 1")
    collector.wait_event("usb.blocked", serial="VMBOOTSTICK")
    collector.wait_event("usb.allowed", serial="VMBOOTKBD")
    locked.run("udevadm settle", timeout=60)
    assert locked.run(f"cat {stick}/authorized").stdout.strip() == "0"
    assert block_devices(locked) == []
