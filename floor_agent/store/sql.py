"""The SQL both stores share. Written with `?` placeholders; a dialect may rewrite them.

Subclasses provide `_write()` (a cursor inside one write transaction, serialised site-wide:
enrollment, credentials, policy, users, the outbox: rare writes that read then write),
`_row_write()` (a write transaction that takes no site-wide lock: what it changes is guarded by
row locks, the agent's row on ingest, an open alert's row, or the noise alerts' lock) and
`_read()` (a cursor for reads that may run beside writes); the DDL is schema.py's.
"""

from __future__ import annotations

import itertools
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import date
from typing import Any

import orjson

from floor_agent.protocol import credentials as wire
from floor_agent.protocol.checkpoint import GENESIS_HASH, Checkpoint
from floor_agent.protocol.credentials import AccessLevel, Card, Credentials, Person, Template
from floor_agent.protocol.topics import STATE_KINDS, topic_of
from floor_agent.store.chart_sql import ChartSql
from floor_agent.store.interface import (
    BatchDecision,
    D,
    Decide,
    EventPage,
    EventQuery,
    RecordConflict,
    Revocation,
    Store,
    StoreError,
    UnknownRecord,
)
from floor_agent.store.outbox_sql import OutboxSql
from floor_agent.store.policy_sql import PolicySql
from floor_agent.store.records import (
    MAX_NOISE_SOURCES,
    AgentRecord,
    AlertDraft,
    EventRow,
    LatestRow,
)
from floor_agent.store.site_sql import SiteSql

EVENT_COLUMNS = ("id", "agent_id", "seq", "boot_id", "ts", "kind", "severity", "subject", "data",
                 "hash", "received_at")
HASH_AT = EVENT_COLUMNS.index("hash")
ALERT_COLUMNS = ("id", "kind", "severity", "agent_id", "seq", "detail", "created_at",
                 "last_seen_at", "count", "acked_at", "acked_by", "ack_comment", "source")
# Alert lists: open first, then the most severe, then genuine before per-address noise (an
# unauthenticated failure, counted per source), then the newest: a genuine critical alert is
# on the first screen however much noise arrives.
ALERT_ORDER = ("ORDER BY CASE WHEN acked_at IS NULL THEN 0 ELSE 1 END, CASE severity "
               "WHEN 'critical' THEN 0 WHEN 'error' THEN 1 WHEN 'warning' THEN 2 "
               "WHEN 'notice' THEN 3 WHEN 'info' THEN 4 ELSE 5 END, "
               "CASE WHEN source IS NULL THEN 0 ELSE 1 END, id DESC")
QUARANTINE_COLUMNS = ("agent_id", "seq", "boot_id", "ts", "kind", "severity", "subject", "data",
                      "hash", "received_at")
# One event row; the columns are records.EventRow's fields, in their order.
INSERT_EVENT = (f"INSERT INTO events ({', '.join(EventRow._fields)}) "
                f"VALUES ({', '.join('?' for _ in EventRow._fields)})")


