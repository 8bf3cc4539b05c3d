"""systemd integration for the long-running daemons: sd_notify, watchdog, signals, logging.

The sd_notify protocol is a few newline-separated ``KEY=value`` lines in one AF_UNIX datagram,
so it is implemented here directly instead of depending on python-systemd (which builds against
libsystemd headers). Notifications are no-ops when $NOTIFY_SOCKET is unset, so the same code
runs under systemd, in a container and in a terminal.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from types import FrameType
from typing import Any, TextIO

__all__ = [
    "Watchdog",
    "install_shutdown_handlers",
    "notify",
    "ready",
    "setup_logging",
    "status",
    "stopping",
    "watchdog_interval",
    "watchdog_ping",
]

log = logging.getLogger(__name__)

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"


def _notify_address(value: str) -> str | bytes | None:
    """Map $NOTIFY_SOCKET to a socket address; None for kinds we do not speak (e.g. vsock:)."""
    if value.startswith("@"):
        # Abstract namespace: the leading '@' stands for the NUL byte the kernel expects.
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def notify(*assignments: str) -> bool:
    """Send ``KEY=value`` assignments to systemd in one datagram.

    Returns True when the datagram was sent, False when $NOTIFY_SOCKET is unset (not running
    under a notify-type service) or sending failed. A failed notification is logged rather than
    raised: the service should keep working, and systemd's own timeouts catch a missing READY=1.
    Malformed assignments are a programming error and raise ValueError.
    """
    if not assignments:
        raise ValueError("notify() needs at least one KEY=value assignment")
    for item in assignments:
        if "=" not in item or item.startswith("="):
            raise ValueError(f"not a KEY=value assignment: {item!r}")
        if "\n" in item:
            raise ValueError(f"assignment must not contain a newline: {item!r}")

    value = os.environ.get(NOTIFY_SOCKET_ENV)
    if not value:
        return False
    address = _notify_address(value)
    if address is None:
        log.warning("unsupported %s address %r; notification dropped", NOTIFY_SOCKET_ENV, value)
        return False

    payload = "\n".join(assignments).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sent = sock.sendto(payload, address)
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", value, exc)
        return False
    return sent == len(payload)


def _one_line(text: str) -> str:
    """STATUS= must stay one line: the protocol separates assignments with newlines."""
    return " ".join(text.splitlines())


def ready(status: str | None = None) -> bool:
    """Tell systemd start-up finished (Type=notify), so dependants start only once we serve."""
    if status is None:
        return notify("READY=1")
    return notify("READY=1", f"STATUS={_one_line(status)}")


def stopping() -> bool:
    """Tell systemd we are shutting down on purpose, so it does not count it as a failure."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """Publish a one-line status shown by ``systemctl status``."""
    return notify(f"STATUS={_one_line(text)}")


def watchdog_ping() -> bool:
    """Reset systemd's watchdog timer (WatchdogSec=); missing pings get the service restarted."""
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """Watchdog timeout in seconds from $WATCHDOG_USEC, or None if no watchdog applies to us.

    systemd sets $WATCHDOG_PID to the main PID; when it is set and names another process
    (we are a child that inherited the environment), the watchdog is not ours to feed.
    """
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    try:
        usec_value = int(usec)
    except ValueError:
        return None
    if usec_value <= 0:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec_value / 1_000_000


class Watchdog:
    """Daemon thread that feeds systemd's watchdog every interval/2 until ``stop`` is set.

    Pinging from a thread would keep a wedged event loop alive forever, so an optional
    ``healthy`` callback is consulted before each ping: when it returns False (or raises) the
    ping is skipped, the watchdog expires and systemd restarts the service.
    """

    def __init__(self, stop: threading.Event, healthy: Callable[[], bool] | None = None) -> None:
        self._stop = stop
        self._healthy = healthy
        self._thread: threading.Thread | None = None
        self.interval: float | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> bool:
        """Start pinging; returns False (and does nothing) when no watchdog is configured."""
        if self._thread is not None:
            raise RuntimeError("Watchdog already started")
        interval = watchdog_interval()
        if interval is None:
            return False
        self.interval = interval
        self._thread = threading.Thread(
            target=self._run, args=(interval / 2,), name="sd-watchdog", daemon=True
        )
        self._thread.start()
        return True

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to finish after ``stop`` was set."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _is_healthy(self) -> bool:
        if self._healthy is None:
            return True
        try:
            return bool(self._healthy())
        except Exception:
            log.exception("watchdog health check raised; treating the service as unhealthy")
            return False

    def _run(self, period: float) -> None:
        was_healthy = True
        while not self._stop.wait(period):
            healthy = self._is_healthy()
            # Log transitions only: one line per incident, not one per period.
            if was_healthy and not healthy:
                log.error("health check failed; withholding watchdog pings so systemd restarts us")
            elif healthy and not was_healthy:
                log.warning("health check passes again; resuming watchdog pings")
            if healthy:
                watchdog_ping()
            was_healthy = healthy


