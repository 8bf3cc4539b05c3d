"""OSDP readers: the controller is the Control Panel (libosdp) of one RS-485 bus.

One `OsdpBus` runs one libosdp ControlPanel for the configured readers on that bus. It yields
`model.CardRead` for card reads (UID only: OSDP readers give no card proof, so `proof="none"`
and the decision treats it per policy) and `ReaderEvent` for what an auditor must see: a reader
going online or offline (a wrong secure channel key shows as a reader that never comes online),
tamper, and garbage on the bus. `feedback()` drives a reader's LED and buzzer after a decision.

Secure channel always: each reader's SCBK (16 bytes) comes from its `osdp_scbk_file` (32 hex
characters, mode 0600, anything else refused) and libosdp enforces it (`EnforceSecure`). Install
mode only when the reader's config says so: the controller then writes a new random SCBK to the
file and libosdp hands it to the reader over the default install key (SCBK-D) once.

Bytes from the bus pass a frame guard before libosdp sees them: only frames with a sane length
and a valid checksum or CRC go through, the rest is counted and reported. A burst of garbage
would otherwise overflow libosdp's receive ring and put the reader offline for 300 s.
"""

from __future__ import annotations

import contextlib
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import osdp

from floor_agent.access.model import CardRead, Direction
from floor_agent.common.clock import utc_now
from floor_agent.common.keyfiles import read_hex_key_file
from floor_agent.protocol.kinds.door import DoorKind

if TYPE_CHECKING:
    from floor_agent.access.config import DoorReader

SCBK_BYTES = 16
SOM = 0x53  # start of message
MARK = 0xFF  # optional byte before SOM (OSDP 2.2)
HEADER = 5  # SOM, address, length (2), control
MIN_FRAME = HEADER + 2  # header, a command or reply code, a 1-byte checksum
MAX_FRAME = 1440  # libosdp's largest packet; anything longer is not a frame
CTRL_CRC = 0x04  # control bit: 2-byte CRC-16 instead of a 1-byte checksum
ONLINE_GRACE_SECONDS = 3.0  # a reader not online this long after start raises reader_offline

Clock = Callable[[], datetime]


class OsdpError(ValueError):
    """A reader's OSDP setup cannot be used (key file, address, port); says which and why."""


@dataclass(frozen=True, slots=True)
class ReaderEvent:
    """An audit event about a reader or its bus (never key material, never raw bus bytes)."""

    kind: str  # door.reader_online | _offline | _tamper | _tamper_cleared | _garbage | _error
    severity: str
    door_id: str
    reader_id: str
    at: datetime
    detail: str = ""


@dataclass(frozen=True, slots=True)
class OsdpReader:
    """One reader on the bus; its SCBK never shows in a repr."""

    door_id: str
    reader_id: str
    address: int
    direction: Direction = "in"
    scbk: bytes = field(default=b"", repr=False)
    install_mode: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.address <= 126:
            raise OsdpError(f"{self.door_id}/{self.reader_id}: OSDP address {self.address} "
                            "outside 0-126")
        if len(self.scbk) != SCBK_BYTES:
            raise OsdpError(f"{self.door_id}/{self.reader_id}: SCBK must be {SCBK_BYTES} bytes")

    @property
    def name(self) -> str:
        return f"{self.door_id}/{self.reader_id}"


def load_scbk(path: Path) -> bytes:
    """The reader's secure channel base key: 32 hex characters in a file only its owner reads."""
    return read_hex_key_file(path, SCBK_BYTES, "the SCBK", OsdpError)


