"""The collector's policy key: the Ed25519 key that signs every workstation's policy document.

A key of its own (protocol/policy.py), never the TLS key nor the trust anchor: a second
collector holding a certificate from the site's CA cannot issue policy, and the anchor (which
endorses agent keys and backups, and is best kept offline) is not needed online to serve
policy. `collector init` makes it, and `collector run` makes it when it is missing (a collector
upgraded from a release before central policy): `policy.key` (0600) and `policy.pub` in a
directory of its own (0700), by default `state_dir/policy`, beside the TLS files and never
inside the database. A workstation pins the public half at enrollment (the enrollment answer's
`policy_key`) or, enrolled before, from `GET /api/v1/policy/key`.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from floor_agent.audit.keys import KeyFileError, load_private_key, public_key_b64, write_private_key
from floor_agent.collector.config import CollectorSection

KEY_FILE = "policy.key"
PUBLIC_FILE = "policy.pub"


class PolicyKeyError(RuntimeError):
    """The policy key cannot be had: the message says where and why."""


def fingerprint(key: Ed25519PublicKey | Ed25519PrivateKey | str) -> str:
    """A short name for a policy key: 16 hex digits of SHA-256 of the raw public key (a base64
    raw key is taken as it is sent)."""
    text = key if isinstance(key, str) else public_key_b64(key)
    return hashlib.sha256(base64.b64decode(text)).hexdigest()[:16]


def key_dir(section: CollectorSection) -> Path:
    return section.policy.key_dir if section.policy.key_dir is not None \
        else section.state_dir / "policy"


def create(section: CollectorSection) -> Ed25519PrivateKey:
    """The policy key, made once (0600 in a 0700 directory) and kept; policy.pub beside it."""
    directory = key_dir(section)
    path = directory / KEY_FILE
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
        write_private_key(path, Ed25519PrivateKey.generate())
    key = load(section)
    public = directory / PUBLIC_FILE
    text = public_key_b64(key) + "\n"
    if not public.exists() or public.read_text() != text:
        public.write_text(text)
        os.chmod(public, 0o644)
    return key


def load(section: CollectorSection) -> Ed25519PrivateKey:
    """The policy key for signing; PolicyKeyError naming the file when missing or unsafe."""
    path = key_dir(section) / KEY_FILE
    if not path.exists():
        raise PolicyKeyError(f"{path}: no policy key; run 'floor-agent collector init' to "
                             f"make it")
    try:
        return load_private_key(path)
    except KeyFileError as exc:
        raise PolicyKeyError(f"policy key: {exc}") from None
