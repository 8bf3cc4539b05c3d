"""Managing dashboard users, the same rules for the CLI and the admin page.

Every change is an event on the collector's own audit trail (who did what to whom; never a
password or hash). A new or reset user gets a one-time password they must change at login.
"""

from __future__ import annotations

from floor_agent.collector.self_audit import OwnAudit
from floor_agent.dashboard import passwords
from floor_agent.dashboard.users import role_problem, username_problem
from floor_agent.protocol.kinds.dashboard import DashboardKind
from floor_agent.store.interface import Store


class UserError(ValueError):
    """A refused user change; the message says why."""


def _hashed(secret: str) -> str:
    """The argon2 hash, or a UserError while every hashing slot stays busy (under attack)."""
    try:
        return passwords.hash_password(secret)
    except passwords.HashBusy as exc:
        raise UserError(f"{exc}: try again in a moment") from None


def create(store: Store, own: OwnAudit, username: str, role: str, by: str, now: str) -> str:
    """The new user's one-time password (shown once, stored only as its argon2 hash)."""
    problem = username_problem(username) or role_problem(role)
    if problem:
        raise UserError(problem)
    secret = passwords.one_time_password()
    if not store.add_user(username, role, _hashed(secret), True, now):
        raise UserError(f"username: {username!r} exists already")
    own.emit(DashboardKind.USER_CREATED, username, "notice", username=username, role=role, by=by)
    return secret


def _existing(store: Store, username: str) -> dict[str, object]:
    user = store.get_user(username)
    if user is None:
        raise UserError(f"username: no user {username!r}")
    return user


def reset(store: Store, own: OwnAudit, username: str, by: str, now: str) -> str:
    """A new one-time password; the user's sessions end, a lockout is lifted."""
    _existing(store, username)
    secret = passwords.one_time_password()
    store.update_user(username, now, password_hash=_hashed(secret), must_change=True,
                      failures=0, locked_until=None)
    store.delete_sessions_of(username)
    own.emit(DashboardKind.USER_RESET, username, "notice", username=username, by=by)
    return secret


def set_disabled(store: Store, own: OwnAudit, username: str, disabled: bool, by: str,
                 now: str) -> None:
    _existing(store, username)
    if disabled and username == by:
        raise UserError("you cannot disable yourself")
    store.update_user(username, now, disabled=disabled)
    if disabled:
        store.delete_sessions_of(username)
    own.emit(DashboardKind.USER_DISABLED if disabled else DashboardKind.USER_ENABLED, username,
             "notice", username=username, by=by)


def set_role(store: Store, own: OwnAudit, username: str, role: str, by: str, now: str) -> None:
    problem = role_problem(role)
    if problem:
        raise UserError(problem)
    user = _existing(store, username)
    if username == by and role != "admin":
        raise UserError("you cannot take the admin role from yourself")
    store.update_user(username, now, role=role)
    own.emit(DashboardKind.USER_ROLE_CHANGED, username, "notice", username=username,
             old_role=str(user["role"]), new_role=role, by=by)
