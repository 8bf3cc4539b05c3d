"""Dashboard login, sessions, CSRF, lockout and roles, through the real app and store."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from test_web_support import PASSWORD, WebApp, csrf_of

from floor_agent.dashboard import user_admin
from floor_agent.protocol.event import utc_timestamp


@pytest.fixture
def web(tmp_path: Path) -> Iterator[WebApp]:
    app = WebApp(tmp_path, lockout_failures=3, lockout_minutes=15, idle_minutes=30,
                 session_hours=8)
    try:
        yield app
    finally:
        app.close()


def test_not_logged_in_pages_redirect_and_stream_and_csv_answer_401(web: WebApp) -> None:
    client = web.client()
    response = client.get("/events?kind=usb.", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Fevents%3Fkind%3Dusb."
    assert client.get("/events/stream").status_code == 401
    assert client.get("/events?format=csv").status_code == 401
    assert client.get("/alerts?format=csv").status_code == 401


def test_login_sets_a_strict_secure_cookie_stored_only_hashed(web: WebApp) -> None:
    web.add_user("ann", "viewer")
    client = web.client()
    response = web.login(client, "ann", next_path="/alerts")
    assert response.status_code == 303 and response.headers["location"] == "/alerts"
    cookie = next(c for c in response.headers.get_list("set-cookie")
                  if c.startswith("floor_session="))
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite=strict", "path=/"} <= flags
    session_id = cookie.split(";")[0].split("=", 1)[1]
    assert web.store.get_session(session_id) is None  # never stored in clear
    assert web.store.get_session(hashlib.sha256(session_id.encode()).hexdigest()) is not None
    assert client.get("/").status_code == 200
    logins = web.own_events("dashboard.login")
    assert [e["data"]["username"] for e in logins] == ["ann"]
    assert PASSWORD not in str(web.own_events())


def test_insecure_cookies_only_when_configured(tmp_path: Path) -> None:
    web = WebApp(tmp_path, secure_cookies=False)
    try:
        web.add_user("ann", "viewer")
        response = web.login(web.client(), "ann")
        cookie = next(c for c in response.headers.get_list("set-cookie")
                      if c.startswith("floor_session="))
        assert "secure" not in cookie.lower() and "httponly" in cookie.lower()
    finally:
        web.close()


def test_next_never_leaves_the_site(web: WebApp) -> None:
    web.add_user("ann", "viewer")
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        response = web.login(web.client(), "ann", next_path=target)
        assert response.headers["location"] == "/"


def test_wrong_password_and_unknown_user_get_the_same_answer(web: WebApp) -> None:
    web.add_user("ann", "viewer")
    client = web.client()
    wrong = web.login(client, "ann", "not the password")
    unknown = web.login(client, "nobody", "not the password")
    for response in (wrong, unknown):
        assert response.status_code == 200
        assert 'data-testid="login-error"' in response.text
        assert "wrong user name or password" in response.text
        assert 'id="login"' in response.text
    failed = web.own_events("dashboard.login_failed")
    assert [e["data"]["username"] for e in failed] == ["ann", "nobody"]
    assert "not the password" not in str(web.own_events())
    assert client.get("/", follow_redirects=False).status_code == 303


def test_lockout_after_failures_in_a_row_and_its_expiry(web: WebApp) -> None:
    web.add_user("ann", "viewer")
    client = web.client()
    assert "wrong user name" in web.login(client, "ann", "bad-1").text
    assert "wrong user name" in web.login(client, "ann", "bad-2").text
    third = web.login(client, "ann", "bad-3")
    assert "locked" in third.text and 'data-testid="login-error"' in third.text
    # locked: the right password is refused too, and says locked
    while_locked = web.login(client, "ann")
    assert while_locked.status_code == 200 and "locked" in while_locked.text
    assert [e["data"]["username"] for e in web.own_events("dashboard.locked")] == ["ann"]
    # unknown names lock the same way: the message does not tell who exists
    for attempt in range(3):
        answer = web.login(client, "ghost", f"bad-{attempt}")
    assert "locked" in answer.text
    web.now += timedelta(minutes=14)
    assert "locked" in web.login(client, "ann").text
    web.now += timedelta(minutes=2)
    assert web.login(client, "ann").status_code == 303
    assert web.store.get_user("ann")["failures"] == 0


def test_a_success_resets_the_failure_count(web: WebApp) -> None:
    web.add_user("ann", "viewer")
    client = web.client()
    web.login(client, "ann", "bad")
    web.login(client, "ann", "bad")
    assert web.login(client, "ann").status_code == 303
    assert "wrong user name" in web.login(web.client(), "ann", "bad").text
    assert web.store.get_user("ann")["locked_until"] is None


def test_one_time_password_must_be_changed_first(web: WebApp) -> None:
    secret = user_admin.create(web.store, web.own, "root", "admin", "cli",
                               utc_timestamp(web.now))
    assert len(secret) >= 16
    client = web.client()
    response = web.login(client, "root", secret, next_path="/events")
    assert response.headers["location"] == "/account/password"
    for path in ("/", "/events", "/admin/users"):
        redirected = client.get(path, follow_redirects=False)
        assert redirected.status_code == 303
        assert redirected.headers["location"] == "/account/password"
    form = client.get("/account/password")
    token = csrf_of(form.text)
    for name in ("current", "new", "confirm"):
        assert f'name="{name}"' in form.text
    mismatch = client.post("/account/password", data={
        "current": secret, "new": "a brand new passphrase", "confirm": "something else",
        "csrf_token": token})
    assert mismatch.status_code == 400 and "differ" in mismatch.text
    short = client.post("/account/password", data={
        "current": secret, "new": "short", "confirm": "short", "csrf_token": token})
    assert short.status_code == 400 and "12 characters" in short.text
    old_cookie = client.cookies.get("floor_session")
    changed = client.post("/account/password", data={
        "current": secret, "new": "a brand new passphrase", "confirm": "a brand new passphrase",
        "csrf_token": token}, follow_redirects=False)
    assert changed.status_code == 303 and changed.headers["location"] == "/"
    assert client.cookies.get("floor_session") != old_cookie  # rotated
    assert client.get("/admin/users").status_code == 200
    assert web.store.get_user("root")["must_change"] is False
    assert web.login(web.client(), "root", secret).status_code == 200  # the old one is gone
    assert web.login(web.client(), "root", "a brand new passphrase").status_code == 303
    assert [e["data"]["username"] for e in web.own_events("dashboard.password_changed")] == [
        "root"]


ROLE_ANSWERS = {
    "viewer": {"/": 200, "/events": 200, "/alerts": 200, "/workstations": 200, "/doors": 200,
               "/cameras": 200, "/integrity": 403, "/admin/users": 403, "/doors/people": 403,
               "/events?format=csv": 403, "/doors?format=csv": 403, "/policy": 403,
               "/policy/blocked": 403},
    "auditor": {"/integrity": 200, "/events?format=csv": 200, "/admin/users": 403,
                "/doors/people": 403, "/cameras": 200, "/policy": 403, "/policy/changes": 403},
    "admin": {"/admin/users": 200, "/doors/people": 200, "/integrity": 200,
              "/alerts?format=csv": 200, "/policy": 200, "/policy/blocked": 200},
}


@pytest.mark.parametrize("role", ROLE_ANSWERS)
def test_roles(web: WebApp, role: str) -> None:
    client = web.logged_in("someone", role)
    for path, status in ROLE_ANSWERS[role].items():
        response = client.get(path, follow_redirects=False)
        assert response.status_code == status, path
        if status == 403:
            assert "may not" in response.text and 'data-testid="error-message"' in response.text


def test_auditor_reads_but_does_not_acknowledge(web: WebApp) -> None:
    client = web.logged_in("audrey", "auditor")
    token = csrf_of(client.get("/").text)
    response = client.post("/alerts/1/ack", data={"comment": "x", "csrf_token": token})
    assert response.status_code == 403 and "acknowledge" in response.text


def test_posts_without_the_csrf_token_are_refused(web: WebApp) -> None:
    client = web.logged_in("ann", "admin")
    for path, data in (("/logout", {}), ("/alerts/1/ack", {"comment": "x"}),
                       ("/admin/users", {"username": "eve", "role": "admin"}),
                       ("/integrity/verify", {}),
                       ("/logout", {"csrf_token": "forged"})):
        response = client.post(path, data=data, follow_redirects=False)
        assert response.status_code == 403, path
        assert "CSRF" in response.text
    assert web.store.get_user("eve") is None
    assert client.get("/").status_code == 200  # still logged in
    fresh = web.client()
    fresh.get("/login")
    refused = fresh.post("/login", data={"username": "ann", "password": PASSWORD,
                                         "csrf_token": "guess"}, follow_redirects=False)
    assert refused.status_code == 403 and "CSRF" in refused.text


def test_logout_ends_the_session_on_the_server(web: WebApp) -> None:
    client = web.logged_in("ann", "viewer")
    cookie = client.cookies.get("floor_session")
    token = csrf_of(client.get("/").text)
    response = client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"
    replay = web.client()
    replay.cookies.set("floor_session", cookie)
    assert replay.get("/", follow_redirects=False).status_code == 303
    assert [e["data"]["username"] for e in web.own_events("dashboard.logout")] == ["ann"]


def test_login_rotates_a_planted_session_id(web: WebApp) -> None:
    web.add_user("ann", "viewer")
    client = web.client()
    client.cookies.set("floor_session", "planted-by-an-attacker")
    response = web.login(client, "ann")
    cookie = next(c for c in response.headers.get_list("set-cookie")
                  if c.startswith("floor_session="))
    assert cookie.split(";")[0] != "floor_session=planted-by-an-attacker"
    planted = hashlib.sha256(b"planted-by-an-attacker").hexdigest()
    assert web.store.get_session(planted) is None


def test_sessions_expire_when_idle(web: WebApp) -> None:
    client = web.logged_in("ann", "viewer")
    web.now += timedelta(minutes=29)
    assert client.get("/", follow_redirects=False).status_code == 200
    web.now += timedelta(minutes=29)  # 29 min after the last request: still fresh
    assert client.get("/", follow_redirects=False).status_code == 200
    web.now += timedelta(minutes=31)
    assert client.get("/", follow_redirects=False).status_code == 303


def test_a_login_sweeps_sessions_nobody_came_back_to(web: WebApp) -> None:
    web.logged_in("ann", "viewer")
    web.logged_in("bob", "viewer")
    web.now += timedelta(minutes=31)
    web.login(web.client(), "bob")
    assert web.store.delete_sessions_of("ann") == 0  # swept at bob's login
    assert web.store.delete_sessions_of("bob") == 1  # only the new one is left


def test_sessions_expire_after_their_absolute_lifetime(web: WebApp) -> None:
    client = web.logged_in("ann", "viewer")
    for _ in range(23):  # busy all day, never idle
        web.now += timedelta(minutes=20)
        assert client.get("/", follow_redirects=False).status_code == 200
    web.now += timedelta(minutes=20)  # 8 h after login
    assert client.get("/", follow_redirects=False).status_code == 303


def test_a_disabled_user_is_logged_out_and_cannot_log_in(web: WebApp) -> None:
    client = web.logged_in("ann", "viewer")
    user_admin.set_disabled(web.store, web.own, "ann", True, "boss", utc_timestamp(web.now))
    assert client.get("/", follow_redirects=False).status_code == 303
    answer = web.login(web.client(), "ann")
    assert answer.status_code == 200 and "wrong user name or password" in answer.text
