"""access: the clone-resistant card proof (pure) and the PC/SC driver against a real pcscd with
vsmartcard's vpcd reader and a virtual card thread in this process (vpcd on 127.0.0.1:35963).

One pcscd per machine with fixed ports: the tests of this file must not run in parallel with
other tests that use pcscd. Every card a test inserts is removed by its `with` block.
"""

from __future__ import annotations

import os
import queue
import secrets
import time
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from floor_agent.access import cardproof
from floor_agent.access.cardproof import (
    APP_AID,
    STEP_AUTH1,
    STEP_AUTH2,
    STEP_SELECT,
    STEP_UID,
    SYSTEM_ID,
    ProofError,
    ProofFailed,
)
from floor_agent.access.config import DoorReader
from floor_agent.access.model import CardRead
from floor_agent.access.pcsc import CardRemoved, PcscCardReader, match_reader
from floor_agent.access.sitekey import SiteKey
from floor_agent.simulated.door_floor import PcscDaemon, pcsc_readers
from floor_agent.simulated.smart_card import CardLogic, Late, Reply, Silent, VirtualCard

READER = "Virtual PCD 00 00"
OTHER_READER = "Virtual PCD 00 01"
UID7 = bytes.fromhex("04A224B2C35E80")
SITE = SiteKey(bytes(range(32)))
MASTER = SITE.card_master_key()


# --- pure: key diversification (NXP AN10922) -----------------------------------------------------

def _an10922_reference(master: bytes, m: bytes) -> bytes:
    """AN10922 section 2.2 written out step by step (subkeys, padding to 32 bytes, CBC-MAC),
    independent of the CMAC the module uses."""
    ecb = Cipher(algorithms.AES(master), modes.ECB()).encryptor()
    k0 = int.from_bytes(ecb.update(bytes(16)), "big")

    def double(k: int) -> int:
        k <<= 1
        return (k ^ 0x87) & (2**128 - 1) if k >> 128 else k

    k1 = double(k0)
    k2 = double(k1)
    d = b"\x01" + m
    padded = len(d) < 32
    d = (d + b"\x80").ljust(32, b"\x00") if padded else d
    last = int.from_bytes(d[16:], "big") ^ (k2 if padded else k1)
    cbc = Cipher(algorithms.AES(master), modes.CBC(bytes(16))).encryptor()
    return (cbc.update(d[:16] + last.to_bytes(16, "big")) + cbc.finalize())[16:]


def test_an10922_published_vector() -> None:
    # AN10922 rev 2.0, section 2.2.1: master key, M = UID 04782E21801D80 || AID 3042F5 ||
    # system identifier "NXP Abu" -> diversified AES-128 key A8DD63A3B89D54B37CA802473FDA9175
    master = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
    m = bytes.fromhex("04782E21801D80" "3042F5" "4E585020416275")
    expected = bytes.fromhex("A8DD63A3B89D54B37CA802473FDA9175")
    assert cardproof.an10922_diversify(master, m) == expected
    assert _an10922_reference(master, m) == expected


@pytest.mark.parametrize("uid", [bytes.fromhex("A1B2C3D4"), UID7, bytes(range(1, 11))],
                         ids=["4-byte", "7-byte", "10-byte"])
def test_card_key_is_an10922_of_uid_aid_and_system_id(uid: bytes) -> None:
    key = cardproof.card_key(MASTER, uid)
    assert key == _an10922_reference(MASTER, uid + APP_AID + SYSTEM_ID)
    assert len(key) == 16 and key != MASTER


def test_card_keys_differ_per_card_and_per_site() -> None:
    other_uid = bytes.fromhex("04A224B2C35E81")
    other_site = SiteKey(bytes(32)).card_master_key()
    keys = {cardproof.card_key(MASTER, UID7), cardproof.card_key(MASTER, other_uid),
            cardproof.card_key(other_site, UID7)}
    assert len(keys) == 3


