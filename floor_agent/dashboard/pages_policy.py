"""Central workstation policy (admin only, the `policy` permission): the groups with their USB
rules and netlock allowlist, which workstation is in which group, the change log with a diff
of each change, the device exceptions, and the blocked devices an admin may approve.

Every change goes through collector/policy_admin.py with the logged-in admin as actor, as the
API and the CLI do: the input is checked there (a refusal names the line or field and is shown
above the form, the form keeping what was typed), the change is one store transaction and its
event is recorded on the collector's own trail with who and why.

  GET  /policy                          the groups (and a form for a new one)
  GET  /policy/groups/{group}           one group: rules, allowlist, workstations, edit form
  POST /policy/groups                   group, usb_rules, netlock_allow, reason
  GET  /policy/assignments              the workstations and their groups
  POST /policy/assignments              agent_id, group, reason
  GET  /policy/changes[?before=n]       the change log with diffs, newest first, paged
  GET  /policy/exceptions               in force and ended
  POST /policy/exceptions/{id}/withdraw reason
  GET  /policy/blocked                  blocked or rejected devices no exception covers
  POST /policy/blocked/approve          event_id, scope (agent|group|all), reason, expires_at
Every POST also carries csrf_token.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import Response

from floor_agent.collector import policy_admin
from floor_agent.collector.config import PolicySettings
from floor_agent.collector.policy import BLOCKED_KINDS, PolicyInputError
from floor_agent.dashboard import policy_view
from floor_agent.dashboard.auth import User, check_csrf, require
from floor_agent.dashboard.context import dashboard_of
from floor_agent.dashboard.paths import MAX_ID
from floor_agent.dashboard.render import page
from floor_agent.protocol import policy as wire
from floor_agent.protocol.event import utc_timestamp
from floor_agent.protocol.kinds.policy import POLICY
from floor_agent.store.interface import EventQuery, RecordConflict, Store, UnknownRecord

router = APIRouter()
Admin = Annotated[User, Depends(require("policy"))]
Csrf = Annotated[str, Form(max_length=200)]
Name = Annotated[str, Form(max_length=200)]
Reason = Annotated[str, Form(max_length=wire.MAX_TEXT_CHARS + 100)]
GroupName = Annotated[str, Path(max_length=200, pattern=r"^[^\x00/]+$")]
ExceptionId = Annotated[str, Path(max_length=200, pattern=r"^[^\x00/]+$")]
CHANGES_PAGE = 25
BLOCKED_SCAN = 5000  # newest blocked/rejected events looked at, of each kind
REFUSED = (PolicyInputError, UnknownRecord, RecordConflict, policy_admin.UnknownException)
TABS = (("/policy", "Groups"), ("/policy/assignments", "Assignments"),
        ("/policy/changes", "Change log"), ("/policy/exceptions", "Exceptions"),
        ("/policy/blocked", "Blocked devices"))


def default_group(request: Request) -> str:
    """The group of an unassigned workstation: the collector's (server.py sets app.state.policy),
    else the configuration's default."""
    serving = getattr(request.app.state, "policy", None)
    return serving.default_group if serving is not None else PolicySettings().default_group


def _now(request: Request) -> str:
    return utc_timestamp(dashboard_of(request).clock())


def _render(request: Request, user: User, template: str, status: int = 200,
            **context: Any) -> Response:
    return page(request, template, user, status, tabs=TABS,
                change_number=dashboard_of(request).store.policy_change_number(), **context)


def _workstations(store: Store) -> list[str]:
    return sorted(a["agent_id"] for a in store.list_agents()
                  if a["role"] == policy_admin.WORKSTATION_ROLE)


def _group_of(store: Store) -> dict[str, str]:
    return {a["agent_id"]: a["group"] for a in store.policy_assignments()}


def _versions(store: Store, agents: list[str], default: str) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for agent_id in agents:
        inputs = store.policy_inputs(agent_id, default)
        out[agent_id] = None if inputs is None else int(inputs["version"])
    return out


def _applied(store: Store) -> dict[str, dict[str, Any]]:
    return {s["agent_id"]: s for s in store.latest_states() if s["topic"] == POLICY.name}


def enforcement_of(store: Store, default: str) -> dict[str, policy_view.Enforcement]:
    """Per workstation: what it reports enforcing beside what it would be served now."""
    agents = _workstations(store)
    served = _versions(store, agents, default)
    applied = _applied(store)
    return {a: policy_view.enforcement(applied.get(a), served[a]) for a in agents}


# -- groups ------------------------------------------------------------------------------------

