"""access OSDP: our Control Panel (libosdp) against a simulated reader (a libosdp Peripheral
Device) over a socketpair, secure channel on. Each test builds its own pair: a wrong key puts
a reader offline for 300 s inside that Control Panel, so no Control Panel is ever reused.

Every reader event the bus hands over is emitted as the door agent's OSDP pump emits it
(runner._start_osdp_bus), through a real Spool (AuditRecorder): an event the audit chain
would refuse fails here, not at the door."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import osdp as libosdp
import pytest
from audit_events import AuditRecorder

from floor_agent.access.config import DoorReader
from floor_agent.access.model import CardRead
from floor_agent.access.osdp import (
    FrameGuard,
    OsdpBus,
    OsdpError,
    OsdpReader,
    ReaderEvent,
    card_read_of,
    crc16,
    load_scbk,
    reader_from_config,
    socket_io,
)
from floor_agent.simulated.osdp_reader import SimulatedReader

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
OTHER_KEY = bytes.fromhex("ffeeddccbbaa99887766554433221100")
UID = "04A224B2C35E80"
WAIT = 5.0  # bound on one round trip or a secure channel setup; not a timing target
OFFLINE_WAIT = 20.0  # libosdp declares a silent reader offline after about 8 s of retries
# real frames captured between libosdp's CP and PD (checksum- and CRC-terminated)
POLL_REPLY = bytes.fromhex("538114000445bebafe0101afbeaddeaddead89fa")
CMD_FRAME = bytes.fromhex("ff530109000461006023")


class Pair:
    """Our bus and a simulated reader on the two ends of one socketpair."""

    def __init__(self, cp_key: bytes, pd_key: bytes | None, install: bool = False,
                 grace: float = 3.0) -> None:
        self.cp_sock, self.pd_sock = socket.socketpair()
        self.reader_cfg = OsdpReader("d1", "r1", 0, "in", cp_key, install_mode=install)
        read, write = socket_io(self.cp_sock)
        self.bus = OsdpBus([self.reader_cfg], read, write, bus="test-bus",
                           online_grace_seconds=grace)
        self.reader = SimulatedReader(self.pd_sock, 0, pd_key)
        self.seen: list[CardRead | ReaderEvent] = []
        self.events = AuditRecorder()

    def keep(self, item: CardRead | ReaderEvent) -> None:
        """Keep an item the bus handed over; a reader event also goes into the audit trail."""
        self.seen.append(item)
        if isinstance(item, ReaderEvent):
            emit_reader_event(self.events, item)

    def start(self) -> Pair:
        self.reader.start()
        self.bus.start()
        return self

    def close(self) -> None:
        self.reader.stop()
        self.bus.stop()
        self.cp_sock.close()
        self.pd_sock.close()
        self.events.close()

    def expect(self, kind: str, timeout: float = WAIT) -> CardRead | ReaderEvent:
        """Items until one of `kind` (an event kind, or "card"); all are kept in `seen`."""
        import time

        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            item = self.bus.next_item(left)
            if item is None:
                break
            self.keep(item)
            if (kind == "card" and isinstance(item, CardRead)) or (
                    isinstance(item, ReaderEvent) and item.kind == kind):
                return item
        raise AssertionError(f"no {kind} within {timeout} s; saw {self.seen}")

    def drain(self, seconds: float) -> list[CardRead | ReaderEvent]:
        items = []
        while (item := self.bus.next_item(seconds)) is not None:
            items.append(item)
            self.keep(item)
        return items


def emit_reader_event(emit: AuditRecorder, item: ReaderEvent) -> None:
    """The door agent's OSDP pump (runner._start_osdp_bus): a reader event as an audit event."""
    emit(item.kind, f"door {item.door_id}", item.severity, door_id=item.door_id,
         reader_id=item.reader_id, detail=item.detail)


@pytest.fixture
def pair() -> Iterator[Pair]:
    p = Pair(KEY, KEY).start()
    p.expect("door.reader_online")
    yield p
    p.close()


