"""The simulator twin of a contactless card: a thread that plugs into vsmartcard's vpcd driver
of a real pcscd, so the PC/SC adapter runs unchanged against it.

vpcd protocol (server: pcscd's vpcd driver on 127.0.0.1:35963 for 'Virtual PCD 00 00', 35964
for '00 01'): connecting inserts the card, closing removes it. Every message is a 2-byte
big-endian length and a payload; a 1-byte payload is a control message (0 power off, 1 power
on, 2 reset, 4 "send your ATR", answered with the ATR), anything longer a command APDU,
answered with the response APDU. TCP_QUICKACK is set before every recv (else each APDU stalls
about 50 ms on delayed ACKs).

The card answers `FF CA 00 00 00` with its UID and plays the card's side of DESFire EV2
AuthenticateEV2First (cardproof.py) with the key it was issued: the right diversified key, a
wrong one (a clone that copied the UID and guessed), or none (a UID-only clone, which like a
MIFARE Classic or Ultralight knows no class 90 command). `faults` makes it misbehave at one
step: a raw reply instead of the real one (short, wrong status, garbage), silence, or lateness.
"""

from __future__ import annotations

import secrets
import socket
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from floor_agent.access import cardproof
from floor_agent.access.cardproof import (
    APP_AID,
    KEY_NO,
    decrypt,
    encrypt,
    rotate_left,
)
from floor_agent.access.sitekey import SiteKey

VPCD_HOST = "127.0.0.1"
VPCD_PORTS = {"Virtual PCD 00 00": 35963, "Virtual PCD 00 01": 35964}
# ATR of a DESFire EV2 behind a PC/SC contactless reader (PC/SC part 3: T=1, one historical byte)
DESFIRE_ATR = bytes.fromhex("3B8180018080")

CTRL_OFF, CTRL_ON, CTRL_RESET, CTRL_ATR = 0, 1, 2, 4

SW_NO_CLASS = b"\x6e\x00"
SW_NO_INS = b"\x6d\x00"
SW_LENGTH = b"\x91\x7e"
SW_AUTH_ERROR = b"\x91\xae"
SW_APP_NOT_FOUND = b"\x91\xa0"
SW_NO_KEY = b"\x91\x40"
SW_ABORTED = b"\x91\xca"


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer the step with these exact bytes (short, wrong status word, garbage ...). An
    empty reply is silence to vpcd: it waits for more until the card leaves the field."""

    raw: bytes


@dataclass(frozen=True, slots=True)
class Silent:
    """Never answer the step: hold it this long, then leave the field (vpcd has no timeout of
    its own, so a card that only stayed silent would hold the reader forever)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Late:
    """Answer the step correctly, but only after this long (a slow or relayed card)."""

    seconds: float


Fault = Reply | Silent | Late


class CardLogic:
    """The card's APDU handling, socket-free: a command in, the response out."""

    def __init__(self, uid: bytes, key: bytes | None) -> None:
        self.uid = uid
        self._key = key  # None: a UID-only card
        self._selected = False
        self._rnd_b: bytes | None = None

    def __repr__(self) -> str:
        return f"CardLogic(uid={self.uid.hex().upper()}, keyed={self._key is not None})"

    def reset(self) -> None:
        self._selected = False
        self._rnd_b = None

    def respond(self, apdu: bytes) -> bytes:
        if apdu == cardproof.GET_UID:
            return self.uid + cardproof.SW_OK
        if len(apdu) < 4:
            return b"\x67\x00"  # wrong length
        if apdu[0] != 0x90 or self._key is None:
            return SW_NO_CLASS if apdu[0] != 0xFF else SW_NO_INS
        return self._desfire(apdu[1], _data_of(apdu))

    def _desfire(self, ins: int, data: bytes | None) -> bytes:
        assert self._key is not None
        if data is None:
            return SW_LENGTH
        if ins == 0x5A:  # SelectApplication
            self._rnd_b = None
            self._selected = data == APP_AID
            return cardproof.SW_DESFIRE_OK if self._selected else SW_APP_NOT_FOUND
        if ins == 0x71:  # AuthenticateEV2First: KeyNo, LenCap, PCDcap2
            if len(data) < 2 or len(data) != 2 + data[1]:
                return SW_LENGTH
            if not self._selected or data[0] != KEY_NO:
                return SW_NO_KEY
            self._rnd_b = secrets.token_bytes(16)
            return encrypt(self._key, self._rnd_b) + cardproof.SW_MORE
        if ins == 0xAF:  # the second frame of the authentication
            rnd_b, self._rnd_b = self._rnd_b, None
            if rnd_b is None:
                return SW_ABORTED
            if len(data) != 32:
                return SW_LENGTH
            plain = decrypt(self._key, data)
            if plain[16:] != rotate_left(rnd_b):
                return SW_AUTH_ERROR  # the reader does not hold our key
            ti = secrets.token_bytes(4)
            return encrypt(self._key, ti + rotate_left(plain[:16]) + bytes(12)) \
                + cardproof.SW_DESFIRE_OK
        return b"\x91\x1c"  # illegal command code


