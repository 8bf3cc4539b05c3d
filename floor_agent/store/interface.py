"""The collector's store: one small interface, SQLite by default, PostgreSQL for larger sites.

Everything the collector keeps goes through `Store`: enrolled agents and their chain heads,
one-time enrollment tokens, API keys, events, alerts, and the door credentials (people, cards,
access levels, holidays, sealed templates) under one version number the controllers sync by.
The SQL is shared (sql.py); the dialects differ only in connection handling and DDL.
`floor_agent.store.open_store(url)` picks one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol, TypeVar

from floor_agent.protocol.checkpoint import Checkpoint
from floor_agent.protocol.credentials import AccessLevel, Card, Credentials, Person, Template
from floor_agent.store.records import AgentRecord, AlertDraft, EventRow, NotificationDraft


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Filters for the event list; all optional, combined with AND; newest first."""

    agent_id: str | None = None
    kind: str | None = None
    kind_prefix: str | None = None
    severities: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None
    limit: int = 100
    cursor: tuple[str, int] | None = None  # (ts, id) of the last row of the previous page
    # newest *received* first (the order the live feed shows them in), not by the agent's
    # stamp: an event stamped 2099 cannot pin itself on top nor one stamped 2001 sink out of
    # sight; without a cursor (one page)
    by_received: bool = False


@dataclass(slots=True)
class EventPage:
    events: list[dict[str, Any]] = field(default_factory=list)
    next_cursor: tuple[str, int] | None = None


class BatchDecision(Protocol):
    """What an ingest decision (collector/ingest.Plan) tells the store to write."""

    store: list[EventRow]
    alerts: list[AlertDraft]
    new_head: tuple[int, bytes] | None
    quarantine: list[int]
    noise: str | None  # refused before authentication: nothing written here
    duplicate: bool  # already stored as it is: nothing written

    @property
    def accepted(self) -> bool: ...


D = TypeVar("D", bound=BatchDecision)
# decide(agent record or None, stored hashes at the asked seqs, highest seq stored at or below
# the agent's head): pure, called by the store under the agent's lock
Decide = Callable[[AgentRecord | None, Mapping[int, bytes], int | None], D]


NOTE_BYTES = 7000  # PostgreSQL's NOTIFY payload is below 8000 bytes


class FeedChannel(Protocol):
    """Short notes between the collectors of one database (each at most NOTE_BYTES); a note
    is sent to every listener, the sender's own included. send() and receive() may each be
    called from one thread of their own; both raise StoreError when the database is gone."""

    def send(self, notes: Sequence[str]) -> None: ...

    def receive(self, timeout: float) -> list[str]:
        """The notes that arrived, waiting at most timeout seconds for the first."""

    def close(self) -> None: ...


class StoreError(RuntimeError):
    """The database refused or is unreachable; the message says which and why."""


class StoreUnavailable(StoreError):
    """The database cannot be reached right now (stopped, restarting, failing over, a
    standby not yet promoted): nothing was decided, the same call may succeed later. The
    collector answers 503 with Retry-After for it, so agents keep their events spooled."""


class StoreRefused(StoreUnavailable):
    """The database server answered and refused the connection (a wrong password, no such
    role or database, no pg_hba entry): waiting will not fix it. A collector starting stops on
    it with this message; one already serving answers it 503 like any outage (a password
    rotated under it), so its agents keep their events spooled while someone fixes it."""