def test_card_read_arrives_as_a_uid_only_card_read_over_the_secure_channel(pair: Pair) -> None:
    assert pair.bus.online("r1") and pair.bus.secure("r1") and pair.reader.secure
    pair.reader.present_card(UID)
    card = pair.expect("card")
    assert isinstance(card, CardRead)
    assert (card.door_id, card.reader_id, card.direction, card.uid) == ("d1", "r1", "in", UID)
    assert card.proof == "none"  # OSDP readers prove nothing about the card
    assert card.at.tzinfo is not None
    assert "test-bus" in card.detail and "56-bit" in card.detail


def test_feedback_led_and_buzzer_reach_the_reader(pair: Pair) -> None:
    assert pair.bus.feedback("r1", granted=True)
    led = pair.reader.wait_command("led", WAIT)
    buzzer = pair.reader.wait_command("buzzer", WAIT)
    assert led is not None and buzzer is not None
    assert led.get("on_color") == libosdp.CommandLEDColor.Green
    assert buzzer.get("rep_count") == 1
    assert pair.bus.feedback("r1", granted=False)
    led = pair.reader.wait_command("led", WAIT)
    buzzer = pair.reader.wait_command("buzzer", WAIT)
    assert led is not None and buzzer is not None
    assert led.get("on_color") == libosdp.CommandLEDColor.Red
    assert buzzer.get("rep_count") == 3
    with pytest.raises(OsdpError, match="no reader 'nope'"):
        pair.bus.feedback("nope", granted=True)


def test_tamper_is_a_critical_alarm_and_its_end_is_reported(pair: Pair) -> None:
    pair.reader.tamper(True)
    event = pair.expect("door.reader_tamper")
    assert isinstance(event, ReaderEvent)
    assert event.severity == "critical" and event.reader_id == "r1" and event.door_id == "d1"
    pair.reader.tamper(False)
    cleared = pair.expect("door.reader_tamper_cleared")
    assert cleared.severity == "info"  # type: ignore[union-attr]
    assert pair.events.kinds()[-2:] == ["door.reader_tamper", "door.reader_tamper_cleared"]
    assert pair.events.items[-1] == ("door.reader_tamper_cleared", "door d1", "info", {
        "door_id": "d1", "reader_id": "r1", "detail": "test-bus: tamper cleared"})


def test_garbage_on_the_bus_is_dropped_reported_and_never_a_card(pair: Pair) -> None:
    # a flood of junk, a frame-shaped card read with a broken CRC, an impossible length
    forged = bytearray(POLL_REPLY)
    forged[-1] ^= 0xFF
    pair.reader.send_garbage(bytes(range(256)) * 4 + bytes(forged) + b"\x53\x81\xff\xff\x04")
    event = pair.expect("door.reader_garbage")
    assert event.severity == "warning"  # type: ignore[union-attr]
    assert "test-bus: dropped malformed data" in event.detail  # type: ignore[union-attr]
    # a bus event, no reader named: spooled with an empty reader id, the bytes never in it
    garbage = pair.events.of("door.reader_garbage")
    assert len(garbage) == 1 and garbage[0]["door_id"] == "d1" and garbage[0]["reader_id"] == ""
    assert garbage[0]["detail"] == event.detail  # type: ignore[union-attr]
    assert POLL_REPLY.hex() not in str(garbage) and bytes(forged).hex() not in str(garbage)
    assert not any(isinstance(item, CardRead) for item in pair.seen)
    # the guard kept libosdp's receive ring from overflowing: the reader stays usable
    pair.reader.present_card(UID)
    card = pair.expect("card")
    assert card.uid == UID  # type: ignore[union-attr]
    assert [i for i in pair.seen if isinstance(i, CardRead)] == [card]
    assert pair.bus.online("r1")
    assert not any(getattr(i, "kind", "") == "door.reader_offline" for i in pair.seen)


def test_silent_reader_goes_offline_with_a_critical_alarm(pair: Pair) -> None:
    pair.reader.go_silent()
    event = pair.expect("door.reader_offline", OFFLINE_WAIT)
    assert event.severity == "critical"  # type: ignore[union-attr]
    assert "stopped answering" in event.detail  # type: ignore[union-attr]
    assert not pair.bus.online("r1")
    assert pair.bus.feedback("r1", granted=True) is False  # no crash, nothing sent


