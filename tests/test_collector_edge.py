"""The collector's edge under attack (issue 15, items 1, 2, 6 and 13), against real collector
processes over HTTPS: attackers bind other loopback addresses (127.0.0.2 ...), the genuine
agent and the dashboard come from 127.0.0.1. Attack first, then the expectation."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import yaml
from batches import BatchMaker
from collector_process import CollectorProcess
from sd_notify_socket import Notifications

from floor_agent.audit.forwarder import pinned_client
from floor_agent.collector.config import CollectorConfig, CollectorSection
from floor_agent.collector.server import listener_healthy
from floor_agent.protocol import request_signing
from floor_agent.store.interface import EventQuery

MiB = 1024 * 1024
PER_ADDRESS = 32
TOTAL = 160
# long deadlines: connections stay held, so the caps are what is measured
HELD = {"max_connections": TOTAL, "max_connections_per_address": PER_ADDRESS,
        "tls_handshake_timeout_seconds": 60, "header_timeout_seconds": 60,
        "idle_timeout_seconds": 60}
# short deadlines and small budgets: the deadlines and limits are what is measured
STRICT = {"max_connections": TOTAL, "max_connections_per_address": PER_ADDRESS,
          "tls_handshake_timeout_seconds": 3, "header_timeout_seconds": 3,
          "body_timeout_seconds": 8, "body_min_rate_bytes": MiB, "idle_timeout_seconds": 3,
          "body_budget_bytes": 6 * MiB, "body_budget_per_address_bytes": 2 * MiB}


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def client_context(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def connect(port: int, address: str, timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                    source_address=(address, 0))


def open_tcp(port: int, address: str) -> socket.socket | None:
    """A TCP connection that never starts TLS, or None when the collector refused it."""
    try:
        return connect(port, address)
    except OSError:
        return None


def open_tls(port: int, address: str, context: ssl.SSLContext) -> ssl.SSLSocket | None:
    """A TLS connection from `address`, or None when the collector refused it."""
    raw = open_tcp(port, address)
    if raw is None:
        return None
    try:
        return context.wrap_socket(raw, server_hostname="127.0.0.1")
    except (OSError, ssl.SSLError):
        raw.close()
        return None


RECEIVED: dict[socket.socket, bytes] = {}  # what closed_by_peer read of an answer


def closed_by_peer(sock: socket.socket) -> bool:
    """The collector answered or closed it (a TLS 1.3 session ticket is neither)."""
    sock.setblocking(False)
    try:
        data = sock.recv(65536)
    except (ssl.SSLWantReadError, BlockingIOError):
        return False
    except OSError:
        data = b""
    finally:
        sock.settimeout(15)
    RECEIVED[sock] = RECEIVED.get(sock, b"") + data
    return True


def wait_all_closed(socks: list[socket.socket], seconds: float) -> list[socket.socket]:
    """The sockets still open after `seconds` (polling)."""
    deadline = time.monotonic() + seconds
    left = list(socks)
    while left and time.monotonic() < deadline:
        left = [s for s in left if not closed_by_peer(s)]
        time.sleep(0.2)
    return left


def response_status(sock: socket.socket, seconds: float = 15) -> int | None:
    """The status of the response on `sock`, None when it was closed without one."""
    sock.settimeout(seconds)
    data = RECEIVED.pop(sock, b"")
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except (ConnectionError, ssl.SSLError):
        pass
    return int(data.split()[1]) if data.startswith(b"HTTP/1.1 ") else None


def status_of(sock: socket.socket, seconds: float = 15) -> int:
    status = response_status(sock, seconds)
    assert status is not None, "closed without a response"
    return status


def request_head(method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers, "", ""]
    return "\r\n".join(lines).encode()


def stream_until_answer(sock: socket.socket, total: int, chunk: int = 16 * 1024) -> int:
    """Send a chunked body of `total` bytes, a piece at a time, until the collector answers;
    the bytes sent by then (it must answer long before `total`)."""
    sent = 0
    piece = b"%x\r\n" % chunk + b"x" * chunk + b"\r\n"
    while sent < total:
        if closed_by_peer(sock):
            return sent
        try:
            sock.sendall(piece)
        except OSError:
            return sent
        sent += chunk
        time.sleep(0.005)
    return sent


def start(root: Path, env: dict[str, str] | None = None, **section: object) -> CollectorProcess:
    """A collector started with `env` added and systemd's default open-files soft limit."""
    proc = CollectorProcess(root, **section)
    saved = dict(os.environ)
    os.environ.update(env or {})
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(SOFT_FILES, limits[1]), limits[1]))
    try:
        proc.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)
        os.environ.clear()
        os.environ.update(saved)
    return proc


