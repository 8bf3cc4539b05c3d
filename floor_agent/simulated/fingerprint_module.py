"""A ZFM fingerprint module on a pseudo-terminal: the simulator twin of fingerprint.py.

The driver opens `sim.port` (the pty's slave) with pyserial exactly as it opens /dev/ttyS0; a
thread serves the master side with the real codec (zfm.py), so every byte the driver sends and
reads crosses a real tty. The module keeps what a real one keeps: an image buffer, two 512-byte
character buffers (zeros at power-on) and a flash library, with the password check.

Fingers are modelled, not imaged. `place(features)` puts a finger on the glass; GenImg takes an
"image" of it, Img2Tz turns it into a character file:

    char file = SHAKE-256("zfm-sim/finger" + features, 512 bytes), with 8 bytes flipped at
                positions drawn from SHAKE-256 of (features, capture number)

so two captures of one finger differ in at most 16 of 512 bytes, and two fingers agree in about
2 bytes by chance. The match score is the number of agreeing byte positions of the two char
buffers divided by 2 (0..256): >= 248 for the same finger, about 1 for another. Match answers
OK with the score when it reaches `security_score` (the module's own threshold), else "no
match" with the score. RegModel refuses (0x0A) two char files scoring below 128, and keeps the
first one as the template, in both buffers.

Search (BufferID, StartPage, PageNum) compares the buffer with the enrolled pages StartPage ..
StartPage+PageNum-1 in page order and answers OK with the first page scoring at least
`security_score`, and that score; else 0x09 "not found" with page and score 0 (ZFM-70 manual
6.3.20, R503 manual "Search"). The manuals do not say whether a module returns the first such
page or the best one: the simulator takes the first, the case a driver with a threshold above
the module's must handle (search again after that page). An empty page is never a match, and
a range past the library is searched up to its end.

It misbehaves on demand (`misbehave`): bad checksum, truncated reply, garbage instead of a
reply, noise before a good reply, another module's address, a wrong packet id, or silence.
`holds_template()` says whether any template or char file is left on it, so tests can prove the
driver wipes it after use.
"""

from __future__ import annotations

import hashlib
import os
import random
import select
import threading
import tty
from dataclasses import dataclass

from floor_agent.access import zfm

CAPTURE_NOISE_BYTES = 8
COMBINE_MIN_SCORE = 128
MISBEHAVIOURS = ("bad_checksum", "truncated", "garbage", "noise", "wrong_address",
                 "wrong_packet_id", "silent")
QUALITIES = ("good", "poor")


def char_file(features: bytes, capture_no: int) -> bytes:
    """The char file Img2Tz makes from one capture of the finger `features`."""
    base = bytearray(hashlib.shake_256(b"zfm-sim/finger" + features).digest(zfm.TEMPLATE_BYTES))
    noise = hashlib.shake_256(b"zfm-sim/noise" + capture_no.to_bytes(8, "big") + features)
    draw = noise.digest(CAPTURE_NOISE_BYTES * 3)
    for i in range(CAPTURE_NOISE_BYTES):
        pos = int.from_bytes(draw[3 * i:3 * i + 2], "big") % zfm.TEMPLATE_BYTES
        base[pos] ^= draw[3 * i + 2] | 1
    return bytes(base)


def score(a: bytes, b: bytes) -> int:
    """Agreeing byte positions / 2: the simulator's match score (0..256)."""
    return sum(1 for x, y in zip(a, b, strict=True) if x == y) // 2


@dataclass
class _Finger:
    features: bytes
    quality: str
    poor_left: int | None  # captures still poor before the finger settles (None: all)


@dataclass
class _Fault:
    kind: str
    times: int | None  # replies still to spoil (None: every one)
    on: int | None  # only replies to this instruction
    after: int  # replies to let through first


