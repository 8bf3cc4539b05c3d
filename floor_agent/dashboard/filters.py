"""Filter values from query strings, checked: a bad one is named, never silently dropped."""

from __future__ import annotations

from datetime import UTC, datetime

from floor_agent.protocol.event import SEVERITIES, utc_timestamp


class FilterError(ValueError):
    """A filter value that cannot be used; the message names the field and the fix."""


def timestamp(name: str, value: str | None) -> str | None:
    """ISO 8601 (UTC when no offset is given, as a datetime-local input sends it) to the stored
    YYYY-MM-DDTHH:MM:SS.ffffffZ form."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise FilterError(f"{name}: expected an ISO 8601 time such as "
                          f"2026-11-29T08:00:00Z, got {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return utc_timestamp(parsed.astimezone(UTC))


def severity(name: str, value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    if value not in SEVERITIES:
        raise FilterError(f"{name}: expected one of {', '.join(SEVERITIES)}, got {value!r}")
    return value


def at_least(minimum: str | None) -> tuple[str, ...]:
    """The severities at or above a minimum (all of them when None)."""
    if minimum is None:
        return ()
    return SEVERITIES[SEVERITIES.index(minimum):]


def text(name: str, value: str | None, limit: int = 200) -> str | None:
    if value is None or not value.strip():
        return None
    if "\x00" in value or len(value) > limit:
        raise FilterError(f"{name}: at most {limit} characters, no NUL")
    return value.strip()
