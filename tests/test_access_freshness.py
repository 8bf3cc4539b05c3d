"""Credentials age (access/freshness.py): a door that cannot sync for longer than the maximum
age denies every card but the emergency list, whatever its wall clock says, and a restart
does not make its cache fresh again.

The door here is in process: a DoorRunner with the simulated door I/O and the fingerprint
module simulator on a pty (the card read is handed to it as a reader's thread would), the
credentials cache on disk, events through a real Spool (AuditRecorder). The clocks the age is
read from are the test's, so hours pass in no time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from datetime import time as clock
from pathlib import Path

import pytest
from audit_events import AuditRecorder

from floor_agent.access import templates
from floor_agent.access.cache import CredentialsCache
from floor_agent.access.config import (
    AccessPolicyConfig,
    DoorReader,
    DoorSection,
    FingerprintConfig,
)
from floor_agent.access.controller import AccessController, DoorRunner
from floor_agent.access.door_io import SimulatedDoorIo
from floor_agent.access.fingerprint import FingerprintModule
from floor_agent.access.freshness import (
    CHECKPOINT_SECONDS,
    STALE_REASON,
    Freshness,
    SyncMark,
    age_now,
)
from floor_agent.access.model import CardRead
from floor_agent.access.sitekey import SiteKey
from floor_agent.protocol.credentials import (
    AccessLevel,
    Card,
    Credentials,
    Person,
    Template,
    TimeWindow,
)
from floor_agent.simulated.fingerprint_module import SimulatedModule, char_file

SITE = SiteKey(bytes(range(32)))
MAX_AGE = 3600.0
FINGERS = {"p-ada": b"ada/right-index", "p-sec": b"guard/right-index"}
ADA_UID, GUARD_UID = "04A224B2C35E80", "04EEEEEEEEEE01"
POLICY = AccessPolicyConfig(require_card_proof=False, antipassback="off")


def credentials(version: int = 3) -> Credentials:
    always = AccessLevel("always", frozenset({"lab"}),
                         (TimeWindow(frozenset(range(7)), clock(0), clock(0)),))
    people = {pid: Person(pid, pid, True, ("always",)) for pid in FINGERS}
    cards = {ADA_UID: Card(ADA_UID, "p-ada", keyed=False),
             GUARD_UID: Card(GUARD_UID, "p-sec", keyed=False)}
    sealed = {pid: (Template(f"t-{pid}", pid, 1, templates.seal(
        SITE.template_key(), pid, f"t-{pid}", char_file(features, 10**6))),)
        for pid, features in FINGERS.items()}
    return Credentials(people, cards, {"always": always}, frozenset(), sealed, version)


@dataclass
class Clocks:
    """The controller's clocks as the test sets them: boot id, boot clock, wall clock."""

    boot_id: str = "boot-1"
    boot: float = 1000.0
    wall: float = 1_780_000_000.0


class Door:
    """One door in process, its freshness gate on the test's clocks."""

    def __init__(self, root: Path, clocks: Clocks, module: SimulatedModule) -> None:
        self.clocks = clocks
        self.module = module
        self.events = AuditRecorder(root / "events")
        self.cache = CredentialsCache(root / "credentials.db")
        self.controller = AccessController(POLICY, SITE, self.cache, self.events, UTC)
        self.controller.freshness = self.freshness()
        section = DoorSection(
            door_id="lab", name="Lab", zone_inside="lab",
            readers=[DoorReader(reader_id="lab-in", pcsc_reader="Virtual PCD 00 00")],
            fingerprint=FingerprintConfig(port=module.port, capture_timeout_seconds=1.0,
                                          response_timeout_seconds=0.5))
        self.finger = FingerprintModule(module.port, response_timeout=0.5)
        self.runner = DoorRunner(self.controller, section, SimulatedDoorIo(), self.finger)
        self.shutdown = threading.Event()
        self.runner.start(self.shutdown)

    def freshness(self) -> Freshness:
        """What AccessRunner.start builds: a restart builds it again over the same cache."""
        return Freshness(self.cache, MAX_AGE, self.events, "door-1", [GUARD_UID],
                         boot_id=lambda: self.clocks.boot_id,
                         boot_clock=lambda: self.clocks.boot, wall=lambda: self.clocks.wall,
                         version=lambda: self.cache.version)

    def present(self, uid: str) -> tuple[bool, str]:
        person = self.cache.snapshot().cards[uid].person_id
        self.module.place(FINGERS[person])
        try:
            outcome = self.runner.handle(CardRead("lab", "lab-in", "in", uid,
                                                  datetime.now(UTC)))
        finally:
            self.module.place(None)
        return outcome.granted, outcome.reason

    def close(self) -> None:
        self.shutdown.set()
        self.runner.stop()
        self.finger.close()
        self.cache.close()
        self.events.close()


