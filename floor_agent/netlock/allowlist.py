"""What the workstation may reach, as networks and ports: the one reading of the config that
the firewall renderer and the checks share, so the rules and the proof never disagree.

Host names in `allow[].addresses` are resolved here, once, by an injected resolver; a name that
does not resolve is an error naming where it is in the config, never silently dropped (a
dropped central server would cut the audit link, a dropped file server would be a confusing
outage). `build` is pure given the resolver.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from floor_agent.netlock.config import NetlockConfig

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], list[str]]  # host name -> its addresses (text); raises OSError

# Always reachable without being listed: the machine itself and its links' own scope.
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
MULTICAST = (ipaddress.ip_network("224.0.0.0/4"), ipaddress.ip_network("ff00::/8"))


class AllowlistError(ValueError):
    """A config entry that cannot become firewall rules; `where` is its path in the config."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


@dataclass(frozen=True, slots=True)
class AllowedDestination:
    """One allow entry with its names resolved."""

    name: str
    networks: tuple[IPNetwork, ...]
    tcp: tuple[int, ...]
    udp: tuple[int, ...]
    must_reach: tuple[int, ...]

    def addresses(self) -> list[IPAddress]:
        """Single addresses (not networks), e.g. for the must_reach probes."""
        return [n.network_address for n in self.networks if n.num_addresses == 1]


@dataclass(frozen=True, slots=True)
class Allowlist:
    destinations: tuple[AllowedDestination, ...]
    networks: tuple[IPNetwork, ...]  # netlock.networks: where routes may lead
    gateways: tuple[IPAddress, ...]

    def destination_of(self, address: str | IPAddress, must_reach: int | None = None
                       ) -> AllowedDestination | None:
        """The allow entry covering this address, if any; with `must_reach`, the one among
        them that asks for that port to answer first (entries may share an address)."""
        ip = _address(address)
        if ip is None:
            return None
        covering = [d for d in self.destinations
                    if any(ip in n for n in d.networks if n.version == ip.version)]
        asking = [d for d in covering if must_reach is not None and must_reach in d.must_reach]
        found = asking or covering
        return found[0] if found else None

    def allows(self, address: str | IPAddress, proto: str, port: int) -> bool:
        """Whether the firewall lets the workstation open `proto` (tcp/udp) to address:port."""
        ip = _address(address)
        if ip is None:
            return False
        if _within(ip, LOOPBACK):
            return True
        for destination in self.destinations:
            if any(ip in n for n in destination.networks if n.version == ip.version):
                ports = destination.tcp if proto == "tcp" else destination.udp
                if port in ports:
                    return True
        return False

    def covers_address(self, address: str | IPAddress) -> bool:
        """Whether an address is inside the allowlist at all (a destination, an allowed
        network, loopback, link-local or multicast): where routes and peers may be."""
        ip = _address(address)
        if ip is None:
            return False
        if _within(ip, LOOPBACK + LINK_LOCAL + MULTICAST + self.networks):
            return True
        return self.destination_of(ip) is not None

    def covers_network(self, network: str | IPNetwork) -> bool:
        """Whether every address of a route's destination is inside the allowlist."""
        try:
            net = ipaddress.ip_network(network, strict=False)
        except ValueError:
            return False
        allowed = LOOPBACK + LINK_LOCAL + MULTICAST + self.networks + tuple(
            n for d in self.destinations for n in d.networks)
        return any(_subnet_of(net, a) for a in allowed)


def _subnet_of(net: IPNetwork, outer: IPNetwork) -> bool:
    """Whether net lies inside outer; False across families (subnet_of would raise)."""
    if isinstance(net, ipaddress.IPv4Network) and isinstance(outer, ipaddress.IPv4Network):
        return net.subnet_of(outer)
    if isinstance(net, ipaddress.IPv6Network) and isinstance(outer, ipaddress.IPv6Network):
        return net.subnet_of(outer)
    return False


def system_resolver(name: str) -> list[str]:
    """Addresses of a host name through the system's resolver (getaddrinfo)."""
    infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    return sorted({str(info[4][0]) for info in infos})


def build(config: NetlockConfig, resolve: Resolver = system_resolver) -> Allowlist:
    """The allowlist of a netlock config; AllowlistError names the first bad entry."""
    destinations = []
    for i, entry in enumerate(config.allow):
        networks: list[IPNetwork] = []
        for j, text in enumerate(entry.addresses):
            networks.extend(_parse_destination(text.strip(), f"netlock.allow[{i}].addresses[{j}]",
                                               resolve))
        destinations.append(AllowedDestination(
            name=entry.name, networks=tuple(_unique(networks)), tcp=tuple(entry.tcp),
            udp=tuple(entry.udp), must_reach=tuple(entry.must_reach)))
    own_networks = tuple(ipaddress.ip_network(n) for n in config.networks)
    gateways = tuple(ipaddress.ip_address(g) for g in config.gateways)
    return Allowlist(tuple(destinations), own_networks, gateways)


def _parse_destination(text: str, where: str, resolve: Resolver) -> list[IPNetwork]:
    if not text:
        raise AllowlistError(where, "empty address")
    if "/" in text:
        try:
            return [ipaddress.ip_network(text, strict=True)]
        except ValueError as e:
            raise AllowlistError(where, f"{text!r} is not a network in CIDR form ({e})") from None
    ip = _address(text)
    if ip is not None:
        return [ipaddress.ip_network(ip)]
    if not _looks_like_host_name(text):
        raise AllowlistError(where, f"{text!r} is neither an IP address, a CIDR network nor a "
                                    f"host name")
    try:
        found = resolve(text)
    except (OSError, UnicodeError) as e:
        raise AllowlistError(where, f"unknown host {text!r} ({e})") from None
    addresses = [a for a in (_address(x) for x in found) if a is not None]
    if not addresses:
        raise AllowlistError(where, f"unknown host {text!r} (no address)")
    return [ipaddress.ip_network(a) for a in addresses]


def _looks_like_host_name(text: str) -> bool:
    if len(text) > 253:
        return False
    labels = text.rstrip(".").split(".")
    return all(label and len(label) <= 63 and label[0] != "-" and label[-1] != "-"
               and all(c.isalnum() or c == "-" for c in label) for label in labels)


def _address(value: str | IPAddress) -> IPAddress | None:
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    text = str(value).strip()
    if "%" in text:  # fe80::1%eth0: the zone is not part of the address
        text = text.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _within(ip: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(ip.version == n.version and ip in n for n in networks)


def _unique(networks: list[IPNetwork]) -> list[IPNetwork]:
    seen: dict[str, IPNetwork] = {}
    for n in networks:
        seen.setdefault(str(n), n)
    return list(seen.values())
