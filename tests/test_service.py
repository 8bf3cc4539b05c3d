"""sd_notify, watchdog, signal and logging helpers, against real AF_UNIX datagram sockets.

The sockets stand in for systemd's notification socket, so the tests check the exact bytes
systemd would receive rather than mocking the socket layer.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import pytest

from floor_agent import service

REPO_ROOT = Path(__file__).resolve().parent.parent


class NotifyListener:
    """Plays systemd: a bound datagram socket that $NOTIFY_SOCKET points at."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    def recv(self, timeout: float = 2.0) -> bytes:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096)

    def pending(self) -> list[bytes]:
        """Every datagram already queued, without waiting."""
        self.sock.setblocking(False)
        out = []
        try:
            while True:
                out.append(self.sock.recv(4096))
        except BlockingIOError:
            return out

    def drain(self, seconds: float) -> list[bytes]:
        """Everything that arrives within ``seconds``."""
        deadline = time.monotonic() + seconds
        out = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                out.append(self.recv(timeout=left))
            except TimeoutError:
                break
        return out


def _path_listener(tmp_path: Path) -> NotifyListener:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    return NotifyListener(sock, str(path))


def _abstract_listener(tmp_path: Path) -> NotifyListener:
    name = f"floor-agent-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    return NotifyListener(sock, "@" + name)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test runner itself may run under systemd; never talk to the real manager."""
    for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(params=[_path_listener, _abstract_listener], ids=["path", "abstract"])
