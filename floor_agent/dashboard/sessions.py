"""Sessions and CSRF: random opaque ids in a cookie, stored hashed, with lifetimes (pure)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from floor_agent.protocol.event import parse_timestamp

COOKIE = "floor_session"
LOGIN_COOKIE = "floor_login"  # the login form's CSRF token before there is a session


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def id_hash(session_id: str) -> str:
    """Stored instead of the id: a copy of the database opens no session."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def same(a: str | None, b: str | None) -> bool:
    """Constant-time comparison of two secrets; False when either is missing."""
    if not a or not b:
        return False
    return hmac.compare_digest(a.encode(), b.encode())


def expiry(created_at: str, last_seen_at: str, now: datetime, session_hours: int,
           idle_minutes: int) -> str | None:
    """Why a session is over ("expired", "idle"), or None while it is valid."""
    if now - parse_timestamp(created_at) >= timedelta(hours=session_hours):
        return "expired"
    if now - parse_timestamp(last_seen_at) >= timedelta(minutes=idle_minutes):
        return "idle"
    return None


TOUCH_EVERY = timedelta(seconds=30)


def needs_touch(last_seen_at: str, now: datetime) -> bool:
    """Write last_seen at most every 30 s: pages must not queue on the ingest write lock."""
    return now - parse_timestamp(last_seen_at) >= TOUCH_EVERY
