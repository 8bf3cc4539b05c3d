"""Door I/O: the lock relay, the door position switch and the request-to-exit (REX) button.

The controller drives the `DoorIo` interface; `GpiodDoorIo` is the real driver (libgpiod v2) and
`SimulatedDoorIo` its twin for tests and the demo. Both map "unlocked" to a relay coil state by
the door's fail mode (door.energise_for) and report input changes through `next_change`.

Fail secure across a controller crash: the simulated relay (floor_agent/simulated/door.py) is
powered through a connection the controller process holds (`SimulatedRelay` on the other end of
a Unix socket). When the process dies, however it dies, the kernel closes that socket and the
relay drops to unpowered: locked for a fail-secure door, open for a fail-safe one. That is the
property a real installation gets from a relay whose supply needs the controller alive (a
watchdog relay or a pulse-fed driver).
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol

from floor_agent.access.door import energise_for

POSITION = "position"  # value True: the door is open
REX = "rex"  # value True: the button is pressed
RELAY_ON = b"1"
RELAY_OFF = b"0"
# what the simulated door sends back over the same link: its switches
DOOR_OPENED = b"O"
DOOR_CLOSED = b"C"
REX_PRESSED = b"R"


class DoorIoError(Exception):
    """A door I/O operation failed; names the operation and the line or link."""


@dataclass(frozen=True, slots=True)
class InputChange:
    kind: str  # position | rex
    value: bool
    at: float  # time.monotonic() when seen


class DoorIo(Protocol):
    """What the controller needs from a door's hardware."""

    fail_mode: str

    def set_lock(self, unlocked: bool) -> None: ...

    def read_position(self) -> bool: ...  # True: open

    def read_rex(self) -> bool: ...  # True: pressed

    def next_change(self, timeout: float | None) -> InputChange | None: ...

    def close(self) -> None: ...


class GpiodDoorIo:
    """libgpiod v2 driver: one line request for the lock (output) and the two inputs (both
    edges, debounced). Thin on purpose: these machines have no GPIO chip (no gpiochip, no
    gpio-sim), so this class cannot run in tests here; all logic lives in door.py and is tested
    against SimulatedDoorIo. Inputs read active-high (1 = open / pressed); wire or set the lines
    accordingly. Note: the kernel does not reset an output line when its request is released,
    so fail secure across a crash needs a relay whose supply depends on the controller being
    alive; releasing the request on close() drives the coil unpowered first."""

    def __init__(self, chip: str, lock_line: int, position_line: int, rex_line: int,
                 fail_mode: str, debounce_ms: int = 10) -> None:
        import gpiod
        from gpiod.line import Direction, Edge, Value

        self.fail_mode = fail_mode
        self._value = Value
        self._lock_line, self._position_line, self._rex_line = lock_line, position_line, rex_line
        try:
            self._request = gpiod.request_lines(chip, consumer="floor-agent-door", config={
                lock_line: gpiod.LineSettings(direction=Direction.OUTPUT,
                                              output_value=Value.INACTIVE),
                (position_line, rex_line): gpiod.LineSettings(
                    direction=Direction.INPUT, edge_detection=Edge.BOTH,
                    debounce_period=timedelta(milliseconds=debounce_ms)),
            })
        except OSError as e:
            raise DoorIoError(f"request lines {lock_line},{position_line},{rex_line} on "
                              f"{chip}: {e.strerror or e}") from None
        self.set_lock(False)

    def set_lock(self, unlocked: bool) -> None:
        on = energise_for(unlocked, self.fail_mode)
        try:
            self._request.set_value(self._lock_line,
                                    self._value.ACTIVE if on else self._value.INACTIVE)
        except OSError as e:
            raise DoorIoError(f"set lock line {self._lock_line}: {e.strerror or e}") from None

    def _read(self, line: int) -> bool:
        try:
            return self._request.get_value(line) == self._value.ACTIVE
        except OSError as e:
            raise DoorIoError(f"read line {line}: {e.strerror or e}") from None

    def read_position(self) -> bool:
        return self._read(self._position_line)

    def read_rex(self) -> bool:
        return self._read(self._rex_line)

    def next_change(self, timeout: float | None) -> InputChange | None:
        if not self._request.wait_edge_events(timeout):
            return None
        from gpiod import EdgeEvent

        for edge in self._request.read_edge_events(1):
            kind = POSITION if edge.line_offset == self._position_line else REX
            return InputChange(kind, edge.event_type == EdgeEvent.Type.RISING_EDGE,
                               edge.timestamp_ns / 1e9)
        return None

    def close(self) -> None:
        try:
            self._request.set_value(self._lock_line, self._value.INACTIVE)
        finally:
            self._request.release()


