"""The clone-resistant card proof: a per-card AES key, and the controller's side of the
mutual authentication that shows the card holds it. Pure: no I/O, no clock; randomness is
passed in (the shell draws it with `secrets`), so every step has a known answer.

Card key (NXP AN10922, AES-128 key diversification):
    M = UID || APP_AID || SYSTEM_ID          (UID 4, 7 or 10 bytes; AID 3; SYSTEM_ID 11)
    card_key = AES-CMAC(card_master_key, 0x01 || M)
AN10922 pads D = 0x01 || M with 0x80 00.. to 32 bytes, XORs the last block with CMAC subkey K2
(K1 when no padding was needed) and keeps the last block of AES-CBC with IV 0. That is exactly
AES-CMAC (RFC 4493) of 0x01 || M whenever 16 <= |M| <= 31, which M always is here (18 to 24
bytes), so `cryptography`'s CMAC computes it and nothing is hand-rolled. Putting the AID and a
system identifier into M is AN10922's own example; it binds the key to this site's application.

Proof (MIFARE DESFire EV2/EV3 AuthenticateEV2First, ISO 7816-4 wrapped native commands):
    1. SELECT APPLICATION   90 5A 00 00 03 <APP_AID> 00            -> 91 00
    2. AUTHENTICATE EV2 FIRST 90 71 00 00 02 <key 00> <LenCap 00> 00 -> E(K, RndB) || 91 AF
    3. ADDITIONAL FRAME     90 AF 00 00 20 E(K, RndA || RndB<<8) 00
                                           -> E(K, TI || RndA<<8 || PDcap2 || PCDcap2) || 91 00
E is AES-128-CBC with a zero IV, RndA the controller's fresh 16 random bytes, X<<8 X rotated
left by one byte. The card proves K by returning RndA<<8 (compared in constant time); it never
sends K, and a recorded answer fails against the next RndA. A card refusing the command (no such
application or key, authentication error) or returning the wrong RndA' fails the proof
(`ProofFailed`: clone suspected); a reply that is not DESFire-shaped at all (short, wrong length,
unexpected status word) breaks it (`ProofError`: no decision can be drawn from it).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

GET_UID = bytes.fromhex("FFCA000000")
APP_AID = bytes.fromhex("46A501")  # the site's DESFire application, as sent (LSB first)
SYSTEM_ID = b"floor-agent"
KEY_NO = 0x00
UID_LENGTHS = (4, 7, 10)  # single, double, triple size ISO 14443-3 UIDs

SW_OK = b"\x90\x00"
SW_DESFIRE_OK = b"\x91\x00"
SW_MORE = b"\x91\xaf"

# Status words of a card that is present and understood the command but has no such
# application, command or key, or rejected our proof: it cannot prove the key.
REFUSALS: dict[bytes, str] = {
    b"\x91\xae": "authentication error",
    b"\x91\xa0": "application not found",
    b"\x91\x40": "no such key",
    b"\x91\x9d": "permission denied",
    b"\x91\x1c": "command not supported",
    b"\x6a\x82": "application not found",
    b"\x6d\x00": "instruction not supported",
    b"\x6e\x00": "class not supported",
}

STEP_UID = "GET UID"
STEP_SELECT = "SELECT APPLICATION"
STEP_AUTH1 = "AUTHENTICATE EV2 FIRST"
STEP_AUTH2 = "ADDITIONAL FRAME"


class ProofError(ValueError):
    """The card's reply was malformed: says which step and what was wrong (no key material)."""


class ProofFailed(ValueError):
    """The card answered but did not prove its key: a clone is suspected."""


def step_of(apdu: bytes) -> str:
    """Which step of the exchange a command is: the name errors and faults use."""
    return {b"\xff\xca": STEP_UID, b"\x90\x5a": STEP_SELECT, b"\x90\x71": STEP_AUTH1,
            b"\x90\xaf": STEP_AUTH2}.get(apdu[:2], "APDU " + apdu[:2].hex(" ").upper())


def sw(reply: bytes) -> str:
    """The status word as the audit trail shows it ("SW 6A 81")."""
    return "SW " + reply[-2:].hex(" ").upper()


def _aes_cbc(key: bytes, data: bytes, *, encrypt: bool) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.CBC(bytes(16)))
    op = cipher.encryptor() if encrypt else cipher.decryptor()
    return op.update(data) + op.finalize()


def encrypt(key: bytes, data: bytes) -> bytes:
    """DESFire EV2 authentication encryption: AES-128-CBC, zero IV, whole blocks."""
    return _aes_cbc(key, data, encrypt=True)


def decrypt(key: bytes, data: bytes) -> bytes:
    return _aes_cbc(key, data, encrypt=False)


def rotate_left(data: bytes) -> bytes:
    """X<<8: the first byte moved to the end."""
    return data[1:] + data[:1]


