"""The fingerprint module driver: ZhianTec UART protocol (R30x, R503, AS608) over pyserial.

The module is a 1:1 comparator here, never a store: templates live sealed in the controller's
cache (templates.py). To verify, the driver captures the finger into CharBuffer1, downloads
each of the card holder's templates into CharBuffer2 and asks for a Match score; the best score
at or above the configured threshold is a match. When none is, and the caller gives the other
enrolled fingers, it finds whose finger it is (1:N, `identify`): they go into the flash library
for the length of one Search (the module compares in flash only) and are emptied with the rest
at the end. To enroll, it captures twice, combines
(RegModel) and uploads the template. Either way it then overwrites both char buffers with zeros
and empties the flash library, so no template stays on a module someone could unscrew.

Fail closed: a missing port, a silent module, garbage, checksum errors that persist after
`command_retries` re-sends, or an unexpected confirmation code end as
FingerResult(status="sensor_error") with the reason (or a FingerprintError for the lower-level
calls), never as a match. Messages name the instruction and the problem, never template bytes
or the password.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

import serial

from floor_agent.access import zfm
from floor_agent.access.model import FingerResult, FingerSearch
from floor_agent.common.clock import utc_now

if TYPE_CHECKING:
    from floor_agent.access.config import FingerprintConfig

POLL_INTERVAL = 0.05  # between GenImg calls while no finger is on the glass
READ_SLICE = 0.02  # serial read timeout; the response deadline is kept by the driver
POOR_CODES = (zfm.IMAGE_MESSY, zfm.TOO_FEW_FEATURES, zfm.NO_VALID_IMAGE)
MAX_UPLOAD_BYTES = 4 * zfm.TEMPLATE_BYTES  # a longer upload is a runaway line, not a template
# flash pages one 1:N search fills at a time: below the library of every module family named
# above (the smallest, the ZFM-20, holds 162); more candidates are searched in several rounds
LIBRARY_PAGES = 100

Candidate = tuple[str, str, int, bytes]  # (person_id, template_id, finger, clear template)


class FingerprintError(Exception):
    """The module could not do what was asked. `reason`: sensor_error, timeout, poor_image,
    combine_failed or bad_template; `code`: the module's confirmation code, if it gave one."""

    def __init__(self, message: str, reason: str = "sensor_error", code: int | None = None):
        self.reason = reason
        self.code = code
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Capture:
    """One capture into a char buffer. `status`: ok | timeout | poor_image."""

    status: Literal["ok", "timeout", "poor_image"]
    attempts: int  # images taken
    detail: str = ""


