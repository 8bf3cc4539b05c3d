"""The door controller's loop: card in, finger asked, decision made, door driven, audit out.

The imperative shell around the pure parts (decision.py, state.py, door.py). One `DoorRunner`
per door owns its I/O and fingerprint module and runs two threads: the request worker (a card
read at a time: card stage, then the finger, then the decision) and the door loop (switch
changes and the door's timers). Anti-passback positions and lockouts are shared by all doors of
the controller (`AccessController`) and saved after every decision, so a restart keeps them.

Never a grant by accident: a card that fails the card stage never wakes the sensor; a sensor
that is missing, silent or garbled gives no match; a template that cannot be unsealed is not
offered to the sensor; any exception while handling a request is a denial event
(`door.error`), never an unlock. Clear templates exist only for the length of one
verification. Events carry the door, reader, card UID, person, reason and alarms, never
biometric data, scores or key material.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Any

from floor_agent.access import decision, door, state
from floor_agent.access.cache import CredentialsCache
from floor_agent.access.config import AccessPolicyConfig, DoorSection
from floor_agent.access.door_io import POSITION, DoorIo
from floor_agent.access.fingerprint import Candidate, FingerprintModule
from floor_agent.access.freshness import Freshness
from floor_agent.access.model import AccessState, CardRead, FingerResult, Outcome
from floor_agent.access.sitekey import SiteKey
from floor_agent.access.templates import TemplateError, unseal
from floor_agent.common.clock import utc_now
from floor_agent.protocol.emit import Emit
from floor_agent.protocol.kinds.door import DoorKind
from floor_agent.service import guarded_thread

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

# alarm -> (event kind, severity): raised beside the door.granted / door.denied event
ALARM_EVENTS = {
    "duress": (DoorKind.DURESS, "critical"),
    "clone_suspected": (DoorKind.CLONE_SUSPECTED, "critical"),
    "lockout": (DoorKind.LOCKOUT, "warning"),
    "antipassback": (DoorKind.ANTIPASSBACK, "warning"),
    # a card presented with another enrolled person's finger: lent, or taken by a colleague
    "card_shared": (DoorKind.CARD_SHARED, "critical"),
}
IDLE_TICK_SECONDS = 0.1  # how often the door loop looks at its timers when nothing happens


def outcome_event(outcome: Outcome, reader_id: str) -> tuple[str, str, dict[str, Any]]:
    """(kind, severity, data) of a decision's audit event (pure)."""
    if outcome.granted:
        kind, severity = DoorKind.GRANTED, "info"
    else:
        kind = DoorKind.DENIED
        severity = "warning" if outcome.alarms else "notice"
    data = {"door_id": outcome.door_id, "reader_id": reader_id, "direction": outcome.direction,
            "uid": outcome.uid, "person_id": outcome.person_id, "reason": outcome.reason,
            "alarms": list(outcome.alarms), "detail": outcome.detail}
    if outcome.finger_person_id is not None:  # whose finger came with the card (an id, no name)
        data["finger_person_id"] = outcome.finger_person_id
    if "duress" in outcome.alarms:
        # a silent alarm: the granted event looks like any other; the alarm event says it
        data["alarms"] = [a for a in outcome.alarms if a != "duress"]
    return kind, severity, data


def _other_fingers(creds: Any, holder: str, key: bytes) -> list[Candidate]:
    """Every enrolled finger but the card holder's, unsealed for the 1:N search that follows a
    failed 1:1 match only (the driver drops them after it). One that cannot be unsealed is left
    out: its owner's own door attempts report it (door.template_invalid)."""
    clear: list[Candidate] = []
    for person, templates in creds.templates.items():
        if person == holder:
            continue
        for template in templates:
            try:
                clear.append((person, template.template_id, template.finger,
                              unseal(key, person, template.template_id, template.sealed)))
            except TemplateError:
                continue
    return clear


class AccessController:
    """State shared by every door of this controller, and the way events leave it."""

    def __init__(self, policy: AccessPolicyConfig, site_key: SiteKey, cache: CredentialsCache,
                 emit: Emit, tz: tzinfo, clock: Clock = utc_now) -> None:
        self.policy = policy
        self.site_key = site_key
        self.cache = cache
        self.emit = emit
        self.tz = tz
        self.clock = clock
        # freshness.py's gate: stale credentials deny all but the emergency cards (None: off)
        self.freshness: Freshness | None = None
        self._state_lock = threading.Lock()
        self._state: AccessState = cache.load_state()
        self.doors: dict[str, DoorRunner] = {}

    def record(self, outcome: Outcome, door_section: DoorSection, now: datetime) -> None:
        """Move the shared state on by one outcome and save it (before the door opens)."""
        with self._state_lock:
            self._state = state.after(self._state, outcome, self.policy, door_section, now)
            self.cache.save_state(self._state)

    @property
    def access_state(self) -> AccessState:
        with self._state_lock:
            return self._state

    def healthy(self) -> bool:
        return all(d.healthy() for d in self.doors.values())


