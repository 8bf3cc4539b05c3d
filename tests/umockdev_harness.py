"""The umockdev harness shared by the usb_guard tests: a testbed parent, a scenario child.

Each test runs a scenario function (module level in its test module) in a child process (the
venv's python) whose /sys is a umockdev testbed. The testbed is owned by a parent under
`umockdev-wrapper` running Debian's python3 with GObject (UMockdev.Testbed), so hot-plug
uevents reach the child's pyudev.Monitor without PyGObject in the venv; the child asks the
parent to plug, unplug or change devices over a pipe. Scenarios return plain data, the tests
assert on it in the pytest process.

umockdev is a fake sysfs, not a kernel: writes land in plain files and read back, nothing more.
Where a test needs the kernel's side (a device plugged after lock down starts unauthorized and
unconfigured, interfaces appear once it is authorized), the scenario plays it and says which
kernel rule it models. Scenarios must not print to stdout: it is the pipe to the parent.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from floor_agent.simulated.usb_devices import (  # noqa: F401  (re-exported for the tests)
    SECOND_HUB,
    bus_text,
    device_text,
    interfaces_text,
)

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
_PARENT = r"""
import json, os, subprocess, sys
import gi
gi.require_version("UMockdev", "1.0")
from gi.repository import UMockdev

tb = UMockdev.Testbed.new()  # before any libudev user: the child inherits the preload
with open(sys.argv[1]) as f:
    tb.add_from_string(f.read())
env = dict(os.environ, UMOCKDEV_DIR=tb.get_root_dir())  # g_setenv is not in os.environ
assert os.path.isdir(tb.get_root_dir() + "/sys/bus/usb/devices")  # never the real /sys
child = subprocess.Popen(sys.argv[2:], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                         text=True)
for line in child.stdout:
    op, args = json.loads(line)
    reply = None
    if op == "add":
        tb.add_from_string(args[0])
    elif op == "uevent":
        tb.uevent(args[0], args[1])
    elif op == "set":
        tb.set_attribute(args[0], args[1], args[2])
    elif op == "remove":
        tb.remove_device(args[0])
    elif op == "root":
        reply = tb.get_root_dir()
    child.stdin.write(json.dumps(reply) + "\n")
    child.stdin.flush()
sys.exit(child.wait())
"""


class BusHandle:
    """The child's handle on the parent's UMockdev.Testbed (device paths start with /sys)."""

    def _call(self, op: str, *args: str) -> Any:
        sys.stdout.write(json.dumps([op, list(args)]) + "\n")
        sys.stdout.flush()
        return json.loads(sys.stdin.readline())

    def add(self, text: str) -> None:
        """Create devices; umockdev sends their 'add' uevents itself."""
        self._call("add", text)

    def uevent(self, sys_path: str, action: str) -> None:
        self._call("uevent", sys_path, action)

    def set_attribute(self, sys_path: str, name: str, value: str) -> None:
        self._call("set", sys_path, name, value)

    def unplug(self, sys_path: str, interfaces: tuple[str, ...] = ()) -> None:
        """Interfaces first, as the kernel does (and umockdev does not recurse)."""
        for path in (*interfaces, sys_path):
            self.uevent(path, "remove")
            self._call("remove", path)

    def root(self) -> str:
        return str(self._call("root"))


def child_main(module: str, scenario: str, result_path: str) -> None:
    """Entry point in the child: run one scenario of `module`, write its result as JSON."""
    result = getattr(importlib.import_module(module), scenario)(BusHandle())
    with open(result_path, "w") as f:
        json.dump(result, f)


def run_scenario(tmp_path: Path, scenario: Callable[[BusHandle], Any], bus: str,
                 drop_dac_override: bool = False) -> Any:
    """Run `scenario` in a child whose /sys is a umockdev testbed holding `bus`."""
    (tmp_path / "bus.umockdev").write_text(bus)
    (tmp_path / "parent.py").write_text(_PARENT)
    result = tmp_path / "result.json"
    child = [sys.executable, "-c",
             "import sys, umockdev_harness as h; h.child_main(*sys.argv[1:])",
             scenario.__module__, scenario.__name__, str(result)]
    if drop_dac_override:  # root without CAP_DAC_OVERRIDE: mode bits apply as on real sysfs
        child = ["setpriv", "--inh-caps=-dac_override", "--bounding-set=-dac_override", *child]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), str(REPO)]))
    proc = subprocess.run(
        ["umockdev-wrapper", "/usr/bin/python3", str(tmp_path / "parent.py"),
         str(tmp_path / "bus.umockdev"), *child],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(result.read_text())
