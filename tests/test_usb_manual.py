"""`floor-agent usb allow|block`: real CLI processes on a umockdev bus, events read from the spool.

Each scenario runs the CLI under umockdev-run (a fake /sys) next to `usb generate-policy`, whose
identity comes from pyudev (device_from_udev): the manual event must name the device exactly as
the guard does. The spool is the agent's, so the running agent would forward these events.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from umockdev_bus import BEHIND_HUB, EXT_HUB, KEYBOARD, STICK
from umockdev_harness import bus_text

from floor_agent.cli import main
from floor_agent.usb_guard.manual import ManualError, invoking_user, resolve_device, run_manual

CLI = f"{sys.executable} -m floor_agent.cli"
DEVICES = "/sys/bus/usb/devices"


def setup(tmp_path: Path) -> Path:
    config = tmp_path / "workstation.yaml"
    config.write_text(yaml.safe_dump({
        "role": "workstation",
        "audit": {"agent_id": "ws-manual", "state_dir": str(tmp_path / "state")},
        "usb_guard": {"sys_root": "/sys"},
    }))
    (tmp_path / "bus.umockdev").write_text(bus_text((STICK, KEYBOARD, EXT_HUB, BEHIND_HUB)))
    return config


def on_bus(tmp_path: Path, script: str, **env: str) -> list[str]:
    done = subprocess.run(["umockdev-run", "--device", str(tmp_path / "bus.umockdev"), "--",
                           "sh", "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


def spooled(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "state" / "spool.db"
    if not path.exists():
        return []
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT body FROM pending ORDER BY seq").fetchall()
    finally:
        db.close()
    return [orjson.loads(body) for (body,) in rows]


def policy_identity(policy: list[str], device_id: str) -> tuple[str, str]:
    """(hash, parent-hash) that generate-policy (pyudev's identity) gives the device."""
    line = next(line for line in policy if f"id {device_id} " in line)
    found = re.search(r'hash "([^"]+)" parent-hash "([^"]+)"', line)
    assert found, line
    return found.group(1), found.group(2)


def test_block_a_keyboard_by_path_then_by_name(tmp_path: Path) -> None:
    config = setup(tmp_path)
    kb = f"{DEVICES}/{KEYBOARD.sysname}"
    out = on_bus(tmp_path, f"""
{CLI} usb generate-policy > policy.txt
{CLI} usb block {kb} --reason "keys typed by themselves" --config {config} 2>err.txt
echo "rc=$? $(cat {kb}/authorized)"
{CLI} usb block {KEYBOARD.sysname} --reason "again" --config {config} 2>>err.txt; echo "rc=$?"
""", SUDO_USER="alice")
    assert out == ["rc=0 0", "rc=0"]
    assert "temporary" in (tmp_path / "err.txt").read_text()
    events = spooled(tmp_path)
    assert [e["kind"] for e in events] == ["usb.manual_block", "usb.manual_block"]
    event = events[0]
    assert event["severity"] == "warning" and event["agent_id"] == "ws-manual"
    assert event["subject"] == "usb 1-2 046d:c31c Logitech USB Keyboard"
    data = event["data"]
    assert data["who"] == "alice" and data["uid"] == os.getuid()
    assert data["reason"] == "keys typed by themselves"
    assert data["action"] == "deauthorized" and data["was_authorized"] is True
    assert (data["id"], data["port"], data["interfaces"]) == ("046d:c31c", "1-2", ["03:01:01"])
    policy = (tmp_path / "policy.txt").read_text().splitlines()
    assert (data["hash"], data["parent_hash"]) == policy_identity(policy, "046d:c31c")
    assert "temporary" in data["note"]
    assert events[1]["data"]["was_authorized"] is False


def test_allow_a_stick_and_one_behind_a_hub(tmp_path: Path) -> None:
    config = setup(tmp_path)
    stick = f"{DEVICES}/{STICK.sysname}"
    behind = f"{DEVICES}/{BEHIND_HUB.sysname}"
    out = on_bus(tmp_path, f"""
{CLI} usb generate-policy > policy.txt
for f in {stick}/authorized {stick}/{STICK.sysname}:1.0/authorized {behind}/authorized; do
  echo 0 > $f
done
{CLI} usb allow {STICK.sysname} --reason "firmware update, ticket 4711" --config {config}
echo "rc=$? $(cat {stick}/authorized) $(cat {stick}/{STICK.sysname}:1.0/authorized)"
{CLI} usb allow {BEHIND_HUB.sysname} --reason "scanner" --config {config}
echo "rc=$? $(cat {behind}/authorized)"
""", SUDO_USER="", LOGNAME="bob")
    assert out == ["rc=0 1 1", "rc=0 1"]
    events = spooled(tmp_path)
    assert [e["kind"] for e in events] == ["usb.manual_allow", "usb.manual_allow"]
    data = events[0]["data"]
    assert data["who"] == "bob" and data["reason"] == "firmware update, ticket 4711"
    assert data["action"] == "authorized" and data["was_authorized"] is False
    assert data["interfaces_authorized"] == ["1-1:1.0"]
    assert (data["id"], data["serial"], data["interfaces"]) == (
        "0781:5567", "4C530001234567891234", ["08:06:50"])
    policy = (tmp_path / "policy.txt").read_text().splitlines()
    assert (data["hash"], data["parent_hash"]) == policy_identity(policy, "0781:5567")
    behind_data = events[1]["data"]
    assert behind_data["port"] == BEHIND_HUB.sysname
    behind_line = next(line for line in policy if '"BEHIND0001"' in line)
    assert f'parent-hash "{behind_data["parent_hash"]}"' in behind_line  # the hub's hash


def test_unknown_device_or_root_hub_is_refused_and_nothing_recorded(tmp_path: Path) -> None:
    config = setup(tmp_path)
    out = on_bus(tmp_path, f"""
for d in 1-6 usb1 1-1:1.0 /etc/passwd ../1-1; do
  {CLI} usb block $d --reason test --config {config} 2>>err.txt; echo "rc=$?"
done
{CLI} usb allow 1-2 --reason "  " --config {config} 2>>err.txt; echo "rc=$?"
echo "$(cat {DEVICES}/1-1/authorized) $(cat {DEVICES}/1-2/authorized)"
""")
    assert out == ["rc=2"] * 6 + ["1 1"]
    err = (tmp_path / "err.txt").read_text()
    assert "1-6: no such USB device" in err
    assert "usb1: a root hub" in err
    assert "1-1:1.0: not a USB device name" in err
    assert "--reason must say why" in err
    assert spooled(tmp_path) == []


def test_reason_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    for action in ("allow", "block"):
        with pytest.raises(SystemExit) as exit_:
            main(["usb", action, "1-2"])
        assert exit_.value.code == 2
        assert "--reason" in capsys.readouterr().err


def test_invoking_user_prefers_the_sudo_caller() -> None:
    assert invoking_user({"SUDO_USER": "alice", "LOGNAME": "root"}, 0) == "alice"
    assert invoking_user({"LOGNAME": "bob", "USER": "x"}, 0) == "bob"
    assert invoking_user({}, 0) == "root"
    assert invoking_user({}, 2_000_000_000) == "uid 2000000000"


def test_resolve_device_stays_under_sys_root(tmp_path: Path) -> None:
    device = tmp_path / "devices" / "pci0" / "usb1" / "1-3"
    device.mkdir(parents=True)
    for name in ("authorized", "idVendor"):
        (device / name).write_text("1\n")
    (tmp_path / "bus" / "usb" / "devices").mkdir(parents=True)
    (tmp_path / "bus" / "usb" / "devices" / "1-3").symlink_to(device)
    assert resolve_device("1-3", tmp_path) == device
    assert resolve_device(str(device), tmp_path) == device
    outside = tmp_path.parent / f"{tmp_path.name}-other" / "1-3"
    outside.mkdir(parents=True)
    with pytest.raises(ManualError, match="not under"):
        resolve_device(str(outside), tmp_path)


def test_a_failed_write_is_recorded_as_failed(tmp_path: Path) -> None:
    """sysfs refuses (here: `authorized` is a directory, EISDIR): the attempt is still audited."""
    device = tmp_path / "devices" / "pci0" / "usb1" / "1-4"
    (device / "authorized").mkdir(parents=True)
    (device / "idVendor").write_text("0781\n")
    (tmp_path / "bus" / "usb" / "devices").mkdir(parents=True)
    (tmp_path / "bus" / "usb" / "devices" / "1-4").symlink_to(device)
    events: list[tuple[Any, ...]] = []
    result = run_manual("1-4", False, "test", tmp_path,
                        lambda *a, **kw: events.append((*a, kw)), env={"LOGNAME": "carol"},
                        uid=1000)
    assert not result.ok and result.action.startswith("failed: ")
    kind, subject, severity, data = events[0]
    assert (kind, severity, data["who"], data["uid"]) == ("usb.manual_block", "warning",
                                                           "carol", 1000)
    assert "EISDIR" in data["action"] and data["id"] == "0781:????"
