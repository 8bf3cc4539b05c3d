"""A workstation's policy as the collector signs it and the workstation checks it: pure, no I/O.

The collector keeps USB rules (USBGuard's language) and netlock allowlists per workstation
group, and device exceptions an admin approved (one workstation, a group, or all). What a
workstation receives is one *document* made for it alone: its group's rules and allowlist and
the exceptions in force for it, stamped with a version and signed by the collector's policy key
(an Ed25519 key of its own, `policy.key`, never the TLS key: a second collector holding a
certificate from the site's CA cannot issue policy).

The version is a site-wide change number: every change (a group's rules or allowlist, an
exception approved, expired or withdrawn, a workstation moved to another group) takes the next
number, and a document's version is the highest number among the changes that shaped it. So a
workstation's versions only ever grow, even across a move between groups, and `verify` refuses
a document older than the one it enforces (a replayed or rolled-back policy) and one made for
another workstation (whose exceptions are not its own).

Exceptions are rules pinned to one device's hash (`allow hash "..."`), placed before the group's
rules (USBGuard's first match wins). Each carries its expiry; the workstation drops an expired
exception itself (`effective_usb_rules` at its own time), so expiry holds while the collector
is out of reach.

Envelope on the wire and in the workstation's cache:
    {"format": 1, "document": {...}, "signature": "<base64 Ed25519 over canonical(document)>"}
document:
    {"issuer": "site-collector", "agent_id": "ws-12", "group": "editors", "version": 41,
     "issued_at": "2026-12-07T10:00:00.000000Z", "usb_rules": "allow with-interface ...\n",
     "netlock_allow": [{"name": "collector", "addresses": ["10.0.0.5"], "tcp": [8443],
                        "udp": [], "must_reach": [8443]}],
     "exceptions": [{"exception_id": "x-7", "rule": "allow id 056a:0374 hash \"...\"",
                     "scope": "agent:ws-12", "reason": "new tablet model",
                     "approved_by": "alice", "approved_at": "...", "expires_at": null}]}
The collector checks `usb_rules` with the project's rule parser and `netlock_allow` with the
netlock config model (each entry a workstation.yaml `netlock.allow` entry) before it signs;
this module checks the shape only (it imports nothing of the project's capabilities), and the
workstation parses both again before applying them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from floor_agent.protocol.event import AGENT_ID_RE, MAX_INT, parse_timestamp, shown

FORMAT: Final = 1
POLICY_DOMAIN: Final = b"floor-agent/policy/v1\x00"
GROUP_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
EXCEPTION_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SCOPE_RE: Final = re.compile(r"^(all|group:[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
                             r"|agent:[A-Za-z0-9][A-Za-z0-9._-]{0,63})$")
MAX_RULES_CHARS: Final = 256 * 1024
MAX_TEXT_CHARS: Final = 1000
MAX_ALLOW: Final = 1000
MAX_EXCEPTIONS: Final = 10_000
MAX_ENVELOPE_BYTES: Final = 4 * 1024 * 1024

_DOCUMENT_KEYS: Final = ("issuer", "agent_id", "group", "version", "issued_at", "usb_rules",
                         "netlock_allow", "exceptions")
_EXCEPTION_KEYS: Final = ("exception_id", "rule", "scope", "reason", "approved_by",
                          "approved_at", "expires_at")


class PolicyError(ValueError):
    """A document or envelope that is not well formed; names the field (`exceptions[2].rule`)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem


