"""access cache: the controller's SQLite copy of the credentials and of its own state."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import stat
import threading
import time as time_module
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest

from floor_agent.access.cache import CacheError, CredentialsCache
from floor_agent.access.model import AccessState, Lockout
from floor_agent.protocol.credentials import (
    AccessLevel,
    Card,
    Credentials,
    Person,
    Template,
    TimeWindow,
)

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
SEALED = {"a-index": os.urandom(540), "a-ring": os.urandom(540), "b-thumb": os.urandom(540)}


def credentials(version: int = 3) -> Credentials:
    return Credentials(
        people={"alice": Person("alice", "Alice", True, ("day", "night"), frozenset({4})),
                "bob": Person("bob", "Bob", False, ("day",))},
        cards={"04A1": Card("04A1", "alice", valid_from=T0, valid_until=T0 + timedelta(days=365)),
               "04A9": Card("04A9", "alice", active=False, keyed=False),
               "04B2": Card("04B2", "bob")},
        levels={"day": AccessLevel("day", frozenset({"lab", "vault"}), (
                    TimeWindow(frozenset({0, 1, 2, 3, 4}), time(7), time(12)),
                    TimeWindow(frozenset({0, 1, 2, 3, 4}), time(13), time(19)))),
                "night": AccessLevel("night", frozenset({"lab"}), (
                    TimeWindow(frozenset({4}), time(22), time(6, 30)),), on_holidays=True),
                "empty": AccessLevel("empty", frozenset(), ())},
        holidays=frozenset({date(2026, 12, 25), date(2026, 12, 26)}),
        templates={"alice": (Template("a-index", "alice", 2, SEALED["a-index"]),
                             Template("a-ring", "alice", 4, SEALED["a-ring"])),
                   "bob": (Template("b-thumb", "bob", 1, SEALED["b-thumb"]),)},
        version=version)


@pytest.fixture
def cache(tmp_path: Path) -> CredentialsCache:
    with CredentialsCache(tmp_path / "credentials.db") as opened:
        yield opened


def same(a: Credentials, b: Credentials) -> bool:
    return (dict(a.people), dict(a.cards), dict(a.levels), a.holidays, dict(a.templates),
            a.version) == (dict(b.people), dict(b.cards), dict(b.levels), b.holidays,
                           dict(b.templates), b.version)


def test_a_new_cache_is_empty_at_version_zero(cache: CredentialsCache) -> None:
    snapshot = cache.snapshot()
    assert (dict(snapshot.people), dict(snapshot.cards), snapshot.version) == ({}, {}, 0)
    assert cache.load_state() == AccessState()


def test_replace_then_snapshot_gives_back_the_credentials(cache: CredentialsCache) -> None:
    cache.replace(credentials())
    assert same(cache.snapshot(), credentials())
    assert cache.version == 3


def test_credentials_survive_a_restart_without_the_collector(tmp_path: Path) -> None:
    with CredentialsCache(tmp_path / "c.db") as first:
        first.replace(credentials())
    with CredentialsCache(tmp_path / "c.db") as again:
        snapshot = again.snapshot()
    assert same(snapshot, credentials())
    night = snapshot.levels["night"]
    assert night.windows == (TimeWindow(frozenset({4}), time(22), time(6, 30)),)
    assert snapshot.cards["04A1"].valid_until == T0 + timedelta(days=365)
    assert snapshot.cards["04A1"].valid_until.tzinfo is not None


def test_the_snapshot_is_served_from_memory(cache: CredentialsCache) -> None:
    """Once loaded, a decision never waits for SQLite: a change made to the file behind the
    cache's back is not seen, the same object comes back every time."""
    cache.replace(credentials())
    first = cache.snapshot()
    with sqlite3.connect(cache.path) as other:
        other.execute("DELETE FROM cards")
    assert cache.snapshot() is first
    assert "04A1" in cache.snapshot().cards


def test_the_snapshot_cannot_be_changed_by_its_users(cache: CredentialsCache) -> None:
    cache.replace(credentials())
    with pytest.raises(TypeError):
        cache.snapshot().cards["FFFF"] = Card("FFFF", "mallory")  # type: ignore[index]


def test_replace_swaps_everything_and_drops_what_is_gone(cache: CredentialsCache) -> None:
    cache.replace(credentials())
    smaller = dataclasses.replace(credentials(version=4), cards={"04B2": Card("04B2", "bob")},
                                  holidays=frozenset())
    cache.replace(smaller)
    assert same(cache.snapshot(), smaller)
    with sqlite3.connect(cache.path) as raw:
        assert raw.execute("SELECT uid FROM cards").fetchall() == [("04B2",)]


