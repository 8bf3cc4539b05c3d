"""The collector's workstation policy routes: admin changes (API key) and workstation sync.

Admin (Authorization: Bearer <API key> with the `policy` scope; 403 without it). Every change
needs a `reason`; refusals name the field (`usb_rules line 3: ...`), 422:
  GET  /api/v1/policy/groups                  -> {"groups": [...], "default_group", "change"}
  POST /api/v1/policy/groups/{group}          {"usb_rules": "...", "netlock_allow": [...],
                                               "reason": "..."} -> {"group", "change"}
  GET  /api/v1/policy/assignments             -> {"assignments": [...], "default_group"}
  POST /api/v1/policy/assignments             {"agent_id", "group", "reason"}
                                              -> {"agent_id", "group", "change"}
  GET  /api/v1/policy/exceptions[?active=true] -> {"exceptions": [...]}
  POST /api/v1/policy/exceptions              {"event_id": n | "device": {"id", "serial",
                                               "hash"}, "scope": "agent:<id>" | "group:<g>" |
                                               "all", "reason", "expires_at"?}
                                              -> 201 {"exception": {...}, "change"}
  POST /api/v1/policy/exceptions/{id}/withdraw {"reason"} -> {"exception_id", "change"}
  GET  /api/v1/policy/changes?limit&group&agent_id&before
                                              -> {"changes": [...]} newest first, each with
                                                 its before/after (the diff view's data)
  GET  /api/v1/policy/documents/{agent_id}    -> the document that workstation gets now
                                                 (unsigned; 404 when it has none yet)
Workstations (X-Floor-Agent signature of an enrolled agent of role "workstation"; 401
unsigned, 403 another role), answers carry the collector's clock like the door routes:
  GET  /api/v1/policy[?since=n]   -> the signed envelope made for the calling workstation
                                     (protocol/policy.sign), 304 when n is its version, 404
                                     while its group has no rules set
  GET  /api/v1/policy/watch?since=n[&wait=s]
                                  -> {"version": v, "changed": v != n}: as soon as its version
                                     is not n, or after `wait` seconds (25, at most 60)
  GET  /api/v1/policy/key         -> {"policy_key": "<base64 raw Ed25519>", "fingerprint"}:
                                     for workstations enrolled before the enrollment answer
                                     carried it
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from floor_agent.audit.keys import public_key_b64
from floor_agent.collector import policy_admin, policy_key
from floor_agent.collector.api_credentials import (
    WATCH_DEFAULT_SECONDS,
    WATCH_MAX_SECONDS,
    AgentAuth,
    VersionWatch,
    time_header,
)
from floor_agent.collector.policy import PolicyInputError
from floor_agent.protocol import policy as wire
from floor_agent.store.interface import RecordConflict, Store, UnknownRecord
from floor_agent.store.records import AgentRecord

NO_NUL = r"^[^\x00]*$"
NAME = Annotated[str, Field(max_length=64, pattern=NO_NUL)]
REASON = Annotated[str, Field(min_length=1, max_length=wire.MAX_TEXT_CHARS, pattern=NO_NUL)]


@dataclass(frozen=True)
class PolicyServing:
    """What the routes sign with: the policy key, the default group, the issuer's name."""

    key: Ed25519PrivateKey
    default_group: str
    issuer: str

    @property
    def public_b64(self) -> str:
        return public_key_b64(self.key)


class GroupBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    usb_rules: str = Field(max_length=wire.MAX_RULES_CHARS,
                           description="USBGuard rules, one a line")
    netlock_allow: list[dict[str, Any]] = Field(
        max_length=wire.MAX_ALLOW, description="entries as workstation.yaml's netlock.allow")
    reason: REASON


class AssignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agent_id: NAME
    group: NAME
    reason: REASON


class DeviceBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: Annotated[str, Field(max_length=9, pattern=NO_NUL, examples=["056a:0374"])]
    serial: Annotated[str, Field(max_length=256, pattern=NO_NUL)] = ""
    hash: Annotated[str, Field(max_length=64, pattern=NO_NUL)]
    name: Annotated[str, Field(max_length=256, pattern=NO_NUL)] = ""


class ExceptionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_id: Annotated[int, Field(ge=1, le=2**63 - 1)] | None = None
    device: DeviceBody | None = None
    scope: Annotated[str, Field(max_length=80, pattern=NO_NUL)]
    reason: REASON
    expires_at: Annotated[str, Field(max_length=40, pattern=NO_NUL)] | None = None


class WithdrawBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: REASON


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json",
                    headers=headers)


def _refused(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except PolicyInputError as exc:
        raise HTTPException(422, str(exc)) from None
    except UnknownRecord as exc:
        raise HTTPException(422, str(exc)) from None
    except policy_admin.UnknownException as exc:
        raise HTTPException(404, str(exc)) from None
    except RecordConflict as exc:
        raise HTTPException(409, str(exc)) from None


def build_router(store: Store, api_user: Callable[[str], Callable[..., str]],
                 auth: AgentAuth, serving: PolicyServing | None) -> APIRouter:
    """The routes above over one store; `serving` None (no policy key loaded): the
    workstation routes answer 503."""
    router = APIRouter(tags=["policy"])
    User = Depends(api_user("policy"))
    watch = VersionWatch(store.policy_change_number)
    default_group = serving.default_group if serving is not None else "default"

    def own(request: Request) -> Any:
        return request.app.state.self_audit

    def workstation(request: Request) -> AgentRecord:
        agent = auth.verified(request, b"")
        if agent.role != policy_admin.WORKSTATION_ROLE:
            raise HTTPException(403, f"agent {agent.agent_id!r} has role {agent.role!r}; "
                                     f"only workstations get a policy",
                                headers=time_header())
        if serving is None:
            raise HTTPException(503, "the collector has no policy key loaded",
                                headers=time_header())
        return agent

    def version_of(agent_id: str) -> int:
        inputs = store.policy_inputs(agent_id, default_group)
        return 0 if inputs is None else int(inputs["version"])

    # -- admin ---------------------------------------------------------------------------
    @router.get("/api/v1/policy/groups")
    def groups(_: str = User) -> Response:
        """Every group's rules and allowlist, the workstations assigned to it."""
        return _json({"groups": store.policy_groups(), "default_group": default_group,
                      "change": store.policy_change_number()})

    @router.post("/api/v1/policy/groups/{group}", responses={409: {}, 422: {}})
    def set_group(request: Request, group: Annotated[str, Path(max_length=64, pattern=NO_NUL)],
                  body: GroupBody, who: str = User) -> Response:
        """Create or replace a group's USB rules and netlock allowlist."""
        change = _refused(lambda: policy_admin.set_group(
            store, own(request), who, group, body.usb_rules, body.netlock_allow, body.reason))
        return _json({"group": group, "change": change})

    @router.get("/api/v1/policy/assignments")
    def assignments(_: str = User) -> Response:
        """Workstations an admin placed in a group (the others are in the default group)."""
        return _json({"assignments": store.policy_assignments(),
                      "default_group": default_group})

    @router.post("/api/v1/policy/assignments", responses={409: {}, 422: {}})
    def assign(request: Request, body: AssignBody, who: str = User) -> Response:
        """Move a workstation to a group (its next document: that group's policy)."""
        change = _refused(lambda: policy_admin.assign(
            store, own(request), who, body.agent_id, body.group, body.reason, default_group))
        return _json({"agent_id": body.agent_id, "group": body.group, "change": change})

    @router.get("/api/v1/policy/exceptions")
    def exceptions(_: str = User, active: bool = Query(False)) -> Response:
        """Device exceptions, newest first (`active`: only those in force)."""
        return _json({"exceptions": store.policy_exceptions(active)})

    @router.post("/api/v1/policy/exceptions", status_code=201, responses={404: {}, 422: {}})
    def approve(request: Request, body: ExceptionBody, who: str = User) -> Response:
        """Approve a blocked device (from its usb.blocked/usb.rejected event, or its id,
        serial and hash) for one workstation, a group or all."""
        device = None if body.device is None else body.device.model_dump()
        item = _refused(lambda: policy_admin.approve(
            store, own(request), who, body.scope, body.reason, event_id=body.event_id,
            device=device, expires_at=body.expires_at))
        return _json({"exception": item, "change": item["approved_change"]}, 201)

    @router.post("/api/v1/policy/exceptions/{exception_id}/withdraw",
                 responses={404: {}, 422: {}})
    def withdraw(request: Request,
                 exception_id: Annotated[str, Path(max_length=64, pattern=NO_NUL)],
                 body: WithdrawBody,
                 who: str = User) -> Response:
        """End an exception before its expiry."""
        change = _refused(lambda: policy_admin.withdraw(store, own(request), who, exception_id,
                                                        body.reason))
        return _json({"exception_id": exception_id, "change": change})

    @router.get("/api/v1/policy/changes")
    def changes(_: str = User, limit: int = Query(100, ge=1, le=1000),
                group: str | None = Query(None, max_length=64, pattern=NO_NUL),
                agent_id: str | None = Query(None, max_length=64, pattern=NO_NUL),
                before: int | None = Query(None, ge=1, le=2**63 - 1)) -> Response:
        """The change log, newest first, each with who, why, when and before/after."""
        return _json({"changes": store.policy_changes(limit, group, agent_id, before)})

    @router.get("/api/v1/policy/documents/{agent_id}", responses={404: {}})
    def document(agent_id: Annotated[str, Path(max_length=64, pattern=NO_NUL)],
                 _: str = User) -> Response:
        """The document a workstation gets now, unsigned (what it will enforce)."""
        made = policy_admin.document_for(store, agent_id, default_group,
                                         serving.issuer if serving else "collector")
        if made is None:
            raise HTTPException(404, f"agent_id: no policy for {agent_id!r} yet (its group "
                                     f"has no rules)")
        return _json({"document": wire.document_to_json(made),
                      "content_hash": wire.content_hash(made)})

    # -- workstations --------------------------------------------------------------------
    @router.get("/api/v1/policy", responses={304: {}, 401: {}, 403: {}, 404: {}})
    async def fetch(request: Request,
                    since: int | None = Query(None, ge=0, le=2**63 - 1)) -> Response:
        """The signed policy made for the calling workstation; 304 when `since` is its
        version."""
        agent = await run_in_threadpool(workstation, request)
        assert serving is not None
        envelope = await run_in_threadpool(
            policy_admin.signed_for, store, serving.key, agent.agent_id, default_group,
            serving.issuer)
        if envelope is None:
            raise HTTPException(404, f"no policy for {agent.agent_id!r} yet",
                                headers=time_header())
        if since is not None and since == envelope["document"]["version"]:
            return Response(status_code=304, headers=time_header())
        return Response(wire.envelope_bytes(envelope), media_type="application/json",
                        headers=time_header())

    @router.get("/api/v1/policy/watch", responses={401: {}, 403: {}})
    async def policy_watch(
            request: Request, since: int = Query(..., ge=0, le=2**63 - 1),
            wait: float = Query(WATCH_DEFAULT_SECONDS, ge=0, le=WATCH_MAX_SECONDS)
    ) -> Response:
        """Answers when the calling workstation's version is no longer `since`, or after
        `wait` seconds unchanged."""
        agent = await run_in_threadpool(workstation, request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            version = await run_in_threadpool(version_of, agent.agent_id)
            remaining = deadline - loop.time()
            if version != since or remaining <= 0:
                break
            site = await run_in_threadpool(store.policy_change_number)
            await watch.wait(site, remaining)
        return _json({"version": version, "changed": version != since},
                     headers=time_header())

    @router.get("/api/v1/policy/key", responses={401: {}, 403: {}})
    async def key(request: Request) -> Response:
        """The collector's policy public key (pin it; protocol/policy.verify)."""
        await run_in_threadpool(workstation, request)
        assert serving is not None
        return _json({"policy_key": serving.public_b64,
                      "fingerprint": policy_key.fingerprint(serving.public_b64)},
                     headers=time_header())

    return router

