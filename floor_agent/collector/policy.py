"""Central workstation policy on the collector, the pure part: checks and documents, no I/O.

An admin gives a group's USB rules (USBGuard's language, checked with the project's parser so
the workstation's guard accepts them) and netlock allowlist (entries shaped as workstation.yaml's
`netlock.allow`, checked with the netlock config model); refusals name where
(`usb_rules line 3: ...`, `netlock_allow[1].tcp[0]: ...`). A device exception is built from the
data of a `usb.blocked`/`usb.rejected` event (usb_guard/guard.device_data): one allow rule
pinned to the device's id, serial and descriptor hash. A workstation's document
(protocol/policy.PolicyDocument) is made from the store's `policy_inputs` for it.

The store keeps and versions what is checked here (store/policy_sql.py); policy_admin.py does
the changes with who and why and records each on the collector's own trail.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from pydantic import ValidationError

from floor_agent.netlock.config import NetlockDestination
from floor_agent.protocol.event import parse_timestamp, utc_timestamp
from floor_agent.protocol.policy import (
    GROUP_RE,
    MAX_ALLOW,
    MAX_RULES_CHARS,
    MAX_TEXT_CHARS,
    SCOPE_RE,
    DeviceException,
    PolicyDocument,
)
from floor_agent.usb_guard.rule import AttributeSet, Rule, format_rule
from floor_agent.usb_guard.rule_parser import RuleSyntaxError, parse_rule, parse_rules_file

BLOCKED_KINDS: Final = ("usb.blocked", "usb.rejected")
DEVICE_ID_RE: Final = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{4}$")
HASH_RE: Final = re.compile(r"^[A-Za-z0-9+/]{43}=$")  # USBGuard's hash: base64 of SHA-256
# what an exception keeps of the device, for the admin who reads it later
DEVICE_FIELDS: Final = ("id", "name", "manufacturer", "serial", "hash", "interfaces", "rule",
                        "port")


class PolicyInputError(ValueError):
    """Input an admin gave that cannot become policy; the message names where."""


def check_group(name: Any) -> str:
    if not isinstance(name, str) or not GROUP_RE.fullmatch(name):
        raise PolicyInputError(f"group: not a valid group name (letters, digits, '.', '_', "
                               f"'-', at most 64, starting with a letter or digit): {name!r}")
    return name


def check_reason(reason: Any, field: str = "reason") -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise PolicyInputError(f"{field}: say why (who asked, the ticket)")
    if len(reason) > MAX_TEXT_CHARS or "\x00" in reason:
        raise PolicyInputError(f"{field}: at most {MAX_TEXT_CHARS} characters, no NUL")
    return reason.strip()


def check_usb_rules(text: Any) -> str:
    """The rules text as given, if USBGuard (and the workstation's guard) accepts it."""
    if not isinstance(text, str):
        raise PolicyInputError("usb_rules: expected the rules as text")
    if len(text) > MAX_RULES_CHARS:
        raise PolicyInputError(f"usb_rules: longer than {MAX_RULES_CHARS} characters")
    if "\x00" in text:
        raise PolicyInputError("usb_rules: contains a NUL character")
    try:
        parse_rules_file(text, "usb_rules")
    except RuleSyntaxError as exc:
        raise PolicyInputError(f"usb_rules line {exc.line}: column {exc.column}: "
                               f"{exc.message}") from None
    return text if not text or text.endswith("\n") else text + "\n"


def check_netlock_allow(value: Any) -> list[dict[str, Any]]:
    """The allowlist as netlock's config model reads it (ports sorted, unique)."""
    if not isinstance(value, list):
        raise PolicyInputError("netlock_allow: expected a list of destinations")
    if len(value) > MAX_ALLOW:
        raise PolicyInputError(f"netlock_allow: at most {MAX_ALLOW} destinations")
    out = []
    names: set[str] = set()
    for i, item in enumerate(value):
        try:
            destination = NetlockDestination.model_validate(item)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
            raise PolicyInputError(f"netlock_allow[{i}]{where}: {error['msg']}") from None
        if destination.name in names:
            raise PolicyInputError(f"netlock_allow[{i}].name: {destination.name!r} appears "
                                   f"twice")
        names.add(destination.name)
        out.append(destination.model_dump(mode="json"))
    return out


def check_scope(scope: Any) -> str:
    if not isinstance(scope, str) or not SCOPE_RE.fullmatch(scope):
        raise PolicyInputError(f"scope: expected all, group:<name> or agent:<id>, got {scope!r}")
    return scope


def check_expiry(expires_at: Any, now: str) -> str | None:
    """None, or the expiry as UTC text the store compares, if it is after `now`."""
    if expires_at is None:
        return None
    if not isinstance(expires_at, str):
        raise PolicyInputError("expires_at: expected a UTC time like 2026-12-31T18:00:00Z")
    try:
        when = datetime.fromisoformat(expires_at)
    except ValueError:
        raise PolicyInputError(f"expires_at: not an ISO 8601 time: {expires_at!r}") from None
    if when.tzinfo is None:
        raise PolicyInputError(f"expires_at: give the time zone (Z for UTC): {expires_at!r}")
    if when <= parse_timestamp(now):
        raise PolicyInputError(f"expires_at: {expires_at} is not in the future")
    return utc_timestamp(when)


def device_from_event(kind: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """The device of a stored usb.blocked/usb.rejected event, as an exception keeps it."""
    if kind not in BLOCKED_KINDS:
        raise PolicyInputError(f"event: a {kind} event; an exception is approved from a "
                               f"{' or '.join(BLOCKED_KINDS)} event")
    return check_device(data)


def check_device(data: Mapping[str, Any]) -> dict[str, Any]:
    """The identifying fields of a device (id, hash, and serial when it has one)."""
    if not isinstance(data, Mapping):
        raise PolicyInputError("device: expected an object with id, serial and hash")
    device_id = data.get("id")
    if not isinstance(device_id, str) or not DEVICE_ID_RE.fullmatch(device_id.lower()):
        raise PolicyInputError(f"device.id: expected a USB id like 056a:0374, got "
                               f"{device_id!r}")
    digest = data.get("hash")
    if not isinstance(digest, str) or not HASH_RE.fullmatch(digest):
        raise PolicyInputError(f"device.hash: expected USBGuard's device hash (base64 of "
                               f"SHA-256), got {digest!r}")
    serial = data.get("serial", "")
    if serial is None:
        serial = ""
    if not isinstance(serial, str) or len(serial) > 256 or "\x00" in serial:
        raise PolicyInputError("device.serial: expected text of at most 256 characters")
    out = {key: data[key] for key in DEVICE_FIELDS
           if key in data and isinstance(data[key], (str, list))}
    out.update(id=device_id.lower(), hash=digest, serial=serial)
    return out


def exception_rule(device: Mapping[str, Any]) -> str:
    """`allow id VVVV:PPPP serial "..." hash "..."`: the one-line rule of an exception, checked
    with the rule parser (a device without a serial gets none in its rule)."""
    attributes: list[tuple[str, AttributeSet]] = [("id", AttributeSet((device["id"],)))]
    if device.get("serial"):
        attributes.append(("serial", AttributeSet((device["serial"],))))
    attributes.append(("hash", AttributeSet((device["hash"],))))
    rule = format_rule(Rule("allow", tuple(attributes)))
    try:
        parse_rule(rule, "exception")
    except RuleSyntaxError as exc:  # cannot happen for a checked device; refuse, never sign
        raise PolicyInputError(f"device: the exception rule does not parse: {exc}") from None
    return rule


def build_document(inputs: Mapping[str, Any], issuer: str, issued_at: str) -> PolicyDocument:
    """The document for one workstation from store.policy_inputs()."""
    return PolicyDocument(
        issuer=issuer, agent_id=inputs["agent_id"], group=inputs["group"],
        version=int(inputs["version"]), issued_at=issued_at, usb_rules=inputs["usb_rules"],
        netlock_allow=tuple(dict(item) for item in inputs["netlock_allow"]),
        exceptions=tuple(DeviceException(
            exception_id=item["exception_id"], rule=item["rule"], scope=item["scope"],
            reason=item["reason"], approved_by=item["approved_by"],
            approved_at=item["approved_at"], expires_at=item["expires_at"])
            for item in inputs["exceptions"]))
