"""The store's tables, written once and rendered as each dialect's DDL.

Before this module the schema was written out twice by hand (SQLite and PostgreSQL), and the
two copies had to be kept in step by eye. Here a table is a list of columns of a few abstract
types; `create_statements(dialect)` spells them: PostgreSQL's text columns are COLLATE "C"
(comparisons and ORDER BY bytewise, as in SQLite), its row ids BIGSERIAL. The rendering is the
schema of version `migrations.SCHEMA_VERSION`: a change to it is a new migration step.

A hand-written engine, not SQLAlchemy: twenty tables of plain columns, and the store's SQL is
hand-written anyway; a dependency for this would be larger than this module.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Type:
    """A column type as each dialect spells it."""

    sqlite: str
    postgres: str


TEXT = Type("TEXT", 'TEXT COLLATE "C"')
BYTES = Type("BLOB", "BYTEA")
INT = Type("INTEGER", "INTEGER")  # flags, sizes, a finger
BIGINT = Type("INTEGER", "BIGINT")  # seqs, counts, versions (SQLite's INTEGER is 64-bit)
# The tables written for the dashboard spelled their 64-bit columns BIGINT in SQLite too (the
# same INTEGER affinity); kept, so a store's declared types do not depend on its age.
BIGINT_SPELLED = Type("BIGINT", "BIGINT")
ROW_ID = Type("INTEGER", "BIGSERIAL")  # with primary_key: SQLite's rowid, PostgreSQL's sequence


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: Type
    not_null: bool = True
    primary_key: bool = False
    default: str | None = None
    check: str | None = None
    references: str | None = None  # "table (column)"
    # Added by ALTER TABLE in releases before the store had a schema version: an unversioned
    # store may lack it (migrations brings it up to version 1 by adding it).
    late: bool = False

    def ddl(self, dialect: str) -> str:
        parts = [self.name, getattr(self.type, dialect)]
        if self.primary_key:
            parts.append("PRIMARY KEY")
        if self.check:
            parts.append(f"CHECK ({self.check})")
        if self.not_null and not self.primary_key:
            parts.append("NOT NULL")
        if self.default is not None:
            parts.append(f"DEFAULT {self.default}")
        if self.references:
            parts.append(f"REFERENCES {self.references}")
        return " ".join(parts)


def col(name: str, type_: Type = TEXT, *, null: bool = False, default: str | None = None,
        references: str | None = None, late: bool = False) -> Column:
    """A column; NOT NULL unless null=True (most columns are required)."""
    return Column(name, type_, not_null=not null, default=default, references=references,
                  late=late)


def pk(name: str, type_: Type = TEXT, check: str | None = None) -> Column:
    return Column(name, type_, primary_key=True, check=check)


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    constraints: tuple[str, ...] = ()  # table constraints: "UNIQUE (agent_id, seq)"
    since: int = 1  # the schema version that added it (migrations.py creates it then)

    def create(self, dialect: str) -> str:
        lines = [c.ddl(dialect) for c in self.columns] + list(self.constraints)
        body = ",\n    ".join(lines)
        return f"CREATE TABLE IF NOT EXISTS {self.name} (\n    {body}\n)"

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


@dataclass(frozen=True, slots=True)
class Index:
    name: str
    table: str
    columns: str
    where: str | None = None  # a partial index
    unique: bool = False
    since: int = 1  # the schema version that added it to a table of an earlier version

    def create(self) -> str:
        where = f" WHERE {self.where}" if self.where else ""
        kind = "UNIQUE INDEX" if self.unique else "INDEX"
        return (f"CREATE {kind} IF NOT EXISTS {self.name} ON {self.table} "
                f"({self.columns}){where}")


TABLES: tuple[Table, ...] = (
    Table("agents", (
        pk("agent_id"), col("role"), col("public_key"), col("hostname", default="''"),
        col("enrolled_at"), col("head_seq", BIGINT, default="0"), col("head_hash", BYTES),
        col("checkpoint_seq", BIGINT, null=True), col("checkpoint_hash", BYTES, null=True),
        col("checkpoint_ts", null=True), col("checkpoint_boot_id", null=True),
        col("checkpoint_sig", BYTES, null=True), col("checkpoint_received_at", null=True),
        col("last_seen_at", null=True), col("events_total", BIGINT, default="0"),
        # the trust anchor's endorsement of the agent's key (collector/anchor.py), base64
        col("anchor_endorsement", null=True, late=True))),
    # the columns in INSERT_EVENT's order after id (records.EventRow)
    Table("events", (
        pk("id", ROW_ID), col("agent_id"), col("seq", BIGINT), col("boot_id"), col("ts"),
        col("kind"), col("severity"), col("severity_rank", BIGINT), col("subject"),
        col("data"), col("hash", BYTES), col("received_at")),
        ("UNIQUE (agent_id, seq)",)),
    Table("tokens", (
        pk("token_hash", BYTES), col("role"), col("created_at"), col("expires_at"),
        col("used_at", null=True), col("used_by", null=True))),
    Table("api_keys", (
        pk("key_hash", BYTES), col("name"), col("created_at"), col("revoked_at", null=True),
        # scopes: space-separated api_keys.SCOPES (NULL: a legacy key); expiry, last use
        col("scopes", null=True, late=True), col("expires_at", null=True, late=True),
        col("last_used_at", null=True, late=True))),
    Table("alerts", (
        pk("id", ROW_ID), col("fingerprint"), col("kind"), col("severity"),
        col("agent_id", null=True), col("seq", BIGINT, null=True), col("detail"),
        col("created_at"), col("last_seen_at"), col("count", BIGINT, default="1"),
        col("acked_at", null=True), col("acked_by", null=True), col("ack_comment", null=True),
        # the client address an unauthenticated failure's alert is counted against
        col("source", null=True, late=True),
        # 1 once the notifier routed it (schema 6): each alert marks itself, so alerts
        # committed out of id order by collectors side by side are never passed over
        col("planned", INT, default="0"))),
    # Door credentials (sql.CredentialSql); templates hold sealed bytes only.
    Table("credentials_meta", (pk("id", INT, check="id = 1"), col("version", BIGINT))),
    Table("access_levels", (
        pk("level_id"), col("doors"), col("windows"), col("on_holidays", INT),
        col("updated_at"))),
    Table("people", (
        pk("person_id"), col("name"), col("active", INT), col("access_levels"),
        col("duress_fingers"), col("created_at"), col("updated_at"),
        col("revoked_at", null=True))),
    Table("cards", (
        pk("uid"), col("person_id", references="people (person_id)"), col("active", INT),
        col("valid_from", null=True), col("valid_until", null=True), col("keyed", INT),
        col("updated_at"))),
    Table("holidays", (pk("day"), col("name"), col("updated_at"))),
    Table("templates", (
        pk("template_id"), col("person_id", references="people (person_id)"),
        col("finger", INT), col("sealed", BYTES), col("created_at"))),
    Table("credential_log", (
        pk("id", ROW_ID), col("ts"), col("actor"), col("action"), col("subject"),
        col("version", BIGINT), col("detail"))),
    # The dashboard (sql.DashboardSql): users, sessions (ids stored hashed), the newest state
    # event per (agent, topic) kept at ingest, camera snapshots, last verifications.
    Table("users", (
        pk("username"), col("role"), col("password_hash"), col("must_change", INT),
        col("disabled", INT), col("created_at"), col("updated_at"), col("failures", INT),
        col("locked_until", null=True))),
    Table("sessions", (
        pk("id_hash"), col("username"), col("created_at"), col("last_seen_at"), col("csrf"))),
    # failed logins of names no user has: they lock like real ones (no enumeration)
    Table("login_failures", (
        pk("username"), col("failures", INT), col("locked_until", null=True),
        col("updated_at"))),
    Table("latest", (
        col("agent_id"), col("topic"), col("seq", BIGINT_SPELLED), col("ts"), col("kind"),
        col("severity"), col("data")),
        ("PRIMARY KEY (agent_id, topic)",)),
    Table("snapshots", (
        col("agent_id"), col("camera_id"), col("jpeg", BYTES), col("width", INT),
        col("height", INT), col("size", INT), col("received_at")),
        ("PRIMARY KEY (agent_id, camera_id)",)),
    Table("verifications", (
        pk("agent_id"), col("verified_at"), col("ok", INT),
        col("checkpoint_seq", BIGINT_SPELLED, null=True), col("stored_events", BIGINT_SPELLED),
        col("problems"), col("by_user"))),
    # rows found in the events table above an agent's signed head that contradict what the
    # agent then signed: moved here by ingest (kept as evidence, never served as events)
    Table("quarantine", (
        pk("id", ROW_ID), col("agent_id"), col("seq", BIGINT_SPELLED), col("boot_id"),
        col("ts"), col("kind"), col("severity"), col("subject"), col("data"),
        col("hash", BYTES), col("received_at"), col("quarantined_at"), col("reason"))),
    # one row per schema version this store went through (migrations.py)
    Table("schema_version", (pk("version", INT), col("applied_at"), col("note"))),
    # The notifications' durable outbox (collector/notify.py): one row per (alert, channel),
    # escalation or digest, unique by `dedupe`; pending until the receiver took it (sent),
    # folded while it waits for its window's digest (then digested).
    Table("notifications", (
        pk("id", ROW_ID), col("dedupe"), col("channel"), col("kind"),
        col("alert_id", BIGINT, null=True), col("payload"), col("state"),
        col("digest_window", null=True), col("created_at"), col("next_at"),
        col("attempts", INT, default="0"), col("last_error", null=True),
        col("sent_at", null=True)),
        ("UNIQUE (dedupe)",), since=3),
    # where the notifier started (first_alert: older alerts never escalate); alerts_seen was
    # its place in the alerts table until schema 6 (kept, no longer read: alerts.planned)
    Table("notify_state", (
        pk("id", INT, check="id = 1"), col("alerts_seen", BIGINT), col("first_alert", BIGINT)),
        since=3),
    # Central workstation policy (store/policy_sql.py, collector/policy.py). policy_meta holds
    # the site-wide change number every change takes (under the store's write lock); each
    # change is one row of policy_changes with who, why and the before/after (JSON).
    Table("policy_meta", (pk("id", INT, check="id = 1"), col("change_no", BIGINT)), since=4),
    # a group's current USB rules (USBGuard text) and netlock allowlist (JSON list), and the
    # change that last set them
    Table("policy_groups", (
        pk("group_name"), col("usb_rules"), col("netlock_allow"), col("changed", BIGINT),
        col("updated_at"), col("updated_by")), since=4),
    Table("policy_changes", (
        pk("change_no", BIGINT), col("kind"), col("group_name", null=True),
        col("agent_id", null=True), col("exception_id", null=True), col("actor"),
        col("reason"), col("at"), col("before_json", null=True), col("after_json", null=True)),
        since=4),
    # a workstation's group, when an admin chose one (else the configured default group)
    Table("policy_assignments", (
        pk("agent_id"), col("group_name"), col("changed", BIGINT), col("assigned_at"),
        col("assigned_by")), since=4),
    # device exceptions: one rule pinned to a device's hash, for "agent:<id>", "group:<g>" or
    # "all"; in force until ended (expired or withdrawn: ended_change, end_reason)
    Table("policy_exceptions", (
        pk("exception_id"), col("rule"), col("scope"), col("device"), col("reason"),
        col("approved_by"), col("approved_at"), col("expires_at", null=True),
        col("approved_change", BIGINT), col("ended_change", BIGINT, null=True),
        col("ended_at", null=True), col("ended_by", null=True),
        col("end_reason", null=True)), since=4),
    # Per-site state several collectors share (issue 23): the signatures of agent-signed
    # requests accepted within their freshness window (protocol/request_signing.py), so one
    # replayed to another collector finds its row; kept until keep_until (Unix ms).
    Table("request_signatures", (
        pk("signature", BYTES), col("agent_id"), col("keep_until", BIGINT)), since=5),
)

INDEXES: tuple[Index, ...] = (
    # one open row per fingerprint, kept by the database (INSERT ... ON CONFLICT), so
    # collectors side by side raise an alert without a lock between them (schema 6)
    Index("alerts_open_fingerprint", "alerts", "fingerprint", where="acked_at IS NULL",
          unique=True, since=6),
    Index("alerts_unplanned", "alerts", "id", where="planned = 0", since=6),
    # each query shape of query_events() walks one of these in (ts, id) order
    # (bench/collector_ingest.py measures the p95)
    Index("events_ts", "events", "ts, id"),
    Index("events_agent_ts", "events", "agent_id, ts, id"),
    Index("events_kind_ts", "events", "kind, ts, id"),
    Index("events_severity_ts", "events", "severity, ts, id"),
    Index("cards_person", "cards", "person_id"),
    Index("templates_person", "templates", "person_id"),
    Index("sessions_user", "sessions", "username"),
    Index("notifications_due", "notifications", "state, next_at, id"),
    Index("notifications_created", "notifications", "created_at, channel"),
    # escalation looks up whether an open critical alert has escalated yet, every poll
    Index("notifications_alert", "notifications", "alert_id, kind"),
    Index("policy_changes_group", "policy_changes", "group_name, change_no"),
    Index("policy_changes_agent", "policy_changes", "agent_id, change_no"),
    Index("policy_exceptions_open", "policy_exceptions", "expires_at",
          where="ended_change IS NULL"),
    Index("request_signatures_expiry", "request_signatures", "keep_until"),
)

# Rows every store starts with, by table: the credentials version the controllers sync by,
# the notifier's place in the alerts (a new store: from the start).
SEED: tuple[tuple[str, str], ...] = (
    ("credentials_meta",
     "INSERT INTO credentials_meta (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING"),
    ("notify_state", "INSERT INTO notify_state (id, alerts_seen, first_alert) VALUES (1, 0, 0) "
                     "ON CONFLICT (id) DO NOTHING"),
    ("policy_meta",
     "INSERT INTO policy_meta (id, change_no) VALUES (1, 0) ON CONFLICT (id) DO NOTHING"),
)

DIALECTS = ("sqlite", "postgres")


def table(name: str) -> Table:
    return next(t for t in TABLES if t.name == name)


def create_statements(dialect: str, tables: tuple[Table, ...] = TABLES,
                      version: int | None = None) -> list[str]:
    """CREATE TABLE / CREATE INDEX (all IF NOT EXISTS) and the seed rows, in order; with
    version, only the indexes that schema version had (a step adds its own later)."""
    if dialect not in DIALECTS:
        raise ValueError(f"dialect: expected one of {DIALECTS}, got {dialect!r}")
    names = {t.name for t in tables}
    return ([t.create(dialect) for t in tables]
            + [i.create() for i in INDEXES if i.table in names
               and (version is None or i.since <= version)]
            + [sql for name, sql in SEED if name in names])


def script(dialect: str) -> str:
    """create_statements() as one script (executescript, or a benchmark's raw store)."""
    return "".join(f"{statement};\n" for statement in create_statements(dialect))


def add_column(table_name: str, column: Column, dialect: str) -> str:
    return f"ALTER TABLE {table_name} ADD COLUMN {column.ddl(dialect)}"
