"""The collector's trust anchor: an Ed25519 key of its own, kept outside the store.

Verification used to trust the agent keys stored in the very database it checked: whoever could
write that file (or a backup of it) could replace an agent's key, re-sign its checkpoint and
make any history verify. The anchor breaks that circle. `collector init` makes it (anchor.key,
0600, and anchor.pub, in a directory of its own, by default `state_dir/anchor`, beside the TLS
files and never inside the database). It signs

- every enrolled agent key: an *endorsement* over (agent_id, role, public_key, enrolled_at),
  stored with the agent; made at enrollment, and for the collector's own key at init/run;
- every backup manifest (which carries the dump's SHA-256 and every agent's head).

`collector verify` and `collector restore` check both against the anchor public key taken from
outside the store being checked: `--anchor-key`, else config `anchor_public_key` (pinned by an
auditor), else anchor.pub. A store from the release before the anchor has no endorsements; it
is reported "unendorsed" until an admin runs `collector anchor endorse-existing` once, after the
chains verify (trust on first use, recorded on the collector's own audit trail).

In the terms of RFC 5848 (signed syslog) the anchor plays the signer's certificate and the
endorsements its key blocks; unlike journald's forward-secure sealing the key does not evolve,
so whoever holds anchor.key can endorse anything: it must be kept off the store's disk copies
and backups (a copy offline, as with the CA key).

Pure functions first (what is signed, what a signature says), then the key files.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from floor_agent.audit.agent import KEY_FILE as AGENT_KEY_FILE
from floor_agent.audit.keys import (
    KeyFileError,
    load_private_key,
    public_key_b64,
    public_key_from_b64,
    write_private_key,
)
from floor_agent.collector import self_audit
from floor_agent.collector.config import CollectorConfig, CollectorSection
from floor_agent.store.interface import Store

ENDORSEMENT_DOMAIN = b"floor-agent/anchor/endorsement/v1\x00"
MANIFEST_DOMAIN = b"floor-agent/anchor/manifest/v1\x00"
SEAL_DOMAIN = b"floor-agent/anchor/heads/v1\x00"
KEY_FILE = "anchor.key"
PUBLIC_FILE = "anchor.pub"
SEAL_FILE = "heads.seal.json"  # the last verified head of every agent, signed
MANIFEST_FIELD = "anchor"  # {"key_id", "signature"} in a backup manifest and in the seal

# What a signature check found: the outcome names, used in reports and tests.
VALID, MISSING, INVALID = "valid", "missing", "invalid"


class AnchorError(RuntimeError):
    """The anchor key or the anchor public key cannot be had: the message says where and why."""


# --------------------------------------------------------------------------- pure

def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """A short name for an anchor key (16 hex digits of SHA-256 of the raw public key)."""
    raw = base64.b64decode(public_key_b64(key))
    return hashlib.sha256(raw).hexdigest()[:16]


def endorsement_bytes(agent_id: str, role: str, public_key: str, enrolled_at: str) -> bytes:
    body = {"agent_id": agent_id, "role": role, "public_key": public_key,
            "enrolled_at": enrolled_at}
    return ENDORSEMENT_DOMAIN + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def check_endorsement(anchor: Ed25519PublicKey, identity: Mapping[str, Any]) -> str:
    """VALID, MISSING (a store from before the anchor) or INVALID, for agent_identity()."""
    text = identity.get("endorsement")
    if not text:
        return MISSING
    try:
        signature = base64.b64decode(text, validate=True)
        anchor.verify(signature, endorsement_bytes(identity["agent_id"], identity["role"],
                                                   identity["public_key"],
                                                   identity["enrolled_at"]))
    except (ValueError, TypeError, InvalidSignature):
        return INVALID
    return VALID


def manifest_bytes(manifest: Mapping[str, Any], domain: bytes = MANIFEST_DOMAIN) -> bytes:
    """Everything in the document but its anchor signature, canonical (keys sorted at depth)."""
    body = {k: v for k, v in manifest.items() if k != MANIFEST_FIELD}
    return domain + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def sign_manifest(key: Ed25519PrivateKey, manifest: Mapping[str, Any],
                  domain: bytes = MANIFEST_DOMAIN) -> dict[str, Any]:
    signature = base64.b64encode(key.sign(manifest_bytes(manifest, domain))).decode()
    return {**manifest, MANIFEST_FIELD: {"key_id": key_id(key), "signature": signature}}


def check_manifest(anchor: Ed25519PublicKey, manifest: Mapping[str, Any],
                   domain: bytes = MANIFEST_DOMAIN, what: str = "manifest") -> tuple[str, str]:
    """(VALID | MISSING | INVALID, words for the admin) for a manifest (or the head seal,
    with its domain) read from disk."""
    block = manifest.get(MANIFEST_FIELD)
    if block is None:
        return MISSING, (f"{what} is not signed by the collector's anchor (made before the "
                         f"anchor existed, or its signature was removed)")
    want = key_id(anchor)
    signer = block.get("key_id") if isinstance(block, dict) else None
    try:
        signature = base64.b64decode(block["signature"], validate=True)
        anchor.verify(signature, manifest_bytes(manifest, domain))
    except (KeyError, TypeError, ValueError, InvalidSignature):
        who = (f"it names anchor {signer}, the trusted anchor is {want}" if signer != want
               else f"anchor {want}")
        return INVALID, (f"{what} signature does not verify ({who}): the {what} or what it "
                         f"covers was altered, or it was made by another collector")
    return VALID, f"{what} signed by anchor {want}"


def merge_heads(old: Mapping[str, Mapping[str, Any]], new: Mapping[str, Mapping[str, Any]]
                ) -> dict[str, dict[str, Any]]:
    """The seal's heads only move forward: per agent the higher of the old and the new head
    (lowering one is exactly what deleting the newest rows would want)."""
    out = {agent: dict(head) for agent, head in old.items()}
    for agent, head in new.items():
        if agent not in out or int(head["head_seq"]) >= int(out[agent]["head_seq"]):
            out[agent] = dict(head)
    return out


def parse_public_key(text: str) -> Ed25519PublicKey:
    """A base64 raw public key, or the path of a file holding one (anchor.pub's form)."""
    value = text.strip()
    try:
        return public_key_from_b64(value)
    except KeyFileError:
        pass  # not a key itself: a file holding one
    try:
        content = Path(value).read_text().split()
    except OSError as exc:
        raise AnchorError(f"{value}: neither a base64 Ed25519 public key nor a readable file "
                          f"holding one ({exc.strerror})") from None
    try:
        return public_key_from_b64(content[0] if content else "")
    except KeyFileError as exc:
        raise AnchorError(f"{value}: not an anchor public key ({exc})") from None


# --------------------------------------------------------------------------- key files

def anchor_dir(section: CollectorSection) -> Path:
    return section.anchor_dir if section.anchor_dir is not None else section.state_dir / "anchor"


@dataclass(frozen=True)
class TrustedKey:
    """The anchor public key a check uses, and where it came from (said in every report)."""

    key: Ed25519PublicKey
    source: str

    @property
    def key_id(self) -> str:
        return key_id(self.key)


def trusted_key(config: CollectorConfig, override: str | None = None) -> TrustedKey:
    """The anchor public key from outside the store: --anchor-key, the pinned config value,
    anchor.pub, in that order. AnchorError when there is none."""
    if override:
        return TrustedKey(parse_public_key(override), "--anchor-key")
    section = config.collector
    if section.anchor_public_key:
        return TrustedKey(parse_public_key(section.anchor_public_key),
                          "config anchor_public_key")
    path = anchor_dir(section) / PUBLIC_FILE
    if not path.exists():
        raise AnchorError(f"{path}: no anchor public key (run 'floor-agent collector init' to "
                          f"make the anchor, or give --anchor-key / anchor_public_key)")
    return TrustedKey(parse_public_key(str(path)), str(path))


class Anchor:
    """The anchor's private half, for the collector process and the admin commands."""

    def __init__(self, key: Ed25519PrivateKey, path: Path) -> None:
        self.key = key
        self.path = path
        self.key_id = key_id(key)

    def endorse(self, agent_id: str, role: str, public_key: str, enrolled_at: str) -> str:
        return base64.b64encode(self.key.sign(
            endorsement_bytes(agent_id, role, public_key, enrolled_at))).decode()

    def endorse_enrolled(self, store: Store, agent_id: str, role: str, public_key: str,
                         enrolled_at: str) -> None:
        """At enrollment (Collector.enroll): the key just registered, as registered."""
        store.set_endorsement(agent_id, self.endorse(agent_id, role, public_key, enrolled_at))

    def endorse_own(self, store: Store, config: CollectorConfig) -> Anchor:
        """Endorse the collector's own audit key when the store holds exactly the key of the
        local key file (self_audit.ensure_registered checked that): the collector knows its
        own key, so this is safe to repeat at every start."""
        ident = self_audit.agent_id(config)
        identity = store.agent_identity(ident)
        if identity is None:
            return self
        own = load_private_key(self_audit.self_audit_config(config).state_dir / AGENT_KEY_FILE)
        if identity["public_key"] != public_key_b64(own):
            return self
        if check_endorsement(self.key.public_key(), identity) != VALID:
            store.set_endorsement(ident, self.endorse(ident, identity["role"],
                                                      identity["public_key"],
                                                      identity["enrolled_at"]))
        return self


def read_seal(config: CollectorConfig) -> dict[str, Any] | None:
    """The head seal as written (check it with check_manifest(..., SEAL_DOMAIN)); None when
    there is none yet. An unreadable seal is returned as an empty unsigned document, so the
    check reports it instead of skipping it."""
    path = anchor_dir(config.collector) / SEAL_FILE
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError):
        return {"heads": {}}
    return data if isinstance(data, dict) else {"heads": {}}


