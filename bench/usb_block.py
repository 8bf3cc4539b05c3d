"""USB block latency (ours vs the real USBGuard daemon) and rule matching throughput.

    .venv/bin/python bench/usb_block.py                 # 1,000 plugs each (~7 min) + rule rate
    .venv/bin/python bench/usb_block.py --plugs 200 --skip-usbguard

Prints one line per figure on stdout; progress goes to stderr. Needs root and the Debian
packages usbguard, umockdev, gir1.2-umockdev-1.0, python3-gi.

1. usb_block_*_usbguard: the company's side-by-side tool ../shared/tools/usbguard-sidebyside
   (run.py, descr.py, its usbguard-daemon.conf), run unchanged from a scratch copy, as its
   measure.sh does, with two differences: the rules file is our config/usb-rules.conf (USBGuard
   rule language, so both sides judge by the same rules), and the copied rules.conf is made
   0600 (the shared copy is read-only 0444 and the daemon refuses a rules file others can
   read; measure.sh fails on that as shipped). The daemon runs in its own PID namespace and gets
   kernel-format uevents; the clock starts when the stick's sysfs nodes exist, just before the
   uevents go out, and stops when its `authorized` reads 0 (polled every 0.5 ms).
2. usb_block_*_ours: the same bus and the same SanDisk stick (descr.py from that copy), the
   same plug/unplug cycle and the same 0.5 ms poll of `authorized`, against our UsbGuard
   (default rules) in a child process, as tests/umockdev_harness.py runs it: the testbed parent
   is Debian's python3 under umockdev-wrapper, so umockdev's own uevents reach the guard's
   pyudev monitor. umockdev sends an 'add' uevent from inside add_from_string, at a moment
   the caller cannot time, so the stick's device paragraph is added with a DEVTYPE the guard's
   monitor filters out, then given DEVTYPE=usb_device, and the clock starts right before
   Testbed.uevent(add) sends the real one (as run.py's clock starts right before its sendto).
   Its interface paragraph follows once it is blocked (a locked-down kernel would not
   configure it at all). The details give the figure from the guard's receipt of the event
   (child-side timestamp on the same system-wide monotonic clock) and from the start of
   add_from_string (which includes umockdev creating the nodes, 10-20 ms here).
3. rule_match_rate: policy.decide for that stick (device_from_attributes over its real
   descriptors) against 1,000 generated rules where only the last one matches, and against
   the default rules.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# shared/ sits beside the repository (../shared from its root); FLOOR_AGENT_SHARED names
# another place
SHARED = Path(os.environ.get("FLOOR_AGENT_SHARED", REPO.parent / "shared")
              ) / "tools" / "usbguard-sidebyside"
RULES = REPO / "config" / "usb-rules.conf"

# Ours: the testbed parent (Debian python3 with GObject, under umockdev-wrapper). Its plug,
# unplug and wait_auth follow run.py's (stock mode: umockdev's own uevents).
_PARENT = r"""
import json, os, statistics, subprocess, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gi
gi.require_version("UMockdev", "1.0")
from gi.repository import UMockdev
import descr

N = int(sys.argv[1])
tb = UMockdev.Testbed.new()
root = tb.get_root_dir()
tb.add_from_string(descr.base_bus())
env = dict(os.environ, UMOCKDEV_DIR=root)
assert os.path.isdir(root + "/sys/bus/usb/devices")  # never the real /sys
child = subprocess.Popen(sys.argv[2:], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                         text=True)
assert child.stdout.readline().strip() == "ready"


def auth(path):
    with open(root + "/sys" + path + "/authorized") as f:
        return f.read().strip()


def wait_auth(devpath, want, timeout, t0):
    while time.monotonic() - t0 < timeout:
        if auth(devpath) == want:
            return time.monotonic()
        time.sleep(0.0005)
    return None


def unplug(devpath, ifpath):
    tb.uevent("/sys" + ifpath, "remove")
    tb.uevent("/sys" + devpath, "remove")
    time.sleep(0.05)
    tb.remove_device("/sys" + ifpath)  # umockdev 0.17 does not recurse: interface first
    tb.remove_device("/sys" + devpath)


