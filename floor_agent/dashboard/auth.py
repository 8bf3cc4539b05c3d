"""Who is asking: the session cookie to a user, and `require(permission)` for routes.

Not logged in: pages answer 303 to /login?next=..., the live stream and CSV exports 401 (a
script or EventSource cannot follow a login form). A permission the role lacks: 403 with a page
saying so. A user holding a one-time password is sent to /account/password first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from urllib.parse import quote

from fastapi import Request

from floor_agent.dashboard import sessions
from floor_agent.dashboard.context import Dashboard, dashboard_of
from floor_agent.dashboard.users import may
from floor_agent.protocol.event import utc_timestamp

PASSWORD_PATH = "/account/password"


@dataclass(frozen=True, slots=True)
class User:
    username: str
    role: str
    csrf: str
    session_hash: str
    must_change: bool

    def may(self, permission: str) -> bool:
        return may(self.role, permission)


class LoginRequired(Exception):
    def __init__(self, next_path: str, api: bool) -> None:
        super().__init__(next_path)
        self.next_path = next_path
        self.api = api


class Forbidden(Exception):
    """403: the role may not do this, or the CSRF token is missing or wrong."""


class MustChangePassword(Exception):
    pass


def session_user(request: Request) -> User | None:
    """The logged-in user of this request, or None; ends expired sessions."""
    dash = dashboard_of(request)
    session_id = request.cookies.get(sessions.COOKIE)
    if not session_id:
        return None
    hashed = sessions.id_hash(session_id)
    found = dash.store.get_session(hashed)
    if found is None:
        return None
    now = dash.clock()
    if sessions.expiry(found["created_at"], found["last_seen_at"], now,
                       dash.settings.session_hours, dash.settings.idle_minutes):
        dash.store.delete_session(hashed)
        return None
    user = dash.store.get_user(found["username"])
    if user is None or user["disabled"]:
        dash.store.delete_session(hashed)
        return None
    if sessions.needs_touch(found["last_seen_at"], now):
        dash.store.touch_session(hashed, utc_timestamp(now))
    return User(user["username"], user["role"], found["csrf"], hashed, user["must_change"])


def session_allows(dash: Dashboard, session_hash: str, permission: str) -> bool:
    """Whether a session still exists, is within its lifetimes, and its user is enabled and
    may `permission`. Reads only: an open live feed is no activity, so a page left alone
    still reaches the idle limit (and its feed ends then)."""
    found = dash.store.get_session(session_hash)
    if found is None or sessions.expiry(found["created_at"], found["last_seen_at"],
                                        dash.clock(), dash.settings.session_hours,
                                        dash.settings.idle_minutes):
        return False
    user = dash.store.get_user(found["username"])
    return user is not None and not user["disabled"] and may(user["role"], permission)


def stream_guard(request: Request, user: User, permission: str = "read") -> Callable[[], bool]:
    """For live.sse(allowed=...): ends a feed when its session no longer allows it."""
    return partial(session_allows, dashboard_of(request), user.session_hash, permission)


def wants_api_answer(request: Request) -> bool:
    """Streams, fragments and CSV get a 401, not a redirect to the login form."""
    return (request.url.path in API_PATHS or request.query_params.get("format") == "csv")


# what scripts fetch (a login page in their place would be swapped into the page)
API_PATHS = ("/events/stream", "/overview/stream", "/overview/state", "/alerts/stream")


def require(permission: str = "read") -> Callable[[Request], User]:
    """A FastAPI dependency giving the user allowed `permission` (users.PERMISSIONS)."""

    def dependency(request: Request) -> User:
        user = session_user(request)
        if user is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise LoginRequired(target, wants_api_answer(request))
        if user.must_change and request.url.path not in (PASSWORD_PATH, "/logout"):
            raise MustChangePassword()
        if not user.may(permission):
            raise Forbidden(f"your role ({user.role}) may not {DESCRIPTIONS[permission]}")
        return user

    return dependency


DESCRIPTIONS = {
    "read": "read the dashboard",
    "ack": "acknowledge alerts",
    "export": "export CSV",
    "verify": "verify the audit chains",
    "footage_log": "see the footage log",
    "footage": "watch footage",
    "users": "manage users",
    "people": "see the door people and their access levels",
    "policy": "see or change the workstations' policy",
}


def check_csrf(user: User, token: str | None) -> None:
    if not sessions.same(user.csrf, token):
        raise Forbidden("CSRF token missing or wrong: reload the page and try again")


def login_url(next_path: str) -> str:
    return "/login?next=" + quote(next_path, safe="")
