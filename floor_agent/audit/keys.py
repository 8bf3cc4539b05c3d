"""Ed25519 key files: the agent's identity. Private keys are written 0600 and never logged."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from floor_agent.common.keyfiles import read_private_key_file


class KeyFileError(ValueError):
    """A key file that is missing, unreadable, of the wrong type or too widely readable."""


def write_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    """Create the key file with mode 0600 from the start (no window where others can read it)."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    if not path.parent.exists():  # a directory made for the key is private to it
        path.parent.mkdir(parents=True, mode=0o700)
        os.chmod(path.parent, 0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    data = read_private_key_file(path, "the agent key", KeyFileError,
                                 hint="run 'floor-agent enroll' first")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError as exc:
        raise KeyFileError(f"{path}: not a PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: expected an Ed25519 key, got {type(key).__name__}")
    return key


def load_or_create_private_key(path: Path) -> Ed25519PrivateKey:
    """The key at `path`, or a new one written there (0600): an identity is made once and kept
    (a re-run of enrollment or of the collector's start keeps the key the store knows)."""
    if path.exists():
        return load_private_key(path)
    key = Ed25519PrivateKey.generate()
    write_private_key(path, key)
    return key


def public_key_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The raw 32-byte public key, base64: the form enrollment sends and the collector stores."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"public key: expected 32 raw bytes in base64 ({exc})") from None
