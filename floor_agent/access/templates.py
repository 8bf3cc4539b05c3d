"""Sealed fingerprint templates: AES-GCM under the site's template key, bound to their owner.

A template leaves the fingerprint module only to be sealed, and goes back only for one
verification (fingerprint.py downloads it, matches, and wipes the module). Sealed form:

    version (1 byte, 0x01) | nonce (12 random bytes) | AES-256-GCM ciphertext + 16-byte tag

The associated data binds the version, the person and the template id, so a sealed template
copied onto another person (or renamed) fails to open instead of letting that person's card
open the door with someone else's finger. Errors say which template failed and why in general
terms; they never carry key or template bytes.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = 1
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32
_AAD_LABEL = b"floor-agent/template/v1"


class TemplateError(ValueError):
    """A sealed template could not be opened (tampered, wrong key, wrong owner) or made."""


def _aad(person_id: str, template_id: str) -> bytes:
    parts = [_AAD_LABEL, bytes([VERSION]), person_id.encode(), template_id.encode()]
    # length-prefixed so ("ab", "c") and ("a", "bc") bind differently
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def _cipher(template_key: bytes) -> AESGCM:
    if not isinstance(template_key, bytes) or len(template_key) != KEY_BYTES:
        raise TemplateError(f"template key must be {KEY_BYTES} bytes (SiteKey.template_key())")
    return AESGCM(template_key)


def seal(template_key: bytes, person_id: str, template_id: str, clear: bytes) -> bytes:
    """The template encrypted for the controller's store; a fresh random nonce every time."""
    if not person_id or not template_id:
        raise TemplateError("a sealed template needs a person id and a template id")
    if not clear:
        raise TemplateError(f"template {template_id!r}: nothing to seal")
    nonce = os.urandom(NONCE_BYTES)
    sealed = _cipher(template_key).encrypt(nonce, clear, _aad(person_id, template_id))
    return bytes([VERSION]) + nonce + sealed


def unseal(template_key: bytes, person_id: str, template_id: str, sealed: bytes) -> bytes:
    """The clear template, only for the person and template id it was sealed for."""
    where = f"template {template_id!r} of person {person_id!r}"
    if len(sealed) < 1 + NONCE_BYTES + TAG_BYTES + 1:
        raise TemplateError(f"{where}: sealed form too short ({len(sealed)} bytes)")
    if sealed[0] != VERSION:
        raise TemplateError(f"{where}: unknown sealed version {sealed[0]}")
    nonce = sealed[1:1 + NONCE_BYTES]
    try:
        return _cipher(template_key).decrypt(nonce, sealed[1 + NONCE_BYTES:],
                                             _aad(person_id, template_id))
    except InvalidTag:
        raise TemplateError(f"{where}: does not open (tampered, another site's key, or "
                            "sealed for another person or template)") from None
