"""Configuration layer: one YAML file per role, validated by strict pydantic models.

Admins edit these files by hand on production floors, so every mistake must come back
as ``file:line: field.path: what was expected (got ...)`` instead of a traceback or,
worse, a silently ignored typo that leaves a security control at its default.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = [
    "ROLES",
    "ROLE_MODELS",
    "AgentConfig",
    "AuditClientConfig",
    "CctvConfig",
    "CollectorConfig",
    "CollectorSection",
    "CompletionMarker",
    "ConfigError",
    "ConfigIssue",
    "DoorConfig",
    "LogLevel",
    "RetentionConfig",
    "RetentionSection",
    "RetentionServer",
    "RoleConfig",
    "WorkstationConfig",
    "check_file",
    "default_state_dir",
    "load_config",
]

STATE_ROOT = Path("/var/lib/floor-agent")
ROLES: tuple[str, ...] = ("collector", "workstation", "door", "cctv", "retention")
AGENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_AGENT_ID_MAX = 64
_DNS_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")

LogLevel = Literal["debug", "info", "warning", "error"]


def default_state_dir(role: str) -> Path:
    """Per-role state directory, so agents sharing a host never share a spool or key."""
    return STATE_ROOT / role


# --------------------------------------------------------------------------- field types


def _reject_empty_path(value: Any) -> Any:
    """Path("") silently becomes ".", which would put keys in whatever the CWD is."""
    if isinstance(value, str) and not value.strip():
        raise ValueError("must not be empty")
    return value


ConfigPath = Annotated[Path, BeforeValidator(_reject_empty_path)]
# Strict numbers: YAML 1.1 reads `on`/`yes` as true, which lax pydantic would turn into 1.
StrictInt = Annotated[int, Field(strict=True)]
StrictFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]


def _check_server_name(value: str) -> str:
    """Names go into the TLS certificate, so only valid DNS names or IP literals."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        return value
    name = value[:-1] if value.endswith(".") else value
    labels = name.split(".")
    if (
        not name
        or len(name) > 253
        or not all(_DNS_LABEL_RE.match(label) for label in labels)
        or labels[-1].isdigit()  # "10.0.0.300" is a broken IP, not a host name
    ):
        raise ValueError("must be a DNS name (letters, digits, '-', dots) or an IP address")
    return name


ServerName = Annotated[str, Field(strict=True), AfterValidator(_check_server_name)]


