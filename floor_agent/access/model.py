"""The plain data of access control, shared by every part of `access/`.

Credentials (people, cards, access levels, holidays, sealed fingerprint templates) are the
records of protocol/credentials.py: they come from the collector and live in the controller's
cache. Here are the door's own types: requests (a card read, a fingerprint result) come from
the drivers; `decision.evaluate` turns them into an Outcome. No biometric data and no
card key ever appears here in clear: templates are `sealed` (AES-GCM under the site key, see
templates.py) and card keys are derived on the controller when needed, never stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, get_args

# The vocabularies are Literal types: on the wire and in the store they are these strings,
# and mypy holds every producer to them; the tuples beside them are the same list at run time.

Direction = Literal["in", "out"]
DIRECTIONS: tuple[Direction, ...] = get_args(Direction)


# --- requests -----------------------------------------------------------------------------------

# What a card showed of its diversified key (CardRead.proof).
CardProof = Literal["ok", "failed", "none", "error"]


@dataclass(frozen=True, slots=True)
class CardRead:
    """A card presented at a reader. `proof`: "ok" the card proved its diversified key,
    "failed" it answered but the proof did not hold (clone suspected), "none" it was not asked
    or could not be (a UID-only read), "error" the exchange broke (bad APDU: no decision)."""

    door_id: str
    reader_id: str
    direction: Direction
    uid: str
    at: datetime  # aware, UTC
    proof: CardProof = "none"
    detail: str = ""  # what the driver saw, for the audit trail (never key material)


SearchStatus = Literal["found", "not_found", "failed"]


@dataclass(frozen=True, slots=True)
class FingerSearch:
    """The 1:N search of the other enrolled fingers after the finger failed its 1:1 match, so
    that the card of one person with the finger of another is told from an unknown finger.
    `status`: found (person_id's template_id matched) | not_found | failed (the search broke
    or timed out: nothing is known about the finger)."""

    status: SearchStatus
    person_id: str | None = None
    template_id: str | None = None
    score: int = 0
    detail: str = ""


FingerStatus = Literal["match", "no_match", "timeout", "poor_image", "sensor_error"]
FINGER_STATUSES: tuple[FingerStatus, ...] = get_args(FingerStatus)


@dataclass(frozen=True, slots=True)
class FingerResult:
    """The fingerprint step after a card: which template of the card holder matched, if any.
    `status`: match | no_match | timeout (no finger) | poor_image | sensor_error."""

    status: FingerStatus
    at: datetime
    person_id: str | None = None  # whose template matched
    template_id: str | None = None
    finger: int | None = None
    score: int = 0
    detail: str = ""
    search: FingerSearch | None = None  # after a no_match, when the other fingers were searched


# --- state kept between decisions (pure transitions in state.py) ---------------------------------

@dataclass(frozen=True, slots=True)
class Lockout:
    failures: tuple[datetime, ...] = ()  # recent failed attempts of one card
    locked_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class AccessState:
    """Anti-passback positions and lockouts; replaced, never mutated."""

    zone_of: Mapping[str, str] = field(default_factory=dict)  # person -> zone they are in
    lockouts: Mapping[str, Lockout] = field(default_factory=dict)  # card uid -> lockout


# --- outcome -----------------------------------------------------------------------------------

# Why a decision came out as it did (decision.py); every outcome carries exactly one.
DecisionReason = Literal[
    "granted", "granted_duress",
    "unknown_card", "card_inactive", "card_not_yet_valid", "card_expired", "card_not_keyed",
    "clone_suspected", "card_error",
    "person_inactive", "no_access_level", "outside_schedule", "holiday",
    "no_template", "finger_mismatch", "finger_other_person", "finger_timeout",
    "finger_poor_image", "finger_too_late", "sensor_unavailable",
    "antipassback", "locked_out",
]
REASONS: tuple[DecisionReason, ...] = get_args(DecisionReason)
# An outcome's reason: a decision's, or the freshness gate's before any decision is made.
Reason = DecisionReason | Literal["credentials_stale"]


@dataclass(frozen=True, slots=True)
class Outcome:
    granted: bool
    reason: Reason
    door_id: str
    direction: Direction
    uid: str
    person_id: str | None = None
    alarms: tuple[str, ...] = ()  # e.g. "duress", "clone_suspected", "lockout"
    detail: str = ""
    # finger_other_person: whose enrolled finger was presented with this card (an id, no name)
    finger_person_id: str | None = None
