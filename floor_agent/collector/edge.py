"""The collector's edge: what a connection or a source address may hold of the listener.

The collector sits on the floor LAN, where anyone who plugs in a laptop can open connections.
uvicorn alone gives a connection that never sends a request no deadline at all, and counts
every open connection against one process-wide limit, so ~1,000 idle TLS connections left
nobody served. Here:

- EdgeListener accepts the sockets itself and decides before the TLS handshake: at most
  `max_connections_per_address` per source address, `max_connections` in all (when full, the
  oldest connection not in a request, of the address holding the most, is closed to make room
  for an address holding fewer); admitted sockets get the handshake under a deadline.
- EdgeProtocol (uvicorn's httptools protocol) puts deadlines on the phases a client controls:
  request line and headers (and their size), the body (a grace period plus a minimum rate),
  and the idle wait between kept-alive requests. The application's own time (a live feed)
  has none.
- BodyGuard (ASGI) reads each request's body before the application runs, under a per-route
  limit (413 as soon as it is passed, or at once from Content-Length) and a budget of body
  bytes held by the whole process and by one address (503 past it): the application never
  sees a partial body, and the bytes held at once are bounded.
- Offences (fail2ban's idea, inside the collector): an address whose requests keep being
  refused (unauthenticated, malformed, oversized, throttled) or whose handshakes, headers or
  bodies keep running out of time is shut out at accept, before any TLS work, for a while that
  doubles with each repeat. A caps-and-deadlines edge still pays a handshake and a request for
  every try; shutting the persistent offender out is what keeps the collector's one event
  loop for the agents and the dashboard.

The decisions are pure functions over plain data (admission, victim, route limit, deadlines);
the classes are the thin adapters to asyncio and uvicorn. EdgeProtocol depends on uvicorn's
HttpToolsProtocol hooks, hence the version range pinned in pyproject.toml.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import resource
import socket
import ssl
import struct
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from floor_agent.collector.config import CollectorSection, EdgeSettings

log = logging.getLogger(__name__)

# The application behind the guard (FastAPI's, whose scope is any mutable mapping).
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

# Sent on every response: browsers and clients that saw the collector over HTTPS once never
# try it over plain HTTP (a LAN attacker's downgrade) for a year.
HSTS = "max-age=31536000"
SNAPSHOT_PATH = "/api/v1/snapshots/"
# a workstation group's rules and allowlist (collector/api_policy.py): USB rules up to 256 KiB
# (protocol/policy.MAX_RULES_CHARS), JSON-escaped, and the allowlist
POLICY_GROUP_PATH = "/api/v1/policy/groups/"
POLICY_GROUP_BODY = 1024 * 1024


@dataclass(frozen=True)
class EdgeLimits:
    """The listener's limits in plain numbers (from CollectorSection.edge)."""

    max_connections: int
    per_address: int
    handshake_timeout: float
    header_timeout: float
    body_timeout: float
    body_min_rate: int
    idle_timeout: float
    max_header_bytes: int
    small_body: int
    form_body: int
    ingest_body: int
    snapshot_body: int
    body_budget: int
    body_budget_per_address: int

    @classmethod
    def of(cls, section: CollectorSection, snapshot_body: int) -> EdgeLimits:
        edge = section.edge
        return cls(edge.max_connections, edge.max_connections_per_address,
                   edge.tls_handshake_timeout_seconds, edge.header_timeout_seconds,
                   edge.body_timeout_seconds, edge.body_min_rate_bytes,
                   edge.idle_timeout_seconds, edge.max_header_bytes, edge.small_body_bytes,
                   edge.form_body_bytes, section.max_request_bytes, snapshot_body,
                   edge.body_budget_bytes, edge.body_budget_per_address_bytes)


# --------------------------------------------------------------------------- pure decisions


@dataclass(eq=False)
class Connection:
    """One accepted socket, from accept to close."""

    address: str
    opened: float
    busy: bool = False  # between a request's headers and its response: never evicted
    close: Callable[[], object] = field(default=lambda: None, repr=False)


def admission(per_address: Mapping[str, int], total: int, address: str,
              limits: EdgeLimits) -> str:
    """"admit", "address_full" (this address holds its share) or "full" (all taken)."""
    if per_address.get(address, 0) >= limits.per_address:
        return "address_full"
    if total >= limits.max_connections:
        return "full"
    return "admit"


