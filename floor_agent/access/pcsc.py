"""The PC/SC card reader driver: a thin pyscard adapter for one reader of one door.

A thread waits on pcscd (SCardGetStatusChange with a short timeout, woken by SCardCancel on
stop) for a card to arrive or leave. For each new card it reads the UID with `FF CA 00 00 00`
and, in clone-resistant mode (a card master key given), runs cardproof's DESFire EV2
authentication with a fresh RndA; the result is a `model.CardRead` handed to `on_card`, a card
leaving the field a `CardRemoved` handed to `on_removed`. Whatever the card answers, the
thread never raises: a malformed exchange is a CardRead with proof "error" and a detail naming
the step and what was wrong, so the decision denies it with a reason. The key never leaves
this object (not in a repr, a log line or a detail).

Timeouts: a real reader enforces the card's frame waiting time itself and fails the transmit;
an answer that arrives but later than `answer_timeout` is refused here as well (a slow card is
a relay suspect). vpcd has no timeout: a silent virtual card holds the transmit until it
leaves the field, which then fails the transmit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from smartcard import scard

from floor_agent.access import cardproof
from floor_agent.access.cardproof import ProofError, ProofFailed
from floor_agent.access.config import DoorReader
from floor_agent.access.model import CardProof, CardRead, Direction
from floor_agent.common.clock import utc_now

log = logging.getLogger(__name__)

_COUNTER_SHIFT = 16  # pcsclite keeps a card event counter in the high 16 bits of the state


@dataclass(frozen=True, slots=True)
class CardRemoved:
    """The card left the reader's field."""

    door_id: str
    reader_id: str
    direction: Direction
    at: datetime


def _message(hresult: int) -> str:
    return f"{scard.SCardGetErrorMessage(hresult).rstrip('. ')} (0x{hresult & 0xFFFFFFFF:08X})"


def match_reader(wanted: str, readers: list[str]) -> str:
    """The one reader whose name contains `wanted`; a clear error for none or several."""
    hits = [name for name in readers if wanted in name]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise LookupError(f"no PC/SC reader matches {wanted!r} (readers: {readers})")
    raise LookupError(f"PC/SC reader {wanted!r} is ambiguous: matches {hits}")


