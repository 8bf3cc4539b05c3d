"""Credential records and their wire form: validation, normalisation, JSON <-> Credentials.

The records (people, cards, access levels, sealed templates) are what the collector stores and
serves and what the door controller caches and decides from. The collector's API checks what
admins and controllers send with these functions, and the door controller checks the snapshot
it fetches with the same ones: one definition of each record, and every refusal is a
CredentialError naming the field (``cards[3].uid: ...``).

JSON shapes (the API and the snapshot use exactly these):

person    {"person_id": "p-1001", "name": "Ada Lovelace", "active": true,
           "access_levels": ["cleanroom"], "duress_fingers": [10]}
card      {"uid": "04A224B2C35E80", "person_id": "p-1001", "active": true,
           "valid_from": "2026-01-01T00:00:00Z" | null, "valid_until": ... | null,
           "keyed": true}
level     {"level_id": "cleanroom", "doors": ["door-a"], "on_holidays": false,
           "windows": [{"days": ["mon", "tue", "wed", "thu", "fri"],
                        "start": "07:00", "end": "19:00"}]}
holiday   {"date": "2026-12-25", "name": "Christmas"}       (name optional)
template  {"template_id": "t-1", "person_id": "p-1001", "finger": 2,
           "sealed": "<base64 of templates.seal() output>"}
snapshot  {"version": 7, "people": [person...], "cards": [card...], "levels": [level...],
           "holidays": ["2026-12-25", ...], "templates": [template...]}

Identifiers are 1-64 of letters, digits and ``._@-`` starting with a letter or digit. Card UIDs
are 4, 7 or 10 bytes in upper-case hex (spaces and colons are dropped on input). A window runs
start <= t < end in the door's local time; start > end crosses midnight (``22:00-06:00``).
``parse_window("mon-fri 07:00-19:00")`` reads the short text form the CLI takes. Sealed templates
are opaque here: base64, at most MAX_SEALED_BYTES once decoded; the collector cannot tell sealed
from clear bytes, which is why only the controller (templates.seal) ever produces them.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

# Weekdays as datetime.weekday(): Monday 0 .. Sunday 6.
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class Person:
    person_id: str
    name: str
    active: bool = True
    access_levels: tuple[str, ...] = ()
    # fingers (ISO/IEC 19794 finger positions 1-10) whose match means "under duress": the door
    # opens and a silent alarm goes out
    duress_fingers: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class Card:
    uid: str  # upper-case hex, as `FF CA 00 00 00` returns it (e.g. "04A224B2C35E80")
    person_id: str
    active: bool = True
    valid_from: datetime | None = None  # aware datetimes (UTC)
    valid_until: datetime | None = None
    # the card carries a diversified key and must prove it (clone-resistant mode); a card
    # without one opens no door where the site requires the proof
    keyed: bool = True


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Weekly window in the door's local time: days (0=Mon..6=Sun), start <= t < end."""

    days: frozenset[int]
    start: time
    end: time


@dataclass(frozen=True, slots=True)
class AccessLevel:
    level_id: str
    doors: frozenset[str]
    windows: tuple[TimeWindow, ...]
    on_holidays: bool = False  # holidays close the level unless this says otherwise


@dataclass(frozen=True, slots=True)
class Template:
    """One enrolled finger of one person, sealed under the site key (never in clear here)."""

    template_id: str
    person_id: str
    finger: int  # 1-10
    sealed: bytes = field(repr=False)  # templates.seal(): nonce + AES-GCM ciphertext + tag


