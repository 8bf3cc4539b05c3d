"""The simulated door as the hardware sees it: the lock relay's coil, the position switch and
the REX button, at the other end of the Unix socket SimulatedDoorIo (access/door_io.py) holds."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path

from floor_agent.access.door_io import (
    DOOR_CLOSED,
    DOOR_OPENED,
    RELAY_OFF,
    RELAY_ON,
    REX_PRESSED,
    DoorIoError,
)


class SimulatedRelay:
    """The simulated door as the hardware sees it: its lock relay's coil is powered only while a
    controller holds the link and last asked for power. Listens on a Unix socket; EOF (the
    controller closed it, or died and the kernel closed it) means unpowered. Keeps the coil's
    history over time. Its switches (`open_door`, `close_door`, `press_rex`) are sent back over
    the same link, so a controller in another process sees them as it would see GPIO edges."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(os.fspath(path))
        self._listener.listen(1)
        self._cond = threading.Condition()
        self._energised = False
        self._connected = False
        self.history: list[tuple[float, bool]] = [(time.monotonic(), False)]
        self.garbage: list[str] = []  # what the link sent that is not a relay command
        self._closing = False
        self._conn: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, name="sim-relay", daemon=True)
        self._thread.start()

    @property
    def energised(self) -> bool:
        with self._cond:
            return self._energised

    @property
    def connected(self) -> bool:
        with self._cond:
            return self._connected

    def _set(self, energised: bool, connected: bool | None = None) -> None:
        with self._cond:
            if connected is not None:
                self._connected = connected
            if energised != self._energised:
                self._energised = energised
                self.history.append((time.monotonic(), energised))
            self._cond.notify_all()

    def _serve(self) -> None:
        while not self._closing:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._conn = conn
            self._set(False, connected=True)
            with conn:
                while True:
                    try:
                        data = conn.recv(64)
                    except OSError:
                        data = b""
                    if not data:
                        break
                    for byte in data:
                        if bytes([byte]) in (RELAY_ON, RELAY_OFF):
                            self._set(bytes([byte]) == RELAY_ON)
                        else:
                            self.garbage.append(f"byte 0x{byte:02x} on the relay link")
            self._set(False, connected=False)  # the controller is gone: no power

    def _send(self, byte: bytes) -> None:
        """A switch of the door changed: tell the controller (if one holds the link)."""
        conn = self._conn
        if conn is None or not self.connected:
            raise DoorIoError(f"simulated door {self.path}: no controller on the link")
        conn.sendall(byte)

    def open_door(self) -> None:
        self._send(DOOR_OPENED)

    def close_door(self) -> None:
        self._send(DOOR_CLOSED)

    def press_rex(self) -> None:
        self._send(REX_PRESSED)

    def wait_for(self, energised: bool, timeout: float, connected: bool | None = None) -> bool:
        """Wait until the coil is in that state (and, if given, the link is as said)."""
        def reached() -> bool:
            return self._energised == energised and (
                connected is None or self._connected == connected)

        with self._cond:
            return self._cond.wait_for(reached, timeout)

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the thread
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.shutdown(socket.SHUT_RDWR)  # and its recv()
        self._listener.close()
        self._thread.join(2)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
