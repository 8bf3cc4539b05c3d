"""The notifications' adapters: hand one notification document to a receiver, or raise.

Thin on purpose: what to say is notify_format's, when and whether notify.py's. E-mail through
the standard library's smtplib (STARTTLS is required before AUTH: a server that does not offer
it is a failure, the password never crosses in clear), webhooks through httpx (already the
agents' transport), syslog over a TLS socket with RFC 5425 framing. Secrets are read once at
start from their file (owner-only, keyfiles) or environment variable, and appear in no message.
"""

from __future__ import annotations

import contextlib
import os
import smtplib
import socket
import ssl
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any, Protocol

import httpx

from floor_agent.collector import notify_format as fmt
from floor_agent.collector.notify_config import (
    Channel,
    EmailChannel,
    NotificationSettings,
    Secret,
    SyslogChannel,
    WebhookChannel,
)
from floor_agent.common.keyfiles import read_private_key_file
from floor_agent.protocol.event import utc_timestamp


class SendError(Exception):
    """A receiver did not take the notification; the message says why (never a secret)."""


class SecretError(ValueError):
    """A configured secret cannot be read: which file or variable, and why."""


class Sender(Protocol):
    def send(self, doc: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def read_secret(secret: Secret, what: str) -> bytes:
    if secret.file is not None:
        data = read_private_key_file(Path(secret.file), what, SecretError)
        value = data.split(b"\n", 1)[0].rstrip(b"\r")
        if not value:
            raise SecretError(f"{secret.file}: {what} is empty")
        return value
    assert secret.env is not None
    env = os.environ.get(secret.env)
    if not env:
        raise SecretError(f"environment variable {secret.env} ({what}) is not set or empty")
    return env.encode()


def _tls_context(ca_file: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class EmailSender:
    def __init__(self, channel: EmailChannel) -> None:
        self.channel = channel
        self._password = read_secret(channel.password, "SMTP password").decode()
        self._context = _tls_context(channel.ca_file)

    def message(self, doc: dict[str, Any]) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = fmt.email_subject(doc)
        msg["From"] = self.channel.from_address
        msg["To"] = ", ".join(self.channel.to)
        msg["Date"] = formatdate(localtime=False)
        # the same on a retry: a mail system (or a person) sees a repeat as the same message
        domain = self.channel.from_address.rsplit("@", 1)[1]
        msg["Message-ID"] = f"<notification-{doc['id']}@{domain}>"
        msg["X-Floor-Notification"] = str(doc["id"])
        msg.set_content(fmt.email_text(doc))
        msg.add_attachment(fmt.body(doc), maintype="application", subtype="json",
                           filename=f"notification-{doc['id']}.json")
        return msg

    def send(self, doc: dict[str, Any]) -> None:
        c = self.channel
        try:
            with smtplib.SMTP(c.host, c.port, timeout=c.timeout_seconds) as smtp:
                smtp.ehlo()
                smtp.starttls(context=self._context)  # SMTPNotSupportedError when not offered
                smtp.ehlo()
                smtp.login(c.username, self._password)
                refused = smtp.send_message(self.message(doc))
        except (smtplib.SMTPException, OSError) as exc:
            raise SendError(f"smtp {c.host}:{c.port}: {_reason(exc)}") from None
        if refused:
            raise SendError(f"smtp {c.host}:{c.port}: recipients refused: "
                            f"{', '.join(sorted(refused))}")

    def close(self) -> None:
        pass


class WebhookSender:
    def __init__(self, channel: WebhookChannel, clock: Callable[[], float] = time.time) -> None:
        self.channel = channel
        self._key = read_secret(channel.hmac_key, "webhook HMAC key")
        self._clock = clock
        verify: ssl.SSLContext | bool = (_tls_context(channel.ca_file)
                                         if channel.url.startswith("https:") else True)
        self._client = httpx.Client(verify=verify, timeout=channel.timeout_seconds,
                                    follow_redirects=False)

    def request(self, doc: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        content = fmt.body(doc)
        stamp = int(self._clock())
        return content, {"Content-Type": "application/json",
                         "User-Agent": f"{fmt.APP}/{fmt.VERSION}",
                         "X-Floor-Notification": str(doc["id"]),
                         "X-Floor-Timestamp": str(stamp),
                         "X-Floor-Signature": fmt.signature(self._key, stamp, content)}

    def send(self, doc: dict[str, Any]) -> None:
        content, headers = self.request(doc)
        try:
            answer = self._client.post(self.channel.url, content=content, headers=headers)
        except httpx.HTTPError as exc:
            raise SendError(f"webhook: {_reason(exc)}") from None
        if not 200 <= answer.status_code < 300:
            raise SendError(f"webhook: HTTP {answer.status_code}")

    def close(self) -> None:
        self._client.close()


class SyslogSender:
    def __init__(self, channel: SyslogChannel, hostname: str | None = None) -> None:
        self.channel = channel
        self.hostname = hostname or socket.gethostname()
        self._context = _tls_context(channel.ca_file) if channel.tls else None

    def message(self, doc: dict[str, Any]) -> bytes:
        text = fmt.cef(doc) if self.channel.format == "cef" else None
        return fmt.rfc5424(doc, self.channel.facility, self.hostname, utc_timestamp(), text)

    def send(self, doc: dict[str, Any]) -> None:
        c = self.channel
        frame = fmt.octet_counted(self.message(doc))
        try:
            with socket.create_connection((c.host, c.port), timeout=c.timeout_seconds) as raw:
                if self._context is None:
                    raw.sendall(frame)
                    raw.shutdown(socket.SHUT_WR)
                    return
                with self._context.wrap_socket(raw, server_hostname=c.host) as tls:
                    tls.sendall(frame)
                    with contextlib.suppress(ssl.SSLError, OSError):
                        tls.unwrap()  # close_notify after the frame
        except (OSError, ssl.SSLError) as exc:
            raise SendError(f"syslog {c.host}:{c.port}: {_reason(exc)}") from None

    def close(self) -> None:
        pass


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def make_sender(channel: Channel) -> Sender:
    if isinstance(channel, EmailChannel):
        return EmailSender(channel)
    if isinstance(channel, WebhookChannel):
        return WebhookSender(channel)
    return SyslogSender(channel)


def make_senders(settings: NotificationSettings) -> dict[str, Sender]:
    """One sender per configured channel; SecretError when a secret cannot be read."""
    return {name: make_sender(channel) for name, channel in settings.channels.items()}
