"""access zfm: the fingerprint module's packet codec, byte for byte and under fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from floor_agent.access import zfm

# Worked examples from the ZFM-70 / R503 manuals: TemplateNum (0x1D) checksum 0x0021,
# Empty (0x0D) checksum 0x0011, RegModel (0x05) checksum 0x0009.
MANUAL_COMMANDS = [
    (zfm.TEMPLATE_NUM, "ef01ffffffff0100031d0021"),
    (zfm.EMPTY, "ef01ffffffff0100030d0011"),
    (zfm.REG_MODEL, "ef01ffffffff010003050009"),
]


@pytest.mark.parametrize(("code", "wire"), MANUAL_COMMANDS, ids=["TemplateNum", "Empty",
                                                                  "RegModel"])
def test_commands_match_the_manual_bytes(code: int, wire: str) -> None:
    assert zfm.command(code).hex() == wire


def test_ack_with_score_round_trips() -> None:
    wire = zfm.ack(zfm.OK, (248).to_bytes(2, "big"), address=0x12345678)
    [packet] = zfm.parse_all(wire, address=0x12345678)
    assert isinstance(packet, zfm.Packet)
    assert zfm.parse_ack(packet) == (zfm.OK, b"\x00\xf8")


def test_bad_checksum_names_both_values() -> None:
    wire = bytearray(zfm.command(zfm.GEN_IMG))
    wire[-1] ^= 0x01
    out = zfm.parse_all(bytes(wire))
    assert str(out[0]) == "bad checksum 0x0004 expected 0x0005 at byte 0"
    assert all(isinstance(item, zfm.ZfmError) for item in out)  # the rest is skipped as garbage


def test_length_out_of_range_is_reported_and_the_next_packet_still_found() -> None:
    bogus = zfm.HEADER + b"\xff\xff\xff\xff\x07\x04\x00"  # length 1024
    good = zfm.ack(zfm.NO_FINGER)
    out = zfm.parse_all(bogus + good)
    assert isinstance(out[0], zfm.ZfmError)
    assert str(out[0]) == "length 1024 out of range 3..258 at byte 0"
    assert out[-1] == zfm.Packet(zfm.ACK, zfm.DEFAULT_ADDRESS, b"\x02")


def test_unknown_packet_id_is_reported() -> None:
    bogus = zfm.HEADER + b"\xff\xff\xff\xff\x05\x00\x03\x00\x08"
    out = zfm.parse_all(bogus)
    assert str(out[0]) == "unexpected packet id 0x05 at byte 0"
    assert not any(isinstance(item, zfm.Packet) for item in out)


def test_another_modules_packet_is_refused_whole() -> None:
    theirs = zfm.ack(zfm.OK, address=0x00000001)
    ours = zfm.ack(zfm.NO_MATCH)
    out = zfm.parse_all(theirs + ours)
    assert [str(x) for x in out[:1]] == ["wrong address 0x00000001 expected 0xFFFFFFFF at byte 0"]
    assert out[1:] == [zfm.Packet(zfm.ACK, zfm.DEFAULT_ADDRESS, bytes([zfm.NO_MATCH]))]


def test_garbage_is_skipped_with_its_size_and_offset() -> None:
    out = zfm.parse_all(b"\x00\x13\x37" + zfm.ack(zfm.OK))
    assert str(out[0]) == "garbage: 3 bytes before a packet header at byte 0"
    assert isinstance(out[1], zfm.Packet)


def test_truncated_packet_is_held_back_until_the_rest_arrives() -> None:
    wire = zfm.ack(zfm.OK, b"\x00\x10")
    parser = zfm.PacketParser()
    assert parser.feed(wire[:7]) == []
    assert parser.pending == 7
    assert parser.feed(wire[7:]) == [zfm.Packet(zfm.ACK, zfm.DEFAULT_ADDRESS, b"\x00\x00\x10")]
    tail = zfm.parse_all(wire[:7])[-1]
    assert str(tail) == "truncated: 7 bytes of an incomplete packet at byte 0"


def test_a_fake_header_inside_noise_does_not_swallow_the_real_packet() -> None:
    # a header-like run with a plausible length and a wrong checksum, then the real reply
    fake = zfm.HEADER + b"\xff\xff\xff\xff\x07\x00\x03\x00\x00\x00"
    real = zfm.ack(zfm.OK)
    out = zfm.parse_all(fake + real)
    assert out[-1] == zfm.Packet(zfm.ACK, zfm.DEFAULT_ADDRESS, b"\x00")
    assert any("bad checksum" in str(x) for x in out if isinstance(x, zfm.ZfmError))


@pytest.mark.parametrize("size", zfm.DATA_PACKET_SIZES)
def test_template_splits_into_data_packets_and_reassembles(size: int) -> None:
    template = bytes(range(256)) * 2
    wire = zfm.data_packets(template, size)
    assert len(wire) == zfm.TEMPLATE_BYTES // size
    packets = zfm.parse_all(b"".join(wire))
    assert [p.kind for p in packets] == [zfm.DATA] * (len(wire) - 1) + [zfm.END_DATA]
    assert b"".join(p.payload for p in packets) == template


def test_encoder_refuses_what_no_module_accepts() -> None:
    with pytest.raises(zfm.ZfmError, match="data packet size 100"):
        zfm.data_packets(bytes(512), 100)
    with pytest.raises(zfm.ZfmError, match="length 259 out of range"):
        zfm.encode(zfm.DATA, bytes(257))
    with pytest.raises(zfm.ZfmError, match="unexpected packet id 0x03"):
        zfm.encode(0x03, b"\x00")
    with pytest.raises(zfm.ZfmError, match="expected an ack"):
        zfm.parse_ack(zfm.Packet(zfm.DATA, zfm.DEFAULT_ADDRESS, b"\x00"))


def test_packet_repr_shows_no_payload() -> None:
    secret = bytes([0xA5]) * 40
    assert "a5" not in repr(zfm.Packet(zfm.DATA, zfm.DEFAULT_ADDRESS, secret)).lower()


# --- fuzzing ------------------------------------------------------------------------------------

packets = st.builds(
    lambda kind, address, payload: (kind, address, payload),
    st.sampled_from(sorted(zfm.PACKET_IDS)),
    st.integers(0, 0xFFFFFFFF),
    st.binary(min_size=1, max_size=256),
)
# line noise: anything without the header byte 0xEF (a full fake header is tested above)
noise = st.binary(max_size=64).map(lambda b: bytes(x for x in b if x != 0xEF))


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=8))
def test_random_bytes_never_crash_the_parser(data: bytes, cuts: list[int]) -> None:
    parser = zfm.PacketParser(address=None)
    for chunk in _chunks(data, cuts):
        for item in parser.feed(chunk):
            assert isinstance(item, zfm.Packet | zfm.ZfmError)
            if isinstance(item, zfm.Packet):  # only an intact packet gets through
                assert zfm.encode(item.kind, item.payload, item.address) in data


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(noise, packets), min_size=1, max_size=4),
       st.lists(st.integers(0, 2000), max_size=8))
def test_valid_packets_round_trip_after_garbage_in_any_chunking(
        frames: list[tuple[bytes, tuple[int, int, bytes]]], cuts: list[int]) -> None:
    wire = b"".join(junk + zfm.encode(kind, payload, address)
                   for junk, (kind, address, payload) in frames)
    parser = zfm.PacketParser(address=None)
    got = [item for chunk in _chunks(wire, cuts) for item in parser.feed(chunk)]
    assert [(p.kind, p.address, p.payload) for p in got if isinstance(p, zfm.Packet)] == \
        [packet for _, packet in frames]
    errors = [e for e in got if isinstance(e, zfm.ZfmError)]
    assert all(e.what.startswith("garbage") for e in errors)
    assert parser.pending == 0