def test_wrong_scbk_never_comes_online_and_an_alarm_says_why() -> None:
    p = Pair(KEY, OTHER_KEY).start()
    try:
        event = p.expect("door.reader_offline")
        assert event.severity == "critical"  # type: ignore[union-attr]
        assert "SCBK does not match" in event.detail  # type: ignore[union-attr]
        for key in (KEY, OTHER_KEY):
            assert key.hex() not in repr(event) and key.hex() not in event.detail
        assert not p.bus.online("r1") and not p.bus.secure("r1")
        p.reader.present_card(UID)  # queued at the reader, but no channel will carry it
        assert not any(isinstance(i, CardRead) for i in p.drain(1.0))
        assert not any(getattr(i, "kind", "") == "door.reader_online" for i in p.seen)
    finally:
        p.close()


def test_install_mode_hands_a_factory_fresh_reader_its_key(tmp_path: Path) -> None:
    cfg = DoorReader(reader_id="r1", kind="osdp", osdp_port="/dev/ttyUSB0",
                     osdp_scbk_file=tmp_path / "r1.scbk", osdp_install_mode=True)
    reader = reader_from_config("d1", cfg)
    assert reader.install_mode
    assert (tmp_path / "r1.scbk").stat().st_mode & 0o777 == 0o600
    assert load_scbk(tmp_path / "r1.scbk") == reader.scbk
    p = Pair(reader.scbk, None, install=True).start()
    try:
        p.expect("door.reader_online")
        keyset = p.reader.wait_command("keyset", WAIT)
        assert keyset is not None and keyset.get("key_bytes") == 16
        assert reader.scbk.hex() not in repr(keyset)
    finally:
        p.close()
    # next start: the key file is there, install mode is no longer needed
    again = reader_from_config("d1", cfg.model_copy(update={"osdp_install_mode": False}))
    assert again.scbk == reader.scbk and not again.install_mode
    still = reader_from_config("d1", cfg)  # install mode left on: same key, nothing rewritten
    assert still.scbk == reader.scbk and still.install_mode


def test_install_mode_left_on_uses_the_key_a_reader_already_has() -> None:
    p = Pair(KEY, KEY, install=True).start()
    try:
        p.expect("door.reader_online")
        assert p.bus.secure("r1")
        assert p.reader.wait_command("keyset", 0.5) is None  # the key matched: no KEYSET
        p.reader.present_card(UID)
        assert p.expect("card").uid == UID  # type: ignore[union-attr]
    finally:
        p.close()


def test_no_key_and_no_install_mode_is_refused(tmp_path: Path) -> None:
    cfg = DoorReader(reader_id="r1", kind="osdp", osdp_port="/dev/ttyUSB0",
                     osdp_scbk_file=tmp_path / "missing.scbk")
    with pytest.raises(OsdpError, match="d1/r1: no SCBK .*install mode off: reader refused"):
        reader_from_config("d1", cfg)
    bare = DoorReader(reader_id="r2", kind="osdp", osdp_port="/dev/ttyUSB0",
                      osdp_install_mode=True)
    with pytest.raises(OsdpError, match="install mode needs osdp_scbk_file"):
        reader_from_config("d1", bare)


