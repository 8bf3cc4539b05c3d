"""The door controller's sync against the real collector process: a revoke reaches a connected
door at once (the long poll), a door whose clock is hours off still syncs and decides on the
collector's time without opening a replay window, and a door cut off for longer than the
maximum age fails secure until it syncs again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from audit_events import AuditRecorder
from collector_process import CollectorProcess
from test_credentials_api import add_basics, door_config, enrolled_door, sealed, wait_for

from floor_agent.access import decision
from floor_agent.access.cache import CredentialsCache
from floor_agent.access.config import AccessPolicyConfig, DoorReader, DoorSection
from floor_agent.access.freshness import STALE_REASON, Freshness
from floor_agent.access.model import AccessState, CardRead, Outcome
from floor_agent.access.runner import corrected_clock
from floor_agent.access.sync import CredentialSync, SignedClient
from floor_agent.audit.agent import enroll
from floor_agent.audit.forwarder import pinned_client
from floor_agent.protocol.request_signing import HEADER

ADA_UID = "04A224B2C35E80"
DOOR = DoorSection(door_id="door-a", name="A", zone_inside="a",
                   readers=[DoorReader(reader_id="a-in", pcsc_reader="Virtual PCD 00 00")])
POLICY = AccessPolicyConfig(require_card_proof=False, antipassback="off")
ANYTIME = {"level_id": "anytime", "doors": ["door-a"], "on_holidays": True,
           "windows": [{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                        "start": "00:00", "end": "00:00"}]}
REVOKE_BUDGET_SECONDS = 2.0


@pytest.fixture
def admin(sqlite_collector: CollectorProcess) -> Iterator[httpx.Client]:
    collector = sqlite_collector
    with pinned_client(collector.url, collector.ca, 10) as client:
        client.headers["authorization"] = f"Bearer {collector.api_key('admin')}"
        yield client


def with_template(collector: CollectorProcess, person_id: str) -> int:
    """Enrol a (sealed) finger for `person_id` from a door, as `door enroll` does; the new
    version (a person without a template never gets past the card stage)."""
    door = enrolled_door(collector, f"enrol-{person_id}")
    try:
        return door.upload_template(sealed(person_id, f"t-{person_id}"))
    finally:
        door.close()


def card_stage(cache: CredentialsCache, uid: str, now: datetime) -> Outcome | None:
    """The door's card-stage verdict on `uid` now (None: the card goes on to the finger)."""
    read = CardRead("door-a", "a-in", "in", uid, now)
    return decision.check_card(cache.snapshot(), read, POLICY, AccessState(), now, UTC,
                               door=DOOR)


def test_a_revoke_reaches_a_connected_door_within_two_seconds(
        collector: CollectorProcess, tmp_path: Path) -> None:
    """On SQLite and on PostgreSQL (the watch reads the version from the store)."""
    with pinned_client(collector.url, collector.ca, 10) as admin:
        admin.headers["authorization"] = f"Bearer {collector.api_key('admin')}"
        revoke_while_connected(collector, admin, tmp_path)


def revoke_while_connected(collector: CollectorProcess, admin: httpx.Client,
                           tmp_path: Path) -> None:
    assert admin.post("/api/v1/levels", json=ANYTIME).status_code == 201
    add_basics(admin)
    assert admin.post("/api/v1/people", json={
        "person_id": "p-ada", "name": "Ada Lovelace", "access_levels": ["anytime"]}
                      ).status_code == 201
    version = with_template(collector, "p-ada")
    door = enrolled_door(collector)
    events = AuditRecorder(tmp_path / "events")
    cache = CredentialsCache(tmp_path / "credentials.db")
    # a sync interval far longer than the budget: only the push can make it
    sync = CredentialSync(door, cache.replace, events, interval=60.0, version=cache.version)
    sync.start()
    try:
        wait_for(lambda: cache.version == version)
        now = datetime.now(UTC)
        assert card_stage(cache, ADA_UID, now) is None  # Ada's card opens the card stage
        time.sleep(1.0)  # the door is in its long poll, not in a fetch
        started = time.monotonic()
        assert admin.post("/api/v1/people/p-ada/revoke").status_code == 200
        wait_for(lambda: card_stage(cache, ADA_UID, datetime.now(UTC)) is not None, timeout=10)
        latency = time.monotonic() - started
        outcome = card_stage(cache, ADA_UID, datetime.now(UTC))
        assert outcome is not None and outcome.reason == "card_inactive"
        assert latency <= REVOKE_BUDGET_SECONDS, latency
        assert "door.credentials_updated" in events.kinds()
    finally:
        sync.stop(timeout=5)
        door.close()
        cache.close()
        events.close()


