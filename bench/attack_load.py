"""The two loads of bench/collector_attack.py, each a process of its own (no shared GIL).

    python bench/attack_load.py genuine --state agents.json --url URL --ca CA --out G.json
    python bench/attack_load.py attack  --url URL --plan plan.json --out A.json

`genuine`: the enrolled agents (bench/dashboard_data.py SimAgent: chained events, signed
checkpoints, batch_body as the forwarder builds it) send from 127.0.0.1, one thread and one
keep-alive connection each, closed loop (the next batch once the last is answered) or paced at
--rate events/s. A refused or failed batch is sent again from the last acknowledged head with a
fresh checkpoint after a full-jitter backoff, as the forwarder does, so nothing is dropped by
the client. SIGUSR1: emit nothing new, deliver what is pending, exit when all is acknowledged.
SIGTERM: stop now. Either way --out gets every acknowledgement's (monotonic time, events),
every failure, and each agent's emitted and acknowledged seq.

`attack`: one asyncio process, connecting only to the collector on loopback, each connection
bound to one of the attacker addresses 127.0.0.2 ... (each attack round robin over a group of
its own, address_groups), with the mix of --plan:
idle TLS connections, half request lines, slow bodies, oversized bodies, stalled ingest
bodies, junk batches and parallel logins. A connection the collector closes is opened again,
so the pressure holds for the whole phase. Runs until SIGTERM (or --seconds), then writes its
counters to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import random
import re
import secrets
import signal
import ssl
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dashboard_data import SimAgent, load_state, sample  # noqa: E402

from floor_agent.audit.forwarder import pinned_client  # noqa: E402
from floor_agent.protocol.event import utc_timestamp  # noqa: E402

# ------------------------------------------------------------------------------ genuine
BACKOFF_INITIAL = 0.5  # the forwarder's default first backoff (s)
BACKOFF_MAX = 5.0  # the forwarder's is 30 s: shorter here, so a 30 s phase is not one wait


class GenuineAgent:
    """One agent's send loop: what is pending stays pending until acknowledged."""

    def __init__(self, agent: SimAgent, url: str, ca: Path, batch: int, rate: float,
                 acks: list[tuple[float, int]], failures: list[tuple[float, str]]) -> None:
        self.agent = agent
        self.client = pinned_client(url, ca, 10.0)
        self.batch = batch
        self.rate = rate  # events/s for this agent; 0: closed loop
        self.acks = acks
        self.failures = failures
        self.pending: list[Any] = []  # (event, canonical bytes, hash), chained, unacknowledged
        self.acked_seq = agent.seq
        self.acked_head = agent.head

    def run(self, stop: threading.Event, drain: threading.Event) -> None:
        failures = 0
        started = time.monotonic()
        emitted = 0
        try:
            while not stop.is_set():
                if not drain.is_set() and len(self.pending) < self.batch:
                    n = self.batch - len(self.pending)
                    if self.rate > 0:
                        due = started + (emitted + n) / self.rate
                        if stop.wait(max(0.0, due - time.monotonic())):
                            break
                    now = utc_timestamp()
                    self.pending += self.agent.chain(
                        sample(self.agent.rng, self.agent.role, self.agent.agent_id, n),
                        [now] * n)
                    emitted += n
                if not self.pending:
                    return  # drained
                reason = self.send_once()
                if reason is None:
                    failures = 0
                    continue
                self.failures.append((time.monotonic(), reason))
                failures += 1
                ceiling = min(BACKOFF_MAX, BACKOFF_INITIAL * 2 ** min(failures - 1, 30))
                stop.wait(random.uniform(BACKOFF_INITIAL / 2, ceiling))
        finally:
            self.client.close()

    def send_once(self) -> str | None:
        """One batch of everything pending; None when acknowledged, else why not."""
        body = self.agent.batch(self.acked_head, self.pending, utc_timestamp())
        try:
            answer = self.client.post("/api/v1/ingest", content=body)
        except httpx.HTTPError as exc:
            return type(exc).__name__
        if answer.status_code != 200:
            return f"HTTP {answer.status_code}"
        acked = answer.json().get("acked_seq")
        if acked is None:
            return "no acked_seq"
        done = [p for p in self.pending if p[0].seq <= acked]
        if done:
            self.acked_head = done[-1][2]
            self.pending = self.pending[len(done):]
            self.acks.append((time.monotonic(), len(done)))
        self.acked_seq = max(self.acked_seq, int(acked))
        return None


