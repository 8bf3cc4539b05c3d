"""The ZhianTec (ZFM) UART packet codec of R30x / R503 / AS608 fingerprint modules: pure bytes.

A packet is: header 0xEF01, 4-byte module address, 1-byte packet id (0x01 command, 0x02 data,
0x07 acknowledge, 0x08 end of data), 2-byte length (payload + 2-byte checksum), payload, and a
2-byte checksum: the sum of id, both length bytes and every payload byte, modulo 0x10000. All
multi-byte fields are big-endian. References: ZFM-70 Series User Manual (Zhian Technologies,
sections 4.1 buffers, 4.3.3 data package length, 5 communication protocol, 6 instructions) and
the R503 Fingerprint Module User Manual (Hangzhou Grow, confirmation codes).

The serial line is noisy in the field, so `PacketParser` is a streaming parser that never
raises: it returns each complete packet and each problem (garbage skipped, a length out of
range, an unknown packet id, a bad checksum, another module's address) as a `ZfmError` value
naming what and where (the byte offset in the stream), then resynchronises on the next 0xEF01.
"""

from __future__ import annotations

from dataclasses import dataclass

HEADER = b"\xef\x01"
DEFAULT_ADDRESS = 0xFFFFFFFF
PREAMBLE_BYTES = 9  # header 2 + address 4 + id 1 + length 2

# packet ids
COMMAND = 0x01
DATA = 0x02
ACK = 0x07
END_DATA = 0x08
PACKET_IDS = {COMMAND: "command", DATA: "data", ACK: "ack", END_DATA: "end-of-data"}

# instruction codes (ZFM-70 manual, chapter 6)
GEN_IMG = 0x01
IMG2TZ = 0x02
MATCH = 0x03
SEARCH = 0x04
REG_MODEL = 0x05
STORE = 0x06
LOAD_CHAR = 0x07
UP_CHAR = 0x08
DOWN_CHAR = 0x09
DELETE_CHAR = 0x0C
EMPTY = 0x0D
VFY_PWD = 0x13
TEMPLATE_NUM = 0x1D
INSTRUCTIONS = {
    GEN_IMG: "GenImg", IMG2TZ: "Img2Tz", MATCH: "Match", SEARCH: "Search",
    REG_MODEL: "RegModel", STORE: "Store", LOAD_CHAR: "LoadChar", UP_CHAR: "UpChar",
    DOWN_CHAR: "DownChar", DELETE_CHAR: "DeleteChar", EMPTY: "Empty", VFY_PWD: "VfyPwd",
    TEMPLATE_NUM: "TemplateNum",
}

# confirmation codes (first payload byte of an acknowledge; R503 manual, "confirmation code")
OK = 0x00
PACKET_ERROR = 0x01
NO_FINGER = 0x02
ENROLL_FAIL = 0x03
IMAGE_MESSY = 0x06
TOO_FEW_FEATURES = 0x07
NO_MATCH = 0x08
NOT_FOUND = 0x09
COMBINE_FAIL = 0x0A
BAD_PAGE = 0x0B
TEMPLATE_READ_ERROR = 0x0C
UPLOAD_ERROR = 0x0D
CANNOT_RECEIVE = 0x0E
WRONG_PASSWORD = 0x13
NO_VALID_IMAGE = 0x15
PASSWORD_REQUIRED = 0x21
UNSUPPORTED = 0xFC
CONFIRMATIONS = {
    OK: "ok",
    PACKET_ERROR: "error when receiving the packet",
    NO_FINGER: "no finger on the sensor",
    ENROLL_FAIL: "failed to enroll the finger",
    IMAGE_MESSY: "image too messy to generate a character file",
    TOO_FEW_FEATURES: "too few features or image too small",
    NO_MATCH: "finger does not match",
    NOT_FOUND: "no matching finger found",
    COMBINE_FAIL: "failed to combine the character files",
    BAD_PAGE: "page id beyond the finger library",
    TEMPLATE_READ_ERROR: "error reading the template, or it is invalid",
    UPLOAD_ERROR: "error when uploading the template",
    CANNOT_RECEIVE: "cannot receive the following data packets",
    0x10: "failed to delete the template",
    0x11: "failed to clear the finger library",
    WRONG_PASSWORD: "wrong password",
    NO_VALID_IMAGE: "no valid primary image",
    0x18: "error writing flash",
    0x20: "address code incorrect",
    PASSWORD_REQUIRED: "password must be verified",
    UNSUPPORTED: "unsupported command",
    0xFD: "hardware error",
    0xFE: "command execution failure",
}