class SimulatedDoorIo:
    """The twin of GpiodDoorIo: a relay, a position switch and a REX button in memory, driven by
    tests or the demo (`open_door`, `close_door`, `press_rex`). With `relay_path` the coil state
    also goes over a link to a SimulatedRelay, which loses power when this process dies."""

    def __init__(self, fail_mode: str = "secure", relay_path: Path | None = None) -> None:
        energise_for(False, fail_mode)  # validates the mode
        self.fail_mode = fail_mode
        self._lock = threading.Lock()
        self._changes: queue.Queue[InputChange] = queue.Queue()
        self._open = False
        self._rex = False
        self._energised = False  # starts unpowered, as a relay does
        self.relay_history: list[tuple[float, bool]] = [(time.monotonic(), False)]
        self._link: socket.socket | None = None
        if relay_path is not None:
            link = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                link.connect(os.fspath(relay_path))
            except OSError as e:
                link.close()
                raise DoorIoError(f"connect relay link {relay_path}: "
                                  f"{e.strerror or e}") from None
            self._link = link
            threading.Thread(target=self._listen, args=(link,), name="sim-door-link",
                             daemon=True).start()
        self.set_lock(False)

    def _listen(self, link: socket.socket) -> None:
        """The door's switches, as the simulated door on the link reports them."""
        while True:
            try:
                data = link.recv(64)
            except OSError:
                return
            if not data:
                return
            for byte in data:
                b = bytes([byte])
                if b == DOOR_OPENED:
                    self.open_door()
                elif b == DOOR_CLOSED:
                    self.close_door()
                elif b == REX_PRESSED:
                    self.press_rex()

    @property
    def energised(self) -> bool:
        with self._lock:
            return self._energised

    @property
    def unlocked(self) -> bool:
        """The lock's physical state follows the coil."""
        return self.energised == energise_for(True, self.fail_mode)

    def _drive(self, energised: bool) -> None:
        with self._lock:
            if self._link is not None:
                try:
                    self._link.sendall(RELAY_ON if energised else RELAY_OFF)
                except OSError as e:
                    raise DoorIoError(f"relay link: {e.strerror or e}") from None
            if energised != self._energised:
                self._energised = energised
                self.relay_history.append((time.monotonic(), energised))

    def set_lock(self, unlocked: bool) -> None:
        self._drive(energise_for(unlocked, self.fail_mode))

    def read_position(self) -> bool:
        with self._lock:
            return self._open

    def read_rex(self) -> bool:
        with self._lock:
            return self._rex

    def next_change(self, timeout: float | None) -> InputChange | None:
        try:
            return self._changes.get(timeout=timeout)
        except queue.Empty:
            return None

    def _input(self, kind: str, value: bool) -> None:
        with self._lock:
            if kind == POSITION:
                if self._open == value:
                    return
                self._open = value
            else:
                if self._rex == value:
                    return
                self._rex = value
        self._changes.put(InputChange(kind, value, time.monotonic()))

    def open_door(self) -> None:
        self._input(POSITION, True)

    def close_door(self) -> None:
        self._input(POSITION, False)

    def press_rex(self) -> None:
        """Press and release the exit button."""
        self._input(REX, True)
        self._input(REX, False)

    def close(self) -> None:
        """Stop driving the door: the coil drops to unpowered (fail-secure: locked). A broken
        link is no error here: the relay lost the link, so its coil is unpowered already."""
        with contextlib.suppress(DoorIoError):
            self._drive(False)
        with self._lock:
            if self._link is not None:
                with contextlib.suppress(OSError):  # wakes the link's reader thread too
                    self._link.shutdown(socket.SHUT_RDWR)
                self._link.close()
                self._link = None