time.sleep(1.0)
before, after, done, miss = [], [], [], 0
for i in range(N):
    devpath, ifpath, text = descr.stick()
    cut = text.index("P: %s\n" % ifpath)
    # the device's sysfs nodes; umockdev's implicit 'add' uevent carries a DEVTYPE the guard's
    # monitor filters out, so the clock can start right before the real one goes out
    t_start = time.monotonic()
    tb.add_from_string(text[:cut].replace("E: DEVTYPE=usb_device\n", "E: DEVTYPE=hidden\n"))
    tb.set_property("/sys" + devpath, "DEVTYPE", "usb_device")
    t_added = time.monotonic()
    tb.uevent("/sys" + devpath, "add")
    t1 = wait_auth(devpath, "0", 2.0, t_added)
    if t1 is None:
        miss += 1
    else:
        before.append((t1 - t_start) * 1000)
        after.append((t1 - t_added) * 1000)
        done.append(t1)
    tb.add_from_string(text[cut:])  # its interface (and its 'add'), as run.py plugs both
    unplug(devpath, ifpath)
    time.sleep(0.1)
child.stdin.close()
summary = child.stdout.read().strip()
child.wait()
print(json.dumps({"n": N, "miss": miss, "before": before, "after": after, "done": done,
                  "child": summary}))
"""

# Ours: the guard child (the venv's python), default rules, events counted by kind.
_CHILD = r"""
import collections, json, sys, threading, time
from floor_agent.usb_guard.guard import UsbGuard
from floor_agent.usb_guard.rule_parser import parse_rules_file

kinds = collections.Counter()
received = []  # monotonic time (system-wide clock) each stick 'add' left pyudev's poll


class TimedGuard(UsbGuard):
    def handle(self, action, device, **kwargs):
        if action == "add" and device.sys_path.endswith("/usb1/1-1"):
            received.append(time.monotonic())
        super().handle(action, device, **kwargs)


decided = []  # monotonic time each stick's decision event was emitted (after its own write)


def emit(kind, subject, severity="info", **data):
    kinds.update([kind])
    if kind == "usb.blocked" and data.get("port") == "1-1":
        decided.append(time.monotonic())


guard = TimedGuard(parse_rules_file(open(sys.argv[1]).read()), emit)
shutdown = threading.Event()
thread = guard.start(shutdown)
print("ready", flush=True)
sys.stdin.read()
shutdown.set()
thread.join(2)
print(json.dumps({"kinds": dict(kinds), "received": received, "decided": decided}), flush=True)
"""


# The process that plugs and watches `authorized` (run.py's loop on USBGuard's side, ours on
# ours). By default it runs SCHED_FIFO with reset-on-fork, so the daemons it starts run as
# normal processes: on a 2-core machine a normal-priority observer waits for a CPU behind the
# daemon's own work after its write, and would time the scheduler instead of the daemon.
OBSERVER: list[str] = ["chrt", "--fifo", "--reset-on-fork", "50"]


def note(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def quantiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 as run.py computes them (inclusive method)."""
    q = statistics.quantiles(sorted(samples), n=100, method="inclusive")
    return q[49], q[98]


def scratch_copy(work: Path) -> None:
    """The shared tool in `work`, rendered as measure.sh renders it, with our rules (0600)."""
    for name in ("run.py", "descr.py"):
        shutil.copy(SHARED / name, work / name)
    for name in ("usbguard-daemon.conf", "ug-none.conf"):
        text = (SHARED / name).read_text().replace("@WORK@", str(work))
        (work / name).write_text(text)
        (work / name).chmod(0o600)
    shutil.copy(RULES, work / "rules.conf")
    (work / "rules.conf").chmod(0o600)