def _groups_page(request: Request, user: User, status: int = 200, *,
                 form: dict[str, str] | None = None, error: str | None = None,
                 message: str | None = None) -> Response:
    store = dashboard_of(request).store
    default = default_group(request)
    groups = store.policy_groups()
    group_of = _group_of(store)
    agents = _workstations(store)
    members: dict[str, list[str]] = {}
    for agent_id in agents:
        members.setdefault(group_of.get(agent_id, default), []).append(agent_id)
    for g in groups:
        g["allow_text"] = policy_view.allow_text(g["netlock_allow"])
        g["members"] = members.get(g["group"], [])
    return _render(request, user, "policy_groups.html", status, groups=groups,
                   default_group=default, form=form or {}, error=error, message=message,
                   unset_default=default not in {g["group"] for g in groups})


@router.get("/policy")
def groups_page(request: Request, user: Admin) -> Response:
    return _groups_page(request, user)


@router.get("/policy/groups/{group}")
def group_page(request: Request, user: Admin, group: GroupName) -> Response:
    return _group_page(request, user, group)


def _group_page(request: Request, user: User, group: str, status: int = 200, *,
                form: dict[str, str] | None = None, error: str | None = None,
                message: str | None = None) -> Response:
    store = dashboard_of(request).store
    default = default_group(request)
    found = store.policy_group(group) if wire.GROUP_RE.fullmatch(group) else None
    if found is None and form is None:
        return page(request, "error.html", user, 404, title="No such group",
                    message=f"no policy group {group!r}; create it on the groups page")
    agents = _workstations(store)
    group_of = _group_of(store)
    members = [a for a in agents if group_of.get(a, default) == group]
    enforcement = enforcement_of(store, default)
    if form is None:
        assert found is not None
        form = {"group": group, "usb_rules": found["usb_rules"],
                "netlock_allow": policy_view.allow_text(found["netlock_allow"]), "reason": ""}
    changes = store.policy_changes(limit=10, group=group) if found is not None else []
    return _render(request, user, "policy_group.html", status, group=found, name=group,
                   members=members, enforcement=enforcement, form=form, error=error,
                   message=message, changes=changes, default_group=default)


@router.post("/policy/groups")
def set_group(request: Request, user: Admin, csrf_token: Csrf = "", group: Name = "",
              usb_rules: Annotated[str, Form(max_length=wire.MAX_RULES_CHARS + 1024)] = "",
              netlock_allow: Annotated[str, Form(max_length=wire.MAX_RULES_CHARS)] = "",
              reason: Reason = "") -> Response:
    check_csrf(user, csrf_token)
    dash = dashboard_of(request)
    form = {"group": group, "usb_rules": usb_rules, "netlock_allow": netlock_allow,
            "reason": reason}
    name = group.strip()
    try:
        allow = policy_view.parse_allow(netlock_allow)
        change = policy_admin.set_group(dash.store, dash.own_audit, user.username, name,
                                        usb_rules.replace("\r\n", "\n"), allow, reason,
                                        _now(request))
    except REFUSED as exc:
        if wire.GROUP_RE.fullmatch(name) and dash.store.policy_group(name) is not None:
            return _group_page(request, user, name, 422, form=form, error=str(exc))
        return _groups_page(request, user, 422, form=form, error=str(exc))
    return _group_page(request, user, name,
                       message=f"group {name} saved: change {change}, the new version of its "
                               f"workstations")


# -- assignments -------------------------------------------------------------------------------

def _assignments_page(request: Request, user: User, status: int = 200, *,
                      form: dict[str, str] | None = None, error: str | None = None,
                      message: str | None = None) -> Response:
    store = dashboard_of(request).store
    default = default_group(request)
    assigned = {a["agent_id"]: a for a in store.policy_assignments()}
    enforcement = enforcement_of(store, default)
    rows = [{"agent_id": agent_id, "group": assigned.get(agent_id, {}).get("group", default),
             "assigned": assigned.get(agent_id), "enforcement": enforcement[agent_id]}
            for agent_id in _workstations(store)]
    return _render(request, user, "policy_assignments.html", status, rows=rows,
                   groups=[g["group"] for g in store.policy_groups()], default_group=default,
                   form=form or {}, error=error, message=message)


@router.get("/policy/assignments")
def assignments_page(request: Request, user: Admin) -> Response:
    return _assignments_page(request, user)


