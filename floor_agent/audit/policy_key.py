"""The collector's policy key as a workstation pins it: state_dir/policy.pub, one line of base64
(the raw 32-byte Ed25519 public key, as the collector's enroll answer and
GET /api/v1/policy/key give it).

Pinned once: at enrollment from the enroll answer, or on first use from the key route over the
pinned-CA channel. A different key offered later is never taken over a pinned one; the admin
replaces the file (or removes it and the next start pins again)."""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

POLICY_KEY_FILE = "policy.pub"


class PolicyKeyError(ValueError):
    """A key text or file that is not one base64 Ed25519 public key."""


def parse_key(text: str) -> Ed25519PublicKey:
    """The key from its base64 text; PolicyKeyError if it is not 32 raw bytes."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise PolicyKeyError("not base64") from None
    if len(raw) != 32:
        raise PolicyKeyError(f"{len(raw)} bytes, an Ed25519 public key has 32")
    return Ed25519PublicKey.from_public_bytes(raw)


def read_pinned(state_dir: Path) -> tuple[Ed25519PublicKey, str] | None:
    """(key, its base64 text) pinned in state_dir, or None when nothing is pinned;
    PolicyKeyError naming the file when it holds something else."""
    path = state_dir / POLICY_KEY_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyKeyError(f"{path}: cannot read ({exc})") from None
    try:
        return parse_key(text), text
    except PolicyKeyError as exc:
        raise PolicyKeyError(f"{path}: {exc}") from None


def pin(state_dir: Path, text: str) -> Ed25519PublicKey:
    """Write the key (checked first) as state_dir/policy.pub, atomically (a temporary file
    renamed over it), mode 0644 inside the agent's 0700 state."""
    key = parse_key(text)
    path = state_dir / POLICY_KEY_FILE
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.strip().encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    return key