def write_seal(config: CollectorConfig, signer: Anchor, heads: Mapping[str, Mapping[str, Any]],
               sealed_at: str, by: str, replace: bool = False) -> dict[str, Any]:
    """Sign and write the verified heads, merged forward with the last valid seal (`replace`:
    a restore, which the admin chose to go back to, starts the seal afresh)."""
    old = read_seal(config)
    before: Mapping[str, Mapping[str, Any]] = {}
    if old is not None and not replace and \
            check_manifest(signer.key.public_key(), old, SEAL_DOMAIN)[0] == VALID:
        before = old.get("heads", {})
    doc = sign_manifest(signer.key, {"format": "floor-agent-head-seal/1", "sealed_at": sealed_at,
                                     "by": by, "heads": merge_heads(before, heads)}, SEAL_DOMAIN)
    path = anchor_dir(config.collector) / SEAL_FILE
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return doc


def create(config: CollectorConfig) -> Anchor:
    """`collector init`: the anchor key, made once (0600 in a 0700 directory) and kept; its
    public half written beside it. A pinned anchor_public_key must match the key."""
    directory = anchor_dir(config.collector)
    path = directory / KEY_FILE
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
        write_private_key(path, Ed25519PrivateKey.generate())
    anchor = load(config)
    public = directory / PUBLIC_FILE
    text = public_key_b64(anchor.key) + "\n"
    if not public.exists() or public.read_text() != text:
        public.write_text(text)
        os.chmod(public, 0o644)
    return anchor


def load(config: CollectorConfig) -> Anchor:
    """The anchor key for signing; AnchorError naming the file when it is missing, unsafe, or
    not the key pinned in config (an anchor swapped on disk must not sign on)."""
    path = anchor_dir(config.collector) / KEY_FILE
    if not path.exists():
        raise AnchorError(f"{path}: no anchor key; run 'floor-agent collector init' to make it "
                          f"(a store from an older release then needs 'floor-agent collector "
                          f"anchor endorse-existing' once)")
    try:
        key = load_private_key(path)
    except KeyFileError as exc:
        raise AnchorError(f"anchor key: {exc}") from None
    pinned = config.collector.anchor_public_key
    if pinned and key_id(parse_public_key(pinned)) != key_id(key):
        raise AnchorError(f"{path}: anchor key {key_id(key)} is not the pinned "
                          f"anchor_public_key ({key_id(parse_public_key(pinned))})")
    return Anchor(key, path)