def run_genuine(args: argparse.Namespace) -> int:
    stop, drain = threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, lambda *_: drain.set())
    agents = load_state(args.state)
    acks: list[tuple[float, int]] = []
    failures: list[tuple[float, str]] = []
    senders = [GenuineAgent(a, args.url, args.ca, args.batch, args.rate / len(agents), acks,
                            failures) for a in agents]
    threads = [threading.Thread(target=s.run, args=(stop, drain), name=s.agent.agent_id,
                                daemon=True) for s in senders]
    for thread in threads:
        thread.start()
    print("genuine: sending", flush=True)
    deadline = time.monotonic() + args.seconds
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        if stop.wait(0.2):
            break
    stop.set()
    for thread in threads:
        thread.join(15)
    args.out.write_bytes(orjson.dumps({
        "acks": acks, "failures": failures,
        "agents": [{"agent_id": s.agent.agent_id, "emitted": s.agent.seq,
                    "acked": s.acked_seq, "pending": len(s.pending)} for s in senders]}))
    return 0


# ------------------------------------------------------------------------------ attack
@dataclass
class AttackPlan:
    """How much of each attack; counts are connections kept open (reopened when closed)."""

    addresses: int = 59  # attacker addresses 127.0.0.2 ... 127.0.0.(1 + addresses)
    idle: int = 600  # TLS connections that send nothing
    half_line: int = 200  # TLS connections that send half a request line, then nothing
    slow_per_route: int = 20  # bodies trickled at slow_bytes_per_s to enroll, login, ingest
    slow_bytes_per_s: int = 4
    slow_length: int = 2048  # declared: within every route's limit, so it is not refused at once
    oversize_mib: int = 128  # bodies of this size sent at full speed to enroll and login
    oversize_streams: int = 2  # per route, one after the other
    stalled_ingest: int = 40  # ingest bodies sent up to the last KiB of the limit, then held
    stalled_ingest_bytes: int = 16 * 1024 * 1024 - 1
    junk_rate: float = 400.0  # junk batches per second, overall
    junk_connections: int = 8
    junk_agent_ids: tuple[str, ...] = ()  # real agents the junk claims to come from
    logins: int = 40  # parallel login loops; half guess a known name, half unknown names
    known_user: str = "victim"


# Each attack has addresses of its own, as a crafty attacker would arrange: otherwise a
# per-address cap filled by the idle connections would also shut out the junk and the logins.
GROUP_OF = {"junk": "junk", "login": "login", "slow": "body", "oversize": "body",
            "stalled": "body", "idle": "idle", "half": "idle"}