class PolicyRefused(Exception):
    """A well-formed envelope the workstation must not apply. `reason` is a stable code for the
    `policy.refused` event: malformed, bad_signature, wrong_agent, rollback, conflict."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class DeviceException:
    exception_id: str
    rule: str  # one USBGuard rule pinned to the device's hash
    scope: str  # "agent:<id>", "group:<name>" or "all"
    reason: str
    approved_by: str
    approved_at: str  # UTC text, as events carry it
    expires_at: str | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and parse_timestamp(self.expires_at) <= now


@dataclass(frozen=True, slots=True)
class PolicyDocument:
    issuer: str
    agent_id: str
    group: str
    version: int
    issued_at: str
    usb_rules: str
    netlock_allow: tuple[Mapping[str, Any], ...] = ()
    exceptions: tuple[DeviceException, ...] = ()


def _object(value: Any, field: str, keys: Sequence[str], optional: Sequence[str] = ()
            ) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PolicyError(field, f"expected an object, got {shown(value)}")
    unknown = sorted(set(value) - set(keys))
    if unknown:
        raise PolicyError(field, f"unknown key(s) {', '.join(map(repr, unknown))}")
    missing = [key for key in keys if key not in value and key not in optional]
    if missing:
        raise PolicyError(field, f"missing {', '.join(map(repr, missing))}")
    return value


def _at(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def _text(value: Any, field: str, limit: int = MAX_TEXT_CHARS, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise PolicyError(field, f"expected text, got {shown(value)}")
    if not value and not empty:
        raise PolicyError(field, "must not be empty")
    if len(value) > limit:
        raise PolicyError(field, f"longer than {limit} characters")
    if "\x00" in value:
        raise PolicyError(field, "contains a NUL character")
    return value


def _matching(value: Any, field: str, pattern: re.Pattern[str], what: str) -> str:
    text = _text(value, field)
    if not pattern.fullmatch(text):
        raise PolicyError(field, f"not a valid {what}: {shown(text)}")
    return text


def _timestamp(value: Any, field: str) -> str:
    text = _text(value, field)
    try:
        parse_timestamp(text)
    except ValueError as exc:
        raise PolicyError(field, f"not a UTC timestamp: {exc}") from None
    return text


def exception_from_json(value: Any, field: str = "exception") -> DeviceException:
    data = _object(value, field, _EXCEPTION_KEYS, optional=("expires_at",))
    rule = _text(data["rule"], _at(field, "rule"))
    if "\n" in rule or "\r" in rule:
        raise PolicyError(_at(field, "rule"), "must be one line")
    expires = data.get("expires_at")
    return DeviceException(
        exception_id=_matching(data["exception_id"], _at(field, "exception_id"),
                               EXCEPTION_ID_RE, "exception id"),
        rule=rule,
        scope=_matching(data["scope"], _at(field, "scope"), SCOPE_RE,
                        "scope (all, group:<name>, agent:<id>)"),
        reason=_text(data["reason"], _at(field, "reason")),
        approved_by=_text(data["approved_by"], _at(field, "approved_by")),
        approved_at=_timestamp(data["approved_at"], _at(field, "approved_at")),
        expires_at=None if expires is None else _timestamp(expires, _at(field, "expires_at")))


def exception_to_json(item: DeviceException) -> dict[str, Any]:
    return {"exception_id": item.exception_id, "rule": item.rule, "scope": item.scope,
            "reason": item.reason, "approved_by": item.approved_by,
            "approved_at": item.approved_at, "expires_at": item.expires_at}


def _allow_entry(value: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise PolicyError(field, f"expected an object, got {shown(value)}")
    return dict(value)


def document_from_json(value: Any) -> PolicyDocument:
    """The document, every field checked for shape; PolicyError names the first bad one."""
    data = _object(value, "document", _DOCUMENT_KEYS)
    version = data["version"]
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_INT:
        raise PolicyError("document.version", f"expected a positive integer, got "
                          f"{shown(version)}")
    allow = data["netlock_allow"]
    if not isinstance(allow, list) or len(allow) > MAX_ALLOW:
        raise PolicyError("document.netlock_allow", f"expected a list of at most {MAX_ALLOW}")
    exceptions = data["exceptions"]
    if not isinstance(exceptions, list) or len(exceptions) > MAX_EXCEPTIONS:
        raise PolicyError("document.exceptions",
                          f"expected a list of at most {MAX_EXCEPTIONS}")
    parsed = tuple(exception_from_json(item, f"document.exceptions[{i}]")
                   for i, item in enumerate(exceptions))
    ids = [item.exception_id for item in parsed]
    if len(set(ids)) != len(ids):
        raise PolicyError("document.exceptions", "an exception id appears twice")
    return PolicyDocument(
        issuer=_text(data["issuer"], "document.issuer"),
        agent_id=_matching(data["agent_id"], "document.agent_id", AGENT_ID_RE, "agent id"),
        group=_matching(data["group"], "document.group", GROUP_RE, "group name"),
        version=version,
        issued_at=_timestamp(data["issued_at"], "document.issued_at"),
        usb_rules=_text(data["usb_rules"], "document.usb_rules", MAX_RULES_CHARS, empty=True),
        netlock_allow=tuple(_allow_entry(item, f"document.netlock_allow[{i}]")
                            for i, item in enumerate(allow)),
        exceptions=parsed)


def document_to_json(document: PolicyDocument) -> dict[str, Any]:
    return {"issuer": document.issuer, "agent_id": document.agent_id, "group": document.group,
            "version": document.version, "issued_at": document.issued_at,
            "usb_rules": document.usb_rules,
            "netlock_allow": [dict(item) for item in document.netlock_allow],
            "exceptions": [exception_to_json(item) for item in document.exceptions]}


def canonical(document: PolicyDocument) -> bytes:
    """The signed bytes: sorted keys, no spaces, UTF-8 (one encoding for both ends)."""
    return orjson.dumps(document_to_json(document), option=orjson.OPT_SORT_KEYS)


def policy_hash(document: PolicyDocument) -> str:
    """SHA-256 of the canonical document, hex: what `policy.applied` reports and the
    dashboard compares."""
    return hashlib.sha256(canonical(document)).hexdigest()


def content_hash(document: PolicyDocument) -> str:
    """SHA-256 of what the workstation enforces (rules, allowlist, exceptions), without the
    version, time and issuer: two versions with the same content hash change nothing."""
    content = {"usb_rules": document.usb_rules,
               "netlock_allow": [dict(item) for item in document.netlock_allow],
               "exceptions": [exception_to_json(item) for item in document.exceptions]}
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()


def sign(document: PolicyDocument, key: Ed25519PrivateKey) -> dict[str, Any]:
    """The envelope the collector serves."""
    signature = key.sign(POLICY_DOMAIN + canonical(document))
    return {"format": FORMAT, "document": document_to_json(document),
            "signature": base64.b64encode(signature).decode()}


def envelope_bytes(envelope: Mapping[str, Any]) -> bytes:
    return orjson.dumps(envelope, option=orjson.OPT_SORT_KEYS)


def verify(envelope: Any, public_key: Ed25519PublicKey, *, agent_id: str,
           enforced_version: int | None, enforced_content: str | None = None
           ) -> PolicyDocument:
    """The document, if this workstation may apply it; else PolicyRefused with the reason.

    `enforced_version` and `enforced_content` (its `content_hash`) are those of the policy the
    workstation enforces now (None before its first). The same version with the same content
    is accepted (a re-fetch); the same version with other content is a conflict (two documents
    signed under one number: the key or the collector's store is in doubt), an older one a
    rollback."""
    if isinstance(envelope, (bytes, bytearray, memoryview)):
        if len(envelope) > MAX_ENVELOPE_BYTES:
            raise PolicyRefused("malformed", f"envelope larger than {MAX_ENVELOPE_BYTES} bytes")
        try:
            envelope = orjson.loads(envelope)
        except orjson.JSONDecodeError as exc:
            raise PolicyRefused("malformed", f"not JSON: {exc}") from None
    try:
        data = _object(envelope, "envelope", ("format", "document", "signature"))
        if data["format"] != FORMAT:
            raise PolicyError("envelope.format", f"expected {FORMAT}, got "
                              f"{shown(data['format'])}")
        signature_text = _text(data["signature"], "envelope.signature")
        try:
            signature = base64.b64decode(signature_text, validate=True)
        except (binascii.Error, ValueError):
            raise PolicyError("envelope.signature", "not base64") from None
        document = document_from_json(data["document"])
    except PolicyError as exc:
        raise PolicyRefused("malformed", str(exc)) from None
    try:
        public_key.verify(signature, POLICY_DOMAIN + canonical(document))
    except InvalidSignature:
        raise PolicyRefused("bad_signature", f"version {document.version} for "
                            f"{document.agent_id}: the signature does not match the "
                            "collector's policy key") from None
    if document.agent_id != agent_id:
        raise PolicyRefused("wrong_agent", f"made for {document.agent_id}, this is {agent_id}")
    if enforced_version is not None:
        if document.version < enforced_version:
            raise PolicyRefused("rollback", f"version {document.version} is older than the "
                                f"enforced {enforced_version}")
        if (document.version == enforced_version and enforced_content is not None
                and content_hash(document) != enforced_content):
            raise PolicyRefused("conflict", f"version {document.version} signed twice with "
                                "different content")
    return document


def in_force(document: PolicyDocument, now: datetime) -> tuple[DeviceException, ...]:
    """The exceptions not yet expired at `now` (the workstation's own clock)."""
    return tuple(item for item in document.exceptions if not item.expired(now))


def effective_usb_rules(document: PolicyDocument, now: datetime) -> str:
    """The rules text the USB guard enforces: the exceptions in force first, each with a
    comment naming it, then the group's rules."""
    lines: list[str] = []
    for item in in_force(document, now):
        lines.append(f"# exception {item.exception_id} ({item.scope}), approved by "
                     f"{_one_line(item.approved_by)}: {_one_line(item.reason)}")
        lines.append(item.rule)
    lines.append(f"# group {document.group}, policy version {document.version}")
    return "\n".join(lines) + "\n" + document.usb_rules


def next_expiry(document: PolicyDocument, now: datetime) -> datetime | None:
    """When the next exception in force expires (the workstation re-applies then)."""
    times = [parse_timestamp(item.expires_at) for item in in_force(document, now)
             if item.expires_at is not None]
    return min(times) if times else None


def _one_line(text: str) -> str:
    return " ".join(text.split())