class SimulatedModule:
    """A fingerprint module behind a pty. Use as a context manager, or start() and close()."""

    def __init__(self, address: int = zfm.DEFAULT_ADDRESS, password: int = 0,
                 packet_size: int = zfm.DEFAULT_DATA_PACKET_SIZE, library_size: int = 200,
                 security_score: int = 30, seed: int = 0) -> None:
        if packet_size not in zfm.DATA_PACKET_SIZES:
            raise ValueError(f"packet_size {packet_size} not one of {zfm.DATA_PACKET_SIZES}")
        self.address = address
        self.password = password
        self.packet_size = packet_size
        self.library_size = library_size
        self.security_score = security_score
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._finger: _Finger | None = None
        self._image: bytes | None = None  # features of the last good GenImg
        self._image_poor = False
        self._captures = 0
        self._buffers = {1: bytes(zfm.TEMPLATE_BYTES), 2: bytes(zfm.TEMPLATE_BYTES)}
        self._library: dict[int, bytes] = {}
        self._verified = password == 0
        self._receiving: tuple[int, bytearray] | None = None  # DownChar in progress
        self._faults: list[_Fault] = []
        self.commands: list[int] = []  # instruction codes received, in order
        self.problems: list[str] = []  # what the module saw wrong in the driver's bytes
        self._parser = zfm.PacketParser(address)
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="zfm-sim", daemon=True)
        self._stopped = False

    def __repr__(self) -> str:
        return f"SimulatedModule(port={self.port!r}, address=0x{self.address:08X})"

    # --- the test's hands -------------------------------------------------------------------

    def start(self) -> SimulatedModule:
        self._thread.start()
        return self

    def close(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        os.write(self._wake_w, b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            os.close(fd)

    def __enter__(self) -> SimulatedModule:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def place(self, finger_features: bytes | None, quality: str = "good",
              poor_captures: int | None = None) -> None:
        """Put a finger on the sensor (None lifts it). A "poor" finger gives images too messy
        for a char file: for every capture, or for the first `poor_captures` only."""
        if quality not in QUALITIES:
            raise ValueError(f"quality {quality!r} not one of {QUALITIES}")
        with self._lock:
            self._finger = (None if finger_features is None
                            else _Finger(finger_features, quality, poor_captures))

    def misbehave(self, kind: str | None, times: int | None = None, on: int | None = None,
                  after: int = 0) -> None:
        """Spoil the next `times` replies (None: all) to instruction `on` (None: any), after
        letting `after` of them through. `kind` None clears every fault."""
        with self._lock:
            if kind is None:
                self._faults.clear()
                return
            if kind not in MISBEHAVIOURS:
                raise ValueError(f"misbehaviour {kind!r} not one of {MISBEHAVIOURS}")
            self._faults.append(_Fault(kind, times, on, after))

    def holds_template(self) -> bool:
        """True while a char file or template is left in a buffer or the library."""
        with self._lock:
            return bool(self._library) or any(any(b) for b in self._buffers.values())

    def library(self) -> dict[int, bytes]:
        with self._lock:
            return dict(self._library)

    def buffer(self, buffer_id: int) -> bytes:
        with self._lock:
            return self._buffers[buffer_id]

    def store(self, page: int, template: bytes) -> None:
        """Enrol straight into flash (as a module shipped with a library would be)."""
        with self._lock:
            self._library[page] = template

    # --- the module ---------------------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            ready, _, _ = select.select([self._master, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            try:
                data = os.read(self._master, 4096)
            except OSError:
                return
            with self._lock:
                for item in self._parser.feed(data):
                    self._handle(item)

    def _handle(self, item: zfm.Packet | zfm.ZfmError) -> None:
        if isinstance(item, zfm.ZfmError):
            self.problems.append(str(item))
            if item.what.startswith("bad checksum"):
                self._reply(None, [zfm.ack(zfm.PACKET_ERROR, address=self.address)])
            return
        if item.kind in (zfm.DATA, zfm.END_DATA):
            self._receive_data(item)
            return
        if item.kind != zfm.COMMAND or not item.payload:
            self.problems.append(f"unexpected {item!r}")
            return
        if self._receiving is not None:
            self.problems.append("DownChar abandoned: a command came before the end of data")
            self._receiving = None
        code, params = item.payload[0], item.payload[1:]
        self.commands.append(code)
        self._reply(code, self._execute(code, params))

    def _receive_data(self, packet: zfm.Packet) -> None:
        if self._receiving is None:
            self.problems.append("data packet without a DownChar")
            return
        buffer_id, data = self._receiving
        data += packet.payload
        if packet.kind == zfm.END_DATA:
            self._receiving = None
            if len(data) == zfm.TEMPLATE_BYTES:
                self._buffers[buffer_id] = bytes(data)
            else:
                self.problems.append(f"DownChar: {len(data)} bytes, expected "
                                     f"{zfm.TEMPLATE_BYTES}")
        elif len(data) > zfm.TEMPLATE_BYTES:
            self.problems.append("DownChar: more data than a template")
            self._receiving = None

    def _ack(self, code: int, extra: bytes = b"") -> list[bytes]:
        return [zfm.ack(code, extra, self.address)]

    def _execute(self, code: int, params: bytes) -> list[bytes]:
        sizes = {zfm.VFY_PWD: 4, zfm.GEN_IMG: 0, zfm.IMG2TZ: 1, zfm.MATCH: 0, zfm.SEARCH: 5,
                 zfm.REG_MODEL: 0, zfm.STORE: 3, zfm.LOAD_CHAR: 3, zfm.UP_CHAR: 1,
                 zfm.DOWN_CHAR: 1, zfm.DELETE_CHAR: 4, zfm.EMPTY: 0, zfm.TEMPLATE_NUM: 0}
        if code not in sizes:
            return self._ack(zfm.UNSUPPORTED)
        if len(params) != sizes[code]:
            self.problems.append(f"{zfm.instruction_name(code)}: {len(params)} parameter "
                                 f"bytes, expected {sizes[code]}")
            return self._ack(zfm.PACKET_ERROR)
        if code == zfm.VFY_PWD:
            self._verified = int.from_bytes(params, "big") == self.password
            return self._ack(zfm.OK if self._verified else zfm.WRONG_PASSWORD)
        if not self._verified:
            return self._ack(zfm.PASSWORD_REQUIRED)
        # BufferID other than 1 is processed as CharBuffer2 (ZFM-70 manual 6.3.11)
        buf = 1 if params[:1] == b"\x01" else 2
        if code == zfm.GEN_IMG:
            return self._gen_img()
        if code == zfm.IMG2TZ:
            return self._img2tz(buf)
        if code == zfm.MATCH:
            s = score(self._buffers[1], self._buffers[2])
            return self._ack(zfm.OK if s >= self.security_score else zfm.NO_MATCH,
                             s.to_bytes(2, "big"))
        if code == zfm.SEARCH:
            return self._search(buf, int.from_bytes(params[1:3], "big"),
                                int.from_bytes(params[3:5], "big"))
        if code == zfm.REG_MODEL:
            if score(self._buffers[1], self._buffers[2]) < COMBINE_MIN_SCORE:
                return self._ack(zfm.COMBINE_FAIL)
            self._buffers[2] = self._buffers[1]
            return self._ack(zfm.OK)
        if code in (zfm.STORE, zfm.LOAD_CHAR):
            page = int.from_bytes(params[1:3], "big")
            if page >= self.library_size:
                return self._ack(zfm.BAD_PAGE)
            if code == zfm.STORE:
                self._library[page] = self._buffers[buf]
                return self._ack(zfm.OK)
            if page not in self._library:
                return self._ack(zfm.TEMPLATE_READ_ERROR)
            self._buffers[buf] = self._library[page]
            return self._ack(zfm.OK)
        if code == zfm.UP_CHAR:
            return self._ack(zfm.OK) + zfm.data_packets(self._buffers[buf], self.packet_size,
                                                         self.address)
        if code == zfm.DOWN_CHAR:
            self._receiving = (buf, bytearray())
            return self._ack(zfm.OK)
        if code == zfm.DELETE_CHAR:
            page, count = int.from_bytes(params[:2], "big"), int.from_bytes(params[2:], "big")
            if page + count > self.library_size:
                return self._ack(zfm.BAD_PAGE)
            for p in range(page, page + count):
                self._library.pop(p, None)
            return self._ack(zfm.OK)
        if code == zfm.EMPTY:
            self._library.clear()
            return self._ack(zfm.OK)
        return self._ack(zfm.OK, len(self._library).to_bytes(2, "big"))  # TemplateNum

    def _gen_img(self) -> list[bytes]:
        finger = self._finger
        if finger is None:
            return self._ack(zfm.NO_FINGER)
        self._image = finger.features
        self._image_poor = finger.quality == "poor"
        if self._image_poor and finger.poor_left is not None:
            finger.poor_left -= 1
            if finger.poor_left <= 0:
                finger.quality = "good"
        return self._ack(zfm.OK)

    def _img2tz(self, buf: int) -> list[bytes]:
        if self._image is None:
            return self._ack(zfm.NO_VALID_IMAGE)
        if self._image_poor:
            return self._ack(zfm.IMAGE_MESSY)
        self._captures += 1
        self._buffers[buf] = char_file(self._image, self._captures)
        return self._ack(zfm.OK)

    def _search(self, buf: int, start: int, count: int) -> list[bytes]:
        for page in range(start, min(start + count, self.library_size)):
            if page not in self._library:
                continue
            s = score(self._buffers[buf], self._library[page])
            if s >= self.security_score:
                return self._ack(zfm.OK, page.to_bytes(2, "big") + s.to_bytes(2, "big"))
        return self._ack(zfm.NOT_FOUND, bytes(4))

    # --- the wire -----------------------------------------------------------------------------

    def _fault_for(self, code: int | None) -> str | None:
        for fault in self._faults:
            if fault.on is not None and fault.on != code:
                continue
            if fault.after > 0:
                fault.after -= 1
                continue
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
            return fault.kind
        return None

    def _garbage(self, n: int) -> bytes:
        # no 0xEF, so garbage never forms a packet header by chance
        return bytes(self._rng.randrange(0, 0xEF) for _ in range(n))

    def _reply(self, code: int | None, packets: list[bytes]) -> None:
        """Write the reply, spoiled as a fault asks (always in its last packet)."""
        kind = self._fault_for(code)
        last = packets[-1]
        if kind == "silent":
            return
        if kind == "garbage":
            packets = [self._garbage(len(last))]
        elif kind == "noise":
            packets = [self._garbage(16)] + packets
        elif kind == "bad_checksum":
            packets[-1] = last[:-1] + bytes([last[-1] ^ 0x5A])
        elif kind == "truncated":
            packets[-1] = last[:len(last) // 2]
        elif kind == "wrong_address":
            other = (self.address ^ 0x01).to_bytes(4, "big")
            packets[-1] = last[:2] + other + last[6:]
        elif kind == "wrong_packet_id":
            payload = last[zfm.PREAMBLE_BYTES:-2]
            packets[-1] = zfm.encode(zfm.DATA if last[6] != zfm.DATA else zfm.ACK, payload,
                                     self.address)
        out = memoryview(b"".join(packets))
        while out:
            out = out[os.write(self._master, out):]
