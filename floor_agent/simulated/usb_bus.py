"""A simulated USB bus for a whole agent process: umockdev's testbed with hot-plug.

The agent runs unchanged (pyudev, sysfs writes, its udev monitor) inside a umockdev testbed
owned by a small parent on Debian's python3 with GObject (UMockdev.Testbed). The caller plugs
devices through a control pipe; the parent plays the kernel's part that umockdev does not: a
device plugged later starts with `authorized` equal to its root hub's `authorized_default`
(0 once the guard has locked the bus). umockdev is a fake sysfs, not a kernel: this shows what
the agent decides, writes and reports, not that a kernel then keeps a device off.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from floor_agent.simulated.usb_devices import HUB, UsbSpec, bus_text, device_text

PARENT = r"""
import json, os, signal, subprocess, sys
import gi
gi.require_version("UMockdev", "1.0")
from gi.repository import UMockdev

bus, control, command = sys.argv[1], sys.argv[2], sys.argv[3:]
tb = UMockdev.Testbed.new()  # before any libudev user: the child inherits the preload
with open(bus) as f:
    tb.add_from_string(f.read())
env = dict(os.environ, UMOCKDEV_DIR=tb.get_root_dir())
assert os.path.isdir(tb.get_root_dir() + "/sys/bus/usb/devices")  # never the real /sys
child = subprocess.Popen(command, env=env)
signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
signal.signal(signal.SIGINT, lambda *_: child.send_signal(signal.SIGTERM))
with open(control) as pipe:
    for line in pipe:
        op = json.loads(line)
        if op["op"] == "plug":
            default = tb.get_root_dir() + "/sys" + op["hub"] + "/authorized_default"
            with open(default) as f:
                authorized = f.read().strip() or "1"
            tb.add_from_string(op["text"].replace("A: authorized=1\n",
                                                  f"A: authorized={authorized}\n"))
        elif op["op"] == "unplug":
            tb.uevent(op["path"], "remove")
            tb.remove_device(op["path"])
sys.exit(child.wait())
"""


class SimulatedUsbBus:
    """Run a command on a simulated bus; plug devices into it while it runs."""

    def __init__(self, specs: Sequence[UsbSpec], workdir: Path | None = None) -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="floor-usb-sim-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "bus.umockdev").write_text(bus_text(tuple(specs)))
        (self.workdir / "parent.py").write_text(PARENT)
        self.control_path = self.workdir / "control"
        if not self.control_path.exists():
            os.mkfifo(self.control_path)
        self.proc: subprocess.Popen[bytes] | None = None
        self._control: TextIO | None = None

    def start(self, command: Sequence[str], **popen: object) -> subprocess.Popen[bytes]:
        self.proc = subprocess.Popen(
            ["umockdev-wrapper", "/usr/bin/python3", str(self.workdir / "parent.py"),
             str(self.workdir / "bus.umockdev"), str(self.control_path), *command],
            start_new_session=True, **popen)  # type: ignore[call-overload]
        self._control = open(self.control_path, "w")  # noqa: SIM115  (held open: the pipe)
        return self.proc

    def _send(self, op: dict[str, str]) -> None:
        assert self._control is not None, "start() first"
        self._control.write(json.dumps(op) + "\n")
        self._control.flush()

    def plug(self, spec: UsbSpec) -> str:
        """Hot-plug a device (unconfigured, as the kernel shows it); returns its sysfs path."""
        self._send({"op": "plug", "hub": HUB, "text": device_text(spec)})
        return "/sys" + spec.devpath

    def unplug(self, spec: UsbSpec) -> None:
        self._send({"op": "unplug", "path": "/sys" + spec.devpath})

    def stop(self, timeout: float = 20) -> int | None:
        """End the command (SIGTERM) and the testbed."""
        if self._control is not None:
            self._control.close()
            self._control = None
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
