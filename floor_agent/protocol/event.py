"""The audit event: the one record every capability produces, and its canonical bytes.

The canonical encoding is what the hash chain covers, so it must be byte-identical on every agent
and on the collector: JSON, keys sorted, no insignificant whitespace, UTF-8 (orjson with
OPT_SORT_KEYS gives exactly that). Floats are not allowed in `data` because their text form is a
common source of cross-implementation drift; integers, strings, booleans, null, lists and objects
are enough for audit facts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

import orjson

SEVERITIES: tuple[str, ...] = ("debug", "info", "notice", "warning", "error", "critical")
SEVERITY_RANK: dict[str, int] = {name: rank for rank, name in enumerate(SEVERITIES)}

KIND_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
AGENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")

MAX_SUBJECT_CHARS = 512
MAX_DATA_BYTES = 64 * 1024
MAX_INT = 2**63 - 1

EVENT_FIELDS: tuple[str, ...] = (
    "agent_id", "seq", "boot_id", "ts", "kind", "severity", "subject", "data",
)
_EVENT_FIELD_SET = frozenset(EVENT_FIELDS)


MAX_ERROR_CHARS = 300


class EventError(ValueError):
    """An event that cannot be part of the chain; the message names the field and the reason.

    The message is cut to MAX_ERROR_CHARS: it is answered, logged and may be stored in an
    alert, and field names or values in it come from whoever sent the batch."""

    def __init__(self, message: str) -> None:
        super().__init__(message if len(message) <= MAX_ERROR_CHARS
                         else message[:MAX_ERROR_CHARS] + "...")


SHOWN_CHARS = 80  # an error quotes at most this much of the value it refuses


def shown(value: Any) -> str:
    """repr() of a refused value, cut short: an error message (stored in an alert, logged,
    sent back) must not grow with what an attacker sends (a 4 MiB agent_id)."""
    if isinstance(value, int) and not -MAX_INT - 1 <= value <= MAX_INT:
        return "an integer outside the 64-bit range"
    if isinstance(value, str) and len(value) > SHOWN_CHARS:
        value = value[:SHOWN_CHARS]
    text = repr(value) if isinstance(value, str | int | bool | None) else type(value).__name__
    return text if len(text) <= SHOWN_CHARS + 2 else text[:SHOWN_CHARS] + "..."


def utc_timestamp(when: datetime | None = None) -> str:
    """UTC time in the one textual form events use (sortable, microsecond precision)."""
    when = when or datetime.now(UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(ts: str) -> datetime:
    """The inverse of utc_timestamp; raises EventError on any other form."""
    if not isinstance(ts, str) or not TS_RE.match(ts):
        raise EventError(f"ts: expected YYYY-MM-DDTHH:MM:SS.ffffffZ in UTC, got {shown(ts)}")
    try:
        if len(ts) == 27 and ts.isascii():
            # TS_RE fixed every field's place, so this is what strptime computes (and refuses:
            # month 13, 30 February, second 60...), at a tenth of the cost: the collector
            # checks every event's ts. Anything else (a trailing newline that `$` lets
            # through, non-ASCII digits) goes to strptime, which decides as it always did.
            return datetime(int(ts[0:4]), int(ts[5:7]), int(ts[8:10]), int(ts[11:13]),
                            int(ts[14:16]), int(ts[17:19]), int(ts[20:26]), tzinfo=UTC)
        return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise EventError(f"ts: not a real date/time: {shown(ts)}") from exc


@lru_cache(maxsize=1024)
def _real_date(ymd: str) -> bool:
    """Whether YYYY-MM-DD (ASCII digits) is a date that exists."""
    try:
        date(int(ymd[0:4]), int(ymd[5:7]), int(ymd[8:10]))
    except ValueError:
        return False
    return True


def check_timestamp(ts: str) -> None:
    """parse_timestamp without building the datetime: what validate() needs for every event.

    The common case (27 ASCII characters of the one form) is decided from a cached check of
    the date and three comparisons; anything else goes to parse_timestamp, which accepts or
    refuses exactly as before, with its own error.
    """
    if (type(ts) is str and len(ts) == 27 and ts.isascii() and TS_RE.match(ts)
            and _real_date(ts[:10]) and ts[11:13] <= "23" and ts[14:16] <= "59"
            and ts[17:19] <= "59"):
        return
    parse_timestamp(ts)


def _is_flat_json(data: dict[str, Any]) -> bool:
    """True for an object of strings, in-range integers, booleans and nulls only.

    Nearly every event's data looks like that; _check_json_value accepts all of it, so when
    this says True the full (recursive, path-building) check can be skipped. False decides
    nothing: the full check then runs and says what, if anything, is wrong.
    """
    for key, item in data.items():
        if type(key) is not str:
            return False
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int and -MAX_INT <= item <= MAX_INT:
            continue
        return False
    return True


def _check_json_value(value: Any, path: str) -> None:
    """Only the JSON types whose canonical text is unambiguous across implementations."""
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        if not -MAX_INT <= value <= MAX_INT:
            raise EventError(f"{path}: integer out of the 64-bit range")
        return
    if isinstance(value, float):
        raise EventError(f"{path}: floats are not allowed in audit data (use an integer or string)")
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_json_value(item, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise EventError(f"{path}: object keys must be strings, got {type(key).__name__}")
            _check_json_value(item, f"{path}.{key}")
        return
    raise EventError(f"{path}: {type(value).__name__} is not a JSON value")


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit fact. `seq` grows by one per event of an agent, across restarts."""

    agent_id: str
    seq: int
    boot_id: str
    ts: str
    kind: str
    severity: str
    subject: str
    data: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> AuditEvent:
        """Reject anything the collector would reject, before it is chained."""
        if not isinstance(self.agent_id, str) or not AGENT_ID_RE.match(self.agent_id):
            raise EventError(f"agent_id: expected 1-64 of [A-Za-z0-9._-], "
                             f"got {shown(self.agent_id)}")
        if type(self.seq) is not int or not 1 <= self.seq <= MAX_INT:
            raise EventError(f"seq: expected a positive integer, got {shown(self.seq)}")
        if not isinstance(self.boot_id, str) or not 1 <= len(self.boot_id) <= 64 \
                or "\x00" in self.boot_id:
            raise EventError(f"boot_id: expected a string of 1-64 characters, "
                             f"got {shown(self.boot_id)}")
        check_timestamp(self.ts)
        if not isinstance(self.kind, str) or not KIND_RE.match(self.kind) or len(self.kind) > 64:
            raise EventError(f"kind: expected a dotted lower-case name like 'usb.blocked', "
                             f"got {shown(self.kind)}")
        if self.severity not in SEVERITY_RANK:
            raise EventError(f"severity: expected one of {', '.join(SEVERITIES)}, "
                             f"got {shown(self.severity)}")
        if not isinstance(self.subject, str) or len(self.subject) > MAX_SUBJECT_CHARS:
            raise EventError(f"subject: expected a string of at most {MAX_SUBJECT_CHARS} chars")
        if "\x00" in self.subject:  # no text column (PostgreSQL's least of all) takes NUL
            raise EventError("subject: NUL characters are not allowed")
        if not isinstance(self.data, dict):
            raise EventError(f"data: expected an object, got {type(self.data).__name__}")
        if not _is_flat_json(self.data):
            _check_json_value(self.data, "data")
        if len(orjson.dumps(self.data)) > MAX_DATA_BYTES:
            raise EventError(f"data: larger than {MAX_DATA_BYTES} bytes")
        return self

    def as_dict(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id, "seq": self.seq, "boot_id": self.boot_id, "ts": self.ts,
            "kind": self.kind, "severity": self.severity, "subject": self.subject,
            "data": self.data,
        }

    @classmethod
    def from_dict(cls, raw: Any, where: str = "event") -> AuditEvent:
        """Build and validate from decoded JSON; errors name `where` and the field."""
        if not isinstance(raw, dict):
            raise EventError(f"{where}: expected an object, got {type(raw).__name__}")
        if raw.keys() != _EVENT_FIELD_SET:  # else nothing is missing and nothing extra
            missing = [name for name in EVENT_FIELDS if name not in raw]
            if missing:
                raise EventError(f"{where}: missing field(s) {', '.join(missing)}")
            extra = sorted(set(raw) - set(EVENT_FIELDS))
            if extra:
                raise EventError(f"{where}: unknown field(s) {', '.join(extra)}")
        try:
            event = cls(raw["agent_id"], raw["seq"], raw["boot_id"], raw["ts"], raw["kind"],
                        raw["severity"], raw["subject"], raw["data"])
            return event.validate()
        except EventError as exc:
            raise EventError(f"{where}.{exc}") from None


def canonical(event: AuditEvent | dict[str, Any]) -> bytes:
    """The exact bytes the chain hashes: sorted keys, compact JSON, UTF-8."""
    body = event.as_dict() if isinstance(event, AuditEvent) else event
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