class _StrictModel(BaseModel):
    """Unknown keys are errors: a typo must never silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


# --------------------------------------------------------------------------- sections


class AuditClientConfig(_StrictModel):
    """How an agent reaches the collector; shared by the workstation, door and cctv roles."""

    agent_id: Annotated[str, Field(strict=True)] | None = None
    state_dir: ConfigPath = STATE_ROOT / "agent"
    collector_url: Annotated[str, Field(strict=True)] = "https://127.0.0.1:8443"
    ca_cert: ConfigPath | None = None
    batch_max_events: Annotated[StrictInt, Field(ge=1, le=5000)] = 500
    heartbeat_seconds: Annotated[StrictFloat, Field(ge=1, le=60)] = 30
    spool_max_events: Annotated[StrictInt, Field(ge=100)] = 1_000_000
    spool_alarm_ratio: Annotated[StrictFloat, Field(ge=0.1, le=0.99)] = 0.8
    backoff_initial_seconds: Annotated[StrictFloat, Field(gt=0)] = 0.5
    backoff_max_seconds: StrictFloat = 30
    request_timeout_seconds: Annotated[StrictFloat, Field(gt=0)] = 10

    @field_validator("agent_id")
    @classmethod
    def _check_agent_id(cls, value: str | None) -> str | None:
        """The id names the agent's chain on the collector, so keep it path- and log-safe."""
        if value is not None and not AGENT_ID_RE.match(value):
            raise ValueError(
                "must be 1-64 characters of letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        return value

    @field_validator("collector_url")
    @classmethod
    def _check_collector_url(cls, value: str) -> str:
        """Events only ever travel over TLS; a plain http:// URL is a configuration error."""
        try:
            parts = urlsplit(value.strip())
            _ = parts.port  # raises ValueError on a non-numeric or out-of-range port
        except ValueError as exc:
            raise ValueError(f"must be an https:// URL with a host ({exc})") from None
        if parts.scheme.lower() != "https" or not parts.hostname:
            raise ValueError("must be an https:// URL with a host, e.g. https://collector:8443")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("must not contain credentials, a query or a fragment")
        return urlunsplit(("https", parts.netloc, parts.path.rstrip("/"), "", ""))

    @field_validator("backoff_max_seconds")
    @classmethod
    def _check_backoff_max(cls, value: float, info: ValidationInfo) -> float:
        """Checked on the field (not the model) so the error points at this key's line."""
        initial = info.data.get("backoff_initial_seconds")
        if value <= 0:
            raise ValueError("must be greater than 0")
        if initial is not None and value < initial:
            raise ValueError(f"must be >= backoff_initial_seconds ({initial:g})")
        return value

    def resolved_agent_id(self, role: str) -> str:
        """Explicit agent_id, else "<hostname>-<role>" made to match AGENT_ID_RE."""
        if self.agent_id is not None:
            return self.agent_id
        suffix = f"-{role}"
        host = re.sub(r"[^A-Za-z0-9._-]+", "-", socket.gethostname())
        host = re.sub(r"^[^A-Za-z0-9]+", "", host) or "host"
        host = host[: max(1, _AGENT_ID_MAX - len(suffix))]
        return (host + suffix)[:_AGENT_ID_MAX]

    def ca_path(self) -> Path:
        """Pinned collector CA: explicit path, else the copy kept in the state directory."""
        return self.ca_cert if self.ca_cert is not None else self.state_dir / "collector-ca.pem"


class DashboardSettings(_StrictModel):
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


class BackupSettings(_StrictModel):
    """`collector backup`: where verified backups of the store go and how many are kept."""

    directory: ConfigPath = STATE_ROOT / "backups"
    keep: Annotated[StrictInt, Field(ge=1, le=1000)] = 14


class EdgeSettings(_StrictModel):
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


class CollectorSection(_StrictModel):
    """Collector listener, storage and limits."""

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


# --------------------------------------------------------------------------- role models


def _none_section_to_empty(data: Any, key: str) -> Any:
    """`audit:` with every option commented out is YAML null; treat it as "all defaults"."""
    if isinstance(data, dict) and key in data and data[key] is None:
        data = {**data, key: {}}
    return data


class _AgentBase(_StrictModel):
    """Shared wiring for agent roles: the audit state_dir default depends on the role."""

    @model_validator(mode="before")
    @classmethod
    def _role_state_dir(cls, data: Any) -> Any:
        data = _none_section_to_empty(data, "audit")
        if not isinstance(data, dict):
            return data
        role = cls.model_fields["role"].default
        audit = data.get("audit", {})
        if isinstance(audit, dict) and "state_dir" not in audit:
            data = {**data, "audit": {**audit, "state_dir": default_state_dir(role)}}
        elif isinstance(audit, AuditClientConfig) and "state_dir" not in audit.model_fields_set:
            updated = audit.model_copy(update={"state_dir": default_state_dir(role)})
            data = {**data, "audit": updated}
        return data


class CollectorConfig(_StrictModel):
    """collector.yaml: the central audit collector."""

    role: Literal["collector"] = "collector"
    log_level: LogLevel = "info"
    collector: CollectorSection = Field(default_factory=CollectorSection)

    @model_validator(mode="before")
    @classmethod
    def _empty_section(cls, data: Any) -> Any:
        """Same "commented-out section means defaults" rule as the agent roles."""
        return _none_section_to_empty(data, "collector")


class UsbGuardConfig(_StrictModel):
    """The workstation's USB guard: which rules, and where sysfs is."""

    enabled: Annotated[bool, Field(strict=True)] = True
    rules_file: ConfigPath = Path("/etc/floor-agent/usb-rules.conf")
    sys_root: ConfigPath = Path("/sys")


NETLOCK_FORBIDDEN_INTERFACES = [
    "usb*", "enx*", "rndis*", "wwan*", "wlan*", "wl*", "ww*", "tun*", "tap*", "wg*", "ppp*",
    "vpn*", "ipsec*", "tailscale*", "zt*", "nordlynx*",
]
NETLOCK_TABLE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
Port = Annotated[StrictInt, Field(ge=1, le=65535)]


class NetlockDestination(_StrictModel):
    """One destination a workstation may reach (the central server, the LAN file server).

    `addresses` are IP addresses, CIDR networks or host names; names are resolved when the
    ruleset is rendered, and a name that does not resolve is refused, never skipped."""

    name: Annotated[str, Field(strict=True, min_length=1, max_length=64)]
    addresses: Annotated[list[Annotated[str, Field(strict=True, min_length=1)]],
                         Field(min_length=1)]
    tcp: list[Port] = Field(default_factory=list)
    udp: list[Port] = Field(default_factory=list)
    # Probed by `verify`: a TCP connect to each of these "address:port" must succeed (the
    # allowed server answers, so a failing egress probe means "blocked", not "network down").
    must_reach: list[Port] = Field(default_factory=list)

    @field_validator("tcp", "udp", "must_reach")
    @classmethod
    def _unique_ports(cls, value: list[int]) -> list[int]:
        return sorted(set(value))


# Ports every canary is probed on by default: web (TCP 80/443, QUIC UDP 443), DNS (53 over UDP
# and TCP) and encrypted DNS (DNS over TLS, TCP 853; DNS over QUIC, UDP 853).
NETLOCK_CANARY_TCP = [80, 443, 53, 853]
NETLOCK_CANARY_UDP = [53, 443, 853]
# Shipped canaries: public anycast resolvers, one per IP version, that answer on every port
# above when reachable; probes.egress is unknown for an IP version or protocol without one.
NETLOCK_CANARIES = ["1.1.1.1", "2606:4700:4700::1111"]


class NetlockCanary(_StrictModel):
    """An internet address that must NOT answer: TCP and UDP probes to it must fail."""

    address: Annotated[str, Field(strict=True, min_length=1)]
    tcp: list[Port] = Field(default_factory=lambda: list(NETLOCK_CANARY_TCP))
    udp: list[Port] = Field(default_factory=lambda: list(NETLOCK_CANARY_UDP))

    @field_validator("address")
    @classmethod
    def _literal_ip(cls, value: str) -> str:
        """Probes go to a literal address: a name would make the probe depend on DNS."""
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None


class NetlockWatch(_StrictModel):
    """How often netlock looks again, besides the netlink events that trigger it at once."""

    full_interval_seconds: Annotated[StrictFloat, Field(ge=1, le=3600)] = 30
    # Sockets have no change event: their peers are polled this often (sock_diag, ~2 ms).
    poll_interval_seconds: Annotated[StrictFloat, Field(ge=0.05, le=5)] = 0.25
    # A resolver that starts answering public names gives no local event either: the public
    # names are asked again this often (a few small UDP queries to the LAN resolver).
    dns_interval_seconds: Annotated[StrictFloat, Field(ge=0.1, le=60)] = 0.5


class NetlockConfig(_StrictModel):
    """The workstation's network lock: what it may reach, what proves it cannot reach more."""

    enabled: Annotated[bool, Field(strict=True)] = False
    # Everything the workstation may talk to; everything else is rejected. Must not be empty
    # when netlock is enabled: an empty allowlist would cut the audit link too.
    allow: list[NetlockDestination] = Field(default_factory=list)
    # A default route is tolerated only through one of these gateways (e.g. the floor router
    # that itself has no way out); none = no default route at all.
    gateways: list[Annotated[str, Field(strict=True)]] = Field(default_factory=list)
    # Networks routes may lead to (besides the allowed destinations and link-local).
    networks: list[Annotated[str, Field(strict=True)]] = Field(default_factory=list)
    # Interfaces that may exist (shell patterns); any other is "unexpected".
    interfaces: list[Annotated[str, Field(strict=True, min_length=1)]] = Field(
        default_factory=lambda: ["lo", "eth*", "en*"])
    # Interfaces that must never exist, even if `interfaces` would allow them: USB tethering,
    # mobile broadband, wireless, VPN tunnels.
    forbidden_interfaces: list[Annotated[str, Field(strict=True, min_length=1)]] = Field(
        default_factory=lambda: list(NETLOCK_FORBIDDEN_INTERFACES))
    # Public names that must not resolve through the configured resolvers.
    public_names: list[Annotated[str, Field(strict=True, min_length=1)]] = Field(
        default_factory=lambda: ["example.com", "www.google.com", "cloudflare.com"])
    resolv_conf: ConfigPath = Path("/etc/resolv.conf")
    # Internet addresses that must not answer (TCP and UDP, IPv4 and IPv6); an IP version or
    # protocol without a canary probe leaves probes.egress unknown (never a pass).
    canaries: list[NetlockCanary] = Field(default_factory=lambda: [
        NetlockCanary(address=a) for a in NETLOCK_CANARIES])
    probe_timeout_ms: Annotated[StrictInt, Field(ge=5, le=5000)] = 50
    # The nftables table netlock owns (family inet); other tables are read, never changed.
    table: Annotated[str, Field(strict=True)] = "floor_netlock"
    # Load the ruleset when the workstation agent starts (a reboot drops nftables rulesets);
    # false = only prove and watch (e.g. when the site's own firewall tooling loads it).
    enforce: Annotated[bool, Field(strict=True)] = True
    watch: NetlockWatch = Field(default_factory=NetlockWatch)

    @field_validator("gateways")
    @classmethod
    def _gateway_ips(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            try:
                out.append(str(ipaddress.ip_address(item.strip())))
            except ValueError:
                raise ValueError(f"{item!r} is not an IPv4 or IPv6 address") from None
        return out

    @field_validator("networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            try:
                out.append(str(ipaddress.ip_network(item.strip(), strict=True)))
            except ValueError as e:
                raise ValueError(f"{item!r} is not a network in CIDR form ({e})") from None
        return out

    @field_validator("table")
    @classmethod
    def _table_name(cls, value: str) -> str:
        if not NETLOCK_TABLE_RE.match(value):
            raise ValueError("must be 1-32 letters, digits or '_', starting with a letter")
        return value

    @model_validator(mode="after")
    def _allowlist_when_enabled(self) -> NetlockConfig:
        if self.enabled and not self.allow:
            raise ValueError("allow: must list at least the central server when netlock is "
                             "enabled (an empty allowlist would cut the audit link too)")
        return self


class WorkstationConfig(_AgentBase):
    """workstation.yaml: USB guard and network lock agent on an operator workstation."""

    role: Literal["workstation"] = "workstation"
    log_level: LogLevel = "info"
    audit: AuditClientConfig = Field(default_factory=AuditClientConfig)
    usb_guard: UsbGuardConfig = Field(default_factory=UsbGuardConfig)
    netlock: NetlockConfig = Field(default_factory=NetlockConfig)


DOOR_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DoorId = Annotated[str, Field(strict=True, pattern=DOOR_ID_RE.pattern)]


class DoorReader(_StrictModel):
    """One card reader of a door: a PC/SC reader (pyscard) or an OSDP reader (libosdp)."""

    reader_id: DoorId
    direction: Literal["in", "out"] = "in"
    kind: Literal["pcsc", "osdp"] = "pcsc"
    # pcsc: the reader's name as PC/SC lists it (a unique part of it is enough)
    pcsc_reader: Annotated[str, Field(strict=True, min_length=1)] | None = None
    # osdp: the bus (a serial device) and the reader's address on it
    osdp_port: Annotated[str, Field(strict=True, min_length=1)] | None = None
    osdp_baud: Literal[9600, 19200, 38400, 57600, 115200] = 9600
    osdp_address: Annotated[StrictInt, Field(ge=0, le=126)] = 0
    # secure channel base key of this reader (32 hex characters, file mode 0600); none = the
    # reader is refused unless install_mode is on (then the key is set once, and recorded)
    osdp_scbk_file: ConfigPath | None = None
    osdp_install_mode: Annotated[bool, Field(strict=True)] = False

    @model_validator(mode="after")
    def _driver_fields(self) -> DoorReader:
        if self.kind == "pcsc" and self.pcsc_reader is None:
            raise ValueError("pcsc_reader: required for a pcsc reader")
        if self.kind == "osdp" and self.osdp_port is None:
            raise ValueError("osdp_port: required for an osdp reader")
        return self


class FingerprintConfig(_StrictModel):
    """The door's fingerprint module (ZhianTec UART protocol: R30x, R503, AS608)."""

    port: Annotated[str, Field(strict=True, min_length=1)] = "/dev/ttyS0"
    baud: Literal[9600, 19200, 28800, 38400, 48000, 57600, 67200, 76800, 96000, 105600,
                  115200] = 57600
    address: Annotated[StrictInt, Field(ge=0, le=0xFFFFFFFF)] = 0xFFFFFFFF
    password: Annotated[StrictInt, Field(ge=0, le=0xFFFFFFFF)] = 0
    # lowest match score that counts as the same finger (the module's Match score)
    threshold: Annotated[StrictInt, Field(ge=1, le=1000)] = 50
    # how long to wait for a finger after the card
    capture_timeout_seconds: Annotated[StrictFloat, Field(gt=0, le=60)] = 8.0
    # captures retried after a poor image before the attempt fails
    retries: Annotated[StrictInt, Field(ge=0, le=5)] = 2
    # one command's answer must arrive within this (a silent sensor means no decision)
    response_timeout_seconds: Annotated[StrictFloat, Field(gt=0, le=10)] = 2.0


class DoorIoConfig(_StrictModel):
    """Lock relay, door position switch, request-to-exit button."""

    driver: Literal["gpiod", "simulated"] = "gpiod"
    chip: Annotated[str, Field(strict=True, min_length=1)] = "/dev/gpiochip0"
    # driver "simulated" only: the Unix socket of a simulated door (its relay and switches),
    # for tests and the demo; null = a door in memory
    simulated_link: ConfigPath | None = None
    lock_line: Annotated[StrictInt, Field(ge=0)] = 0
    position_line: Annotated[StrictInt, Field(ge=0)] = 1
    rex_line: Annotated[StrictInt, Field(ge=0)] = 2
    # how long a grant (or the exit button) unlocks
    unlock_seconds: Annotated[StrictFloat, Field(gt=0, le=300)] = 5.0
    # an open door longer than this raises door.held_open
    held_open_seconds: Annotated[StrictFloat, Field(gt=0, le=3600)] = 30.0
    # secure: unpowered lock stays locked (controller stopped or crashed); safe: unpowered
    # lock opens (fire code for some escape routes)
    fail_mode: Literal["secure", "safe"] = "secure"


class DoorSection(_StrictModel):
    """One door this controller drives."""

    door_id: DoorId
    name: Annotated[str, Field(strict=True, min_length=1)]
    # anti-passback: entering through this door puts a person in zone_inside, leaving (an
    # "out" reader) in zone_outside
    zone_inside: DoorId
    zone_outside: DoorId = "outside"
    readers: Annotated[list[DoorReader], Field(min_length=1)]
    fingerprint: FingerprintConfig = Field(default_factory=FingerprintConfig)
    io: DoorIoConfig = Field(default_factory=DoorIoConfig)


class AccessPolicyConfig(_StrictModel):
    """Rules every door of this controller applies."""

    # the finger must match within this many seconds after the card
    finger_window_seconds: Annotated[StrictFloat, Field(gt=0, le=120)] = 15.0
    # clone-resistant mode: a card must prove its diversified key; a UID alone opens nothing
    require_card_proof: Annotated[bool, Field(strict=True)] = True
    # hard: refuse a second entry without an exit, with an alarm; soft: allow and alarm; off
    antipassback: Literal["hard", "soft", "off"] = "hard"
    lockout_failures: Annotated[StrictInt, Field(ge=1, le=100)] = 3
    lockout_window_seconds: Annotated[StrictFloat, Field(gt=0)] = 300.0
    lockout_seconds: Annotated[StrictFloat, Field(gt=0)] = 600.0
    # schedules are in this time zone (IANA name); null = the controller's local time
    timezone: Annotated[str, Field(strict=True)] | None = None


class AccessConfig(_StrictModel):
    """The door controller: its doors, the site key, the credentials cache."""

    doors: list[DoorSection] = Field(default_factory=list)
    policy: AccessPolicyConfig = Field(default_factory=AccessPolicyConfig)
    # 32 random bytes (hex, mode 0600) every door controller of the site holds and the
    # collector never sees: card keys are diversified from it and templates sealed under it
    site_key_file: ConfigPath = Path("/etc/floor-agent/site.key")
    # local credentials cache (SQLite); decisions keep working from it when the collector
    # is unreachable. null = credentials.db in the audit state_dir.
    cache_file: ConfigPath | None = None
    sync_interval_seconds: Annotated[StrictFloat, Field(ge=1, le=3600)] = 30.0
    # credentials not verified current for longer than this (counted on the boot clock, not
    # the wall clock) fail secure: every card is denied but the emergency list's
    max_credential_age_seconds: Annotated[StrictFloat, Field(ge=60, le=30 * 86400)] = 86400.0
    # card UIDs (upper-case hex) still decided normally while the credentials are stale
    emergency_uids: list[Annotated[str, Field(strict=True, pattern=r"^[0-9A-F]{2,64}$")]] = \
        Field(default_factory=list)
    # the clock offset to the collector that raises door.clock_skew
    clock_skew_alarm_seconds: Annotated[StrictFloat, Field(ge=1, le=3600)] = 10.0

    @field_validator("doors")
    @classmethod
    def _unique_ids(cls, doors: list[DoorSection]) -> list[DoorSection]:
        seen: set[str] = set()
        for door in doors:
            for name in [door.door_id] + [f"{door.door_id}/{r.reader_id}" for r in door.readers]:
                if name in seen:
                    raise ValueError(f"{name!r} appears twice")
                seen.add(name)
        return doors


class DoorConfig(_AgentBase):
    """door.yaml: door access controller agent."""

    role: Literal["door"] = "door"
    log_level: LogLevel = "info"
    audit: AuditClientConfig = Field(default_factory=AuditClientConfig)
    access: AccessConfig = Field(default_factory=AccessConfig)


CAMERA_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
CameraId = Annotated[str, Field(strict=True, pattern=CAMERA_ID_RE.pattern)]
Fraction = Annotated[StrictFloat, Field(ge=0, le=1)]


class MotionConfig(_StrictModel):
    """Motion on a small grey frame (the decoder's luma plane, scaled down)."""

    enabled: Annotated[bool, Field(strict=True)] = True
    # height of the frame motion and tamper read (width follows the aspect ratio)
    frame_height: Annotated[StrictInt, Field(ge=90, le=360)] = 144
    # frames per second analysed (the rest are demuxed and recorded, not decoded for motion
    # where the codec allows skipping them)
    analysis_fps: Annotated[StrictFloat, Field(gt=0, le=30)] = 5.0
    # the analysis decoder skips H.264/H.265's in-loop deblocking filter on frames that are
    # not intra-coded: ~16 % of a sub-stream's decode CPU, and the small frame moves by under
    # a grey level on average (bench/cctv.py, tests). Recording copies packets and is never
    # touched; dashboard snapshots, taken from these frames, can show faint block edges.
    skip_deblocking: Annotated[bool, Field(strict=True)] = True
    # a pixel differs from the background when its grey level is this far off (0-255)
    threshold: Annotated[StrictInt, Field(ge=1, le=255)] = 25
    night_threshold: Annotated[StrictInt, Field(ge=1, le=255)] = 15
    # the frame counts as night below this mean grey level
    night_below: Annotated[StrictInt, Field(ge=0, le=255)] = 50
    # smallest moving area, as a fraction of the frame
    min_area: Fraction = 0.002
    # background running-average weight per analysed frame
    background_alpha: Fraction = 0.05
    # a change of mean brightness this large (0-255) between two analysed frames, or against
    # the background when most of the frame changed (lights ramping up over a few frames), is
    # the light (lights on, IR switch): recalibrate instead of reporting motion
    lighting_jump: Annotated[StrictInt, Field(ge=1, le=255)] = 40
    # motion ends after this long without motion
    end_after_seconds: Annotated[StrictFloat, Field(gt=0, le=600)] = 5.0
    # areas never analysed: polygons in fractions of the frame, [[x, y], ...]
    masks: list[Annotated[list[Annotated[list[Fraction], Field(min_length=2, max_length=2)]],
                          Field(min_length=3)]] = Field(default_factory=list)


class TamperConfig(_StrictModel):
    """Lens covered or sprayed, defocused, turned away, frozen."""

    enabled: Annotated[bool, Field(strict=True)] = True
    # a condition must last this long before the alarm (and be gone as long for recovery)
    hold_seconds: Annotated[StrictFloat, Field(gt=0, le=60)] = 1.0
    # covered: mean grey below this, or grey spread (std dev) below uniform_std
    dark_below: Annotated[StrictInt, Field(ge=0, le=255)] = 12
    uniform_std: Annotated[StrictFloat, Field(ge=0, le=128)] = 6.0
    # defocused: sharpness (variance of the Laplacian) below this fraction of the reference
    blur_ratio: Fraction = 0.35
    # turned: similarity to the reference scene below this (0-1)
    scene_similarity: Fraction = 0.5
    # frozen: this many seconds of identical frames while packets still arrive (the issue
    # asks every tamper kind to alarm within 2 s)
    frozen_seconds: Annotated[StrictFloat, Field(gt=0, le=600)] = 1.5


class CameraConfig(_StrictModel):
    """One camera: where its streams are and how long its footage may be kept."""

    camera_id: CameraId
    name: Annotated[str, Field(strict=True, min_length=1)]
    # main stream, recorded without re-encoding: rtsp://, http(s):// (MPEG-TS), a file path,
    # or v4l2:///dev/videoN (USB/MJPEG through OpenCV, re-encoded: the one exception)
    url: Annotated[str, Field(strict=True, min_length=1)]
    # optional sub-stream motion and tamper read instead of the main stream (Frigate's layout)
    detect_url: Annotated[str, Field(strict=True, min_length=1)] | None = None
    enabled: Annotated[bool, Field(strict=True)] = True
    # days continuous footage is kept, and footage with motion (GDPR: as short as the purpose)
    retain_days: Annotated[StrictFloat, Field(gt=0, le=3650)] = 3.0
    retain_motion_days: Annotated[StrictFloat, Field(gt=0, le=3650)] = 14.0
    motion: MotionConfig = Field(default_factory=MotionConfig)
    tamper: TamperConfig = Field(default_factory=TamperConfig)

    @model_validator(mode="after")
    def _motion_kept_longer(self) -> CameraConfig:
        if self.retain_motion_days < self.retain_days:
            raise ValueError("retain_motion_days: must be >= retain_days (motion footage is "
                             "the part worth keeping longer)")
        return self


class OffloadConfig(_StrictModel):
    """A second copy off the box: SFTP to central storage (paramiko)."""

    enabled: Annotated[bool, Field(strict=True)] = False
    host: Annotated[str, Field(strict=True, min_length=1)] = "127.0.0.1"
    port: Annotated[StrictInt, Field(ge=1, le=65535)] = 22
    user: Annotated[str, Field(strict=True, min_length=1)] = "floor-cctv"
    # the client key (OpenSSH private key file, mode 0600) and the server's pinned host key
    # (one known_hosts line); an unknown or changed host key is refused, never accepted
    key_file: ConfigPath = Path("/etc/floor-agent/cctv-offload.key")
    known_hosts_file: ConfigPath = Path("/etc/floor-agent/cctv-offload.known_hosts")
    remote_dir: Annotated[str, Field(strict=True, min_length=1)] = "footage"
    # retry delay after a failed upload, growing to the max
    backoff_initial_seconds: Annotated[StrictFloat, Field(gt=0)] = 2.0
    backoff_max_seconds: Annotated[StrictFloat, Field(gt=0)] = 300.0
    timeout_seconds: Annotated[StrictFloat, Field(gt=0, le=600)] = 30.0


class CctvSection(_StrictModel):
    """The recorder: cameras, where footage goes, how long it stays."""

    cameras: list[CameraConfig] = Field(default_factory=list)
    # footage lives under storage_dir/CAMERA/YYYY-MM-DD/HH/ (UTC)
    storage_dir: ConfigPath = Path("/var/lib/floor-agent/cctv/footage")
    segment_seconds: Annotated[StrictFloat, Field(ge=2, le=300)] = 10.0
    # below this much free space the oldest footage goes first (with an alarm), long before
    # recording could stop
    min_free_percent: Annotated[StrictFloat, Field(ge=1, le=90)] = 10.0
    min_free_bytes: Annotated[StrictInt, Field(ge=0)] = 1 << 30
    # how often retention and disk space are checked
    sweep_interval_seconds: Annotated[StrictFloat, Field(ge=1, le=86400)] = 60.0
    # a camera without frames this long is offline (cctv.camera_offline)
    offline_after_seconds: Annotated[StrictFloat, Field(ge=1, le=3600)] = 10.0
    # reconnect delay after a lost stream, growing to the max
    reconnect_initial_seconds: Annotated[StrictFloat, Field(gt=0)] = 1.0
    reconnect_max_seconds: Annotated[StrictFloat, Field(gt=0)] = 30.0
    offload: OffloadConfig = Field(default_factory=OffloadConfig)

    @field_validator("cameras")
    @classmethod
    def _unique_cameras(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        seen: set[str] = set()
        for camera in cameras:
            if camera.camera_id in seen:
                raise ValueError(f"camera_id {camera.camera_id!r} appears twice")
            seen.add(camera.camera_id)
        return cameras


class CctvConfig(_AgentBase):
    """cctv.yaml: CCTV recorder agent."""

    role: Literal["cctv"] = "cctv"
    log_level: LogLevel = "info"
    audit: AuditClientConfig = Field(default_factory=AuditClientConfig)
    cctv: CctvSection = Field(default_factory=CctvSection)


# --------------------------------------------------------------------------- retention

RETENTION_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
RETENTION_IMAGE_PATTERNS = [
    "*.jpg", "*.jpeg", "*.png", "*.tif", "*.tiff", "*.psd", "*.psb", "*.heic", "*.webp",
    "*.bmp", "*.gif", "*.dng", "*.cr2", "*.cr3", "*.nef", "*.arw", "*.orf", "*.raf", "*.rw2",
    "*.raw", "*.xmp",
]


def _check_regex(value: str) -> str:
    """Compiled here so a broken pattern is a config error, not a crash during a sweep."""
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression ({exc})") from None
    return value


Regex = Annotated[str, Field(strict=True, min_length=1), AfterValidator(_check_regex)]


class CompletionMarker(_StrictModel):
    """When a job counts as complete: a marker file (its mtime) or a manifest timestamp."""

    # a file in the job folder, e.g. ".done"; the job completed at the file's modification time
    file: Annotated[str, Field(strict=True, min_length=1)] | None = None
    # or a JSON manifest in the job folder, e.g. "job.json", whose `field` holds an ISO 8601
    # time with a UTC offset, e.g. "2026-01-31T17:00:00Z"
    manifest: Annotated[str, Field(strict=True, min_length=1)] | None = None
    field: Annotated[str, Field(strict=True, min_length=1)] = "completed_at"

    @field_validator("file", "manifest")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        """A name inside the job folder: a path could point the check somewhere else."""
        if value is not None and ("/" in value or value in (".", "..")):
            raise ValueError("must be a file name inside the job folder, not a path")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> CompletionMarker:
        if (self.file is None) == (self.manifest is None):
            raise ValueError("set exactly one of 'file' (e.g. .done) or 'manifest' "
                             "(e.g. job.json)")
        return self


class RetentionServer(_StrictModel):
    """One image server whose completed jobs lose their images after retention_days."""

    name: Annotated[str, Field(strict=True, pattern=RETENTION_NAME_RE.pattern)]
    host: Annotated[str, Field(strict=True, min_length=1)] = "127.0.0.1"
    port: Annotated[StrictInt, Field(ge=1, le=65535)] = 22
    user: Annotated[str, Field(strict=True, min_length=1)] = "floor-retention"
    # our key (OpenSSH private key, mode 0600); key authentication only, no agent, no password
    key_file: ConfigPath = Path("/etc/floor-agent/retention.key")
    # the server's pinned host key: a known_hosts file, or the known_hosts line itself
    # (host_key wins when both are set); an unknown or changed key is refused
    known_hosts_file: ConfigPath = Path("/etc/floor-agent/retention.known_hosts")
    host_key: Annotated[str, Field(strict=True, min_length=1)] | None = None
    # absolute path on the server; jobs are ROOT/CLIENT_CODE/JOB_CODE/
    root: Annotated[str, Field(strict=True, min_length=2)]
    # images of a job go this many days after its completion
    retention_days: Annotated[StrictInt, Field(ge=1, le=3650)]
    completion: CompletionMarker = Field(default_factory=lambda: CompletionMarker(file=".done"))
    # what counts as an image (shell patterns, case-insensitive); everything else stays
    image_patterns: Annotated[list[Annotated[str, Field(strict=True, min_length=1)]],
                              Field(min_length=1)] = Field(
        default_factory=lambda: list(RETENTION_IMAGE_PATTERNS))
    # refuse the sweep when more than this share of the root's files would go at once
    # (a wrong clock, root or marker); --force overrides after a human looked
    max_share: Annotated[StrictFloat, Field(gt=0, le=1)] = 0.5
    # folder names that are client codes and job codes; any other folder is left alone and
    # reported (a folder named after a customer must not exist)
    client_pattern: Regex = r"^C-?[0-9]{3,8}$"
    job_pattern: Regex = r"^J-?[0-9]{3,10}$"
    timeout_seconds: Annotated[StrictFloat, Field(gt=0, le=600)] = 30.0

    @field_validator("root")
    @classmethod
    def _absolute_root(cls, value: str) -> str:
        """A relative or non-normal root depends on the login's home and is too easy to get
        wrong on a tool that deletes."""
        if not value.startswith("/") or value.rstrip("/") == "":
            raise ValueError("must be an absolute path on the server below '/', "
                             "e.g. /srv/images/online")
        parts = value.rstrip("/").split("/")[1:]
        if any(part in ("", ".", "..") for part in parts):
            raise ValueError("must be a normalized path (no '//', '.' or '..')")
        return value.rstrip("/")


def _demo_retention_servers() -> list[RetentionServer]:
    """The seed company's promise: 15 days on the online server, 30 on the offline one."""
    return [
        RetentionServer(name="online", root="/srv/images/online", retention_days=15,
                        known_hosts_file=Path("/etc/floor-agent/retention-online.known_hosts")),
        RetentionServer(name="offline", root="/srv/images/offline", retention_days=30,
                        known_hosts_file=Path("/etc/floor-agent/retention-offline.known_hosts"),
                        completion=CompletionMarker(manifest="job.json")),
    ]


class RetentionSection(_StrictModel):
    """The image servers the daily sweep visits."""

    servers: Annotated[list[RetentionServer], Field(min_length=1)] = Field(
        default_factory=_demo_retention_servers)

    @field_validator("servers")
    @classmethod
    def _unique_names(cls, servers: list[RetentionServer]) -> list[RetentionServer]:
        seen: set[str] = set()
        for server in servers:
            if server.name in seen:
                raise ValueError(f"name {server.name!r} appears twice")
            seen.add(server.name)
        return servers


class RetentionConfig(_AgentBase):
    """retention.yaml: the image retention sweep and its receipts in the audit chain."""

    role: Literal["retention"] = "retention"
    log_level: LogLevel = "info"
    audit: AuditClientConfig = Field(default_factory=AuditClientConfig)
    retention: RetentionSection = Field(default_factory=RetentionSection)


AgentConfig = WorkstationConfig | DoorConfig | CctvConfig | RetentionConfig
RoleConfig = CollectorConfig | AgentConfig
ROLE_MODELS: dict[str, type[RoleConfig]] = {
    "collector": CollectorConfig,
    "workstation": WorkstationConfig,
    "door": DoorConfig,
    "cctv": CctvConfig,
    "retention": RetentionConfig,
}


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file, kept structured so the CLI and tests can inspect it."""

    file: str
    line: int | None
    column: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        if self.field:
            return f"{where}: {self.field}: {self.message}"
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """A config file that cannot be used; str() is the admin-facing text, one issue per line."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))

    @property
    def path(self) -> str:
        """The offending file, for callers that log it separately from the message."""
        return self.issues[0].file if self.issues else ""


def _error(
    file: str, message: str, *, line: int | None = None, column: int | None = None, field: str = ""
) -> ConfigError:
    return ConfigError([ConfigIssue(file, line, column, field, message)])


def _did_you_mean(word: str, candidates: list[str]) -> str | None:
    match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return match[0] if match else None


# --------------------------------------------------------------------------- YAML


def _read_text(path: Path, file: str) -> str:
    """Read as UTF-8 ourselves so each OS-level failure gets a specific message."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _error(file, "config file not found") from None
    except IsADirectoryError:
        raise _error(file, "is a directory, expected a YAML config file") from None
    except PermissionError:
        raise _error(file, "cannot read config file: permission denied") from None
    except OSError as exc:
        raise _error(file, f"cannot read config file: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        bad = raw[exc.start]
        message = f"not valid UTF-8 (byte 0x{bad:02x} at offset {exc.start}); save it as UTF-8"
        raise _error(file, message, line=line) from None


def _yaml_error(file: str, text: str, exc: yaml.YAMLError) -> ConfigError:
    if isinstance(exc, yaml.reader.ReaderError):
        before = text[: exc.position]
        line = before.count("\n") + 1
        column = exc.position - (before.rfind("\n") + 1) + 1
        return _error(
            file,
            f"invalid YAML: character #x{exc.character:04x} is not allowed",
            line=line,
            column=column,
        )
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        message = f"invalid YAML: {problem}"
        if exc.context and exc.problem:
            message += f" ({exc.context}"
            if exc.context_mark is not None:
                message += f" started on line {exc.context_mark.line + 1}"
            message += ")"
        if "\\t" in problem or "\t" in problem:
            message += "; indent with spaces, YAML does not allow tabs"
        if mark is None:
            return _error(file, message)
        return _error(file, message, line=mark.line + 1, column=mark.column + 1)
    return _error(file, f"invalid YAML: {exc}")


def _find_duplicates(root: Node, file: str) -> list[ConfigIssue]:
    """PyYAML keeps the last of two equal keys without a word; we refuse the file instead."""
    issues: list[ConfigIssue] = []
    seen_nodes: set[int] = set()

    def walk(node: Node, path: list[str]) -> None:
        if id(node) in seen_nodes:  # aliases (and recursive anchors) share node objects
            return
        seen_nodes.add(id(node))
        if isinstance(node, MappingNode):
            first_line: dict[str, int] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, ScalarNode) or key_node.tag.endswith(":merge"):
                    continue
                key = key_node.value
                line = key_node.start_mark.line + 1
                if key in first_line:
                    issues.append(
                        ConfigIssue(
                            file,
                            line,
                            None,
                            ".".join([*path, key]),
                            f"duplicate key (first set on line {first_line[key]}); "
                            "remove one, YAML would silently keep only the last",
                        )
                    )
                else:
                    first_line[key] = line
                walk(value_node, [*path, key])
        elif isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, [*path, str(index)])

    walk(root, [])
    return issues


def _compose(text: str, file: str) -> tuple[Node | None, Any]:
    """Compose (for line numbers) then construct (for values) from one parse."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:
        raise _yaml_error(file, text, exc) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        duplicates = _find_duplicates(node, file)
        if duplicates:
            raise ConfigError(duplicates)
        return node, loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise _yaml_error(file, text, exc) from None
    finally:
        loader.dispose()


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _walk(root: Node, loc: tuple[Any, ...]) -> tuple[Node, Node | None, bool]:
    """Follow a pydantic loc through the YAML nodes: (deepest node, its key node, exact)."""
    node, key_node = root, None
    for part in loc:
        child: tuple[Node, Node | None] | None = None
        if isinstance(node, MappingNode):
            for k, v in node.value:
                if isinstance(k, ScalarNode) and k.value == str(part):
                    child = (v, k)
        elif isinstance(node, SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = (node.value[part], None)
        if child is None:
            return node, key_node, False
        node, key_node = child
    return node, key_node, True


def _describe(node: Node, value: Any, *, wants_text: bool = False) -> str:
    """Show the value as the admin wrote it, not as YAML or pydantic re-typed it."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if isinstance(node, ScalarNode):
        text = node.value
        if node.style is None and text in ("", "~", "null", "Null", "NULL"):
            return "an empty value"
        if len(text) > 60:
            text = text[:57] + "..."
        shown = text if node.style is None and not isinstance(value, str) else repr(text)
        if isinstance(value, bool) and text.lower() not in ("true", "false"):
            shown += f", which YAML reads as {str(value).lower()}"
            if wants_text:
                shown += "; quote it to mean text"
        return shown
    return repr(value)


def _section_model(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the mapping at loc, used for key suggestions."""
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _unknown_key_message(key: str, model: type[BaseModel] | None, present: set[str]) -> str:
    message = f"unknown key {key!r}"
    if model is None:
        return message
    unused = [name for name in model.model_fields if name not in present]
    suggestion = _did_you_mean(key, unused)
    if suggestion:
        return f"{message}; did you mean {suggestion!r}?"
    suggestion = _did_you_mean(key, list(model.model_fields))
    if suggestion:
        return f"{message}; did you mean {suggestion!r}? (it is also set in this section)"
    for name, field in model.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel) and key in sub.model_fields:
            return f"{message}; it belongs under '{name}:'"
    return f"{message}; expected one of: {', '.join(model.model_fields)}"


_MESSAGE_REWRITES = {
    "model_type": "expected a mapping of settings (indented 'key: value' lines)",
    "dict_type": "expected a mapping of settings (indented 'key: value' lines)",
    "missing": "missing required key",
    "float_type": "Input should be a number",
    "int_type": "Input should be a whole number",
    "path_type": "Input should be a file system path",
}


def _issue_from_pydantic(err: Any, root: Node, model: type[BaseModel], file: str) -> ConfigIssue:
    loc: tuple[Any, ...] = tuple(err["loc"])
    kind: str = err["type"]
    field = ".".join(str(part) for part in loc)
    node, key_node, exact = _walk(root, loc)
    if kind == "extra_forbidden" and exact:
        parent, _, _ = _walk(root, loc[:-1])
        present = set()
        if isinstance(parent, MappingNode):
            present = {k.value for k, _ in parent.value if isinstance(k, ScalarNode)}
        message = _unknown_key_message(str(loc[-1]), _section_model(model, loc[:-1]), present)
        line = _line(key_node) if key_node is not None else _line(node)
        return ConfigIssue(file, line, None, field, message)
    message = _MESSAGE_REWRITES.get(kind, err["msg"])
    message = message.removeprefix("Value error, ")
    value = err.get("input")
    if exact and kind != "missing":
        wants_text = kind in ("string_type", "literal_error")
        message += f" (got {_describe(node, value, wants_text=wants_text)})"
    if kind == "literal_error" and isinstance(value, str):
        allowed = re.findall(r"'([^']*)'", err.get("ctx", {}).get("expected", ""))
        suggestion = _did_you_mean(value, allowed)
        if suggestion:
            message += f"; did you mean {suggestion!r}?"
    return ConfigIssue(file, _line(node), None, field, message)


# --------------------------------------------------------------------------- public API


def load_config(path: str | Path, expected_role: str | None = None) -> RoleConfig:
    """Load and validate one role's YAML file; raise ConfigError listing every problem."""
    if expected_role is not None and expected_role not in ROLE_MODELS:
        raise ValueError(f"expected_role must be one of {', '.join(ROLES)}, not {expected_role!r}")
    file = str(path)
    text = _read_text(Path(path), file)
    root, data = _compose(text, file)
    roles = ", ".join(ROLES)
    if root is None or data is None:
        raise _error(file, f"file is empty; expected at least 'role: <{' | '.join(ROLES)}>'")
    if not isinstance(root, MappingNode) or not isinstance(data, dict):
        raise _error(
            file,
            f"top level must be a mapping of settings starting with 'role:', "
            f"got {_describe(root, data)}",
            line=_line(root),
        )
    role_value, role_key, role_found = _walk(root, ("role",))
    if not role_found:
        raise _error(
            file, f"missing required key; expected one of: {roles}", line=_line(root), field="role"
        )
    role = data.get("role")
    if not isinstance(role, str) or role not in ROLE_MODELS:
        message = f"unknown role {_describe(role_value, role)}; expected one of: {roles}"
        suggestion = _did_you_mean(role, list(ROLES)) if isinstance(role, str) else None
        if suggestion:
            message += f"; did you mean {suggestion!r}?"
        raise _error(file, message, line=_line(role_value), field="role")
    if expected_role is not None and role != expected_role:
        raise _error(
            file,
            f"this file configures the {role!r} role, but the {expected_role!r} role "
            "was asked to load it; pass the matching file",
            line=_line(role_value),
            field="role",
        )
    model = ROLE_MODELS[role]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        issues = [_issue_from_pydantic(err, root, model, file) for err in exc.errors()]
        issues.sort(key=lambda issue: issue.line or 0)
        raise ConfigError(issues) from None


def _redact_url(url: str) -> str:
    """Keep database passwords out of terminal scrollback and support tickets."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def check_file(path: str | Path) -> str:
    """One-paragraph summary for `floor-agent config check FILE`; raises ConfigError."""
    config = load_config(path)
    head = f"{path}: OK, role {config.role}, log level {config.log_level}."
    if isinstance(config, CollectorConfig):
        c = config.collector
        return (
            f"{head} Listening on {c.listen_host}:{c.listen_port} with a TLS certificate for "
            f"{', '.join(c.server_names)}; state in {c.state_dir}; database "
            f"{_redact_url(c.resolved_database_url())}; batches up to {c.max_batch_events} "
            f"events and {c.max_request_bytes} bytes per request; an agent is stale after "
            f"{c.stale_checkpoint_seconds} s without a checkpoint; tokens live "
            f"{c.token_ttl_seconds} s."
        )
    a = config.audit
    source = "" if a.agent_id is not None else " (from hostname)"
    return (
        f"{head} Agent id {a.resolved_agent_id(config.role)}{source}; reports to "
        f"{a.collector_url} pinned to CA {a.ca_path()}; state in {a.state_dir}; heartbeat "
        f"every {a.heartbeat_seconds:g} s; batches of up to {a.batch_max_events} events; "
        f"spool holds {a.spool_max_events} events (alarm at {a.spool_alarm_ratio:.0%}); "
        f"retry backoff {a.backoff_initial_seconds:g}-{a.backoff_max_seconds:g} s; "
        f"request timeout {a.request_timeout_seconds:g} s."
    )