class PcscCardReader:
    """One PC/SC reader bound to one door reader; `start()` runs it, `stop()` ends it."""

    def __init__(self, reader: str, *, door_id: str, reader_id: str, direction: Direction = "in",
                 on_card: Callable[[CardRead], None],
                 on_removed: Callable[[CardRemoved], None] | None = None,
                 card_master_key: bytes | None = None, answer_timeout: float = 0.5,
                 poll_seconds: float = 0.5,
                 now: Callable[[], datetime] = utc_now) -> None:
        self.wanted = reader
        self.door_id = door_id
        self.reader_id = reader_id
        self.direction = direction
        self.on_card = on_card
        self.on_removed = on_removed
        self._master_key = card_master_key  # None: UID-only reads (proof "none")
        self.answer_timeout = answer_timeout
        self.poll_seconds = poll_seconds
        self.now = now
        self.reader_name: str | None = None  # the PC/SC name once resolved
        self.problem = ""  # why the reader is not watching right now ("" when it is)
        self._stop = threading.Event()
        self._ctx: int | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, door_id: str, reader: DoorReader, *,
                    on_card: Callable[[CardRead], None],
                    on_removed: Callable[[CardRemoved], None] | None = None,
                    card_master_key: bytes | None = None) -> PcscCardReader:
        """The driver of a `kind: pcsc` reader of door.yaml; pass the card master key when the
        policy requires the card proof (`require_card_proof`)."""
        if reader.kind != "pcsc" or reader.pcsc_reader is None:
            raise ValueError(f"{door_id}/{reader.reader_id}: not a pcsc reader")
        return cls(reader.pcsc_reader, door_id=door_id, reader_id=reader.reader_id,
                   direction=reader.direction, on_card=on_card, on_removed=on_removed,
                   card_master_key=card_master_key)

    def __repr__(self) -> str:
        mode = "proof" if self._master_key is not None else "uid-only"
        return (f"PcscCardReader({self.wanted!r}, door={self.door_id}/{self.reader_id}, "
                f"{mode})")

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self!r} already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"pcsc-{self.door_id}-{self.reader_id}")
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        ctx = self._ctx
        if ctx is not None:
            scard.SCardCancel(ctx)  # wakes a waiting SCardGetStatusChange at once
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def watching(self) -> bool:
        """The reader is resolved and its card events are being watched."""
        return self.running and self.reader_name is not None and not self.problem

    # --- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._watch()
            except Exception as e:  # never let the thread die: report and retry
                self._set_problem(f"reader thread: {type(e).__name__}: {e}")
            finally:
                self._release()
            self._stop.wait(self.poll_seconds)

    def _release(self) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            scard.SCardReleaseContext(ctx)

    def _set_problem(self, problem: str) -> None:
        if problem != self.problem:
            log.warning("%s: %s", self, problem)
        self.problem = problem

    def _watch(self) -> None:
        """Establish a context, find the reader, follow its card events until an error."""
        hresult, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        if hresult != scard.SCARD_S_SUCCESS:
            self._set_problem(f"pcscd: {_message(hresult)}")
            return
        self._ctx = ctx
        hresult, readers = scard.SCardListReaders(ctx, [])
        if hresult not in (scard.SCARD_S_SUCCESS, scard.SCARD_E_NO_READERS_AVAILABLE):
            self._set_problem(f"list readers: {_message(hresult)}")
            return
        try:
            name = match_reader(self.wanted, list(readers or []))
        except LookupError as e:
            self._set_problem(str(e))
            return
        self.reader_name = name
        self._set_problem("")
        state = scard.SCARD_STATE_UNAWARE
        card_counter: int | None = None  # event counter of the card being held, if any
        while not self._stop.is_set():
            hresult, states = scard.SCardGetStatusChange(
                ctx, int(self.poll_seconds * 1000), [(name, state)])
            if hresult in (scard.SCARD_E_TIMEOUT, scard.SCARD_E_CANCELLED):
                continue
            if hresult != scard.SCARD_S_SUCCESS:
                if card_counter is not None:
                    self._removed()
                self._set_problem(f"{name}: {_message(hresult)}")
                return
            state = states[0][1] & ~scard.SCARD_STATE_CHANGED
            counter = state >> _COUNTER_SHIFT
            present = bool(state & scard.SCARD_STATE_PRESENT)
            if card_counter is not None and (not present or counter != card_counter):
                card_counter = None
                self._removed()
            if present and card_counter is None:
                card_counter = counter
                self._deliver(self._read_card(ctx, name, state))

    def _removed(self) -> None:
        if self.on_removed is None:
            return
        event = CardRemoved(self.door_id, self.reader_id, self.direction, self.now())
        try:
            self.on_removed(event)
        except Exception:
            log.exception("%s: on_removed callback failed", self)

    def _deliver(self, read: CardRead) -> None:
        try:
            self.on_card(read)
        except Exception:
            log.exception("%s: on_card callback failed", self)

    # --- one card --------------------------------------------------------------------------

    def _card_read(self, uid: bytes, proof: CardProof, detail: str) -> CardRead:
        return CardRead(door_id=self.door_id, reader_id=self.reader_id,
                        direction=self.direction, uid=uid.hex().upper(), at=self.now(),
                        proof=proof, detail=detail)

    def _read_card(self, ctx: int, name: str, state: int) -> CardRead:
        """UID, then the proof when configured; every failure becomes the CardRead's detail."""
        if state & scard.SCARD_STATE_MUTE:
            return self._card_read(b"", "error", "CONNECT: the card is mute (no ATR)")
        hresult, hcard, protocol = scard.SCardConnect(
            ctx, name, scard.SCARD_SHARE_SHARED, scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)
        if hresult != scard.SCARD_S_SUCCESS:
            return self._card_read(b"", "error", f"CONNECT: {_message(hresult)}")
        uid = b""
        try:
            def transmit(apdu: bytes) -> bytes:
                return self._transmit(hcard, protocol, apdu)

            uid = cardproof.parse_uid(transmit(cardproof.GET_UID))
            if self._master_key is None:
                return self._card_read(uid, "none", "UID only: no card proof configured")
            cardproof.run_proof(transmit, self._master_key, uid, cardproof.new_challenge())
            return self._card_read(uid, "ok", "AuthenticateEV2First: key proven")
        except ProofFailed as e:
            return self._card_read(uid, "failed", str(e))
        except ProofError as e:
            return self._card_read(uid, "error", str(e))
        except Exception as e:  # a bug here must still deny, never grant or kill the thread
            log.exception("%s: reading a card failed", self)
            return self._card_read(uid, "error", f"internal error: {type(e).__name__}")
        finally:
            # leave, not reset: resetting a card that vanished mid-command leaves pcscd's
            # vpcd reader stuck; the EV2 session is useless without its session keys anyway
            scard.SCardDisconnect(hcard, scard.SCARD_LEAVE_CARD)

    def _transmit(self, hcard: int, protocol: int, apdu: bytes) -> bytes:
        step = cardproof.step_of(apdu)
        started = time.monotonic()
        hresult, response = scard.SCardTransmit(hcard, protocol, list(apdu))
        elapsed = time.monotonic() - started
        if hresult != scard.SCARD_S_SUCCESS:
            raise ProofError(f"{step}: no answer ({_message(hresult)})")
        if not response:  # not even a status word: vpcd's answer when a card leaves mid-command
            raise ProofError(f"{step}: no answer (empty response)")
        if elapsed > self.answer_timeout:
            raise ProofError(f"{step}: answered after {elapsed:.2f} s, limit "
                             f"{self.answer_timeout:.2f} s")
        return bytes(response)
