"""How old the door's credentials are, measured so that a wrong wall clock cannot make them
look younger, and the fail-secure gate for when they are too old.

A revoked person keeps their card in a cache that cannot sync. So the cache has a maximum age
(access.max_credential_age_seconds): past it every card is denied with reason
"credentials_stale", except the UIDs on the local emergency list (access.emergency_uids),
which go on to the normal decision. Going stale is alarmed (door.credentials_stale, critical)
and so is the end of it (door.credentials_fresh).

The age is time since the last verified sync (a snapshot taken, or the collector's 304 that
ours is current), counted on CLOCK_BOOTTIME (monotonic, counts suspend, never set by anyone),
and kept in the cache as a `SyncMark` (boot id, boot time, age then, wall time then), so a
restart does not make the cache fresh. Only across a reboot, where the boot clock starts
again, is the wall clock used: the powered-off time is wall-clock time, never counted as
negative, so a clock set back cannot make the cache younger than it was at the last
checkpoint (written at least every CHECKPOINT_SECONDS while running). A cache without a mark
(never synced, or written before this release) has no known age and counts as stale.

The arithmetic is pure (`age_now`, `stale_outcome`); `Freshness` is the shell that reads the
clocks, persists the mark and raises the events.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from floor_agent.access.model import CardRead, Outcome
from floor_agent.protocol.emit import Emit
from floor_agent.protocol.kinds.door import DoorKind

log = logging.getLogger(__name__)

STALE_REASON: Final = "credentials_stale"  # the gate's reason code, beside decision.py's
CHECKPOINT_SECONDS = 60.0
BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


@dataclass(frozen=True, slots=True)
class SyncMark:
    """At boot clock `boottime` of boot `boot_id` (wall clock `wall` then) the credentials
    were `age` seconds old; 0 at a verified sync."""

    boot_id: str
    boottime: float
    age: float
    wall: float


def age_now(mark: SyncMark | None, boot_id: str, boottime: float, wall: float) -> float | None:
    """Seconds since the last verified sync (None: unknown, never synced). Within one boot
    only the boot clock counts; across a reboot the wall clock, but never backwards."""
    if mark is None:
        return None
    if mark.boot_id == boot_id:
        return mark.age + max(0.0, boottime - mark.boottime)
    return mark.age + max(0.0, wall - mark.wall)


def is_stale(age: float | None, max_age: float) -> bool:
    return age is None or age > max_age


def stale_outcome(read: CardRead, emergency_uids: Collection[str], age: float | None,
                  max_age: float) -> Outcome | None:
    """The denial of a card while the credentials are too old; None when the card may go on
    to the normal decision (credentials fresh, or the card on the emergency list)."""
    if not is_stale(age, max_age) or read.uid in emergency_uids:
        return None
    known = "never verified" if age is None else f"{int(age)} s old"
    return Outcome(False, STALE_REASON, read.door_id, read.direction, read.uid, None, (),
                   f"credentials {known}, more than {int(max_age)} s: only emergency cards")


class MarkStore(Protocol):
    def sync_mark(self) -> SyncMark | None: ...

    def save_sync_mark(self, mark: SyncMark) -> None: ...


def read_boot_id(path: Path = BOOT_ID_PATH) -> str:
    """This boot's id (changes at every reboot); "unknown" makes every start count as one."""
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class Freshness:
    """The credentials' age for the controller (`gate`, per card) and the sync thread
    (`synced` after a verified sync, `tick` on every round: alarm and checkpoint)."""

    def __init__(self, marks: MarkStore, max_age: float, emit: Emit, subject: str,
                 emergency_uids: Collection[str] = (), *, boot_id: Callable[[], str] = read_boot_id,
                 boot_clock: Callable[[], float] = boottime,
                 wall: Callable[[], float] = time.time,
                 version: Callable[[], int] = lambda: 0) -> None:
        self.marks = marks
        self.max_age = max_age
        self.emit = emit
        self.subject = subject
        self.emergency_uids = frozenset(emergency_uids)
        self.boot_id = boot_id()
        self._boot_clock = boot_clock
        self._wall = wall
        self._version = version
        self._lock = threading.Lock()
        self._stale: bool | None = None  # as last reported (None: nothing reported yet)
        self._stale_since: float | None = None
        mark = marks.sync_mark()
        if mark is not None and mark.boot_id != self.boot_id:
            # a reboot: carry the age over once, then count on this boot's clock
            mark = SyncMark(self.boot_id, boot_clock(),
                            age_now(mark, self.boot_id, 0.0, wall()) or 0.0, wall())
            marks.save_sync_mark(mark)
        self._mark = mark
        self._checkpointed = boot_clock()

    def age(self) -> float | None:
        with self._lock:
            return age_now(self._mark, self.boot_id, self._boot_clock(), self._wall())

    def stale(self) -> bool:
        return is_stale(self.age(), self.max_age)

    def gate(self, read: CardRead) -> Outcome | None:
        """stale_outcome for this card now; raises the stale alarm if it is news."""
        age = self.age()
        self._report(age)
        return stale_outcome(read, self.emergency_uids, age, self.max_age)

    def synced(self) -> None:
        """A verified sync: age 0 from now, persisted."""
        mark = SyncMark(self.boot_id, self._boot_clock(), 0.0, self._wall())
        with self._lock:
            self.marks.save_sync_mark(mark)
            self._mark = mark
            self._checkpointed = mark.boottime
        self._report(0.0)

    def tick(self) -> None:
        """Raise or clear the alarm, and persist the age now and then (a reboot carries it)."""
        now = self._boot_clock()
        age = self.age()
        self._report(age)
        if age is not None and now - self._checkpointed >= CHECKPOINT_SECONDS:
            mark = SyncMark(self.boot_id, now, age, self._wall())
            with self._lock:
                self.marks.save_sync_mark(mark)
                self._mark = mark
                self._checkpointed = now

    def _report(self, age: float | None) -> None:
        stale = is_stale(age, self.max_age)
        with self._lock:
            if stale == self._stale or (self._stale is None and not stale):
                self._stale = stale
                return
            self._stale = stale
            since, self._stale_since = self._stale_since, (self._boot_clock() if stale else None)
        if stale:
            log.critical("credentials %s: doors deny every card but %d emergency card(s)",
                         "never verified" if age is None else f"{int(age)} s old",
                         len(self.emergency_uids))
            self.emit(DoorKind.CREDENTIALS_STALE, self.subject, "critical",
                      age_seconds=None if age is None else int(age),
                      max_age_seconds=int(self.max_age), cached_version=self._version(),
                      emergency_cards=len(self.emergency_uids))
        else:
            stale_for = 0 if since is None else int(self._boot_clock() - since)
            log.warning("credentials fresh again after %d s stale", stale_for)
            self.emit(DoorKind.CREDENTIALS_FRESH, self.subject, "notice",
                      stale_seconds=stale_for, version=self._version())
