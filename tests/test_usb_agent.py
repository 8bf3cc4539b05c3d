"""`floor-agent workstation` with usb_guard, as a real process on a simulated USB bus.

umockdev-run gives the agent process (and a shell around it) a fake /sys: the agent runs its
real code path, udev and sysfs included, and reports through the real spool to a real
collector. umockdev is not a kernel: these tests show what the agent writes and reports.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import yaml
from collector_process import CollectorProcess
from umockdev_bus import KEYBOARD, STICK
from umockdev_harness import bus_text

from floor_agent.audit.agent import enroll

RULES = Path(__file__).resolve().parents[1] / "config" / "usb-rules.conf"
HUB = "/sys/bus/usb/devices/usb1"


def workstation(collector: CollectorProcess, name: str, rules: Path) -> Path:
    config = collector.agent_config(name)
    enroll(config.audit, "workstation", collector.token(), None)
    data = config.model_dump(mode="json")
    data["usb_guard"] = {"enabled": True, "rules_file": str(rules), "sys_root": "/sys"}
    path = collector.root / f"{name}-usb.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def on_bus(tmp_path: Path, script: str) -> str:
    bus = tmp_path / "bus.umockdev"
    bus.write_text(bus_text((STICK, KEYBOARD)))
    done = subprocess.run(["umockdev-run", "--device", str(bus), "--", "sh", "-c", script],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def spooled_kinds(collector: CollectorProcess, name: str) -> list[tuple[str, str]]:
    db = sqlite3.connect(collector.root / name / "spool.db")
    try:
        import orjson

        rows = db.execute("SELECT body FROM pending ORDER BY seq").fetchall()
    finally:
        db.close()
    return [(e["kind"], e["subject"]) for e in (orjson.loads(b) for (b,) in rows)]


def test_unparsable_rules_refuse_to_start_and_leave_the_bus_locked(
        sqlite_collector: CollectorProcess, tmp_path: Path) -> None:
    bad = tmp_path / "rules.conf"
    bad.write_text("allow with-interface match-all { 03:*:* }\nallow nme \"x\"\n")
    config = workstation(sqlite_collector, "ws-badrules", bad)
    sqlite_collector.stop()  # keep the events in the spool, where this test reads them
    out = on_bus(tmp_path, f"""
{sys.executable} -m floor_agent.cli workstation --config {config} 2>err.txt; echo "rc=$?"
grep -o 'rules.conf:2:[0-9]*' err.txt | head -1
for f in {HUB}/authorized_default {HUB}/interface_authorized_default; do echo $(cat $f); done
""")
    rc, where, default, interface_default = out.split()
    assert rc == "rc=2"
    assert where.startswith("rules.conf:2:")  # the line:column of the error
    assert (default, interface_default) == ("0", "0")  # and the bus is locked
    kinds = spooled_kinds(sqlite_collector, "ws-badrules")
    assert ("usb.rules_invalid", str(bad)) in kinds


def test_sigkill_leaves_the_bus_locked_and_the_stick_off(
        sqlite_collector: CollectorProcess, tmp_path: Path) -> None:
    config = workstation(sqlite_collector, "ws-kill", RULES)
    stick = f"/sys/bus/usb/devices/{STICK.sysname}"
    keyboard = f"/sys/bus/usb/devices/{KEYBOARD.sysname}"
    out = on_bus(tmp_path, f"""
{sys.executable} -m floor_agent.cli workstation --config {config} 2>err.txt &
agent=$!
for i in $(seq 100); do [ "$(cat {stick}/authorized)" = 0 ] && break; sleep 0.1; done
sleep 0.5
kill -KILL $agent; wait $agent; echo "rc=$?"
for f in {HUB}/authorized_default {stick}/authorized {keyboard}/authorized; do
  echo $(cat $f)
done
""")
    rc, default, stick_on, keyboard_on = out.split()
    assert rc == "rc=137"  # killed, no cleanup ran...
    assert (default, stick_on, keyboard_on) == ("0", "0", "1")  # ...and nothing was reopened
    store = sqlite_collector.store()
    try:
        from floor_agent.store.interface import EventQuery

        events = store.query_events(EventQuery(agent_id="ws-kill", kind_prefix="usb.")).events
    finally:
        store.close()
    blocked = [e for e in events if e["kind"] == "usb.blocked"]
    assert blocked and blocked[0]["data"]["rule"] == "block with-interface one-of { 08:*:* }"
    assert any(e["kind"] == "usb.allowed" and "046d:c31c" in e["subject"] for e in events)