@dataclass(frozen=True, slots=True)
class Credentials:
    """A consistent snapshot of the controller's cache (what a decision is made from)."""

    people: Mapping[str, Person]
    cards: Mapping[str, Card]  # by uid
    levels: Mapping[str, AccessLevel]
    holidays: frozenset[date] = frozenset()
    templates: Mapping[str, tuple[Template, ...]] = field(default_factory=dict)  # by person
    version: int = 0  # the collector's credentials version this snapshot reflects


ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
UID_BYTES = (4, 7, 10)
MAX_NAME = 200
MAX_SEALED_BYTES = 8192  # a ZFM model is 512-1536 bytes; sealing adds 29
MAX_LEVELS_PER_PERSON = 64
MAX_DOORS_PER_LEVEL = 256
MAX_WINDOWS_PER_LEVEL = 32
FINGERS = range(1, 11)  # ISO/IEC 19794-2 finger positions
HHMM_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
WINDOW_TEXT_RE = re.compile(r"^\s*([a-z,\-]+)\s+(\d\d:\d\d)\s*-\s*(\d\d:\d\d)\s*$")


class CredentialError(ValueError):
    """A record that cannot be stored or used; the message starts with the field at fault."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


def _short(value: Any) -> str:
    """A bounded repr for messages (never echo a whole blob back)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _object(value: Any, field: str, keys: Iterable[str], required: Iterable[str]
            ) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise CredentialError(field, f"expected a JSON object, got {type(value).__name__}")
    unknown = sorted(set(value) - set(keys))
    if unknown:
        raise CredentialError(field, f"unknown key(s) {unknown}; expected {sorted(keys)}")
    missing = [k for k in required if k not in value]
    if missing:
        raise CredentialError(field, f"missing key(s) {missing}")
    return value


