"""The collector's HTTP API (FastAPI): enroll, ingest, query, alerts, metrics, health, the
door credentials (api_credentials.py) and the cameras' snapshots (api_snapshots.py).

Agents authenticate by signature (ingest) or one-time token (enroll); people and scripts that
read the audit trail need an API key (`floor-agent collector apikey create`). Every bad request
gets a 4xx naming what is wrong; nothing of a rejected batch is stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

import anyio
import anyio.to_thread
import orjson
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from floor_agent import __version__
from floor_agent.collector import api_keys, api_policy, api_snapshots
from floor_agent.collector import database_health as db_health
from floor_agent.collector.alerts import acknowledge, chain_state
from floor_agent.collector.api_policy import PolicyServing
from floor_agent.collector.core import Collector, EnrollError, secret_hash
from floor_agent.collector.database_watch import DatabaseWatch
from floor_agent.collector.headers import SecurityHeaders
from floor_agent.collector.metrics import render_metrics
from floor_agent.collector.self_audit import OwnAudit
from floor_agent.collector.start_gate import StartGate
from floor_agent.common.clock import utc_now
from floor_agent.protocol.event import SEVERITIES, TS_RE
from floor_agent.protocol.event import utc_timestamp as now_ts
from floor_agent.store.interface import EventQuery, StoreUnavailable

log = logging.getLogger(__name__)
bearer = HTTPBearer(auto_error=False, description="API key from `floor-agent collector apikey "
                                                  "create`")


# Installs more routes or listeners on the collector's app (the dashboard:
# floor_agent/dashboard/app.py). The composition root (roles/run.py) passes them: the collector
# does not know its extensions.
AppExtension = Callable[[FastAPI, Collector], None]

NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL: refuse it at the edge, not with a 500


class EnrollRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(max_length=200, pattern=NO_NUL)
    agent_id: str = Field(max_length=64, pattern=NO_NUL)
    role: str = Field(max_length=32, pattern=NO_NUL)
    public_key: str = Field(max_length=100, pattern=NO_NUL,
                            description="raw Ed25519 public key, base64")
    hostname: str = Field(default="", max_length=253, pattern=NO_NUL)


class AckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comment: str = Field(min_length=1, max_length=2000, pattern=NO_NUL)


# The ingest body is read raw (it is verified byte for byte), so FastAPI cannot infer it: the
# document declares it here, so clients and the fuzzer (tests/test_api_fuzz.py) know its shape.
INGEST_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {
        "type": "object", "required": ["agent_id", "events", "checkpoint"],
        "properties": {
            "agent_id": {"type": "string", "maxLength": 64},
            "prev_hash": {"type": "string", "description": "hex SHA-256 before the first"},
            "events": {"type": "array", "items": {
                "type": "object", "properties": {
                    "event": {"type": "object", "description": "the canonical event"},
                    "hash": {"type": "string"}}}},
            "checkpoint": {"type": "object", "properties": {
                "seq": {"type": "integer"}, "hash": {"type": "string"},
                "ts": {"type": "string"}, "signature": {"type": "string"}}}}}}}}}


class IngestAnswer(BaseModel):
    acked_seq: int | None
    stored: int
    message: str


# key hash -> (the key as last read, when): what api_user may judge a metrics key on while
# the database is away (api_keys.OFFLINE_SCOPES); bounded, emptied when full
_keys_read: dict[bytes, tuple[api_keys.KeyRecord | None, datetime]] = {}
MAX_KEYS_READ = 256


def api_user(scope: str) -> Callable[..., str]:
    """A dependency giving the name of the API key presented, if it may use `scope`
    (api_keys.SCOPES): 401 without a valid, unexpired, unrevoked key, 403 naming the scope
    the key lacks. The key's last use is recorded, at most once a minute. While the database
    is away, a metrics key is judged on what this process last read of it (api_keys.py)."""

    def dependency(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None,
                                                       Depends(bearer)]) -> str:
        if creds is None:
            raise HTTPException(401, "missing API key (Authorization: Bearer ...)",
                                headers={"WWW-Authenticate": "Bearer"})
        store = request.app.state.store
        key_hash = secret_hash(creds.credentials)
        now = utc_now()
        try:
            row = store.get_api_key(key_hash)
        except StoreUnavailable:
            key, read_at = _keys_read.get(key_hash, (None, None))
            if not api_keys.usable_offline(scope, read_at, now):
                raise
        else:
            key = None if row is None else api_keys.record(row)
            if len(_keys_read) >= MAX_KEYS_READ:
                _keys_read.clear()
            _keys_read[key_hash] = (key, now)
        refused = api_keys.refusal(key, scope, now_ts(now))
        if refused is not None or key is None:
            status, reason = refused or (401, "unknown API key")
            raise HTTPException(status, reason, headers={"WWW-Authenticate": "Bearer"}
                                if status == 401 else None)
        if api_keys.needs_touch(key, now):
            try:
                store.touch_api_key(key_hash, now_ts(now))
            except StoreUnavailable:
                if scope not in api_keys.OFFLINE_SCOPES:
                    raise
        return key.name

    return dependency


Reader = Annotated[str, Depends(api_user("read"))]
Acker = Annotated[str, Depends(api_user("ack"))]
MetricsReader = Annotated[str, Depends(api_user("metrics"))]


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def create_app(collector: Collector, max_request_bytes: int = 16 * 1024 * 1024,
               stale_checkpoint_seconds: int = 180,
               ingest_threads: int | None = None, *, self_audit: OwnAudit,
               extensions: Sequence[AppExtension] = (),
               policy: PolicyServing | None = None,
               database: DatabaseWatch | None = None) -> FastAPI:
    """The ASGI app over one Collector; each extension installs itself on it (the security
    staff's dashboard at /, given by the composition root).

    self_audit: the collector's own audit trail (server.run gives its AuditAgent; a test may
    give a Spool): acknowledgements, logins and footage views are recorded there, so it is
    required.

    policy: the policy key, default group and issuer the workstation policy routes sign with
    (api_policy.py; server.run gives it); None: those routes answer 503 and the enrollment
    answer carries no policy key.

    database: the database's reachability (database_watch.py; made here when not given),
    probed while the app runs: /healthz and /metrics report it, and a request that finds the
    database away is answered 503 with Retry-After, logged once per outage. A watch made
    with the rest of a start that waits for the database (server.py) keeps every route but
    /healthz at 503 until that start has run (start_gate.py).

    ingest_threads: at most this many batches are verified and stored at once (None: as many
    as the thread pool runs). With SQLite, 1: the store takes one writer at a time and the GIL
    one parser, so more threads only add GIL hand-offs inside the write lock (measured: 4
    concurrent ingest threads store ~20-30% fewer events/s than 1; bench/collector_ingest.py).
    """
    ingest_limiter: list[anyio.CapacityLimiter] = []  # made on first use, inside the loop
    watch = database if database is not None else DatabaseWatch(collector.store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def watch_stale() -> None:
            period = max(5.0, min(30.0, stale_checkpoint_seconds / 3))
            while True:
                await asyncio.sleep(period)
                if not db_health.stale_sweep_due(watch.state, time.time(),
                                                 stale_checkpoint_seconds):
                    continue  # agents could not deliver while the database was away
                try:
                    await run_in_threadpool(collector.flag_stale_checkpoints,
                                            stale_checkpoint_seconds)
                except StoreUnavailable as exc:  # said once by the watch, not per sweep
                    watch.failed(exc)
                except Exception:  # a database hiccup must not end the watch
                    log.exception("stale checkpoint check failed")

        watch.start()
        task = asyncio.create_task(watch_stale())
        try:
            yield
        finally:
            task.cancel()
            await run_in_threadpool(watch.stop)

    app = FastAPI(title="floor-agent collector", version=__version__, lifespan=lifespan,
                  description="Central audit collector: signed, hash-chained events from every "
                              "floor agent.")
    store = collector.store

    app.state.store = store
    app.state.self_audit = self_audit
    app.state.database = watch
    for extend in extensions:
        extend(app, collector)
    app.include_router(api_snapshots.router)
    app.add_middleware(StartGate, watch=watch)  # inside SecurityHeaders: its 503s get them
    app.add_middleware(SecurityHeaders)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, Any]:
        """Liveness of this process (200 whenever it answers) and the database's state as
        last seen (`database.state` up or down, since when); no authentication, no data.
        Answered on the event loop without a database call: the watchdog asks it, and a
        database outage must not get a healthy collector restarted."""
        return {"status": "ok", "version": __version__,
                "database": db_health.report(watch.state, time.time())}

    @app.post("/api/v1/enroll", status_code=201, tags=["agents"])
    def enroll(body: EnrollRequest, request: Request) -> dict[str, str]:
        """Register an agent's public key with a one-time token. The answer carries the
        collector's policy public key (`policy_key`, base64 raw Ed25519): a workstation pins
        it and accepts only policy signed by it (protocol/policy.py)."""
        try:
            collector.enroll(body.token, body.agent_id, body.role, body.public_key,
                             body.hostname, request.client.host if request.client else "unknown")
        except EnrollError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        answer = {"agent_id": body.agent_id, "status": "enrolled"}
        if policy is not None:
            answer["policy_key"] = policy.public_b64
        return answer

    @app.post("/api/v1/ingest", tags=["agents"], response_model=IngestAnswer,
              responses={400: {}, 401: {}, 409: {}, 413: {}, 422: {}},
              openapi_extra=INGEST_BODY)
    async def ingest(request: Request) -> Response:
        """One signed batch of chained events (see floor_agent/collector/ingest.py)."""
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit()
                                     or int(declared) > max_request_bytes):
            return _json({"detail": f"request larger than {max_request_bytes} bytes"}, 413)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_request_bytes:
                return _json({"detail": f"request larger than {max_request_bytes} bytes"}, 413)
            chunks.append(chunk)
        body = b"".join(chunks)
        chunks.clear()  # the body once, not twice, while it is verified and stored
        # the address unauthenticated failures are counted against (ingest.noise_alert)
        source = request.client.host if request.client else "unknown"
        if ingest_threads is None:
            result = await run_in_threadpool(collector.ingest, body, source)
        else:
            if not ingest_limiter:
                ingest_limiter.append(anyio.CapacityLimiter(ingest_threads))
            result = await anyio.to_thread.run_sync(collector.ingest, body, source,
                                                    limiter=ingest_limiter[0])
        if result.status != 200:
            answer: dict[str, Any] = {"detail": result.message}
            if result.problem is not None:
                answer["problem"] = result.problem
            return _json(answer, result.status)
        return _json({"acked_seq": result.acked_seq, "stored": result.stored,
                      "message": result.message})

    @app.get("/api/v1/events", tags=["audit"])
    def events(
        _: Reader,
        agent_id: str | None = None,
        kind: str | None = Query(None, description="exact kind, e.g. usb.blocked"),
        kind_prefix: str | None = Query(None, description="e.g. 'usb.' for every USB event"),
        severity: list[str] = Query(default_factory=list, description="repeatable"),
        since: str | None = Query(None, description="UTC, YYYY-MM-DDTHH:MM:SS.ffffffZ"),
        until: str | None = None,
        limit: int = Query(100, ge=1, le=1000),
        cursor: str | None = Query(None, description="next_cursor of the previous page"),
    ) -> Response:
        """Events, newest first, filtered; page with next_cursor."""
        for name, value in (("agent_id", agent_id), ("kind", kind), ("kind_prefix", kind_prefix)):
            if value is not None and "\x00" in value:
                raise HTTPException(422, f"{name}: NUL characters are not allowed")
        bad = [s for s in severity if s not in SEVERITIES]
        if bad:
            raise HTTPException(422, f"severity: unknown {bad}; expected {list(SEVERITIES)}")
        for name, value in (("since", since), ("until", until)):
            if value is not None and not TS_RE.match(value):
                raise HTTPException(422, f"{name}: expected YYYY-MM-DDTHH:MM:SS.ffffffZ")
        parsed_cursor = None
        if cursor:
            ts, _, row_id = cursor.rpartition("|")
            if not TS_RE.match(ts) or not row_id.isdigit():
                raise HTTPException(422, "cursor: not a next_cursor this API gave out")
            parsed_cursor = (ts, int(row_id))
        page = store.query_events(EventQuery(agent_id, kind, kind_prefix, tuple(severity),
                                             since, until, limit, parsed_cursor))
        next_cursor = f"{page.next_cursor[0]}|{page.next_cursor[1]}" if page.next_cursor else None
        return _json({"events": page.events, "next_cursor": next_cursor})

    @app.get("/api/v1/agents", tags=["audit"])
    def agents(_: Reader) -> Response:
        """Enrolled agents with last seen, chain head, last checkpoint, open alert kinds, the
        last re-verification and the chain state both decide (alerts.chain_state)."""
        collector.flush_noise()
        items = store.list_agents()
        open_alerts = store.list_alerts(open_only=True, limit=100_000)
        verifications = store.list_verifications()
        for item in items:
            kinds = sorted({a["kind"] for a in open_alerts if a["agent_id"] == item["agent_id"]})
            check = verifications.get(item["agent_id"])
            item["open_alerts"] = kinds
            item["last_verification"] = check
            item["chain_state"] = chain_state(set(kinds), check)
        return _json({"agents": items})

    @app.get("/api/v1/alerts", tags=["alerts"])
    def alerts(_: Reader, open_only: bool = Query(False, alias="open"),
               agent_id: str | None = Query(None, pattern=NO_NUL),
               kind: str | None = Query(None, pattern=NO_NUL),
               limit: int = Query(100, ge=1, le=1000)) -> Response:
        """Alerts: open first, then by severity, genuine before per-address noise, newest
        first within that (a genuine critical alert is on the first page whatever the noise)."""
        collector.flush_noise()  # per-address counts held in memory, so the list is exact
        return _json({"alerts": store.list_alerts(open_only, agent_id, kind, limit)})

    @app.post("/api/v1/alerts/{alert_id}/ack", tags=["alerts"])
    def ack(alert_id: Annotated[int, Path(ge=1, le=2**63 - 1)], body: AckRequest,
            who: Acker) -> dict[str, Any]:
        """Acknowledge an open alert with a comment; records who and when, and emits
        `alert.acknowledged` on the collector's own audit trail."""
        if not acknowledge(store, app.state.self_audit, alert_id, who, body.comment, now_ts(),
                           via="api"):
            raise HTTPException(404, f"alert {alert_id}: no such open alert")
        return {"id": alert_id, "acked_by": who}

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    def metrics(_: MetricsReader) -> Response:
        """Prometheus text format."""
        body, content_type = render_metrics(collector, watch)
        return Response(body, media_type=content_type)

    # -- door credentials: admin routes and controller sync (api_credentials.py) ------------
    from floor_agent.collector.api_credentials import AgentAuth, build_router

    # agent-signed requests (door sync, templates, camera snapshots): one verifier, one replay
    # memory for every route that takes them
    app.state.agent_auth = AgentAuth(store)
    app.include_router(build_router(store, api_user, app.state.agent_auth))
    # -- workstation policy: admin routes and workstation sync (api_policy.py) -------------
    app.include_router(api_policy.build_router(store, api_user, app.state.agent_auth, policy))

    @app.exception_handler(StoreUnavailable)
    async def database_away(request: Request, exc: StoreUnavailable) -> JSONResponse:
        """503 with Retry-After: the agent keeps its events spooled and sends them again (a
        batch whose commit was cut off is then a duplicate, acknowledged once); one log line
        per outage (database_watch.py), not a traceback per request."""
        watch.failed(exc, refused=True)
        return JSONResponse({"detail": "the collector's database is unavailable; retry later",
                             "problem": "database_unavailable"}, 503,
                            headers={"Retry-After": str(db_health.RETRY_AFTER_SECONDS)})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; see the collector log"}, 500)

    return app
