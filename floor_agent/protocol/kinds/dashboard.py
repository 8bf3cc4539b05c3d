"""What the security staff's dashboard (dashboard/) records in the collector's trail."""

from __future__ import annotations

from enum import StrEnum


class DashboardKind(StrEnum):
    LOGIN = "dashboard.login"
    LOGIN_FAILED = "dashboard.login_failed"
    LOGIN_THROTTLED = "dashboard.login_throttled"
    LOCKED = "dashboard.locked"
    LOGOUT = "dashboard.logout"
    PASSWORD_CHANGED = "dashboard.password_changed"
    USER_CREATED = "dashboard.user_created"
    USER_DISABLED = "dashboard.user_disabled"
    USER_ENABLED = "dashboard.user_enabled"
    USER_RESET = "dashboard.user_reset"
    USER_ROLE_CHANGED = "dashboard.user_role_changed"
    FOOTAGE_VIEWED = "footage.viewed"
    FOOTAGE_REFUSED = "footage.refused"