class FingerprintModule:
    """One module on one serial port; opened on first use, reopened after a transport error."""

    def __init__(self, port: str, baud: int = 57600, address: int = zfm.DEFAULT_ADDRESS,
                 password: int = 0, response_timeout: float = 2.0,
                 packet_size: int = zfm.DEFAULT_DATA_PACKET_SIZE, command_retries: int = 2,
                 clock: Callable[[], datetime] = utc_now,
                 library_pages: int = LIBRARY_PAGES) -> None:
        if packet_size not in zfm.DATA_PACKET_SIZES:
            raise ValueError(f"packet_size {packet_size} not one of {zfm.DATA_PACKET_SIZES}")
        if library_pages < 1:
            raise ValueError(f"library_pages {library_pages} must be at least 1")
        self.library_pages = library_pages
        self.port = port
        self.baud = baud
        self.address = address
        self._password = password
        self.response_timeout = response_timeout
        self.packet_size = packet_size
        self.command_retries = command_retries
        self._clock = clock
        self._serial: serial.Serial | None = None
        self._parser = zfm.PacketParser(address)
        self._inbox: deque[zfm.Packet | zfm.ZfmError] = deque()

    def __repr__(self) -> str:  # no password
        return (f"FingerprintModule(port={self.port!r}, baud={self.baud}, "
                f"address=0x{self.address:08X})")

    @classmethod
    def from_config(cls, config: FingerprintConfig) -> FingerprintModule:
        """The door's module as door.yaml describes it."""
        return cls(config.port, config.baud, config.address, config.password,
                   config.response_timeout_seconds)

    # --- transport ----------------------------------------------------------------------------

    def close(self) -> None:
        if self._serial is not None:
            with contextlib.suppress(OSError, serial.SerialException):
                self._serial.close()
            self._serial = None

    def __enter__(self) -> FingerprintModule:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _port(self) -> serial.Serial:
        if self._serial is None:
            try:
                self._serial = serial.Serial(self.port, self.baud, timeout=READ_SLICE,
                                             write_timeout=self.response_timeout)
            except (OSError, serial.SerialException, ValueError) as e:
                raise FingerprintError(f"fingerprint port {self.port}: cannot open ({e})") \
                    from None
            self._parser.reset()
            self._inbox.clear()
        return self._serial

    def _transport_failed(self, e: Exception) -> FingerprintError:
        self.close()
        return FingerprintError(f"fingerprint port {self.port}: {e}")

    def _flush(self) -> None:
        try:
            self._port().reset_input_buffer()
        except (OSError, serial.SerialException) as e:
            raise self._transport_failed(e) from None
        self._parser.reset()
        self._inbox.clear()

    def _write(self, data: bytes) -> None:
        port = self._port()
        try:
            port.write(data)
            port.flush()
        except (OSError, serial.SerialException) as e:
            raise self._transport_failed(e) from None

    def _read_packet(self, what: str) -> zfm.Packet:
        """The next intact packet for us within the response timeout. Line noise before it is
        tolerated; a corrupt packet raises ZfmError (the caller may re-send); silence raises
        FingerprintError."""
        deadline = time.monotonic() + self.response_timeout
        noise = 0
        port = self._port()
        while True:
            while self._inbox:
                item = self._inbox.popleft()
                if isinstance(item, zfm.Packet):
                    return item
                if item.what.startswith("garbage"):
                    noise += 1
                    continue
                raise item
            if time.monotonic() >= deadline:
                saw = []
                if self._parser.pending:
                    saw.append(f"{self._parser.pending} bytes of an incomplete packet")
                if noise:
                    saw.append("garbage only")
                tail = f" (got {', '.join(saw)})" if saw else ""
                raise FingerprintError(f"{what}: no answer within {self.response_timeout:g} s"
                                       f"{tail}")
            try:
                chunk = port.read(max(1, port.in_waiting))
            except (OSError, serial.SerialException) as e:
                raise self._transport_failed(e) from None
            if chunk:
                self._inbox.extend(self._parser.feed(chunk))

    def _transact(self, code: int, params: bytes = b"") -> tuple[int, bytes]:
        """Send one instruction, return (confirmation code, rest of the ack). A corrupted
        reply is retried `command_retries` times; silence is not (it would only multiply the
        wait)."""
        name = zfm.instruction_name(code)
        packet = zfm.command(code, params, self.address)
        last: zfm.ZfmError | None = None
        for _ in range(1 + self.command_retries):
            self._flush()
            self._write(packet)
            try:
                return zfm.parse_ack(self._read_packet(name))
            except zfm.ZfmError as e:
                last = e
        raise FingerprintError(f"{name}: corrupted reply after {1 + self.command_retries} "
                               f"tries ({last})")

    def _expect_ok(self, code: int, params: bytes = b"") -> bytes:
        confirmation, rest = self._transact(code, params)
        if confirmation != zfm.OK:
            raise FingerprintError(f"{zfm.instruction_name(code)}: {zfm.describe(confirmation)}",
                                   code=confirmation)
        return rest

    # --- instructions -------------------------------------------------------------------------

    def verify_password(self) -> None:
        """VfyPwd: the handshake a module with a set password needs before anything else."""
        self._expect_ok(zfm.VFY_PWD, self._password.to_bytes(4, "big"))

    def capture(self, timeout: float, retries: int, buffer: int = 1) -> Capture:
        """GenImg until a finger is on the glass (or `timeout` passes), then Img2Tz into
        `buffer`; a poor image is taken again, up to `retries` more times."""
        if buffer not in zfm.CHAR_BUFFERS:
            raise ValueError(f"char buffer {buffer} not one of {zfm.CHAR_BUFFERS}")
        deadline = time.monotonic() + timeout
        attempts = 0
        poor = ""
        while True:
            confirmation, _ = self._transact(zfm.GEN_IMG)
            if confirmation == zfm.NO_FINGER:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if attempts:
                        return Capture("poor_image", attempts, poor)
                    return Capture("timeout", 0, f"no finger within {timeout:g} s")
                time.sleep(min(POLL_INTERVAL, remaining))
                continue
            if confirmation == zfm.OK:
                attempts += 1
                confirmation, _ = self._transact(zfm.IMG2TZ, bytes([buffer]))
                if confirmation == zfm.OK:
                    return Capture("ok", attempts)
            elif confirmation == zfm.ENROLL_FAIL:  # GenImg: the image could not be taken
                attempts += 1
            if confirmation not in POOR_CODES + (zfm.ENROLL_FAIL,):
                raise FingerprintError(f"capture: {zfm.describe(confirmation)}",
                                       code=confirmation)
            poor = f"{zfm.describe(confirmation)} after {attempts} image(s)"
            if attempts > retries:
                return Capture("poor_image", attempts, poor)

    def download_template(self, buffer: int, template_bytes: bytes) -> None:
        """DownChar: a template from the controller into a char buffer."""
        if buffer not in zfm.CHAR_BUFFERS:
            raise ValueError(f"char buffer {buffer} not one of {zfm.CHAR_BUFFERS}")
        if len(template_bytes) != zfm.TEMPLATE_BYTES:
            raise FingerprintError(f"template is {len(template_bytes)} bytes, expected "
                                   f"{zfm.TEMPLATE_BYTES}", reason="bad_template")
        self._expect_ok(zfm.DOWN_CHAR, bytes([buffer]))
        for packet in zfm.data_packets(template_bytes, self.packet_size, self.address):
            self._write(packet)

    def match(self) -> int:
        """Match CharBuffer1 against CharBuffer2: the score (0 when the module says no)."""
        confirmation, rest = self._transact(zfm.MATCH)
        if confirmation == zfm.NO_MATCH:
            return 0
        if confirmation != zfm.OK:
            raise FingerprintError(f"Match: {zfm.describe(confirmation)}", code=confirmation)
        if len(rest) != 2:
            raise FingerprintError(f"Match: ack with {len(rest)} bytes after the code, "
                                   "expected a 2-byte score")
        return int.from_bytes(rest, "big")

    def upload_template(self, buffer: int) -> bytes:
        """UpChar: a char buffer's template to the controller. A corrupted data packet makes
        the whole upload start again (UpChar leaves the buffer as it is)."""
        if buffer not in zfm.CHAR_BUFFERS:
            raise ValueError(f"char buffer {buffer} not one of {zfm.CHAR_BUFFERS}")
        last: zfm.ZfmError | None = None
        for _ in range(1 + self.command_retries):
            self._expect_ok(zfm.UP_CHAR, bytes([buffer]))
            try:
                return self._receive_data("UpChar")
            except zfm.ZfmError as e:
                last = e
        raise FingerprintError(f"UpChar: corrupted data after {1 + self.command_retries} "
                               f"tries ({last})")

    def _receive_data(self, what: str) -> bytes:
        data = bytearray()
        while True:
            packet = self._read_packet(f"{what} data")
            if packet.kind not in (zfm.DATA, zfm.END_DATA):
                raise zfm.ZfmError(f"unexpected packet id 0x{packet.kind:02X} in {what} data")
            data += packet.payload
            if len(data) > MAX_UPLOAD_BYTES:
                raise zfm.ZfmError(f"{what}: more than {MAX_UPLOAD_BYTES} bytes of data")
            if packet.kind == zfm.END_DATA:
                break
        if len(data) != zfm.TEMPLATE_BYTES:
            raise zfm.ZfmError(f"{what}: {len(data)} bytes of data, expected "
                               f"{zfm.TEMPLATE_BYTES}")
        return bytes(data)

    def store(self, buffer: int, page: int) -> None:
        """Store: a char buffer's template into flash page `page`."""
        if buffer not in zfm.CHAR_BUFFERS:
            raise ValueError(f"char buffer {buffer} not one of {zfm.CHAR_BUFFERS}")
        self._expect_ok(zfm.STORE, bytes([buffer]) + page.to_bytes(2, "big"))

    def search(self, buffer: int, start: int, count: int) -> tuple[int, int] | None:
        """Search: flash pages start..start+count-1 against a char buffer. (page, score) of the
        page the module reports, None when it reports none; a page outside the range asked is
        a broken answer, not a match."""
        if buffer not in zfm.CHAR_BUFFERS:
            raise ValueError(f"char buffer {buffer} not one of {zfm.CHAR_BUFFERS}")
        confirmation, rest = self._transact(
            zfm.SEARCH, bytes([buffer]) + start.to_bytes(2, "big") + count.to_bytes(2, "big"))
        if confirmation == zfm.NOT_FOUND:
            return None
        if confirmation != zfm.OK:
            raise FingerprintError(f"Search: {zfm.describe(confirmation)}", code=confirmation)
        if len(rest) != 4:
            raise FingerprintError(f"Search: ack with {len(rest)} bytes after the code, "
                                   "expected a 2-byte page and a 2-byte score")
        page, score = int.from_bytes(rest[:2], "big"), int.from_bytes(rest[2:], "big")
        if not start <= page < start + count:
            raise FingerprintError(f"Search: page {page} is outside the pages searched "
                                   f"({start}..{start + count - 1})")
        return page, score

    def identify(self, candidates: Sequence[Candidate], threshold: int) -> FingerSearch:
        """1:N: which of `candidates` is the finger already captured in CharBuffer1.

        They go into flash `library_pages` at a time (DownChar into CharBuffer2, Store), and
        the module Searches them. A reported page scoring below `threshold` is passed over and
        the search goes on after it: the module's own security level may be lower than ours,
        and a module may report the first page over its level rather than the best. Leaves
        templates in flash: the caller wipes (verify does). Any failure, timeout included, is
        status "failed" with the reason: it tells nothing about the finger."""
        try:
            for first in range(0, len(candidates), self.library_pages):
                batch = candidates[first:first + self.library_pages]
                for page, (_, template_id, _, clear) in enumerate(batch):
                    try:
                        self.download_template(2, clear)
                        self.store(2, page)
                    except FingerprintError as e:
                        raise FingerprintError(f"template {template_id!r}: {e}",
                                               e.reason, e.code) from None
                start = 0
                while start < len(batch):
                    found = self.search(1, start, len(batch) - start)
                    if found is None:
                        break
                    page, score = found
                    if score >= threshold:
                        person_id, template_id, _, _ = batch[page]
                        return FingerSearch("found", person_id, template_id, score)
                    start = page + 1
        except FingerprintError as e:
            return FingerSearch("failed", detail=str(e))
        return FingerSearch("not_found",
                            detail=f"{len(candidates)} other enrolled template(s) searched")

    def _identify_others(self, others: Callable[[], list[Candidate]],
                         threshold: int) -> FingerSearch:
        """`identify` over what `others` gives, dropped right after. Whatever goes wrong while
        making the list is a failed search too: the module must still be wiped."""
        try:
            candidates = others()
        except Exception as e:  # fail closed: a plain mismatch, and verify goes on to the wipe
            return FingerSearch("failed", detail=f"the other templates: {type(e).__name__}")
        try:
            return self.identify(candidates, threshold)
        finally:
            candidates.clear()

    def delete(self, page: int, count: int = 1) -> None:
        """DeleteChar: `count` templates from flash page `page`."""
        self._expect_ok(zfm.DELETE_CHAR, page.to_bytes(2, "big") + count.to_bytes(2, "big"))

    def empty(self) -> None:
        """Empty: the whole flash library."""
        self._expect_ok(zfm.EMPTY)

    def wipe(self) -> None:
        """Leave nothing biometric in the char buffers or the library: zeros into both
        buffers (the protocol has no "clear buffer"), then Empty. The image buffer is only
        overwritten by the next GenImg."""
        for buffer in zfm.CHAR_BUFFERS:
            self.download_template(buffer, bytes(zfm.TEMPLATE_BYTES))
        self.empty()

    # --- what the controller uses -------------------------------------------------------------

    def verify(self, templates: Sequence[tuple[str, int, bytes]], threshold: int,
               capture_timeout: float, retries: int, person_id: str | None = None,
               others: Callable[[], list[Candidate]] | None = None) -> FingerResult:
        """1:1 against the card holder's templates [(template_id, finger, clear bytes)]: one
        capture, each template matched, best score wins if it reaches `threshold`. Below it,
        `others` (called only then, so the other templates are unsealed only then) gives the
        other enrolled fingers for a 1:N search of the same capture: its result is the
        no_match's `search`."""
        if not templates:
            return FingerResult("no_match", self._clock(), person_id=None,
                                detail="no enrolled template to compare")
        touched = False
        result: FingerResult
        try:
            self.verify_password()
            touched = True
            cap = self.capture(capture_timeout, retries, buffer=1)
            if cap.status != "ok":
                result = FingerResult(cap.status, self._clock(), detail=cap.detail)
            else:
                best: tuple[int, str, int] | None = None
                for template_id, finger, clear in templates:
                    try:
                        self.download_template(2, clear)
                    except FingerprintError as e:
                        raise FingerprintError(f"template {template_id!r}: {e}",
                                               e.reason, e.code) from None
                    score = self.match()
                    if best is None or score > best[0]:
                        best = (score, template_id, finger)
                assert best is not None
                score, template_id, finger = best
                if score >= threshold:
                    result = FingerResult("match", self._clock(), person_id=person_id,
                                          template_id=template_id, finger=finger, score=score)
                else:
                    search = None if others is None else self._identify_others(others,
                                                                               threshold)
                    result = FingerResult("no_match", self._clock(), score=score,
                                          detail=f"best score {score} below {threshold}",
                                          search=search)
        except FingerprintError as e:
            result = FingerResult("sensor_error", self._clock(), detail=str(e))
        if touched:
            try:
                self.wipe()
            except FingerprintError as e:
                # a module we cannot wipe is not one to trust with a decision
                detail = f"{result.detail}; " if result.detail else ""
                result = FingerResult("sensor_error", self._clock(),
                                      detail=f"{detail}module not wiped: {e}")
        return result

    def enroll(self, capture_timeout: float, retries: int = 2) -> bytes:
        """Capture twice (buffers 1 and 2), RegModel, upload the template, wipe the module.
        The caller seals the result (templates.seal) before it goes anywhere. The second
        capture does not wait for the finger to be lifted and placed again (the enrolment
        station's prompt asks for that; the module only needs two images)."""
        touched = False
        try:
            self.verify_password()
            touched = True
            for buffer in zfm.CHAR_BUFFERS:
                cap = self.capture(capture_timeout, retries, buffer)
                if cap.status != "ok":
                    raise FingerprintError(f"enroll capture {buffer}: {cap.detail}",
                                           reason=cap.status)
            confirmation, _ = self._transact(zfm.REG_MODEL)
            if confirmation == zfm.COMBINE_FAIL:
                raise FingerprintError("enroll: the two captures are not of the same finger",
                                       reason="combine_failed", code=confirmation)
            if confirmation != zfm.OK:
                raise FingerprintError(f"RegModel: {zfm.describe(confirmation)}",
                                       code=confirmation)
            template = self.upload_template(1)
        except FingerprintError as e:
            if touched:
                try:
                    self.wipe()
                except FingerprintError as wipe_error:
                    raise FingerprintError(f"{e}; module not wiped: {wipe_error}",
                                           e.reason, e.code) from None
            raise
        self.wipe()
        return template
