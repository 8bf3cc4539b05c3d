"""User administration (`/admin/users`, admin only): create, change role, disable, reset."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from floor_agent.dashboard import user_admin
from floor_agent.dashboard.auth import User, check_csrf, require
from floor_agent.dashboard.context import dashboard_of
from floor_agent.dashboard.csv_export import csv_response
from floor_agent.dashboard.pages_events import export_allowed
from floor_agent.dashboard.paths import Username
from floor_agent.dashboard.render import csv_link, page
from floor_agent.dashboard.tables import Table
from floor_agent.dashboard.users import ROLES
from floor_agent.protocol.event import utc_timestamp

router = APIRouter()
Admin = Annotated[User, Depends(require("users"))]
Csrf = Annotated[str, Form(max_length=200)]


def _render(request: Request, user: User, status: int = 200, message: str | None = None,
            error: str | None = None, secret: tuple[str, str] | None = None) -> Response:
    dash = dashboard_of(request)
    users = dash.store.list_users()
    now = utc_timestamp(dash.clock())
    for u in users:
        u["locked"] = bool(u["locked_until"] and u["locked_until"] > now)
    return page(request, "users.html", user, status, users=users, roles=ROLES, message=message,
                error=error, secret=secret, csv_url=csv_link(request))


@router.get("/admin/users")
def users_page(request: Request, user: Admin, format: str | None = None) -> Response:  # noqa: A002
    if export_allowed(user, format):
        table = Table(["username", "role", "disabled", "must change password", "created",
                       "updated", "locked until"])
        for u in dashboard_of(request).store.list_users():
            table.add([u["username"], u["role"], "yes" if u["disabled"] else "no",
                       "yes" if u["must_change"] else "no", u["created_at"], u["updated_at"],
                       u["locked_until"] or ""])
        return csv_response(table, "users")
    return _render(request, user)


@router.post("/admin/users")
def create_user(request: Request, user: Admin, csrf_token: Csrf = "",
                username: Annotated[str, Form(max_length=64)] = "",
                role: Annotated[str, Form(max_length=16)] = "") -> Response:
    check_csrf(user, csrf_token)
    dash = dashboard_of(request)
    try:
        secret = user_admin.create(dash.store, dash.own_audit, username.strip(), role,
                                   user.username, utc_timestamp(dash.clock()))
    except user_admin.UserError as exc:
        return _render(request, user, 422, error=str(exc))
    return _render(request, user, message=f"created {role} {username}", secret=(username, secret))


@router.post("/admin/users/{username}/{action}")
def change_user(request: Request, username: Username, action: str, user: Admin,
                csrf_token: Csrf = "", role: Annotated[str, Form(max_length=16)] = "") -> Response:
    check_csrf(user, csrf_token)
    dash = dashboard_of(request)
    now = utc_timestamp(dash.clock())
    try:
        if action == "role":
            user_admin.set_role(dash.store, dash.own_audit, username, role, user.username, now)
            return _render(request, user, message=f"{username} is now {role}")
        if action in ("disable", "enable"):
            user_admin.set_disabled(dash.store, dash.own_audit, username, action == "disable",
                                    user.username, now)
            return _render(request, user, message=f"{username} {action}d")
        if action == "reset":
            secret = user_admin.reset(dash.store, dash.own_audit, username, user.username, now)
            return _render(request, user, message=f"{username} reset", secret=(username, secret))
    except user_admin.UserError as exc:
        return _render(request, user, 422, error=str(exc))
    return _render(request, user, 404, error=f"action: unknown {action!r}; expected role, "
                                             f"disable, enable or reset")
