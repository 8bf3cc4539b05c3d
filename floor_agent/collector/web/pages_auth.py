"""Login, logout and the password change a one-time password forces."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from floor_agent.audit.event import utc_timestamp
from floor_agent.collector.web import passwords, sessions, users
from floor_agent.collector.web.auth import PASSWORD_PATH, Forbidden, User, check_csrf, require
from floor_agent.collector.web.context import Dashboard, dashboard_of
from floor_agent.collector.web.render import page

router = APIRouter()
WRONG = "wrong user name or password"
MAX_UNKNOWN_NAMES = 10_000


def safe_next(target: str | None) -> str:
    """Only a path on this site (no //host, no scheme): never an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def set_session_cookie(response: Response, dash: Dashboard, session_id: str) -> None:
    response.set_cookie(sessions.COOKIE, session_id, httponly=True,
                        secure=dash.settings.secure_cookies, samesite="strict", path="/")


def login_form(request: Request, next_path: str, error: str | None = None,
               status: int = 200) -> Response:
    dash = dashboard_of(request)
    token = sessions.new_secret()
    response = page(request, "login.html", None, status, csrf=token, next_path=next_path,
                    error=error)
    response.set_cookie(sessions.LOGIN_COOKIE, token, httponly=True,
                        secure=dash.settings.secure_cookies, samesite="strict", path="/login")
    return response


@router.get("/login")
def login_page(request: Request, next: str = "/") -> Response:  # noqa: A002
    return login_form(request, safe_next(next))


def _locked_message(dash: Dashboard) -> str:
    return (f"too many failed logins: this account is locked for "
            f"{dash.settings.lockout_minutes} minutes")


@router.post("/login")
def login(request: Request, username: Annotated[str, Form(max_length=200)] = "",
          password: Annotated[str, Form(max_length=1000)] = "",
          csrf_token: Annotated[str, Form(max_length=200)] = "",
          next: Annotated[str, Form(max_length=2000)] = "/") -> Response:  # noqa: A002
    dash = dashboard_of(request)
    if not sessions.same(request.cookies.get(sessions.LOGIN_COOKIE), csrf_token):
        raise Forbidden("CSRF token missing or wrong: reload the login page and try again")
    next_path = safe_next(next)
    now = dash.clock()
    stamp = utc_timestamp(now)
    settings = dash.settings
    # a name no user can have (NUL, too long) is not looked up: a driver error is no answer;
    # what was typed is recorded, shortened and with NUL shown as \0 (events refuse NUL)
    shown = username[:64].replace("\x00", "\\0")
    plausible = 0 < len(username) <= 64 and "\x00" not in username
    user = dash.store.get_user(username) if plausible else None
    if user is None:
        failures, locked_until = dash.unknown_failures.get(username, (0, None))
    else:
        failures, locked_until = user["failures"], user["locked_until"]
    locked = users.is_locked(locked_until, now)
    usable = user is not None and not user["disabled"] and not locked
    ok = passwords.verify_password(user["password_hash"] if usable and user else None, password)
    if not ok:
        if locked:
            dash.own_audit.emit("dashboard.login_failed", shown, "warning",
                                username=shown, reason="locked")
            return login_form(request, next_path, _locked_message(dash))
        after = users.after_failure(failures, now, settings.lockout_failures,
                                    settings.lockout_minutes)
        if user is None:
            if len(dash.unknown_failures) >= MAX_UNKNOWN_NAMES:
                dash.unknown_failures.clear()
            dash.unknown_failures[username] = (after.failures, after.locked_until)
        else:
            dash.store.update_user(username, stamp, failures=after.failures,
                                   locked_until=after.locked_until)
        dash.own_audit.emit("dashboard.login_failed", shown, "warning",
                            username=shown,
                            reason="disabled" if user and user["disabled"] else "password",
                            known_user=user is not None)
        if after.locked_until is not None:
            dash.own_audit.emit("dashboard.locked", shown, "warning",
                                username=shown, locked_until=after.locked_until,
                                known_user=user is not None)
            return login_form(request, next_path, _locked_message(dash))
        return login_form(request, next_path, WRONG)
    assert user is not None
    dash.store.update_user(username, stamp, failures=0, locked_until=None)
    old = request.cookies.get(sessions.COOKIE)
    if old:  # rotate: a session id planted before login is worth nothing after it
        dash.store.delete_session(sessions.id_hash(old))
    # sessions nobody came back to would stay forever: each login sweeps the expired ones
    dash.store.prune_sessions(utc_timestamp(now - timedelta(hours=settings.session_hours)),
                              utc_timestamp(now - timedelta(minutes=settings.idle_minutes)))
    session_id = sessions.new_secret()
    dash.store.add_session(sessions.id_hash(session_id), username, sessions.new_secret(), stamp)
    dash.own_audit.emit("dashboard.login", username, "notice", username=username,
                        role=user["role"])
    response = RedirectResponse(PASSWORD_PATH if user["must_change"] else next_path, 303)
    set_session_cookie(response, dash, session_id)
    response.delete_cookie(sessions.LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout")
def logout(request: Request, user: Annotated[User, Depends(require("read"))],
           csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
    check_csrf(user, csrf_token)
    dash = dashboard_of(request)
    dash.store.delete_session(user.session_hash)
    dash.own_audit.emit("dashboard.logout", user.username, "info", username=user.username)
    response = RedirectResponse("/login", 303)
    response.delete_cookie(sessions.COOKIE, path="/")
    return response


def _password_user(request: Request) -> User:
    return require("read")(request)


@router.get(PASSWORD_PATH)
def password_page(request: Request, user: Annotated[User, Depends(_password_user)]) -> Response:
    return page(request, "password.html", user, error=None)


@router.post(PASSWORD_PATH)
def change_password(request: Request, user: Annotated[User, Depends(_password_user)],
                    current: Annotated[str, Form(max_length=1000)] = "",
                    new: Annotated[str, Form(max_length=1000)] = "",
                    confirm: Annotated[str, Form(max_length=1000)] = "",
                    csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
    check_csrf(user, csrf_token)
    dash = dashboard_of(request)
    record = dash.store.get_user(user.username)
    assert record is not None
    if not passwords.verify_password(record["password_hash"], current):
        return page(request, "password.html", user, 400, error="the current password is wrong")
    problem = passwords.password_problem(new, confirm, current, user.username)
    if problem:
        return page(request, "password.html", user, 400, error=problem)
    stamp = utc_timestamp(dash.clock())
    dash.store.update_user(user.username, stamp, password_hash=passwords.hash_password(new),
                           must_change=False)
    # every other session of this user ends; this one is replaced by a fresh id
    dash.store.delete_sessions_of(user.username)
    session_id = sessions.new_secret()
    dash.store.add_session(sessions.id_hash(session_id), user.username, sessions.new_secret(),
                           stamp)
    dash.own_audit.emit("dashboard.password_changed", user.username, "notice",
                        username=user.username, by=user.username)
    response = RedirectResponse("/", 303)
    set_session_cookie(response, dash, session_id)
    return response
