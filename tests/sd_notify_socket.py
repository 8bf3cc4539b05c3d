"""Plays systemd's side of sd_notify for a collector process: a bound datagram socket that
$NOTIFY_SOCKET names, counting the WATCHDOG=1 pings (a missing ping is what gets a unit
restarted by its WatchdogSec=) and noting when READY=1 came (a Type=notify unit that never
sends it is killed by its TimeoutStartSec=)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path


class Notifications:
    """A NOTIFY_SOCKET for the collector: counts its WATCHDOG=1 pings, notes READY=1."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.path = path
        self.pings: list[float] = []
        self.ready: list[float] = []  # when READY=1 came
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            lines = data.split(b"\n")
            if b"WATCHDOG=1" in lines:
                self.pings.append(time.monotonic())
            if b"READY=1" in lines:
                self.ready.append(time.monotonic())

    def pinged_since(self, moment: float) -> bool:
        return any(t > moment for t in self.pings)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