@pytest.mark.parametrize("uid", [b"", bytes(5), bytes(11)])
def test_card_key_refuses_other_uid_lengths(uid: bytes) -> None:
    with pytest.raises(ValueError, match=f"UID is {len(uid)} bytes"):
        cardproof.card_key(MASTER, uid)


def test_an10922_refuses_inputs_where_cmac_would_differ() -> None:
    with pytest.raises(ValueError, match="15 bytes"):
        cardproof.an10922_diversify(MASTER, bytes(15))
    with pytest.raises(ValueError, match="16 bytes"):
        cardproof.an10922_diversify(bytes(8), bytes(16))


# --- pure: the EV2 authentication ---------------------------------------------------------------

def test_authenticate_ev2_first_matches_nxp_worked_example() -> None:
    # NXP AN12196 (NTAG 424 DNA), AuthenticateEV2First with key 03 = 16 zero bytes:
    # RndA B98F..B048, card's E(K, RndB) B875..92D1, final reply carries TI 7614281A
    key = bytes(16)
    rnd_a = bytes.fromhex("B98F4C50CF1C2E084FD150E33992B048")
    assert cardproof.auth_first_apdu(3) == bytes.fromhex("9071000002030000")
    second = cardproof.auth_second_apdu(
        key, bytes.fromhex("B875CEB0E66A6C5CD00898DC371F92D1" "91AF"), rnd_a)
    assert second == bytes.fromhex(
        "90AF000020FF0306E47DFBC50087C4D8A78E88E62DE1E8BE457AA477C707E2F0874916A8B100")
    final = bytes.fromhex(
        "0CC9A8094A8EEA683ECAAC5C7BF20584206D0608D477110FC6B3D5D3F65C3A6A9100")
    cardproof.check_final(key, final, rnd_a)  # the card proved the key: no exception
    with pytest.raises(ProofFailed, match="does not carry our challenge"):
        cardproof.check_final(key, final, bytes(16))


def _recording(card: CardLogic, log: list[tuple[bytes, bytes]]):
    def transmit(apdu: bytes) -> bytes:
        reply = card.respond(apdu)
        log.append((apdu, reply))
        return reply
    return transmit


def test_genuine_card_proves_and_never_sends_its_key() -> None:
    key = cardproof.card_key(MASTER, UID7)
    exchange: list[tuple[bytes, bytes]] = []
    cardproof.run_proof(_recording(CardLogic(UID7, key), exchange), MASTER, UID7,
                        cardproof.new_challenge())
    assert [cardproof.step_of(apdu) for apdu, _ in exchange] == [STEP_SELECT, STEP_AUTH1,
                                                                 STEP_AUTH2]
    assert all(key not in apdu + reply for apdu, reply in exchange)


def test_replayed_answers_fail_against_a_fresh_challenge() -> None:
    key = cardproof.card_key(MASTER, UID7)
    recorded: list[tuple[bytes, bytes]] = []
    cardproof.run_proof(_recording(CardLogic(UID7, key), recorded), MASTER, UID7,
                        cardproof.new_challenge())
    replies = iter([reply for _, reply in recorded])
    with pytest.raises(ProofFailed, match="ADDITIONAL FRAME: .* replayed"):
        cardproof.run_proof(lambda apdu: next(replies), MASTER, UID7, cardproof.new_challenge())


def test_challenges_are_fresh() -> None:
    challenges = {cardproof.new_challenge() for _ in range(64)}
    assert len(challenges) == 64 and all(len(c) == 16 for c in challenges)


@pytest.mark.parametrize(("key", "message"), [
    (secrets.token_bytes(16), r"ADDITIONAL FRAME: SW 91 AE \(authentication error\)"),
    (None, r"SELECT APPLICATION: SW 6E 00 \(class not supported\)"),
], ids=["wrong-key", "uid-only"])
def test_clones_fail_the_proof(key: bytes | None, message: str) -> None:
    with pytest.raises(ProofFailed, match=message):
        cardproof.run_proof(CardLogic(UID7, key).respond, MASTER, UID7, cardproof.new_challenge())