def notify_socket(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[NotifyListener]:
    listener = request.param(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", listener.env_value)
    yield listener
    listener.sock.close()


@pytest.fixture
def path_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifyListener]:
    listener = _path_listener(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", listener.env_value)
    yield listener
    listener.sock.close()


# --- sd_notify ---------------------------------------------------------------------------------

MESSAGES: list[tuple[str, Callable[[], bool], bytes]] = [
    ("ready", lambda: service.ready(), b"READY=1"),
    (
        "ready-status",
        lambda: service.ready("serving on :8443"),
        b"READY=1\nSTATUS=serving on :8443",
    ),
    ("status", lambda: service.status("ingesting 12 ev/s"), b"STATUS=ingesting 12 ev/s"),
    ("status-multiline", lambda: service.status("line one\nline two"), b"STATUS=line one line two"),
    ("watchdog", lambda: service.watchdog_ping(), b"WATCHDOG=1"),
    ("stopping", lambda: service.stopping(), b"STOPPING=1"),
    ("notify", lambda: service.notify("READY=1", "MAINPID=42"), b"READY=1\nMAINPID=42"),
]


@pytest.mark.parametrize(
    ("call", "expected"), [m[1:] for m in MESSAGES], ids=[m[0] for m in MESSAGES]
)
def test_sends_exactly_the_expected_datagram(
    notify_socket: NotifyListener, call: Callable[[], bool], expected: bytes
) -> None:
    assert call() is True
    assert notify_socket.recv() == expected
    assert notify_socket.pending() == []


def test_noop_when_notify_socket_unset(tmp_path: Path) -> None:
    listener = _path_listener(tmp_path)  # bound, but $NOTIFY_SOCKET does not name it
    try:
        assert service.ready("x") is False
        assert service.status("x") is False
        assert service.watchdog_ping() is False
        assert service.stopping() is False
        assert listener.pending() == []
    finally:
        listener.sock.close()


def test_empty_notify_socket_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert service.ready() is False


def test_unsupported_address_is_dropped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert service.ready() is False
    assert "unsupported NOTIFY_SOCKET" in caplog.text


def test_send_failure_is_logged_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert service.ready() is False
    assert "sd_notify" in caplog.text


@pytest.mark.parametrize("bad", [(), ("READY",), ("=1",), ("STATUS=a\nREADY=1",)])
def test_malformed_assignments_raise(path_socket: NotifyListener, bad: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        service.notify(*bad)
    assert path_socket.pending() == []


# --- watchdog_interval -------------------------------------------------------------------------


def test_watchdog_interval_unset() -> None:
    assert service.watchdog_interval() is None


def test_watchdog_interval_from_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert service.watchdog_interval() == 30.0


def test_watchdog_interval_for_our_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert service.watchdog_interval() == 30.0


def test_watchdog_pid_mismatch_disables_watchdog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert service.watchdog_interval() is None
    assert service.Watchdog(threading.Event()).start() is False


@pytest.mark.parametrize(("usec", "pid"), [("0", None), ("soon", None), ("1000", "self")])
def test_watchdog_interval_rejects_garbage(
    monkeypatch: pytest.MonkeyPatch, usec: str, pid: str | None
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid:
        monkeypatch.setenv("WATCHDOG_PID", pid)
    assert service.watchdog_interval() is None


# --- Watchdog thread ---------------------------------------------------------------------------

# 200 ms timeout: the thread pings every 100 ms.
WATCHDOG_USEC = "200000"


def test_watchdog_start_is_noop_without_watchdog(path_socket: NotifyListener) -> None:
    dog = service.Watchdog(threading.Event())
    assert dog.start() is False
    assert not dog.running
    assert path_socket.drain(0.3) == []


def test_watchdog_pings_until_stopped(
    notify_socket: NotifyListener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", WATCHDOG_USEC)
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    stop = threading.Event()
    dog = service.Watchdog(stop)
    assert dog.start() is True
    assert dog.interval == 0.2
    assert dog.running
    try:
        assert [notify_socket.recv(), notify_socket.recv()] == [b"WATCHDOG=1", b"WATCHDOG=1"]
    finally:
        stop.set()
        dog.join(2)
    assert not dog.running
    notify_socket.pending()  # a ping may have raced with stop.set()
    assert notify_socket.drain(0.3) == []


def test_watchdog_cannot_start_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", WATCHDOG_USEC)
    stop = threading.Event()
    dog = service.Watchdog(stop)
    dog.start()
    try:
        with pytest.raises(RuntimeError):
            dog.start()
    finally:
        stop.set()
        dog.join(2)


def test_watchdog_skips_pings_while_unhealthy(
    path_socket: NotifyListener, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", WATCHDOG_USEC)
    healthy = threading.Event()
    checks: list[float] = []

    def check() -> bool:
        checks.append(time.monotonic())
        return healthy.is_set()

    stop = threading.Event()
    dog = service.Watchdog(stop, healthy=check)
    dog.start()
    try:
        assert path_socket.drain(0.5) == []
        assert len(checks) >= 2, "the health check must keep being consulted"
        assert caplog.text.count("withholding watchdog pings") == 1
        healthy.set()
        assert path_socket.recv() == b"WATCHDOG=1"
        assert "resuming watchdog pings" in caplog.text
    finally:
        stop.set()
        dog.join(2)


def test_watchdog_treats_a_raising_check_as_unhealthy(
    path_socket: NotifyListener, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", WATCHDOG_USEC)

    def check() -> bool:
        raise RuntimeError("database gone")

    stop = threading.Event()
    dog = service.Watchdog(stop, healthy=check)
    dog.start()
    try:
        assert path_socket.drain(0.35) == []
    finally:
        stop.set()
        dog.join(2)
    assert "database gone" in caplog.text


# --- shutdown handlers -------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys, threading
    from floor_agent import service

    stop = threading.Event()
    received = []
    service.install_shutdown_handlers(stop, on_signal=received.append)
    service.ready("child up")
    if not stop.wait(20):
        sys.exit("no signal within 20 s")
    service.stopping()
    print(f"stopped by signal {received[0]}", flush=True)
    """
)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_subprocess_exits_cleanly_on_signal(
    path_socket: NotifyListener, signum: signal.Signals
) -> None:
    env = dict(os.environ, NOTIFY_SOCKET=path_socket.env_value)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Like systemd, wait for READY=1 before treating the service as started.
        assert path_socket.recv(timeout=20) == b"READY=1\nSTATUS=child up"
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out.strip() == f"stopped by signal {int(signum)}"
    assert path_socket.recv() == b"STOPPING=1"


def test_handlers_set_the_event_in_process() -> None:
    stop = threading.Event()
    seen: list[int] = []
    previous = service.install_shutdown_handlers(stop, on_signal=seen.append)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(2)
        assert seen == [signal.SIGTERM]
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def test_handlers_refuse_non_main_thread() -> None:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            service.install_shutdown_handlers(threading.Event())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(5)
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)


# --- logging -----------------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """setup_logging() configures the root logger; undo it so other tests see pytest's setup."""
    root = logging.getLogger()
    old_level, old_handlers = root.level, list(root.handlers)
    yield
    for handler in list(root.handlers):
        if handler not in old_handlers:
            root.removeHandler(handler)
    root.setLevel(old_level)


@pytest.fixture
def stderr_file(tmp_path: Path, restore_logging: None) -> Iterator[TextIO]:
    """A real file standing in for stderr: JOURNAL_STREAM is checked against its fstat."""
    with (tmp_path / "stderr.log").open("w+", encoding="utf-8") as fh:
        yield fh


def _emit_and_read(stream: TextIO) -> list[str]:
    logger = logging.getLogger("floor_agent.test")
    logger.info("collector started\non two lines")
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("ingest failed")
    logger.debug("hidden at INFO")
    stream.flush()
    stream.seek(0)
    return stream.read().splitlines()


ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"


def test_logging_outside_journal_has_iso_timestamps(stderr_file: TextIO) -> None:
    service.setup_logging("info", stream=stderr_file)
    lines = _emit_and_read(stderr_file)
    assert len(lines) == 2, lines
    assert re.fullmatch(
        ISO + r" INFO floor_agent\.test: collector started\\non two lines", lines[0]
    )
    assert re.match(ISO + r" ERROR floor_agent\.test: ingest failed\\nTraceback", lines[1])
    assert "ValueError: boom" in lines[1]


def test_logging_to_journal_has_priority_and_no_timestamp(
    stderr_file: TextIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = os.fstat(stderr_file.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    service.setup_logging("INFO", stream=stderr_file)
    lines = _emit_and_read(stderr_file)
    assert len(lines) == 2, lines
    assert lines[0] == r"<6>INFO floor_agent.test: collector started\non two lines"
    assert lines[1].startswith(r"<3>ERROR floor_agent.test: ingest failed\nTraceback")


def test_stale_journal_stream_keeps_timestamps(
    stderr_file: TextIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stderr was redirected away from the journal, so journald will not timestamp it."""
    monkeypatch.setenv("JOURNAL_STREAM", "1:1")
    service.setup_logging("info", stream=stderr_file)
    assert re.match(ISO, _emit_and_read(stderr_file)[0])


def test_setup_logging_twice_does_not_duplicate(stderr_file: TextIO) -> None:
    service.setup_logging("info", stream=stderr_file)
    service.setup_logging("debug", stream=stderr_file)
    lines = _emit_and_read(stderr_file)
    assert len(lines) == 3, lines  # the DEBUG line now shows, each record once


def test_setup_logging_rejects_unknown_level() -> None:
    with pytest.raises(ValueError):
        service.setup_logging("chatty")


def test_setup_logging_defaults_to_stderr(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    service.setup_logging("warning")
    logging.getLogger("floor_agent.test").warning("disk almost full")
    assert re.fullmatch(
        ISO + r" WARNING floor_agent\.test: disk almost full\n", capsys.readouterr().err
    )


def test_a_guarded_thread_that_fails_stops_the_agent_once_reported() -> None:
    import threading

    from floor_agent.service import guarded_thread

    shutdown = threading.Event()
    reported: list[BaseException] = []

    def body(stop: threading.Event) -> None:
        raise OSError("udev socket gone")

    thread = guarded_thread("part", body, shutdown, reported.append)
    thread.start()
    thread.join(5)
    assert shutdown.is_set() and [str(e) for e in reported] == ["udev socket gone"]

    # failing after the stop was asked is the stop itself: nothing reported
    reported.clear()
    late = guarded_thread("part", body, shutdown, reported.append)
    late.start()
    late.join(5)
    assert reported == []
