"""sysfs.py and monitor.py on the real stack: libudev/pyudev and file I/O under umockdev.

Each test runs a scenario function of this module in a child process whose /sys is a umockdev
testbed (tests/umockdev_harness.py). umockdev is a fake sysfs, not a kernel: these tests prove
which files the adapters touch, with which values, in which order, and how they report errors;
not that the kernel then blocks a device. Where a test needs the kernel's side (a device plugged
after lock down starts unauthorized and unconfigured, interfaces appear once it is authorized),
the scenario plays it and says which kernel rule it models.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from umockdev_bus import BEHIND_HUB, COMPOSITE, EXT_HUB, HUB, KEYBOARD, STICK
from umockdev_harness import (
    SECOND_HUB,
    BusHandle,
    bus_text,
    device_text,
    interfaces_text,
    run_scenario,
)

from floor_agent.usb_guard import sysfs

# --- scenarios (run in the child) ------------------------------------------------------------

def _lock_down(tb: BusHandle) -> dict[str, Any]:
    hubs = [str(p) for p in sysfs.root_hubs()]
    first = sysfs.lock_down()
    second = sysfs.lock_down()
    values = {h: [sysfs.read_attribute(f"{h}/{a}") for a in
                  ("authorized_default", "interface_authorized_default")] for h in hubs}
    return {"hubs": hubs, "values": values,
            "first": [first.changed, first.locked, first.ok],
            "second": [second.changed, second.locked, second.ok]}


def test_lock_down_sets_authorized_default_0_on_every_root_hub(tmp_path: Path) -> None:
    out = run_scenario(tmp_path, _lock_down, bus_text((STICK,), second_hub=True))
    usb1, usb2 = "/sys/bus/usb/devices/usb1", "/sys/bus/usb/devices/usb2"
    assert out["hubs"] == [usb1, usb2]
    assert out["values"] == {usb1: ["0", "0"], usb2: ["0", "0"]}
    changed = [f"{h}/{a}" for h in (usb1, usb2)
               for a in ("authorized_default", "interface_authorized_default")]
    assert out["first"] == [changed, [usb1, usb2], True]
    assert out["second"] == [[], [usb1, usb2], True]  # idempotent: nothing left to change


def _lock_down_one_hub_fails(tb: BusHandle) -> dict[str, Any]:
    os.chmod(tb.root() + "/sys" + SECOND_HUB + "/authorized_default", 0o444)
    result = sysfs.lock_down()
    return {"locked": result.locked, "ok": result.ok,
            "failed": [[e.path, e.errno, str(e)] for e in result.failed],
            "usb1": sysfs.read_attribute("/sys/bus/usb/devices/usb1/authorized_default"),
            "usb2": sysfs.read_attribute("/sys/bus/usb/devices/usb2/authorized_default")}


def test_lock_down_reports_a_failing_hub_and_still_locks_the_others(tmp_path: Path) -> None:
    out = run_scenario(tmp_path, _lock_down_one_hub_fails, bus_text((), second_hub=True),
                       drop_dac_override=True)
    path = "/sys/bus/usb/devices/usb2/authorized_default"
    assert out["locked"] == ["/sys/bus/usb/devices/usb1"]
    assert out["ok"] is False
    assert len(out["failed"]) == 1
    assert out["failed"][0][:2] == [path, errno.EACCES]
    assert path in out["failed"][0][2] and "EACCES" in out["failed"][0][2]
    assert (out["usb1"], out["usb2"]) == ("0", "1")


def test_lock_down_without_any_root_hub_is_not_ok(tmp_path: Path) -> None:
    (tmp_path / "bus" / "usb" / "devices").mkdir(parents=True)
    empty = sysfs.lock_down(tmp_path)
    assert not empty.ok and empty.failed[0].errno == errno.ENOENT
    missing = sysfs.lock_down(tmp_path / "nowhere")
    assert not missing.ok and str(tmp_path / "nowhere") in str(missing.failed[0])


def _authorize(tb: BusHandle) -> dict[str, Any]:
    dev = "/sys" + COMPOSITE.devpath
    hid, storage = f"{dev}/1-4:1.0", f"{dev}/1-4:1.1"
    seen = []

    def state() -> list[bool]:
        return [sysfs.read_authorized(p) for p in (dev, hid, storage)]

    seen.append(state())
    sysfs.authorize_interface(storage, False)  # keep the keyboard, drop the disk
    seen.append(state())
    sysfs.authorize(dev, False)
    seen.append(state())
    sysfs.authorize(dev, True)
    sysfs.authorize_interface(storage, True)
    seen.append(state())
    stick = "/sys" + STICK.devpath
    rejected = [sysfs.reject(dev), sysfs.reject(stick)]
    return {"seen": seen, "rejected": rejected,
            "after_reject": [sysfs.read_authorized(dev), sysfs.read_authorized(stick),
                             sysfs.read_attribute(dev + "/remove")]}


def test_authorize_a_device_and_a_single_interface(tmp_path: Path) -> None:
    bus = bus_text((STICK, COMPOSITE)).replace(
        f"P: {COMPOSITE.devpath}\n", f"P: {COMPOSITE.devpath}\nA: remove=\n", 1)
    out = run_scenario(tmp_path, _authorize, bus)
    # each write touches its own file only (the kernel would also unbind drivers: not emulated)
    assert out["seen"] == [[True, True, True], [True, True, False], [False, True, False],
                           [True, True, True]]
    # reject deauthorizes, then writes `remove` where the device has it
    assert out["rejected"] == ["removed", "deauthorized"]
    assert out["after_reject"] == [False, False, "1"]


def _errors(tb: BusHandle) -> list[list[Any]]:
    gone = "/sys" + STICK.devpath.replace("/1-1", "/1-7")
    stick = "/sys" + STICK.devpath
    os.chmod(tb.root() + stick + "/authorized", 0o444)  # as the kernel's read-only attributes
    with open(tb.root() + stick + "/1-1:1.0/authorized", "w") as f:
        f.write("yes\n")
    calls: list[tuple[str, Callable[[], object]]] = [
        ("authorize missing", lambda: sysfs.authorize(gone, True)),
        ("interface missing", lambda: sysfs.authorize_interface(gone + "/1-7:1.0", False)),
        ("read missing", lambda: sysfs.read_authorized(gone)),
        ("reject missing", lambda: sysfs.reject(gone)),
        ("authorize read-only", lambda: sysfs.authorize(stick, False)),
        ("read garbage", lambda: sysfs.read_authorized(stick + "/1-1:1.0")),
        ("root hubs missing", lambda: sysfs.root_hubs("/sys/nowhere")),
    ]
    out = []
    for label, call in calls:
        try:
            call()
            out.append([label, None, None, "no error"])
        except sysfs.SysfsError as e:
            out.append([label, e.path, e.errno, str(e)])
    return out


def test_errors_name_the_path_and_errno(tmp_path: Path) -> None:
    out = run_scenario(tmp_path, _errors, bus_text((STICK,)), drop_dac_override=True)
    gone = "/sys" + STICK.devpath.replace("/1-1", "/1-7")
    stick = "/sys" + STICK.devpath
    expected = {
        "authorize missing": (gone + "/authorized", errno.ENOENT),
        "interface missing": (gone + "/1-7:1.0/authorized", errno.ENOENT),
        "read missing": (gone + "/authorized", errno.ENOENT),
        "reject missing": (gone + "/authorized", errno.ENOENT),
        "authorize read-only": (stick + "/authorized", errno.EACCES),
        "read garbage": (stick + "/1-1:1.0/authorized", None),
        "root hubs missing": ("/sys/nowhere/bus/usb/devices", errno.ENOENT),
    }
    assert {label: (path, err) for label, path, err, _ in out} == expected
    for label, path, err, message in out:
        assert path in message, label
        if err is not None:
            assert errno.errorcode[err] in message, label
    assert "'yes'" in out[5][3]


# --- monitor.py: hot-plug through libudev, present devices ---------------------------------

def _hot_plug(tb: BusHandle) -> dict[str, Any]:
    import queue
    import threading

    import pyudev

    from floor_agent.usb_guard.device import device_from_udev
    from floor_agent.usb_guard.monitor import UdevMonitor

    assert sysfs.lock_down().ok
    monitor = UdevMonitor(pyudev.Context())  # listening from here on
    shutdown = threading.Event()
    events: queue.Queue[tuple[str, pyudev.Device]] = queue.Queue()
    log: list[list[Any]] = []

    def handler(action: str, device: pyudev.Device) -> None:
        events.put((action, device))
        if action == "bind":
            raise RuntimeError("a failing handler must not stop the monitor")

    thread = monitor.start(handler, shutdown)

    def wait(action: str, sys_path: str) -> pyudev.Device:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                got, device = events.get(timeout=deadline - time.monotonic())
            except queue.Empty:
                break
            log.append([got, device.sys_path, device.device_type])
            if (got, device.sys_path) == (action, sys_path):
                return device
        raise AssertionError(f"no {action} for {sys_path}; saw {log}")

    dev = "/sys" + COMPOSITE.devpath
    hid, storage = f"{dev}/1-4:1.0", f"{dev}/1-4:1.1"
    # models the kernel after lock down: a new device starts with authorized = its root hub's
    # authorized_default (0) and is not configured, so it has no interface nodes yet
    default = sysfs.read_attribute("/sys/bus/usb/devices/usb1/authorized_default")
    tb.add("P: /devices/virtual/misc/noise\nE: SUBSYSTEM=misc\n\n")  # filtered out
    tb.add(device_text(COMPOSITE, authorized=int(default)))
    added = wait("add", dev)
    identity = device_from_udev(added)
    before = sysfs.read_authorized(dev)
    sysfs.authorize(dev, True)  # policy allowed the device
    # models the kernel configuring the authorized device: interfaces appear, each with
    # authorized = the root hub's interface_authorized_default (0 after lock down)
    tb.add(interfaces_text(COMPOSITE, authorized=0))
    hid_device = wait("add", hid)
    wait("add", storage)
    sysfs.authorize_interface(hid_device.sys_path, True)  # the keyboard, not the disk
    tb.uevent(hid, "unbind")  # not an action the monitor passes on
    tb.uevent(hid, "bind")  # the handler raises on it
    wait("bind", hid)
    interfaces = [sysfs.read_authorized(hid), sysfs.read_authorized(storage)]
    tb.set_attribute(dev, "product", "Renamed")
    tb.uevent(dev, "change")
    changed_name = device_from_udev(wait("change", dev)).name
    tb.unplug(dev, (hid, storage))
    wait("remove", dev)
    alive = thread.is_alive()
    shutdown.set()
    stop = time.monotonic()
    thread.join(2)
    return {
        "log": log, "alive": alive, "joined_s": time.monotonic() - stop,
        "stopped": not thread.is_alive(),
        "identity": [identity.id, identity.interfaces, identity.port, identity.serial,
                     identity.sys_path],
        "before": before, "interfaces": interfaces, "changed_name": changed_name,
        "final": [sysfs.read_attribute("/sys/bus/usb/devices/usb1/authorized_default")],
    }


def test_hot_plug_is_seen_with_its_action_and_identity(tmp_path: Path) -> None:
    out = run_scenario(tmp_path, _hot_plug, bus_text((STICK,)))
    dev = "/sys" + COMPOSITE.devpath
    hid, storage = f"{dev}/1-4:1.0", f"{dev}/1-4:1.1"
    assert out["log"] == [
        ["add", dev, "usb_device"],
        ["add", hid, "usb_interface"],
        ["add", storage, "usb_interface"],
        ["bind", hid, "usb_interface"],  # unbind and the misc device were filtered out
        ["change", dev, "usb_device"],
        ["remove", hid, "usb_interface"],
        ["remove", storage, "usb_interface"],
        ["remove", dev, "usb_device"],
    ]
    # identity of the unconfigured device comes from its descriptors
    assert out["identity"] == ["1a2c:2124", ["03:01:01", "08:06:50"], "1-4", "0123456789AB",
                               dev]
    assert out["before"] is False
    assert out["interfaces"] == [True, False]  # composite: keyboard on, disk stays off
    assert out["changed_name"] == "Renamed"
    assert out["alive"] and out["stopped"] and out["joined_s"] < 1.0
    assert out["final"] == ["0"]  # nothing wrote authorized_default back to 1


def _present(tb: BusHandle) -> list[list[str]]:
    import pyudev

    from floor_agent.usb_guard.monitor import present_devices

    return [[d.sys_path, d.device_type] for d in present_devices(pyudev.Context())]


def test_present_devices_lists_parents_before_children(tmp_path: Path) -> None:
    out = run_scenario(tmp_path, _present,
                       bus_text((EXT_HUB, BEHIND_HUB, STICK, KEYBOARD), second_hub=True))
    paths = [p for p, _ in out]
    assert {t for _, t in out} == {"usb_device"}
    assert sorted(paths) == sorted("/sys" + p for p in (
        HUB, SECOND_HUB, EXT_HUB.devpath, BEHIND_HUB.devpath, STICK.devpath, KEYBOARD.devpath))
    for i, path in enumerate(paths):  # no device comes before a hub it is behind
        assert not any(later != path and path.startswith(later + "/") for later in paths[i:])
    assert paths[:2] == ["/sys" + HUB, "/sys" + SECOND_HUB]
    assert paths.index("/sys" + EXT_HUB.devpath) < paths.index("/sys" + BEHIND_HUB.devpath)


def _monitor_fails(tb: BusHandle) -> dict[str, Any]:
    import threading

    import pyudev

    from floor_agent.usb_guard.monitor import UdevMonitor

    monitor = UdevMonitor(pyudev.Context())
    shutdown = threading.Event()
    thread = monitor.start(lambda action, device: None, shutdown)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, monitor._monitor.fileno())  # the event source breaks under the thread
    thread.join(3)
    return {"stopped": not thread.is_alive(), "shutdown": shutdown.is_set(),
            "error": type(monitor.error).__name__, "message": str(monitor.error)}


def test_a_failing_event_source_shuts_the_agent_down(tmp_path: Path) -> None:
    out = run_scenario(tmp_path, _monitor_fails, bus_text(()))
    assert {k: out[k] for k in ("stopped", "shutdown", "error")} == {
        "stopped": True, "shutdown": True, "error": "OSError"}
    assert "non-socket" in out["message"]  # ENOTSOCK from the monitor's recvmsg


def test_probe_interface_names_the_interface_to_the_bus(tmp_path: Path) -> None:
    """An interface authorized after the kernel configured it is probed again by name; a bus
    without drivers_probe (a simulated sysfs) is not an error; a probe the kernel refuses is."""
    interface = "/sys/devices/pci0000:00/0000:00:14.0/usb1/1-3/1-3:1.0"
    assert sysfs.probe_interface(interface, tmp_path) is False
    probe = tmp_path / "bus" / "usb" / "drivers_probe"
    probe.parent.mkdir(parents=True)
    probe.write_bytes(b"")
    assert sysfs.probe_interface(interface + "/", tmp_path) is True
    assert probe.read_bytes() == b"1-3:1.0"
    probe.unlink()
    probe.mkdir()  # a write the kernel refuses (here: EISDIR) names the path
    with pytest.raises(sysfs.SysfsError, match="drivers_probe"):
        sysfs.probe_interface(interface, tmp_path)