def _prefix(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def check_id(value: Any, field: str) -> str:
    if not isinstance(value, str) or not ID_RE.match(value):
        raise CredentialError(field, "expected 1-64 of letters, digits and ._@- starting with a "
                                     f"letter or digit, got {_short(value)}")
    return value


def _bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise CredentialError(field, f"expected true or false, got {_short(value)}")
    return value


def _name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME \
            or any(ord(c) < 32 for c in value):
        raise CredentialError(field, f"expected 1-{MAX_NAME} printable characters, "
                                     f"got {_short(value)}")
    return value.strip()


def _finger(value: Any, field: str) -> int:
    if type(value) is not int or value not in FINGERS:
        raise CredentialError(field, f"expected a finger position 1-10, got {_short(value)}")
    return value


def _list(value: Any, field: str, limit: int) -> list[Any]:
    if not isinstance(value, list):
        raise CredentialError(field, f"expected a JSON list, got {type(value).__name__}")
    if len(value) > limit:
        raise CredentialError(field, f"at most {limit} entries, got {len(value)}")
    return value


def normalize_uid(value: Any, field: str = "uid") -> str:
    """Upper-case hex of 4, 7 or 10 bytes, as `FF CA 00 00 00` returns it."""
    if not isinstance(value, str):
        raise CredentialError(field, f"expected hex text, got {type(value).__name__}")
    text = re.sub(r"[\s:]", "", value).upper()
    if not re.fullmatch(r"[0-9A-F]*", text) or len(text) % 2:
        raise CredentialError(field, f"expected hex digits in pairs, got {_short(value)}")
    if len(text) // 2 not in UID_BYTES:
        raise CredentialError(field, f"expected a UID of 4, 7 or 10 bytes, got {len(text) // 2}")
    return text


def _datetime(value: Any, field: str) -> datetime | None:
    """ISO 8601 with a zone (Z or +hh:mm), kept as an aware UTC datetime; null is none."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise CredentialError(field, f"expected an ISO 8601 time or null, got {_short(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise CredentialError(field, f"expected an ISO 8601 time, got {_short(value)}") from None
    if parsed.tzinfo is None:
        raise CredentialError(field, f"needs a time zone (e.g. Z), got {_short(value)}")
    return parsed.astimezone(UTC)


def _datetime_text(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_date(value: Any, field: str = "date") -> date:
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise CredentialError(field, f"expected an ISO date YYYY-MM-DD, got {_short(value)}")
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise CredentialError(field, f"not a calendar date ({exc})") from None


def _hhmm(value: Any, field: str) -> time:
    match = HHMM_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise CredentialError(field, f"expected HH:MM (00:00-23:59), got {_short(value)}")
    return time(int(match[1]), int(match[2]))


# --- people ---------------------------------------------------------------------------------

PERSON_KEYS = ("person_id", "name", "active", "access_levels", "duress_fingers")


def person_from_json(value: Any, field: str = "") -> Person:
    obj = _object(value, field or "person", PERSON_KEYS, ("person_id", "name"))
    levels = _list(obj.get("access_levels", []), _prefix(field, "access_levels"),
                   MAX_LEVELS_PER_PERSON)
    fingers = _list(obj.get("duress_fingers", []), _prefix(field, "duress_fingers"), 10)
    return Person(
        person_id=check_id(obj["person_id"], _prefix(field, "person_id")),
        name=_name(obj["name"], _prefix(field, "name")),
        active=_bool(obj.get("active", True), _prefix(field, "active")),
        access_levels=tuple(dict.fromkeys(
            check_id(level, f"{_prefix(field, 'access_levels')}[{i}]")
            for i, level in enumerate(levels))),
        duress_fingers=frozenset(_finger(f, f"{_prefix(field, 'duress_fingers')}[{i}]")
                                 for i, f in enumerate(fingers)),
    )


def person_to_json(person: Person) -> dict[str, Any]:
    return {"person_id": person.person_id, "name": person.name, "active": person.active,
            "access_levels": list(person.access_levels),
            "duress_fingers": sorted(person.duress_fingers)}


# --- cards ----------------------------------------------------------------------------------

CARD_KEYS = ("uid", "person_id", "active", "valid_from", "valid_until", "keyed")


def card_from_json(value: Any, field: str = "") -> Card:
    obj = _object(value, field or "card", CARD_KEYS, ("uid", "person_id"))
    card = Card(
        uid=normalize_uid(obj["uid"], _prefix(field, "uid")),
        person_id=check_id(obj["person_id"], _prefix(field, "person_id")),
        active=_bool(obj.get("active", True), _prefix(field, "active")),
        valid_from=_datetime(obj.get("valid_from"), _prefix(field, "valid_from")),
        valid_until=_datetime(obj.get("valid_until"), _prefix(field, "valid_until")),
        keyed=_bool(obj.get("keyed", True), _prefix(field, "keyed")),
    )
    if card.valid_from and card.valid_until and card.valid_until <= card.valid_from:
        raise CredentialError(_prefix(field, "valid_until"), "must be after valid_from")
    return card


def card_to_json(card: Card) -> dict[str, Any]:
    return {"uid": card.uid, "person_id": card.person_id, "active": card.active,
            "valid_from": _datetime_text(card.valid_from),
            "valid_until": _datetime_text(card.valid_until), "keyed": card.keyed}


# --- access levels --------------------------------------------------------------------------

LEVEL_KEYS = ("level_id", "doors", "windows", "on_holidays")
WINDOW_KEYS = ("days", "start", "end")


def _days(value: Any, field: str) -> frozenset[int]:
    days = _list(value, field, 7)
    if not days:
        raise CredentialError(field, "at least one day")
    out: set[int] = set()
    for i, day in enumerate(days):
        if day not in WEEKDAYS:
            raise CredentialError(f"{field}[{i}]", f"expected one of {', '.join(WEEKDAYS)}, "
                                                   f"got {_short(day)}")
        out.add(WEEKDAYS.index(day))
    return frozenset(out)


def window_from_json(value: Any, field: str) -> TimeWindow:
    obj = _object(value, field, WINDOW_KEYS, WINDOW_KEYS)
    window = TimeWindow(_days(obj["days"], f"{field}.days"), _hhmm(obj["start"], f"{field}.start"),
                        _hhmm(obj["end"], f"{field}.end"))
    # end == start is a whole day from start (00:00-00:00: all day), as the door reads it
    # (decision.window_allows); end before start runs past midnight into the next day.
    return window


def window_to_json(window: TimeWindow) -> dict[str, Any]:
    return {"days": [WEEKDAYS[d] for d in sorted(window.days)],
            "start": window.start.strftime("%H:%M"), "end": window.end.strftime("%H:%M")}


def parse_window(text: str, field: str = "window") -> dict[str, Any]:
    """'mon-fri 07:00-19:00', 'sat,sun 08:00-12:00', 'daily 22:00-06:00' -> window JSON."""
    match = WINDOW_TEXT_RE.match(text.lower()) if isinstance(text, str) else None
    if match is None:
        raise CredentialError(field, f"expected e.g. 'mon-fri 07:00-19:00', got {_short(text)}")
    days: list[str] = []
    for part in match[1].split(","):
        if part == "daily":
            days += WEEKDAYS
            continue
        first, _, last = part.partition("-")
        if first not in WEEKDAYS or (last and last not in WEEKDAYS):
            raise CredentialError(field, f"unknown day range {part!r}; days are "
                                         f"{', '.join(WEEKDAYS)} or 'daily'")
        a, b = WEEKDAYS.index(first), WEEKDAYS.index(last or first)
        span = range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)]
        days += [WEEKDAYS[d] for d in span]
    window = {"days": sorted(set(days), key=WEEKDAYS.index), "start": match[2], "end": match[3]}
    return window_to_json(window_from_json(window, field))


def level_from_json(value: Any, field: str = "") -> AccessLevel:
    obj = _object(value, field or "level", LEVEL_KEYS, ("level_id", "doors", "windows"))
    doors = _list(obj["doors"], _prefix(field, "doors"), MAX_DOORS_PER_LEVEL)
    windows = _list(obj["windows"], _prefix(field, "windows"), MAX_WINDOWS_PER_LEVEL)
    if not doors:
        raise CredentialError(_prefix(field, "doors"), "at least one door")
    if not windows:
        raise CredentialError(_prefix(field, "windows"), "at least one window")
    return AccessLevel(
        level_id=check_id(obj["level_id"], _prefix(field, "level_id")),
        doors=frozenset(check_id(d, f"{_prefix(field, 'doors')}[{i}]")
                        for i, d in enumerate(doors)),
        windows=tuple(window_from_json(w, f"{_prefix(field, 'windows')}[{i}]")
                      for i, w in enumerate(windows)),
        on_holidays=_bool(obj.get("on_holidays", False), _prefix(field, "on_holidays")),
    )


def level_to_json(level: AccessLevel) -> dict[str, Any]:
    return {"level_id": level.level_id, "doors": sorted(level.doors),
            "windows": [window_to_json(w) for w in level.windows],
            "on_holidays": level.on_holidays}


# --- holidays -------------------------------------------------------------------------------

def holiday_from_json(value: Any, field: str = "") -> tuple[date, str]:
    obj = _object(value, field or "holiday", ("date", "name"), ("date",))
    name = obj.get("name", "")
    return (parse_date(obj["date"], _prefix(field, "date")),
            "" if name == "" else _name(name, _prefix(field, "name")))


# --- templates ------------------------------------------------------------------------------

TEMPLATE_KEYS = ("template_id", "person_id", "finger", "sealed")


def decode_sealed(value: Any, field: str = "sealed") -> bytes:
    if not isinstance(value, str):
        raise CredentialError(field, f"expected base64 text, got {type(value).__name__}")
    if len(value) > (MAX_SEALED_BYTES + 2) // 3 * 4:
        raise CredentialError(field, f"larger than {MAX_SEALED_BYTES} bytes")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise CredentialError(field, "not valid base64") from None
    if not raw:
        raise CredentialError(field, "empty")
    if len(raw) > MAX_SEALED_BYTES:
        raise CredentialError(field, f"larger than {MAX_SEALED_BYTES} bytes")
    return raw


def template_from_json(value: Any, field: str = "") -> Template:
    obj = _object(value, field or "template", TEMPLATE_KEYS, TEMPLATE_KEYS)
    return Template(
        template_id=check_id(obj["template_id"], _prefix(field, "template_id")),
        person_id=check_id(obj["person_id"], _prefix(field, "person_id")),
        finger=_finger(obj["finger"], _prefix(field, "finger")),
        sealed=decode_sealed(obj["sealed"], _prefix(field, "sealed")),
    )


def template_to_json(template: Template) -> dict[str, Any]:
    return {"template_id": template.template_id, "person_id": template.person_id,
            "finger": template.finger, "sealed": base64.b64encode(template.sealed).decode()}


# --- the whole snapshot ---------------------------------------------------------------------

SNAPSHOT_KEYS = ("version", "people", "cards", "levels", "holidays", "templates")
MAX_RECORDS = 1_000_000


def credentials_to_json(credentials: Credentials) -> dict[str, Any]:
    """The snapshot as the API sends it (lists in id order, so equal snapshots are equal JSON)."""
    return {
        "version": credentials.version,
        "people": [person_to_json(credentials.people[k]) for k in sorted(credentials.people)],
        "cards": [card_to_json(credentials.cards[k]) for k in sorted(credentials.cards)],
        "levels": [level_to_json(credentials.levels[k]) for k in sorted(credentials.levels)],
        "holidays": [d.isoformat() for d in sorted(credentials.holidays)],
        "templates": [template_to_json(t) for person in sorted(credentials.templates)
                      for t in sorted(credentials.templates[person],
                                      key=lambda t: t.template_id)],
    }


def credentials_from_json(value: Any) -> Credentials:
    """Check a snapshot record by record; the first problem raises CredentialError."""
    obj = _object(value, "snapshot", SNAPSHOT_KEYS, SNAPSHOT_KEYS)
    version = obj["version"]
    if type(version) is not int or version < 0:
        raise CredentialError("version", f"expected an integer >= 0, got {_short(version)}")
    people: dict[str, Person] = {}
    for i, item in enumerate(_list(obj["people"], "people", MAX_RECORDS)):
        person = person_from_json(item, f"people[{i}]")
        if person.person_id in people:
            raise CredentialError(f"people[{i}].person_id", f"{person.person_id!r} twice")
        people[person.person_id] = person
    cards: dict[str, Card] = {}
    for i, item in enumerate(_list(obj["cards"], "cards", MAX_RECORDS)):
        card = card_from_json(item, f"cards[{i}]")
        if card.uid in cards:
            raise CredentialError(f"cards[{i}].uid", f"{card.uid} twice")
        if card.person_id not in people:
            raise CredentialError(f"cards[{i}].person_id", f"unknown person {card.person_id!r}")
        cards[card.uid] = card
    levels: dict[str, AccessLevel] = {}
    for i, item in enumerate(_list(obj["levels"], "levels", MAX_RECORDS)):
        level = level_from_json(item, f"levels[{i}]")
        if level.level_id in levels:
            raise CredentialError(f"levels[{i}].level_id", f"{level.level_id!r} twice")
        levels[level.level_id] = level
    holidays = frozenset(parse_date(d, f"holidays[{i}]")
                         for i, d in enumerate(_list(obj["holidays"], "holidays", MAX_RECORDS)))
    templates: dict[str, list[Template]] = {}
    seen: set[str] = set()
    for i, item in enumerate(_list(obj["templates"], "templates", MAX_RECORDS)):
        template = template_from_json(item, f"templates[{i}]")
        if template.template_id in seen:
            raise CredentialError(f"templates[{i}].template_id",
                                  f"{template.template_id!r} twice")
        if template.person_id not in people:
            raise CredentialError(f"templates[{i}].person_id",
                                  f"unknown person {template.person_id!r}")
        seen.add(template.template_id)
        templates.setdefault(template.person_id, []).append(template)
    return Credentials(people=people, cards=cards, levels=levels, holidays=holidays,
                       templates={k: tuple(v) for k, v in templates.items()}, version=version)
