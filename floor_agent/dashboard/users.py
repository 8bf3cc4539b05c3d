"""Dashboard users: roles, what each may do, and whether a lock holds (pure).

The lockout itself is counted and decided in the store, by one statement per failed login
(store.count_login_failure), so parallel guesses cannot read the same count."""

from __future__ import annotations

import re
from datetime import datetime

from floor_agent.protocol.event import utc_timestamp

ROLES = ("viewer", "auditor", "admin")
USERNAME_RE = re.compile(r"^[a-z][a-z0-9._-]{0,31}$")

# What each role may do. viewer: the security staff on the floor (read, acknowledge);
# auditor: reads everything, exports, re-verifies, sees the footage log, changes nothing;
# admin: everything, plus users and the door people. `footage`: watch the clips behind alerts
# (each view recorded with who and why): the security staff and admins, not the auditor, who
# reads the footage log instead. `policy`: the workstations' central USB and network policy
# (groups, assignments, device exceptions): admins only.
PERMISSIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset({"read", "ack", "footage"}),
    "auditor": frozenset({"read", "export", "verify", "footage_log"}),
    "admin": frozenset({"read", "ack", "export", "verify", "footage_log", "footage", "users",
                        "people", "policy"}),
}


def may(role: str, permission: str) -> bool:
    return permission in PERMISSIONS.get(role, frozenset())


def username_problem(username: str) -> str | None:
    if not USERNAME_RE.match(username):
        return "username: expected 1-32 of a-z 0-9 . _ - starting with a letter"
    return None


def role_problem(role: str) -> str | None:
    if role not in ROLES:
        return f"role: expected one of {', '.join(ROLES)}"
    return None


def is_locked(locked_until: str | None, now: datetime) -> bool:
    return locked_until is not None and locked_until > utc_timestamp(now)