@pytest.fixture
def door(tmp_path: Path) -> Iterator[Door]:
    with SimulatedModule() as module:
        door = Door(tmp_path, Clocks(), module)
        try:
            yield door
        finally:
            door.close()


def test_a_door_offline_longer_than_the_max_age_denies_all_but_the_emergency_list(
        door: Door) -> None:
    clocks = door.clocks
    door.cache.replace(credentials())
    freshness = door.controller.freshness
    assert freshness is not None
    freshness.synced()  # the sync thread's last verified answer before the outage
    assert door.present(ADA_UID) == (True, "granted")

    clocks.boot += MAX_AGE - 60  # nearly an hour without a sync: still trusted
    assert door.present(ADA_UID) == (True, "granted")
    clocks.boot += 61
    assert door.present(ADA_UID) == (False, STALE_REASON)
    assert door.present(GUARD_UID) == (True, "granted")  # on the emergency list
    assert door.present(ADA_UID) == (False, STALE_REASON)
    assert not door.runner.io.read_position()
    stale = [e for e in door.events.items if e[0] == "door.credentials_stale"]
    assert len(stale) == 1  # alarmed once, not per card
    assert stale[0][2] == "critical"
    assert stale[0][3] == {"age_seconds": int(MAX_AGE) + 1, "max_age_seconds": int(MAX_AGE),
                           "cached_version": 3, "emergency_cards": 1}
    denied = [e for e in door.events.items if e[0] == "door.denied"]
    assert denied[-1][3]["reason"] == STALE_REASON and denied[-1][3]["uid"] == ADA_UID

    door.cache.replace(credentials(4))
    freshness.synced()  # the collector is back
    assert door.present(ADA_UID) == (True, "granted")
    fresh = [e for e in door.events.items if e[0] == "door.credentials_fresh"]
    assert len(fresh) == 1 and fresh[0][3]["version"] == 4


def test_a_wall_clock_set_back_does_not_make_the_cache_younger(door: Door) -> None:
    clocks = door.clocks
    door.cache.replace(credentials())
    freshness = door.controller.freshness
    assert freshness is not None
    freshness.synced()
    clocks.wall += 30 * 86400  # the wall clock jumps a month forward: that ages nothing
    assert door.present(ADA_UID) == (True, "granted")
    clocks.boot += MAX_AGE + 1
    clocks.wall -= 32 * 86400  # and two days back: that makes nothing younger
    assert door.present(ADA_UID) == (False, STALE_REASON)


def test_a_restart_keeps_the_age_and_a_reboot_counts_the_wall_time_never_backwards(
        door: Door) -> None:
    clocks = door.clocks
    door.cache.replace(credentials())
    freshness = door.controller.freshness
    assert freshness is not None
    freshness.synced()
    clocks.boot += MAX_AGE + 5
    clocks.wall += MAX_AGE + 5
    # the agent restarts (same boot): a new gate over the same cache file is still stale
    door.controller.freshness = door.freshness()
    assert door.present(ADA_UID) == (False, STALE_REASON)
    assert door.controller.freshness.age() == pytest.approx(MAX_AGE + 5)

    # checkpoints while running; then a reboot with the wall clock set back a day: the age
    # carried over is the checkpoint's, the negative wall time counts as nothing
    clocks.boot += CHECKPOINT_SECONDS
    door.controller.freshness.tick()  # a minute running: the age persisted
    mark = door.cache.sync_mark()
    assert mark is not None and mark.age == pytest.approx(MAX_AGE + 5 + CHECKPOINT_SECONDS)
    clocks.boot_id, clocks.boot, clocks.wall = "boot-2", 3.0, clocks.wall - 86400
    door.controller.freshness = door.freshness()
    assert door.controller.freshness.age() == pytest.approx(MAX_AGE + 5 + CHECKPOINT_SECONDS)
    assert door.present(ADA_UID) == (False, STALE_REASON)


def test_the_age_arithmetic() -> None:
    mark = SyncMark("boot-1", 100.0, 10.0, 5_000.0)
    assert age_now(None, "boot-1", 200.0, 9_999.0) is None  # never synced: unknown
    assert age_now(mark, "boot-1", 200.0, 0.0) == 110.0  # same boot: boot clock only
    assert age_now(mark, "boot-1", 50.0, 0.0) == 10.0  # never younger than the mark
    assert age_now(mark, "boot-2", 0.0, 5_100.0) == 110.0  # reboot: wall time off
    assert age_now(mark, "boot-2", 0.0, 4_000.0) == 10.0  # wall set back: not negative


def test_a_cache_never_verified_is_stale(door: Door) -> None:
    door.cache.replace(credentials())  # filled, but no verified sync (an old release's cache)
    assert door.present(ADA_UID) == (False, STALE_REASON)
    assert door.present(GUARD_UID) == (True, "granted")
    stale = [e for e in door.events.items if e[0] == "door.credentials_stale"]
    assert stale and stale[0][3]["age_seconds"] is None
