"""A simulated OSDP reader: a real libosdp PeripheralDevice at the other end of the bus.

Tests and the demo drive it like a person and an attacker would: present a card, open the
reader's case (tamper), cut it off (silent: it stops answering, the bus sees it offline), and
put garbage bytes on the wire. Commands from the Control Panel (LED, buzzer) are recorded so a
test can see the feedback arrive; a KEYSET (install mode) is recorded without its key.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import osdp

COMMAND_NAMES = {
    osdp.Command.LED: "led", osdp.Command.Buzzer: "buzzer", osdp.Command.Output: "output",
    osdp.Command.Keyset: "keyset", osdp.Command.Text: "text", osdp.Command.Status: "status",
}


@dataclass(frozen=True, slots=True)
class ReceivedCommand:
    """A command the reader got, without key material (a keyset keeps only its length)."""

    name: str
    fields: tuple[tuple[str, Any], ...]

    def get(self, key: str) -> Any:
        return dict(self.fields).get(key)


class _SocketChannel(osdp.Channel):
    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock
        sock.setblocking(False)

    def read(self, max_bytes: int) -> bytes:
        try:
            return self.sock.recv(max_bytes)
        except (BlockingIOError, InterruptedError):
            return b""

    def write(self, buf: bytes) -> int:
        try:
            return self.sock.send(buf)
        except (BlockingIOError, InterruptedError):
            return 0

    def flush(self) -> None:
        pass


class SimulatedReader:
    """One OSDP reader on `sock`. `scbk=None` is a factory-fresh reader in install mode."""

    def __init__(self, sock: socket.socket, address: int = 0, scbk: bytes | None = None) -> None:
        self.sock = sock
        self.address = address
        self.commands: queue.Queue[ReceivedCommand] = queue.Queue()
        flags = [osdp.LibFlag.EnforceSecure] if scbk is not None else [osdp.LibFlag.InstallMode]
        info = osdp.PDInfo(address, _SocketChannel(sock), scbk=scbk, name=f"sim-{address}",
                           flags=flags)
        caps = osdp.PDCapabilities([
            (osdp.Capability.LEDControl, 1, 1),
            (osdp.Capability.AudibleControl, 1, 1),
            (osdp.Capability.CommunicationSecurity, 1, 1),
            (osdp.Capability.CardDataFormat, 1, 1),
        ])
        self._pd = osdp.PeripheralDevice(info, caps, log_level=osdp.LogLevel.Emergency,
                                         command_handler=self._on_command)
        self._running = False

    def _on_command(self, command: dict[str, Any]) -> tuple[int, None]:
        # the wrapper queues every command for its get_command(); we keep our own record
        with contextlib.suppress(queue.Empty):
            self._pd.command_queue.get_nowait()
        name = COMMAND_NAMES.get(command.get("command"), f"command {command.get('command')}")
        fields = tuple(sorted((k, v) for k, v in command.items()
                              if k not in ("command", "data")))
        if name == "keyset":
            fields += (("key_bytes", len(command.get("data", b""))),)
        self.commands.put(ReceivedCommand(name, fields))
        return 0, None

    def start(self) -> None:
        self._pd.start()
        self._running = True

    def stop(self) -> None:
        """Stop answering (the cable is cut, the reader lost power): the bus sees it offline."""
        if self._running:
            self._pd.stop()
            self._running = False

    go_silent = stop

    @property
    def secure(self) -> bool:
        return bool(self._pd.is_sc_active())

    def present_card(self, uid: str) -> None:
        """A card held to the reader: its UID (hex) as raw card data."""
        data = bytes.fromhex(uid)
        self._submit({"event": osdp.Event.CardRead, "reader_no": 0, "direction": 0,
                      "format": osdp.CardFormat.Unspecified, "length": len(data) * 8,
                      "data": data})

    def tamper(self, on: bool = True) -> None:
        """The reader's case opened (or closed again): a local status report."""
        self._submit({"event": osdp.Event.Status, "type": osdp.StatusReportType.Local,
                      "nr_entries": 2, "report": bytes([1 if on else 0, 0])})

    def _submit(self, event: dict[str, Any]) -> None:
        if not self._pd.submit_event(event):
            raise RuntimeError(f"reader {self.address}: libosdp refused the event")

    def send_garbage(self, data: bytes) -> None:
        """Raw bytes onto the bus between the reader's own packets."""
        lock = self._pd.lock or threading.Lock()
        with lock:
            self.sock.sendall(data)

    def wait_command(self, name: str, timeout: float) -> ReceivedCommand | None:
        """The next command of that name within `timeout` seconds (others are skipped)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                command = self.commands.get(timeout=left)
            except queue.Empty:
                return None
            if command.name == name:
                return command
        return None