def test_a_refused_replace_leaves_the_old_credentials(tmp_path: Path) -> None:
    """Atomic: the duplicate template id fails the insert half-way, nothing of it lands."""
    with CredentialsCache(tmp_path / "c.db") as cache:
        cache.replace(credentials())
        broken = dataclasses.replace(credentials(version=9), templates={
            "alice": (Template("dup", "alice", 2, b"x"),),
            "bob": (Template("dup", "bob", 1, b"y"),)})
        with pytest.raises(CacheError, match="write failed"):
            cache.replace(broken)
        assert same(cache.snapshot(), credentials())
    with CredentialsCache(tmp_path / "c.db") as reopened:
        assert same(reopened.snapshot(), credentials())


@pytest.mark.parametrize(("change", "message"), [
    ({"cards": {"04a1": Card("04a1", "alice")}}, "upper-case hex"),
    ({"cards": {"04A1": Card("04A1", "alice", valid_from=datetime(2026, 1, 1))}},
     "without a time zone"),
    ({"templates": {"bob": (Template("a-index", "alice", 2, b"x"),)}}, "belongs to 'alice'"),
    ({"templates": {"alice": (Template("a-index", "alice", 11, b"x"),)}}, "finger must be 1-10"),
    ({"levels": {"x": AccessLevel("x", frozenset(), (TimeWindow(frozenset({7}), time(1),
                                                                  time(2)),))}}, "0 \\(Mon\\)"),
    ({"people": {"alice": Person("bob", "Bob")}}, "key and person_id differ"),
])
def test_unusable_credentials_are_refused_with_the_reason(cache: CredentialsCache,
                                                          change: dict, message: str) -> None:
    cache.replace(credentials())
    with pytest.raises(CacheError, match=message):
        cache.replace(dataclasses.replace(credentials(version=8), **change))
    assert cache.version == 3


def test_remove_person_takes_their_cards_and_templates_at_once(tmp_path: Path) -> None:
    with CredentialsCache(tmp_path / "c.db") as cache:
        cache.replace(credentials())
        cache.snapshot()
        assert cache.remove_person("alice") is True
        snapshot = cache.snapshot()
        assert set(snapshot.people) == {"bob"}
        assert set(snapshot.cards) == {"04B2"}
        assert set(snapshot.templates) == {"bob"}
        assert snapshot.version == 3
        assert cache.remove_person("alice") is False
    with CredentialsCache(tmp_path / "c.db") as reopened:
        assert set(reopened.snapshot().cards) == {"04B2"}
        assert set(reopened.snapshot().templates) == {"bob"}


def test_remove_person_before_any_snapshot(cache: CredentialsCache) -> None:
    with sqlite3.connect(cache.path) as raw:  # a cache filled by an earlier run
        raw.execute("INSERT INTO people VALUES ('eve', 'Eve', 1, '[]', '[]')")
        raw.execute("INSERT INTO cards VALUES ('0E0E', 'eve', 1, NULL, NULL, 1)")
    assert cache.remove_person("eve") is True
    assert dict(cache.snapshot().cards) == {}


def test_templates_are_stored_sealed_as_given(cache: CredentialsCache) -> None:
    cache.replace(credentials())
    with sqlite3.connect(cache.path) as raw:
        stored = dict(raw.execute("SELECT template_id, sealed FROM templates").fetchall())
    assert stored == SEALED
    assert "540" not in repr(cache) and SEALED["a-index"].hex() not in repr(cache)


def test_the_access_state_survives_a_restart(tmp_path: Path) -> None:
    state = AccessState(
        zone_of={"alice": "cleanroom", "bob": "outside"},
        lockouts={"04A1": Lockout((T0, T0 + timedelta(seconds=5))),
                  "04B2": Lockout((), T0 + timedelta(seconds=600))})
    with CredentialsCache(tmp_path / "c.db") as cache:
        cache.save_state(state)
    with CredentialsCache(tmp_path / "c.db") as cache:
        assert cache.load_state() == state
        moved = AccessState(zone_of={"alice": "outside"},
                            lockouts={"04B2": state.lockouts["04B2"]})
        cache.save_state(moved)
        cache.save_state(moved)  # nothing changed: nothing to write
    with CredentialsCache(tmp_path / "c.db") as cache:
        assert cache.load_state() == moved


