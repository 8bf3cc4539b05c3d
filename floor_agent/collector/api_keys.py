"""API keys: what each scope opens, expiry, and the answer a key gets at a route (pure).

Scopes (a key holds one or more; every /api/v1 route that takes a key names the one it needs):
  read         GET /api/v1/events, /api/v1/agents, /api/v1/alerts
  ack          POST /api/v1/alerts/{id}/ack
  credentials  the door people, cards, access levels, holidays and their change log
  metrics      GET /metrics

A key made by a release before scopes (its `scopes` column empty) is "legacy": it keeps every
scope, as it had, so an upgrade breaks no running integration; `apikey list` flags it so an
admin replaces it with a scoped, expiring key and revokes it. Keys are stored as SHA-256
hashes only; the secret is shown once at creation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from floor_agent.protocol.event import parse_timestamp

SCOPES = ("read", "ack", "credentials", "metrics", "policy")
SCOPE_HELP = {
    "read": "events, agents and alerts",
    "ack": "acknowledge alerts",
    "credentials": "the door people, cards, access levels and holidays (admin)",
    "metrics": "the Prometheus metrics",
    "policy": "the workstations' USB and network policy and device exceptions (admin)",
}
# what a key from before scopes could do: everything there was then (never policy, which
# came later: an old key is not silently given the right to change workstations' rules)
LEGACY_SCOPES = frozenset(("read", "ack", "credentials", "metrics"))
TOUCH_EVERY = timedelta(minutes=1)  # last use is written at most this often per key
# While the database is away a key cannot be read, nor its revocation: the scopes a key may
# still use then, on what this process read of it at most OFFLINE_TRUST ago. Only the
# metrics, which must be able to show the outage itself; everything else needs the database.
OFFLINE_SCOPES = frozenset(("metrics",))
OFFLINE_TRUST = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    name: str
    scopes: frozenset[str]
    legacy: bool
    created_at: str
    expires_at: str | None
    last_used_at: str | None
    revoked_at: str | None


def stored_scopes(scopes: Iterable[str]) -> str:
    """The column value: the scopes in SCOPES order, space-separated."""
    wanted = set(scopes)
    return " ".join(s for s in SCOPES if s in wanted)


def record(row: dict[str, Any]) -> KeyRecord:
    """A stored api_keys row as a KeyRecord; no scopes stored: a legacy key (pure)."""
    legacy = row.get("scopes") is None
    scopes = LEGACY_SCOPES if legacy else frozenset(str(row["scopes"]).split())
    return KeyRecord(row["name"], scopes, legacy, row["created_at"], row.get("expires_at"),
                     row.get("last_used_at"), row.get("revoked_at"))


def scopes_problem(scopes: Iterable[str]) -> str | None:
    """Why a set of scopes is refused at creation, or None (pure)."""
    scopes = list(scopes)
    if not scopes:
        return f"scope: at least one of {', '.join(SCOPES)}"
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        return f"scope: unknown {unknown}; expected some of {', '.join(SCOPES)}"
    return None


def refusal(key: KeyRecord | None, scope: str, now: str) -> tuple[int, str] | None:
    """(status, reason) when this key may not use a route needing `scope` now, else None."""
    if key is None or key.revoked_at is not None:
        return 401, "unknown or revoked API key"
    if key.expires_at is not None and key.expires_at <= now:
        return 401, f"API key {key.name!r} expired at {key.expires_at}"
    if scope not in key.scopes:
        return 403, (f"API key {key.name!r} lacks the scope {scope!r} (it has "
                     f"{', '.join(sorted(key.scopes))}); create a key with --scope {scope}")
    return None


def usable_offline(scope: str, read_at: datetime | None, now: datetime) -> bool:
    """Whether a key read at read_at may be judged on that reading for `scope` while the
    database is away (refusal() still decides, on the record read then)."""
    return scope in OFFLINE_SCOPES and read_at is not None and now - read_at <= OFFLINE_TRUST


def needs_touch(key: KeyRecord, now: datetime) -> bool:
    """Write last use only when the stored one is a minute old: reads must not queue on the
    store's write lock for a timestamp."""
    return key.last_used_at is None or now - parse_timestamp(key.last_used_at) >= TOUCH_EVERY


def list_line(key: KeyRecord, now: str) -> dict[str, str]:
    """One `apikey list` row as text columns (pure); never the secret (it is not stored)."""
    if key.revoked_at is not None:
        state = "revoked"
    elif key.expires_at is not None and key.expires_at <= now:
        state = "expired"
    else:
        state = "active"
    return {"name": key.name,
            "scopes": "legacy (all)" if key.legacy else ",".join(
                s for s in SCOPES if s in key.scopes),
            "state": state, "created": key.created_at, "expires": key.expires_at or "never",
            "last_used": key.last_used_at or "never", "revoked": key.revoked_at or "-"}
