"""The workstation's netlock section: what it may reach, what proves it cannot reach more."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from floor_agent.config.base import ConfigPath, StrictFloat, StrictInt, StrictModel

NETLOCK_FORBIDDEN_INTERFACES = [
    "usb*", "enx*", "rndis*", "wwan*", "wlan*", "wl*", "ww*", "tun*", "tap*", "wg*", "ppp*",
    "vpn*", "ipsec*", "tailscale*", "zt*", "nordlynx*",
]
NETLOCK_TABLE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
Port = Annotated[StrictInt, Field(ge=1, le=65535)]


class NetlockDestination(StrictModel):
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


class NetlockCanary(StrictModel):
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


class NetlockWatch(StrictModel):
    """How often netlock looks again, besides the netlink events that trigger it at once."""

    full_interval_seconds: Annotated[StrictFloat, Field(ge=1, le=3600)] = 30
    # Sockets have no change event: their peers are polled this often (sock_diag, ~2 ms).
    poll_interval_seconds: Annotated[StrictFloat, Field(ge=0.05, le=5)] = 0.25
    # A resolver that starts answering public names gives no local event either: the public
    # names are asked again this often (a few small UDP queries to the LAN resolver).
    dns_interval_seconds: Annotated[StrictFloat, Field(ge=0.1, le=60)] = 0.5


class NetlockConfig(StrictModel):
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