def eviction_victim(by_address: Mapping[str, Iterable[Connection]],
                    per_address: Mapping[str, int], newcomer: str) -> Connection | None:
    """When all connections are taken: the oldest one not in a request, of the address that
    holds the most, if that address holds more than the newcomer's would after admission.
    So an address with few connections always gets in while another hoards idle ones.

    by_address: each address's connections, oldest first. Looks at addresses, not at every
    connection: it runs for each attempt while the listener is full, which under a flood is
    thousands a second."""
    floor = per_address.get(newcomer, 0) + 1
    holding: dict[int, list[str]] = {}
    for address, count in per_address.items():
        if count > floor:
            holding.setdefault(count, []).append(address)
    for count in sorted(holding, reverse=True):
        best: Connection | None = None
        for address in holding[count]:
            oldest_idle = next((c for c in by_address.get(address, ()) if not c.busy), None)
            if oldest_idle is not None and (best is None or oldest_idle.opened < best.opened):
                best = oldest_idle
        if best is not None:
            return best
    return None


def body_limit(method: str, path: str, limits: EdgeLimits) -> int:
    """The largest body a route takes: a few KiB for enrollment and login, the batch limit
    for ingest, the snapshot's own, a small one for every other form or API call."""
    if method != "POST":
        return limits.small_body
    if path == "/api/v1/ingest":
        return limits.ingest_body
    if path.startswith(SNAPSHOT_PATH):
        return limits.snapshot_body
    if path in ("/api/v1/enroll", "/login"):
        return limits.small_body
    if path.startswith(POLICY_GROUP_PATH):
        return max(limits.form_body, POLICY_GROUP_BODY)
    return limits.form_body


def header_size(scope: Mapping[str, Any]) -> int:
    """Bytes of the request line's target and the headers, as received (near enough)."""
    return (len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
            + sum(len(name) + len(value) + 4 for name, value in scope["headers"]))


def declared_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """Content-Length as sent, -1 when it is not a number, None when absent."""
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else -1
    return None


def body_deadline(started: float, received: int, limits: EdgeLimits,
                  last_byte: float | None = None) -> float:
    """When a body still incomplete is given up: a grace period, plus a second per
    body_min_rate bytes already received (a client that keeps the rate keeps going), but never
    later than the grace period after its last byte (a client that sent most of a large body
    at once and then stalls would otherwise hold it, and the body budget, for minutes)."""
    deadline = started + limits.body_timeout + received / limits.body_min_rate
    if last_byte is not None:
        deadline = min(deadline, last_byte + limits.body_timeout)
    return deadline


# A body up to this size is "small" (every agent batch of ordinary size, every form): a
# quarter of the budget is kept for such bodies, so a few large bodies held by stalling
# clients cannot leave a genuine agent's next batch without room.
SMALL_BODY_BYTES = 1024 * 1024


@dataclass
class BodyBudget:
    """Request-body bytes held at once, in all and per source address; a request past
    SMALL_BODY_BYTES may use only the part of the total not kept for small bodies."""

    total: int
    per_address: int
    held: int = 0
    by_address: dict[str, int] = field(default_factory=dict)

    @property
    def for_large(self) -> int:
        return self.total - self.total // 4

    def take(self, address: str, size: int, request_total: int = 0) -> bool:
        """Take `size` more bytes for a request that then holds `request_total` (0: size)."""
        mine = self.by_address.get(address, 0)
        cap = self.total if max(size, request_total) <= SMALL_BODY_BYTES else self.for_large
        if self.held + size > cap or mine + size > self.per_address:
            return False
        self.held += size
        self.by_address[address] = mine + size
        return True

    def give(self, address: str, size: int) -> None:
        self.held -= size
        left = self.by_address.get(address, 0) - size
        if left > 0:
            self.by_address[address] = left
        else:
            self.by_address.pop(address, None)


# Answers that mean the client did something wrong: unreadable, unauthenticated, unknown,
# oversized, throttled. A genuine agent or browser meets them now and then, never dozens a
# minute (agents back off exponentially).
OFFENCE_STATUSES = frozenset({400, 401, 404, 405, 413, 422, 429, 431})


