"""Door credentials through the real collector process over HTTPS (SQLite and PostgreSQL).

Admins change people, cards, levels and holidays with an API key; a door controller fetches
the snapshot and uploads sealed templates with its agent signature; revoking a person removes
their templates from the store and from the next snapshot; the sync thread keeps the last
snapshot through an outage and says so once. Plus the admin CLI and the wire format's refusals.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from audit_events import spooled
from collector_process import CollectorProcess

from floor_agent import cli
from floor_agent.access import templates
from floor_agent.access.cache import CredentialsCache
from floor_agent.access.config import DoorConfig
from floor_agent.access.sitekey import SiteKey
from floor_agent.access.sync import CredentialSync, SignedClient
from floor_agent.audit.agent import enroll
from floor_agent.audit.forwarder import pinned_client
from floor_agent.config.audit import AuditClientConfig
from floor_agent.protocol import credentials as wire
from floor_agent.protocol.credentials import Template
from floor_agent.protocol.request_signing import HEADER, sign_header

SITE = SiteKey(bytes(range(32)))
LEVEL = {"level_id": "cleanroom", "doors": ["door-a"], "on_holidays": False,
         "windows": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "07:00",
                      "end": "19:00"}]}
ADA = {"person_id": "p-ada", "name": "Ada Lovelace", "access_levels": ["cleanroom"],
       "duress_fingers": [10]}
CARD = {"uid": "04 a2 24 b2 c3 5e 80", "person_id": "p-ada",
        "valid_until": "2027-01-01T00:00:00+00:00"}


def door_config(collector: CollectorProcess, name: str) -> DoorConfig:
    """A door controller's config pointing at the collector, written to ROOT/NAME.yaml."""
    config = DoorConfig(audit=AuditClientConfig(
        agent_id=name, state_dir=collector.root / name, collector_url=collector.url,
        ca_cert=collector.ca, request_timeout_seconds=3))
    (collector.root / f"{name}.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return config


def enrolled_door(collector: CollectorProcess, name: str = "door-1") -> SignedClient:
    config = door_config(collector, name)
    enroll(config.audit, "door", collector.token("door"), None)
    return SignedClient.from_config(config.audit)


@pytest.fixture
def admin(collector: CollectorProcess) -> Iterator[httpx.Client]:
    with pinned_client(collector.url, collector.ca, 10) as client:
        client.headers["authorization"] = f"Bearer {collector.api_key('admin')}"
        yield client


def sealed(person_id: str, template_id: str) -> Template:
    clear = bytes([7]) * 512  # a fingerprint module's template size
    return Template(template_id, person_id, 2,
                    templates.seal(SITE.template_key(), person_id, template_id, clear))


def add_basics(admin: httpx.Client) -> int:
    for path, body in (("/api/v1/levels", LEVEL), ("/api/v1/people", ADA),
                       ("/api/v1/people", {"person_id": "p-bob", "name": "Bob"}),
                       ("/api/v1/cards", CARD), ("/api/v1/holidays",
                                                 {"date": "2026-12-25", "name": "Christmas"})):
        response = admin.post(path, json=body)
        assert response.status_code == 201, response.text
    return int(response.json()["version"])


def test_admin_changes_reach_the_door_and_revoke_removes_templates(
        collector: CollectorProcess, admin: httpx.Client) -> None:
    assert add_basics(admin) == 5
    people = admin.get("/api/v1/people").json()
    assert [p["person_id"] for p in people["people"]] == ["p-ada", "p-bob"]
    assert people["people"][0]["cards"] == [{"uid": "04A224B2C35E80", "active": True}]

    door = enrolled_door(collector)
    snap = door.fetch_credentials()
    assert snap is not None and snap.version == 5
    assert snap.cards["04A224B2C35E80"].person_id == "p-ada"
    assert snap.levels["cleanroom"].doors == {"door-a"}
    assert snap.holidays == {date(2026, 12, 25)}
    assert door.fetch_credentials(since=5) is None  # current: 304, no body

    template = sealed("p-ada", "t-ada-2")
    assert door.upload_template(template) == 6
    snap = door.fetch_credentials(since=5)
    assert snap is not None and snap.templates["p-ada"] == (template,)
    # what the collector holds is the sealed form; only the site key opens it
    assert templates.unseal(SITE.template_key(), "p-ada", "t-ada-2",
                            snap.templates["p-ada"][0].sealed) == bytes([7]) * 512
    listed = admin.get("/api/v1/people").json()["people"][0]
    assert listed["templates"][0]["template_id"] == "t-ada-2" and "sealed" not in str(listed)

    revoked = admin.post("/api/v1/people/p-ada/revoke")
    assert revoked.status_code == 200
    assert revoked.json() == {"person_id": "p-ada", "cards_deactivated": 1,
                              "templates_deleted": 1, "version": 7}
    store = collector.store()
    try:
        with store._read() as cur:  # type: ignore[attr-defined]
            cur.execute("SELECT count(*) FROM templates")
            assert cur.fetchone()[0] == 0  # deleted, not flagged
        assert store.credential_log()[0]["action"] == "person.revoked"
        assert store.list_alerts() == []  # an admin action, not an alert
    finally:
        store.close()
    log = admin.get("/api/v1/credentials/log", params={"limit": 2}).json()["log"]
    assert [(e["action"], e["actor"], e["version"]) for e in log] == \
        [("person.revoked", "admin", 7), ("template.added", "door-1", 6)]
    snap = door.fetch_credentials(since=6)
    assert snap is not None and snap.version == 7
    assert "p-ada" not in snap.templates
    assert not snap.people["p-ada"].active and not snap.cards["04A224B2C35E80"].active
    # a revoked person cannot be given a template again
    response = door.request("POST", "/api/v1/templates",
                            wire.template_to_json(sealed("p-ada", "t-ada-3")))
    assert response.status_code == 409 and "revoked" in response.json()["detail"]
    assert admin.post("/api/v1/people/p-ghost/revoke").status_code == 404
    door.close()


def test_only_a_fresh_signature_of_a_door_agent_gets_the_snapshot(
        collector: CollectorProcess, admin: httpx.Client) -> None:
    door = enrolled_door(collector)
    client, key = door.client, door._key
    path = "/api/v1/credentials"

    def get(header: str | None, target: str = path) -> httpx.Response:
        return client.get(target, headers={HEADER: header} if header is not None else {})

    assert get(sign_header(key, "door-1", "GET", path, b"")).status_code == 200
    now_ms = int(time.time() * 1000)
    refusals = {
        "missing X-Floor-Agent": get(None),
        "expected agent_id=": get("agent_id=door-1;ts=1;sig=nope"),
        "s old": get(sign_header(key, "door-1", "GET", path, b"", now_ms - 120_000)),
        "in the future": get(sign_header(key, "door-1", "GET", path, b"", now_ms + 120_000)),
        "does not verify": get(sign_header(key, "door-1", "GET", path + "?since=1", b""),
                               path),  # signed for another target
        "not enrolled": get(sign_header(key, "door-9", "GET", path, b"")),
    }
    for expected, response in refusals.items():
        assert response.status_code == 401, expected
        assert expected in response.json()["detail"]
    once = sign_header(key, "door-1", "GET", path, b"")
    assert get(once).status_code == 200
    replayed = get(once)
    assert replayed.status_code == 401 and "replayed" in replayed.json()["detail"]
    # an API key is not a door controller
    assert admin.get(path).status_code == 401
    # a signed body that was changed on the way does not verify
    body = wire.template_to_json(sealed("p-x", "t-1"))
    header = sign_header(key, "door-1", "POST", "/api/v1/templates", b"{}")
    assert client.post("/api/v1/templates", json=body,
                       headers={HEADER: header}).status_code == 401
    # an enrolled agent of another role is refused
    workstation = collector.agent_config("ws-1")
    enroll(workstation.audit, "workstation", collector.token("workstation"), None)
    other = SignedClient.from_config(workstation.audit, "workstation")
    response = other.request("GET", path)
    assert response.status_code == 403 and "role 'workstation'" in response.json()["detail"]
    other.close()
    door.close()


def test_bad_records_are_refused_naming_the_field(collector: CollectorProcess,
                                                  admin: httpx.Client) -> None:
    add_basics(admin)
    cases: list[tuple[str, Any, int, str]] = [
        ("/api/v1/people", {"person_id": "p x", "name": "X"}, 422, "person_id:"),
        ("/api/v1/people", {"person_id": "p-x", "name": "X", "access_levels": ["nope"]}, 422,
         "access_levels[0]: unknown access level"),
        ("/api/v1/people", {"person_id": "p-x"}, 422, "missing key(s) ['name']"),
        ("/api/v1/cards", {"uid": "04A2", "person_id": "p-bob"}, 422, "uid: expected a UID"),
        ("/api/v1/cards", {"uid": "DEADBEEF", "person_id": "p-ghost"}, 422,
         "person_id: unknown person"),
        ("/api/v1/levels", LEVEL | {"windows": [{"days": ["xyz"], "start": "07:00",
                                                 "end": "08:00"}]}, 422, "windows[0].days[0]"),
        ("/api/v1/levels", LEVEL | {"windows": [{"days": ["mon"], "start": "25:00",
                                                 "end": "08:00"}]}, 422, "windows[0].start"),
        ("/api/v1/holidays", {"date": "2026-02-30"}, 422, "date: not a calendar date"),
    ]
    for path, body, status, expected in cases:
        response = admin.post(path, json=body)
        assert response.status_code == status, (path, body, response.text)
        assert expected in response.json()["detail"], response.json()
    garbage = admin.post("/api/v1/people", content=b"\xff\x00{not json")
    assert garbage.status_code == 400 and "not valid JSON" in garbage.json()["detail"]
    huge = admin.post("/api/v1/people", content=b"x" * 100_000)
    assert huge.status_code == 413
    door = enrolled_door(collector)
    too_big = {"template_id": "t-big", "person_id": "p-bob", "finger": 1,
               "sealed": base64.b64encode(bytes(wire.MAX_SEALED_BYTES + 1)).decode()}
    response = door.request("POST", "/api/v1/templates", too_big)
    assert response.status_code == 422 and "sealed: larger than" in response.json()["detail"]
    # nothing refused changed the version; admin routes need the API key
    assert admin.get("/api/v1/people").json()["version"] == 5
    assert door.request("GET", "/api/v1/people").status_code == 401
    door.close()


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_sync_keeps_the_last_snapshot_through_an_outage(sqlite_collector: CollectorProcess,
                                                        tmp_path: Path) -> None:
    collector = sqlite_collector
    with pinned_client(collector.url, collector.ca, 10) as admin:
        admin.headers["authorization"] = f"Bearer {collector.api_key('admin')}"
        version = add_basics(admin)
    door = enrolled_door(collector)
    events: list[tuple[str, str, dict[str, Any]]] = []
    cache = CredentialsCache(tmp_path / "credentials.db")
    sync = CredentialSync(door, cache.replace,
                          spooled(lambda kind, subject, severity, **data: events.append(
                              (kind, severity, data))),
                          interval=0.1, version=cache.version)
    sync.start()
    try:
        wait_for(lambda: cache.version == version)
        assert cache.snapshot().people["p-ada"].name == "Ada Lovelace"
        assert [e[0] for e in events] == ["door.credentials_updated"]

        collector.stop()
        wait_for(lambda: sync.last_error is not None)
        failures_seen = time.monotonic()
        wait_for(lambda: time.monotonic() - failures_seen > 0.5)  # several failed rounds
        assert [e[0] for e in events].count("door.sync_failed") == 1
        failed = next(e for e in events if e[0] == "door.sync_failed")
        assert failed[1] == "warning" and failed[2]["cached_version"] == version
        assert "unreachable" in failed[2]["reason"]
        assert cache.snapshot().cards["04A224B2C35E80"].active  # still deciding from it

        store = collector.store()  # the admin revokes while the door cannot hear
        try:
            revoked = store.revoke_person("p-ada", "admin", "2026-11-29T09:00:00.000000Z")
        finally:
            store.close()
        assert revoked is not None
        collector.start()
        wait_for(lambda: cache.version == revoked.version)
        assert not cache.snapshot().people["p-ada"].active
        # the events follow the cache update (the snapshot is in before it is recorded)
        wait_for(lambda: "door.credentials_updated" in [e[0] for e in events[1:]])
        kinds = [e[0] for e in events]
        assert kinds.count("door.sync_recovered") == 1 and kinds.count("door.sync_failed") == 1
        assert kinds.index("door.sync_recovered") > kinds.index("door.sync_failed")
    finally:
        sync.stop(timeout=5)
        door.close()
        cache.close()
    assert not sync.alive


def test_a_snapshot_the_cache_refuses_is_fetched_again(sqlite_collector: CollectorProcess
                                                       ) -> None:
    collector = sqlite_collector
    with pinned_client(collector.url, collector.ca, 10) as admin:
        admin.headers["authorization"] = f"Bearer {collector.api_key('admin')}"
        version = add_basics(admin)
    config = door_config(collector, "door-2")
    enroll(config.audit, "door", collector.token("door"), None)
    events: list[str] = []
    received: list[int] = []

    def replace(credentials: Any) -> None:
        if not received:
            received.append(-1)
            raise OSError("disk full")
        received.append(credentials.version)

    sync = CredentialSync.from_config(config, replace,
                                      spooled(lambda kind, *_, **__: events.append(kind)))
    assert sync.interval == config.access.sync_interval_seconds
    assert sync.step() is False and sync.version is None
    assert "local cache refused the snapshot: disk full" in str(sync.last_error)
    assert sync.step() is True and sync.version == version and received[-1] == version
    assert sync.step() is True and received[-1] == version and len(received) == 2  # 304
    assert events == ["door.sync_failed", "door.sync_recovered", "door.credentials_updated"]
    sync.client.close()


def test_admin_cli_round_trip(collector: CollectorProcess, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    door_config(collector, "door-cli")
    config = str(collector.root / "door-cli.yaml")
    key_file = tmp_path / "api.key"
    key_file.write_text(collector.api_key("cli") + "\n")

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(["door", *argv, "--config", config, "--api-key-file", str(key_file)])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = run("levels", "add", "--id", "day", "--door", "door-a",
                       "--window", "mon-fri 07:00-19:00", "--window", "sat 22:00-06:00")
    assert code == 0 and "access level day saved: 1 door(s), 2 window(s)" in out
    assert run("people", "add", "--id", "p-cli", "--name", "Cli Person", "--level", "day")[0] == 0
    assert run("cards", "add", "--uid", "04:A2:24:B2", "--person", "p-cli")[0] == 0
    assert run("holidays", "add", "2026-12-26", "--name", "Boxing Day")[0] == 0
    code, out, _ = run("people", "list")
    assert code == 0 and "p-cli" in out and "04A224B2" in out and "version 4" in out
    code, out, _ = run("people", "revoke", "p-cli")
    assert code == 0 and "0 fingerprint template(s) deleted" in out
    code, _, err = run("cards", "add", "--uid", "XYZ", "--person", "p-cli")
    assert code == 2 and "uid: expected hex digits" in err
    code, _, err = run("levels", "add", "--id", "x", "--door", "d", "--window", "someday 1-2")
    assert code == 2 and "--window 'someday 1-2'" in err
    code, _, err = run("people", "revoke", "p-nobody")
    assert code == 1 and "404" in err
    key_file.write_text("fa-api-wrong\n")
    code, _, err = run("people", "list")
    assert code == 1 and "401" in err
    monkeypatch.setenv("FLOOR_AGENT_API_KEY", "")
    code = cli.main(["door", "--config", config, "people", "list"])
    assert code == 2 and "no API key" in capsys.readouterr().err


def test_wire_format_refuses_garbage_and_round_trips() -> None:
    for bad, expected in ((None, "snapshot: expected a JSON object"),
                          ({"version": 1}, "missing key(s)"),
                          ({"version": -1, "people": [], "cards": [], "levels": [],
                            "holidays": [], "templates": []}, "version:"),
                          ({"version": 1, "people": [], "cards": [CARD], "levels": [],
                            "holidays": [], "templates": []}, "cards[0].person_id: unknown"),
                          ({"version": 1, "people": [ADA, ADA], "cards": [], "levels": [],
                            "holidays": [], "templates": []}, "people[1].person_id"),
                          ({"version": 1, "people": [ADA], "cards": [], "levels": [],
                            "holidays": [], "templates": [{"template_id": "t", "person_id":
                                                           "p-ada", "finger": 11,
                                                           "sealed": "AA=="}]},
                           "templates[0].finger")):
        with pytest.raises(wire.CredentialError, match=re.escape(expected)):
            wire.credentials_from_json(bad)
    assert wire.normalize_uid("04:a2:24:b2:c3:5e:80") == "04A224B2C35E80"
    assert wire.parse_window("fri-mon 22:00-06:00")["days"] == ["mon", "fri", "sat", "sun"]
    assert wire.parse_window("daily 00:00-23:59")["days"] == list(wire.WEEKDAYS)
    with pytest.raises(wire.CredentialError, match="sealed: not valid base64"):
        wire.decode_sealed("not base64!")
    good = {"version": 3, "people": [ADA], "cards": [CARD], "levels": [LEVEL],
            "holidays": ["2026-12-25"], "templates": []}
    snapshot = wire.credentials_from_json(good)
    assert wire.credentials_from_json(wire.credentials_to_json(snapshot)) == snapshot
    assert wire.credentials_to_json(snapshot)["cards"][0]["valid_until"] == \
        "2027-01-01T00:00:00Z"