@pytest.mark.parametrize(("reply", "message"), [
    (b"", "GET UID: reply 0 bytes"),
    (b"\x90", "GET UID: reply 1 bytes"),
    (b"\x6a\x81", "GET UID: SW 6A 81"),
    (bytes(5) + b"\x90\x00", "GET UID: UID 5 bytes, expected 4, 7 or 10"),
])
def test_malformed_uid_replies_are_errors(reply: bytes, message: str) -> None:
    with pytest.raises(ProofError, match=message):
        cardproof.parse_uid(reply)


def test_proof_errors_name_the_step_and_the_fault() -> None:
    key = bytes(16)
    with pytest.raises(ProofError, match="AUTHENTICATE EV2 FIRST: reply 3 data bytes, "
                                         "expected 16"):
        cardproof.auth_second_apdu(key, bytes(3) + b"\x91\xaf", bytes(16))
    with pytest.raises(ProofError, match="SW 90 00 with 16 data bytes, expected SW 91 AF"):
        cardproof.auth_second_apdu(key, bytes(16) + b"\x90\x00", bytes(16))
    with pytest.raises(ProofError, match="SELECT APPLICATION: reply 1 bytes, expected 2"):
        cardproof.check_select(b"\x91")
    with pytest.raises(ProofError, match="ADDITIONAL FRAME: SW 12 34"):
        cardproof.check_final(key, b"\x12\x34", bytes(16))


# --- pcscd + vpcd + the virtual card -------------------------------------------------------------

@pytest.fixture(scope="module")
def pcscd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """A pcscd in the foreground with the vpcd readers, stopped at the end; one that already
    runs (with the vpcd readers) is reused and left running."""
    with PcscDaemon(tmp_path_factory.mktemp("pcscd")) as daemon:
        readers = pcsc_readers()
        assert readers is not None and READER in readers, daemon.log_path
        yield readers


class Events:
    """What a reader delivered, in order."""

    def __init__(self) -> None:
        self.queue: queue.Queue[CardRead | CardRemoved] = queue.Queue()

    def next(self, timeout: float = 5.0) -> CardRead | CardRemoved:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no reader event within {timeout} s") from None

    def read(self) -> CardRead:
        event = self.next()
        assert isinstance(event, CardRead), event
        return event

    def removed(self) -> CardRemoved:
        event = self.next()
        assert isinstance(event, CardRemoved), event
        return event


def _start(name: str, events: Events, master: bytes | None,
           answer_timeout: float = 0.3) -> PcscCardReader:
    reader = PcscCardReader(name, door_id="lab", reader_id="entry", direction="in",
                            on_card=events.queue.put, on_removed=events.queue.put,
                            card_master_key=master, answer_timeout=answer_timeout,
                            poll_seconds=0.2)
    reader.start()
    deadline = time.monotonic() + 5
    while not reader.watching:
        assert time.monotonic() < deadline, reader.problem
        time.sleep(0.02)
    return reader


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def keyed_reader(pcscd: list[str], events: Events) -> Iterator[PcscCardReader]:
    """A reader in clone-resistant mode (the site's card master key)."""
    reader = _start("PCD 00 00", events, MASTER)
    yield reader
    reader.stop()
    assert not reader.running


def _present(card: VirtualCard, events: Events) -> CardRead:
    """Insert the card, take its read, remove it, take the removal."""
    with card:
        read = events.read()
    events.removed()
    return read


def test_uid_only_reader_reads_the_uid(pcscd: list[str], events: Events) -> None:
    reader = _start(READER, events, None)
    try:
        read = _present(VirtualCard(UID7, None), events)
    finally:
        reader.stop()
    assert (read.uid, read.proof, read.door_id, read.reader_id, read.direction) == (
        "04A224B2C35E80", "none", "lab", "entry", "in")
    assert read.at.tzinfo is not None