class DoorRunner:
    """One door: its request worker and its door loop."""

    def __init__(self, controller: AccessController, section: DoorSection, io: DoorIo,
                 finger: FingerprintModule,
                 feedback: Callable[[str, bool], object] | None = None) -> None:
        self.c = controller
        self.section = section
        self.io = io
        self.finger = finger
        self.feedback = feedback  # reader LED/buzzer (OSDP), when the reader has them
        self.params = door.DoorParams(section.io.unlock_seconds, section.io.held_open_seconds,
                                      section.io.fail_mode)
        self._door_lock = threading.Lock()
        self._door: door.DoorState | None = None
        self._requests: queue.Queue[CardRead | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self.subject = f"door {section.door_id}"
        self.error: BaseException | None = None

    # -- lifecycle --

    def start(self, shutdown: threading.Event) -> None:
        step = door.start(self.section.door_id, self.params, self.c.clock())
        self._apply(step)
        if self.io.read_position():  # open already: tell the machine, it judges
            self._step(lambda s, now: door.position(s, self.params, now, True))
        self._threads = [
            guarded_thread(f"door-{self.section.door_id}-{part}", body, shutdown, self._failed)
            for part, body in (("requests", self._worker), ("io", self._door_loop))
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._requests.put(None)
        for thread in self._threads:
            thread.join(5)
        self.io.close()  # the relay unpowered: locked for a fail-secure door

    def healthy(self) -> bool:
        return self.error is None and bool(self._threads) and all(
            t.is_alive() for t in self._threads)

    def _failed(self, e: BaseException) -> None:
        self.error = e
        self.c.emit(DoorKind.CONTROLLER_FAILED, self.subject, "critical",
                    error=f"{type(e).__name__}: {e}")

    # -- cards --

    def on_card(self, read: CardRead) -> None:
        """A card read from one of this door's readers (called from the reader's thread)."""
        self._requests.put(read)

    def _worker(self, shutdown: threading.Event) -> None:
        while not shutdown.is_set():
            read = self._requests.get()
            if read is None:
                return
            try:
                self.handle(read)
            except Exception as e:  # never an unlock: a denial the staff can see
                log.exception("%s: request failed", self.subject)
                self.c.emit(DoorKind.ERROR, self.subject, "critical", door_id=read.door_id,
                            reader_id=read.reader_id, uid=read.uid,
                            error=f"{type(e).__name__}: {e}")

    def handle(self, read: CardRead) -> Outcome:
        """Card stage, finger stage, decision, state, audit, and the door."""
        c = self.c
        creds = c.cache.snapshot()
        now = c.clock()
        outcome = None if c.freshness is None else c.freshness.gate(read)
        outcome = outcome or decision.check_card(creds, read, c.policy, c.access_state, now,
                                                 c.tz, door=self.section)
        if outcome is None:
            finger = self._verify_finger(creds, read)
            outcome = decision.evaluate(creds, read, finger, c.policy, c.access_state,
                                        c.clock(), c.tz, door=self.section)
        decided = c.clock()
        c.record(outcome, self.section, decided)
        kind, severity, data = outcome_event(outcome, read.reader_id)
        c.emit(kind, self.subject, severity, **data)
        for alarm in outcome.alarms:
            if alarm in ALARM_EVENTS:
                alarm_kind, alarm_severity = ALARM_EVENTS[alarm]
                other = {} if outcome.finger_person_id is None else {
                    "finger_person_id": outcome.finger_person_id}
                c.emit(alarm_kind, self.subject, alarm_severity, door_id=outcome.door_id,
                       reader_id=read.reader_id, uid=outcome.uid, person_id=outcome.person_id,
                       reason=outcome.reason, **other)
        if outcome.granted:
            self._step(lambda s, now: door.grant(s, self.params, now))
        if self.feedback is not None:
            try:
                self.feedback(read.reader_id, outcome.granted)
            except Exception as e:  # LED/buzzer only: the decision stands
                log.warning("%s: reader feedback failed: %s", self.subject, e)
        return outcome

    def _verify_finger(self, creds: Any, read: CardRead) -> FingerResult:
        """The card holder's templates, unsealed for one verification only."""
        card = creds.cards[read.uid]
        person = card.person_id
        key = self.c.site_key.template_key()
        clear: list[tuple[str, int, bytes]] = []
        broken: list[str] = []
        for template in creds.templates.get(person, ()):
            try:
                clear.append((template.template_id, template.finger,
                              unseal(key, person, template.template_id, template.sealed)))
            except TemplateError:
                broken.append(template.template_id)
        if broken:
            self.c.emit(DoorKind.TEMPLATE_INVALID, self.subject, "critical",
                        door_id=self.section.door_id, person_id=person, templates=broken)
        if not clear:
            return FingerResult("sensor_error", self.c.clock(),
                                detail="no template of the card holder could be unsealed")
        fp = self.section.fingerprint
        try:
            return self.finger.verify(clear, fp.threshold, fp.capture_timeout_seconds,
                                      fp.retries, person_id=person,
                                      others=lambda: _other_fingers(creds, person, key))
        finally:
            clear.clear()

    # -- the door --

    def _apply(self, step: door.DoorStep) -> None:
        with self._door_lock:
            self._door = step.state
            for command in step.commands:
                self.io.set_lock(command.unlocked)
        self._report(step)

    def _report(self, step: door.DoorStep) -> None:
        for event in step.events:
            self.c.emit(event.kind, self.subject, event.severity, door_id=event.door_id,
                        detail=event.detail)

    def _step(self, move: Callable[[door.DoorState, datetime], door.DoorStep]) -> None:
        """One move of the door's machine, atomically: a grant from the request worker and a
        switch change from the door loop never overwrite each other's state."""
        with self._door_lock:
            assert self._door is not None, "start() first"
            step = move(self._door, self.c.clock())
            self._door = step.state
            for command in step.commands:
                self.io.set_lock(command.unlocked)
        self._report(step)

    def _door_loop(self, shutdown: threading.Event) -> None:
        while not shutdown.is_set():
            change = self.io.next_change(IDLE_TICK_SECONDS)
            if change is not None:
                if change.kind == POSITION:
                    def moved(s: door.DoorState, now: datetime,
                              is_open: bool = change.value) -> door.DoorStep:
                        return door.position(s, self.params, now, is_open)
                    self._step(moved)
                elif change.value:  # the exit button pressed (its release changes nothing)
                    self._step(lambda s, now: door.rex(s, self.params, now))
            self._step(lambda s, now: door.tick(s, self.params, now))