def test_a_door_clock_two_hours_behind_syncs_and_decides_on_the_collectors_time(
        sqlite_collector: CollectorProcess, admin: httpx.Client, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    collector = sqlite_collector
    assert admin.post("/api/v1/levels", json=ANYTIME).status_code == 201
    add_basics(admin)
    expired = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    for path, body in (("/api/v1/people", {"person_id": "p-eve", "name": "Eve",
                                           "access_levels": ["anytime"]}),
                       ("/api/v1/cards", {"uid": "04EEEEEEEEEE01", "person_id": "p-eve",
                                          "keyed": False, "valid_until": expired})):
        response = admin.post(path, json=body)
        assert response.status_code == 201, response.text
    version = with_template(collector, "p-eve")
    config = door_config(collector, "door-skew")
    enroll(config.audit, "door", collector.token("door"), None)
    door = SignedClient.from_config(config.audit)
    behind = 7200.0
    real_time = time.time
    # this process is the controller, and its clock is 2 h behind (the collector's is right)
    monkeypatch.setattr(time, "time", lambda: real_time() - behind)
    sent: list[httpx.Request] = []
    door.client.event_hooks = {"request": [sent.append]}
    events = AuditRecorder(tmp_path / "events")
    cache = CredentialsCache(tmp_path / "credentials.db")
    sync = CredentialSync(door, cache.replace, events, interval=60.0)  # alarm past 10 s
    try:
        assert sync.step() is True, sync.last_error  # refused once for its time, then signed
        assert cache.version == version              # with the collector's time and taken
        skew = [e for e in events.items if e[0] == "door.clock_skew"]
        assert len(skew) == 1 and skew[0][2] == "warning"
        assert abs(skew[0][3]["offset_seconds"] - behind) <= 2
        assert "door.sync_failed" not in events.kinds()
        assert abs(door.corrected_time() - real_time()) < 2
        # Eve's card expired an hour ago: on the door's own clock it is still valid; the
        # controller decides on the corrected clock, and there it has expired
        raw = datetime.fromtimestamp(time.time(), UTC)
        assert card_stage(cache, "04EEEEEEEEEE01", raw) is None
        outcome = card_stage(cache, "04EEEEEEEEEE01", corrected_clock(door)())
        assert outcome is not None and outcome.reason == "card_expired"

        # a replay of the accepted (corrected) request is still refused, and so is the
        # request the door first signed on its own clock
        signed = [r for r in sent if HEADER in r.headers]
        assert len(signed) == 2
        first, accepted = signed
        for request, expected in ((accepted, "replayed"), (first, "s old")):
            replay = door.client.get(request.url.raw_path.decode(),
                                     headers={HEADER: request.headers[HEADER]})
            assert replay.status_code == 401 and expected in replay.json()["detail"]

        assert sync.step() is True  # later syncs sign right the first time: no refusal
        assert len([r for r in sent if HEADER in r.headers]) == 5  # 2 replays + this one
        monkeypatch.setattr(time, "time", real_time)  # the clock is fixed: the alarm ends
        assert sync.step() is True
        resolved = [e for e in events.items if e[0] == "door.clock_skew_resolved"]
        assert len(resolved) == 1 and abs(resolved[0][3]["offset_seconds"]) <= 2
    finally:
        door.close()
        cache.close()
        events.close()


class Clocks:
    def __init__(self) -> None:
        self.boot = 1000.0

    def __call__(self) -> float:
        return self.boot


def test_a_door_cut_off_longer_than_the_max_age_fails_secure_until_it_syncs(
        sqlite_collector: CollectorProcess, admin: httpx.Client, tmp_path: Path) -> None:
    collector = sqlite_collector
    assert admin.post("/api/v1/levels", json=ANYTIME).status_code == 201
    add_basics(admin)
    assert admin.post("/api/v1/people", json={
        "person_id": "p-ada", "name": "Ada Lovelace", "access_levels": ["anytime"]}
                      ).status_code == 201
    version = with_template(collector, "p-ada")
    door = enrolled_door(collector, "door-cut")
    events = AuditRecorder(tmp_path / "events")
    cache = CredentialsCache(tmp_path / "credentials.db")
    boot = Clocks()
    max_age = 3600.0
    freshness = Freshness(cache, max_age, events, door.agent_id, boot_id=lambda: "b",
                          boot_clock=boot, version=lambda: cache.version)
    sync = CredentialSync(door, cache.replace, events, interval=0.2, version=cache.version,
                          on_synced=freshness.synced, on_tick=freshness.tick)
    read = CardRead("door-a", "a-in", "in", ADA_UID, datetime.now(UTC))

    def gate() -> Callable[[], bool]:
        return lambda: freshness.gate(read) is None

    sync.start()
    try:
        wait_for(lambda: cache.version == version)
        assert gate()()
        collector.stop()  # the collector is gone (or the link cut)
        wait_for(lambda: sync.last_error is not None)
        boot.boot += max_age - 10
        time.sleep(0.5)  # failed rounds do not refresh the cache
        assert gate()()
        boot.boot += 20
        wait_for(lambda: "door.credentials_stale" in events.kinds())  # the sync thread's tick
        outcome = freshness.gate(read)
        assert outcome is not None and outcome.reason == STALE_REASON
        assert card_stage(cache, ADA_UID, datetime.now(UTC)) is None  # the cache alone would

        collector.start()
        wait_for(lambda: "door.credentials_fresh" in events.kinds())
        assert gate()()
        kinds = events.kinds()
        assert kinds.count("door.credentials_stale") == 1
        assert kinds.index("door.sync_failed") < kinds.index("door.credentials_stale") \
            < kinds.index("door.sync_recovered")
    finally:
        sync.stop(timeout=5)
        door.close()
        cache.close()
        events.close()


def test_a_corrected_clock_that_steps_back_never_signs_the_same_message_twice() -> None:
    """The offset is re-measured on every answer, so the corrected clock can step back a few
    ms; two requests for the same target must still differ in ts (else the collector, rightly,
    refuses the second as a replay). Only time-refused requests do not move the floor."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from floor_agent.protocol.request_signing import TIME_HEADER, parse_header

    collector_ms = [1_780_000_000_000]
    stamps: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        ts_ms = parse_header(request.headers[HEADER]).ts_ms
        stamps.append(ts_ms)
        fresh = abs(ts_ms - collector_ms[0]) <= 60_000
        return httpx.Response(200 if fresh else 401, headers={TIME_HEADER: str(collector_ms[0])})

    wall = [1_780_000_000.000]
    client = SignedClient(httpx.Client(transport=httpx.MockTransport(answer),
                                       base_url="https://collector"),
                          Ed25519PrivateKey.generate(), "door-1", wall=lambda: wall[0])
    client.request("GET", "/api/v1/credentials?since=1")
    collector_ms[0] -= 5  # the next answer says the collector is 5 ms behind what we thought
    client.request("GET", "/api/v1/credentials?since=1")
    client.request("GET", "/api/v1/credentials?since=1")  # same wall time, offset -5 ms
    assert stamps == sorted(set(stamps)) and len(stamps) == 3
    # the collector's own clock is set back 5 minutes: refused as from the future once, then
    # signed on its time (the floor does not hold the door in the collector's future)
    collector_ms[0] -= 300_000
    assert client.request("GET", "/api/v1/credentials?since=1").status_code == 200
    assert len(stamps) == 5 and abs(stamps[-1] - collector_ms[0]) < 1000
    client.close()


def test_without_the_time_header_the_http_date_gives_the_offset() -> None:
    """An older collector (no X-Floor-Time) still says its time in the Date header: to the
    second, so the offset is known within about a second; a 5xx (a proxy's page) is not used."""
    import email.utils

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    collector_s = 1_780_007_200.0  # the controller is 2 h behind
    status = [200]

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status[0], headers={
            "date": email.utils.formatdate(collector_s, usegmt=True)})

    client = SignedClient(httpx.Client(transport=httpx.MockTransport(answer),
                                       base_url="https://collector"),
                          Ed25519PrivateKey.generate(), "door-1", wall=lambda: 1_780_000_000.0)
    status[0] = 502
    client.request("GET", "/api/v1/credentials")
    assert client.offset_ms is None
    status[0] = 200
    client.request("GET", "/api/v1/credentials")
    assert client.offset_ms is not None and abs(client.offset_ms - 7_200_000) <= 1000
    client.close()