SOFT_FILES = 1024


@pytest.fixture(scope="module")
def notifications(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Notifications]:
    # AF_UNIX paths are short: not under pytest's deep temporary directory
    path = Path(f"/tmp/edge-notify-{os.getpid()}.sock")
    path.unlink(missing_ok=True)
    notes = Notifications(path)
    yield notes
    notes.close()
    path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory,
         notifications: Notifications) -> Iterator[CollectorProcess]:
    """A collector whose client deadlines are long; its watchdog pings every second."""
    proc = start(tmp_path_factory.mktemp("held"), edge=HELD,
                 env={"NOTIFY_SOCKET": str(notifications.path), "WATCHDOG_USEC": "2000000"})
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    """A collector with short client deadlines, a 1 MiB ingest limit and small budgets."""
    proc = start(tmp_path_factory.mktemp("strict"), edge=STRICT, max_request_bytes=MiB)
    yield proc
    proc.stop()


def genuine_agent(proc: CollectorProcess, name: str) -> BatchMaker:
    maker = BatchMaker(proc.root, name)
    with pinned_client(proc.url, proc.ca, 10) as client:
        answer = client.post("/api/v1/enroll", json=maker.enroll_payload(proc.token()))
        assert answer.status_code == 201, answer.text
    return maker


def genuine_served(proc: CollectorProcess, maker: BatchMaker) -> None:
    """/healthz, the dashboard's login page and one signed batch, each within 10 s."""
    with pinned_client(proc.url, proc.ca, 10) as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
        assert client.get("/login").status_code == 200
        maker.emit(5)
        answer = client.post("/api/v1/ingest", content=maker.body())
        assert answer.status_code == 200, answer.text
        assert answer.json()["stored"] == 5
        maker.ack(answer.json()["acked_seq"])


def test_idle_connections_are_capped_per_address_and_genuine_agents_stay_served(
        held: CollectorProcess) -> None:
    maker = genuine_agent(held, "ws-edge-1")
    context = client_context(held.ca)
    pid = held.proc.pid  # type: ignore[union-attr]
    before, files = rss_mib(pid), open_files(pid)
    attackers = [f"127.0.0.{n}" for n in range(2, 8)]
    opened: dict[str, list[socket.socket]] = {a: [] for a in attackers}
    try:
        # attack: 6 addresses x 40 connections (240 > the 160 in all, 40 > 32 each): TLS and
        # silent, TLS and half a request line, TCP without a handshake
        for i in range(40):
            for address in attackers:
                if i % 3 == 2:
                    sock = open_tcp(held.port, address)
                else:
                    sock = open_tls(held.port, address, context)
                    if sock is not None and i % 3 == 1:
                        sock.sendall(b"POST /api/v1/ingest HT")
                if sock is not None:
                    opened[address].append(sock)
        time.sleep(0.5)
        alive = {a: [s for s in socks if not closed_by_peer(s)] for a, socks in opened.items()}
        counts = {a: len(socks) for a, socks in alive.items()}
        # expectation: no address holds more than its share, all of them no more than the
        # total; the total is shared out (an address with few takes from one with many)
        assert max(counts.values()) <= PER_ADDRESS, counts
        assert sum(counts.values()) <= TOTAL, counts
        assert min(counts.values()) >= TOTAL // len(attackers) - 4, counts
        # ... and the genuine agent and the dashboard are served while it is held
        genuine_served(held, maker)
        assert rss_mib(pid) - before < 150
    finally:
        for socks in opened.values():
            for sock in socks:
                sock.close()
    # every slot is given back once the attackers hang up (refused, evicted or closed)
    deadline = time.monotonic() + 20
    while open_files(pid) > files + 8 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert open_files(pid) <= files + 8