def _data_of(apdu: bytes) -> bytes | None:
    """The command data of a short APDU (CLA INS P1 P2 [Lc data] [Le]); None if inconsistent."""
    if len(apdu) <= 5:
        return b""
    lc = apdu[4]
    if len(apdu) not in (5 + lc, 6 + lc):
        return None
    return apdu[5:5 + lc]


class VirtualCard:
    """A card in the field of one vpcd reader while the thread runs: `insert()` connects,
    `remove()` closes. Use as a context manager so a test never leaves a card behind."""

    def __init__(self, uid: bytes, key: bytes | None, *, port: int = 35963,
                 faults: Mapping[str, Fault] | None = None, atr: bytes = DESFIRE_ATR) -> None:
        self.logic = CardLogic(uid, key)
        self.port = port
        self.atr = atr
        self.faults = dict(faults or {})
        self.commands: list[bytes] = []  # every APDU received, for the test to read
        self.replies: list[bytes] = []  # every response sent to them
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.error: BaseException | None = None  # what broke the card's thread, if anything

    @classmethod
    def issued(cls, uid: bytes, site_key: SiteKey, *, port: int = 35963,
               faults: Mapping[str, Fault] | None = None) -> VirtualCard:
        """A genuine card of the site: keyed with its diversified key."""
        return cls(uid, cardproof.card_key(site_key.card_master_key(), uid), port=port,
                   faults=faults)

    def __repr__(self) -> str:
        return f"VirtualCard({self.logic!r}, port={self.port})"

    def insert(self) -> VirtualCard:
        self._stop.clear()
        self.logic.reset()
        self._sock = socket.create_connection((VPCD_HOST, self.port), timeout=5)
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._serve, name=f"vcard-{self.port}",
                                        daemon=True)
        self._thread.start()
        return self

    def remove(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self._close()

    def __enter__(self) -> VirtualCard:
        return self.insert()

    def __exit__(self, *exc: object) -> None:
        self.remove()

    @property
    def inserted(self) -> bool:
        return self._sock is not None

    def _close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                message = self._recv()
                if message is None:
                    break
                if len(message) == 1:
                    if message[0] == CTRL_ATR:
                        self._send(self.atr)
                    elif message[0] in (CTRL_OFF, CTRL_RESET):
                        self.logic.reset()
                    continue
                if not self._answer(message):
                    break
        except OSError as e:
            if not self._stop.is_set():
                self.error = e
        finally:
            self._close()

    def _answer(self, apdu: bytes) -> bool:
        """Answer one APDU, faults included; False when the card leaves the field."""
        self.commands.append(apdu)
        fault = self.faults.get(cardproof.step_of(apdu))
        if isinstance(fault, Silent):
            self._stop.wait(fault.seconds)
            return False
        reply = self.logic.respond(apdu)
        if isinstance(fault, Reply):
            reply = fault.raw
        elif isinstance(fault, Late):
            self._stop.wait(fault.seconds)
        self.replies.append(reply)
        self._send(reply)
        return True

    def _recv(self) -> bytes | None:
        header = self._recv_exact(2)
        if header is None:
            return None
        (length,) = struct.unpack(">H", header)
        return self._recv_exact(length)

    def _recv_exact(self, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            sock = self._sock
            if sock is None or self._stop.is_set():
                return None
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            try:
                chunk = sock.recv(n - len(buf))
            except TimeoutError:
                continue
            if not chunk:
                return None
            buf += chunk
        return buf

    def _send(self, payload: bytes) -> None:
        if self._sock is not None:
            self._sock.sendall(struct.pack(">H", len(payload)) + payload)