def address_groups(n: int) -> dict[str, list[int]]:
    """Last octets 2 .. n + 1 split between the attacks (a group may share when n < 4)."""
    hosts = list(range(2, n + 2))
    sizes = {"junk": max(1, n // 8), "login": max(1, n // 6), "body": max(1, n // 6)}
    out, start = {}, 0
    for group, size in sizes.items():
        out[group] = hosts[start:start + size] or hosts[-1:]
        start += size
    out["idle"] = hosts[start:] or hosts[-1:]
    return out


LOGIN_COOKIE_RE = re.compile(rb"floor_login=([^;\s]+)")
CSRF_RE = re.compile(rb'name="csrf_token" value="([^"]+)"')


class Attack:
    """Every attack of the plan against one collector, with its counters."""

    def __init__(self, url: str, plan: AttackPlan) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 443
        self.plan = plan
        self.tls = ssl.create_default_context()  # an outsider: no pinned CA
        self.tls.check_hostname = False
        self.tls.verify_mode = ssl.CERT_NONE
        self.counts: Counter[str] = Counter()
        self.login_ms: list[float] = []
        self.groups = address_groups(plan.addresses)
        self._turn: Counter[str] = Counter()
        self.stopping = False  # set at the end: no task starts another round
        self.handshakes = asyncio.Semaphore(256)  # a ramp, not all 1,000 handshakes at once

    def address(self, what: str) -> str:
        """The next address of the group this attack uses, round robin."""
        group = GROUP_OF.get(what.split("/")[0].split("_")[0], "idle")
        self._turn[group] += 1
        hosts = self.groups[group]
        return f"127.0.0.{hosts[self._turn[group] % len(hosts)]}"

    async def connect(self, what: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with self.handshakes:
            try:
                streams = await asyncio.wait_for(asyncio.open_connection(
                    self.host, self.port, ssl=self.tls, server_hostname=self.host,
                    local_addr=(self.address(what), 0)), 10)
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                self.counts[f"{what}.connect_failed.{type(exc).__name__}"] += 1
                raise
        self.counts[f"{what}.connected"] += 1
        return streams

    async def keep(self, what: str, task: Callable[[], Awaitable[None]]) -> None:
        """Run task again and again (a reconnecting attacker) until stopped."""
        while not self.stopping:
            try:
                await task()
            except Exception as exc:  # a reset, a timeout, a garbled answer: go again
                self.counts[f"{what}.error.{type(exc).__name__}"] += 1
                await asyncio.sleep(0.5)
            await asyncio.sleep(0.05)

    # -- connections that say nothing, or half of something ----------------------------
    async def idle(self, half: bool) -> None:
        what = "half_line" if half else "idle"
        reader, writer = await self.connect(what)
        try:
            if half:
                writer.write(b"GET /api/v1/age")
                await writer.drain()
            while await reader.read(65536):
                pass  # whatever the collector says (a 408, an error page): keep holding
            self.counts[f"{what}.closed_by_server"] += 1
        finally:
            writer.close()

    # -- bodies: trickled, oversized, stalled -------------------------------------------
    def head(self, route: str, length: int, content_type: str, extra: str = "") -> bytes:
        return (f"POST {route} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n{extra}\r\n"
                ).encode()

    async def slow(self, route: str) -> None:
        what = f"slow{route}"
        reader, writer = await self.connect(what)
        try:
            writer.write(self.head(route, self.plan.slow_length, "application/x-www-form-urlencoded"
                                   if route == "/login" else "application/json"))
            response = asyncio.create_task(reader.read(4096))
            while not response.done():
                writer.write(b"a" * self.plan.slow_bytes_per_s)
                await writer.drain()
                self.counts[f"{what}.bytes"] += self.plan.slow_bytes_per_s
                await asyncio.wait([response], timeout=1.0)
            self.counts[f"{what}.{status_of(response.result())}"] += 1
        finally:
            writer.close()

    async def oversize(self, route: str, size: int, hold: bool = False) -> None:
        """A body of `size` bytes at full speed (hold: all but the last KiB, then wait)."""
        what = f"{'stalled' if hold else 'oversize'}{route}"
        reader, writer = await self.connect(what)
        try:
            if route == "/login":
                writer.write(self.head(route, size, "application/x-www-form-urlencoded"))
                prefix = b"username="
            else:
                writer.write(self.head(route, size, "application/json"))
                prefix = b'{"agent_id":"' if route.endswith("ingest") else b'{"token":"'
            chunk = b"A" * (1 << 20)
            sent = len(prefix)
            writer.write(prefix)
            end = size - 1024 if hold else size
            response = asyncio.create_task(reader.read(4096))
            while sent < end and not response.done():
                piece = chunk[:min(len(chunk), end - sent)]
                writer.write(piece)
                await writer.drain()
                sent += len(piece)
                self.counts[f"{what}.mib_sent"] += len(piece) / (1 << 20)
            if not response.done():
                self.counts[f"{what}.{'held' if hold else 'sent_whole'}"] += 1
            answer = await asyncio.wait_for(response, None if hold else 120)
            self.counts[f"{what}.{status_of(answer)}"] += 1
        finally:
            writer.close()

    # -- junk batches --------------------------------------------------------------------
    def junk_body(self) -> bytes:
        """A heartbeat naming a real agent, with a random head and signature."""
        agent_id = random.choice(self.plan.junk_agent_ids)
        checkpoint = {"agent_id": agent_id, "seq": random.randint(1, 10**9),
                      "hash": secrets.token_hex(32), "ts": utc_timestamp(),
                      "boot_id": secrets.token_hex(8),
                      "signature": base64.b64encode(os.urandom(64)).decode()}
        return orjson.dumps({"agent_id": agent_id, "prev_hash": secrets.token_hex(32),
                             "events": [], "checkpoint": checkpoint})

    async def junk(self, pace: asyncio.Queue[None]) -> None:
        reader, writer = await self.connect("junk")
        try:
            while not self.stopping:
                await pace.get()
                body = self.junk_body()
                writer.write(self.head("/api/v1/ingest", len(body), "application/json") + body)
                await writer.drain()
                status, headers, _ = await read_response(reader)
                self.counts[f"junk.{status}"] += 1
                if headers.get(b"connection") == b"close":
                    return
        finally:
            writer.close()

    async def junk_pacer(self, pace: asyncio.Queue[None]) -> None:
        """Tokens at junk_rate; unused ones do not pile up beyond one second's worth."""
        started = time.monotonic()
        issued = 0
        while not self.stopping:
            due = int((time.monotonic() - started) * self.plan.junk_rate)
            while issued < due:
                issued += 1
                if pace.qsize() < self.plan.junk_rate:
                    pace.put_nowait(None)
            await asyncio.sleep(0.01)

    # -- logins --------------------------------------------------------------------------
    async def login(self, known: bool) -> None:
        what = "login_known" if known else "login_unknown"
        reader, writer = await self.connect(what)
        try:
            while not self.stopping:
                writer.write(f"GET /login HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
                await writer.drain()
                status, headers, body = await read_response(reader)
                cookie = LOGIN_COOKIE_RE.search(headers.get(b"set-cookie", b""))
                csrf = CSRF_RE.search(body)
                if status != 200 or cookie is None or csrf is None:
                    self.counts[f"{what}.form_{status}"] += 1
                    return
                name = self.plan.known_user if known else f"nobody-{secrets.token_hex(6)}"
                form = (f"username={quote(name)}&password={secrets.token_hex(8)}"
                        f"&csrf_token={quote(csrf[1].decode())}&next=%2F").encode()
                started = time.monotonic()
                writer.write(self.head("/login", len(form), "application/x-www-form-urlencoded",
                                       f"Cookie: floor_login={cookie[1].decode()}\r\n") + form)
                await writer.drain()
                status, headers, body = await read_response(reader)
                self.login_ms.append((time.monotonic() - started) * 1000)
                locked = b"locked" in body
                self.counts[f"{what}.{status}{'.locked' if locked else ''}"] += 1
                if headers.get(b"connection") == b"close":
                    return
        finally:
            writer.close()

    # -- all of it ------------------------------------------------------------------------
    def tasks(self) -> list[Callable[[], Awaitable[None]]]:
        p = self.plan
        out: list[Callable[[], Awaitable[None]]] = []

        def forever(what: str, job: Callable[[], Awaitable[None]]) -> None:
            out.append(lambda: self.keep(what, job))

        pace: asyncio.Queue[None] = asyncio.Queue()
        if p.junk_rate > 0 and p.junk_agent_ids:
            out.append(lambda: self.junk_pacer(pace))
            for _ in range(p.junk_connections):
                forever("junk", lambda: self.junk(pace))
        for i in range(p.logins):
            forever("login", lambda known=i % 2 == 0: self.login(known))
        for _ in range(p.stalled_ingest):
            forever("stalled", lambda: self.oversize("/api/v1/ingest", p.stalled_ingest_bytes,
                                                     hold=True))
        for route in ("/api/v1/enroll", "/login"):
            for _ in range(p.oversize_streams):
                forever("oversize", lambda r=route: self.oversize(r, p.oversize_mib << 20))
            for _ in range(p.slow_per_route):
                forever("slow", lambda r=route: self.slow(r))
        for _ in range(p.slow_per_route):
            forever("slow", lambda: self.slow("/api/v1/ingest"))
        for i in range(p.idle + p.half_line):
            forever("idle", lambda half=i >= p.idle: self.idle(half))
        return out


def status_of(answer: bytes) -> str:
    """The status code of a response's first bytes ('closed' when there were none)."""
    if not answer:
        return "closed"
    parts = answer.split(b" ", 2)
    return parts[1].decode(errors="replace") if len(parts) > 1 else "garbled"


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    """(status, lower-cased headers, body) of one HTTP/1.1 response."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        if b":" in line:
            name, value = line.split(b":", 1)
            key = name.strip().lower()
            headers[key] = (headers[key] + b"; " if key in headers else b"") + value.strip()
    if b"content-length" in headers:
        body = await asyncio.wait_for(reader.readexactly(int(headers[b"content-length"])), 30)
    elif headers.get(b"transfer-encoding") == b"chunked":
        parts = []
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            parts.append(await reader.readexactly(size + 2))
        await reader.readuntil(b"\r\n")
        body = b"".join(p[:-2] for p in parts)
    else:
        body = b""
    return status, headers, body


async def attack_main(url: str, plan: AttackPlan, seconds: float, out: Path) -> None:
    attack = Attack(url, plan)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    running = [asyncio.create_task(job()) for job in attack.tasks()]
    print(f"attack: {len(running)} tasks", flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    print("attack: stopping", flush=True)
    attack.stopping = True
    for task in running:
        task.cancel()
    _, pending = await asyncio.wait(running, timeout=10)
    print(f"attack: stopped ({len(pending)} tasks did not end)", flush=True)
    ms = sorted(attack.login_ms)
    out.write_bytes(orjson.dumps({
        "plan": asdict(plan), "counts": dict(sorted(attack.counts.items())),
        "tasks_not_ended": len(pending), "logins_answered": len(ms),
        "login_p50_ms": ms[len(ms) // 2] if ms else None,
        "login_max_ms": ms[-1] if ms else None}, option=orjson.OPT_NON_STR_KEYS))
    if pending:  # the counters are written; do not wait on what ignores its cancellation
        os._exit(0)


def run_attack(args: argparse.Namespace) -> int:
    raw = orjson.loads(args.plan.read_bytes())
    plan = AttackPlan(**{**raw, "junk_agent_ids": tuple(raw.get("junk_agent_ids", ()))})
    asyncio.run(attack_main(args.url, plan, args.seconds, args.out))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    genuine = sub.add_parser("genuine", help="the enrolled agents, until SIGUSR1/SIGTERM")
    genuine.add_argument("--state", type=Path, required=True)
    genuine.add_argument("--url", required=True)
    genuine.add_argument("--ca", type=Path, required=True)
    genuine.add_argument("--batch", type=int, default=100)
    genuine.add_argument("--rate", type=float, default=0.0, help="events/s overall; 0: closed")
    genuine.add_argument("--seconds", type=float, default=600.0, help="safety stop")
    genuine.add_argument("--out", type=Path, required=True)
    attack = sub.add_parser("attack", help="the attackers, until SIGTERM")
    attack.add_argument("--url", required=True)
    attack.add_argument("--plan", type=Path, required=True, help="AttackPlan as JSON")
    attack.add_argument("--seconds", type=float, default=600.0, help="safety stop")
    attack.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    return run_genuine(args) if args.command == "genuine" else run_attack(args)


if __name__ == "__main__":
    sys.exit(main())
