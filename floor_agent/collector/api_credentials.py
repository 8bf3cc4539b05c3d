"""The collector's door-credential routes: admin changes (API key) and controller sync (agent).

Admin (Authorization: Bearer <API key> with the `credentials` scope; 403 without it), bodies
as in credentials.py:
  POST /api/v1/people                 person        -> 201 {"person": ..., "version": n}
  GET  /api/v1/people                               -> {"people": [...], "version": n}
  POST /api/v1/people/{id}/revoke                   -> {"person_id", "cards_deactivated",
                                                        "templates_deleted", "version"}
  POST /api/v1/cards                  card          -> 201 {"card": ..., "version": n}
  POST /api/v1/levels                 level         -> 201 {"level": ..., "version": n}
  POST /api/v1/holidays               holiday       -> 201 {"holiday": ..., "version": n}
  GET  /api/v1/credentials/log?limit=n              -> {"log": [{"id", "ts", "actor",
                                                        "action", "subject", "version",
                                                        "detail"}]}, newest first
Door controllers (X-Floor-Agent signature of an enrolled agent of role "door", see
protocol/request_signing.py; an API key is not accepted here):
  GET  /api/v1/credentials[?since=n]  -> the snapshot (credentials.py), or 304 with no body
                                         when n is the current version
  GET  /api/v1/credentials/watch?since=n[&wait=s]
                                      -> {"version": v, "changed": v != n}, as soon as the
                                         version is not n, or after `wait` seconds (25,
                                         at most 60) with changed false: the long poll a
                                         controller holds open so a revoke reaches it at once
Answers to door controllers carry the collector's clock (request_signing.TIME_HEADER), 401
refusals too, so a controller whose clock is off can correct the time it signs with.
  POST /api/v1/templates              template      -> 201 {"template_id", "version"}

Templates arrive sealed (templates.seal() under the site key, which the collector never has):
the collector stores and serves opaque bytes. It cannot tell sealed bytes from clear ones, so
the rule is the controller's: `door enroll` only ever uploads seal() output. Revoking a person
deletes their template rows and the next snapshot no longer carries them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from floor_agent.audit.keys import KeyFileError, public_key_from_b64
from floor_agent.collector.replay_memory import StoreReplayGuard
from floor_agent.protocol import credentials as wire
from floor_agent.protocol import request_signing
from floor_agent.protocol.event import utc_timestamp
from floor_agent.store.interface import RecordConflict, Store, StoreUnavailable, UnknownRecord
from floor_agent.store.records import AgentRecord

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024  # the largest record (a level with many windows) is far smaller
DOOR_ROLE = "door"
WATCH_DEFAULT_SECONDS = 25.0
WATCH_MAX_SECONDS = 60.0
WATCH_POLL_SECONDS = 0.2  # how often the one watcher task reads the version (any store,
                          # any number of collector processes: the store is the truth)


def time_header() -> dict[str, str]:
    """The collector's clock for an agent's answer (request_signing.TIME_HEADER)."""
    return {request_signing.TIME_HEADER: str(int(time.time() * 1000))}


class VersionWatch:
    """Long polls of the credentials version: one task reads the store every
    WATCH_POLL_SECONDS while anybody waits, and wakes every waiter whose version is old."""

    def __init__(self, read_version: Callable[[], int],
                 period: float = WATCH_POLL_SECONDS) -> None:
        self._read = read_version
        self.period = period
        self._cond: asyncio.Condition | None = None
        self._task: asyncio.Task[None] | None = None
        self._waiters = 0
        self._version: int | None = None
        self._round = 0  # polls done; a waiter only trusts polls after it arrived

    async def wait(self, since: int, timeout: float) -> int:
        """The version as soon as it is not `since`, or the current one after `timeout`."""
        current = await run_in_threadpool(self._read)
        if current != since or timeout <= 0:
            return current
        if self._cond is None:
            self._cond = asyncio.Condition()
        cond = self._cond
        arrived = self._round
        self._waiters += 1
        try:
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._poll())
            async with cond:
                await asyncio.wait_for(cond.wait_for(
                    lambda: self._round > arrived and self._version != since), timeout)
        except TimeoutError:
            pass
        finally:
            self._waiters -= 1
        return self._version if self._version is not None and self._round > arrived \
            else current

    async def _poll(self) -> None:
        assert self._cond is not None
        while self._waiters > 0:
            try:
                version = await run_in_threadpool(self._read)
            except StoreUnavailable:  # the database away: said once (database_watch.py)
                pass
            except Exception:  # the store hiccupped: the waiters time out, nothing else
                log.exception("credentials version watch: store read failed")
            else:
                async with self._cond:
                    self._version = version
                    self._round += 1
                    self._cond.notify_all()
            await asyncio.sleep(self.period)


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


async def read_body(request: Request, limit: int = MAX_BODY, what: str = "request") -> bytes:
    """The raw body (signed requests are verified byte for byte), 413 past `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise HTTPException(413, f"{what} larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"{what} larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes, parse: Callable[[Any], Any]) -> Any:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(400, f"body: not valid JSON ({exc})") from None
    try:
        return parse(value)
    except wire.CredentialError as exc:
        raise HTTPException(422, str(exc)) from None


def _change(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except UnknownRecord as exc:
        raise HTTPException(422, str(exc)) from None
    except RecordConflict as exc:
        raise HTTPException(409, str(exc)) from None


class AgentAuth:
    """Verifies X-Floor-Agent against the enrolled key; the replay memory is the site's, in
    the store (replay_memory.py): a request replayed to another collector is refused too."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.guard = StoreReplayGuard(store)

    def verified(self, request: Request, body: bytes) -> AgentRecord:
        """The enrolled agent that signed exactly this request, now; 401 otherwise."""
        try:
            header = request_signing.parse_header(request.headers.get(request_signing.HEADER))
            self.guard.check_fresh(header, int(time.time() * 1000))
            agent = self.store.get_agent(header.agent_id)
            if agent is None:
                raise request_signing.RequestAuthError(f"agent {header.agent_id!r} is not enrolled")
            try:
                key = public_key_from_b64(agent.public_key)
            except KeyFileError:
                raise request_signing.RequestAuthError("the enrolled key is unusable") from None
            # the path as sent (percent-encoding intact), as the agent signed it
            raw_path = request.scope.get("raw_path")
            target = raw_path.decode("latin-1") if raw_path else request.scope["path"]
            if request.scope.get("query_string"):
                target += "?" + request.scope["query_string"].decode("latin-1")
            request_signing.verify(header, key, request.method, target, body)
            self.guard.remember(header, int(time.time() * 1000))
        except request_signing.RequestAuthError as exc:
            log.warning("refused agent request %s %s: %s", request.method,
                        request.scope["path"], exc)
            raise HTTPException(401, str(exc), headers=time_header()) from None
        return agent

    def door(self, request: Request, body: bytes) -> str:
        """The agent id of a verified door controller; 401/403 otherwise."""
        agent = self.verified(request, body)
        if agent.role != DOOR_ROLE:
            raise HTTPException(403, f"agent {agent.agent_id!r} has role {agent.role!r}; only "
                                     f"{DOOR_ROLE!r} agents may use this")
        return agent.agent_id


def json_body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """openapi_extra for a route that reads its JSON body raw: the document declares it, so
    clients and the fuzzer (tests/test_api_fuzz.py) see its shape (credentials.py checks it)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "properties": properties, "required": required,
        "additionalProperties": False}}}}}


ID = {"type": "string", "maxLength": 64}
PERSON_BODY = json_body({"person_id": ID, "name": {"type": "string", "maxLength": 200},
                         "active": {"type": "boolean"},
                         "access_levels": {"type": "array", "items": ID},
                         "duress_fingers": {"type": "array", "items": {"type": "integer"}}},
                        ["person_id", "name"])
CARD_BODY = json_body({"uid": {"type": "string", "maxLength": 32}, "person_id": ID,
                       "active": {"type": "boolean"},
                       "valid_from": {"type": ["string", "null"]},
                       "valid_until": {"type": ["string", "null"]},
                       "keyed": {"type": "boolean"}}, ["uid", "person_id"])
WINDOW = {"type": "object", "required": ["days", "start", "end"], "properties": {
    "days": {"type": "array", "items": {"type": "string", "enum": list(wire.WEEKDAYS)}},
    "start": {"type": "string", "example": "07:00"},
    "end": {"type": "string", "example": "19:00"}}}
LEVEL_BODY = json_body({"level_id": ID, "doors": {"type": "array", "items": ID},
                        "windows": {"type": "array", "items": WINDOW},
                        "on_holidays": {"type": "boolean"}}, ["level_id", "doors", "windows"])
HOLIDAY_BODY = json_body({"date": {"type": "string", "format": "date"},
                          "name": {"type": "string", "maxLength": 200}}, ["date"])
TEMPLATE_BODY = json_body({"template_id": ID, "person_id": ID, "finger": {"type": "integer"},
                           "sealed": {"type": "string", "description": "base64"}},
                          list(wire.TEMPLATE_KEYS))


def build_router(store: Store, api_user: Callable[[str], Callable[..., str]],
                 auth: AgentAuth) -> APIRouter:
    """The routes above, over one store; api_user(scope) is the API's API-key dependency (the
    admin routes need the `credentials` scope), auth the app's one verifier of agent-signed
    requests (one replay memory for every route)."""
    router = APIRouter(tags=["credentials"])
    User = Depends(api_user("credentials"))
    watch = VersionWatch(store.credentials_version)

    def now() -> str:
        return utc_timestamp()

    @router.post("/api/v1/people", status_code=201, openapi_extra=PERSON_BODY)
    async def add_person(request: Request, who: str = User) -> Response:
        """Add or update a person (credentials.py: person); their access levels must exist."""
        person = _parse(await read_body(request), wire.person_from_json)
        version = await run_in_threadpool(_change, lambda: store.put_person(person, who, now()))
        return _json({"person": wire.person_to_json(person), "version": version}, 201)

    @router.get("/api/v1/people")
    def list_people(_: str = User) -> Response:
        """People with card UIDs and template ids (never template bytes)."""
        return _json({"people": store.list_people(), "version": store.credentials_version()})

    @router.post("/api/v1/people/{person_id}/revoke")
    def revoke(person_id: str, who: str = User) -> Response:
        """Deactivate the person and their cards; their templates are deleted (GDPR Art. 9)."""
        try:
            wire.check_id(person_id, "person_id")
        except wire.CredentialError as exc:
            raise HTTPException(422, str(exc)) from None
        result = store.revoke_person(person_id, who, now())
        if result is None:
            raise HTTPException(404, f"person_id: no person {person_id!r}")
        log.info("person %s revoked by %s: %d card(s) off, %d template(s) deleted", person_id,
                 who, result.cards_deactivated, result.templates_deleted)
        return _json({"person_id": person_id, "cards_deactivated": result.cards_deactivated,
                      "templates_deleted": result.templates_deleted, "version": result.version})

    @router.post("/api/v1/cards", status_code=201, openapi_extra=CARD_BODY)
    async def add_card(request: Request, who: str = User) -> Response:
        """Add or update a card (credentials.py: card); its person must exist."""
        card = _parse(await read_body(request), wire.card_from_json)
        version = await run_in_threadpool(_change, lambda: store.put_card(card, who, now()))
        return _json({"card": wire.card_to_json(card), "version": version}, 201)

    @router.post("/api/v1/levels", status_code=201, openapi_extra=LEVEL_BODY)
    async def add_level(request: Request, who: str = User) -> Response:
        """Add or update an access level (credentials.py: level)."""
        level = _parse(await read_body(request), wire.level_from_json)
        version = await run_in_threadpool(_change, lambda: store.put_level(level, who, now()))
        return _json({"level": wire.level_to_json(level), "version": version}, 201)

    @router.post("/api/v1/holidays", status_code=201, openapi_extra=HOLIDAY_BODY)
    async def add_holiday(request: Request, who: str = User) -> Response:
        """Add or rename a holiday: {"date": "YYYY-MM-DD", "name": "..."}."""
        day, name = _parse(await read_body(request), wire.holiday_from_json)
        version = await run_in_threadpool(
            _change, lambda: store.put_holiday(day, name, who, now()))
        return _json({"holiday": {"date": day.isoformat(), "name": name}, "version": version},
                     201)

    @router.get("/api/v1/credentials/log")
    def credential_log(_: str = User, limit: int = Query(100, ge=1, le=1000)) -> Response:
        """Who changed which credential, when, and the version it made (newest first)."""
        return _json({"log": store.credential_log(limit)})

    @router.get("/api/v1/credentials", responses={304: {}, 401: {}, 403: {}})
    async def credentials(request: Request) -> Response:
        """The full snapshot for a door controller; 304 when ?since= is the current version."""
        agent_id = await run_in_threadpool(auth.door, request, b"")
        since = request.query_params.get("since")
        if since is not None and not since.isdigit():
            raise HTTPException(422, "since: expected a version number")
        if since is not None and int(since) == await run_in_threadpool(
                store.credentials_version):
            return Response(status_code=304, headers=time_header())
        snapshot = await run_in_threadpool(store.credentials_snapshot)
        log.debug("credentials v%d to %s", snapshot.version, agent_id)
        return Response(await run_in_threadpool(
            lambda: orjson.dumps(wire.credentials_to_json(snapshot))),
            media_type="application/json", headers=time_header())

    @router.get("/api/v1/credentials/watch", responses={401: {}, 403: {}})
    async def credentials_watch(
            request: Request, since: int = Query(..., ge=0),
            wait: float = Query(WATCH_DEFAULT_SECONDS, ge=0, le=WATCH_MAX_SECONDS)
    ) -> Response:
        """Answers when the credentials version is no longer `since` (then fetch the
        snapshot), or after `wait` seconds unchanged."""
        await run_in_threadpool(auth.door, request, b"")
        version = await watch.wait(since, wait)
        return Response(orjson.dumps({"version": version, "changed": version != since}),
                        media_type="application/json", headers=time_header())

    @router.post("/api/v1/templates", status_code=201, responses={401: {}, 403: {}, 409: {}},
                 openapi_extra=TEMPLATE_BODY)
    async def add_template(request: Request) -> Response:
        """A sealed template from `door enroll` (credentials.py: template); the collector
        cannot read it and stores it as it came."""
        body = await read_body(request)
        agent_id = await run_in_threadpool(auth.door, request, body)
        template = _parse(body, wire.template_from_json)
        version = await run_in_threadpool(
            _change, lambda: store.add_template(template, agent_id, now()))
        log.info("template %s (finger %d) of %s stored from %s", template.template_id,
                 template.finger, template.person_id, agent_id)
        return _json({"template_id": template.template_id, "version": version}, 201)

    return router