def test_keyed_card_proves_with_a_fresh_challenge_each_time(
        keyed_reader: PcscCardReader, events: Events) -> None:
    card = VirtualCard.issued(UID7, SITE)
    first = _present(card, events)
    first_commands = list(card.commands)
    second = _present(card, events)
    assert (first.uid, first.proof) == ("04A224B2C35E80", "ok")
    assert second.proof == "ok"
    assert [cardproof.step_of(c) for c in first_commands] == [STEP_UID, STEP_SELECT, STEP_AUTH1,
                                                              STEP_AUTH2]
    # the controller's answer carries RndA: never the same twice
    assert first_commands[3] != card.commands[7]


@pytest.mark.parametrize(("key", "detail"), [
    (cardproof.card_key(SiteKey(bytes(32)).card_master_key(), UID7),
     "ADDITIONAL FRAME: SW 91 AE (authentication error)"),
    (None, "SELECT APPLICATION: SW 6E 00 (class not supported)"),
], ids=["other-site-key", "uid-only"])
def test_clone_with_the_right_uid_fails_the_proof(
        keyed_reader: PcscCardReader, events: Events, key: bytes | None, detail: str) -> None:
    card = VirtualCard(UID7, key)
    read = _present(card, events)
    assert (read.uid, read.proof, read.detail) == ("04A224B2C35E80", "failed", detail)
    # no key material in what the driver, the card or the read show
    secret_hex = [MASTER.hex(), cardproof.card_key(MASTER, UID7).hex(), SITE.secret.hex()]
    if key is not None:
        secret_hex.append(key.hex())
    text = " ".join([repr(keyed_reader), repr(card), repr(read), repr(SITE)]).lower()
    assert not any(s in text for s in secret_hex)


def test_clone_replaying_a_genuine_exchange_fails(
        keyed_reader: PcscCardReader, events: Events) -> None:
    genuine = VirtualCard.issued(UID7, SITE)
    assert _present(genuine, events).proof == "ok"
    # what an eavesdropper recorded of that exchange, replayed by a card without the key
    recorded = dict(zip([cardproof.step_of(c) for c in genuine.commands], genuine.replies,
                        strict=True))
    clone = VirtualCard(UID7, None, faults={
        step: Reply(recorded[step]) for step in (STEP_SELECT, STEP_AUTH1, STEP_AUTH2)})
    read = _present(clone, events)
    assert (read.proof, read.detail) == ("failed", "ADDITIONAL FRAME: the card's answer does not "
                                         "carry our challenge (wrong key or a replayed answer)")


@pytest.mark.parametrize(("faults", "uid", "detail"), [
    ({STEP_UID: Reply(b"\x6a\x81")}, "", "GET UID: SW 6A 81"),
    ({STEP_UID: Reply(b"\x90")}, "", "GET UID: reply 1 bytes, expected a UID and SW 90 00"),
    ({STEP_UID: Reply(bytes(5) + b"\x90\x00")}, "", "GET UID: UID 5 bytes, expected 4, 7 or 10"),
    ({STEP_SELECT: Reply(b"\xde\xad\xbe\xef\x00")}, "04A224B2C35E80",
     "SELECT APPLICATION: SW EF 00 with 3 data bytes, expected SW 91 00"),
    ({STEP_AUTH1: Reply(bytes(3) + b"\x91\xaf")}, "04A224B2C35E80",
     "AUTHENTICATE EV2 FIRST: reply 3 data bytes, expected 16"),
    ({STEP_AUTH1: Reply(bytes(16) + b"\x90\x00")}, "04A224B2C35E80",
     "AUTHENTICATE EV2 FIRST: SW 90 00 with 16 data bytes, expected SW 91 AF"),
    ({STEP_AUTH2: Reply(bytes(31) + b"\x91\x00")}, "04A224B2C35E80",
     "ADDITIONAL FRAME: reply 31 data bytes, expected 32"),
    ({STEP_AUTH2: Reply(b"\x91")}, "04A224B2C35E80",
     "ADDITIONAL FRAME: reply 1 bytes, expected 34"),
    ({STEP_AUTH1: Silent(0.3)}, "04A224B2C35E80", "AUTHENTICATE EV2 FIRST: no answer ("),
    ({STEP_AUTH2: Late(0.8)}, "04A224B2C35E80", "ADDITIONAL FRAME: answered after "),
], ids=["uid-sw", "uid-short", "uid-length", "select-garbage", "auth1-short",
        "auth1-wrong-sw", "auth2-truncated", "auth2-short", "auth1-silent", "auth2-late"])