def run_usbguard(work: Path, plugs: int) -> list[float]:
    """run.py pidns N in the scratch copy; the latency samples in ms."""
    env = dict(os.environ, TMPDIR=str(work), UG_FLAGS="-k")
    env.pop("LD_PRELOAD", None)
    proc = subprocess.run([*OBSERVER, "/usr/bin/python3", "run.py", "pidns", str(plugs)],
                          cwd=work,
                          env=env, capture_output=True, text=True, timeout=plugs * 2 + 120)
    bench = [line for line in proc.stdout.splitlines() if line.startswith("BENCH")]
    samples = [line for line in proc.stdout.splitlines() if line.startswith("samples_ms")]
    if proc.returncode != 0 or not bench or not samples:
        raise SystemExit(f"usbguard run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                         f"{proc.stderr[-3000:]}")
    note("usbguard:", bench[0])
    miss = int(re.search(r"miss=(\d+)", bench[0]).group(1))  # type: ignore[union-attr]
    if miss:
        note(f"usbguard: {miss} plugs not blocked within 2 s")
    return [float(x) for x in samples[0].split()[1:]]


def run_ours(work: Path, plugs: int) -> dict[str, Any]:
    """Our guard on the same bus: latency samples in ms from the uevent's send ("after"),
    from the start of add_from_string ("before") and from the guard's receipt of the uevent
    ("received"), the guard's event counts and the plugs not blocked within 2 s ("miss")."""
    (work / "ours_parent.py").write_text(_PARENT)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("LD_PRELOAD", None)
    cmd = [*OBSERVER, "umockdev-wrapper", "/usr/bin/python3", str(work / "ours_parent.py"),
           str(plugs), sys.executable, "-c", _CHILD, str(RULES)]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True,
                          timeout=plugs * 2 + 120)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise SystemExit(f"our run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    child = json.loads(out["child"])
    out["kinds"] = child["kinds"]
    received = child["received"]
    decided = child["decided"]
    starts = [d - a / 1000 for d, a in zip(out["done"], out["after"], strict=True)]
    if len(decided) == len(starts) and not out["miss"]:
        out["decided"] = [(e - s) * 1000 for e, s in zip(decided, starts, strict=True)]
    else:
        out["decided"] = []
    if len(received) == len(out["done"]) and not out["miss"]:
        out["received"] = [(d - r) * 1000 for d, r in zip(out["done"], received, strict=True)]
    else:
        note(f"ours: {len(received)} adds received for {len(out['done'])} blocked plugs")
        out["received"] = []
    note("ours: guard events", out["kinds"], "misses", out["miss"])
    return out


def generated_rules(count: int) -> str:
    """`count` - 1 realistic allow rules none of which matches the stick, then the block rule."""
    lines = []
    for i in range(count - 1):
        kind = i % 3
        if kind == 0:  # a named keyboard or mouse pinned by id and serial
            lines.append(f'allow id 046d:{i:04x} serial "KB{i:08d}" name "USB Keyboard" '
                         "with-interface equals { 03:01:01 }")
        elif kind == 1:  # an approved stick pinned by hash (as generate-policy writes them)
            lines.append(f'allow id 0781:5567 hash "{i:043d}=" with-interface one-of '
                         "{ 08:06:50 }")
        else:  # a device on a given port
            lines.append(f'allow id 0951:{i:04x} via-port "1-{i % 8 + 1}" '
                         "with-interface all-of { 08:06:50 }")
    lines.append("block with-interface one-of { 08:*:* }")
    return "\n".join(lines) + "\n"


def rule_rate(seconds: float) -> None:
    """rule_match_rate for 1,000 rules (last one matches) and the default rules."""
    sys.path.insert(0, str(SHARED))
    import descr  # type: ignore[import-not-found]  # the shared tool's descriptors

    from floor_agent.usb_guard.device import device_from_attributes, root_hub_parent_hash
    from floor_agent.usb_guard.policy import decide
    from floor_agent.usb_guard.rule_parser import parse_rules_file
    from floor_agent.usb_guard.rule_set import ConditionContext, index_rules

    attrs = {"idVendor": b"0781", "idProduct": b"5567", "serial": b"4C530001234567891234",
             "manufacturer": b"SanDisk", "product": b"Cruzer Blade", "busnum": b"1",
             "devnum": b"2", "port/connect_type": b"hotplug"}
    stick = device_from_attributes(attrs, descr.STICK, root_hub_parent_hash(descr.HCD),
                                   sys_path="/sys" + descr.HUB + "/1-1")
    assert stick.interfaces == ("08:06:50",), stick
    for label, text in (("1,000 rules", generated_rules(1000)),
                        ("the default rules", RULES.read_text())):
        listed = parse_rules_file(text)
        # the daemon's path (RuleIndex, built once per policy load), then every rule in turn
        for how, rules in (("indexed, as the daemon", index_rules(listed)),
                           ("every rule tried", listed)):
            first = decide(rules, stick, ConditionContext())
            assert first.target == "block" and "08:*:*" in first.rule, first
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                for _ in range(50):
                    decide(rules, stick, ConditionContext())
                count += 50
            elapsed = time.perf_counter() - start
            print(f"rule_match_rate: {count / elapsed:,.0f} devices/s with {label}, {how} "
                  f"({len(listed)} rules, decision: {first.target} by {first.rule!r}; "
                  f"{elapsed / count * 1e6:.1f} us each)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plugs", type=int, default=1000, help="plug/unplug cycles per side")
    parser.add_argument("--skip-usbguard", action="store_true")
    parser.add_argument("--skip-ours", action="store_true")
    parser.add_argument("--skip-rules", action="store_true")
    parser.add_argument("--rule-seconds", type=float, default=3.0)
    parser.add_argument("--observer", choices=("realtime", "normal"), default="realtime",
                        help="scheduling of the plugging/watching process on both sides "
                             "(the daemons always run normal)")
    args = parser.parse_args()
    if args.observer == "normal":
        OBSERVER.clear()
    note(f"observer: {args.observer} ({' '.join(OBSERVER) or 'no chrt'})")

    with tempfile.TemporaryDirectory(prefix="usb_block.") as tmp:
        work = Path(tmp)
        scratch_copy(work)
        ours = theirs = None
        if not args.skip_ours:
            note(f"ours: {args.plugs} plugs (~{args.plugs * 0.17:.0f} s)")
            out = run_ours(work, args.plugs)
            p50, p99 = quantiles(out["after"])
            b50, b99 = quantiles(out["before"])
            ours = (p50, p99)
            recv = ""
            if out["received"]:
                r50, r99 = quantiles(out["received"])
                recv = f"from the guard's receipt: p50 {r50:.2f}, p99 {r99:.2f} ms; "
            print(f"usb_block_p50_ours: {p50:.2f} ms (n={len(out['after'])} "
                  f"miss={out['miss']}; {recv}from the start of add_from_string, which "
                  f"includes umockdev creating the nodes: p50 {b50:.2f}, p99 {b99:.2f} ms)",
                  flush=True)
            print(f"usb_block_p99_ours: {p99:.2f} ms (max {max(out['after']):.2f} ms; guard "
                  f"events {out['kinds']})", flush=True)
            if out["decided"]:
                d50, d99 = quantiles(out["decided"])
                print(f"usb_block_decision_ours: p50 {d50:.2f} ms, p99 {d99:.2f} ms (from the "
                      "uevent's send to the decision's audit event, after the decision's own "
                      "write; the figures above end at the first write of 0, the hold)",
                      flush=True)
        if not args.skip_usbguard:
            note(f"usbguard: {args.plugs} plugs (~{args.plugs * 0.17:.0f} s)")
            samples = run_usbguard(work, args.plugs)
            p50, p99 = quantiles(samples)
            theirs = (p50, p99)
            print(f"usb_block_p50_usbguard: {p50:.2f} ms (n={len(samples)}, usbguard-daemon "
                  "1.1.2, our rules)", flush=True)
            print(f"usb_block_p99_usbguard: {p99:.2f} ms (max {max(samples):.2f} ms)",
                  flush=True)
        if ours and theirs:
            print(f"usb_block_ratio: p50 {ours[0] / theirs[0]:.2f}, p99 "
                  f"{ours[1] / theirs[1]:.2f} (ours / usbguard; <= 1 meets the target)",
                  flush=True)
    if not args.skip_rules:
        rule_rate(args.rule_seconds)


if __name__ == "__main__":
    main()
