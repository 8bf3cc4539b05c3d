"""collector.notifications: where alerts go (e-mail, webhooks, syslog), by which rules, how
floods fold into digests and when an unacknowledged critical alert escalates.

Only the shape and the cross-references are checked here (a route naming no channel, an
unknown time zone, a malformed hour range): the loader turns each into file:line. Secrets
are named (a file or an environment variable), never written in the config; they are read
when the collector starts (collector/notify_senders.py) and never logged.
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from floor_agent.config.base import ConfigPath, StrictFloat, StrictInt, StrictModel

Severity = Literal["info", "notice", "warning", "error", "critical"]
ChannelName = Annotated[str, Field(strict=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Text = Annotated[str, Field(strict=True, min_length=1)]
HOURS_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class Secret(StrictModel):
    """Where a secret is read from: a file (first line, mode checked at start) or an
    environment variable of the collector's process. Exactly one."""

    file: ConfigPath | None = None
    env: Annotated[str, Field(strict=True, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Secret:
        if (self.file is None) == (self.env is None):
            raise ValueError("give exactly one of file: or env: (a secret never goes in "
                             "the config itself)")
        return self


class EmailChannel(StrictModel):
    """SMTP submission with STARTTLS and AUTH (port 587). The server's certificate is checked
    against ca_file, or the system's CAs when ca_file is null."""

    type: Literal["email"]
    host: Text
    port: Annotated[StrictInt, Field(ge=1, le=65535)] = 587
    username: Text
    password: Secret
    from_address: Annotated[str, Field(strict=True, pattern=r"^[^@\s]+@[^@\s]+$")]
    to: Annotated[list[Annotated[str, Field(strict=True, pattern=r"^[^@\s]+@[^@\s]+$")]],
                  Field(min_length=1)]
    ca_file: ConfigPath | None = None
    timeout_seconds: Annotated[StrictFloat, Field(gt=0, le=120)] = 10.0


class WebhookChannel(StrictModel):
    """HTTP(S) POST of a JSON document, signed: X-Floor-Signature: sha256=HMAC(key,
    timestamp + "." + body), X-Floor-Timestamp: the Unix time it was signed at."""

    type: Literal["webhook"]
    url: Annotated[str, Field(strict=True, pattern=r"^https?://[^\s]+$")]
    hmac_key: Secret
    ca_file: ConfigPath | None = None
    timeout_seconds: Annotated[StrictFloat, Field(gt=0, le=120)] = 10.0


class SyslogChannel(StrictModel):
    """RFC 5424 messages over TCP with TLS (RFC 5425, octet-counted), the message itself
    plain RFC 5424 (structured data) or CEF for a SIEM. tls: false only on a trusted link."""

    type: Literal["syslog"]
    host: Text
    port: Annotated[StrictInt, Field(ge=1, le=65535)] = 6514
    format: Literal["rfc5424", "cef"] = "rfc5424"
    tls: Annotated[bool, Field(strict=True)] = True
    ca_file: ConfigPath | None = None
    # syslog facility number (0-23); 10 = authpriv, 16-23 = local0-7
    facility: Annotated[StrictInt, Field(ge=0, le=23)] = 10
    timeout_seconds: Annotated[StrictFloat, Field(gt=0, le=120)] = 10.0


Channel = Annotated[EmailChannel | WebhookChannel | SyslogChannel, Field(discriminator="type")]


class Route(StrictModel):
    """One rule: an alert that matches every condition given goes to every channel in `to`.
    Lists match any member; kinds and agents take shell patterns (door.*, ws-a-*)."""

    name: Text
    kinds: list[Text] = Field(default_factory=list)
    min_severity: Severity = "info"
    agents: list[Text] = Field(default_factory=list)
    sites: list[Text] = Field(default_factory=list)
    # local time of day, "22:00-06:00" (may run past midnight); null: all day
    hours: Annotated[str, Field(strict=True)] | None = None
    days: list[Day] = Field(default_factory=list)
    to: Annotated[list[ChannelName], Field(min_length=1)]
    # no later route is looked at for an alert this one matched
    stop: Annotated[bool, Field(strict=True)] = False

    @field_validator("hours")
    @classmethod
    def _check_hours(cls, value: str | None) -> str | None:
        if value is None:
            return None
        match = HOURS_RE.match(value)
        if match is None or (match.group(3) == "24" and match.group(4) != "00"):
            raise ValueError('expected a local time range "HH:MM-HH:MM", e.g. "22:00-06:00"')
        if value[:5] == value[6:]:
            raise ValueError("the range is empty (start equals end); leave hours out for all "
                             "day")
        return value


class DigestSettings(StrictModel):
    """Floods: per channel, at most max_per_window notifications go out singly in a window of
    window_seconds; the rest are folded into one digest sent when the window ends."""

    window_seconds: Annotated[StrictInt, Field(ge=10, le=86_400)] = 300
    max_per_window: Annotated[StrictInt, Field(ge=1, le=10_000)] = 10


class EscalationSettings(StrictModel):
    """A critical alert nobody acknowledged within after_minutes goes to `to` (once)."""

    after_minutes: Annotated[StrictInt, Field(ge=1, le=7 * 24 * 60)] = 15
    to: list[ChannelName] = Field(default_factory=list)


class RetrySettings(StrictModel):
    """Delivery retries (collector/notify.py): per channel, backoff from initial to max after
    each failure (common/backoff). A notification is never dropped: it waits in the outbox."""

    initial_seconds: Annotated[StrictFloat, Field(gt=0, le=3600)] = 5.0
    max_seconds: Annotated[StrictFloat, Field(gt=0, le=86_400)] = 300.0


class NotificationSettings(StrictModel):
    timezone: Annotated[str, Field(strict=True)] = "UTC"
    # site name -> agent id patterns; routes select by site
    sites: dict[ChannelName, list[Text]] = Field(default_factory=dict)
    channels: dict[ChannelName, Channel] = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)
    digest: DigestSettings = Field(default_factory=DigestSettings)
    escalation: EscalationSettings = Field(default_factory=EscalationSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    # sent (and digested) notifications are kept this long in the outbox, then deleted; the
    # trail keeps its record of each for good
    keep_days: Annotated[StrictInt, Field(ge=1, le=3650)] = 30
    # how often the outbox is looked at besides being woken by a new alert
    poll_seconds: Annotated[StrictFloat, Field(gt=0, le=60)] = 1.0

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone; expected an IANA name such as "
                             "Europe/Berlin or UTC") from None
        return value

    @model_validator(mode="after")
    def _references(self) -> NotificationSettings:
        """Every channel and site a route or the escalation names exists; each unknown name
        is reported at its own place in the file (the loader turns the loc into a line)."""
        errors: list[InitErrorDetails] = []

        def check(names: list[str], loc: tuple[str | int, ...], pool: list[str],
                  what: str) -> None:
            for index, name in enumerate(names):
                if name in pool:
                    continue
                close = difflib.get_close_matches(name, pool, n=1, cutoff=0.6)
                hint = (f"; did you mean {close[0]!r}?" if close
                        else f"; defined: {', '.join(pool) or 'none'}")
                errors.append(InitErrorDetails(
                    type=PydanticCustomError("unknown_reference", "{message}",
                                             {"message": f"unknown {what} {name!r}{hint}"}),
                    loc=(*loc, index), input=name))

        for index, route in enumerate(self.routes):
            check(route.to, ("routes", index, "to"), list(self.channels), "channel")
            check(route.sites, ("routes", index, "sites"), list(self.sites), "site")
        check(self.escalation.to, ("escalation", "to"), list(self.channels), "channel")
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        if self.retry.max_seconds < self.retry.initial_seconds:
            raise ValueError("retry.max_seconds: must be >= retry.initial_seconds")
        return self


__all__ = ["DAYS", "Channel", "DigestSettings", "EmailChannel", "EscalationSettings",
           "NotificationSettings", "RetrySettings", "Route", "Secret", "Severity",
           "SyslogChannel", "WebhookChannel"]
