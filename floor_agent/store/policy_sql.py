"""Central workstation policy, in SQL both stores share (mixed into sql.SqlStore).

Every change (a group's rules or allowlist, a workstation's group, a device exception approved,
expired or withdrawn) takes the next site-wide change number from policy_meta and writes one
policy_changes row with who, why, when and the before/after as JSON, in the one write
transaction that makes the change: two collectors on one PostgreSQL database serialise on the
store's write lock, so no two changes share a number and none is lost.

A workstation's document is made from `policy_inputs` (collector/policy.build_document); its
version is the highest change number among the changes that shaped it: its group's content,
its assignment, and every exception in scope for it (approved, and ended), so the version only
grows, across a move between groups too. The store checks the shape it keeps, never the rules'
language: collector/policy.py validated those before they came here.

List methods return plain dicts (JSON text decoded) for the API and the dashboard.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from floor_agent.store.interface import RecordConflict, UnknownRecord

GROUP_COLUMNS = ("group_name", "usb_rules", "netlock_allow", "changed", "updated_at",
                 "updated_by")
CHANGE_COLUMNS = ("change_no", "kind", "group_name", "agent_id", "exception_id", "actor",
                  "reason", "at", "before_json", "after_json")
EXCEPTION_COLUMNS = ("exception_id", "rule", "scope", "device", "reason", "approved_by",
                     "approved_at", "expires_at", "approved_change", "ended_change",
                     "ended_at", "ended_by", "end_reason")
ASSIGNMENT_COLUMNS = ("agent_id", "group_name", "changed", "assigned_at", "assigned_by")

# kinds of change (policy_changes.kind)
GROUP_SET = "group_set"
ASSIGNED = "assigned"
EXCEPTION_APPROVED = "exception_approved"
EXCEPTION_EXPIRED = "exception_expired"
EXCEPTION_WITHDRAWN = "exception_withdrawn"
ENDINGS = {"expired": EXCEPTION_EXPIRED, "withdrawn": EXCEPTION_WITHDRAWN}


def _dumps(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _group(row: Sequence[Any]) -> dict[str, Any]:
    out = dict(zip(GROUP_COLUMNS, row, strict=True))
    out["group"] = out.pop("group_name")
    out["netlock_allow"] = orjson.loads(out["netlock_allow"])
    out["changed"] = int(out["changed"])
    return out


def _change(row: Sequence[Any]) -> dict[str, Any]:
    out = dict(zip(CHANGE_COLUMNS, row, strict=True))
    out["change"] = int(out.pop("change_no"))
    out["group"] = out.pop("group_name")
    before, after = out.pop("before_json"), out.pop("after_json")
    out["before"] = None if before is None else orjson.loads(before)
    out["after"] = None if after is None else orjson.loads(after)
    return out


def _exception(row: Sequence[Any]) -> dict[str, Any]:
    out = dict(zip(EXCEPTION_COLUMNS, row, strict=True))
    out["device"] = orjson.loads(out["device"])
    out["approved_change"] = int(out["approved_change"])
    if out["ended_change"] is not None:
        out["ended_change"] = int(out["ended_change"])
    out["active"] = out["ended_change"] is None
    return out


def scopes_for(agent_id: str, group: str) -> tuple[str, str, str]:
    """The exception scopes that reach a workstation in a group."""
    return (f"agent:{agent_id}", f"group:{group}", "all")


class PolicySql:
    """The policy part of SqlStore; see interface.Store for what each method promises."""

    # provided by SqlStore
    _q: Any
    _write: Any
    _read: Any
    _consistent_read: Any

    # ---------------------------------------------------------------- inside a transaction

    def _next_change(self, cur: Any, kind: str, actor: str, reason: str, now: str, *,
                     group: str | None = None, agent_id: str | None = None,
                     exception_id: str | None = None, before: Any = None,
                     after: Any = None) -> int:
        cur.execute("UPDATE policy_meta SET change_no = change_no + 1 WHERE id = 1")
        cur.execute("SELECT change_no FROM policy_meta WHERE id = 1")
        number = int(cur.fetchone()[0])
        cur.execute(self._q(f"INSERT INTO policy_changes ({', '.join(CHANGE_COLUMNS)}) "
                            f"VALUES ({', '.join('?' for _ in CHANGE_COLUMNS)})"),
                    (number, kind, group, agent_id, exception_id, actor, reason, now,
                     _dumps(before), _dumps(after)))
        return number

    def _group_row(self, cur: Any, group: str) -> dict[str, Any] | None:
        cur.execute(self._q(f"SELECT {', '.join(GROUP_COLUMNS)} FROM policy_groups "
                            f"WHERE group_name = ?"), (group,))
        row = cur.fetchone()
        return None if row is None else _group(row)

    def _exception_row(self, cur: Any, exception_id: str) -> dict[str, Any] | None:
        cur.execute(self._q(f"SELECT {', '.join(EXCEPTION_COLUMNS)} FROM policy_exceptions "
                            f"WHERE exception_id = ?"), (exception_id,))
        row = cur.fetchone()
        return None if row is None else _exception(row)

    def _end(self, cur: Any, item: dict[str, Any], how: str, actor: str, reason: str,
             now: str) -> int:
        number = self._next_change(
            cur, ENDINGS[how], actor, reason, now, exception_id=item["exception_id"],
            before={"rule": item["rule"], "scope": item["scope"], "active": True,
                    "expires_at": item["expires_at"]},
            after={"rule": item["rule"], "scope": item["scope"], "active": False,
                   "end_reason": how})
        cur.execute(self._q("UPDATE policy_exceptions SET ended_change = ?, ended_at = ?, "
                            "ended_by = ?, end_reason = ? WHERE exception_id = ?"),
                    (number, now, actor, how, item["exception_id"]))
        return number

    # ---------------------------------------------------------------- changes

    def put_policy_group(self, group: str, usb_rules: str, netlock_allow: list[dict[str, Any]],
                         actor: str, reason: str, now: str) -> int:
        with self._write() as cur:
            old = self._group_row(cur, group)
            after = {"usb_rules": usb_rules, "netlock_allow": netlock_allow}
            before = None if old is None else {"usb_rules": old["usb_rules"],
                                               "netlock_allow": old["netlock_allow"]}
            number = self._next_change(cur, GROUP_SET, actor, reason, now, group=group,
                                       before=before, after=after)
            cur.execute(self._q(
                "INSERT INTO policy_groups (group_name, usb_rules, netlock_allow, changed, "
                "updated_at, updated_by) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (group_name) DO UPDATE SET usb_rules = excluded.usb_rules, "
                "netlock_allow = excluded.netlock_allow, changed = excluded.changed, "
                "updated_at = excluded.updated_at, updated_by = excluded.updated_by"),
                (group, usb_rules, _dumps(netlock_allow), number, now, actor))
            return number

    def assign_policy_group(self, agent_id: str, group: str, actor: str, reason: str, now: str,
                            default_group: str) -> int:
        with self._write() as cur:
            if self._group_row(cur, group) is None:
                raise UnknownRecord("group", f"unknown group {group!r}; set its rules first")
            cur.execute(self._q("SELECT group_name FROM policy_assignments WHERE agent_id = ?"),
                        (agent_id,))
            row = cur.fetchone()
            old = default_group if row is None else str(row[0])
            if row is not None and old == group:
                raise RecordConflict(f"group: {agent_id} is already in group {group!r}")
            number = self._next_change(cur, ASSIGNED, actor, reason, now, group=group,
                                       agent_id=agent_id, before={"group": old,
                                                                  "assigned": row is not None},
                                       after={"group": group, "assigned": True})
            cur.execute(self._q(
                "INSERT INTO policy_assignments (agent_id, group_name, changed, assigned_at, "
                "assigned_by) VALUES (?, ?, ?, ?, ?) ON CONFLICT (agent_id) DO UPDATE SET "
                "group_name = excluded.group_name, changed = excluded.changed, "
                "assigned_at = excluded.assigned_at, assigned_by = excluded.assigned_by"),
                (agent_id, group, number, now, actor))
            return number

    def add_policy_exception(self, rule: str, scope: str, device: dict[str, Any], reason: str,
                             actor: str, now: str, expires_at: str | None) -> dict[str, Any]:
        with self._write() as cur:
            if scope.startswith("group:") and self._group_row(cur, scope[6:]) is None:
                raise UnknownRecord("scope", f"unknown group {scope[6:]!r}")
            cur.execute("SELECT change_no FROM policy_meta WHERE id = 1")
            exception_id = f"x-{int(cur.fetchone()[0]) + 1}"  # the change that approves it
            number = self._next_change(
                cur, EXCEPTION_APPROVED, actor, reason, now, exception_id=exception_id,
                group=scope[6:] if scope.startswith("group:") else None,
                agent_id=scope[6:] if scope.startswith("agent:") else None,
                before=None, after={"rule": rule, "scope": scope, "active": True,
                                    "expires_at": expires_at})
            cur.execute(self._q(
                f"INSERT INTO policy_exceptions ({', '.join(EXCEPTION_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in EXCEPTION_COLUMNS)})"),
                (exception_id, rule, scope, _dumps(device), reason, actor, now, expires_at,
                 number, None, None, None, None))
            item = self._exception_row(cur, exception_id)
            assert item is not None
            return item

    def end_policy_exception(self, exception_id: str, how: str, actor: str, reason: str,
                             now: str) -> int | None:
        if how not in ENDINGS:
            raise ValueError(f"how: expected one of {sorted(ENDINGS)}, got {how!r}")
        with self._write() as cur:
            item = self._exception_row(cur, exception_id)
            if item is None or not item["active"]:
                return None
            return self._end(cur, item, how, actor, reason, now)

    def expire_policy_exceptions(self, now: str, actor: str) -> list[dict[str, Any]]:
        with self._write() as cur:
            cur.execute(self._q(f"SELECT {', '.join(EXCEPTION_COLUMNS)} FROM policy_exceptions "
                                f"WHERE ended_change IS NULL AND expires_at IS NOT NULL "
                                f"AND expires_at <= ? ORDER BY expires_at, exception_id"),
                        (now,))
            due = [_exception(row) for row in cur.fetchall()]
            for item in due:
                number = self._end(cur, item, "expired", actor,
                                   f"expired at {item['expires_at']}", now)
                item.update(ended_change=number, ended_at=now, ended_by=actor,
                            end_reason="expired", active=False)
            return due

    # ---------------------------------------------------------------- reads

    def policy_change_number(self) -> int:
        with self._read() as cur:
            cur.execute("SELECT change_no FROM policy_meta WHERE id = 1")
            return int(cur.fetchone()[0])

    def policy_groups(self) -> list[dict[str, Any]]:
        with self._consistent_read() as cur:
            cur.execute(f"SELECT {', '.join(GROUP_COLUMNS)} FROM policy_groups "
                        f"ORDER BY group_name")
            groups = [_group(row) for row in cur.fetchall()]
            cur.execute("SELECT group_name, agent_id FROM policy_assignments ORDER BY agent_id")
            members = cur.fetchall()
        for group in groups:
            group["agents"] = [agent for name, agent in members if name == group["group"]]
        return groups

    def policy_group(self, group: str) -> dict[str, Any] | None:
        with self._read() as cur:
            return self._group_row(cur, group)

    def policy_assignments(self) -> list[dict[str, Any]]:
        with self._read() as cur:
            cur.execute(f"SELECT {', '.join(ASSIGNMENT_COLUMNS)} FROM policy_assignments "
                        f"ORDER BY agent_id")
            rows = [dict(zip(ASSIGNMENT_COLUMNS, row, strict=True)) for row in cur.fetchall()]
        for row in rows:
            row["group"] = row.pop("group_name")
        return rows

    def policy_changes(self, limit: int = 100, group: str | None = None,
                       agent_id: str | None = None, before: int | None = None
                       ) -> list[dict[str, Any]]:
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("group_name", group), ("agent_id", agent_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if before is not None:
            where.append("change_no < ?")
            params.append(before)
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        with self._read() as cur:
            cur.execute(self._q(f"SELECT {', '.join(CHANGE_COLUMNS)} FROM policy_changes "
                                f"{clause}ORDER BY change_no DESC LIMIT ?"), (*params, limit))
            return [_change(row) for row in cur.fetchall()]

    def policy_change(self, change: int) -> dict[str, Any] | None:
        with self._read() as cur:
            cur.execute(self._q(f"SELECT {', '.join(CHANGE_COLUMNS)} FROM policy_changes "
                                f"WHERE change_no = ?"), (change,))
            row = cur.fetchone()
        return None if row is None else _change(row)

    def policy_exceptions(self, active_only: bool = False) -> list[dict[str, Any]]:
        where = "WHERE ended_change IS NULL " if active_only else ""
        with self._read() as cur:
            cur.execute(f"SELECT {', '.join(EXCEPTION_COLUMNS)} FROM policy_exceptions "
                        f"{where}ORDER BY approved_change DESC")
            return [_exception(row) for row in cur.fetchall()]

    def policy_exception(self, exception_id: str) -> dict[str, Any] | None:
        with self._read() as cur:
            return self._exception_row(cur, exception_id)

    def policy_inputs(self, agent_id: str, default_group: str) -> dict[str, Any] | None:
        with self._consistent_read() as cur:
            cur.execute(self._q("SELECT group_name, changed FROM policy_assignments "
                                "WHERE agent_id = ?"), (agent_id,))
            row = cur.fetchone()
            group, assigned = (default_group, 0) if row is None else (str(row[0]), int(row[1]))
            content = self._group_row(cur, group)
            scopes = scopes_for(agent_id, group)
            marks = ", ".join("?" for _ in scopes)
            cur.execute(self._q(f"SELECT {', '.join(EXCEPTION_COLUMNS)} FROM policy_exceptions "
                                f"WHERE scope IN ({marks}) ORDER BY approved_change"), scopes)
            exceptions = [_exception(r) for r in cur.fetchall()]
        version = max([assigned, 0 if content is None else content["changed"]]
                      + [e["approved_change"] for e in exceptions]
                      + [e["ended_change"] for e in exceptions if e["ended_change"] is not None])
        if content is None:  # a group without rules (the default group before an admin set
            return None      # it): no document, the workstation keeps what it has
        return {"agent_id": agent_id, "group": group, "version": version,
                "usb_rules": content["usb_rules"], "netlock_allow": content["netlock_allow"],
                "exceptions": [e for e in exceptions if e["active"]]}

    def policy_event(self, event_id: int) -> dict[str, Any] | None:
        with self._read() as cur:
            cur.execute(self._q("SELECT id, agent_id, seq, ts, kind, data FROM events "
                                "WHERE id = ?"), (event_id,))
            row = cur.fetchone()
        if row is None:
            return None
        return {"id": int(row[0]), "agent_id": row[1], "seq": int(row[2]), "ts": row[3],
                "kind": row[4], "data": orjson.loads(row[5])}