def eventually(check: Callable[[], bool], seconds: float = 20) -> bool:
    """Whether `check` comes true within `seconds` (a loaded machine is slow, not wrong)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.3)
    return True


def test_watchdog_health_check_fails_when_the_listener_serves_nobody(
        held: CollectorProcess, notifications: Notifications) -> None:
    url, name = held.url, "localhost"
    assert eventually(lambda: listener_healthy(url, held.ca, name))
    now = time.monotonic()
    assert eventually(lambda: notifications.pinged_since(now))
    # attack: 127.0.0.1 (where the health check comes from) holds all its connections
    context = client_context(held.ca)
    socks: list[socket.socket] = []
    try:
        for _ in range(PER_ADDRESS + 4):
            sock = open_tls(held.port, "127.0.0.1", context)
            if sock is not None:
                socks.append(sock)
        # expectation: the check fails, and the collector stops feeding systemd's watchdog
        # (after a check already under way, at most its 5 s timeout, has ended)
        assert not listener_healthy(url, held.ca, name, timeout=3)
        time.sleep(6)
        quiet_from = time.monotonic()
        time.sleep(3)
        assert not notifications.pinged_since(quiet_from)
    finally:
        for sock in socks:
            sock.close()
    # released: healthy again, pings resume
    assert eventually(lambda: listener_healthy(url, held.ca, name))
    resumed = time.monotonic()
    assert eventually(lambda: notifications.pinged_since(resumed))
    # a stopped process: the check fails (TCP connects, nothing answers), then recovers
    pid = held.proc.pid  # type: ignore[union-attr]
    os.kill(pid, signal.SIGSTOP)
    try:
        assert not listener_healthy(url, held.ca, name, timeout=2)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert eventually(lambda: listener_healthy(url, held.ca, name))


def test_silent_and_slow_clients_are_closed_by_their_deadlines(strict: CollectorProcess) -> None:
    maker = genuine_agent(strict, "ws-edge-2")
    context = client_context(strict.ca)
    address = "127.0.0.20"
    groups: dict[str, list[socket.socket]] = {"no handshake": [], "silent": [],
                                              "half request line": [], "slow body": [],
                                              "idle kept alive": []}
    try:
        # attack: TCP without a TLS handshake, TLS and silent, half a request line, a body
        # that stops after 1 KiB of 100 KiB, a kept-alive connection that stays idle
        for _ in range(5):
            groups["no handshake"].append(connect(strict.port, address))
            for group in ("silent", "half request line", "slow body", "idle kept alive"):
                sock = open_tls(strict.port, address, context)
                assert sock is not None
                groups[group].append(sock)
        for sock in groups["half request line"]:
            sock.sendall(b"GET /healthz HT")
        for sock in groups["slow body"]:
            sock.sendall(request_head("POST", "/api/v1/ingest", "Content-Length: 102400",
                                      "Content-Type: application/json") + b"{" * 1024)
        for sock in groups["idle kept alive"]:
            sock.sendall(request_head("GET", "/healthz"))
            assert status_of(sock) == 200
        # expectation: every one is closed by the collector within its deadline (3 s here)
        # plus slack for a loaded machine; uvicorn alone never closed most of them
        for group, socks in groups.items():
            left = wait_all_closed(socks, 20)
            assert not left, f"{group}: {len(left)} still open"
        genuine_served(strict, maker)
    finally:
        for socks in groups.values():
            for sock in socks:
                sock.close()


@pytest.mark.parametrize(("path", "limit"), [("/api/v1/enroll", 4096), ("/login", 4096),
                                             ("/api/v1/ingest", MiB)])
def test_oversized_bodies_are_refused_while_reading(strict: CollectorProcess, path: str,
                                                    limit: int) -> None:
    context = client_context(strict.ca)
    pid = strict.proc.pid  # type: ignore[union-attr]
    before = rss_mib(pid)
    kind = ("Content-Type: application/x-www-form-urlencoded" if path == "/login"
            else "Content-Type: application/json")
    # attack 1: 128 MiB declared, nothing sent: refused from the header alone
    sock = open_tls(strict.port, "127.0.0.21", context)
    assert sock is not None
    with sock:
        sock.sendall(request_head("POST", path, kind, f"Content-Length: {128 * MiB}"))
        assert status_of(sock) == 413
    # attack 2: a chunked body (no length) of up to 128 MiB, sent as fast as it goes
    sock = open_tls(strict.port, "127.0.0.21", context)
    assert sock is not None
    with sock:
        sock.sendall(request_head("POST", path, kind, "Transfer-Encoding: chunked"))
        sent = stream_until_answer(sock, 128 * MiB)
        # expectation: answered 413 once the route's limit was passed, not at the end
        assert sent < limit + 16 * MiB
        assert status_of(sock) == 413
    assert rss_mib(pid) - before < 100


def test_stalled_bodies_are_bounded_by_the_budget(strict: CollectorProcess) -> None:
    maker = genuine_agent(strict, "ws-edge-3")
    context = client_context(strict.ca)
    pid = strict.proc.pid  # type: ignore[union-attr]
    before = rss_mib(pid)
    head = request_head("POST", "/api/v1/ingest", "Content-Type: application/json",
                        f"Content-Length: {900 * 1024}")
    piece = b" " * (800 * 1024)
    sent: list[tuple[str, socket.socket]] = []
    try:
        # attack: ingest bodies of 900 KiB that stop after 800 KiB, 3 from each of 4
        # addresses (budget: 2 MiB per address, 6 MiB in all; deadline 8.8 s each)
        for address in ("127.0.0.30", "127.0.0.31", "127.0.0.32", "127.0.0.33"):
            for _ in range(3):
                sock = open_tls(strict.port, address, context)
                assert sock is not None
                sent.append((address, sock))
                with contextlib.suppress(OSError):  # refused while sending: read below
                    sock.sendall(head + piece)
                time.sleep(0.2)
        time.sleep(1)
        refused = [(address, status_of(sock)) for address, sock in sent
                   if closed_by_peer(sock)]
        # expectation: 2 held per address while the budget lasts, the rest refused with 503
        # (7 held is 5.6 MiB: the fourth address gets one in)
        assert refused == [("127.0.0.30", 503), ("127.0.0.31", 503), ("127.0.0.32", 503),
                           ("127.0.0.33", 503), ("127.0.0.33", 503)]
        # ... the genuine agent's small batch still fits, memory stays bounded
        genuine_served(strict, maker)
        assert rss_mib(pid) - before < 100
        # ... and the stalled bodies are dropped at their deadline, freeing the budget
        assert not wait_all_closed([sock for _, sock in sent], 30)
        with pinned_client(strict.url, strict.ca, 10) as client:
            big = client.post("/api/v1/ingest", content=b" " * (900 * 1024))
            assert big.status_code in (400, 422), big.text  # read whole, then not a batch
    finally:
        for _, sock in sent:
            sock.close()


def test_oversized_headers_are_refused(strict: CollectorProcess) -> None:
    sock = open_tls(strict.port, "127.0.0.22", client_context(strict.ca))
    assert sock is not None
    with sock:
        sock.sendall(request_head("GET", "/healthz", *[f"X-Pad-{i}: {'a' * 1000}"
                                                       for i in range(64)]))
        assert status_of(sock) == 431


def huge_jpeg(width: int, height: int) -> bytes:
    """A small JPEG whose frame header says width x height (decoding it allocates that)."""
    ok, data = cv2.imencode(".jpg", np.full((48, 64, 3), 128, np.uint8))
    assert ok
    body = bytearray(data.tobytes())
    sof = body.index(b"\xff\xc0")
    body[sof + 5:sof + 7] = height.to_bytes(2, "big")
    body[sof + 7:sof + 9] = width.to_bytes(2, "big")
    return bytes(body)


def test_a_snapshot_of_huge_dimensions_is_refused_before_decoding(
        strict: CollectorProcess) -> None:
    maker = BatchMaker(strict.root, "box-edge")
    with pinned_client(strict.url, strict.ca, 10) as client:
        enrolled = client.post("/api/v1/enroll",
                               json=maker.enroll_payload(strict.token("cctv"), "cctv"))
        assert enrolled.status_code == 201, enrolled.text

        def upload(body: bytes) -> httpx.Response:
            path = "/api/v1/snapshots/cam1"
            header = request_signing.sign_header(maker.key, maker.agent_id, "POST", path, body)
            return client.post(path, content=body, headers={"content-type": "image/jpeg",
                                                             request_signing.HEADER: header})

        pid = strict.proc.pid  # type: ignore[union-attr]
        before = rss_mib(pid)
        # attack: a 1 KiB JPEG whose header says 11500x11500 (400 MB decoded)
        answer = upload(huge_jpeg(11500, 11500))
        assert answer.status_code == 422
        assert "11500x11500" in answer.json()["detail"]
        assert rss_mib(pid) - before < 100
        # a camera-sized one is still taken
        fine = upload(huge_jpeg(64, 48))
        assert fine.status_code == 201 and fine.json()["width"] == 64


def handshake(port: int, ca: Path, cipher: str) -> str:
    """The cipher a TLS 1.2 handshake offering only `cipher` agrees on (raises if refused)."""
    context = client_context(ca)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(cipher)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        return str(tls.cipher()[0])


CBC = "ECDHE-ECDSA-AES128-SHA256"


def permissive_server(cert: Path, key: Path) -> tuple[socket.socket, threading.Thread]:
    """A loopback TLS server taking any suite OpenSSL allows: proves the client offers CBC."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("ALL:@SECLEVEL=0")
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def test_tls12_takes_only_ecdhe_aead_suites_and_responses_carry_hsts(
        strict: CollectorProcess) -> None:
    listener, thread = permissive_server(strict.files.server_cert, strict.files.server_key)
    with listener:
        assert handshake(listener.getsockname()[1], strict.ca, CBC) == CBC
        thread.join(5)
    # attack: a client that offers only a CBC suite
    with pytest.raises(ssl.SSLError):
        handshake(strict.port, strict.ca, CBC)
    # expectation: AEAD suites with ECDHE, and TLS 1.3, are taken
    for cipher in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                   "ECDHE-ECDSA-CHACHA20-POLY1305"):
        assert handshake(strict.port, strict.ca, cipher) == cipher
    with socket.create_connection(("127.0.0.1", strict.port), timeout=10) as raw, \
            client_context(strict.ca).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.version() == "TLSv1.3"
    # HSTS on pages, API answers, errors and the edge's own refusals
    with pinned_client(strict.url, strict.ca, 10) as client:
        answers = [client.get("/healthz"), client.get("/login"), client.get("/api/v1/events"),
                   client.get("/no/such/page"),
                   client.post("/api/v1/enroll", content=b"x" * 5000)]
    assert [a.status_code for a in answers] == [200, 200, 401, 404, 413]
    for answer in answers:
        assert answer.headers["strict-transport-security"].startswith("max-age=")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    root = tmp_path / "modes"
    root.mkdir()
    state = root / "collector"
    port = CollectorProcess(tmp_path / "unused").port
    config = CollectorConfig(collector=CollectorSection(state_dir=state, listen_port=port))
    config_path = root / "collector.yaml"
    config_path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    # attack: a shell's umask (022), no systemd UMask=
    subprocess.run([sys.executable, "-m", "floor_agent.cli", "collector", "init", "--config",
                    str(config_path)], check=True, capture_output=True,
                   preexec_fn=lambda: os.umask(0o022))
    # expectation: the state directories 0700, keys and the database 0600, nothing else open
    # to group or others but the public certificates
    assert mode(state) == 0o700
    assert mode(state / "tls") == 0o700
    assert mode(state / "tls" / "ca.key") == 0o600
    assert mode(state / "tls" / "server.key") == 0o600
    assert mode(state / "collector.db") == 0o600
    for path in state.rglob("*"):
        if path.is_dir():
            assert mode(path) & 0o077 == 0, path
        elif path.suffix not in (".pem", ".pub"):
            assert mode(path) & 0o077 == 0, (path, oct(mode(path)))


