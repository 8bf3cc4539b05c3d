"""Signed workstation policies for the ws_policy tests: a key the test made plays the
collector's policy key (protocol/policy.sign, exactly what the collector serves)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from floor_agent.protocol import policy
from floor_agent.protocol.event import utc_timestamp
from floor_agent.protocol.policy import DeviceException, PolicyDocument

REPO = Path(__file__).resolve().parent.parent
BOOTSTRAP_RULES = (REPO / "config" / "usb-rules.conf").read_text()
AGENT = "ws-12"


def at(minutes: float = 0) -> datetime:
    """A fixed UTC time (the workstation's clock in these tests), `minutes` after 10:00."""
    return datetime(2026, 12, 7, 10, 0, 0, tzinfo=UTC) + timedelta(minutes=minutes)


def exception(rule: str, *, expires: datetime | None = None, exception_id: str = "x-7",
              scope: str = f"agent:{AGENT}") -> DeviceException:
    return DeviceException(exception_id=exception_id, rule=rule, scope=scope,
                           reason="new tablet model", approved_by="alice",
                           approved_at=utc_timestamp(at(-60)),
                           expires_at=None if expires is None else utc_timestamp(expires))


def document(version: int = 1, *, usb_rules: str = BOOTSTRAP_RULES,
             netlock_allow: tuple[dict[str, Any], ...] = (),
             exceptions: tuple[DeviceException, ...] = (), agent_id: str = AGENT,
             group: str = "editors") -> PolicyDocument:
    return PolicyDocument(issuer="site-collector", agent_id=agent_id, group=group,
                          version=version, issued_at=utc_timestamp(at(-1)),
                          usb_rules=usb_rules, netlock_allow=netlock_allow,
                          exceptions=exceptions)


def signed(doc: PolicyDocument, key: Ed25519PrivateKey) -> bytes:
    """The envelope's bytes as the collector serves them."""
    return policy.envelope_bytes(policy.sign(doc, key))


def changed(doc: PolicyDocument, **fields: Any) -> PolicyDocument:
    return dataclasses.replace(doc, **fields)