def an10922_diversify(master_key: bytes, div_input: bytes) -> bytes:
    """AN10922 AES-128 diversification for 16 <= |M| <= 31 (see the module docstring)."""
    if len(master_key) != 16:
        raise ValueError("AN10922: the master key must be 16 bytes (AES-128)")
    if not 16 <= len(div_input) <= 31:
        raise ValueError(f"AN10922: diversification input is {len(div_input)} bytes, "
                         "this implementation takes 16 to 31")
    mac = CMAC(algorithms.AES(master_key))
    mac.update(b"\x01" + div_input)
    return mac.finalize()


def card_key(card_master_key: bytes, uid: bytes) -> bytes:
    """The card's own AES-128 key: what the card is issued with and what it must prove."""
    if len(uid) not in UID_LENGTHS:
        raise ValueError(f"card key: UID is {len(uid)} bytes, expected 4, 7 or 10")
    return an10922_diversify(card_master_key, uid + APP_AID + SYSTEM_ID)


def new_challenge() -> bytes:
    """RndA: 16 fresh random bytes for one authentication, never reused."""
    return secrets.token_bytes(16)


# --- the controller's steps: APDUs out, replies checked ------------------------------------------

def parse_uid(reply: bytes) -> bytes:
    """The UID from the reply to `FF CA 00 00 00`: 4, 7 or 10 bytes then SW 90 00."""
    if len(reply) < 2:
        raise ProofError(f"{STEP_UID}: reply {len(reply)} bytes, expected a UID and SW 90 00")
    if reply[-2:] != SW_OK:
        raise ProofError(f"{STEP_UID}: {sw(reply)}")
    uid = reply[:-2]
    if len(uid) not in UID_LENGTHS:
        raise ProofError(f"{STEP_UID}: UID {len(uid)} bytes, expected 4, 7 or 10")
    return uid


def select_apdu() -> bytes:
    return bytes([0x90, 0x5A, 0x00, 0x00, len(APP_AID)]) + APP_AID + b"\x00"


def auth_first_apdu(key_no: int = KEY_NO) -> bytes:
    return bytes([0x90, 0x71, 0x00, 0x00, 0x02, key_no, 0x00, 0x00])


def _status(step: str, reply: bytes, expected_sw: bytes, data_len: int) -> bytes:
    """The data of a well-formed reply; refusals raise ProofFailed, the rest ProofError."""
    if len(reply) < 2:
        raise ProofError(f"{step}: reply {len(reply)} bytes, expected {data_len + 2}")
    status = reply[-2:]
    if status in REFUSALS and len(reply) == 2:
        raise ProofFailed(f"{step}: {sw(reply)} ({REFUSALS[status]})")
    if status != expected_sw:
        raise ProofError(f"{step}: {sw(reply)} with {len(reply) - 2} data bytes, expected "
                         f"{sw(expected_sw)}")
    data = reply[:-2]
    if len(data) != data_len:
        raise ProofError(f"{step}: reply {len(data)} data bytes, expected {data_len}")
    return data


def check_select(reply: bytes) -> None:
    _status(STEP_SELECT, reply, SW_DESFIRE_OK, 0)


def auth_second_apdu(key: bytes, reply: bytes, rnd_a: bytes) -> bytes:
    """From the card's E(K, RndB): our answer E(K, RndA || RndB<<8), proving we hold K too."""
    if len(rnd_a) != 16:
        raise ValueError("RndA must be 16 bytes")
    rnd_b = decrypt(key, _status(STEP_AUTH1, reply, SW_MORE, 16))
    return bytes([0x90, 0xAF, 0x00, 0x00, 0x20]) + encrypt(key, rnd_a + rotate_left(rnd_b)) \
        + b"\x00"


def check_final(key: bytes, reply: bytes, rnd_a: bytes) -> None:
    """The card's E(K, TI || RndA<<8 || caps) must carry our RndA rotated: the proof."""
    plain = decrypt(key, _status(STEP_AUTH2, reply, SW_DESFIRE_OK, 32))
    if not hmac.compare_digest(plain[4:20], rotate_left(rnd_a)):
        raise ProofFailed(f"{STEP_AUTH2}: the card's answer does not carry our challenge "
                          "(wrong key or a replayed answer)")


def run_proof(transmit: Callable[[bytes], bytes], card_master_key: bytes, uid: bytes,
              rnd_a: bytes) -> None:
    """The whole exchange over `transmit` (one APDU in, its reply out). Returns when the card
    proved its key; raises ProofFailed (clone suspected) or ProofError (malformed reply)."""
    key = card_key(card_master_key, uid)
    check_select(transmit(select_apdu()))
    second = auth_second_apdu(key, transmit(auth_first_apdu()), rnd_a)
    check_final(key, transmit(second), rnd_a)