class StartRefused(RuntimeError):
    """A part of the service cannot start (rules, site key or allowlist invalid): the service
    exits 2, which the units' RestartPreventExitStatus=2 keeps from restarting into the same
    refusal. The message names the file, entry or line at fault; `refusal` is what the log
    line says before it, `stop_reason` what the agent's stop records."""

    refusal = "refuses to start"
    stop_reason = "a part refused to start"


SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


def install_shutdown_handlers(
    event: threading.Event, on_signal: Callable[[int], None] | None = None
) -> dict[int, SignalHandler]:
    """Set ``event`` on SIGTERM (systemctl stop) and SIGINT (Ctrl-C) for a graceful shutdown.

    ``on_signal(signum)`` runs after the event is set, e.g. to wake an event loop. Python only
    allows installing handlers from the main thread, so calling this elsewhere raises
    RuntimeError. Returns the previous handlers so callers (and tests) can restore them.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("install_shutdown_handlers() must be called from the main thread")

    def handler(signum: int, frame: FrameType | None) -> None:
        event.set()
        if on_signal is not None:
            on_signal(signum)

    previous: dict[int, SignalHandler] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, handler)
    return previous


# journald understands a "<N>" syslog priority prefix on each stderr line (SyslogLevelPrefix=).
_SYSLOG_PRIORITY = (
    (logging.CRITICAL, 2),
    (logging.ERROR, 3),
    (logging.WARNING, 4),
    (logging.INFO, 6),
)


def _syslog_priority(levelno: int) -> int:
    for threshold, priority in _SYSLOG_PRIORITY:
        if levelno >= threshold:
            return priority
    return 7


def _is_journal(stream: TextIO) -> bool:
    """True when ``stream`` is connected to journald, per $JOURNAL_STREAM ("device:inode").

    Comparing with fstat(stream), as systemd.exec(5) recommends, avoids trusting a variable a
    child inherited after its stderr was redirected elsewhere.
    """
    value = os.environ.get("JOURNAL_STREAM")
    if not value:
        return False
    try:
        dev, ino = (int(part) for part in value.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):  # UnsupportedOperation is both
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class _OneLineFormatter(logging.Formatter):
    """One record, one line: journald (and grep) would split a traceback into many entries."""

    def __init__(self, journal: bool) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record).replace("\r", "").replace("\n", "\\n")
        if self.journal:
            # journald timestamps every entry itself; it turns the prefix into PRIORITY=.
            return f"<{_syslog_priority(record.levelno)}>{line}"
        stamp = datetime.fromtimestamp(record.created).astimezone()
        return f"{stamp.isoformat(timespec='milliseconds')} {line}"


def setup_logging(level: str, stream: TextIO | None = None) -> logging.Handler:
    """Log one line per record to stderr (or ``stream``), timestamped unless journald does it.

    Calling it again replaces the handler it installed earlier and leaves others alone.
    """
    levelno = logging.getLevelNamesMapping().get(level.strip().upper())
    if levelno is None:
        raise ValueError(f"unknown log level: {level!r}")
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_floor_agent_service", False):
            root.removeHandler(existing)
    if stream is None:
        stream = sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_OneLineFormatter(journal=_is_journal(stream)))
    handler._floor_agent_service = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(levelno)
    # HTTP client libraries log every request at INFO, pyroute2 every netlink message at DEBUG:
    # noise, not audit.
    for noisy in ("httpx", "httpcore", "pyroute2"):
        logging.getLogger(noisy).setLevel(max(levelno, logging.WARNING))
    return handler


def guarded_thread(name: str, body: Callable[[threading.Event], None],
                   shutdown: threading.Event,
                   failed: Callable[[BaseException], object]) -> threading.Thread:
    """A daemon thread running `body(shutdown)` whose failure stops the agent: `failed(e)`
    records and reports it, then `shutdown` is set, so the agent exits non-zero and systemd
    restarts it. A part that died silently (a deaf watcher, a door that no longer answers)
    must never look like a quiet floor. An exception after shutdown was asked is the stop
    itself, not a failure."""

    def run() -> None:
        try:
            body(shutdown)
        except Exception as e:
            if shutdown.is_set():
                return
            logging.getLogger("floor_agent").exception("%s failed, stopping the agent", name)
            try:
                failed(e)
            finally:
                shutdown.set()

    return threading.Thread(target=run, name=name, daemon=True)