class CredentialSql:
    """The door credentials part of SqlStore (mixed in): people, cards, access_levels,
    holidays, templates, the version in credentials_meta and the credential_log.

    Nested values (a person's levels, a level's windows) are stored as the API's JSON, so the
    collector keeps exactly what protocol/credentials.py validated and sends it back unchanged.
    """

    # How a consistent read starts; PostgreSQL asks for a repeatable-read snapshot.
    snapshot_begin = "BEGIN"

    # provided by SqlStore
    _q: Any
    _write: Any
    _read: Any

    def _bump(self, cur: Any, actor: str, now: str, action: str, subject: str,
              **detail: Any) -> int:
        """Next version and its log line, inside the caller's transaction."""
        cur.execute("UPDATE credentials_meta SET version = version + 1 WHERE id = 1")
        cur.execute("SELECT version FROM credentials_meta WHERE id = 1")
        version = int(cur.fetchone()[0])
        cur.execute(self._q("INSERT INTO credential_log (ts, actor, action, subject, version, "
                            "detail) VALUES (?, ?, ?, ?, ?, ?)"),
                    (now, actor, action, subject, version, orjson.dumps(detail).decode()))
        return version

    @contextmanager
    def _consistent_read(self) -> Iterator[Any]:
        """Several SELECTs that see one committed state, without taking the write lock."""
        with self._read() as cur:
            cur.execute(self.snapshot_begin)
            try:
                yield cur
            finally:
                cur.execute("COMMIT")

    def credentials_version(self) -> int:
        with self._read() as cur:
            cur.execute("SELECT version FROM credentials_meta WHERE id = 1")
            return int(cur.fetchone()[0])

    def put_person(self, person: Person, actor: str, now: str) -> int:
        with self._write() as cur:
            for i, level in enumerate(person.access_levels):
                cur.execute(self._q("SELECT 1 FROM access_levels WHERE level_id = ?"), (level,))
                if cur.fetchone() is None:
                    raise UnknownRecord(f"access_levels[{i}]",
                                        f"unknown access level {level!r}; add it first")
            cur.execute(self._q(
                "INSERT INTO people (person_id, name, active, access_levels, duress_fingers, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (person_id) DO UPDATE SET name = excluded.name, "
                "active = excluded.active, access_levels = excluded.access_levels, "
                "duress_fingers = excluded.duress_fingers, updated_at = excluded.updated_at, "
                "revoked_at = CASE WHEN excluded.active = 1 THEN NULL "
                "ELSE people.revoked_at END"),
                (person.person_id, person.name, int(person.active),
                 orjson.dumps(list(person.access_levels)).decode(),
                 orjson.dumps(sorted(person.duress_fingers)).decode(), now, now))
            return self._bump(cur, actor, now, "person.put", person.person_id,
                              active=person.active, access_levels=list(person.access_levels))

    def list_people(self) -> list[dict[str, Any]]:
        with self._consistent_read() as cur:
            cur.execute("SELECT person_id, name, active, access_levels, duress_fingers, "
                        "created_at, updated_at, revoked_at FROM people ORDER BY person_id")
            people = cur.fetchall()
            cur.execute("SELECT uid, person_id, active FROM cards ORDER BY uid")
            cards = cur.fetchall()
            cur.execute("SELECT template_id, person_id, finger, created_at FROM templates "
                        "ORDER BY template_id")
            templates = cur.fetchall()
        out = []
        for row in people:
            item = wire.person_to_json(_person(row))
            item.update(created_at=row[5], updated_at=row[6], revoked_at=row[7],
                        cards=[{"uid": c[0], "active": bool(c[2])} for c in cards
                               if c[1] == row[0]],
                        templates=[{"template_id": t[0], "finger": int(t[2]),
                                    "created_at": t[3]} for t in templates if t[1] == row[0]])
            out.append(item)
        return out

    def revoke_person(self, person_id: str, actor: str, now: str) -> Revocation | None:
        with self._write() as cur:
            cur.execute(self._q("UPDATE people SET active = 0, revoked_at = ?, updated_at = ? "
                                "WHERE person_id = ?"), (now, now, person_id))
            if not cur.rowcount:
                return None
            cur.execute(self._q("UPDATE cards SET active = 0, updated_at = ? "
                                "WHERE person_id = ? AND active = 1"), (now, person_id))
            cards = int(cur.rowcount)
            cur.execute(self._q("DELETE FROM templates WHERE person_id = ?"), (person_id,))
            templates = int(cur.rowcount)
            version = self._bump(cur, actor, now, "person.revoked", person_id,
                                 cards_deactivated=cards, templates_deleted=templates)
        return Revocation(person_id, version, cards, templates)

    def put_card(self, card: Card, actor: str, now: str) -> int:
        with self._write() as cur:
            cur.execute(self._q("SELECT 1 FROM people WHERE person_id = ?"), (card.person_id,))
            if cur.fetchone() is None:
                raise UnknownRecord("person_id", f"unknown person {card.person_id!r}")
            data = wire.card_to_json(card)
            cur.execute(self._q(
                "INSERT INTO cards (uid, person_id, active, valid_from, valid_until, keyed, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (uid) DO UPDATE SET "
                "person_id = excluded.person_id, active = excluded.active, "
                "valid_from = excluded.valid_from, valid_until = excluded.valid_until, "
                "keyed = excluded.keyed, updated_at = excluded.updated_at"),
                (card.uid, card.person_id, int(card.active), data["valid_from"],
                 data["valid_until"], int(card.keyed), now))
            return self._bump(cur, actor, now, "card.put", card.uid, person_id=card.person_id,
                              active=card.active)

    def put_level(self, level: AccessLevel, actor: str, now: str) -> int:
        data = wire.level_to_json(level)
        with self._write() as cur:
            cur.execute(self._q(
                "INSERT INTO access_levels (level_id, doors, windows, on_holidays, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (level_id) DO UPDATE SET "
                "doors = excluded.doors, windows = excluded.windows, "
                "on_holidays = excluded.on_holidays, updated_at = excluded.updated_at"),
                (level.level_id, orjson.dumps(data["doors"]).decode(),
                 orjson.dumps(data["windows"]).decode(), int(level.on_holidays), now))
            return self._bump(cur, actor, now, "level.put", level.level_id,
                              doors=data["doors"], windows=data["windows"])

    def put_holiday(self, day: date, name: str, actor: str, now: str) -> int:
        with self._write() as cur:
            cur.execute(self._q("INSERT INTO holidays (day, name, updated_at) VALUES (?, ?, ?) "
                                "ON CONFLICT (day) DO UPDATE SET name = excluded.name, "
                                "updated_at = excluded.updated_at"), (day.isoformat(), name, now))
            return self._bump(cur, actor, now, "holiday.put", day.isoformat(), name=name)

    def add_template(self, template: Template, actor: str, now: str) -> int:
        with self._write() as cur:
            cur.execute(self._q("SELECT active FROM people WHERE person_id = ?"),
                        (template.person_id,))
            row = cur.fetchone()
            if row is None:
                raise UnknownRecord("person_id", f"unknown person {template.person_id!r}")
            if not row[0]:
                raise RecordConflict(f"person_id: {template.person_id!r} is revoked or "
                                     "inactive; no template is kept for them")
            cur.execute(self._q("SELECT 1 FROM templates WHERE template_id = ?"),
                        (template.template_id,))
            if cur.fetchone() is not None:
                raise RecordConflict(f"template_id: {template.template_id!r} already exists")
            cur.execute(self._q("INSERT INTO templates (template_id, person_id, finger, sealed, "
                                "created_at) VALUES (?, ?, ?, ?, ?)"),
                        (template.template_id, template.person_id, template.finger,
                         template.sealed, now))
            return self._bump(cur, actor, now, "template.added", template.person_id,
                              template_id=template.template_id, finger=template.finger)

    def credentials_snapshot(self) -> Credentials:
        with self._consistent_read() as cur:
            cur.execute("SELECT version FROM credentials_meta WHERE id = 1")
            version = int(cur.fetchone()[0])
            cur.execute("SELECT person_id, name, active, access_levels, duress_fingers "
                        "FROM people")
            people = [_person(row) for row in cur.fetchall()]
            cur.execute("SELECT uid, person_id, active, valid_from, valid_until, keyed "
                        "FROM cards")
            cards = cur.fetchall()
            cur.execute("SELECT level_id, doors, windows, on_holidays FROM access_levels")
            levels = cur.fetchall()
            cur.execute("SELECT day FROM holidays")
            holidays = cur.fetchall()
            cur.execute("SELECT template_id, person_id, finger, sealed FROM templates "
                        "ORDER BY template_id")
            templates = cur.fetchall()
        by_person: dict[str, list[Template]] = {}
        for template_id, person_id, finger, sealed in templates:
            by_person.setdefault(person_id, []).append(
                Template(template_id, person_id, int(finger), bytes(sealed)))
        return Credentials(
            people={p.person_id: p for p in people},
            cards={row[0]: wire.card_from_json(dict(
                uid=row[0], person_id=row[1], active=bool(row[2]), valid_from=row[3],
                valid_until=row[4], keyed=bool(row[5]))) for row in cards},
            levels={row[0]: wire.level_from_json(dict(
                level_id=row[0], doors=orjson.loads(row[1]), windows=orjson.loads(row[2]),
                on_holidays=bool(row[3]))) for row in levels},
            holidays=frozenset(date.fromisoformat(row[0]) for row in holidays),
            templates={k: tuple(v) for k, v in by_person.items()},
            version=version)

    def credential_log(self, limit: int = 100) -> list[dict[str, Any]]:
        cols = ("id", "ts", "actor", "action", "subject", "version", "detail")
        with self._read() as cur:
            cur.execute(self._q(f"SELECT {', '.join(cols)} FROM credential_log "
                                "ORDER BY id DESC LIMIT ?"), (limit,))
            rows = cur.fetchall()
        return [dict(zip(cols, row, strict=True)) | {"detail": orjson.loads(row[6])}
                for row in rows]


def _person(row: tuple[Any, ...]) -> Person:
    return Person(row[0], row[1], bool(row[2]), tuple(orjson.loads(row[3])),
                  frozenset(orjson.loads(row[4])))


API_KEY_COLUMNS = ("name", "scopes", "created_at", "expires_at", "last_used_at", "revoked_at")
USER_COLUMNS = ("username", "role", "password_hash", "must_change", "disabled", "created_at",
                "updated_at", "failures", "locked_until")
