"""collector.yaml: the collector's listener, store, limits, backups, trust anchor, and the
dashboard's session settings."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from floor_agent.collector.footage_config import FootageSettings
from floor_agent.collector.notify_config import NotificationSettings
from floor_agent.config.audit import none_section_to_empty
from floor_agent.config.base import (
    STATE_ROOT,
    ConfigPath,
    LogLevel,
    ServerName,
    StrictFloat,
    StrictInt,
    StrictModel,
)


class DashboardSettings(StrictModel):
    """The security staff's dashboard: session lifetimes and the failed-login lockout."""

    session_hours: Annotated[StrictInt, Field(ge=1, le=24)] = 8
    idle_minutes: Annotated[StrictInt, Field(ge=1, le=24 * 60)] = 30
    lockout_failures: Annotated[StrictInt, Field(ge=1, le=100)] = 5
    lockout_minutes: Annotated[StrictInt, Field(ge=1, le=24 * 60)] = 15
    # Failed logins from one source address (an IPv6 /64) within address_minutes before that
    # address is answered 429 with Retry-After, without any password hashing.
    address_failures: Annotated[StrictInt, Field(ge=1, le=1000)] = 20
    address_minutes: Annotated[StrictInt, Field(ge=1, le=24 * 60)] = 15
    # How long a login waits for one of the 2 password hashing slots before a 503 with
    # Retry-After (hashing is bounded to 2 x 64 MiB, however many logins arrive).
    login_wait_seconds: Annotated[StrictFloat, Field(gt=0, le=60)] = 3.0
    # Cookies carry Secure: the collector only serves HTTPS; off only for a test on plain HTTP.
    secure_cookies: Annotated[bool, Field(strict=True)] = True
    # clips behind alerts, from the central SFTP copy (collector/footage.py)
    footage: FootageSettings = Field(default_factory=FootageSettings)


class BackupSettings(StrictModel):
    """`collector backup`: where verified backups of the store go and how many are kept."""

    directory: ConfigPath = STATE_ROOT / "backups"
    keep: Annotated[StrictInt, Field(ge=1, le=1000)] = 14


class EdgeSettings(StrictModel):
    """What one connection or one address may hold of the listener (collector/edge.py): the
    collector is on the floor LAN, where anyone can open connections and send slowly."""

    # Connections open at once, all addresses together; when full, the oldest connection that
    # is not in a request, of the address holding the most, makes room for an address with fewer.
    max_connections: Annotated[StrictInt, Field(ge=16, le=60_000)] = 512
    # Connections one source address may hold (refused at accept, before the TLS handshake).
    max_connections_per_address: Annotated[StrictInt, Field(ge=2, le=10_000)] = 64
    # Seconds for the TLS handshake, then for a request's line and headers (from the
    # connection's start or the request's first byte).
    tls_handshake_timeout_seconds: Annotated[StrictInt, Field(ge=1, le=120)] = 10
    header_timeout_seconds: Annotated[StrictInt, Field(ge=1, le=120)] = 10
    # A body must arrive within body_timeout_seconds plus one second per body_min_rate_bytes.
    body_timeout_seconds: Annotated[StrictInt, Field(ge=1, le=600)] = 20
    body_min_rate_bytes: Annotated[StrictInt, Field(ge=1024)] = 32 * 1024
    # Seconds a kept-alive connection may wait for its next request.
    idle_timeout_seconds: Annotated[StrictInt, Field(ge=1, le=300)] = 5
    # Request line plus headers, in bytes (431 past it).
    max_header_bytes: Annotated[StrictInt, Field(ge=4096, le=1024 * 1024)] = 32 * 1024
    # Body limits: enrollment and login; other forms and API calls (ingest has
    # max_request_bytes, the snapshot upload its own 512 KiB).
    small_body_bytes: Annotated[StrictInt, Field(ge=1024, le=1024 * 1024)] = 4096
    form_body_bytes: Annotated[StrictInt, Field(ge=4096, le=16 * 1024 * 1024)] = 64 * 1024
    # Request-body bytes held at once by the whole process and by one address (503 past it);
    # per address must fit one ingest body (max_request_bytes).
    body_budget_bytes: Annotated[StrictInt, Field(ge=1024 * 1024)] = 64 * 1024 * 1024
    body_budget_per_address_bytes: Annotated[StrictInt, Field(ge=1024 * 1024)] = 20 * 1024 * 1024
    # An address that offends this often within offence_window_seconds (requests refused as
    # unauthenticated, malformed, oversized or throttled; handshakes, headers or bodies not
    # finished in time) is shut out at accept, before any TLS work, for shut_out_seconds,
    # doubled for each repeat up to max_shut_out_seconds. 0 turns it off.
    offences_to_shut_out: Annotated[StrictInt, Field(ge=0, le=100_000)] = 30
    offence_window_seconds: Annotated[StrictInt, Field(ge=1, le=3600)] = 60
    shut_out_seconds: Annotated[StrictInt, Field(ge=1, le=86_400)] = 60
    max_shut_out_seconds: Annotated[StrictInt, Field(ge=1, le=7 * 86_400)] = 3600
    # Never shut out (the collector's own host: its watchdog check and local admin tools).
    trusted_addresses: list[Annotated[str, Field(strict=True, min_length=1)]] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"])

    @model_validator(mode="after")
    def _caps_nest(self) -> EdgeSettings:
        if self.max_connections_per_address * 2 > self.max_connections:
            raise ValueError("max_connections_per_address: must be at most half of "
                             "max_connections, so one address cannot take the listener")
        if self.body_budget_per_address_bytes > self.body_budget_bytes:
            raise ValueError("body_budget_per_address_bytes: must be <= body_budget_bytes")
        if self.max_shut_out_seconds < self.shut_out_seconds:
            raise ValueError("max_shut_out_seconds: must be >= shut_out_seconds")
        for address in self.trusted_addresses:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(f"trusted_addresses: {address!r} is not an IP address"
                                 ) from None
        return self