def test_scbk_file_must_be_private_and_32_hex(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text(KEY.hex())
    path.chmod(0o644)
    with pytest.raises(OsdpError, match="readable by others"):
        load_scbk(path)
    path.chmod(0o600)
    assert load_scbk(path) == KEY
    path.write_text("abcd")
    with pytest.raises(OsdpError, match="expected 32 hex characters"):
        load_scbk(path)
    path.write_text("zz" * 16)
    with pytest.raises(OsdpError, match="expected 32 hex characters") as err:
        load_scbk(path)
    assert "zz" not in str(err.value)
    with pytest.raises(OsdpError, match="cannot read the SCBK"):
        load_scbk(tmp_path / "absent")
    assert KEY.hex() not in repr(OsdpReader("d1", "r1", 0, "in", KEY))
    with pytest.raises(OsdpError, match="SCBK must be 16 bytes"):
        OsdpReader("d1", "r1", 0, "in", b"short")
    with pytest.raises(OsdpError, match="address 127"):
        OsdpReader("d1", "r1", 127, "in", KEY)


# --- the frame guard: pure, over bytes ------------------------------------------------------

def test_crc_matches_libosdp() -> None:
    assert crc16(POLL_REPLY[:-2]) == POLL_REPLY[-2] | POLL_REPLY[-1] << 8


def test_frame_guard_passes_valid_frames_whole_even_when_split() -> None:
    guard = FrameGuard()
    stream = CMD_FRAME + POLL_REPLY
    out = b""
    for i in range(0, len(stream), 3):
        frames, garbage = guard.feed(stream[i:i + 3])
        assert garbage == []
        out += frames
    assert out == stream


def test_frame_guard_drops_garbage_with_a_reason() -> None:
    guard = FrameGuard()
    bad_crc = bytearray(POLL_REPLY)
    bad_crc[7] ^= 1
    frames, garbage = guard.feed(b"junk" + bytes(bad_crc) + POLL_REPLY + b"\x00\x01")
    assert frames == POLL_REPLY
    assert "4 bytes: bytes outside any frame" in garbage
    assert "1 bytes: bad CRC" in garbage
    assert any("no start of message" in g for g in garbage)
    frames, garbage = guard.feed(b"\x53\x81\x02\x00\x04")
    assert frames == b"" and garbage[0] == "1 bytes: impossible length 2"


def test_frame_guard_does_not_let_a_fake_header_stall_real_frames() -> None:
    guard = FrameGuard()
    frames, garbage = guard.feed(b"\x53\x81\x00\x01\x04")  # claims 256 bytes, never sends them
    assert frames == b"" and garbage == []
    frames, garbage = guard.feed(POLL_REPLY)
    assert frames == POLL_REPLY
    assert garbage == ["5 bytes: a frame cut short"]


# --- events from libosdp: malformed ones are errors, never a card, never a crash ------------

READER = OsdpReader("d1", "r1", 0, "in", KEY)
NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(("event", "why"), [
    ({"event": libosdp.Event.CardRead, "format": 0, "length": 56}, "without card data"),
    ({"event": libosdp.Event.CardRead, "format": 0, "length": 200, "data": b"\x01"},
     "bit length 200 for 1 data bytes"),
    ({"event": libosdp.Event.CardRead, "format": 0, "length": "x", "data": b"\x01"},
     "bit length 'x'"),
    ({"event": libosdp.Event.CardRead, "format": 77, "data": b"\x01"}, "unknown format 77"),
])
def test_malformed_card_reads_are_errors_not_cards(event: dict[str, object], why: str,
                                                   audit_events: AuditRecorder) -> None:
    item = card_read_of(READER, event, NOW, "bus0")
    assert isinstance(item, ReaderEvent) and item.kind == "door.reader_error"
    assert why in item.detail and "bus0" in item.detail
    emit_reader_event(audit_events, item)
    assert audit_events.items == [("door.reader_error", "door d1", "warning", {
        "door_id": "d1", "reader_id": "r1", "detail": item.detail})]


def test_card_read_takes_only_the_bits_it_declares() -> None:
    item = card_read_of(READER, {"event": libosdp.Event.CardRead, "format": 0, "length": 26,
                                 "data": b"\x12\x34\x56\x40\xff\xff"}, NOW, "bus0")
    assert isinstance(item, CardRead) and item.uid == "12345640"


def test_unreadable_events_from_libosdp_never_raise(pair: Pair) -> None:
    for event in (None, 42, {"event": 99}, {"event": libosdp.Event.Status, "type": 2},
                  {"event": libosdp.Event.CardRead}):
        assert pair.bus._on_event(0, event) == 0
    assert pair.bus._on_event(7, {"event": libosdp.Event.CardRead}) == 0  # no such reader
    items = pair.drain(0.3)
    assert not any(isinstance(i, CardRead) for i in items)
    assert sum(getattr(i, "kind", "") == "door.reader_error" for i in items) == 5
    assert len(pair.events.of("door.reader_error")) == 5  # each one spooled
