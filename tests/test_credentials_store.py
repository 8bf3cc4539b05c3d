"""Door credentials in the Store, on SQLite and a real PostgreSQL 15: the same contract on both.

Every change bumps the version; revoking a person deactivates them and their cards and deletes
their templates (the rows are gone); the snapshot is what controllers get.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from pathlib import Path

import pytest
from postgres_server import PostgresServer, postgres_server  # noqa: F401  (fixture)

from floor_agent.protocol import credentials as wire
from floor_agent.protocol.credentials import AccessLevel, Card, Person, Template, TimeWindow
from floor_agent.store import open_store
from floor_agent.store.interface import RecordConflict, Store, UnknownRecord

NOW = "2026-11-29T08:00:00.000000Z"
OFFICE = AccessLevel("office", frozenset({"door-a", "door-b"}),
                     (TimeWindow(frozenset(range(5)), time(7), time(19)),
                      TimeWindow(frozenset({5}), time(22), time(6))))
ADA = Person("p-ada", "Ada Lovelace", True, ("office",), frozenset({10}))
CARD = Card("04A224B2C35E80", "p-ada", valid_from=datetime(2026, 1, 1, tzinfo=UTC),
            valid_until=datetime(2027, 1, 1, tzinfo=UTC))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/collector.db"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.new_database(icu_locale="en-US")
    opened = open_store(url)
    try:
        yield opened
    finally:
        opened.close()


def populate(store: Store) -> int:
    store.put_level(OFFICE, "admin", NOW)
    store.put_person(ADA, "admin", NOW)
    store.put_person(Person("p-bob", "Bob"), "admin", NOW)
    store.put_card(CARD, "admin", NOW)
    store.put_card(Card("DEADBEEF", "p-bob", keyed=False), "admin", NOW)
    store.put_holiday(date(2026, 12, 25), "Christmas", "admin", NOW)
    store.add_template(Template("t-ada-2", "p-ada", 2, b"\x01sealed-one"), "door-1", NOW)
    return store.add_template(Template("t-ada-7", "p-ada", 7, b"\x01sealed-two"), "door-1", NOW)


def test_every_change_bumps_the_version_and_the_snapshot_has_everything(store: Store) -> None:
    assert store.credentials_version() == 0
    assert store.credentials_snapshot().version == 0
    version = populate(store)
    assert version == 8 == store.credentials_version()
    snap = store.credentials_snapshot()
    assert snap.version == 8
    assert snap.people == {"p-ada": ADA, "p-bob": Person("p-bob", "Bob")}
    assert snap.cards["04A224B2C35E80"] == CARD
    assert snap.cards["DEADBEEF"].keyed is False
    assert snap.levels == {"office": OFFICE}
    assert snap.holidays == {date(2026, 12, 25)}
    assert [t.template_id for t in snap.templates["p-ada"]] == ["t-ada-2", "t-ada-7"]
    assert snap.templates["p-ada"][0].sealed == b"\x01sealed-one"
    # the snapshot survives its own wire form unchanged
    assert wire.credentials_from_json(wire.credentials_to_json(snap)) == snap


def test_updates_replace_records_in_place(store: Store) -> None:
    populate(store)
    store.put_person(Person("p-bob", "Robert", access_levels=("office",)), "admin", NOW)
    store.put_card(Card("DEADBEEF", "p-ada", active=False), "admin", NOW)
    snap = store.credentials_snapshot()
    assert snap.people["p-bob"].name == "Robert"
    assert snap.cards["DEADBEEF"].person_id == "p-ada" and not snap.cards["DEADBEEF"].active
    assert len(snap.people) == 2 and len(snap.cards) == 2


def test_references_must_exist(store: Store) -> None:
    with pytest.raises(UnknownRecord, match=r"access_levels\[0\]: unknown access level"):
        store.put_person(ADA, "admin", NOW)
    with pytest.raises(UnknownRecord, match="person_id: unknown person 'p-ghost'"):
        store.put_card(Card("DEADBEEF", "p-ghost"), "admin", NOW)
    with pytest.raises(UnknownRecord, match="person_id"):
        store.add_template(Template("t-1", "p-ghost", 1, b"x"), "door-1", NOW)
    assert store.credentials_version() == 0  # nothing refused was counted
    populate(store)
    with pytest.raises(RecordConflict, match="t-ada-2.*already exists"):
        store.add_template(Template("t-ada-2", "p-ada", 3, b"y"), "door-1", NOW)


def test_revoke_deletes_templates_and_deactivates_person_and_cards(store: Store) -> None:
    before = populate(store)
    result = store.revoke_person("p-ada", "admin", NOW)
    assert result is not None
    assert (result.version, result.cards_deactivated, result.templates_deleted) == \
        (before + 1, 1, 2)
    snap = store.credentials_snapshot()
    assert snap.people["p-ada"].active is False
    assert snap.cards["04A224B2C35E80"].active is False
    assert "p-ada" not in snap.templates
    assert snap.cards["DEADBEEF"].active  # somebody else's card is untouched
    with store._read() as cur:  # type: ignore[attr-defined]  # the rows are gone, not flagged
        cur.execute("SELECT count(*) FROM templates")
        assert cur.fetchone()[0] == 0
    listed = {p["person_id"]: p for p in store.list_people()}
    assert listed["p-ada"]["revoked_at"] == NOW and listed["p-ada"]["templates"] == []
    with pytest.raises(RecordConflict, match="revoked"):
        store.add_template(Template("t-new", "p-ada", 1, b"z"), "door-1", NOW)
    assert store.revoke_person("p-ghost", "admin", NOW) is None
    log = store.credential_log()
    assert log[0]["action"] == "person.revoked" and log[0]["actor"] == "admin"
    assert log[0]["detail"] == {"cards_deactivated": 1, "templates_deleted": 2}
    assert all("sealed" not in str(entry) for entry in log)


def test_list_people_shows_cards_and_template_ids_never_sealed_bytes(store: Store) -> None:
    populate(store)
    ada = next(p for p in store.list_people() if p["person_id"] == "p-ada")
    assert ada["cards"] == [{"uid": "04A224B2C35E80", "active": True}]
    assert [(t["template_id"], t["finger"]) for t in ada["templates"]] == \
        [("t-ada-2", 2), ("t-ada-7", 7)]
    assert "sealed" not in str(ada)
    assert ada["duress_fingers"] == [10] and ada["access_levels"] == ["office"]


def test_a_reactivated_person_is_no_longer_marked_revoked(store: Store) -> None:
    populate(store)
    store.revoke_person("p-bob", "admin", NOW)
    store.put_person(Person("p-bob", "Bob"), "admin", NOW)
    bob = next(p for p in store.list_people() if p["person_id"] == "p-bob")
    assert bob["active"] and bob["revoked_at"] is None
    assert bob["cards"] == [{"uid": "DEADBEEF", "active": False}]  # cards stay off