USER_FIELDS = frozenset(("role", "password_hash", "must_change", "disabled", "failures",
                         "locked_until"))
LATEST_COLUMNS = ("agent_id", "topic", "seq", "ts", "kind", "severity", "data")
UPSERT_LATEST = (
    "INSERT INTO latest (agent_id, topic, seq, ts, kind, severity, data) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (agent_id, topic) DO UPDATE SET "
    "seq = excluded.seq, ts = excluded.ts, kind = excluded.kind, severity = excluded.severity, "
    "data = excluded.data WHERE excluded.seq > latest.seq")


def latest_rows(rows: list[EventRow]) -> list[LatestRow]:
    """The newest event row per topic of one batch (rows in seq order), as `latest` rows."""
    newest: dict[tuple[str, str], LatestRow] = {}
    for row in rows:
        topic = topic_of(row.kind, row.data)
        if topic is not None:
            newest[(row.agent_id, topic)] = LatestRow(row.agent_id, topic, row.seq, row.ts,
                                                      row.kind, row.severity, row.data)
    return list(newest.values())


class DashboardSql:
    """The dashboard part of SqlStore (mixed in): users, sessions, the `latest` state table,
    camera snapshots and the last verification per agent."""

    _q: Any
    _write: Any
    _read: Any

    def add_user(self, username: str, role: str, password_hash: str, must_change: bool,
                 now: str) -> bool:
        with self._write() as cur:
            cur.execute(self._q("SELECT 1 FROM users WHERE username = ?"), (username,))
            if cur.fetchone() is not None:
                return False
            cur.execute(self._q(
                "INSERT INTO users (username, role, password_hash, must_change, disabled, "
                "created_at, updated_at, failures) VALUES (?, ?, ?, ?, 0, ?, ?, 0)"),
                (username, role, password_hash, int(must_change), now, now))
            return True

    def _user(self, row: tuple[Any, ...]) -> dict[str, Any]:
        item = dict(zip(USER_COLUMNS, row, strict=True))
        item["must_change"] = bool(item["must_change"])
        item["disabled"] = bool(item["disabled"])
        item["failures"] = int(item["failures"])
        return item

    def get_user(self, username: str) -> dict[str, Any] | None:
        with self._read() as cur:
            cur.execute(self._q(f"SELECT {', '.join(USER_COLUMNS)} FROM users "
                                "WHERE username = ?"), (username,))
            row = cur.fetchone()
        return None if row is None else self._user(row)

    def list_users(self) -> list[dict[str, Any]]:
        with self._read() as cur:
            cur.execute(f"SELECT {', '.join(USER_COLUMNS)} FROM users ORDER BY username")
            return [self._user(row) for row in cur.fetchall()]

    def update_user(self, username: str, now: str, **fields: Any) -> bool:
        unknown = set(fields) - USER_FIELDS
        if unknown:
            raise ValueError(f"update_user: unknown fields {sorted(unknown)}")
        values = [int(v) if isinstance(v, bool) else v for v in fields.values()]
        sets = ", ".join(f"{name} = ?" for name in fields)
        with self._write() as cur:
            cur.execute(self._q(f"UPDATE users SET {sets}, updated_at = ? WHERE username = ?"),
                        (*values, now, username))
            return bool(cur.rowcount)

    def add_session(self, id_hash: str, username: str, csrf: str, now: str) -> None:
        with self._write() as cur:
            cur.execute(self._q("INSERT INTO sessions (id_hash, username, created_at, "
                                "last_seen_at, csrf) VALUES (?, ?, ?, ?, ?)"),
                        (id_hash, username, now, now, csrf))

    def get_session(self, id_hash: str) -> dict[str, Any] | None:
        with self._read() as cur:
            cur.execute(self._q("SELECT username, created_at, last_seen_at, csrf FROM sessions "
                                "WHERE id_hash = ?"), (id_hash,))
            row = cur.fetchone()
        if row is None:
            return None
        return dict(zip(("username", "created_at", "last_seen_at", "csrf"), row, strict=True))

    def touch_session(self, id_hash: str, now: str) -> None:
        with self._write() as cur:
            cur.execute(self._q("UPDATE sessions SET last_seen_at = ? WHERE id_hash = ?"),
                        (now, id_hash))

    def delete_session(self, id_hash: str) -> None:
        with self._write() as cur:
            cur.execute(self._q("DELETE FROM sessions WHERE id_hash = ?"), (id_hash,))

    def delete_sessions_of(self, username: str) -> int:
        with self._write() as cur:
            cur.execute(self._q("DELETE FROM sessions WHERE username = ?"), (username,))
            return int(cur.rowcount)

    def prune_sessions(self, created_before: str, seen_before: str) -> int:
        with self._write() as cur:
            cur.execute(self._q("DELETE FROM sessions WHERE created_at < ? OR last_seen_at < ?"),
                        (created_before, seen_before))
            return int(cur.rowcount)

    # A failed login is counted, and the lock decided, by one statement: parallel guesses each
    # add one (never N reads of the same count), and a guess at a locked name counts nothing.
    _FAILURE_SET = ("failures = CASE WHEN {t}.failures + 1 >= ? THEN 0 "
                    "ELSE {t}.failures + 1 END, "
                    "locked_until = CASE WHEN {t}.failures + 1 >= ? THEN ? "
                    "ELSE {t}.locked_until END, updated_at = ?")

    def count_login_failure(self, username: str, known: bool, now: str, max_failures: int,
                            lock_until: str) -> tuple[int, str | None] | None:
        with self._write() as cur:
            sets = self._FAILURE_SET.format(t="users" if known else "login_failures")
            params = (max_failures, max_failures, lock_until, now)
            if known:
                cur.execute(self._q(f"UPDATE users SET {sets} WHERE username = ? AND "
                                    "(locked_until IS NULL OR locked_until <= ?) "
                                    "RETURNING failures, locked_until"),
                            (*params, username, now))
            else:
                first = (0, lock_until) if max_failures <= 1 else (1, None)
                cur.execute(self._q(
                    "INSERT INTO login_failures (username, failures, locked_until, updated_at) "
                    f"VALUES (?, ?, ?, ?) ON CONFLICT (username) DO UPDATE SET {sets} "
                    "WHERE login_failures.locked_until IS NULL "
                    "OR login_failures.locked_until <= ? RETURNING failures, locked_until"),
                    (username, *first, now, *params, now))
            row = cur.fetchone()
        return None if row is None else (int(row[0]), row[1])

    def login_locked_until(self, username: str) -> str | None:
        with self._read() as cur:
            cur.execute(self._q("SELECT locked_until FROM login_failures WHERE username = ?"),
                        (username,))
            row = cur.fetchone()
        return None if row is None else row[0]

    def count_login_success(self, username: str, now: str) -> bool:
        with self._write() as cur:
            cur.execute(self._q("UPDATE users SET failures = 0, locked_until = NULL, "
                                "updated_at = ? WHERE username = ? AND disabled = 0 AND "
                                "(locked_until IS NULL OR locked_until <= ?)"),
                        (now, username, now))
            return bool(cur.rowcount)

    def prune_login_failures(self, before: str) -> int:
        with self._write() as cur:
            cur.execute(self._q("DELETE FROM login_failures WHERE updated_at < ? AND "
                                "(locked_until IS NULL OR locked_until < ?)"), (before, before))
            return int(cur.rowcount)

    def _upsert_latest(self, cur: Any, rows: list[LatestRow]) -> None:
        if rows:
            cur.executemany(self._q(UPSERT_LATEST), rows)

    def rebuild_latest(self) -> int:
        newest: dict[tuple[str, str], LatestRow] = {}
        with self._read() as cur:
            for kind in sorted(STATE_KINDS):  # one index range each
                cur.execute(self._q("SELECT agent_id, seq, ts, kind, severity, data FROM events "
                                    "WHERE kind = ?"), (kind,))
                while rows := cur.fetchmany(10_000):
                    for agent_id, seq, ts, _, severity, data in rows:
                        topic = topic_of(kind, data)
                        if topic is None:
                            continue
                        held = newest.get((agent_id, topic))
                        if held is None or held.seq < seq:
                            newest[(agent_id, topic)] = LatestRow(agent_id, topic, seq, ts, kind,
                                                                  severity, data)
        with self._write() as cur:
            self._upsert_latest(cur, list(newest.values()))
        return len(newest)

    def latest_states(self, agent_id: str | None = None) -> list[dict[str, Any]]:
        sql = f"SELECT {', '.join(LATEST_COLUMNS)} FROM latest"
        params: tuple[Any, ...] = ()
        if agent_id is not None:
            sql += " WHERE agent_id = ?"
            params = (agent_id,)
        with self._read() as cur:
            cur.execute(self._q(sql + " ORDER BY agent_id, topic"), params)
            rows = cur.fetchall()
        out = []
        for row in rows:
            item = dict(zip(LATEST_COLUMNS, row, strict=True))
            item["data"] = orjson.loads(item["data"])
            out.append(item)
        return out

    def alert_counts(self) -> dict[tuple[str | None, str], int]:
        with self._read() as cur:
            cur.execute("SELECT agent_id, kind, count(*) FROM alerts GROUP BY agent_id, kind")
            return {(row[0], row[1]): int(row[2]) for row in cur.fetchall()}

    def put_snapshot(self, agent_id: str, camera_id: str, jpeg: bytes, width: int, height: int,
                     now: str) -> None:
        with self._write() as cur:
            cur.execute(self._q(
                "INSERT INTO snapshots (agent_id, camera_id, jpeg, width, height, size, "
                "received_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (agent_id, camera_id) "
                "DO UPDATE SET jpeg = excluded.jpeg, width = excluded.width, "
                "height = excluded.height, size = excluded.size, "
                "received_at = excluded.received_at"),
                (agent_id, camera_id, jpeg, width, height, len(jpeg), now))

    def get_snapshot(self, agent_id: str, camera_id: str) -> dict[str, Any] | None:
        with self._read() as cur:
            cur.execute(self._q("SELECT jpeg, width, height, received_at FROM snapshots "
                                "WHERE agent_id = ? AND camera_id = ?"), (agent_id, camera_id))
            row = cur.fetchone()
        if row is None:
            return None
        return {"jpeg": bytes(row[0]), "width": int(row[1]), "height": int(row[2]),
                "received_at": row[3]}

    def list_snapshots(self) -> list[dict[str, Any]]:
        cols = ("agent_id", "camera_id", "width", "height", "size", "received_at")
        with self._read() as cur:
            cur.execute(f"SELECT {', '.join(cols)} FROM snapshots ORDER BY agent_id, camera_id")
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def put_verification(self, agent_id: str, ok: bool, checkpoint_seq: int | None,
                         stored_events: int, problems: list[str], by: str, now: str) -> None:
        with self._write() as cur:
            cur.execute(self._q(
                "INSERT INTO verifications (agent_id, verified_at, ok, checkpoint_seq, "
                "stored_events, problems, by_user) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (agent_id) DO UPDATE SET verified_at = excluded.verified_at, "
                "ok = excluded.ok, checkpoint_seq = excluded.checkpoint_seq, "
                "stored_events = excluded.stored_events, problems = excluded.problems, "
                "by_user = excluded.by_user"),
                (agent_id, now, int(ok), checkpoint_seq, stored_events,
                 orjson.dumps(problems).decode(), by))

    def list_verifications(self) -> dict[str, dict[str, Any]]:
        cols = ("agent_id", "verified_at", "ok", "checkpoint_seq", "stored_events", "problems",
                "by_user")
        with self._read() as cur:
            cur.execute(f"SELECT {', '.join(cols)} FROM verifications")
            rows = cur.fetchall()
        out = {}
        for row in rows:
            item = dict(zip(cols, row, strict=True))
            item["ok"] = bool(item["ok"])
            item["problems"] = orjson.loads(item["problems"])
            out[item["agent_id"]] = item
        return out


