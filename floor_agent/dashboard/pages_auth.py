"""Login, logout and the password change a one-time password forces."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from floor_agent.dashboard import login_limits, passwords, sessions, users
from floor_agent.dashboard.auth import PASSWORD_PATH, Forbidden, User, check_csrf, require
from floor_agent.dashboard.context import Dashboard, dashboard_of
from floor_agent.dashboard.render import page
from floor_agent.protocol.event import utc_timestamp
from floor_agent.protocol.kinds.dashboard import DashboardKind

router = APIRouter()
WRONG = "wrong user name or password"


def safe_next(target: str | None) -> str:
    """Only a path on this site (no //host, no scheme): never an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def set_session_cookie(response: Response, dash: Dashboard, session_id: str) -> None:
    response.set_cookie(sessions.COOKIE, session_id, httponly=True,
                        secure=dash.settings.secure_cookies, samesite="strict", path="/")


def login_form(request: Request, next_path: str, error: str | None = None,
               status: int = 200, headers: dict[str, str] | None = None) -> Response:
    dash = dashboard_of(request)
    token = sessions.new_secret()
    response = page(request, "login.html", None, status, csrf=token, next_path=next_path,
                    error=error)
    response.headers.update(headers or {})
    response.set_cookie(sessions.LOGIN_COOKIE, token, httponly=True,
                        secure=dash.settings.secure_cookies, samesite="strict", path="/login")
    return response


@router.get("/login")
def login_page(request: Request, next: str = "/") -> Response:  # noqa: A002
    return login_form(request, safe_next(next))


def _locked_message(dash: Dashboard) -> str:
    return (f"too many failed logins: this account is locked for "
            f"{dash.settings.lockout_minutes} minutes")


THROTTLED = "too many failed logins from this address: try again in {minutes} minute(s)"
BUSY = "the collector is busy checking other logins: try again in a few seconds"
BUSY_RETRY_SECONDS = 5


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one checked login came to: a session (success) or the error to show."""

    session_id: str | None = None
    must_change: bool = False
    error: str | None = None
    busy: bool = False  # no hashing slot: nothing was checked, nothing counted


def check_login(dash: Dashboard, username: str, password: str) -> Outcome:
    """The login decision and its writes, in a worker thread, holding a hashing slot.

    Order matters: a locked name (user or not) is refused before any hashing; a failure is
    counted and the lock decided by one statement (store.count_login_failure); a right
    password is only accepted when clearing the failures finds the user still unlocked, so
    a guess hashed in parallel with the one that locked the account cannot log in.
    """
    now = dash.clock()
    stamp = utc_timestamp(now)
    settings = dash.settings
    # a name no user can have (NUL, too long) is not looked up: a driver error is no answer;
    # what was typed is recorded, shortened and with NUL shown as \0 (events refuse NUL)
    shown = username[:64].replace("\x00", "\\0")
    plausible = 0 < len(username) <= 64 and "\x00" not in username
    user = dash.store.get_user(username) if plausible else None
    if user is not None:
        locked_until = user["locked_until"]
    else:
        locked_until = dash.store.login_locked_until(username) if plausible else None

    def refused(reason: str) -> None:
        dash.own_audit.emit(DashboardKind.LOGIN_FAILED, shown, "warning", username=shown,
                            reason=reason, known_user=user is not None)

    if users.is_locked(locked_until, now):
        refused("locked")
        return Outcome(error=_locked_message(dash))
    usable = user is not None and not user["disabled"]
    try:
        ok = passwords.verify_password(user["password_hash"] if usable and user else None,
                                       password, dash.limits.wait_seconds)
    except passwords.HashBusy:
        return Outcome(error=BUSY, busy=True)
    if ok and user is not None:
        if not dash.store.count_login_success(username, stamp):
            refused("locked")
            return Outcome(error=_locked_message(dash))
        return Outcome(session_id=_open_session(dash, user, stamp), must_change=user["must_change"])
    lock_until = utc_timestamp(now + timedelta(minutes=settings.lockout_minutes))
    counted = (dash.store.count_login_failure(username, user is not None, stamp,
                                              settings.lockout_failures, lock_until)
               if plausible else (1, None))
    if counted is None:  # locked by a parallel guess while this one was hashed
        refused("locked")
        return Outcome(error=_locked_message(dash))
    refused("disabled" if user and user["disabled"] else "password")
    if counted[1] is not None:
        dash.own_audit.emit(DashboardKind.LOCKED, shown, "warning", username=shown,
                            locked_until=counted[1], known_user=user is not None)
        return Outcome(error=_locked_message(dash))
    return Outcome(error=WRONG)


def _open_session(dash: Dashboard, user: dict[str, Any], stamp: str) -> str:
    """A new session for a user whose password was right; sweeps what expired meanwhile."""
    now = dash.clock()
    settings = dash.settings
    # sessions nobody came back to would stay forever: each login sweeps the expired ones,
    # and the failures of unknown names whose last try is past the lockout
    dash.store.prune_sessions(utc_timestamp(now - timedelta(hours=settings.session_hours)),
                              utc_timestamp(now - timedelta(minutes=settings.idle_minutes)))
    dash.store.prune_login_failures(
        utc_timestamp(now - timedelta(minutes=settings.lockout_minutes)))
    session_id = sessions.new_secret()
    dash.store.add_session(sessions.id_hash(session_id), user["username"],
                           sessions.new_secret(), stamp)
    dash.own_audit.emit(DashboardKind.LOGIN, user["username"], "notice",
                        username=user["username"], role=user["role"])
    return session_id


def _throttled(dash: Dashboard, verdict: login_limits.Verdict) -> None:
    """Recorded once per address and window, when the throttle first engages."""
    dash.own_audit.emit(DashboardKind.LOGIN_THROTTLED, verdict.key, "warning", address=verdict.key,
                        failures=dash.settings.address_failures,
                        window_minutes=dash.settings.address_minutes,
                        retry_after=verdict.retry_after)


@router.post("/login")
async def login(request: Request, username: Annotated[str, Form(max_length=200)] = "",
                password: Annotated[str, Form(max_length=1000)] = "",
                csrf_token: Annotated[str, Form(max_length=200)] = "",
                next: Annotated[str, Form(max_length=2000)] = "/") -> Response:  # noqa: A002
    """Throttled per source address before anything else, then admitted to one of the
    hashing slots (waited for here, in the loop), then checked in a worker thread."""
    dash = dashboard_of(request)
    if not sessions.same(request.cookies.get(sessions.LOGIN_COOKIE), csrf_token):
        raise Forbidden("CSRF token missing or wrong: reload the login page and try again")
    next_path = safe_next(next)
    limits = dash.limits
    verdict = limits.addresses.begin(request.client.host if request.client else None,
                                     dash.clock().timestamp())
    if verdict.retry_after:
        if verdict.first_refusal:
            await run_in_threadpool(_throttled, dash, verdict)
        message = THROTTLED.format(minutes=-(-verdict.retry_after // 60))
        return login_form(request, next_path, message, 429,
                          {"Retry-After": str(verdict.retry_after)})
    if not await limits.hashing.acquire(limits.wait_seconds):
        limits.addresses.refund(verdict)
        return login_form(request, next_path, BUSY, 503,
                          {"Retry-After": str(BUSY_RETRY_SECONDS)})
    try:
        outcome = await run_in_threadpool(check_login, dash, username, password)
    finally:
        limits.hashing.release()
    if outcome.session_id is None:
        if outcome.busy:
            limits.addresses.refund(verdict)
            return login_form(request, next_path, BUSY, 503,
                              {"Retry-After": str(BUSY_RETRY_SECONDS)})
        return login_form(request, next_path, outcome.error)
    limits.addresses.refund(verdict)
    old = request.cookies.get(sessions.COOKIE)
    if old:  # rotate: a session id planted before login is worth nothing after it
        await run_in_threadpool(dash.store.delete_session, sessions.id_hash(old))
    response = RedirectResponse(PASSWORD_PATH if outcome.must_change else next_path, 303)
    set_session_cookie(response, dash, outcome.session_id)
    response.delete_cookie(sessions.LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout")
def logout(request: Request, user: Annotated[User, Depends(require("read"))],
           csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
    check_csrf(user, csrf_token)
    dash = dashboard_of(request)
    dash.store.delete_session(user.session_hash)
    dash.own_audit.emit(DashboardKind.LOGOUT, user.username, "info", username=user.username)
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
    try:
        if not passwords.verify_password(record["password_hash"], current):
            return page(request, "password.html", user, 400,
                        error="the current password is wrong")
        problem = passwords.password_problem(new, confirm, current, user.username)
        if problem:
            return page(request, "password.html", user, 400, error=problem)
        new_hash = passwords.hash_password(new)
    except passwords.HashBusy:
        busy = page(request, "password.html", user, 503, error=BUSY)
        busy.headers["Retry-After"] = str(BUSY_RETRY_SECONDS)
        return busy
    stamp = utc_timestamp(dash.clock())
    dash.store.update_user(user.username, stamp, password_hash=new_hash, must_change=False)
    # every other session of this user ends; this one is replaced by a fresh id
    dash.store.delete_sessions_of(user.username)
    session_id = sessions.new_secret()
    dash.store.add_session(sessions.id_hash(session_id), user.username, sessions.new_secret(),
                           stamp)
    dash.own_audit.emit(DashboardKind.PASSWORD_CHANGED, user.username, "notice",
                        username=user.username, by=user.username)
    response = RedirectResponse("/", 303)
    set_session_cookie(response, dash, session_id)
    return response
