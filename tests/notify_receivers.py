"""Real receivers on loopback for the notification tests: an SMTP server that demands STARTTLS
and AUTH (aiosmtpd), a webhook receiver that checks the HMAC signature (http.server), and
Debian's rsyslogd with a private config listening on TCP with TLS (GnuTLS driver)."""

from __future__ import annotations

import email
import email.policy
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from floor_agent.collector import notify_format as fmt
from floor_agent.collector import tls


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(check: Callable[[], Any], seconds: float = 20.0, step: float = 0.02) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"not within {seconds} s")


@dataclass
class Certs:
    """A CA and a server certificate for 127.0.0.1 / localhost (the collector's own maker)."""

    files: tls.TlsFiles

    @classmethod
    def make(cls, directory: Path) -> Certs:
        directory.mkdir(parents=True, exist_ok=True)
        files = tls.TlsFiles.in_dir(directory)
        tls.create(files, ["127.0.0.1", "localhost"])
        return cls(files)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.files.server_cert, self.files.server_key)
        return context


# -- SMTP -------------------------------------------------------------------------------------
@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: email.message.EmailMessage
    tls: bool
    login: str | None
    received: float  # time.time() when the DATA was taken


class SmtpReceiver:
    """Submission on loopback: STARTTLS required before anything, AUTH required to send."""

    def __init__(self, certs: Certs, username: str, password: str,
                 port: int | None = None) -> None:
        self.port = port or free_port()
        self.mails: list[Mail] = []
        self.refused_logins = 0
        self._credentials = (username.encode(), password.encode())
        self._certs = certs
        self._controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        login = session.auth_data.decode() if isinstance(session.auth_data, bytes) else None
        self.mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), message,  # type: ignore[arg-type]
                               session.ssl is not None, login, time.time()))
        return "250 OK"

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword)
              and (auth_data.login, auth_data.password) == self._credentials)
        if not ok:
            self.refused_logins += 1
        return AuthResult(success=ok, handled=False, auth_data=auth_data.login if ok else None)

    def start(self) -> None:
        # aiosmtpd warns of its own deprecated attribute on every login
        logging.getLogger("mail.log").setLevel(logging.ERROR)
        self._controller = Controller(
            self, hostname="127.0.0.1", port=self.port, tls_context=self._certs.server_context(),
            require_starttls=True, auth_required=True, auth_require_tls=True,
            authenticator=self._authenticate, ready_timeout=10)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


# -- webhook ----------------------------------------------------------------------------------
@dataclass
class Hook:
    headers: dict[str, str]
    body: bytes
    verified: bool
    received: float  # time.time() when it arrived

    @property
    def doc(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class WebhookReceiver:
    """POST / on loopback; checks X-Floor-Signature with the shared key before answering 200
    (401 when it does not verify). status: what to answer otherwise (a receiver in trouble)."""

    key: bytes
    port: int = field(default_factory=free_port)
    status: int = 200
    hooks: list[Hook] = field(default_factory=list)
    on_hook: Callable[[Hook], None] | None = None
    certs: Certs | None = None  # HTTPS with this server certificate
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.certs else 'http'}://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                verified = fmt.verify_signature(
                    receiver.key, self.headers.get("X-Floor-Timestamp", ""), body,
                    self.headers.get("X-Floor-Signature", ""))
                hook = Hook(dict(self.headers.items()), body, verified, time.time())
                status = receiver.status if verified else 401
                if status == 200:
                    receiver.hooks.append(hook)
                    if receiver.on_hook is not None:
                        receiver.on_hook(hook)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        if self.certs is not None:
            self._server.socket = self.certs.server_context().wrap_socket(
                self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def ids(self) -> list[int]:
        return [int(h.headers["X-Floor-Notification"]) for h in self.hooks]


# -- rsyslog ----------------------------------------------------------------------------------
RSYSLOG_TLS = """\
global(workDirectory="{work}"
       defaultNetstreamDriver="gtls"
       defaultNetstreamDriverCAFile="{ca}"
       defaultNetstreamDriverCertFile="{cert}"
       defaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1"
       StreamDriver.AuthMode="anon")
"""
RSYSLOG_PLAIN = """\
global(workDirectory="{work}")
module(load="imtcp")
"""
RSYSLOG_CONF = """\
input(type="imtcp" address="127.0.0.1" port="{port}")
template(name="fields" type="list") {{
  property(name="timegenerated" dateFormat="rfc3339") constant(value="|")
  property(name="syslogseverity-text") constant(value="|")
  property(name="syslogfacility") constant(value="|")
  property(name="app-name") constant(value="|")
  property(name="msgid") constant(value="|")
  property(name="structured-data") constant(value="|")
  property(name="msg") constant(value="\\n")
}}
action(type="omfile" file="{work}/fields.log" template="fields")
"""


class Rsyslog:
    """Debian's rsyslogd in the foreground with a private config: TLS on a loopback port,
    each message's parsed RFC 5424 fields written to fields.log, one line each: the time
    rsyslog received it|severity|facility|app-name|msgid|structured data|message."""

    def __init__(self, root: Path, certs: Certs, tls: bool = True) -> None:
        self.binary = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
        self.root = root
        self.port = free_port()
        self.certs = certs
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        self.conf = root / "rsyslog.conf"
        self.conf.write_text(((RSYSLOG_TLS if tls else RSYSLOG_PLAIN) + RSYSLOG_CONF).format(
            work=root, ca=certs.files.ca_cert, cert=certs.files.server_cert,
            key=certs.files.server_key, port=self.port))
        self.log = root / "fields.log"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-n", "-f", str(self.conf), "-i", str(self.root / "rsyslogd.pid")],
            stdout=(self.root / "rsyslogd.out").open("wb"), stderr=subprocess.STDOUT)

        def listening() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError("rsyslogd exited: "
                                   + (self.root / "rsyslogd.out").read_text()[-2000:])
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(listening, 20, 0.05)

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