class SqlStore(ChartSql, OutboxSql, PolicySql, DashboardSql, CredentialSql, SiteSql, Store):
    """Store over a DB-API connection; the dialect subclasses give the connections."""

    placeholder = "?"

    def _q(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    @abstractmethod
    def _write(self) -> AbstractContextManager[Any]: ...

    @abstractmethod
    def _read(self) -> AbstractContextManager[Any]: ...

    def _row_write(self) -> AbstractContextManager[Any]:
        """A write transaction without the site-wide lock (see the module's docstring)."""
        return self._write()

    # how the agent's row is read on ingest: PostgreSQL locks it (FOR UPDATE) until commit
    lock_agent_row = ""
    # errors after which an ingest transaction is run again from its first read (a deadlock
    # PostgreSQL broke by aborting this side); SQLite takes one writer at a time and has none
    retry_errors: tuple[type[BaseException], ...] = ()
    MAX_TRANSACTION_ATTEMPTS = 5

    def ping(self) -> None:
        with self._read() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()

    def _lock_noise_alerts(self, cur: Any) -> None:
        """Held to commit by a transaction that opens an alert row counted against a client
        address: the bound on such rows per kind is then kept across collectors. SQLite: its
        one writer. Agents' batches never take it."""

    # -- enrollment ----------------------------------------------------------------------
    def add_token(self, token_hash: bytes, role: str, created_at: str, expires_at: str) -> None:
        with self._row_write() as cur:
            cur.execute(self._q("INSERT INTO tokens (token_hash, role, created_at, expires_at) "
                                "VALUES (?, ?, ?, ?)"), (token_hash, role, created_at, expires_at))

    def consume_token(self, token_hash: bytes, now: str, agent_id: str) -> str | None:
        # one conditional UPDATE: of two enrollments racing with one token (two collectors),
        # the row lock lets one through and the other finds it used
        with self._row_write() as cur:
            cur.execute(self._q("UPDATE tokens SET used_at = ?, used_by = ? WHERE token_hash = ? "
                                "AND used_at IS NULL AND expires_at > ? RETURNING role"),
                        (now, agent_id, token_hash, now))
            row = cur.fetchone()
        return None if row is None else str(row[0])

    def add_agent(self, agent_id: str, role: str, public_key: str, hostname: str,
                  enrolled_at: str) -> bool:
        with self._write() as cur:
            # ids are ASCII (AGENT_ID_RE): lower() is the same in both dialects
            cur.execute(self._q("SELECT 1 FROM agents WHERE lower(agent_id) = lower(?)"),
                        (agent_id,))
            if cur.fetchone() is not None:
                return False
            cur.execute(self._q(
                "INSERT INTO agents (agent_id, role, public_key, hostname, enrolled_at, head_seq, "
                "head_hash) VALUES (?, ?, ?, ?, ?, 0, ?)"),
                (agent_id, role, public_key, hostname, enrolled_at, GENESIS_HASH))
            return True

    def enrolled_id_like(self, agent_id: str) -> str | None:
        """The enrolled id equal to agent_id ignoring case (RT-WS-01 for rt-ws-01), if any."""
        with self._read() as cur:
            cur.execute(self._q("SELECT agent_id FROM agents WHERE lower(agent_id) = lower(?) "
                                "ORDER BY agent_id LIMIT 1"), (agent_id,))
            row = cur.fetchone()
        return None if row is None else str(row[0])

    def get_agent(self, agent_id: str) -> AgentRecord | None:
        with self._read() as cur:
            return self._agent_record(cur, agent_id)

    def _agent_record(self, cur: Any, agent_id: str, lock: str = "") -> AgentRecord | None:
        cur.execute(self._q("SELECT agent_id, role, public_key, head_seq, head_hash, "
                            "checkpoint_seq, checkpoint_ts FROM agents WHERE agent_id = ?"
                            + lock), (agent_id,))
        row = cur.fetchone()
        if row is None:
            return None
        return AgentRecord(row[0], row[1], row[2], int(row[3]), bytes(row[4]),
                           None if row[5] is None else int(row[5]), row[6])

    def list_agents(self) -> list[dict[str, Any]]:
        cols = ("agent_id", "role", "hostname", "enrolled_at", "head_seq", "head_hash",
                "checkpoint_seq", "checkpoint_hash", "checkpoint_ts", "checkpoint_received_at",
                "last_seen_at", "events_total")
        with self._read() as cur:
            cur.execute(f"SELECT {', '.join(cols)} FROM agents ORDER BY agent_id")
            rows = cur.fetchall()
        out = []
        for row in rows:
            item = dict(zip(cols, row, strict=True))
            for name in ("head_hash", "checkpoint_hash"):
                item[name] = bytes(item[name]).hex() if item[name] is not None else None
            out.append(item)
        return out

    def add_api_key(self, key_hash: bytes, name: str, created_at: str,
                    scopes: str | None = None, expires_at: str | None = None) -> bool:
        with self._write() as cur:
            cur.execute(self._q("SELECT 1 FROM api_keys WHERE name = ? AND revoked_at IS NULL"),
                        (name,))
            if cur.fetchone() is not None:
                return False
            cur.execute(self._q("INSERT INTO api_keys (key_hash, name, created_at, scopes, "
                                "expires_at) VALUES (?, ?, ?, ?, ?)"),
                        (key_hash, name, created_at, scopes, expires_at))
            return True

    def api_key_name(self, key_hash: bytes) -> str | None:
        with self._read() as cur:
            cur.execute(self._q("SELECT name FROM api_keys WHERE key_hash = ? "
                                "AND revoked_at IS NULL"), (key_hash,))
            row = cur.fetchone()
        return None if row is None else str(row[0])

    def get_api_key(self, key_hash: bytes) -> dict[str, Any] | None:
        with self._read() as cur:
            cur.execute(self._q(f"SELECT {', '.join(API_KEY_COLUMNS)} FROM api_keys "
                                "WHERE key_hash = ?"), (key_hash,))
            row = cur.fetchone()
        return None if row is None else dict(zip(API_KEY_COLUMNS, row, strict=True))

    def list_api_keys(self) -> list[dict[str, Any]]:
        with self._read() as cur:
            cur.execute(f"SELECT {', '.join(API_KEY_COLUMNS)} FROM api_keys "
                        "ORDER BY name, created_at")
            return [dict(zip(API_KEY_COLUMNS, row, strict=True)) for row in cur.fetchall()]

    def revoke_api_key(self, name: str, now: str) -> int:
        with self._write() as cur:
            cur.execute(self._q("UPDATE api_keys SET revoked_at = ? WHERE name = ? "
                                "AND revoked_at IS NULL"), (now, name))
            return int(cur.rowcount)

    def touch_api_key(self, key_hash: bytes, now: str) -> None:
        with self._write() as cur:
            cur.execute(self._q("UPDATE api_keys SET last_used_at = ? WHERE key_hash = ?"),
                        (now, key_hash))

    # -- ingest --------------------------------------------------------------------------
    def stored_hashes(self, agent_id: str, seqs: list[int]) -> dict[int, bytes]:
        with self._read() as cur:
            return self._stored_hashes(cur, agent_id, seqs)

    def _stored_hashes(self, cur: Any, agent_id: str, seqs: list[int]) -> dict[int, bytes]:
        if not seqs:
            return {}
        low, high = min(seqs), max(seqs)
        cur.execute(self._q("SELECT seq, hash FROM events WHERE agent_id = ? "
                            "AND seq BETWEEN ? AND ?"), (agent_id, low, high))
        found = {int(seq): bytes(digest) for seq, digest in cur.fetchall()}
        if low <= 0:
            found[0] = GENESIS_HASH
        return found

    def last_stored_seq(self, agent_id: str, at_most: int) -> int | None:
        """The highest seq stored for the agent at or below at_most (one index seek)."""
        with self._read() as cur:
            return self._last_stored_seq(cur, agent_id, at_most)

    def _last_stored_seq(self, cur: Any, agent_id: str, at_most: int) -> int | None:
        cur.execute(self._q("SELECT max(seq) FROM events WHERE agent_id = ? AND seq <= ?"),
                    (agent_id, at_most))
        row = cur.fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def ingest_batch(self, agent_id: str, seqs: list[int], checkpoint: Checkpoint,
                     received_at: str, decide: Decide[D], rows: Sequence[EventRow] = ()) -> D:
        """Decided and written in one transaction holding the agent's row (PostgreSQL: FOR
        UPDATE; SQLite: its one writer): a copy of the batch at another collector, or the
        agent's heartbeat racing its next batch, is decided on what the other one committed,
        never on what it read before. No site-wide lock: other agents' batches run beside.
        `rows`, the batch's rows, are put in the dialect's insert form before the transaction
        starts (the usual decision stores them all)."""
        encoded = self._event_rows(list(rows)) if rows else None
        for attempt in itertools.count(1):
            try:
                with self._row_write() as cur:
                    agent = self._agent_record(cur, agent_id, self.lock_agent_row)
                    stored: dict[int, bytes] = {}
                    last = None
                    if agent is not None:
                        stored = self._stored_hashes(cur, agent_id, seqs)
                        last = self._last_stored_seq(cur, agent_id, agent.head_seq)
                    decision = decide(agent, stored, last)
                    if agent is not None and decision.noise is None:
                        self._write_decision(cur, agent, checkpoint, received_at, decision,
                                             encoded if decision.store is rows else None)
                    return decision
            except self.retry_errors:
                if attempt >= self.MAX_TRANSACTION_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def _write_decision(self, cur: Any, agent: AgentRecord, checkpoint: Checkpoint,
                        received_at: str, decision: BatchDecision, encoded: Any) -> None:
        if decision.duplicate:
            return
        if not decision.accepted:
            self._upsert_alerts(cur, decision.alerts, received_at)
            return
        if encoded is None and decision.store:
            encoded = self._event_rows(decision.store)
        self._commit(cur, agent.agent_id, encoded, decision.store, checkpoint,
                     decision.new_head, decision.alerts, received_at, decision.quarantine,
                     expect_head=agent.head_seq)

    def commit_batch(self, agent_id: str, events: list[EventRow],
                     checkpoint: Checkpoint, new_head: tuple[int, bytes] | None,
                     alerts: list[AlertDraft], received_at: str,
                     quarantine: Sequence[int] = ()) -> None:
        # What needs no database is done before the transaction starts.
        rows = self._event_rows(events) if events else None
        with self._row_write() as cur:
            if self.lock_agent_row:
                self._agent_record(cur, agent_id, self.lock_agent_row)
            self._commit(cur, agent_id, rows, events, checkpoint, new_head, alerts, received_at,
                         quarantine)

    def _commit(self, cur: Any, agent_id: str, rows: Any, events: list[EventRow],
                checkpoint: Checkpoint, new_head: tuple[int, bytes] | None,
                alerts: list[AlertDraft], received_at: str, quarantine: Sequence[int],
                expect_head: int | None = None) -> None:
        """The batch's writes inside the caller's transaction; with expect_head, the head
        moves only from the head the decision was made on (compare-and-set): a writer that
        bypassed the agent's lock makes the whole batch roll back instead of going stale."""
        sets = ("checkpoint_seq = ?, checkpoint_hash = ?, checkpoint_ts = ?, checkpoint_sig = ?, "
                "checkpoint_boot_id = ?, checkpoint_received_at = ?, last_seen_at = ?, "
                "events_total = events_total + ?")
        params: tuple[Any, ...] = (checkpoint.seq, checkpoint.hash, checkpoint.ts,
                                   checkpoint.signature, checkpoint.boot_id, received_at,
                                   received_at, len(events))
        if new_head is not None:
            sets += ", head_seq = ?, head_hash = ?"
            params += (new_head[0], new_head[1])
        where = "agent_id = ?"
        key: tuple[Any, ...] = (agent_id,)
        if expect_head is not None:
            where += " AND head_seq = ?"
            key += (expect_head,)
        if quarantine:
            self._quarantine(cur, agent_id, quarantine, received_at)
        if rows is not None:
            self._insert_events(cur, rows)
            self._upsert_latest(cur, latest_rows(events))
        cur.execute(self._q(f"UPDATE agents SET {sets} WHERE {where}"), (*params, *key))
        if expect_head is not None and cur.rowcount != 1:
            raise StoreError(f"agent {agent_id}: its head moved from {expect_head} while its "
                             f"batch was decided (a writer without the agent's lock)")
        self._upsert_alerts(cur, alerts, received_at)

    def _quarantine(self, cur: Any, agent_id: str, seqs: Sequence[int], now: str) -> None:
        """Move stored rows the agent's signed batch contradicts out of `events` (above its
        head: never covered by a checkpoint), inside the caller's transaction."""
        columns = ", ".join(QUARANTINE_COLUMNS)
        for seq in seqs:
            cur.execute(self._q(
                f"INSERT INTO quarantine ({columns}, quarantined_at, reason) "
                f"SELECT {columns}, ?, ? FROM events WHERE agent_id = ? AND seq = ?"),
                (now, "above the signed head, contradicted by the agent's signed batch",
                 agent_id, seq))
            cur.execute(self._q("DELETE FROM events WHERE agent_id = ? AND seq = ?"),
                        (agent_id, seq))

    def list_quarantine(self, agent_id: str | None = None) -> list[dict[str, Any]]:
        """Quarantined rows (evidence of a forged store), oldest first."""
        columns = ("id", *QUARANTINE_COLUMNS, "quarantined_at", "reason")
        sql = f"SELECT {', '.join(columns)} FROM quarantine"
        params: tuple[Any, ...] = ()
        if agent_id is not None:
            sql += " WHERE agent_id = ?"
            params = (agent_id,)
        with self._read() as cur:
            cur.execute(self._q(sql + " ORDER BY id"), params)
            rows = cur.fetchall()
        out = []
        for row in rows:
            item = dict(zip(columns, row, strict=True))
            item["hash"] = bytes(item["hash"]).hex()
            out.append(item)
        return out

    def _event_rows(self, events: list[EventRow]) -> Any:
        """What _insert_events() takes: computed before the write lock is taken."""
        return events

    def _insert_events(self, cur: Any, rows: Any) -> None:
        """Insert the _event_rows() in order, inside the caller's transaction."""
        cur.executemany(self._q(INSERT_EVENT), rows)

    def add_alerts(self, alerts: list[AlertDraft], now: str) -> None:
        if alerts:
            with self._row_write() as cur:
                self._upsert_alerts(cur, alerts, now)

    def _upsert_alerts(self, cur: Any, alerts: list[AlertDraft], now: str) -> None:
        """Count each alert on its open row, or open one, with no lock between collectors.

        An open alert seen again (a stick plugged again) is one UPDATE of its row, in
        fingerprint order so that two batches touching the same rows take them in one order.
        The rest open in the order given (their ids) by INSERT ... ON CONFLICT on the unique
        index of open fingerprints: when another collector opened the same one meanwhile, it
        is counted there, never opened twice.

        Alerts counted against a client address (unauthenticated noise, never on an agent's
        batch) keep a bounded number of open rows per kind: past MAX_NOISE_SOURCES addresses
        share one row. Counting those and choosing is one decision, so opening such a row
        takes the noise lock (_lock_noise_alerts) first.
        """
        missed = [i for i in sorted(range(len(alerts)), key=lambda i: alerts[i].fingerprint)
                  if not self._count_open_alert(cur, alerts[i], now)]
        for alert in (alerts[i] for i in sorted(missed)):
            fingerprint, source = alert.fingerprint, alert.source
            if source is not None:
                self._lock_noise_alerts(cur)
                prefix = f"src:{alert.kind}:"  # the open-alerts index, one range of it
                cur.execute(self._q("SELECT count(*) FROM alerts WHERE fingerprint >= ? AND "
                                    "fingerprint < ? AND acked_at IS NULL"),
                            (prefix, prefix[:-1] + ";"))
                if int(cur.fetchone()[0]) >= MAX_NOISE_SOURCES:
                    source = "other addresses"
                    fingerprint = f"src:{alert.kind}:*"
            cur.execute(self._q(
                "INSERT INTO alerts (fingerprint, kind, severity, agent_id, seq, detail, "
                "created_at, last_seen_at, count, source) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (fingerprint) WHERE acked_at IS NULL DO UPDATE SET "
                "count = alerts.count + excluded.count, "
                "last_seen_at = excluded.last_seen_at, detail = excluded.detail"),
                (fingerprint, alert.kind, alert.severity, alert.agent_id, alert.seq,
                 alert.detail, now, now, alert.count, source))

    def _count_open_alert(self, cur: Any, alert: AlertDraft, now: str) -> bool:
        """Count the alert on its open row; False when its fingerprint has none open."""
        cur.execute(self._q("UPDATE alerts SET count = count + ?, last_seen_at = ?, detail = ? "
                            "WHERE fingerprint = ? AND acked_at IS NULL"),
                    (alert.count, now, alert.detail, alert.fingerprint))
        return bool(cur.rowcount == 1)

    def touch_agent(self, agent_id: str, now: str) -> None:
        with self._row_write() as cur:
            cur.execute(self._q("UPDATE agents SET last_seen_at = ? WHERE agent_id = ?"),
                        (now, agent_id))

    # -- queries -------------------------------------------------------------------------
    def query_events(self, query: EventQuery) -> EventPage:
        """Events newest first, as one `... ORDER BY ts DESC, id DESC LIMIT n` would give them.

        A B-tree on (column, ts, id) serves `column = v ORDER BY ts DESC` by walking backwards
        and stopping after n rows, but not a set of values (several severities, or every kind
        under a kind_prefix): SQLite then fetches and sorts every match, hundreds of thousands
        of rows for 'net.' or 'warning or worse'. So a set of values is queried as one branch
        per value, each walking its own index range for at most n rows, and the branches are
        merged by (ts, id) in one UNION ALL statement: the same rows in the same order.
        """
        where: list[str] = []
        params: list[Any] = []
        if query.agent_id:
            where.append("agent_id = ?")
            params.append(query.agent_id)
        if query.kind:
            where.append("kind = ?")
            params.append(query.kind)
        if query.kind_prefix:
            where.append("kind >= ? AND kind < ?")
            params += [query.kind_prefix, query.kind_prefix + "\U0010ffff"]
        if query.since:
            where.append("ts >= ?")
            params.append(query.since)
        if query.until:
            where.append("ts < ?")
            params.append(query.until)
        if query.cursor:
            # `ts <= ?` is implied by the OR; it is there so the index range starts at the
            # cursor instead of at the newest row (deep pages would scan everything after it).
            where.append("ts <= ? AND (ts < ? OR (ts = ? AND id < ?))")
            params += [query.cursor[0], query.cursor[0], query.cursor[0], query.cursor[1]]
        severities = list(dict.fromkeys(query.severities))
        if query.by_received:
            return self._received_page(where, params, severities, query)
        prefix = query.kind_prefix if query.kind_prefix and not query.kind else None
        with self._read() as cur:
            kinds = self._kinds_between(cur, prefix, prefix + "\U0010ffff") if prefix else []
            rows = self._newest(cur, where, params, kinds, severities, query.limit + 1)
            if prefix and kinds and self._kinds_between(cur, prefix,
                                                        prefix + "\U0010ffff") != kinds:
                # A kind appeared between the two reads: ask again without branching on kind.
                rows = self._newest(cur, where, params, [], severities, query.limit + 1)
        page = EventPage([_event_dict(row) for row in rows[: query.limit]])
        if len(rows) > query.limit and page.events:
            last = page.events[-1]
            page.next_cursor = (last["ts"], last["id"])
        return page

    def _received_page(self, where: list[str], params: list[Any], severities: list[str],
                       query: EventQuery) -> EventPage:
        """One page newest received first: by id (ids grow in commit order), or for one
        agent by seq on its (agent_id, seq) key, the same order without a sort."""
        if query.cursor:
            raise ValueError("by_received pages have no cursor")
        terms, values = list(where), list(params)
        if severities:
            terms.append(f"severity IN ({', '.join('?' for _ in severities)})")
            values += severities
        sql = f"SELECT {', '.join(EVENT_COLUMNS)} FROM events"
        if terms:
            sql += " WHERE " + " AND ".join(terms)
        sql += " ORDER BY seq DESC" if query.agent_id else " ORDER BY id DESC"
        with self._read() as cur:
            cur.execute(self._q(sql + " LIMIT ?"), [*values, query.limit])
            rows = cur.fetchall()
        return EventPage([_event_dict(row) for row in rows])

    MAX_BRANCHES = 64

    def _kinds_between(self, cur: Any, low: str, high: str) -> list[str]:
        """Distinct stored kinds in [low, high): one index seek each, no scan.

        [] when there are more than MAX_BRANCHES of them (the caller then does not branch).
        """
        kinds: list[str] = []
        op, value = ">=", low
        while True:
            cur.execute(self._q(f"SELECT kind FROM events WHERE kind {op} ? AND kind < ? "
                                "ORDER BY kind LIMIT 1"), (value, high))
            row = cur.fetchone()
            if row is None:
                return kinds
            if len(kinds) == self.MAX_BRANCHES:
                return []
            kinds.append(row[0])
            op, value = ">", row[0]

    def _newest(self, cur: Any, where: list[str], params: list[Any], kinds: list[str],
                severities: list[str], limit: int) -> list[tuple[Any, ...]]:
        """The newest `limit` rows matching where, one of kinds (if any), one of severities."""
        kind_values: list[str | None] = list(kinds) or [None]
        severity_values: list[str | None] = [None]
        if len(severities) * len(kind_values) <= self.MAX_BRANCHES:
            severity_values = list(severities) or [None]
        columns = ", ".join(EVENT_COLUMNS)
        branches: list[str] = []
        all_params: list[Any] = []
        for kind in kind_values:
            for severity in severity_values:
                terms, values = list(where), list(params)
                if kind is not None:
                    terms.append("kind = ?")
                    values.append(kind)
                if severity is not None:
                    terms.append("severity = ?")
                    values.append(severity)
                elif severities:
                    terms.append(f"severity IN ({', '.join('?' for _ in severities)})")
                    values += severities
                sql = f"SELECT {columns} FROM events"
                if terms:
                    sql += " WHERE " + " AND ".join(terms)
                branches.append(sql + " ORDER BY ts DESC, id DESC LIMIT ?")
                all_params += [*values, limit]
        if len(branches) == 1:
            sql = branches[0]
        else:
            sql = " UNION ALL ".join(f"SELECT * FROM ({branch}) AS b{i}"
                                     for i, branch in enumerate(branches))
            sql += " ORDER BY ts DESC, id DESC LIMIT ?"
            all_params.append(limit)
        cur.execute(self._q(sql), all_params)
        return list(cur.fetchall())

    def chain_events(self, agent_id: str, from_seq: int, to_seq: int
                     ) -> list[tuple[dict[str, Any], bytes]]:
        with self._read() as cur:
            cur.execute(self._q(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE "
                                "agent_id = ? AND seq BETWEEN ? AND ? ORDER BY seq"),
                        (agent_id, from_seq, to_seq))
            rows = cur.fetchall()
        return [(_event_dict(row), bytes(row[HASH_AT])) for row in rows]

    def checkpoint_of(self, agent_id: str) -> Checkpoint | None:
        """The last checkpoint accepted from an agent: the anchor for re-verification."""
        with self._read() as cur:
            cur.execute(self._q("SELECT checkpoint_seq, checkpoint_hash, checkpoint_ts, "
                                "checkpoint_boot_id, checkpoint_sig FROM agents "
                                "WHERE agent_id = ?"), (agent_id,))
            row = cur.fetchone()
        if row is None or row[0] is None:
            return None
        return Checkpoint(agent_id, int(row[0]), bytes(row[1]), row[2], row[3], bytes(row[4]))

    def list_alerts(self, open_only: bool = False, agent_id: str | None = None,
                    kind: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        where: list[str] = []
        params: list[str | int] = []
        if open_only:
            where.append("acked_at IS NULL")
        if agent_id:
            where.append("agent_id = ?")
            params.append(agent_id)
        if kind:
            where.append("kind = ?")
            params.append(kind)
        sql = f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" {ALERT_ORDER} LIMIT ?"
        params.append(limit)
        with self._read() as cur:
            cur.execute(self._q(sql), params)
            return [dict(zip(ALERT_COLUMNS, row, strict=True)) for row in cur.fetchall()]

    def get_alert(self, alert_id: int) -> dict[str, Any] | None:
        with self._read() as cur:
            cur.execute(self._q(f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts WHERE id = ?"),
                        (alert_id,))
            row = cur.fetchone()
        return None if row is None else dict(zip(ALERT_COLUMNS, row, strict=True))

    def ack_alert(self, alert_id: int, who: str, comment: str, now: str) -> bool:
        with self._write() as cur:
            cur.execute(self._q("UPDATE alerts SET acked_at = ?, acked_by = ?, ack_comment = ? "
                                "WHERE id = ? AND acked_at IS NULL"),
                        (now, who, comment, alert_id))
            return bool(cur.rowcount)

    def stats(self) -> dict[str, Any]:
        with self._read() as cur:
            cur.execute("SELECT count(*), coalesce(sum(events_total), 0) FROM agents")
            agents, events = cur.fetchone()
            cur.execute("SELECT kind, count(*) FROM alerts WHERE acked_at IS NULL GROUP BY kind")
            open_alerts = {kind: int(n) for kind, n in cur.fetchall()}
        return {"agents": int(agents), "events": int(events), "open_alerts": open_alerts}

    def agents_with_stale_checkpoint(self, older_than: str) -> list[tuple[str, str | None]]:
        """Agents whose last checkpoint arrived before older_than (or never, once enrolled)."""
        with self._read() as cur:
            cur.execute(self._q("SELECT agent_id, checkpoint_received_at FROM agents WHERE "
                                "coalesce(checkpoint_received_at, enrolled_at) < ?"),
                        (older_than,))
            return [(row[0], row[1]) for row in cur.fetchall()]

    # -- the trust anchor and the verifier -------------------------------------------------
    def agent_identity(self, agent_id: str) -> dict[str, Any] | None:
        with self._read() as cur:
            cur.execute(self._q("SELECT agent_id, role, public_key, enrolled_at, "
                                "anchor_endorsement FROM agents WHERE agent_id = ?"),
                        (agent_id,))
            row = cur.fetchone()
        if row is None:
            return None
        return dict(zip(("agent_id", "role", "public_key", "enrolled_at", "endorsement"), row,
                        strict=True))

    def set_endorsement(self, agent_id: str, endorsement: str) -> bool:
        with self._write() as cur:
            cur.execute(self._q("UPDATE agents SET anchor_endorsement = ? WHERE agent_id = ?"),
                        (endorsement, agent_id))
            return bool(cur.rowcount)

    def event_extent(self, agent_id: str) -> tuple[int, int, int] | None:
        with self._read() as cur:
            cur.execute(self._q("SELECT min(seq), max(seq), count(*) FROM events "
                                "WHERE agent_id = ?"), (agent_id,))
            low, high, rows = cur.fetchone()
        return None if not rows else (int(low), int(high), int(rows))

    def orphan_events(self) -> list[tuple[str, int, int, int]]:
        with self._read() as cur:
            cur.execute("SELECT agent_id, min(seq), max(seq), count(*) FROM events "
                        "WHERE agent_id NOT IN (SELECT agent_id FROM agents) "
                        "GROUP BY agent_id ORDER BY agent_id")
            return [(str(a), int(low), int(high), int(n)) for a, low, high, n in cur.fetchall()]


def _event_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    item = dict(zip(EVENT_COLUMNS, row, strict=True))
    item["data"] = orjson.loads(item["data"])
    item["hash"] = bytes(item["hash"]).hex()
    return item

