"""One QEMU guest for the VM tests: launcher, QMP (qemu.qmp) and the guest command channel."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from image import COLLECTOR_GUEST_ADDRESS, COLLECTOR_GUEST_PORT, REPO, Image
from qemu.qmp.legacy import QEMUMonitorProtocol


class GuestError(RuntimeError):
    pass


def stick_image(path: Path) -> Path:
    """A blank 16 MiB file for a usb-storage stick."""
    with path.open("wb") as f:
        f.truncate(16 << 20)
    return path


def stick_at_power_on(path: Path, serial: str) -> tuple[str, ...]:
    """QEMU arguments for a stick that is in its port before the machine is powered on."""
    return ("-drive", f"if=none,id=bootstick,format=raw,file={stick_image(path)}",
            "-device", f"usb-storage,bus=xhci.0,drive=bootstick,serial={serial}")


class Guest:
    """QEMU with software emulation (KVM hangs Debian's kernel on these hosts), the cached
    disk under snapshot=on (each run starts clean; a guest reboot keeps this run's writes),
    an xHCI controller with 8+8 ports for hot-plugged USB devices, user networking whose only
    way out is the host's collector, the project over 9p, QMP and the test channel."""

    def __init__(self, image: Image, workdir: Path, collector_port: int,
                 append: str = "", memory_mb: int = 1024,
                 extra_args: tuple[str, ...] = (),
                 forwards: tuple[tuple[str, int, int], ...] = ()) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.qmp_path = workdir / "qmp.sock"
        self.channel_path = workdir / "channel.sock"
        self.serial_log = workdir / "serial.log"
        for path in (self.qmp_path, self.channel_path):
            path.unlink(missing_ok=True)
        relay = Path(__file__).resolve().parent / "relay.py"
        netdev = (f"user,id=net0,restrict=on,guestfwd=tcp:{COLLECTOR_GUEST_ADDRESS}:"
                  f"{COLLECTOR_GUEST_PORT}-cmd:{sys.executable} {relay} {collector_port}")
        # More ways out, each (guest address, guest port, host loopback port), e.g. an sshd.
        for address, port, host_port in forwards:
            netdev += f",guestfwd=tcp:{address}:{port}-cmd:{sys.executable} {relay} {host_port}"
        self.argv = [
            "nice", "-n", "10", "qemu-system-x86_64",
            "-accel", "tcg,tb-size=256", "-cpu", "max", "-m", str(memory_mb), "-smp", "1",
            "-display", "none", "-nodefaults",
            "-kernel", str(image.kernel), "-initrd", str(image.initrd),
            "-append", f"console=ttyS0 root=/dev/vda rw {append}".strip(),
            "-drive", f"file={image.disk},if=virtio,format=raw,cache=unsafe,snapshot=on",
            "-serial", f"file:{self.serial_log}",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
            "-chardev", f"socket,id=channel,path={self.channel_path},server=on,wait=off",
            "-device", "virtio-serial-pci",
            "-device", "virtserialport,chardev=channel,name=floor.test",
            "-netdev", netdev, "-device", "virtio-net-pci,netdev=net0",
            "-virtfs", f"local,path={REPO},mount_tag=proj,security_model=none,readonly=on",
            "-device", "qemu-xhci,id=xhci,p2=8,p3=8",
            *extra_args,
        ]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL,
                                     stderr=(workdir / "qemu.err").open("wb"))
        # QEMU creates the sockets before it listens on them: the channel's accept is our
        # sign that both are ready.
        self._channel = self._connect(self.channel_path)
        self.qmp = QEMUMonitorProtocol(str(self.qmp_path))
        self.qmp.connect()
        self._buffer = b""
        self._next_id = 0

    def _connect(self, path: Path, seconds: float = 30) -> socket.socket:
        deadline = time.monotonic() + seconds
        while True:
            sock = socket.socket(socket.AF_UNIX)
            try:
                sock.connect(str(path))
                return sock
            except OSError:
                sock.close()
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise GuestError("QEMU did not start: "
                                     f"{(self.workdir / 'qemu.err').read_text()}") from None
                time.sleep(0.05)

    # --- the test channel ---------------------------------------------------------------
    def _read_message(self, seconds: float) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise GuestError(f"no answer from the guest within {seconds} s")
            self._channel.settimeout(left)
            try:
                chunk = self._channel.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise GuestError("test channel closed")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def wait_ready(self, seconds: float = 300) -> dict[str, Any]:
        """Wait for the guest's channel to announce itself (once per boot)."""
        deadline = time.monotonic() + seconds
        while True:
            message = self._read_message(max(0.1, deadline - time.monotonic()))
            if message.get("event") == "ready":
                return message

    def _request(self, op: str, timeout: float = 60, **fields: Any) -> dict[str, Any]:
        self._next_id += 1
        request = {"id": self._next_id, "op": op, "timeout": timeout, **fields}
        self._channel.sendall((json.dumps(request) + "\n").encode())
        while True:
            reply = self._read_message(timeout + 15)
            if reply.get("id") == self._next_id:
                if "error" in reply and op != "run":
                    raise GuestError(f"{op} {fields}: {reply['error']}")
                return reply

    def run(self, command: str | list[str], timeout: float = 60,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        fields = {"argv": command} if isinstance(command, list) else {"sh": command}
        reply = self._request("run", timeout, **fields)
        if reply.get("error"):
            raise GuestError(f"{command}: {reply['error']}")
        done = subprocess.CompletedProcess(command, reply["rc"], reply["stdout"],
                                           reply["stderr"])
        if check and done.returncode != 0:
            raise GuestError(f"{command}: exit {done.returncode}\n{done.stdout}{done.stderr}")
        return done

    def read(self, path: str) -> bytes:
        return base64.b64decode(self._request("read", path=path)["data"])

    def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._request("write", path=path, data=base64.b64encode(data).decode(), mode=mode)

    def wait_until(self, command: str, seconds: float = 30, interval: float = 0.3) -> str:
        """Run `command` until it succeeds; its output. Fails after `seconds`."""
        deadline = time.monotonic() + seconds
        while True:
            done = self.run(command, check=False)
            if done.returncode == 0:
                return done.stdout
            if time.monotonic() > deadline:
                raise GuestError(f"still failing after {seconds} s: {command}\n"
                                 f"{done.stdout}{done.stderr}")
            time.sleep(interval)

    def boot(self, seconds: float = 600) -> float:
        """Wait for the test channel and for systemd to finish starting the system (degraded
        or not: the tests judge the units they care about); seconds since QEMU started."""
        self.wait_ready(seconds)
        self.run("systemctl is-system-running --wait", timeout=seconds, check=False)
        return time.monotonic() - self.started

    def fire_timer_now(self, timer: str, service: str, seconds: float = 300) -> float:
        """Move `timer` to fire 5 s from now (a drop-in in /run clears its calendar and random
        delay) and wait until `service` has run once more and finished; seconds that took."""
        ran = self.run(["systemctl", "show", service, "--value",
                        "--property=ExecMainExitTimestampMonotonic"]).stdout.strip()
        self.run(f"mkdir -p /run/systemd/system/{timer}.d && printf '[Timer]\\n"
                 "OnCalendar=\\nRandomizedDelaySec=0\\nAccuracySec=1s\\nOnActiveSec=5s\\n' > "
                 f"/run/systemd/system/{timer}.d/now.conf && systemctl daemon-reload && "
                 f"systemctl restart {timer}")
        t0 = time.monotonic()
        self.wait_until(f"test \"$(systemctl show {service} --value "
                        f"--property=ExecMainExitTimestampMonotonic)\" != {ran} && "
                        f"! systemctl is-active -q {service}", seconds=seconds, interval=2)
        return time.monotonic() - t0

    # --- USB over QMP -------------------------------------------------------------------
    def plug(self, driver: str, device_id: str, **properties: Any) -> None:
        self.qmp.cmd("device_add", driver=driver, bus="xhci.0", id=device_id, **properties)

    def plug_stick(self, device_id: str, serial: str) -> None:
        """A usb-storage stick backed by a fresh 16 MiB image file."""
        backing = stick_image(self.workdir / f"{device_id}.img")
        self.qmp.cmd("blockdev-add", **{"node-name": f"{device_id}-disk", "driver": "raw",
                                        "file": {"driver": "file", "filename": str(backing)}})
        self.plug("usb-storage", device_id, drive=f"{device_id}-disk", serial=serial)

    def unplug(self, device_id: str) -> None:
        self.qmp.cmd("device_del", id=device_id)

    # --- life cycle ---------------------------------------------------------------------
    def reset(self) -> None:
        """A hard reset (as the power button held): this run's disk writes stay."""
        self.qmp.cmd("system_reset")

    def close(self, seconds: float = 30) -> None:
        if self.proc.poll() is None:
            try:
                self.qmp.cmd("quit")
            except Exception:
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(seconds)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # QEMU quit first: its end of the socket is gone, which is the point.
        with contextlib.suppress(EOFError, OSError):
            self.qmp.close()
        self._channel.close()