# buffers and templates (ZFM-70 manual 4.1: two 512-byte character file buffers)
CHAR_BUFFERS = (1, 2)
TEMPLATE_BYTES = 512
DATA_PACKET_SIZES = (32, 64, 128, 256)  # system parameter 6: 0, 1, 2, 3
DEFAULT_DATA_PACKET_SIZE = 128
MIN_LENGTH = 3  # one payload byte + the checksum
MAX_LENGTH = max(DATA_PACKET_SIZES) + 2


class ZfmError(ValueError):
    """One problem in the byte stream or a packet, with the stream offset where it starts."""

    def __init__(self, what: str, offset: int | None = None) -> None:
        self.what = what
        self.offset = offset
        super().__init__(what if offset is None else f"{what} at byte {offset}")


@dataclass(frozen=True, slots=True)
class Packet:
    kind: int  # packet id: COMMAND, DATA, ACK, END_DATA
    address: int
    payload: bytes

    def __repr__(self) -> str:  # payloads may carry template bytes: show their size only
        kind = PACKET_IDS.get(self.kind, hex(self.kind))
        return f"Packet({kind}, address=0x{self.address:08X}, {len(self.payload)} bytes)"


def describe(code: int) -> str:
    """A confirmation code in words, with its hex value."""
    return f"{CONFIRMATIONS.get(code, 'unknown confirmation code')} (0x{code:02X})"


def instruction_name(code: int) -> str:
    return INSTRUCTIONS.get(code, f"instruction 0x{code:02X}")


def checksum(kind: int, payload: bytes) -> int:
    length = len(payload) + 2
    return (kind + (length >> 8) + (length & 0xFF) + sum(payload)) & 0xFFFF


def encode(kind: int, payload: bytes, address: int = DEFAULT_ADDRESS) -> bytes:
    """One packet on the wire; refuses what no module would accept."""
    if kind not in PACKET_IDS:
        raise ZfmError(f"unexpected packet id 0x{kind:02X}")
    if not 0 <= address <= 0xFFFFFFFF:
        raise ZfmError(f"address {address} out of range")
    length = len(payload) + 2
    if not MIN_LENGTH <= length <= MAX_LENGTH:
        raise ZfmError(f"length {length} out of range {MIN_LENGTH}..{MAX_LENGTH}")
    return (HEADER + address.to_bytes(4, "big") + bytes([kind]) + length.to_bytes(2, "big")
            + payload + checksum(kind, payload).to_bytes(2, "big"))


def command(code: int, params: bytes = b"", address: int = DEFAULT_ADDRESS) -> bytes:
    return encode(COMMAND, bytes([code]) + params, address)


def ack(confirmation: int, extra: bytes = b"", address: int = DEFAULT_ADDRESS) -> bytes:
    return encode(ACK, bytes([confirmation]) + extra, address)


def data_packets(data: bytes, packet_size: int = DEFAULT_DATA_PACKET_SIZE,
                 address: int = DEFAULT_ADDRESS) -> list[bytes]:
    """`data` split into data packets of `packet_size` bytes, the last one END_DATA."""
    if packet_size not in DATA_PACKET_SIZES:
        raise ZfmError(f"data packet size {packet_size} not one of {DATA_PACKET_SIZES}")
    if not data:
        raise ZfmError("no data to send")
    chunks = [data[i:i + packet_size] for i in range(0, len(data), packet_size)]
    return [encode(END_DATA if i == len(chunks) - 1 else DATA, chunk, address)
            for i, chunk in enumerate(chunks)]