class PolicySettings(StrictModel):
    """Central USB and network policy (collector/policy.py): the group a workstation is in
    until an admin assigns it, how often expired device exceptions are looked for, and where
    the policy key lives."""

    # The group of a workstation no admin has assigned (protocol/policy.GROUP_RE).
    default_group: Annotated[str, Field(strict=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
                             ] = "default"
    # Seconds between looks for device exceptions past their expiry (each one found is
    # recorded as a change, a new version for the workstations in its scope, and an event).
    expiry_check_seconds: Annotated[StrictInt, Field(ge=1, le=3600)] = 30
    # The policy key's directory (0700; policy.key 0600, policy.pub); null = "policy" in
    # state_dir, beside the TLS files.
    key_dir: ConfigPath | None = None


class CollectorSection(StrictModel):
    """Collector listener, storage and limits."""

    # The collector's own audit-trail identity (collector/self_audit.py). null: the id that
    # 'collector join-request' wrote to state_dir/collector-id, else "<hostname>-collector".
    # Every collector of a site needs its own (the store refuses a second key for one id).
    collector_id: Annotated[str, Field(strict=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
                            ] | None = None
    listen_host: Annotated[str, Field(strict=True, min_length=1)] = "127.0.0.1"
    listen_port: Annotated[StrictInt, Field(ge=1, le=65535)] = 8443
    state_dir: ConfigPath = STATE_ROOT / "collector"
    database_url: Annotated[str, Field(strict=True)] | None = None
    server_names: Annotated[list[ServerName], Field(min_length=1)] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1"]
    )
    max_batch_events: Annotated[StrictInt, Field(ge=1, le=100_000)] = 5000
    max_request_bytes: Annotated[StrictInt, Field(ge=1024)] = 16 * 1024 * 1024
    stale_checkpoint_seconds: Annotated[StrictInt, Field(ge=60)] = 180
    token_ttl_seconds: Annotated[StrictInt, Field(ge=60)] = 86400
    ingest_processes: Annotated[StrictInt, Field(ge=0, le=16)] = 1
    # How far an agent's signed timestamps may run ahead of the collector's clock: a checkpoint
    # further in the future is refused (clock_skew alert; the agent keeps its events), events
    # further off are stored and flagged (clock_skew alert).
    max_clock_skew_seconds: Annotated[StrictInt, Field(ge=5, le=86_400)] = 300
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    edge: EdgeSettings = Field(default_factory=EdgeSettings)
    # where alerts go (collector/notify_config.py); no channels: no notifications
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    # central USB and network policy for the workstations (collector/policy.py)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    # The trust anchor (collector/anchor.py): an Ed25519 key outside the store that endorses
    # every enrolled agent key and signs every backup manifest. Its directory (0700; key 0600,
    # public half anchor.pub); null = "anchor" in state_dir, beside the TLS files.
    anchor_dir: ConfigPath | None = None
    # The anchor public key verify/restore trust, pinned outside the collector's files: base64
    # (from 'collector anchor show') or a file holding it. null = anchor.pub in anchor_dir.
    anchor_public_key: Annotated[str, Field(strict=True, min_length=1)] | None = None

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        """Only the two stores the collector implements; anything else would fail at runtime."""
        if value is None:
            return None
        for prefix in ("sqlite:///", "postgresql://", "postgres://"):
            if value.startswith(prefix) and len(value) > len(prefix):
                return value
        raise ValueError(
            "must start with sqlite:/// or postgresql:// (or postgres://), "
            "or be left out to use sqlite in state_dir"
        )

    @model_validator(mode="after")
    def _ingest_fits_budget(self) -> CollectorSection:
        """One genuine ingest body must fit what one address may hold, or it is never taken."""
        if self.edge.body_budget_per_address_bytes < self.max_request_bytes:
            raise ValueError("edge.body_budget_per_address_bytes: must be >= max_request_bytes "
                             f"({self.max_request_bytes})")
        return self

    def resolved_database_url(self) -> str:
        """Explicit database_url, else a SQLite file next to the collector's other state."""
        if self.database_url is not None:
            return self.database_url
        return f"sqlite:///{self.state_dir}/collector.db"



class CollectorConfig(StrictModel):
    """collector.yaml: the central audit collector."""

    role: Literal["collector"] = "collector"
    log_level: LogLevel = "info"
    collector: CollectorSection = Field(default_factory=CollectorSection)

    @model_validator(mode="before")
    @classmethod
    def _empty_section(cls, data: Any) -> Any:
        """Same "commented-out section means defaults" rule as the agent roles."""
        return none_section_to_empty(data, "collector")