class UnknownRecord(LookupError):
    """A credential change names a record that does not exist; `field` says which name."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class RecordConflict(ValueError):
    """A credential change clashes with what is stored (a taken id, a revoked person)."""


@dataclass(frozen=True, slots=True)
class Revocation:
    person_id: str
    version: int
    cards_deactivated: int
    templates_deleted: int


class Store(ABC):
    """What the collector needs from a database; implementations must be thread-safe."""

    url: str

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def open(self) -> None:
        """Reach the database and bring its schema to this release's; idempotent. A store made
        to wait for its database (open_store(url, wait=True)) answers StoreUnavailable until
        this succeeded; the others are opened when made, so this does nothing for them."""

    @abstractmethod
    def ping(self) -> None:
        """One round trip to the database; StoreUnavailable when it cannot be reached."""

    # enrollment and credentials
    @abstractmethod
    def add_token(self, token_hash: bytes, role: str, created_at: str, expires_at: str) -> None: ...

    @abstractmethod
    def consume_token(self, token_hash: bytes, now: str, agent_id: str) -> str | None:
        """Mark an unused, unexpired token used by agent_id; return its role, else None."""

    @abstractmethod
    def add_agent(self, agent_id: str, role: str, public_key: str, hostname: str,
                  enrolled_at: str) -> bool:
        """Register an agent; False when the id is taken."""

    @abstractmethod
    def get_agent(self, agent_id: str) -> AgentRecord | None: ...

    @abstractmethod
    def enrolled_id_like(self, agent_id: str) -> str | None:
        """The enrolled id equal to agent_id ignoring case, if any (add_agent refuses it)."""

    @abstractmethod
    def list_agents(self) -> list[dict[str, Any]]: ...

    @abstractmethod
    def add_api_key(self, key_hash: bytes, name: str, created_at: str,
                    scopes: str | None = None, expires_at: str | None = None) -> bool:
        """Store a key's hash; False when an unrevoked key has that name. scopes: the
        space-separated api_keys.SCOPES (None: a legacy key, as releases before scopes)."""

    @abstractmethod
    def api_key_name(self, key_hash: bytes) -> str | None: ...

    @abstractmethod
    def get_api_key(self, key_hash: bytes) -> dict[str, Any] | None:
        """name, scopes, created_at, expires_at, last_used_at, revoked_at of a key."""

    @abstractmethod
    def list_api_keys(self) -> list[dict[str, Any]]:
        """Every key (revoked ones too) as get_api_key gives it, by name."""

    @abstractmethod
    def revoke_api_key(self, name: str, now: str) -> int:
        """Revoke the unrevoked keys of that name; how many."""

    @abstractmethod
    def touch_api_key(self, key_hash: bytes, now: str) -> None:
        """Record the key's last use."""

    # ingest
    @abstractmethod
    def stored_hashes(self, agent_id: str, seqs: list[int]) -> dict[int, bytes]: ...

    @abstractmethod
    def last_stored_seq(self, agent_id: str, at_most: int) -> int | None:
        """The highest seq stored for the agent at or below at_most (None: none)."""

    @abstractmethod
    def ingest_batch(self, agent_id: str, seqs: list[int], checkpoint: Checkpoint,
                     received_at: str, decide: Decide[D], rows: Sequence[EventRow] = ()) -> D:
        """Read the agent's record and chain, decide, and write what was decided, in one
        transaction under a lock of this agent alone (across processes): an accepted batch
        (events, checkpoint, head compare-and-set, alerts), or a refusal's alerts; nothing
        for a duplicate or an unauthenticated batch. `seqs`: the seqs decide() needs the
        stored hashes of (ingest.needed_seqs); `rows`: the batch's rows, encoded for the
        database before the transaction. Returns the decision."""

    @abstractmethod
    def commit_batch(self, agent_id: str, events: list[EventRow], checkpoint: Checkpoint,
                     new_head: tuple[int, bytes] | None, alerts: list[AlertDraft],
                     received_at: str, quarantine: Sequence[int] = ()) -> None:
        """Store event rows (ingest.event_params), the accepted checkpoint, the new head and
        alerts in one transaction; first move the stored rows at the `quarantine` seqs (forged,
        above the head) into the quarantine table."""

    @abstractmethod
    def list_quarantine(self, agent_id: str | None = None) -> list[dict[str, Any]]:
        """Rows moved out of the events as forged (evidence, never served as events)."""

    @abstractmethod
    def add_alerts(self, alerts: list[AlertDraft], now: str) -> None:
        """Store alerts; an open alert with the same fingerprint is counted, not repeated."""

    @abstractmethod
    def touch_agent(self, agent_id: str, now: str) -> None: ...

    # queries
    @abstractmethod
    def query_events(self, query: EventQuery) -> EventPage: ...

    @abstractmethod
    def chain_events(self, agent_id: str, from_seq: int, to_seq: int
                     ) -> list[tuple[dict[str, Any], bytes]]:
        """Events of one agent in seq order, each with its stored hash, for re-verification."""

    @abstractmethod
    def list_alerts(self, open_only: bool = False, agent_id: str | None = None,
                    kind: str | None = None, limit: int = 100) -> list[dict[str, Any]]: ...

    @abstractmethod
    def ack_alert(self, alert_id: int, who: str, comment: str, now: str) -> bool: ...

    @abstractmethod
    def checkpoint_of(self, agent_id: str) -> Checkpoint | None:
        """The last checkpoint accepted from an agent: the anchor for re-verification."""

    @abstractmethod
    def agents_with_stale_checkpoint(self, older_than: str) -> list[tuple[str, str | None]]:
        """Agents whose last checkpoint arrived before older_than (or never, once enrolled)."""

    @abstractmethod
    def stats(self) -> dict[str, Any]:
        """Counts for /metrics: events, agents, open alerts by kind."""

    # door credentials: every change bumps one version, in the change's own transaction,
    # and is written to the credential log (who, what, which version; never template bytes)
    @abstractmethod
    def credentials_version(self) -> int: ...

    @abstractmethod
    def put_person(self, person: Person, actor: str, now: str) -> int:
        """Add or update a person; returns the new version. UnknownRecord for an unknown
        access level (add levels first)."""

    @abstractmethod
    def list_people(self) -> list[dict[str, Any]]:
        """People with their card UIDs and template ids/fingers (never the sealed bytes)."""

    @abstractmethod
    def revoke_person(self, person_id: str, actor: str, now: str) -> Revocation | None:
        """Deactivate the person and their cards and DELETE their templates (GDPR Art. 9:
        the rows are gone, not flagged); None when the person is unknown."""

    @abstractmethod
    def put_card(self, card: Card, actor: str, now: str) -> int:
        """Add or update a card (by uid); UnknownRecord for an unknown person."""

    @abstractmethod
    def put_level(self, level: AccessLevel, actor: str, now: str) -> int: ...

    @abstractmethod
    def put_holiday(self, day: date, name: str, actor: str, now: str) -> int: ...

    @abstractmethod
    def add_template(self, template: Template, actor: str, now: str) -> int:
        """Store a sealed template; UnknownRecord for an unknown person, RecordConflict for a
        taken template id or an inactive person."""

    @abstractmethod
    def credentials_snapshot(self) -> Credentials:
        """Everything the controllers need, read consistently, with its version."""

    @abstractmethod
    def credential_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest credential changes first: ts, actor, action, subject, version, detail."""


    # the dashboard: users, sessions, overview state, camera snapshots, verification results
    @abstractmethod
    def add_user(self, username: str, role: str, password_hash: str, must_change: bool,
                 now: str) -> bool:
        """Create a dashboard user; False when the name is taken."""

    @abstractmethod
    def get_user(self, username: str) -> dict[str, Any] | None:
        """username, role, password_hash, must_change, disabled, created_at, updated_at,
        failures, locked_until."""

    @abstractmethod
    def list_users(self) -> list[dict[str, Any]]: ...

    @abstractmethod
    def update_user(self, username: str, now: str, **fields: Any) -> bool:
        """Set some of role, password_hash, must_change, disabled, failures, locked_until."""

    @abstractmethod
    def add_session(self, id_hash: str, username: str, csrf: str, now: str) -> None: ...

    @abstractmethod
    def get_session(self, id_hash: str) -> dict[str, Any] | None:
        """username, created_at, last_seen_at, csrf of a session (by the hash of its id)."""

    @abstractmethod
    def touch_session(self, id_hash: str, now: str) -> None: ...

    @abstractmethod
    def delete_session(self, id_hash: str) -> None: ...

    @abstractmethod
    def delete_sessions_of(self, username: str) -> int: ...

    @abstractmethod
    def prune_sessions(self, created_before: str, seen_before: str) -> int:
        """Delete sessions past their lifetime or idle limit; how many."""

    @abstractmethod
    def count_login_failure(self, username: str, known: bool, now: str, max_failures: int,
                            lock_until: str) -> tuple[int, str | None] | None:
        """One more failed login of a user (known) or of a name no user has, counted and the
        lock decided atomically: (failures, locked_until) after it, or None when the name
        was already locked (nothing counted)."""

    @abstractmethod
    def login_locked_until(self, username: str) -> str | None:
        """Until when a name no user has is locked (None: not locked, or never failed)."""

    @abstractmethod
    def count_login_success(self, username: str, now: str) -> bool:
        """Clear the user's failures; False when the user was locked or disabled meanwhile
        (the login is then refused)."""

    @abstractmethod
    def prune_login_failures(self, before: str) -> int:
        """Forget unknown names whose last failure is older than `before` and not locked."""

    # per-site state several collectors on one database share (issue 23, point 4)
    @abstractmethod
    def remember_request(self, signature: bytes, agent_id: str, keep_until_ms: int) -> bool:
        """Remember an accepted agent-signed request's signature until keep_until_ms (Unix
        ms); False, remembering nothing, when it is already remembered: a replay, at this
        collector or another on the same database."""

    @abstractmethod
    def forget_requests(self, now_ms: int) -> int:
        """Forget the signatures kept until before now_ms; how many."""

    @abstractmethod
    def lead(self, duty: str) -> bool:
        """Whether this store instance leads `duty` (a sweep one collector of the site runs):
        taken when no other holds it, kept until this instance closes or its process dies
        (PostgreSQL: a session advisory lock on a connection of its own; SQLite, one box:
        always)."""

    @abstractmethod
    def feed_channel(self) -> FeedChannel | None:
        """A channel to the other collectors on this database (PostgreSQL: LISTEN/NOTIFY),
        for the live feeds; None when no other collector can share the store (SQLite)."""

    @abstractmethod
    def event_rows(self, agent_id: str, low: int, high: int) -> list[EventRow]:
        """An agent's stored rows with seq in [low, high], in seq order (a feed note's)."""

    @abstractmethod
    def rebuild_latest(self) -> int:
        """Fill `latest` from the stored events (a store older than the dashboard, or events
        written around commit_batch); returns how many (agent, topic) rows it holds."""

    @abstractmethod
    def latest_states(self, agent_id: str | None = None) -> list[dict[str, Any]]:
        """The newest event per (agent, topic) (protocol/topics.py), kept at ingest."""

    @abstractmethod
    def get_alert(self, alert_id: int) -> dict[str, Any] | None: ...

    @abstractmethod
    def alert_counts(self) -> dict[tuple[str | None, str], int]:
        """(agent_id, kind) -> how many alerts ever (open or acknowledged)."""

    @abstractmethod
    def put_snapshot(self, agent_id: str, camera_id: str, jpeg: bytes, width: int, height: int,
                     now: str) -> None:
        """Keep a camera's latest snapshot (one per agent and camera)."""

    @abstractmethod
    def get_snapshot(self, agent_id: str, camera_id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def list_snapshots(self) -> list[dict[str, Any]]:
        """agent_id, camera_id, width, height, size, received_at (no image bytes)."""

    @abstractmethod
    def put_verification(self, agent_id: str, ok: bool, checkpoint_seq: int | None,
                         stored_events: int, problems: list[str], by: str, now: str) -> None:
        """Remember the last re-verification of an agent's chain (the integrity page)."""

    @abstractmethod
    def list_verifications(self) -> dict[str, dict[str, Any]]: ...

    # the dashboard's charts (store/chart_sql.py): counted by the database, per time bucket
    @abstractmethod
    def count_events(self, since: str, until: str, bucket_chars: int = 13,
                     kinds: Sequence[str] = (), agent_id: str | None = None,
                     subject: str | None = None) -> list[tuple[str, str, int]]:
        """(bucket, kind, events) of the events stamped in [since, until), optionally of
        these kinds, one agent, one subject; the bucket is the stamp's first bucket_chars
        characters (10 a day, 13 an hour, 15 ten minutes, 16 a minute), ascending."""

    @abstractmethod
    def count_alerts(self, since: str, until: str, bucket_chars: int = 13
                     ) -> list[tuple[str, str, int]]:
        """(bucket, kind, alerts) of the alerts created in [since, until), as count_events."""

    @abstractmethod
    def timeline_events(self, kinds: Sequence[str], since: str, until: str,
                        agent_id: str | None = None, subject: str | None = None,
                        limit: int = 5000) -> list[dict[str, Any]]:
        """The newest `limit` events of these kinds stamped in [since, until), oldest first
        (agent_id, seq, ts, kind, severity, subject, data): state changes for a timeline."""

    @abstractmethod
    def last_kinds_before(self, kinds: Sequence[str], before: str,
                          agent_id: str | None = None) -> list[tuple[str, str, str, str]]:
        """(agent_id, subject, kind, newest stamp) of these kinds stamped before `before`:
        which state each lane was in when a timeline's window opens."""

    # the trust anchor (collector/anchor.py) and the verifier (collector/verify.py)
    @abstractmethod
    def agent_identity(self, agent_id: str) -> dict[str, Any] | None:
        """What the anchor endorses of an agent: agent_id, role, public_key, enrolled_at, and
        endorsement (base64, None in a store from before the anchor)."""

    @abstractmethod
    def set_endorsement(self, agent_id: str, endorsement: str) -> bool: ...

    @abstractmethod
    def event_extent(self, agent_id: str) -> tuple[int, int, int] | None:
        """(lowest seq, highest seq, rows) stored for an agent, whatever its head says."""

    @abstractmethod
    def orphan_events(self) -> list[tuple[str, int, int, int]]:
        """(agent_id, lowest seq, highest seq, rows) of event rows naming no enrolled agent."""

    # the notifications' outbox (store/outbox_sql.py, collector/notify.py)
    @abstractmethod
    def notify_first_alert(self) -> int:
        """The alert id the notifier started after (older alerts never escalate)."""

    @abstractmethod
    def unplanned_alerts(self, limit: int = 500) -> list[dict[str, Any]]:
        """Alerts the notifier has not routed yet (id, kind, severity, agent_id, seq, detail,
        created_at, source), by id."""

    @abstractmethod
    def enqueue_notifications(self, drafts: Sequence[NotificationDraft], now: str,
                              planned: Sequence[int] = ()) -> bool:
        """Add drafts (a dedupe already there is skipped) and mark the alerts `planned`
        routed, in one transaction; False (nothing added, nothing marked) when another
        notifier marked one of them first."""

    @abstractmethod
    def notifications_since(self, since: str) -> dict[str, int]:
        """channel -> alert notifications (single or folded) created since `since`."""

    @abstractmethod
    def due_notifications(self, now: str, limit: int = 100, channel: str | None = None
                          ) -> list[dict[str, Any]]:
        """Pending notifications whose next attempt is due, oldest first (payload parsed);
        of one channel when given."""

    @abstractmethod
    def claim_notification(self, notification_id: int, due_at: str, until: str) -> bool:
        """Move a pending notification's next attempt from due_at (as read) to until, the
        end of the hand-off about to start; False when someone else moved it first."""

    @abstractmethod
    def notification_sent(self, notification_id: int, now: str) -> None: ...

    @abstractmethod
    def notification_failed(self, notification_id: int, next_at: str, error: str) -> int:
        """Count a failed attempt and set the next one; the attempts so far."""

    @abstractmethod
    def folded_notifications(self) -> list[dict[str, Any]]:
        """Notifications waiting for their window's digest."""

    @abstractmethod
    def fold_into_digest(self, folded_ids: Sequence[int], digest: NotificationDraft,
                         now: str) -> None:
        """Add the digest and mark the folded rows digested, in one transaction."""

    @abstractmethod
    def unescalated_critical_alerts(self, after_id: int) -> list[dict[str, Any]]:
        """Open critical alerts above after_id with no escalation in the outbox yet."""

    @abstractmethod
    def list_notifications(self, state: str | None = None, limit: int = 1000
                           ) -> list[dict[str, Any]]: ...

    @abstractmethod
    def notification_counts(self) -> dict[tuple[str, str], int]:
        """(channel, state) -> notifications in the outbox (/metrics)."""

    @abstractmethod
    def prune_notifications(self, before: str) -> int:
        """Delete sent and digested notifications created before `before`; how many."""

    # -- central workstation policy (store/policy_sql.py) ----------------------------------
    # Every change takes the next site-wide change number (returned) and writes one
    # policy_changes row (who, why, when, before/after), in one write transaction. Rows are
    # plain dicts: groups {"group", "usb_rules", "netlock_allow", "changed", "updated_at",
    # "updated_by", "agents"}; changes {"change", "kind", "group", "agent_id", "exception_id",
    # "actor", "reason", "at", "before", "after"}; exceptions {"exception_id", "rule", "scope",
    # "device", "reason", "approved_by", "approved_at", "expires_at", "approved_change",
    # "ended_change", "ended_at", "ended_by", "end_reason", "active"}.

    @abstractmethod
    def put_policy_group(self, group: str, usb_rules: str, netlock_allow: list[dict[str, Any]],
                         actor: str, reason: str, now: str) -> int:
        """Create or replace a group's rules and allowlist (validated by the caller)."""

    @abstractmethod
    def assign_policy_group(self, agent_id: str, group: str, actor: str, reason: str, now: str,
                            default_group: str) -> int:
        """Move a workstation to a group; UnknownRecord for a group with no rules,
        RecordConflict when it is already assigned there."""

    @abstractmethod
    def add_policy_exception(self, rule: str, scope: str, device: dict[str, Any], reason: str,
                             actor: str, now: str, expires_at: str | None) -> dict[str, Any]:
        """Approve a device exception (id "x-<change>"); UnknownRecord for group:<unknown>."""

    @abstractmethod
    def end_policy_exception(self, exception_id: str, how: str, actor: str, reason: str,
                             now: str) -> int | None:
        """End an exception in force (how: "withdrawn" or "expired"); the change number, or
        None when there is no such exception in force."""

    @abstractmethod
    def expire_policy_exceptions(self, now: str, actor: str) -> list[dict[str, Any]]:
        """End every exception in force whose expiry is at or before `now`, one change each;
        the exceptions ended (with their ended_change)."""

    @abstractmethod
    def policy_change_number(self) -> int:
        """The newest site-wide change number (0: no policy yet)."""

    @abstractmethod
    def policy_groups(self) -> list[dict[str, Any]]:
        """Every group with its content and the workstations assigned to it."""

    @abstractmethod
    def policy_group(self, group: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def policy_assignments(self) -> list[dict[str, Any]]:
        """{"agent_id", "group", "changed", "assigned_at", "assigned_by"} per assigned one."""

    @abstractmethod
    def policy_changes(self, limit: int = 100, group: str | None = None,
                       agent_id: str | None = None, before: int | None = None
                       ) -> list[dict[str, Any]]:
        """The change log, newest first, with before/after (the diff view's data); `before`:
        only changes numbered below it (paging)."""

    @abstractmethod
    def policy_change(self, change: int) -> dict[str, Any] | None: ...

    @abstractmethod
    def policy_exceptions(self, active_only: bool = False) -> list[dict[str, Any]]:
        """Device exceptions, newest first."""

    @abstractmethod
    def policy_exception(self, exception_id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def policy_inputs(self, agent_id: str, default_group: str) -> dict[str, Any] | None:
        """What a workstation's document is made of, from one consistent read: {"agent_id",
        "group", "version", "usb_rules", "netlock_allow", "exceptions" (in force, in scope)};
        None while its group (assigned, else `default_group`) has no rules set."""

    @abstractmethod
    def policy_event(self, event_id: int) -> dict[str, Any] | None:
        """A stored event by row id: {"id", "agent_id", "seq", "ts", "kind", "data"}."""