def parse_ack(packet: Packet) -> tuple[int, bytes]:
    """(confirmation code, the bytes after it) of an acknowledge packet."""
    if packet.kind != ACK:
        raise ZfmError(f"unexpected packet id 0x{packet.kind:02X} "
                       f"({PACKET_IDS.get(packet.kind, '?')}), expected an ack")
    if not packet.payload:
        raise ZfmError("ack without a confirmation code")
    return packet.payload[0], packet.payload[1:]


class PacketParser:
    """Streaming parser: feed bytes as they arrive, get packets and problems in stream order.

    `address`: packets for another address are reported (`wrong address`), not returned; None
    accepts any. After a bad length, id or checksum the parser resumes one byte later (the real
    packet may start inside what only looked like one); an intact packet for another address
    is skipped whole.
    """

    def __init__(self, address: int | None = DEFAULT_ADDRESS) -> None:
        self.address = address
        self._buf = bytearray()
        self._offset = 0  # stream offset of _buf[0]

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a packet."""
        return len(self._buf)

    @property
    def offset(self) -> int:
        """Stream offset of the first byte held back."""
        return self._offset

    def reset(self) -> None:
        """Forget a partial packet (after a flush of the line)."""
        self._offset += len(self._buf)
        self._buf.clear()

    def _drop(self, n: int) -> None:
        del self._buf[:n]
        self._offset += n

    def feed(self, data: bytes) -> list[Packet | ZfmError]:
        self._buf += data
        out: list[Packet | ZfmError] = []
        while self._buf:
            start = self._buf.find(HEADER)
            if start < 0:
                # keep a trailing 0xEF: it may be the first half of the next header
                keep = 1 if self._buf[-1] == HEADER[0] else 0
                skipped = len(self._buf) - keep
                if skipped:
                    out.append(ZfmError(f"garbage: {skipped} bytes without a packet header",
                                        self._offset))
                    self._drop(skipped)
                break
            if start:
                out.append(ZfmError(f"garbage: {start} bytes before a packet header",
                                    self._offset))
                self._drop(start)
            if len(self._buf) < PREAMBLE_BYTES:
                break
            address = int.from_bytes(self._buf[2:6], "big")
            kind = self._buf[6]
            length = int.from_bytes(self._buf[7:9], "big")
            if kind not in PACKET_IDS:
                out.append(ZfmError(f"unexpected packet id 0x{kind:02X}", self._offset))
                self._drop(1)
                continue
            if not MIN_LENGTH <= length <= MAX_LENGTH:
                out.append(ZfmError(f"length {length} out of range {MIN_LENGTH}..{MAX_LENGTH}",
                                    self._offset))
                self._drop(1)
                continue
            total = PREAMBLE_BYTES + length
            if len(self._buf) < total:
                break
            payload = bytes(self._buf[PREAMBLE_BYTES:total - 2])
            got = int.from_bytes(self._buf[total - 2:total], "big")
            expected = checksum(kind, payload)
            if got != expected:
                out.append(ZfmError(f"bad checksum 0x{got:04X} expected 0x{expected:04X}",
                                    self._offset))
                self._drop(1)
                continue
            if self.address is not None and address != self.address:
                out.append(ZfmError(f"wrong address 0x{address:08X} expected "
                                    f"0x{self.address:08X}", self._offset))
                self._drop(total)
                continue
            out.append(Packet(kind, address, payload))
            self._drop(total)
        return out


def parse_all(data: bytes, address: int | None = DEFAULT_ADDRESS) -> list[Packet | ZfmError]:
    """Everything in `data` at once (tests and tools); an incomplete tail is reported too."""
    parser = PacketParser(address)
    out = parser.feed(data)
    if parser.pending:
        out.append(ZfmError(f"truncated: {parser.pending} bytes of an incomplete packet",
                            parser.offset))
    return out