@router.post("/policy/assignments")
def assign(request: Request, user: Admin, csrf_token: Csrf = "", agent_id: Name = "",
           group: Name = "", reason: Reason = "") -> Response:
    check_csrf(user, csrf_token)
    dash = dashboard_of(request)
    form = {"agent_id": agent_id, "group": group, "reason": reason}
    try:
        change = policy_admin.assign(dash.store, dash.own_audit, user.username, agent_id,
                                     group, reason, default_group(request), _now(request))
    except REFUSED as exc:
        return _assignments_page(request, user, 422, form=form, error=str(exc))
    return _assignments_page(request, user, message=f"{agent_id} is now in group {group}: "
                                                    f"change {change}")


# -- the change log ----------------------------------------------------------------------------

@router.get("/policy/changes")
def changes_page(request: Request, user: Admin,
                 before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None) -> Response:
    store = dashboard_of(request).store
    rows = store.policy_changes(limit=CHANGES_PAGE + 1, before=before)
    more = len(rows) > CHANGES_PAGE
    rows = rows[:CHANGES_PAGE]
    changes = [{**c, "diffs": policy_view.change_diffs(c)} for c in rows]
    older = f"/policy/changes?before={rows[-1]['change']}" if more and rows else None
    return _render(request, user, "policy_changes.html", changes=changes, older=older,
                   newest=before is None)


# -- exceptions --------------------------------------------------------------------------------

def _exceptions_page(request: Request, user: User, status: int = 200, *,
                     error: str | None = None, message: str | None = None) -> Response:
    items = dashboard_of(request).store.policy_exceptions()
    return _render(request, user, "policy_exceptions.html", status,
                   active=[e for e in items if e["active"]],
                   ended=[e for e in items if not e["active"]], error=error, message=message)


@router.get("/policy/exceptions")
def exceptions_page(request: Request, user: Admin) -> Response:
    return _exceptions_page(request, user)


@router.post("/policy/exceptions/{exception_id}/withdraw")
def withdraw(request: Request, user: Admin, exception_id: ExceptionId, csrf_token: Csrf = "",
             reason: Reason = "") -> Response:
    check_csrf(user, csrf_token)
    dash = dashboard_of(request)
    try:
        change = policy_admin.withdraw(dash.store, dash.own_audit, user.username, exception_id,
                                       reason, _now(request))
    except REFUSED as exc:
        return _exceptions_page(request, user, 422, error=str(exc))
    return _exceptions_page(request, user, message=f"exception {exception_id} withdrawn: "
                                                   f"change {change}")


# -- blocked devices ---------------------------------------------------------------------------

def blocked_now(store: Store, default: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for kind in BLOCKED_KINDS:
        events += store.query_events(EventQuery(kind=kind, limit=BLOCKED_SCAN)).events
    return policy_view.blocked_devices(events, store.policy_exceptions(active_only=True),
                                       _group_of(store), default)


def _blocked_page(request: Request, user: User, status: int = 200, *,
                  form: dict[str, str] | None = None, error: str | None = None,
                  approved: dict[str, Any] | None = None) -> Response:
    store = dashboard_of(request).store
    default = default_group(request)
    groups = {g["group"] for g in store.policy_groups()}
    return _render(request, user, "policy_blocked.html", status,
                   devices=blocked_now(store, default), groups=groups, form=form or {},
                   error=error, approved=approved)


@router.get("/policy/blocked")
def blocked_page(request: Request, user: Admin) -> Response:
    return _blocked_page(request, user)


@router.post("/policy/blocked/approve")
def approve(request: Request, user: Admin, csrf_token: Csrf = "",
            event_id: Annotated[int, Form(ge=1, le=MAX_ID)] = 0, scope: Name = "",
            reason: Reason = "", expires_at: Name = "") -> Response:
    check_csrf(user, csrf_token)
    dash = dashboard_of(request)
    store = dash.store
    default = default_group(request)
    form = {"event_id": str(event_id), "scope": scope, "reason": reason,
            "expires_at": expires_at}
    try:
        event = store.policy_event(event_id)
        if event is None or event["kind"] not in BLOCKED_KINDS:
            raise PolicyInputError(f"event_id: no blocked or rejected device event {event_id}")
        agent_id = event["agent_id"]
        group = _group_of(store).get(agent_id, default)
        item = policy_admin.approve(
            store, dash.own_audit, user.username, policy_view.scope_of(scope, agent_id, group),
            reason, event_id=event_id, expires_at=policy_view.expiry_of(expires_at),
            now=_now(request))
    except REFUSED as exc:
        return _blocked_page(request, user, 422, form=form, error=str(exc))
    inputs = store.policy_inputs(agent_id, default)
    approved = {**item, "agent_id": agent_id,
                "version": None if inputs is None else int(inputs["version"])}
    return _blocked_page(request, user, approved=approved)

