"""A simulated serial line (RS-485 bus or UART) for tests and the demo: a pseudo-terminal whose
slave path the controller opens with pyserial, exactly as it opens /dev/ttyUSB0, bridged to a
socket the simulated device (e.g. floor_agent.simulated.osdp_reader's SimulatedReader) talks
on. Bytes pass unchanged in both directions; closing the line ends the bridge.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import tty


class SerialLine:
    """`port`: the path the controller opens; `device`: the socket the simulated device uses."""

    def __init__(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line discipline: a wire
        self.port = os.ttyname(self._slave)
        self.device, self._bridge_end = socket.socketpair()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._bridge, name="serial-line", daemon=True)
        self._thread.start()

    def _bridge(self) -> None:
        ends: list[int | socket.socket] = [self._master, self._bridge_end]
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select(ends, [], [], 0.2)
            except (OSError, ValueError):
                return
            try:
                if self._master in ready:
                    data = os.read(self._master, 4096)
                    if data:
                        self._bridge_end.sendall(data)
                if self._bridge_end in ready:
                    data = self._bridge_end.recv(4096)
                    if not data:
                        return
                    os.write(self._master, data)
            except OSError:  # the controller closed its end (EIO on the master): wait
                if self._stop.wait(0.05):
                    return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for closer in (self.device.close, self._bridge_end.close):
            closer()
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> SerialLine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