@functools.lru_cache(maxsize=65_536)
def offender(address: str) -> str:
    """The unit a client is counted as (offences here, failed logins in the dashboard's
    login_limits.py): its address, an IPv6 client by its /64 (one host picks new addresses
    inside its prefix at will), an IPv4-mapped one as IPv4; anything else as given, cut to 64
    characters."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


@dataclass
class Offences:
    """Offences per source address, and the addresses shut out for them (pure: the caller
    gives the time).

    `limit` offences within `window` seconds shut an address out for `base` seconds, doubled
    for each shut-out already served (up to `most`); trusted addresses never are. At most
    `tracked` addresses are remembered (the stalest is forgotten first), so an attacker with
    many addresses cannot grow the collector's memory through it.
    """

    limit: int
    window: float
    base: float
    most: float
    trusted: frozenset[str] = frozenset()
    tracked: int = 10_000
    seen: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)
    until: dict[str, float] = field(default_factory=dict)
    strikes: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, dict[str, int]] = field(default_factory=dict)
    shut_outs: int = 0

    @classmethod
    def of(cls, settings: EdgeSettings) -> Offences:
        return cls(settings.offences_to_shut_out, settings.offence_window_seconds,
                   settings.shut_out_seconds, settings.max_shut_out_seconds,
                   frozenset(offender(a) for a in settings.trusted_addresses))

    def shut_out(self, address: str, now: float) -> bool:
        """Whether connections from `address` are refused at `now`."""
        key = offender(address)
        until = self.until.get(key)
        if until is None:
            return False
        if now < until:
            return True
        del self.until[key]
        return False

    def offend(self, address: str, reason: str, now: float, weight: int = 1) -> float | None:
        """Count an offence (as `weight` of them: one that cost the collector much, such as a
        large body read for nothing); the seconds `address` is now shut out for when this one
        tipped it over, else None."""
        key = offender(address)
        if self.limit <= 0 or key in self.trusted or self.shut_out(key, now):
            return None
        times = self.seen.pop(key, None) or deque()
        self.seen[key] = times  # most recently offending last
        times.extend([now] * max(1, min(weight, self.limit)))
        while times and times[0] <= now - self.window:
            times.popleft()
        counts = self.reasons.setdefault(key, {})
        counts[reason] = counts.get(reason, 0) + max(1, weight)
        while len(self.seen) > self.tracked:
            stale, _ = self.seen.popitem(last=False)
            self.reasons.pop(stale, None)
            if stale not in self.until:
                self.strikes.pop(stale, None)
        if len(times) < self.limit:
            return None
        strikes = self.strikes.get(key, 0)
        seconds = min(self.most, self.base * (2 ** min(strikes, 30)))
        self.strikes[key] = strikes + 1
        self.until[key] = now + seconds
        times.clear()
        self.shut_outs += 1
        return seconds

    def reasons_of(self, address: str) -> dict[str, int]:
        """What an address was counted for since it was last shut out (for the record)."""
        return self.reasons.pop(offender(address), {})


class Warden:
    """Offences on the monotonic clock, with what a shut-out does: a log line, the record
    (`on_shut_out(address, seconds, reasons)`, e.g. an event on the collector's own trail) and
    the address's idle connections closed (`close_idle`, set by the listener)."""

    def __init__(self, offences: Offences,
                 on_shut_out: Callable[[str, float, dict[str, int]], None] | None = None,
                 ) -> None:
        self.offences = offences
        self.on_shut_out = on_shut_out
        self.close_idle: Callable[[str], None] = lambda key: None

    def shut_out(self, address: str) -> bool:
        return self.offences.shut_out(address, time.monotonic())

    def offend(self, address: str, reason: str, weight: int = 1) -> None:
        seconds = self.offences.offend(address, reason, time.monotonic(), weight)
        if seconds is None:
            return
        reasons = self.offences.reasons_of(address)
        log.warning("%s shut out for %d s after %d offences within %d s (%s)", offender(address),
                    seconds, self.offences.limit, self.offences.window,
                    ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())))
        self.close_idle(offender(address))
        if self.on_shut_out is not None:
            try:
                self.on_shut_out(address, seconds, reasons)
            except Exception:  # the shut-out holds whatever its record does
                log.exception("recording a shut-out failed")


