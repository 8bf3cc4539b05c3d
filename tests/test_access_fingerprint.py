"""access fingerprint: the driver against the ZFM module simulator on a real pty, and sealed
templates. Every failure of the module must end as a refusal with its reason, never a match,
and no template may stay on the module after a verification or an enrollment."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence

import pytest

from floor_agent.access import zfm
from floor_agent.access.fingerprint import Candidate, FingerprintError, FingerprintModule
from floor_agent.access.model import FingerResult, FingerSearch
from floor_agent.access.templates import TemplateError, seal, unseal
from floor_agent.simulated.fingerprint_module import SimulatedModule, char_file

ALICE_INDEX = b"alice/right-index"
ALICE_THUMB = b"alice/right-thumb"
BOB_INDEX = b"bob/right-index"
THRESHOLD = 50
RESPONSE_TIMEOUT = 0.3
CAPTURE_TIMEOUT = 0.3

# what enrollment left in the controller's store (a capture the verifications never repeat)
ALICE_TEMPLATES = [("t-alice-2", 2, char_file(ALICE_INDEX, 10**6)),
                   ("t-alice-1", 1, char_file(ALICE_THUMB, 10**6))]


@pytest.fixture
def sim() -> Iterator[SimulatedModule]:
    with SimulatedModule() as module:
        yield module


@pytest.fixture
def fp(sim: SimulatedModule) -> Iterator[FingerprintModule]:
    with FingerprintModule(sim.port, response_timeout=RESPONSE_TIMEOUT) as module:
        yield module


def verify(fp: FingerprintModule, retries: int = 2,
           templates: Sequence[tuple[str, int, bytes]] = ALICE_TEMPLATES) -> FingerResult:
    return fp.verify(templates, THRESHOLD, CAPTURE_TIMEOUT, retries, person_id="alice")


# --- verification --------------------------------------------------------------------------------

def test_right_finger_matches_above_threshold_and_leaves_nothing(
        sim: SimulatedModule, fp: FingerprintModule) -> None:
    sim.place(ALICE_THUMB)
    result = verify(fp)
    assert result.status == "match"
    assert (result.person_id, result.template_id, result.finger) == ("alice", "t-alice-1", 1)
    assert result.score >= THRESHOLD
    assert not sim.holds_template()
    assert sim.problems == []  # every byte the driver sent was a valid packet
    assert sim.commands.count(zfm.MATCH) == 2  # one per template of the card holder


def test_other_finger_is_no_match(sim: SimulatedModule, fp: FingerprintModule) -> None:
    sim.place(BOB_INDEX)
    result = verify(fp)
    assert result.status == "no_match"
    assert result.score < THRESHOLD
    assert result.template_id is None and result.person_id is None
    assert not sim.holds_template()


def test_module_threshold_below_ours_is_still_no_match() -> None:
    # the simulator scores a different finger about 1; a module that calls everything a match
    # (security_score 0) must not make the driver grant below the configured threshold
    with SimulatedModule(security_score=0) as lax, \
            FingerprintModule(lax.port, response_timeout=RESPONSE_TIMEOUT) as driver:
        lax.place(BOB_INDEX)
        result = verify(driver)
    assert result.status == "no_match"
    assert 0 < result.score < THRESHOLD


def test_no_finger_times_out_after_the_capture_timeout(
        sim: SimulatedModule, fp: FingerprintModule) -> None:
    started = time.monotonic()
    result = verify(fp)
    assert result.status == "timeout"
    assert result.detail == "no finger within 0.3 s"
    assert time.monotonic() - started >= CAPTURE_TIMEOUT
    assert sim.commands.count(zfm.GEN_IMG) >= 2  # it kept asking for an image
    assert not sim.holds_template()


def test_poor_image_is_retried_then_matches(sim: SimulatedModule, fp: FingerprintModule) -> None:
    sim.place(ALICE_INDEX, quality="poor", poor_captures=2)
    result = verify(fp, retries=2)
    assert result.status == "match"
    assert result.template_id == "t-alice-2"
    assert sim.commands.count(zfm.IMG2TZ) == 3


def test_poor_image_beyond_the_retries_is_poor_image(
        sim: SimulatedModule, fp: FingerprintModule) -> None:
    sim.place(ALICE_INDEX, quality="poor")
    result = verify(fp, retries=1)
    assert result.status == "poor_image"
    assert "image too messy" in result.detail and "after 2 image(s)" in result.detail
    assert sim.commands.count(zfm.IMG2TZ) == 2
    assert not sim.holds_template()


def test_no_templates_means_no_capture(sim: SimulatedModule, fp: FingerprintModule) -> None:
    sim.place(ALICE_INDEX)
    result = verify(fp, templates=[])
    assert result.status == "no_match"
    assert sim.commands == []


def test_a_template_of_the_wrong_size_is_refused_by_name(
        sim: SimulatedModule, fp: FingerprintModule) -> None:
    sim.place(ALICE_INDEX)
    result = verify(fp, templates=[("t-short", 2, bytes(100))])
    assert result.status == "sensor_error"
    assert result.detail == "template 't-short': template is 100 bytes, expected 512"
    assert not sim.holds_template()


def test_a_library_left_on_the_module_is_emptied(
        sim: SimulatedModule, fp: FingerprintModule) -> None:
    sim.store(7, char_file(BOB_INDEX, 1))
    sim.place(ALICE_INDEX)
    assert verify(fp).status == "match"
    assert sim.library() == {}
    assert not sim.holds_template()


def test_password_is_verified_and_a_wrong_one_refused() -> None:
    with SimulatedModule(password=0x0BADF00D) as module:
        module.place(ALICE_INDEX)
        with FingerprintModule(module.port, password=0x0BADF00D,
                               response_timeout=RESPONSE_TIMEOUT) as right:
            assert verify(right).status == "match"
        with FingerprintModule(module.port, password=1234,
                               response_timeout=RESPONSE_TIMEOUT) as wrong:
            result = verify(wrong)
            assert "1234" not in repr(wrong)
    assert result.status == "sensor_error"
    assert result.detail == "VfyPwd: wrong password (0x13)"
    assert module.commands[-1] == zfm.VFY_PWD  # nothing else was tried


# --- 1:N: whose finger it is when it is not the card holder's ----------------------------------

MALLORY = b"mallory/right-index"  # enrolled nowhere
CAROL_INDEX = b"carol/right-index"
OTHERS: list[Candidate] = [("carol", "t-carol-1", 1, char_file(CAROL_INDEX, 10**6)),
                           ("bob", "t-bob-1", 1, char_file(BOB_INDEX, 10**6))]


def verify_with_others(fp: FingerprintModule, others: list[Candidate] = OTHERS,
                       called: list[list[Candidate]] | None = None) -> FingerResult:
    def give() -> list[Candidate]:
        candidates = list(others)
        if called is not None:
            called.append(candidates)
        return candidates
    return fp.verify(ALICE_TEMPLATES, THRESHOLD, CAPTURE_TIMEOUT, 2, person_id="alice",
                     others=give)


def test_the_module_searches_its_library_as_the_manual_says(
        sim: SimulatedModule, fp: FingerprintModule) -> None:
    sim.place(BOB_INDEX)
    fp.verify_password()
    assert fp.capture(CAPTURE_TIMEOUT, 0).status == "ok"
    assert fp.search(1, 0, 200) is None  # an empty library finds nothing
    sim.store(3, char_file(CAROL_INDEX, 1))
    sim.store(5, char_file(BOB_INDEX, 10**6))  # another capture of the finger: a few bytes off
    sim.store(9, sim.buffer(1))  # this very capture: the best score there is
    page, score = fp.search(1, 0, 200) or (None, 0)
    assert (page, score) == (5, score_of(sim, 5))  # the first enrolled page at its level ...
    assert 248 <= score < 256  # ... not the best one
    assert fp.search(1, 6, 10) == (9, 256)
    assert fp.search(1, 0, 5) is None  # only the pages asked for
    sim.place(MALLORY)
    assert fp.capture(CAPTURE_TIMEOUT, 0).status == "ok"
    assert fp.search(1, 0, 200) is None
    assert sim.problems == []


def score_of(sim: SimulatedModule, page: int) -> int:
    return sum(a == b for a, b in zip(sim.buffer(1), sim.library()[page], strict=True)) // 2


def test_an_empty_library_is_not_found_even_by_a_lax_module() -> None:
    with SimulatedModule(security_score=0) as lax, \
            FingerprintModule(lax.port, response_timeout=RESPONSE_TIMEOUT) as driver:
        lax.place(BOB_INDEX)
        driver.verify_password()
        assert driver.capture(CAPTURE_TIMEOUT, 0).status == "ok"
        assert driver.search(1, 0, 200) is None  # no page 0 "match" of nothing


def test_the_finger_of_another_enrolled_person_is_found_and_named(
        sim: SimulatedModule, fp: FingerprintModule) -> None:
    sim.place(BOB_INDEX)
    called: list[list[Candidate]] = []
    result = verify_with_others(fp, called=called)
    assert result.status == "no_match"  # not Alice's: the 1:1 answer stands
    assert result.search is not None
    assert (result.search.status, result.search.person_id, result.search.template_id) == (
        "found", "bob", "t-bob-1")
    assert result.search.score >= THRESHOLD
    assert sim.commands.count(zfm.STORE) == 2 and sim.commands.count(zfm.SEARCH) == 1
    assert called == [[]]  # the clear templates were dropped after the search
    assert not sim.holds_template()  # the library the search used is emptied
    assert sim.problems == []


def test_an_unknown_finger_is_searched_and_not_found(
        sim: SimulatedModule, fp: FingerprintModule) -> None:
    sim.place(MALLORY)
    result = verify_with_others(fp)
    assert result.search == FingerSearch("not_found",
                                         detail="2 other enrolled template(s) searched")
    assert not sim.holds_template()


def test_the_holders_own_finger_never_reaches_the_search(
        sim: SimulatedModule, fp: FingerprintModule) -> None:
    sim.place(ALICE_INDEX)
    called: list[list[Candidate]] = []
    result = verify_with_others(fp, called=called)
    assert (result.status, result.search) == ("match", None)
    assert called == [] and zfm.SEARCH not in sim.commands  # nothing else unsealed or sent


def test_a_lax_module_reporting_low_pages_first_does_not_hide_the_real_one() -> None:
    # security_score 0: the module reports the first stored page whatever its score; the
    # driver passes over pages below its threshold and searches on after them
    others = [("carol", "t-carol-1", 1, char_file(CAROL_INDEX, 10**6)),
              ("dave", "t-dave-1", 1, char_file(b"dave/right-index", 10**6)),
              ("bob", "t-bob-1", 1, char_file(BOB_INDEX, 10**6))]
    with SimulatedModule(security_score=0) as lax, \
            FingerprintModule(lax.port, response_timeout=RESPONSE_TIMEOUT) as driver:
        lax.place(BOB_INDEX)
        result = verify_with_others(driver, others)
        assert lax.commands.count(zfm.SEARCH) == 3
        assert not lax.holds_template()
    assert result.search is not None
    assert (result.search.status, result.search.person_id) == ("found", "bob")
    lax_unknown = SimulatedModule(security_score=0)
    with lax_unknown, FingerprintModule(lax_unknown.port,
                                        response_timeout=RESPONSE_TIMEOUT) as driver:
        lax_unknown.place(MALLORY)
        assert verify_with_others(driver, others).search == FingerSearch(
            "not_found", detail="3 other enrolled template(s) searched")


def test_more_candidates_than_library_pages_are_searched_in_rounds(sim: SimulatedModule) -> None:
    others = [(f"p{i}", f"t-p{i}", 1, char_file(f"p{i}/index".encode(), 10**6))
              for i in range(4)] + [("bob", "t-bob-1", 1, char_file(BOB_INDEX, 10**6))]
    sim.place(BOB_INDEX)
    with FingerprintModule(sim.port, response_timeout=RESPONSE_TIMEOUT,
                           library_pages=2) as driver:
        result = verify_with_others(driver, others)
    assert result.search is not None
    assert (result.search.status, result.search.person_id) == ("found", "bob")
    assert sim.commands.count(zfm.SEARCH) == 3  # pages 0-1, 0-1 again, then 0
    assert sim.commands.count(zfm.STORE) == 5
    assert not sim.holds_template()


@pytest.mark.parametrize(("kind", "on", "detail"), [
    ("silent", zfm.SEARCH, "Search: no answer within 0.3 s"),
    ("bad_checksum", zfm.SEARCH, "Search: corrupted reply after 3 tries (bad checksum"),
    ("garbage", zfm.STORE, "template 't-carol-1': Store: no answer within 0.3 s"),
    ("wrong_packet_id", zfm.STORE, "template 't-carol-1': Store: corrupted reply after 3 tries"),
], ids=["search-silent", "search-checksum", "store-garbage", "store-packet-id"])
def test_a_search_that_fails_says_so_and_never_names_anyone(
        sim: SimulatedModule, fp: FingerprintModule, kind: str, on: int, detail: str) -> None:
    sim.place(BOB_INDEX)
    sim.misbehave(kind, on=on)
    result = verify_with_others(fp)
    assert result.status == "no_match"
    assert result.search is not None
    assert (result.search.status, result.search.person_id) == ("failed", None)
    assert result.search.detail.startswith(detail)
    assert not sim.holds_template()  # the wipe after it still went through


def test_other_templates_that_cannot_be_given_are_a_failed_search_and_a_wipe(
        sim: SimulatedModule, fp: FingerprintModule) -> None:
    def broken() -> list[Candidate]:
        raise RuntimeError("cache gone")
    sim.place(BOB_INDEX)
    result = fp.verify(ALICE_TEMPLATES, THRESHOLD, CAPTURE_TIMEOUT, 2, person_id="alice",
                       others=broken)
    assert (result.status, result.search) == (
        "no_match", FingerSearch("failed", detail="the other templates: RuntimeError"))
    assert not sim.holds_template()


def test_a_library_smaller_than_library_pages_is_a_failed_search() -> None:
    with SimulatedModule(library_size=1) as small, \
            FingerprintModule(small.port, response_timeout=RESPONSE_TIMEOUT) as driver:
        small.place(BOB_INDEX)
        result = verify_with_others(driver)  # two candidates, one flash page
    assert result.search is not None
    assert result.search.status == "failed"
    assert result.search.detail == (
        "template 't-bob-1': Store: page id beyond the finger library (0x0B)")


# --- a module that is missing, silent or corrupt -------------------------------------------------

def test_missing_port_is_a_sensor_error(tmp_path: os.PathLike[str]) -> None:
    with FingerprintModule(f"{tmp_path}/ttyNONE", response_timeout=RESPONSE_TIMEOUT) as fp:
        result = verify(fp)
    assert result.status == "sensor_error"
    assert "cannot open" in result.detail


def test_silent_sensor_is_a_sensor_error_within_the_response_timeout(
        sim: SimulatedModule, fp: FingerprintModule) -> None:
    sim.place(ALICE_INDEX)
    sim.misbehave("silent")
    started = time.monotonic()
    result = verify(fp)
    elapsed = time.monotonic() - started
    assert result.status == "sensor_error"
    assert result.detail == "VfyPwd: no answer within 0.3 s"
    assert RESPONSE_TIMEOUT <= elapsed < 10  # it gave up (not hung); speed is not tested here


@pytest.mark.parametrize(("kind", "reason"), [
    ("bad_checksum", "Match: corrupted reply after 3 tries (bad checksum 0x"),
    ("wrong_address", "Match: corrupted reply after 3 tries (wrong address 0xFFFFFFFE"),
    ("wrong_packet_id", "Match: corrupted reply after 3 tries (unexpected packet id 0x02"),
    ("garbage", "Match: no answer within 0.3 s (got garbage only)"),
    ("truncated", "Match: no answer within 0.3 s (got 7 bytes of an incomplete packet)"),
])
def test_corrupted_replies_are_a_sensor_error_with_the_reason(
        sim: SimulatedModule, fp: FingerprintModule, kind: str, reason: str) -> None:
    sim.place(ALICE_INDEX)
    sim.misbehave(kind, on=zfm.MATCH)
    result = verify(fp)
    assert result.status == "sensor_error"
    assert result.detail.startswith(reason)
    assert result.template_id is None
    assert not sim.holds_template()  # the wipe still went through


@pytest.mark.parametrize("kind", ["bad_checksum", "wrong_address", "wrong_packet_id"])
def test_one_corrupted_reply_is_retried(sim: SimulatedModule, fp: FingerprintModule,
                                        kind: str) -> None:
    sim.place(ALICE_INDEX)
    sim.misbehave(kind, times=1, on=zfm.MATCH)
    assert verify(fp).status == "match"
    assert sim.commands.count(zfm.MATCH) == 3  # two templates, one re-sent


def test_line_noise_before_every_reply_is_tolerated(
        sim: SimulatedModule, fp: FingerprintModule) -> None:
    sim.place(ALICE_INDEX)
    sim.misbehave("noise")
    result = verify(fp)
    assert result.status == "match"
    assert not sim.holds_template()


@pytest.mark.parametrize("on", [zfm.VFY_PWD, zfm.GEN_IMG, zfm.IMG2TZ, zfm.DOWN_CHAR, zfm.MATCH],
                         ids=["VfyPwd", "GenImg", "Img2Tz", "DownChar", "Match"])
@pytest.mark.parametrize("kind", ["bad_checksum", "garbage", "wrong_packet_id", "silent"])
def test_no_fault_at_any_step_ever_matches(sim: SimulatedModule, fp: FingerprintModule,
                                           kind: str, on: int) -> None:
    sim.place(ALICE_INDEX)
    sim.misbehave(kind, on=on)
    result = verify(fp)
    assert result.status == "sensor_error"
    assert f"{zfm.instruction_name(on)}: " in result.detail
    # the wipe needs DownChar: when that is what fails, the result says the module kept data
    assert ("module not wiped: DownChar" in result.detail) == (on == zfm.DOWN_CHAR)


# --- enrollment ----------------------------------------------------------------------------------

def test_enrolled_template_verifies_afterwards(sim: SimulatedModule,
                                               fp: FingerprintModule) -> None:
    sim.place(ALICE_INDEX)
    template = fp.enroll(CAPTURE_TIMEOUT)
    assert len(template) == zfm.TEMPLATE_BYTES
    assert not sim.holds_template()
    assert sim.commands.count(zfm.IMG2TZ) == 2 and zfm.REG_MODEL in sim.commands
    assert verify(fp, templates=[("t-new", 2, template)]).status == "match"
    sim.place(BOB_INDEX)
    assert verify(fp, templates=[("t-new", 2, template)]).status == "no_match"


def test_enroll_survives_one_corrupted_upload(sim: SimulatedModule,
                                              fp: FingerprintModule) -> None:
    sim.place(ALICE_INDEX)
    sim.misbehave("bad_checksum", times=1, on=zfm.UP_CHAR)
    template = fp.enroll(CAPTURE_TIMEOUT)
    assert sim.commands.count(zfm.UP_CHAR) == 2
    assert template == char_file(ALICE_INDEX, 1)  # the first capture, as RegModel keeps it


def test_enroll_failures_raise_with_the_reason_and_wipe(sim: SimulatedModule,
                                                       fp: FingerprintModule) -> None:
    with pytest.raises(FingerprintError, match="no finger within 0.3 s") as info:
        fp.enroll(CAPTURE_TIMEOUT)
    assert info.value.reason == "timeout"
    sim.place(ALICE_INDEX)
    sim.misbehave("bad_checksum", on=zfm.UP_CHAR)
    with pytest.raises(FingerprintError, match="UpChar: corrupted data after 3 tries") as info:
        fp.enroll(CAPTURE_TIMEOUT)
    assert info.value.reason == "sensor_error"
    assert not sim.holds_template()


# --- sealed templates ----------------------------------------------------------------------------

KEY = bytes(range(32))
CLEAR = char_file(ALICE_INDEX, 1)


def test_seal_round_trips_with_a_fresh_nonce() -> None:
    one = seal(KEY, "alice", "t1", CLEAR)
    two = seal(KEY, "alice", "t1", CLEAR)
    assert one != two
    assert unseal(KEY, "alice", "t1", one) == unseal(KEY, "alice", "t1", two) == CLEAR
    assert one[0] == 1 and len(one) == 1 + 12 + len(CLEAR) + 16


@pytest.mark.parametrize("position", [1, 12, 13, 300, -1], ids=["nonce", "nonce-end",
                                                                 "ciphertext", "middle", "tag"])
def test_any_tampered_byte_is_refused(position: int) -> None:
    sealed = bytearray(seal(KEY, "alice", "t1", CLEAR))
    sealed[position] ^= 0x01
    with pytest.raises(TemplateError, match="does not open"):
        unseal(KEY, "alice", "t1", bytes(sealed))


@pytest.mark.parametrize(("key", "person", "template_id"), [
    (bytes(32), "alice", "t1"), (KEY, "bob", "t1"), (KEY, "alice", "t2"), (KEY, "alic", "et1"),
], ids=["wrong-key", "other-person", "other-template", "shifted-ids"])
def test_wrong_key_person_or_template_is_refused(key: bytes, person: str,
                                                 template_id: str) -> None:
    sealed = seal(KEY, "alice", "t1", CLEAR)
    with pytest.raises(TemplateError) as info:
        unseal(key, person, template_id, sealed)
    message = str(info.value)
    assert f"template {template_id!r} of person {person!r}: does not open" in message
    assert KEY.hex() not in message and CLEAR.hex()[:16] not in message


def test_malformed_sealed_forms_are_refused_clearly() -> None:
    sealed = seal(KEY, "alice", "t1", CLEAR)
    with pytest.raises(TemplateError, match="unknown sealed version 2"):
        unseal(KEY, "alice", "t1", b"\x02" + sealed[1:])
    with pytest.raises(TemplateError, match=r"too short \(5 bytes\)"):
        unseal(KEY, "alice", "t1", sealed[:5])
    with pytest.raises(TemplateError, match="must be 32 bytes"):
        seal(KEY[:16], "alice", "t1", CLEAR)