def install_scbk(path: Path) -> bytes:
    """Install mode: a new random SCBK, written 0600 and never over an existing file."""
    key = secrets.token_bytes(SCBK_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise OsdpError(f"{path}: cannot create the SCBK file ({e.strerror})") from None
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
    return key


def reader_from_config(door_id: str, reader: DoorReader) -> OsdpReader:
    """An OsdpReader from its config: the key file, or in install mode a new key written to
    it, or refused. In install mode libosdp tries the key first and falls back to SCBK-D, so a
    reader that missed its KEYSET last time gets it again; a bus in install mode hands the key
    to anything answering with SCBK-D, hence only while an installer is at the door."""
    name = f"{door_id}/{reader.reader_id}"
    path = reader.osdp_scbk_file
    install = reader.osdp_install_mode
    if path is not None and path.exists():
        key = load_scbk(path)
        return OsdpReader(door_id, reader.reader_id, reader.osdp_address, reader.direction, key,
                          install_mode=install)
    if not install:
        raise OsdpError(f"{name}: no SCBK ({path or 'osdp_scbk_file not set'}) and install "
                        "mode off: reader refused")
    if path is None:
        raise OsdpError(f"{name}: install mode needs osdp_scbk_file to record the new key")
    return OsdpReader(door_id, reader.reader_id, reader.osdp_address, reader.direction,
                      install_scbk(path), install_mode=True)


# --- the bus: raw bytes in, checked frames out -------------------------------------------------

def crc16(data: bytes) -> int:
    """OSDP's CRC-16 (CCITT polynomial 0x1021, initial 0x1D0F)."""
    crc = 0x1D0F
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def _frame_problem(frame: bytes) -> str | None:
    """Why a complete candidate frame is not a valid one (None: valid)."""
    if frame[4] & CTRL_CRC:
        got = frame[-2] | frame[-1] << 8
        return None if crc16(frame[:-2]) == got else "bad CRC"
    return None if (-sum(frame[:-1])) & 0xFF == frame[-1] else "bad checksum"


def _length_at(buf: bytes | bytearray, i: int) -> int | None:
    """Declared length of a frame starting at i (None: header not complete yet)."""
    if len(buf) < i + HEADER:
        return None
    return buf[i + 2] | buf[i + 3] << 8


class FrameGuard:
    """Splits a byte stream into valid OSDP frames; everything else is garbage, counted with
    the reason. A frame still arriving holds the stream only while no later complete frame
    proves it was not one."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> tuple[bytes, list[str]]:
        """(the valid frames to pass on, the garbage found: "N bytes: reason" each)."""
        self._buf += data
        out = bytearray()
        garbage: list[str] = []
        while self._buf:
            start = self._buf.find(SOM)
            if start < 0:
                self._drop(len(self._buf), "no start of message", garbage)
                break
            marked = start > 0 and self._buf[start - 1] == MARK
            lead = start - 1 if marked else start
            if lead:
                self._drop(lead, "bytes outside any frame", garbage)
                start -= lead
            verdict = self._frame_at(start)
            if verdict == "wait":
                later = self._later_frame(start + 1)
                if later is None:
                    break
                self._drop(later, "a frame cut short", garbage)
                continue
            if isinstance(verdict, str):
                self._drop(start + 1, verdict, garbage)
                continue
            end = start + verdict
            out += self._buf[:end]
            del self._buf[:end]
        return bytes(out), garbage

    def _frame_at(self, i: int) -> int | str:
        length = _length_at(self._buf, i)
        if length is None:
            return "wait"
        if not MIN_FRAME <= length <= MAX_FRAME:
            return f"impossible length {length}"
        if len(self._buf) < i + length:
            return "wait"
        problem = _frame_problem(bytes(self._buf[i:i + length]))
        return length if problem is None else problem

    def _later_frame(self, start: int) -> int | None:
        """Offset of the first complete valid frame after `start` (its mark included)."""
        i = self._buf.find(SOM, start)
        while i >= 0:
            if isinstance(self._frame_at(i), int):
                return i - 1 if self._buf[i - 1] == MARK else i
            i = self._buf.find(SOM, i + 1)
        return None

    def _drop(self, count: int, reason: str, garbage: list[str]) -> None:
        del self._buf[:count]
        garbage.append(f"{count} bytes: {reason}")


class GuardedChannel(osdp.Channel):
    """The osdp.Channel libosdp reads and writes: raw I/O below, FrameGuard on the way in."""

    def __init__(self, read_raw: Callable[[int], bytes], write_raw: Callable[[bytes], int],
                 on_garbage: Callable[[list[str]], None]) -> None:
        super().__init__()
        self._read_raw = read_raw
        self._write_raw = write_raw
        self._on_garbage = on_garbage
        self._guard = FrameGuard()
        self._ready = bytearray()

    def read(self, max_bytes: int) -> bytes:
        try:
            data = self._read_raw(4096)
            if data:
                frames, garbage = self._guard.feed(data)
                self._ready += frames
                if garbage:
                    self._on_garbage(garbage)
        except Exception as e:  # a broken port must not kill libosdp's refresh thread
            self._on_garbage([f"read failed: {type(e).__name__}"])
        out = bytes(self._ready[:max_bytes])
        del self._ready[:max_bytes]
        return out

    def write(self, buf: bytes) -> int:
        try:
            return self._write_raw(bytes(buf))
        except Exception:
            return 0

    def flush(self) -> None:
        pass


def socket_io(sock: socket.socket) -> tuple[Callable[[int], bytes], Callable[[bytes], int]]:
    """Raw read/write over a connected socket (tests, or an RS-485 to TCP converter)."""
    sock.setblocking(False)

    def read(n: int) -> bytes:
        try:
            return sock.recv(n)
        except (BlockingIOError, InterruptedError):
            return b""

    def write(data: bytes) -> int:
        try:
            return sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0

    return read, write


def serial_io(port: str, baud: int) -> tuple[Callable[[int], bytes], Callable[[bytes], int]]:
    """Raw read/write over a serial port (the RS-485 adapter), non-blocking."""
    import serial

    try:
        dev = serial.Serial(port, baud, timeout=0, write_timeout=0)
    except (serial.SerialException, ValueError) as e:
        raise OsdpError(f"{port}: cannot open the OSDP bus ({e})") from None

    def write(data: bytes) -> int:
        return dev.write(data) or 0

    return dev.read, write


# --- events from libosdp to ours (pure) ------------------------------------------------------

def card_read_of(reader: OsdpReader, event: dict[str, Any], now: datetime,
                 bus: str) -> CardRead | ReaderEvent:
    """A card read event as a CardRead (UID from the card data), or why it is not one."""
    data = event.get("data")
    fmt = event.get("format")
    if not isinstance(data, bytes | bytearray) or not data:
        return _error(reader, now, f"{bus}: card read without card data")
    if fmt in (osdp.CardFormat.Unspecified, osdp.CardFormat.Wiegand):
        bits = event.get("length")
        if not isinstance(bits, int) or bits <= 0 or (bits + 7) // 8 > len(data):
            return _error(reader, now, f"{bus}: card read with bit length {bits!r} for "
                                       f"{len(data)} data bytes")
        uid = bytes(data[:(bits + 7) // 8]).hex().upper()
        detail = f"osdp {bus} address {reader.address}: {bits}-bit raw card data"
    elif fmt == osdp.CardFormat.ASCII:
        uid = bytes(data).hex().upper()
        detail = f"osdp {bus} address {reader.address}: ASCII card data"
    else:
        return _error(reader, now, f"{bus}: card read in unknown format {fmt!r}")
    return CardRead(reader.door_id, reader.reader_id, reader.direction, uid, now,
                    proof="none", detail=detail)


def _error(reader: OsdpReader, now: datetime, detail: str) -> ReaderEvent:
    return ReaderEvent(DoorKind.READER_ERROR, "warning", reader.door_id, reader.reader_id, now,
                       detail)


@dataclass
class _ReaderStatus:
    """What the bus remembers of a reader between events (the shell's own state)."""

    online: bool = False
    ever_online: bool = False
    sc_failed: bool = False
    tamper: bool = False
    reported_offline: bool = False


class OsdpBus:
    """The Control Panel of one bus. `next_item()` gives CardRead and ReaderEvent in order."""

    def __init__(self, readers: Sequence[OsdpReader], read_raw: Callable[[int], bytes],
                 write_raw: Callable[[bytes], int], bus: str = "osdp",
                 clock: Clock = utc_now,
                 online_grace_seconds: float = ONLINE_GRACE_SECONDS) -> None:
        if not readers:
            raise OsdpError(f"{bus}: no readers")
        addresses = [r.address for r in readers]
        if len(set(addresses)) != len(addresses):
            raise OsdpError(f"{bus}: two readers share an OSDP address")
        self.bus = bus
        self.readers = tuple(readers)
        self._by_id = {r.reader_id: r for r in readers}
        self._clock = clock
        self._grace = online_grace_seconds
        self._items: queue.Queue[CardRead | ReaderEvent] = queue.Queue()
        self._status = {r.address: _ReaderStatus() for r in readers}
        self._status_lock = threading.Lock()
        self._started_at: float | None = None
        self._channel = GuardedChannel(read_raw, write_raw, self._garbage)
        infos = []
        for r in readers:
            flags = [osdp.LibFlag.EnforceSecure, osdp.LibFlag.EnableNotification]
            if r.install_mode:
                flags = [osdp.LibFlag.InstallMode, osdp.LibFlag.EnableNotification]
            infos.append(osdp.PDInfo(r.address, self._channel, scbk=r.scbk, name=r.name,
                                     flags=flags))
        self._cp = osdp.ControlPanel(infos, log_level=osdp.LogLevel.Emergency,
                                     event_handler=self._on_event)

    @classmethod
    def open_serial(cls, port: str, baud: int, readers: Sequence[OsdpReader],
                    clock: Clock = utc_now) -> OsdpBus:
        read, write = serial_io(port, baud)
        return cls(readers, read, write, bus=port, clock=clock)

    def start(self) -> None:
        self._started_at = time.monotonic()
        self._cp.start()

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._cp.stop()

    def online(self, reader_id: str) -> bool:
        with self._status_lock:
            return self._status[self._reader(reader_id).address].online

    def secure(self, reader_id: str) -> bool:
        """The reader's secure channel is up (a reader is only ever online with one)."""
        return self._cp.is_sc_active(self._reader(reader_id).address)

    def _reader(self, reader_id: str) -> OsdpReader:
        try:
            return self._by_id[reader_id]
        except KeyError:
            raise OsdpError(f"{self.bus}: no reader {reader_id!r}") from None

    def next_item(self, timeout: float | None) -> CardRead | ReaderEvent | None:
        """The next card read or reader event; None after `timeout` seconds of quiet."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._check_never_online()
            wait = 0.25 if deadline is None else min(0.25, deadline - time.monotonic())
            if wait <= 0:
                return None
            try:
                return self._items.get(timeout=wait)
            except queue.Empty:
                continue

    def feedback(self, reader_id: str, granted: bool) -> bool:
        """Green LED and one beep for a grant, red and three beeps for a denial. False when the
        reader cannot take the command (offline): the decision stands either way."""
        reader = self._reader(reader_id)
        color = osdp.CommandLEDColor.Green if granted else osdp.CommandLEDColor.Red
        led = {"command": osdp.Command.LED, "reader": 0, "led_number": 0, "control_code": 2,
               "on_count": 20, "off_count": 0, "on_color": color,
               "off_color": osdp.CommandLEDColor.Black, "timer_count": 20, "temporary": True}
        buzzer = {"command": osdp.Command.Buzzer, "reader": 0, "control_code": 2,
                  "on_count": 2 if granted else 1, "off_count": 0 if granted else 1,
                  "rep_count": 1 if granted else 3}
        if not self.online(reader_id):
            return False
        try:
            return bool(self._cp.submit_command(reader.address, led)) and bool(
                self._cp.submit_command(reader.address, buzzer))
        except Exception:
            return False

    # --- from libosdp's refresh thread: translate, queue, never raise ------------------------

    def _reader_at(self, pd: int) -> OsdpReader | None:
        return self.readers[pd] if 0 <= pd < len(self.readers) else None

    def _on_event(self, pd: int, event: Any) -> int:
        # libosdp's wrapper also queues every event for its get_event(), which we never call:
        # take it back out so a long-running bus does not grow that queue forever
        with contextlib.suppress(IndexError, queue.Empty):
            self._cp.event_queue[pd].get_nowait()
        now = self._clock()
        reader = self._reader_at(pd)
        if reader is None:
            return 0
        try:
            item = self._translate(reader, event, now)
        except Exception as e:  # malformed event dict: say so, do not stop the bus
            item = _error(reader, now, f"{self.bus}: unreadable event ({type(e).__name__})")
        if item is not None:
            self._items.put(item)
        return 0

    def _translate(self, reader: OsdpReader, event: Any,
                   now: datetime) -> CardRead | ReaderEvent | None:
        if not isinstance(event, dict):
            return _error(reader, now, f"{self.bus}: event is not a dict")
        kind = event.get("event")
        if kind == osdp.Event.CardRead:
            return card_read_of(reader, event, now, self.bus)
        if kind == osdp.Event.Status:
            return self._status_report(reader, event, now)
        if kind == osdp.Event.Notification:
            return self._notification(reader, event, now)
        if kind == osdp.Event.KeyPress:
            return None  # keypads are not part of this door's credentials
        return _error(reader, now, f"{self.bus}: unexpected event type {kind!r}")

    def _status_report(self, reader: OsdpReader, event: dict[str, Any],
                       now: datetime) -> ReaderEvent | None:
        if event.get("type") not in (osdp.StatusReportType.Local,
                                     osdp.StatusReportType.Remote):
            return None
        report = event.get("report")
        if not isinstance(report, bytes | bytearray) or not report:
            return _error(reader, now, f"{self.bus}: tamper report without entries")
        tamper = report[0] != 0
        with self._status_lock:
            status = self._status[reader.address]
            was, status.tamper = status.tamper, tamper
        if tamper and not was:
            return ReaderEvent(DoorKind.READER_TAMPER, "critical", reader.door_id,
                               reader.reader_id, now, f"{self.bus}: reader reports tamper")
        if was and not tamper:
            return ReaderEvent(DoorKind.READER_TAMPER_CLEARED, "info", reader.door_id,
                               reader.reader_id, now, f"{self.bus}: tamper cleared")
        return None

    def _notification(self, reader: OsdpReader, event: dict[str, Any],
                      now: datetime) -> ReaderEvent | None:
        kind, up = event.get("type"), event.get("arg0")
        with self._status_lock:
            status = self._status[reader.address]
            if kind == osdp.EventNotification.SecureChannelStatus:
                if not up and not status.ever_online:
                    status.sc_failed = True
                return None
            if kind != osdp.EventNotification.PeripheralDeviceStatus:
                return None
            if up:
                status.online = status.ever_online = True
                status.sc_failed = status.reported_offline = False
                return ReaderEvent(DoorKind.READER_ONLINE, "info", reader.door_id,
                                   reader.reader_id, now, f"{self.bus}: secure channel up")
            status.online = False
            status.reported_offline = True
            why = "stopped answering"
            if status.sc_failed:
                why = ("secure channel refused: the reader's SCBK does not match "
                       "(or it is not in install mode)")
        return ReaderEvent(DoorKind.READER_OFFLINE, "critical", reader.door_id, reader.reader_id,
                           now, f"{self.bus}: {why}")

    def _check_never_online(self) -> None:
        """A reader silent since start gets no libosdp notification: raise it ourselves."""
        if self._started_at is None or time.monotonic() - self._started_at < self._grace:
            return
        now = self._clock()
        for reader in self.readers:
            with self._status_lock:
                status = self._status[reader.address]
                if status.ever_online or status.reported_offline:
                    continue
                status.reported_offline = True
            self._items.put(ReaderEvent(
                DoorKind.READER_OFFLINE, "critical", reader.door_id, reader.reader_id, now,
                f"{self.bus}: reader never came online since start"))

    def _garbage(self, found: list[str]) -> None:
        first = self.readers[0]
        self._items.put(ReaderEvent(
            DoorKind.READER_GARBAGE, "warning", first.door_id, "", self._clock(),
            f"{self.bus}: dropped malformed data ({'; '.join(found[:5])}"
            f"{'; ...' if len(found) > 5 else ''})"))
