"""The workstation role on a real kernel under systemd as PID 1 (Debian 12 in QEMU).

Every assertion reads the guest's kernel (sysfs, /dev, dmesg, the network links) or systemd;
`usb.*` events are read from the collector on the host that the agent delivered them to.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime

import pytest
import yaml
from conftest import HostCollector, timing
from vm import Guest, GuestError

UNIT = "floor-agent.service"
CONFIG = "/etc/floor-agent/workstation.yaml"

# One line per USB device: "<sysfs name> <authorized> <serial>".
LIST_USB = ("for d in /sys/bus/usb/devices/*; do case ${d##*/} in *:*|usb*) continue;; esac; "
            "echo ${d##*/} $(cat $d/authorized) $(cat $d/serial 2>/dev/null || echo -); done")


def usb_device(guest: Guest, serial: str, seconds: float = 30) -> tuple[str, str]:
    """(sysfs path, authorized) of the device with this serial, once the kernel has it."""
    out = guest.wait_until(f"grep -l '^{serial}$' /sys/bus/usb/devices/*/serial", seconds)
    path = out.split()[0].rsplit("/", 1)[0]
    return path, guest.run(f"cat {path}/authorized").stdout.strip()


def block_devices(guest: Guest) -> list[str]:
    """Block devices besides the system disk and the kernel's own loop devices."""
    return sorted(name for name in guest.run("ls /sys/block").stdout.split()
                  if name != "vda" and not name.startswith(("loop", "ram")))