def no_warden() -> Warden:
    """A warden that shuts nobody out (for callers that give none)."""
    return Warden(Offences(0, 1, 1, 1))


# --------------------------------------------------------------------------- the body guard


class BodyGuard:
    """ASGI middleware: the whole body is read, within its route's limit and the budget,
    before the application is called; it is then replayed to it chunk by chunk."""

    def __init__(self, app: ASGIApp, limits: EdgeLimits, warden: Warden | None = None) -> None:
        self.app = app
        self.limits = limits
        self.budget = BodyBudget(limits.body_budget, limits.body_budget_per_address)
        self.warden = warden or no_warden()

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Any],
                       send: Callable[[dict[str, Any]], Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        address = (scope.get("client") or ("?", 0))[0]
        send = self._watching(address, send)
        if header_size(scope) > self.limits.max_header_bytes:
            # (headers that never end are cut by EdgeProtocol; these ended in one read)
            await refuse(send, 431, f"request headers larger than "
                                    f"{self.limits.max_header_bytes} bytes")
            return
        limit = body_limit(scope["method"], scope["path"], self.limits)
        declared = declared_length(scope["headers"])
        if declared is not None and (declared < 0 or declared > limit):
            await refuse(send, 413, f"request body larger than {limit} bytes")
            return
        chunks: deque[bytes] = deque()
        held = 0
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away (or a deadline closed it): nobody to answer
                body = message.get("body", b"")
                if held + len(body) > limit:
                    # counted once by its status, and once per further MiB read for nothing
                    if held >= SMALL_BODY_BYTES:
                        self.warden.offend(address, "body_too_large", held // SMALL_BODY_BYTES)
                    await refuse(send, 413, f"request body larger than {limit} bytes")
                    return
                if not self.budget.take(address, len(body), held + len(body)):
                    await refuse(send, 503, "too many request bodies in flight; retry later")
                    # a genuine batch of ordinary size fits in the part kept for small bodies,
                    # and an agent backs off: an address that keeps hitting this hoards (an
                    # offence per MiB it made the collector read for nothing)
                    self.warden.offend(address, "body_budget", 1 + held // SMALL_BODY_BYTES)
                    return
                held += len(body)
                if body:
                    chunks.append(body)
                if not message.get("more_body", False):
                    break

            if not chunks:
                chunks.append(b"")

            async def replay() -> Any:
                """The body read above, then the client's own (its disconnect)."""
                if chunks:
                    return {"type": "http.request", "body": chunks.popleft(),
                            "more_body": bool(chunks)}
                return await receive()

            await self.app(scope, replay, send)
        finally:
            self.budget.give(address, held)

    def _watching(self, address: str, send: Callable[[dict[str, Any]], Any]
                  ) -> Callable[[dict[str, Any]], Any]:
        """`send` that counts an answer of OFFENCE_STATUSES against the client's address and
        adds Strict-Transport-Security to a response that does not carry it."""
        warden = self.warden

        async def watched(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                if message["status"] in OFFENCE_STATUSES:
                    warden.offend(address, f"http_{message['status']}")
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"strict-transport-security" for name, _ in headers):
                    headers.append((b"strict-transport-security", HSTS.encode()))
                    message = {**message, "headers": headers}
            await send(message)

        return watched


async def refuse(send: Callable[[dict[str, Any]], Any], status: int, detail: str) -> None:
    """Answer and close the connection (the rest of the body is not read)."""
    body = orjson.dumps({"detail": detail})
    headers = [(b"content-type", b"application/json"), (b"connection", b"close"),
               (b"content-length", str(len(body)).encode()),
               (b"strict-transport-security", HSTS.encode())]
    if status == 503:
        headers.append((b"retry-after", b"5"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# --------------------------------------------------------------------------- the protocol


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with deadlines on what the client controls.

    Phases: "headers" (from the connection's start, or a kept-alive request's first byte, to
    the end of its headers), "body" (to the end of the body), "app" (the application's time,
    no deadline), "idle" (between requests: uvicorn's keep-alive timeout)."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *, connection: Connection,
                 limits: EdgeLimits, closed: Callable[[Connection], None],
                 warden: Warden | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.edge = connection
        self.limits = limits
        self.closed = closed
        self.warden = warden or no_warden()
        self.phase = "headers"
        self.timer: asyncio.TimerHandle | None = None
        self.header_bytes = 0
        self.body_started = 0.0
        self.body_bytes = 0
        self.last_byte = 0.0

    def _arm(self, delay: float, check: Callable[[], None]) -> None:
        self._disarm()
        self.timer = self.loop.call_later(delay, check)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _give_up(self, why: str) -> None:
        log.debug("closing a connection from %s: %s", self.edge.address, why)
        self.transport.abort()
        self.warden.offend(self.edge.address, why.replace(" ", "_"))

    def _headers_late(self) -> None:
        self.timer = None
        if self.phase == "headers":
            self._give_up("request headers not complete in time")

    def _body_late(self) -> None:
        self.timer = None
        if self.phase != "body":
            return
        now = self.loop.time()
        deadline = body_deadline(self.body_started, self.body_bytes, self.limits,
                                 self.last_byte)
        if self.flow.read_paused:  # the application is behind, not the client
            self._arm(1.0, self._body_late)
        elif now < deadline:
            self._arm(deadline - now, self._body_late)
        else:
            self._give_up("request body too slow")

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.edge.close = transport.abort
        self._arm(self.limits.header_timeout, self._headers_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        try:
            super().connection_lost(exc)
        finally:
            self.closed(self.edge)

    def data_received(self, data: bytes) -> None:
        if self.phase == "idle":  # a kept-alive connection's next request begins
            self.phase = "headers"
            self.header_bytes = 0
            self._arm(self.limits.header_timeout, self._headers_late)
        if self.phase == "headers":
            self.header_bytes += len(data)
        super().data_received(data)
        if self.phase == "headers" and self.header_bytes > self.limits.max_header_bytes \
                and not self.transport.is_closing():
            self._too_large_headers()

    def _too_large_headers(self) -> None:
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                             b"content-length: 0\r\nconnection: close\r\n"
                             b"strict-transport-security: " + HSTS.encode() + b"\r\n\r\n")
        self.transport.close()
        self.warden.offend(self.edge.address, "headers_too_large")

    def on_headers_complete(self) -> None:
        self.phase = "body"
        self.edge.busy = True
        self.body_started = self.loop.time()
        self.last_byte = self.body_started
        self.body_bytes = 0
        self._arm(self.limits.body_timeout, self._body_late)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        self.last_byte = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self.phase == "body":
            self.phase = "app"
            self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)  # the next request's headers are in: it runs now
        self.phase = "app" if pipelined else "idle"
        self.edge.busy = pipelined
        self._disarm()
        super().on_response_complete()
        if self.warden.shut_out(self.edge.address) and not self.transport.is_closing():
            self.transport.close()  # shut out while this request ran: no next one


# --------------------------------------------------------------------------- the listener


class EdgeListener:
    """Accepts on `sock` and admits per address before the TLS handshake (asyncio.Server's
    close/wait_closed, so uvicorn's shutdown stops it like its own)."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, limits: EdgeLimits,
                 protocol: Callable[..., asyncio.Protocol], warden: Warden | None = None
                 ) -> None:
        self.sock = sock
        self.context = context
        self.limits = limits
        self.protocol = protocol
        self.warden = warden or no_warden()
        self.warden.close_idle = self._close_idle
        self.shut_out = 0
        self.connections: set[Connection] = set()
        self.by_address: dict[str, dict[Connection, None]] = {}  # oldest first
        self.per_address: dict[str, int] = {}
        self.refused = 0
        self.evicted = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # Connections taken from the kernel's queue per wake-up (asyncio's own server takes up to
    # its backlog): one accept per loop iteration let a flood of connection attempts queue a
    # genuine client's connection behind thousands in the kernel's backlog.
    ACCEPT_BATCH = 128

    def start(self) -> None:
        self.sock.setblocking(False)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._accept_ready)

    def close(self) -> None:
        if self._loop is not None and self.sock.fileno() >= 0:
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()

    async def wait_closed(self) -> None:
        """Nothing to wait for: no new connection is accepted once close() returns."""

    def _accept_ready(self) -> None:
        """Accept what the kernel has queued (up to ACCEPT_BATCH), admitting each."""
        for _ in range(self.ACCEPT_BATCH):
            try:
                sock, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: pause, let connections close
                log.warning("accept failed: %s", exc)
                assert self._loop is not None
                self._loop.remove_reader(self.sock.fileno())
                self._loop.call_later(0.1, self._resume)
                return
            sock.setblocking(False)
            self._admit(sock, str(peer[0]))

    def _resume(self) -> None:
        if self._loop is not None and self.sock.fileno() >= 0:
            self._loop.add_reader(self.sock.fileno(), self._accept_ready)

    def _admit(self, sock: socket.socket, address: str) -> None:
        if self.warden.shut_out(address):
            self.shut_out += 1
            reset(sock)
            return
        verdict = admission(self.per_address, len(self.connections), address, self.limits)
        if verdict == "full":
            victim = eviction_victim(self.by_address, self.per_address, address)
            if victim is not None:
                self.evicted += 1
                if self.evicted % 1000 == 1:
                    log.warning("listener full: closed an idle connection of %s for one from "
                                "%s; %d so far", victim.address, address, self.evicted)
                self._closed(victim)  # its slot now, whenever its close completes
                victim.close()
                verdict = "admit"
        if verdict != "admit":
            self.refused += 1
            if self.refused % 1000 == 1:
                log.warning("connection from %s refused (%s); %d refused so far", address,
                            verdict, self.refused)
            reset(sock)
            return
        conn = Connection(address, time.monotonic())
        self.connections.add(conn)
        self.by_address.setdefault(address, {})[conn] = None
        self.per_address[address] = self.per_address.get(address, 0) + 1
        task = asyncio.get_running_loop().create_task(self._open(sock, conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open(self, sock: socket.socket, conn: Connection) -> None:
        current = asyncio.current_task()
        conn.close = current.cancel if current is not None else conn.close
        factory = functools.partial(self.protocol, connection=conn, limits=self.limits,
                                    closed=self._closed, warden=self.warden)
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                factory, sock, ssl=self.context,
                ssl_handshake_timeout=self.limits.handshake_timeout,
                ssl_shutdown_timeout=min(5.0, self.limits.handshake_timeout))
        except asyncio.CancelledError:  # evicted, or shut out, during its handshake
            self._closed(conn)
            with contextlib.suppress(OSError):
                sock.close()
        except Exception:  # the handshake failed or timed out: the client's doing
            self._closed(conn)
            with contextlib.suppress(OSError):
                sock.close()
            self.warden.offend(conn.address, "tls_handshake_failed")

    def _close_idle(self, key: str) -> None:
        """Close the connections of a just shut-out address that are not in a request (those
        that are close once their response is out: EdgeProtocol.on_response_complete)."""
        addresses = [a for a in self.by_address if offender(a) == key]
        for conn in [c for a in addresses for c in self.by_address.get(a, {})]:
            if not conn.busy:
                self._closed(conn)
                conn.close()

    def _closed(self, conn: Connection) -> None:
        """Give the connection's slot back (once, whichever way it ended)."""
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        mine = self.by_address.get(conn.address)
        if mine is not None:
            mine.pop(conn, None)
            if not mine:
                del self.by_address[conn.address]
        left = self.per_address.get(conn.address, 0) - 1
        if left > 0:
            self.per_address[conn.address] = left
        else:
            self.per_address.pop(conn.address, None)


def reset(sock: socket.socket) -> None:
    """Close with a RST: nothing is kept for a refused peer (no TIME_WAIT, no TLS)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def listen_socket(host: str, port: int, backlog: int) -> socket.socket:
    """The listening socket (IPv4 or IPv6 by the host's form), SO_REUSEADDR as uvicorn's."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


def raise_open_files_limit(needed: int) -> int:
    """RLIMIT_NOFILE's soft limit up to its hard one (systemd's default soft 1024 is below what
    max_connections needs); returns the soft limit now in force, warns when still short."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit to %s: %s", target, exc)
    if soft < needed:
        log.warning("open-files limit %d is below the %d the connection caps need; raise "
                    "LimitNOFILE", soft, needed)
    return soft