def test_the_open_files_limit_is_raised_to_its_hard_limit(strict: CollectorProcess) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard <= SOFT_FILES:
        pytest.skip("the hard open-files limit leaves nothing to raise")
    text = Path(f"/proc/{strict.proc.pid}/limits").read_text()  # type: ignore[union-attr]
    (line,) = [row for row in text.splitlines() if row.startswith("Max open files")]
    soft, hard_seen = line.split()[3:5]
    assert int(soft) == int(hard_seen) == (hard if hard != resource.RLIM_INFINITY else int(soft))


def shut_out_events(proc: CollectorProcess) -> list[dict]:
    store = proc.store()
    try:
        return store.query_events(EventQuery(kind="collector.shut_out", limit=100)).events
    finally:
        store.close()


def test_a_persistent_offender_is_shut_out_before_tls_and_the_own_host_never(
        strict: CollectorProcess) -> None:
    maker = genuine_agent(strict, "ws-edge-shut")
    context = client_context(strict.ca)
    junk = b'{"agent_id": "ws-edge-shut", "events": [], "checkpoint": {}}'
    # the collector's own host sends junk as often as it likes: never shut out
    with pinned_client(strict.url, strict.ca, 10) as client:
        for _ in range(45):
            assert client.post("/api/v1/ingest", content=junk).status_code == 422
    genuine_served(strict, maker)
    # attack: another address sends the same junk; 30 refusals within a minute shut it out
    answers: list[int] = []
    with httpx.Client(base_url=strict.url, verify=context, timeout=10,
                      transport=httpx.HTTPTransport(verify=context,
                                                    local_address="127.0.0.41")) as attacker:
        for _ in range(45):
            try:
                answers.append(attacker.post("/api/v1/ingest", content=junk).status_code)
            except httpx.HTTPError:
                answers.append(0)  # its connection closed, or refused at accept
    assert answers[:30] == [422] * 30 and set(answers[30:]) == {0}, answers
    # expectation: refused at accept, before any TLS work; others and the own host served
    assert open_tls(strict.port, "127.0.0.41", context) is None
    assert open_tls(strict.port, "127.0.0.42", context) is not None
    genuine_served(strict, maker)
    # ... and recorded on the collector's own trail with what it was shut out for
    assert eventually(lambda: bool(shut_out_events(strict)))
    (event,) = shut_out_events(strict)
    assert event["subject"] == "127.0.0.41" and event["severity"] == "info"
    assert event["data"]["offences"] == {"http_422": 30}
    assert event["data"]["seconds"] == 60