def unit_show(guest: Guest, *props: str) -> dict[str, str]:
    out = guest.run(["systemctl", "show", UNIT, *(f"--property={p}" for p in props)]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def uptime(guest: Guest) -> float:
    return float(guest.run("cat /proc/uptime").stdout.split()[0])


def dmesg_seconds(guest: Guest, pattern: str) -> list[float]:
    """Kernel timestamps (seconds since boot) of the dmesg lines matching `pattern`."""
    out = guest.run("dmesg").stdout
    return [float(m.group(1)) for m in re.finditer(r"^\[\s*([\d.]+)\] (.*)$", out, re.M)
            if re.search(pattern, m.group(2))]


def test_agent_runs_from_its_unit_and_locked_the_bus(guest: Guest,
                                                      collector: HostCollector) -> None:
    state = unit_show(guest, "ActiveState", "SubState", "Type", "MainPID")
    assert state["ActiveState"] == "active" and state["Type"] == "notify", state
    comm = guest.run(f"cat /proc/{state['MainPID']}/cmdline | tr '\\0' ' '").stdout
    assert "floor-agent workstation --config /etc/floor-agent/workstation.yaml" in comm
    assert guest.run("cat /proc/1/comm").stdout.strip() == "systemd"
    hubs = guest.run("cat /sys/bus/usb/devices/usb*/authorized_default").stdout.split()
    assert hubs and set(hubs) == {"0"}, hubs
    collector.wait_event("agent.started")
    collector.wait_event("usb.locked_down")


def test_stick_stays_off_and_its_block_reaches_the_collector(guest: Guest,
                                                             collector: HostCollector) -> None:
    clocks = guest.run("cat /proc/uptime; date +%s.%N").stdout.split()
    before, wall_before = float(clocks[0]), float(clocks[2])
    plugged = time.monotonic()
    guest.plug_stick("stick1", serial="VMSTICK1")
    path, authorized = usb_device(guest, "VMSTICK1")
    assert authorized == "0"
    event = collector.wait_event("usb.blocked", serial="VMSTICK1")
    timing("plug_to_usb_blocked_at_collector_host_clock", time.monotonic() - plugged)
    timing("plug_to_usb_blocked_stamped_by_agent",
           datetime.fromisoformat(event["ts"]).timestamp() - wall_before)
    assert event["data"]["rule"] == "block with-interface one-of { 08:*:* }"
    # Give the kernel every chance to bind usb-storage, then look: nothing may have come up.
    guest.run("udevadm settle", timeout=60)
    assert guest.run(f"cat {path}/authorized").stdout.strip() == "0"
    assert block_devices(guest) == []
    assert guest.run("ls /dev/sd* 2>/dev/null", check=False).stdout == ""
    assert guest.run(f"ls -d {path}/*:* 2>/dev/null", check=False).stdout == ""  # no interfaces
    assert not dmesg_seconds(guest, r"\bsd[a-z]+\b|usb-storage|Attached SCSI")
    refused = [t for t in dmesg_seconds(guest, r"Device is not authorized") if t >= before]
    assert refused
    timing("plug_to_kernel_not_authorized_upper_bound", refused[0] - before)
    guest.unplug("stick1")
    guest.wait_until(f"test ! -e {path}")


def test_keyboard_and_tablet_are_authorized_with_input_devices(guest: Guest,
                                                               collector: HostCollector) -> None:
    # As on a workstation whose own keyboard is in use: the HID driver is loaded already, so
    # the kernel probes a new device's interface the moment it is configured.
    guest.run("modprobe usbhid")
    plugged = {}
    for driver, serial in (("usb-kbd", "VMKBD1"), ("usb-tablet", "VMTAB1")):
        guest.plug(driver, driver, serial=serial)
        path, _ = usb_device(guest, serial)
        plugged[driver] = path
        guest.wait_until(f"test $(cat {path}/authorized) = 1")
        guest.wait_until(f"test $(cat {path}/*:1.0/authorized) = 1")
        allowed = collector.wait_event("usb.allowed", serial=serial)
        assert allowed["data"]["rule"] == "allow with-interface match-all { 03:*:* }"
    missing = []
    for driver, path in plugged.items():
        # Its HID interface bound, its input device made by the kernel, its node by udev.
        try:
            events = guest.wait_until(f"ls -d {path}/*:*/*/input/input*/event*", 20).split()
        except GuestError:
            missing.append((driver, path))
            continue
        guest.wait_until(f"test -c /dev/input/{events[0].rsplit('/', 1)[1]}")
    refused = guest.run("dmesg", check=False).stdout
    for driver in plugged:
        guest.unplug(driver)
    if missing:
        names = [path.rsplit("/", 1)[1] for _, path in missing]
        if all(f"usbhid {name}:1.0: Interface 0 is not authorized for usage" in refused
               for name in names):
            # Known (issue 18): under interface_authorized_default=0 the kernel probes the
            # interface while it is still unauthorized and refuses it; the agent then writes
            # authorized=1 but never asks the kernel to probe again (drivers_probe, see
            # Documentation/usb/authorization.rst), so the device is on with no driver.
            pytest.xfail(f"authorized but no driver bound: {missing}")
        raise AssertionError(f"no input device for {missing}")


def test_usb_network_adapter_gets_no_interface(guest: Guest, collector: HostCollector) -> None:
    links = guest.run("ls /sys/class/net").stdout.split()
    guest.plug("usb-net", "usbnet1", serial="VMNET1")
    path, authorized = usb_device(guest, "VMNET1")
    assert authorized == "0"
    collector.wait_event("usb.blocked", serial="VMNET1")
    guest.run("udevadm settle", timeout=60)
    assert guest.run("ls /sys/class/net").stdout.split() == links
    assert not dmesg_seconds(guest, r"cdc_ether|rndis_host|register 'cdc")
    guest.unplug("usbnet1")
    guest.wait_until(f"test ! -e {path}")


def test_smart_card_reader_is_blocked_as_the_default_policy_says(
        guest: Guest, collector: HostCollector) -> None:
    # CCID is class 0b: no rule of config/usb-rules.conf allows it, so the implicit block.
    guest.plug("usb-ccid", "ccid1", serial="VMCCID1")
    path, authorized = usb_device(guest, "VMCCID1")
    assert authorized == "0"
    event = collector.wait_event("usb.blocked", serial="VMCCID1")
    assert "08:" not in event["data"]["rule"]
    guest.unplug("ccid1")
    guest.wait_until(f"test ! -e {path}")


def test_killed_agent_is_restarted_and_the_bus_stays_locked_meanwhile(
        guest: Guest, collector: HostCollector) -> None:
    old = unit_show(guest, "MainPID", "NRestarts")
    t0 = time.monotonic()
    guest.run(f"kill -9 {old['MainPID']}")
    guest.plug_stick("stick2", serial="VMSTICK2")  # while no agent runs
    path, authorized = usb_device(guest, "VMSTICK2")
    assert authorized == "0"
    guest.wait_until(f"systemctl is-active {UNIT} && "
                     f"test $(systemctl show -P MainPID {UNIT}) != {old['MainPID']}", 120)
    timing("kill9_to_agent_ready_again", time.monotonic() - t0)
    new = unit_show(guest, "MainPID", "NRestarts", "ActiveEnterTimestampMonotonic")
    assert int(new["NRestarts"]) == int(old["NRestarts"]) + 1
    # The stick came while the agent was down: the kernel alone kept it off.
    seen = dmesg_seconds(guest, r"Device is not authorized")[-1]
    assert seen < int(new["ActiveEnterTimestampMonotonic"]) / 1e6
    collector.wait_event("usb.blocked", serial="VMSTICK2")
    guest.run("udevadm settle", timeout=60)
    assert guest.run(f"cat {path}/authorized").stdout.strip() == "0"
    assert block_devices(guest) == []
    guest.unplug("stick2")
    guest.wait_until(f"test ! -e {path}")


# netlock as an admin of an offline floor configures it: the collector is the one allowed
# destination (a literal address: the ruleset is rendered before any resolver is reachable),
# the floor's LAN the one network, no default route. The canaries are documentation addresses
# (RFC 5737/3849) and the resolver is the guest's own loopback, so every probe netlock sends
# ends inside the guest (and QEMU's restrict=on drops anything that would not).
NETLOCK = {
    "enabled": True,
    "allow": [{"name": "collector", "addresses": ["10.0.2.100"], "tcp": [8443],
               "must_reach": [8443]}],
    "networks": ["10.0.2.0/24"],
    "canaries": [{"address": "192.0.2.1"}, {"address": "2001:db8::1"}],
    "resolv_conf": "/etc/floor-agent/resolv.conf",
    # The collector is QEMU's guestfwd, which starts relay.py for every connection: a connect
    # takes ~0.1-1 s under emulation where a floor's LAN answers in a millisecond.
    "probe_timeout_ms": 3000,
}
NETLOCK_TABLE = "floor_netlock"


def test_netlock_enforces_its_ruleset_and_verifies(guest: Guest,
                                                   collector: HostCollector) -> None:
    """Enabled in workstation.yaml and the unit restarted: the default-deny table is in the
    kernel and every check passes, as the agent reports to the collector. (The reboot test
    below then boots with this config.)"""
    config = yaml.safe_load(guest.read(CONFIG))
    config["netlock"].update(NETLOCK)
    guest.write(CONFIG, yaml.safe_dump(config, sort_keys=False).encode())
    guest.write("/etc/floor-agent/resolv.conf", b"nameserver 127.0.0.1\n")
    guest.run(["floor-agent", "config", "check", CONFIG])
    before = len(collector.events("net.verified"))
    guest.run(f"systemctl restart {UNIT}", timeout=300)
    collector.wait_event("net.enforced", table=f"inet {NETLOCK_TABLE}")
    deadline = time.monotonic() + 120
    while len(collector.events("net.verified")) <= before:
        assert time.monotonic() < deadline, "no net.verified after the restart"
        time.sleep(0.2)
    verified = collector.events("net.verified")[0]["data"]
    assert verified["fail"] == 0, [c for c in verified["checks"] if c["verdict"] != "pass"]
    _assert_default_deny(guest)


def _assert_default_deny(guest: Guest) -> None:
    """netlock's table is in the kernel with default-deny output and forward chains, and a
    host on the floor's own network that the allowlist does not name (QEMU's gateway, which
    has a route) is refused by it: dropped in output, the connect fails at once with EPERM."""
    table = guest.run(["nft", "-j", "list", "table", "inet", NETLOCK_TABLE]).stdout
    chains = {item["chain"]["name"]: item["chain"] for item in json.loads(table)["nftables"]
              if "chain" in item}
    assert {chains[name].get("policy") for name in ("output", "forward")} == {"drop"}, chains
    probe = guest.run(["python3", "-c", "import socket; s = socket.socket(); s.settimeout(3)\n"
                       "try:\n s.connect(('10.0.2.2', 443)); print('open')\n"
                       "except OSError as e:\n print(type(e).__name__, e.errno)"]).stdout
    assert probe.split()[0] in ("PermissionError", "ConnectionRefusedError"), probe
    assert guest.run("ip route get 10.0.2.2", check=False).returncode == 0


def test_stick_plugged_across_a_reboot_never_becomes_a_disk(guest: Guest,
                                                            collector: HostCollector) -> None:
    guest.plug_stick("stick3", serial="VMSTICK3")
    usb_device(guest, "VMSTICK3")
    old_boot = guest.run("cat /proc/sys/kernel/random/boot_id").stdout.strip()
    reset = time.monotonic()
    guest.reset()
    ready = guest.wait_ready(600)
    assert ready["boot_id"] != old_boot
    guest.run("systemctl is-system-running --wait", timeout=600, check=False)
    agent = unit_show(guest, "ActiveState", "ActiveEnterTimestampMonotonic", "NRestarts")
    assert agent["ActiveState"] == "active", agent
    timing("reboot_kernel_start_to_agent_ready_guest_clock",
           int(agent["ActiveEnterTimestampMonotonic"]) / 1e6)
    timing("reset_to_system_running_host_clock", time.monotonic() - reset)
    path, authorized = usb_device(guest, "VMSTICK3")
    kernel_log = guest.run("journalctl -b -k --no-pager -o short-monotonic").stdout
    stick_lines = [line for line in kernel_log.splitlines()
                   if re.search(r"\bsd[a-z]*\b|usb-storage|uas|SCSI|VMSTICK3|"
                                + re.escape(path.rsplit("/", 1)[1]) + ":", line)]
    assert authorized == "0"
    assert block_devices(guest) == []   # now, with the agent running
    disk = [line for line in stick_lines
            if re.search(r"\bsd[a-z]+\b|usb-storage [0-9]|Attached SCSI", line)]
    boot_lock = guest.run("cat /sys/module/usbcore/parameters/authorized_default").stdout
    if disk and boot_lock.strip() == "-1":
        # Known (issue 18): nothing installed locks the bus before the agent starts, so a
        # stick in its port at boot is a disk (/dev/sda) until the agent deauthorizes it.
        # test_boot_lock.py proves the mechanism that closes this window.
        pytest.xfail("no boot lock installed: the stick was a disk from "
                     f"{disk[0].split(']')[0]}] until the agent started "
                     f"({int(agent['ActiveEnterTimestampMonotonic']) / 1e6:.1f} s)")
    assert not disk, stick_lines


def test_netlock_ruleset_is_loaded_before_the_network_comes_up(
        guest: Guest, collector: HostCollector) -> None:
    """In the boot after the reset above: the agent (Before=network-pre.target, Type=notify)
    was ready, its ruleset loaded and verified, before systemd-networkd started and before
    networkd brought the link up; the table is there and default-deny after boot."""
    agent = unit_show(guest, "ActiveEnterTimestampMonotonic")
    ready = int(agent["ActiveEnterTimestampMonotonic"]) / 1e6
    networkd = guest.run(["systemctl", "show", "systemd-networkd.service",
                          "--property=ExecMainStartTimestampMonotonic",
                          "--value"]).stdout.strip()
    pre = guest.run(["systemctl", "show", "network-pre.target",
                     "--property=ActiveEnterTimestampMonotonic", "--value"]).stdout.strip()
    journal = guest.run("journalctl -b -o short-monotonic --no-pager "
                        "-u systemd-networkd.service -u floor-agent.service").stdout
    link_up = [float(m.group(1)) for m in re.finditer(
        r"^\[\s*([\d.]+)\] .*systemd-networkd.*: (Link UP|Gained carrier|Configured)",
        journal, re.M)]
    enforced = [float(m.group(1)) for m in re.finditer(
        r"^\[\s*([\d.]+)\] .*netlock watching", journal, re.M)]
    assert link_up and enforced, journal[-3000:]
    timing("reboot_agent_ready_before_networkd_start_s",
           int(networkd) / 1e6 - ready)
    assert ready < int(pre) / 1e6 <= int(networkd) / 1e6, (ready, pre, networkd)
    assert enforced[0] < ready < link_up[0], (enforced, ready, link_up, journal[-3000:])
    _assert_default_deny(guest)
    # This boot's enforcement and verification reached the collector too.
    boots = collector.events("net.enforced", table=f"inet {NETLOCK_TABLE}")
    assert len(boots) >= 2, boots