def test_the_state_is_independent_of_credential_syncs(cache: CredentialsCache) -> None:
    state = AccessState(zone_of={"alice": "cleanroom"})
    cache.save_state(state)
    cache.replace(credentials(version=10))
    cache.remove_person("alice")
    assert cache.load_state() == state


def test_files_are_readable_by_the_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    path.write_bytes(b"")
    path.chmod(0o644)  # left behind by an older install
    with CredentialsCache(path) as cache:
        cache.replace(credentials())
        cache.save_state(AccessState(zone_of={"alice": "cleanroom"}))
        files = [p for p in tmp_path.iterdir() if p.name.startswith("c.db")]
        assert {p.name for p in files} >= {"c.db", "c.db-wal", "c.db-shm"}
        for p in files:
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p.name


def test_the_cache_runs_in_wal_mode(cache: CredentialsCache) -> None:
    with sqlite3.connect(cache.path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_file_that_is_not_a_cache_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    path.write_bytes(b"\x00\xff garbage, not SQLite " * 200)
    with pytest.raises(CacheError, match=f"{path}: not a credentials cache"):
        CredentialsCache(path)


def test_a_cache_of_another_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        raw.execute("INSERT INTO meta VALUES ('schema', '99')")
    with pytest.raises(CacheError, match="schema '99'"):
        CredentialsCache(path)


def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match="cannot open the credentials cache"):
        CredentialsCache(tmp_path / "nowhere" / "c.db")


@pytest.mark.parametrize(("sql", "message"), [
    ("UPDATE cards SET valid_from = 'yesterday' WHERE uid = '04A1'", "cards uid '04A1'"),
    ("UPDATE cards SET valid_from = '2026-01-01T00:00:00' WHERE uid = '04A1'", "cards uid"),
    ("UPDATE people SET access_levels = '{not json' WHERE person_id = 'bob'",
     "people person_id 'bob'"),
    ("UPDATE level_windows SET days = '[9]' WHERE level_id = 'night'",
     "level_windows level_id 'night'"),
    ("UPDATE templates SET sealed = 'text' WHERE template_id = 'b-thumb'",
     "templates template_id 'b-thumb'"),
    ("UPDATE meta SET value = 'x' WHERE key = 'version'", "meta version 'x'"),
])
def test_a_damaged_row_is_named_never_served(tmp_path: Path, sql: str, message: str) -> None:
    path = tmp_path / "c.db"
    with CredentialsCache(path) as cache:
        cache.replace(credentials())
    with sqlite3.connect(path) as raw:
        raw.execute(sql)
    with CredentialsCache(path) as cache, pytest.raises(CacheError, match=message) as caught:
        cache.snapshot()
    for sealed in SEALED.values():
        assert sealed.hex() not in str(caught.value)


def test_a_damaged_state_row_is_named(cache: CredentialsCache) -> None:
    cache.save_state(AccessState(lockouts={"04A1": Lockout((T0,))}))
    with sqlite3.connect(cache.path) as raw:
        raw.execute("UPDATE lockouts SET failures = '[\"soon\"]'")
    with pytest.raises(CacheError, match="lockouts uid '04A1'"):
        cache.load_state()


def test_decisions_read_while_a_sync_writes(cache: CredentialsCache) -> None:
    """The door loop keeps taking snapshots while the sync thread replaces: every snapshot is
    one whole version, never a mix."""
    cache.replace(credentials(version=1))
    seen: list[tuple[int, int]] = []
    stop, started = threading.Event(), threading.Event()

    def door_loop() -> None:
        while not stop.is_set():
            snapshot = cache.snapshot()
            seen.append((snapshot.version, len(snapshot.cards)))
            started.set()
            time_module.sleep(0.0002)  # a door decides now and then, it does not spin

    reader = threading.Thread(target=door_loop)
    reader.start()
    started.wait(5)
    try:
        for version in range(2, 30):
            creds = credentials(version)
            cards = {f"{n:04X}": Card(f"{n:04X}", "alice") for n in range(version)}
            cache.replace(dataclasses.replace(creds, cards=cards))
    finally:
        stop.set()
        reader.join()
    assert len({version for version, _ in seen}) > 1
    assert all(count == (3 if version == 1 else version) for version, count in seen)
    assert cache.version == 29
