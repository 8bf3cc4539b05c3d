"""The site key: 32 random bytes every door controller of the site holds, the collector never.

Two keys are derived from it (HKDF-SHA256, one label each), so neither use can leak the other:
the card master key, from which each card's own key is diversified (cardproof.py), and the
template key that seals fingerprint templates (templates.py). The file holds the key as 64 hex
characters, readable by its owner only; anything else is refused with the reason.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from floor_agent.common.keyfiles import read_hex_key_file

KEY_BYTES = 32
CARD_MASTER_LABEL = b"floor-agent/card-master/v1"
TEMPLATE_LABEL = b"floor-agent/template-seal/v1"


class SiteKeyError(ValueError):
    """The site key file is missing, readable by others, or not 64 hex characters."""


@dataclass(frozen=True, slots=True, repr=False)
class SiteKey:
    """Holds the secret; repr never shows it (it must not reach a log)."""

    secret: bytes

    def __repr__(self) -> str:
        return "SiteKey(<secret>)"

    def _derive(self, label: bytes, length: int) -> bytes:
        return HKDF(hashes.SHA256(), length, salt=None, info=label).derive(self.secret)

    def card_master_key(self) -> bytes:
        """AES-128 key from which every card key is diversified."""
        return self._derive(CARD_MASTER_LABEL, 16)

    def template_key(self) -> bytes:
        """AES-256 key sealing fingerprint templates (AES-GCM)."""
        return self._derive(TEMPLATE_LABEL, 32)


def generate(path: Path) -> SiteKey:
    """Write a new random site key (0600, never overwriting an existing one)."""
    secret = secrets.token_bytes(KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex() + "\n")
    return SiteKey(secret)


def load(path: Path) -> SiteKey:
    return SiteKey(read_hex_key_file(path, KEY_BYTES, "the site key", SiteKeyError))