def test_bad_replies_are_errors_and_the_reader_keeps_working(
        keyed_reader: PcscCardReader, events: Events, faults: dict, uid: str,
        detail: str) -> None:
    card = VirtualCard.issued(UID7, SITE, faults=faults)
    with card:
        read = events.read()
    events.removed()
    assert (read.uid, read.proof) == (uid, "error")
    assert read.detail.startswith(detail), read.detail
    assert keyed_reader.running
    assert _present(VirtualCard.issued(UID7, SITE), events).proof == "ok"


def test_garbage_in_place_of_the_final_answer_fails_the_proof(
        keyed_reader: PcscCardReader, events: Events) -> None:
    card = VirtualCard.issued(UID7, SITE, faults={
        STEP_AUTH2: Reply(os.urandom(32) + b"\x91\x00")})
    read = _present(card, events)
    assert read.proof == "failed"


def test_insertion_and_removal_events_per_reader(pcscd: list[str], events: Events) -> None:
    other_events = Events()
    reader = _start(READER, events, MASTER)
    other = _start(OTHER_READER, other_events, MASTER)
    try:
        with VirtualCard.issued(UID7, SITE):
            assert events.read().proof == "ok"
            with VirtualCard.issued(bytes.fromhex("A1B2C3D4"), SITE, port=35964):
                assert other_events.read().uid == "A1B2C3D4"
            assert isinstance(other_events.next(), CardRemoved)
        removed = events.removed()
        assert (removed.door_id, removed.reader_id, removed.direction) == ("lab", "entry", "in")
        with pytest.raises(AssertionError, match="no reader event"):
            events.next(timeout=0.6)  # nothing more: one read and one removal per card
    finally:
        reader.stop()
        other.stop()


def test_reader_names_match_by_unique_substring() -> None:
    readers = [READER, OTHER_READER]
    assert match_reader("00 01", readers) == OTHER_READER
    with pytest.raises(LookupError, match="ambiguous"):
        match_reader("Virtual PCD", readers)
    with pytest.raises(LookupError, match="no PC/SC reader matches 'ACR122'"):
        match_reader("ACR122", readers)


def test_from_config_binds_the_door_reader(pcscd: list[str], events: Events) -> None:
    config = DoorReader(reader_id="exit", direction="out", pcsc_reader="PCD 00 01")
    reader = PcscCardReader.from_config("lab", config, on_card=events.queue.put,
                                        on_removed=events.queue.put, card_master_key=MASTER)
    reader.start()
    try:
        with VirtualCard.issued(UID7, SITE, port=35964):
            read = events.read()
        events.removed()
    finally:
        reader.stop()
    assert (read.door_id, read.reader_id, read.direction, read.proof) == ("lab", "exit", "out",
                                                                          "ok")


def test_a_missing_reader_is_reported_and_the_thread_stays_up(pcscd: list[str],
                                                              events: Events) -> None:
    reader = PcscCardReader("ACR122", door_id="lab", reader_id="entry", on_card=events.queue.put,
                            poll_seconds=0.1)
    reader.start()
    try:
        deadline = time.monotonic() + 5
        while not reader.problem:
            assert time.monotonic() < deadline, "the missing reader was never reported"
            time.sleep(0.02)
        assert reader.problem.startswith("no PC/SC reader matches 'ACR122'")
        assert reader.running and not reader.watching
    finally:
        reader.stop()
    assert not reader.running
