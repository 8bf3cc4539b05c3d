"""The controller's local credentials cache (SQLite, WAL): doors keep deciding without the
collector.

The collector's credentials arrive whole and `replace` swaps them in one transaction, so a
decision never sees half a sync. `snapshot` serves them from memory, loaded once per
version: a decision never queries SQLite. `remove_person` is the urgent revocation (a person
leaves: their cards and templates go at once, before the next full sync). The anti-passback
positions and lockouts are kept here too, so a restart neither lets a second entry through nor
lifts a lockout.

Templates are stored as the opaque `sealed` bytes and never decrypted here. The file is mode
0600 (its WAL and shared-memory files inherit that from SQLite). A file that is not a cache,
or a row that cannot be read back, raises CacheError naming the file, the table and the row.
"""

from __future__ import annotations

import functools
import json
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, time
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, TypeVar

from floor_agent.access.freshness import SyncMark
from floor_agent.access.model import AccessState, Lockout
from floor_agent.private_db import open_private_db
from floor_agent.protocol.credentials import (
    AccessLevel,
    Card,
    Credentials,
    Person,
    Template,
    TimeWindow,
)

SCHEMA_VERSION = 1
_UID_RE = re.compile(r"[0-9A-F]{2,64}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS people (
    person_id TEXT PRIMARY KEY, name TEXT NOT NULL, active INTEGER NOT NULL,
    access_levels TEXT NOT NULL, duress_fingers TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cards (
    uid TEXT PRIMARY KEY, person_id TEXT NOT NULL, active INTEGER NOT NULL,
    valid_from TEXT, valid_until TEXT, keyed INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS cards_by_person ON cards (person_id);
CREATE TABLE IF NOT EXISTS levels (
    level_id TEXT PRIMARY KEY, doors TEXT NOT NULL, on_holidays INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS level_windows (
    level_id TEXT NOT NULL, seq INTEGER NOT NULL, days TEXT NOT NULL,
    start_time TEXT NOT NULL, end_time TEXT NOT NULL, PRIMARY KEY (level_id, seq));
CREATE TABLE IF NOT EXISTS holidays (day TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS templates (
    template_id TEXT PRIMARY KEY, person_id TEXT NOT NULL, finger INTEGER NOT NULL,
    sealed BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS templates_by_person ON templates (person_id);
CREATE TABLE IF NOT EXISTS zones (person_id TEXT PRIMARY KEY, zone TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS lockouts (
    uid TEXT PRIMARY KEY, failures TEXT NOT NULL, locked_until TEXT);
"""
_CREDENTIAL_TABLES = ("people", "cards", "levels", "level_windows", "holidays", "templates")

T = TypeVar("T")


class CacheError(Exception):
    """The cache file cannot be used, or credentials cannot be stored or read back."""


def _aware(value: datetime | None, what: str) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise CacheError(f"{what}: datetime without a time zone")
    return value.isoformat()


def _check(credentials: Credentials) -> None:
    """Refuse credentials the decision could not use safely, before touching the file."""
    for uid, card in credentials.cards.items():
        if uid != card.uid or not _UID_RE.fullmatch(uid):
            raise CacheError(f"card {uid!r}: uid must be upper-case hex and match its key")
        _aware(card.valid_from, f"card {uid}: valid_from")
        _aware(card.valid_until, f"card {uid}: valid_until")
    for person_id, person in credentials.people.items():
        if person_id != person.person_id:
            raise CacheError(f"person {person_id!r}: key and person_id differ")
    for level_id, level in credentials.levels.items():
        if level_id != level.level_id:
            raise CacheError(f"level {level_id!r}: key and level_id differ")
        for window in level.windows:
            if not window.days <= frozenset(range(7)):
                raise CacheError(f"level {level_id}: window days must be 0 (Mon) to 6 (Sun)")
    for person_id, templates in credentials.templates.items():
        for template in templates:
            if template.person_id != person_id:
                raise CacheError(f"template {template.template_id!r}: filed under {person_id!r}"
                                 f" but belongs to {template.person_id!r}")
            if not 1 <= template.finger <= 10 or not isinstance(template.sealed, bytes):
                raise CacheError(f"template {template.template_id!r}: finger must be 1-10 and "
                                 "sealed must be bytes")


class CredentialsCache:
    """One SQLite file; safe to share between the sync thread and the door loop."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._snapshot: Credentials | None = None
        self._saved_state: AccessState | None = None
        self._db = open_private_db(self.path, _SCHEMA, SCHEMA_VERSION, "credentials cache",
                                   CacheError)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> CredentialsCache:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CredentialsCache({str(self.path)!r})"

    # --- credentials ----------------------------------------------------------------------------

    @property
    def version(self) -> int:
        """The collector's credentials version now in the cache (0: never synced)."""
        return self.snapshot().version

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in one write transaction: all of it lands, or none of it."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as e:
            raise CacheError(f"{self.path}: write failed ({e})") from None
        return result

    def replace(self, credentials: Credentials) -> None:
        """Make `credentials` the whole content of the cache, in one transaction; the snapshot
        served afterwards is read back from the file."""
        _check(credentials)

        def write(db: sqlite3.Connection) -> None:
            for table in _CREDENTIAL_TABLES:
                db.execute(f"DELETE FROM {table}")
            db.executemany("INSERT INTO people VALUES (?, ?, ?, ?, ?)", (
                (p.person_id, p.name, int(p.active), json.dumps(list(p.access_levels)),
                 json.dumps(sorted(p.duress_fingers))) for p in credentials.people.values()))
            db.executemany("INSERT INTO cards VALUES (?, ?, ?, ?, ?, ?)", (
                (c.uid, c.person_id, int(c.active), _aware(c.valid_from, c.uid),
                 _aware(c.valid_until, c.uid), int(c.keyed)) for c in credentials.cards.values()))
            db.executemany("INSERT INTO levels VALUES (?, ?, ?)", (
                (lv.level_id, json.dumps(sorted(lv.doors)), int(lv.on_holidays))
                for lv in credentials.levels.values()))
            db.executemany("INSERT INTO level_windows VALUES (?, ?, ?, ?, ?)", (
                (lv.level_id, seq, json.dumps(sorted(w.days)), w.start.isoformat(),
                 w.end.isoformat())
                for lv in credentials.levels.values() for seq, w in enumerate(lv.windows)))
            db.executemany("INSERT INTO holidays VALUES (?)",
                           ((d.isoformat(),) for d in sorted(credentials.holidays)))
            db.executemany("INSERT INTO templates VALUES (?, ?, ?, ?)", (
                (t.template_id, t.person_id, t.finger, t.sealed)
                for templates in credentials.templates.values() for t in templates))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('version', ?)",
                       (str(credentials.version),))

        with self._lock:
            self._transaction(write)  # duplicate ids: CacheError, nothing written
            self._snapshot = self._load()

    def snapshot(self) -> Credentials:
        """The credentials as of the last `replace`/`remove_person`, from memory (read from
        the file once, on first use)."""
        snapshot = self._snapshot
        if snapshot is not None:
            return snapshot
        with self._lock:
            if self._snapshot is None:
                self._snapshot = self._load()
            return self._snapshot

    def remove_person(self, person_id: str) -> bool:
        """Remove a person with their cards and templates, now (False: not in the cache)."""

        def write(db: sqlite3.Connection) -> bool:
            gone = db.execute("DELETE FROM people WHERE person_id = ?", (person_id,)).rowcount
            db.execute("DELETE FROM cards WHERE person_id = ?", (person_id,))
            db.execute("DELETE FROM templates WHERE person_id = ?", (person_id,))
            return gone > 0

        with self._lock:
            removed = self._transaction(write)
            old = self._snapshot
            if old is not None:
                self._snapshot = Credentials(
                    people=MappingProxyType({k: v for k, v in old.people.items()
                                             if k != person_id}),
                    cards=MappingProxyType({k: v for k, v in old.cards.items()
                                            if v.person_id != person_id}),
                    levels=old.levels, holidays=old.holidays,
                    templates=MappingProxyType({k: v for k, v in old.templates.items()
                                                if k != person_id}),
                    version=old.version)
            return removed

    # --- sync mark (freshness.py) -----------------------------------------------------------

    def sync_mark(self) -> SyncMark | None:
        """When the credentials were last verified current (None: never)."""
        with self._lock:
            try:
                row = self._db.execute("SELECT value FROM meta WHERE key = 'sync_mark'"
                                       ).fetchone()
            except sqlite3.Error as e:
                raise CacheError(f"{self.path}: cannot read meta ({e})") from None
        if row is None:
            return None
        try:
            value = json.loads(row[0])
            return SyncMark(str(value["boot_id"]), float(value["boottime"]),
                            float(value["age"]), float(value["wall"]))
        except (ValueError, TypeError, KeyError):
            raise CacheError(f"{self.path}: meta key 'sync_mark': unreadable row") from None

    def save_sync_mark(self, mark: SyncMark) -> None:
        text = json.dumps({"boot_id": mark.boot_id, "boottime": mark.boottime, "age": mark.age,
                           "wall": mark.wall})
        with self._lock:
            self._transaction(lambda db: db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('sync_mark', ?)", (text,)))

    def _rows(self, table: str, key: str, query: str,
              build: Callable[[tuple[Any, ...]], T]) -> Iterable[tuple[Any, T]]:
        """Rows of `table` turned into model objects; a row that does not parse names itself."""
        try:
            rows = self._db.execute(query).fetchall()
        except sqlite3.Error as e:
            raise CacheError(f"{self.path}: cannot read {table} ({e})") from None
        for row in rows:
            try:
                yield row[0], build(row)
            except (ValueError, TypeError, KeyError) as e:
                raise CacheError(f"{self.path}: {table} {key} {row[0]!r}: unreadable row "
                                 f"({type(e).__name__})") from None

    def _load(self) -> Credentials:
        windows: dict[str, list[TimeWindow]] = {}
        for level_id, window in self._rows(
                "level_windows", "level_id",
                "SELECT level_id, days, start_time, end_time FROM level_windows "
                "ORDER BY level_id, seq",
                lambda r: TimeWindow(_days(r[1]), time.fromisoformat(r[2]),
                                     time.fromisoformat(r[3]))):
            windows.setdefault(level_id, []).append(window)
        levels = dict(self._rows(
            "levels", "level_id", "SELECT level_id, doors, on_holidays FROM levels",
            lambda r: AccessLevel(r[0], frozenset(_strings(r[1])),
                                  tuple(windows.get(r[0], ())), bool(r[2]))))
        people = dict(self._rows(
            "people", "person_id",
            "SELECT person_id, name, active, access_levels, duress_fingers FROM people",
            lambda r: Person(r[0], r[1], bool(r[2]), tuple(_strings(r[3])),
                             _fingers(r[4]))))
        cards = dict(self._rows(
            "cards", "uid", "SELECT uid, person_id, active, valid_from, valid_until, keyed "
            "FROM cards",
            lambda r: Card(r[0], r[1], bool(r[2]), _when(r[3]), _when(r[4]), bool(r[5]))))
        holidays = frozenset(day for _, day in self._rows(
            "holidays", "day", "SELECT day FROM holidays", lambda r: date.fromisoformat(r[0])))
        templates: dict[str, list[Template]] = {}
        for _, template in self._rows(
                "templates", "template_id",
                "SELECT template_id, person_id, finger, sealed FROM templates ORDER BY rowid",
                lambda r: Template(r[0], r[1], int(r[2]), _blob(r[3]))):
            templates.setdefault(template.person_id, []).append(template)
        version = dict(self._rows("meta", "key", "SELECT key, value FROM meta",
                                  lambda r: r[1])).get("version", "0")
        try:
            version_number = int(version)
        except ValueError:
            raise CacheError(f"{self.path}: meta version {version!r} is not a number") from None
        return Credentials(
            people=MappingProxyType(people), cards=MappingProxyType(cards),
            levels=MappingProxyType(levels), holidays=holidays,
            templates=MappingProxyType({k: tuple(v) for k, v in templates.items()}),
            version=version_number)

    # --- access state ---------------------------------------------------------------------------

    def load_state(self) -> AccessState:
        """The anti-passback positions and lockouts as last saved."""
        with self._lock:
            zones = dict(self._rows("zones", "person_id", "SELECT person_id, zone FROM zones",
                                    lambda r: str(r[1])))
            lockouts = dict(self._rows(
                "lockouts", "uid", "SELECT uid, failures, locked_until FROM lockouts",
                lambda r: Lockout(tuple(_when_required(t) for t in _strings(r[1])),
                                  _when(r[2]))))
            state = AccessState(zone_of=zones, lockouts=lockouts)
            self._saved_state = state
            return state

    def save_state(self, state: AccessState) -> None:
        """Persist `state`, writing only what changed since the last load or save."""
        if self._saved_state is None:
            self.load_state()
        with self._lock:
            saved = self._saved_state
            assert saved is not None
            zones, zones_gone = _changes(saved.zone_of, state.zone_of)
            locks, locks_gone = _changes(saved.lockouts, state.lockouts)
            if not (zones or zones_gone or locks or locks_gone):
                return
            lock_rows = [(uid, json.dumps([_aware(t, uid) for t in lk.failures]),
                          _aware(lk.locked_until, uid)) for uid, lk in locks.items()]

            def write(db: sqlite3.Connection) -> None:
                db.executemany("INSERT OR REPLACE INTO zones VALUES (?, ?)", zones.items())
                db.executemany("DELETE FROM zones WHERE person_id = ?",
                               ((p,) for p in zones_gone))
                db.executemany("INSERT OR REPLACE INTO lockouts VALUES (?, ?, ?)", lock_rows)
                db.executemany("DELETE FROM lockouts WHERE uid = ?", ((u,) for u in locks_gone))

            self._transaction(write)
            self._saved_state = state


def _changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    if old is new:
        return {}, []
    changed = {k: v for k, v in new.items() if old.get(k) != v}
    return changed, [k for k in old if k not in new]


def _strings(text: str) -> list[str]:
    value = json.loads(text)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of strings")
    return value


def _ints(text: str) -> list[int]:
    value = json.loads(text)
    if not isinstance(value, list) or not all(type(v) is int for v in value):
        raise ValueError("expected a list of integers")
    return value


@functools.lru_cache(maxsize=1024)  # the same few sets repeat on thousands of rows
def _days(text: str) -> frozenset[int]:
    days = frozenset(_ints(text))
    if not days <= frozenset(range(7)):
        raise ValueError("days must be 0 to 6")
    return days


@functools.lru_cache(maxsize=1024)
def _fingers(text: str) -> frozenset[int]:
    return frozenset(_ints(text))


def _when(text: str | None) -> datetime | None:
    return None if text is None else _when_required(text)


def _when_required(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError("datetime without a time zone")
    return value


def _blob(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError("sealed template is not a blob")
    return value
