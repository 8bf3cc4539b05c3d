"""What the workstation's network looks like right now: plain data, and thin collectors for it.

The checks judge these facts and never look at the system themselves, so they can be tested on
hand-built facts. A collector never raises: when a fact cannot be had (nft missing, no
permission, garbage output) it comes back as `Fact(None, why)`, and the check built on it says
`unknown` with that reason instead of passing.

`collect` is re-run often (every watcher poll, every netlink event), so it is cheap: one netlink
session, one `nft` run, one psutil pass, and the slow parts (DNS queries, TCP and UDP probes)
all in flight at once on non-blocking sockets in one selector loop, bounded by
`probe_timeout_ms`, while the other collectors run alongside. Families are IP versions (4, 6).
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import json
import os
import re
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from floor_agent.netlock.allowlist import Allowlist
from floor_agent.netlock.config import NetlockConfig

T = TypeVar("T")

AREAS = frozenset({"routes", "links", "addresses", "stats", "ruleset", "sockets", "dns",
                   "egress", "reach", "proxy"})
NOT_COLLECTED = "not collected"
NFT_TIMEOUT_S = 2.0

# rtm_type numbers (linux/rtnetlink.h)
ROUTE_TYPES = {0: "unspec", 1: "unicast", 2: "local", 3: "broadcast", 4: "anycast",
               5: "multicast", 6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw",
               10: "nat", 11: "xresolve"}
IFF_UP = 0x1
TABLE_LOCAL = 255
# SO_MARK of every probe and DNS socket netlock opens (`verify`, the watcher, any netlock
# process), read back over sock_diag so the sockets check can leave them out. Setting a mark
# needs CAP_NET_ADMIN or CAP_NET_RAW: an unprivileged process cannot pretend to be a probe.
# A value no routing rule or nftables rule is expected to match ("NLK!"): a mark that did
# would send the probes another way than the traffic they stand for.
PROBE_MARK = 0x4E4C4B21
# A TCP connection that ended between two polls, reported by the kernel as it was destroyed
# (sock_diag destroy multicast) after data flowed: Socket.status of such a fact.
CLOSED = "CLOSED"


@dataclass(frozen=True, slots=True)
class Fact(Generic[T]):
    """One area of facts: its value, or why it could not be collected (never both None)."""

    value: T | None
    error: str | None = None
    ms: float = 0.0  # time spent collecting it

    @property
    def ok(self) -> bool:
        return self.error is None and self.value is not None


@dataclass(frozen=True, slots=True)
class Route:
    """One route of any table. All tables and types are kept (the local table 255 too): the
    checks decide which lead out (only `unicast` ones do). Multipath routes come as one Route
    per next hop."""

    family: int  # 4 or 6
    dst: str  # CIDR, "0.0.0.0/0" / "::/0" for default
    gateway: str | None
    oif: str | None  # interface name (or "#index" when the link is unknown)
    table: int
    type: str  # unicast, local, broadcast, blackhole, unreachable, prohibit, ...

    @property
    def is_default(self) -> bool:
        return self.dst in ("0.0.0.0/0", "::/0")


@dataclass(frozen=True, slots=True)
class Link:
    name: str
    index: int
    kind: str | None  # IFLA_INFO_KIND: veth, dummy, wireguard, tun, bridge, ...; None = hardware
    up: bool
    mac: str | None
    wireless: bool
    driver: str | None  # /sys/class/net/NAME/device/driver
    bus: str | None = None  # usb, pci, ... (/sys/class/net/NAME/device/subsystem)


@dataclass(frozen=True, slots=True)
class Address:
    interface: str
    family: int
    address: str
    prefixlen: int | None


@dataclass(frozen=True, slots=True)
class InterfaceStat:
    name: str
    up: bool
    speed: int  # Mbit/s, 0 when unknown
    mtu: int


@dataclass(frozen=True, slots=True)
class Socket:
    proto: str  # tcp | udp
    family: int
    local: str  # "10.0.0.2:5123", "[fd00::2]:5123"
    remote: str | None  # None when not connected
    status: str  # ESTABLISHED, SYN_SENT, LISTEN, ... ; NONE for UDP; CLOSED (see CLOSED)
    pid: int | None
    process: str | None  # for a CLOSED one, its owner's uid ("uid 1000"): the pid is gone
    mark: int | None = None  # SO_MARK over sock_diag; None when read without sock_diag

    @property
    def remote_host(self) -> str | None:
        return None if self.remote is None else split_endpoint(self.remote)[0]

    @property
    def remote_port(self) -> int | None:
        return None if self.remote is None else split_endpoint(self.remote)[1]


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    """What one resolver said about one public name (A and AAAA asked together)."""

    resolver: str
    name: str
    answered: bool  # at least one address came back
    addresses: tuple[str, ...]
    error: str | None  # "A: NXDOMAIN; AAAA: timeout", ...
    transport: str = "udp"  # udp | tcp: a resolver may answer over one and not the other


@dataclass(frozen=True, slots=True)
class Probe:
    proto: str  # tcp | udp
    address: str
    port: int
    reached: bool
    detail: str  # connected, reply, refused, reset, unreachable, denied, timeout, error ...
    ms: float

    @property
    def target(self) -> str:
        return f"{self.proto} {join_endpoint(self.address, self.port)}"


@dataclass(frozen=True, slots=True)
class ProxySetting:
    source: str  # "env", "/etc/environment:3", "/etc/apt/apt.conf.d/01proxy:1"
    key: str  # https_proxy, Acquire::http::Proxy, ...
    value: str
    host: str | None  # None when the value names no host (unparseable)
    port: int | None


@dataclass(frozen=True, slots=True)
class Facts:
    routes: Fact[tuple[Route, ...]]
    links: Fact[tuple[Link, ...]]
    addresses: Fact[tuple[Address, ...]]
    stats: Fact[tuple[InterfaceStat, ...]]
    ruleset: Fact[dict[str, Any]]  # `nft -j list ruleset`, parsed
    sockets: Fact[tuple[Socket, ...]]
    dns: Fact[tuple[DnsAnswer, ...]]
    egress: Fact[tuple[Probe, ...]]  # to the canaries: must all fail
    reach: Fact[tuple[Probe, ...]]  # to the allowlist's must_reach ports: must all succeed
    proxy: Fact[tuple[ProxySetting, ...]]
    collected_at: float = 0.0  # time.time()
    ms: float = 0.0  # the whole collection

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Facts:
        """The inverse of as_dict (for facts collected elsewhere, e.g. in a namespace)."""
        kinds: dict[str, type | None] = {
            "routes": Route, "links": Link, "addresses": Address, "stats": InterfaceStat,
            "ruleset": None, "sockets": Socket, "dns": DnsAnswer, "egress": Probe,
            "reach": Probe, "proxy": ProxySetting}
        out: dict[str, Any] = {}
        for area, kind in kinds.items():
            raw = data[area]
            value = raw["value"]
            if value is not None and kind is not None:
                value = tuple(_from_dict(kind, item) for item in value)
            out[area] = Fact(value, raw["error"], raw.get("ms", 0.0))
        return cls(**out, collected_at=data.get("collected_at", 0.0), ms=data.get("ms", 0.0))


def _from_dict(kind: type, item: Mapping[str, Any]) -> Any:
    values = dict(item)
    for f in dataclasses.fields(kind):
        if isinstance(values.get(f.name), list):
            values[f.name] = tuple(values[f.name])
    return kind(**values)


def not_collected() -> Fact[Any]:
    return Fact(None, NOT_COLLECTED)


# --------------------------------------------------------------------------- endpoints


def join_endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_endpoint(text: str) -> tuple[str, int | None]:
    """"[::1]:53" -> ("::1", 53); "10.0.0.1:80" -> ("10.0.0.1", 80)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = text.rpartition(":")
        if not host:
            host, port = port, ""
    return host, int(port) if port.isdigit() else None


# --------------------------------------------------------------------------- collect


def collect(config: NetlockConfig, allowlist: Allowlist, areas: frozenset[str] | None = None,
            *, root: Path = Path("/"), environ: Mapping[str, str] | None = None,
            peers: SocketPeers | None = None) -> Facts:
    """The facts of the areas asked for (all by default); others are `Fact(None, "not
    collected")`. `root` and `environ` are where the proxy settings and sysfs are read (tests).
    With `peers`, sockets come from sock_diag without their processes (the fast poll)."""
    wanted = AREAS if areas is None else frozenset(areas)
    unknown = wanted - AREAS
    if unknown:
        raise ValueError(f"unknown fact areas: {', '.join(sorted(unknown))}")
    warm_up()  # before the clock and the probes start (a no-op once imported)
    started = time.perf_counter()
    collected_at = time.time()
    results: dict[str, Fact[Any]] = {area: not_collected() for area in AREAS}
    timeout = config.probe_timeout_ms / 1000

    # The network round trips go first, in a thread, so the local collectors overlap them.
    jobs: list[_Job] = []
    dns_error: str | None = None
    if "dns" in wanted:
        try:
            resolvers = read_nameservers(_under(root, config.resolv_conf))
            # over UDP one query a socket; over TCP (what `options use-vc`, a DNS-over-TCP
            # forwarder or a resolver that drops UDP leave open) A and AAAA on one connection
            jobs += [_DnsJob(r, name, (rdtype,), "udp") for r in resolvers
                     for name in config.public_names for rdtype in ("A", "AAAA")]
            jobs += [_DnsJob(r, name, ("A", "AAAA"), "tcp") for r in resolvers
                     for name in config.public_names]
        except OSError as e:
            dns_error = f"resolv.conf: {config.resolv_conf}: {e.strerror or e}"
    if "egress" in wanted:
        jobs += [_ProbeJob("egress", proto, c.address, port)
                 for c in config.canaries for proto, ports in (("tcp", c.tcp), ("udp", c.udp))
                 for port in ports]
    if "reach" in wanted:
        jobs += [_ProbeJob("reach", "tcp", str(a), port) for d in allowlist.destinations
                 for a in d.addresses() for port in d.must_reach]
    own_targets = {(j.address, j.port) for j in jobs}
    round_trips: dict[str, Fact[Any]] = {}
    thread = None
    if wanted & {"dns", "egress", "reach"}:
        thread = threading.Thread(target=_round_trips_into,
                                  args=(jobs, timeout, wanted, dns_error, round_trips),
                                  name="netlock-probes", daemon=True)
        thread.start()

    sys_root = _under(root, Path("/sys"))
    if wanted & {"routes", "links"}:
        routes, links = _timed2(lambda: collect_netlink(sys_root))
        if "routes" in wanted:
            results["routes"] = routes
        if "links" in wanted:
            results["links"] = links
    local = {"addresses": collect_addresses, "stats": collect_stats,
             "ruleset": collect_ruleset,
             "sockets": (lambda: collect_sockets_named(own_pid=os.getpid(),
                                                       own_targets=own_targets))
             if peers is None else peers.poll,
             "proxy": lambda: collect_proxy(root, os.environ if environ is None else environ)}
    for area, collector in local.items():
        if area in wanted:
            results[area] = _timed(area, collector)

    if thread is not None:
        thread.join(timeout + 5)
        for area in ("dns", "egress", "reach"):
            if area in wanted:
                results[area] = round_trips.get(area, Fact(None, f"{area}: probe loop hung"))
    return Facts(**results, collected_at=collected_at,
                 ms=(time.perf_counter() - started) * 1000)


def _under(root: Path, path: Path) -> Path:
    return path if root == Path("/") else root / path.relative_to("/")


def _timed(area: str, collector: Any) -> Fact[Any]:
    started = time.perf_counter()
    try:
        value = collector()
    except Exception as e:  # a collector never raises: the check says unknown, and why
        return Fact(None, f"{area}: {_why(e)}", (time.perf_counter() - started) * 1000)
    ms = (time.perf_counter() - started) * 1000
    if isinstance(value, Fact):
        return dataclasses.replace(value, ms=ms)
    return Fact(value, None, ms)


def _timed2(collector: Any) -> tuple[Fact[Any], Fact[Any]]:
    started = time.perf_counter()
    try:
        a, b = collector()
    except Exception as e:
        ms = (time.perf_counter() - started) * 1000
        return Fact(None, f"netlink: {_why(e)}", ms), Fact(None, f"netlink: {_why(e)}", ms)
    ms = (time.perf_counter() - started) * 1000
    return Fact(a, None, ms), Fact(b, None, ms)


def _why(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text if isinstance(e, OSError) else f"{type(e).__name__}: {text}"


# --------------------------------------------------------------------------- netlink


def collect_netlink(sys_root: Path = Path("/sys")) -> tuple[tuple[Route, ...], tuple[Link, ...]]:
    """Routes (IPv4 and IPv6, all tables) and links, in one netlink session."""
    from pyroute2 import IPRoute  # imported here: the pure checks must not need it

    with IPRoute() as ipr:
        link_msgs = list(ipr.get_links())
        route_msgs = list(ipr.get_routes(family=socket.AF_INET))
        route_msgs += list(ipr.get_routes(family=socket.AF_INET6))
    links = tuple(_link(msg, sys_root) for msg in link_msgs)
    names = {link.index: link.name for link in links}
    routes = tuple(r for msg in route_msgs for r in _routes(msg, names))
    return routes, links


def _link(msg: Any, sys_root: Path) -> Link:
    name = msg.get_attr("IFLA_IFNAME") or f"#{msg['index']}"
    info = msg.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    wireless, driver, bus = _sysfs(sys_root, name, msg["index"])
    return Link(name=name, index=msg["index"], kind=kind, up=bool(msg["flags"] & IFF_UP),
                mac=msg.get_attr("IFLA_ADDRESS"), wireless=wireless or kind == "wlan",
                driver=driver, bus=bus)


def _sysfs(sys_root: Path, name: str, index: int) -> tuple[bool, str | None, str | None]:
    """Wireless, driver and bus from sysfs. sysfs shows the network namespace it was mounted
    in, so a same-named interface elsewhere is ignored (its ifindex differs)."""
    base = sys_root / "class" / "net" / name
    try:
        if int((base / "ifindex").read_text().strip()) != index:
            return False, None, None
    except (OSError, ValueError):
        return False, None, None
    wireless = (base / "wireless").exists() or (base / "phy80211").exists()
    wireless = wireless or "DEVTYPE=wlan" in _read(base / "uevent").splitlines()
    return wireless, _link_target(base / "device" / "driver"), _link_target(
        base / "device" / "subsystem")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _link_target(path: Path) -> str | None:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None


def _routes(msg: Any, names: Mapping[int, str]) -> list[Route]:
    family = 4 if msg["family"] == socket.AF_INET else 6
    dst = msg.get_attr("RTA_DST") or ("0.0.0.0" if family == 4 else "::")
    cidr = f"{dst}/{msg['dst_len']}"
    table = msg.get_attr("RTA_TABLE") or msg["table"]
    rtype = ROUTE_TYPES.get(msg["type"], str(msg["type"]))
    hops = msg.get_attr("RTA_MULTIPATH")
    if hops:
        return [Route(family, cidr, _gateway(hop), _ifname(hop["oif"], names), table, rtype)
                for hop in hops]
    return [Route(family, cidr, _gateway(msg), _ifname(msg.get_attr("RTA_OIF"), names), table,
                  rtype)]


def _gateway(msg: Any) -> str | None:
    gateway = msg.get_attr("RTA_GATEWAY")
    if gateway:
        return str(gateway)
    via = msg.get_attr("RTA_VIA")  # IPv4 route through an IPv6 next hop
    if via:
        return str(via.get("addr") if isinstance(via, Mapping) else via)
    return None


def _ifname(index: int | None, names: Mapping[int, str]) -> str | None:
    if not index:
        return None
    return names.get(index, f"#{index}")


# --------------------------------------------------------------------------- psutil


def collect_addresses() -> tuple[Address, ...]:
    import psutil

    out = []
    for name, addrs in psutil.net_if_addrs().items():
        for a in addrs:
            if a.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            out.append(Address(name, 4 if a.family == socket.AF_INET else 6,
                               a.address.split("%", 1)[0], _prefixlen(a.netmask)))
    return tuple(out)


def _prefixlen(netmask: str | None) -> int | None:
    if not netmask:
        return None
    try:
        bits = int(ipaddress.ip_address(netmask))
    except ValueError:
        return None
    width = 32 if "." in netmask else 128
    ones = bin(bits).count("1")
    return ones if bits == ((1 << ones) - 1) << (width - ones) else None


def collect_stats() -> tuple[InterfaceStat, ...]:
    import psutil

    return tuple(InterfaceStat(name, s.isup, s.speed, s.mtu)
                 for name, s in psutil.net_if_stats().items())


def collect_sockets(own_pid: int | None = None,
                    own_targets: Iterable[tuple[str, int]] = ()) -> tuple[Socket, ...]:
    """TCP and UDP sockets over IPv4 and IPv6, minus this process's own probe sockets (which
    are in flight while the sockets are read)."""
    import psutil

    targets = set(own_targets)
    names: dict[int, str | None] = {}
    out = []
    for c in psutil.net_connections("inet"):
        proto = "tcp" if c.type == socket.SOCK_STREAM else "udp"
        family = 4 if c.family == socket.AF_INET else 6
        remote = None
        if c.raddr:
            if c.pid == own_pid and (_plain(c.raddr.ip), c.raddr.port) in targets:
                continue
            remote = join_endpoint(_plain(c.raddr.ip), c.raddr.port)
        local = join_endpoint(_plain(c.laddr.ip), c.laddr.port) if c.laddr else ""
        process = None
        if c.pid is not None and remote is not None:
            if c.pid not in names:
                try:
                    names[c.pid] = psutil.Process(c.pid).name()
                except psutil.Error:
                    names[c.pid] = None
            process = names[c.pid]
        out.append(Socket(proto, family, local, remote, c.status, c.pid, process))
    return tuple(out)


TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
              6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
              11: "CLOSING", 12: "NEW_SYN_RECV"}


def diag_socket(message: Mapping[str, Any], proto: str, family: int,
                mark: int | None = None) -> Socket:
    """One sock_diag answer as a Socket (pure). No pid or process: mapping sockets to
    processes means reading every process's fds, which the fast poll cannot afford; a full
    collection names them (`socket_owners`)."""
    state = int(message.get("idiag_state", 0))
    src, dst = _plain(str(message["idiag_src"])), _plain(str(message["idiag_dst"]))
    dport = int(message.get("idiag_dport", 0))
    connected = dport != 0
    status = TCP_STATES.get(state, f"STATE_{state}") if proto == "tcp" else "NONE"
    return Socket(proto, family, join_endpoint(src, int(message.get("idiag_sport", 0))),
                  join_endpoint(dst, dport) if connected else None, status, None, None,
                  mark)


def diag_mark(raw: Any) -> int | None:
    """INET_DIAG_MARK as pyroute2 gives it ("21:4b:4c:4e", the u32's bytes in host order);
    None when absent (the kernel sends it only to a reader with CAP_NET_ADMIN)."""
    if raw is None:
        return None
    if isinstance(raw, int):
        return raw
    try:
        return int.from_bytes(bytes.fromhex(str(raw).replace(":", "")), sys.byteorder)
    except ValueError:
        return None


# sock_diag state filter: every state but TIME_WAIT (6), left out by the kernel. Such a
# socket carries nothing any more (the sockets check skips it); a busy host holds thousands,
# and pyroute2 parses each (~0.3 ms): they made the dump most of a verification's time.
DIAG_STATES = 0xFFF & ~(1 << 6)


def _diag_dump(diag: Any) -> list[tuple[Socket, int]]:
    out = []
    for family, af in ((4, socket.AF_INET), (6, socket.AF_INET6)):
        for proto, number in (("tcp", socket.IPPROTO_TCP), ("udp", socket.IPPROTO_UDP)):
            for message in diag.get_sock_stats(family=af, protocol=number, states=DIAG_STATES):
                mark = diag_mark(message.get_attr("INET_DIAG_MARK"))
                out.append((diag_socket(message, proto, family, mark),
                            int(message.get("idiag_inode", 0))))
    return out


def socket_owners(inodes: Iterable[int], proc: Path = Path("/proc")
                  ) -> dict[int, tuple[int, str | None]]:
    """inode -> (pid, command name) of the processes holding these sockets (one pass over
    /proc/*/fd, as psutil does; a process that exits meanwhile is skipped)."""
    wanted = {f"socket:[{i}]": i for i in inodes if i}
    owners: dict[int, tuple[int, str | None]] = {}
    if not wanted:
        return owners
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target in wanted and wanted[target] not in owners:
                owners[wanted[target]] = (int(entry.name), _read(entry / "comm").strip() or None)
    return owners


def warm_up() -> None:
    """Import what the collectors import lazily, before a collection whose probes have a
    deadline: the first collection in a process imported pyroute2's sock_diag and dnspython
    on threads while the probes ran, and the allowed server's 50 ms probe timed out."""
    import dns.exception  # noqa: F401
    import dns.message  # noqa: F401
    import dns.rcode  # noqa: F401
    import dns.rdatatype  # noqa: F401
    import psutil  # noqa: F401
    from pyroute2 import DiagSocket, IPRoute  # noqa: F401


def collect_sockets_named(own_pid: int | None = None,
                          own_targets: Iterable[tuple[str, int]] = ()) -> tuple[Socket, ...]:
    """The full collection: every socket over sock_diag with its mark (so probe sockets of
    any netlock process can be told), the connected ones named by their process. Without
    sock_diag, psutil (no marks: only this process's probes are left out)."""
    try:
        from pyroute2 import DiagSocket

        diag = DiagSocket()
        try:
            diag.bind()
            dumped = _diag_dump(diag)
        finally:
            diag.close()
    except Exception:  # no sock_diag here: psutil reads /proc/net instead
        return collect_sockets(own_pid, own_targets)
    targets = set(own_targets)
    # marked sockets are netlock's probes (or root's): naming them would walk every process's
    # file descriptors while the probes of the same collection wait for their deadline
    owners = socket_owners(inode for s, inode in dumped
                           if s.remote is not None and s.mark != PROBE_MARK)
    out = []
    for s, inode in dumped:
        pid, process = owners.get(inode, (None, None))
        if (pid is not None and pid == own_pid and s.remote is not None
                and (s.remote_host, s.remote_port) in targets):
            continue
        out.append(dataclasses.replace(s, pid=pid, process=process))
    return tuple(out)


# sock_diag destroy multicast (linux/sock_diag.h): TCP sockets of this namespace as the kernel
# destroys them, with their addresses, owner uid and tcp_info. Needs CAP_NET_ADMIN.
NETLINK_SOCK_DIAG = 4
SKNLGRP_INET_TCP_DESTROY, SKNLGRP_INET6_TCP_DESTROY = 1, 3
INET_DIAG_INFO = 2
_DIAG_MSG = struct.Struct("=BBBB2s2s16s16sI8sIIIII")  # struct inet_diag_msg, 72 bytes
_TCPI_BYTES = struct.Struct("=QQ")  # tcp_info: bytes_acked, bytes_received
_TCPI_BYTES_AT = 120


def parse_destroyed(data: bytes) -> list[Socket]:
    """The TCP connections in a batch of destroy notifications that were established (the
    peer acknowledged our SYN or sent something): a refused or dropped connect carried
    nothing and is not a connection. Pure; status CLOSED, the owner's uid as `process`."""
    out = []
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16 or offset + length > len(data):
            break
        body = data[offset + 16:offset + length]
        offset += (length + 3) & ~3
        if kind != 20 or len(body) < _DIAG_MSG.size:  # SOCK_DIAG_BY_FAMILY
            continue
        (family, _, _, _, sport, dport, src, dst, _, _, _, _, _, uid,
         _) = _DIAG_MSG.unpack_from(body)
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        info = _diag_attr(body[_DIAG_MSG.size:], INET_DIAG_INFO)
        if info is None or len(info) < _TCPI_BYTES_AT + _TCPI_BYTES.size:
            continue
        acked, received = _TCPI_BYTES.unpack_from(info, _TCPI_BYTES_AT)
        remote_port = int.from_bytes(dport, "big")
        if not (acked or received) or not remote_port:
            continue
        size = 4 if family == socket.AF_INET else 16
        local = join_endpoint(_plain(socket.inet_ntop(family, src[:size])),
                              int.from_bytes(sport, "big"))
        remote = join_endpoint(_plain(socket.inet_ntop(family, dst[:size])), remote_port)
        out.append(Socket("tcp", 4 if family == socket.AF_INET else 6, local, remote, CLOSED,
                          None, f"uid {uid}"))
    return out


def _diag_attr(attrs: bytes, wanted: int) -> bytes | None:
    offset = 0
    while offset + 4 <= len(attrs):
        length, kind = struct.unpack_from("=HH", attrs, offset)
        if length < 4:
            return None
        if kind & 0x3FFF == wanted:
            return attrs[offset + 4:offset + length]
        offset += (length + 3) & ~3
    return None


class DestroyedConnections:
    """TCP connections of this namespace reported as the kernel destroys them: a connection
    shorter than the socket poll (a DNS-over-TCP query, a quick HTTPS request) is still seen.
    Only TCP: a UDP socket's end says nothing about whether anything answered."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self._sock.bind((0, (1 << (SKNLGRP_INET_TCP_DESTROY - 1))
                             | (1 << (SKNLGRP_INET6_TCP_DESTROY - 1))))
        except OSError:
            self._sock.close()
            raise
        self._sock.setblocking(False)

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self) -> list[Socket]:
        """Everything queued now (never blocks). A lost batch (ENOBUFS: the queue overflowed)
        is reported as an OSError: the caller must say that it may have missed some."""
        out: list[Socket] = []
        while True:
            try:
                data = self._sock.recv(1 << 16)
            except BlockingIOError:
                return out
            out += parse_destroyed(data)

    def close(self) -> None:
        self._sock.close()


class SocketPeers:
    """Every TCP/UDP socket of this network namespace with its peer, over sock_diag netlink:
    the watcher's fast poll (about 2 ms whatever the number of processes, on a socket kept
    open: pyroute2 takes ~10 ms to open one; psutil needs ~10 ms and grows with the number of
    processes; /proc/net/tcp walks the whole hash table on every read)."""

    def __init__(self) -> None:
        from pyroute2 import DiagSocket

        self._diag = DiagSocket()
        self._diag.bind()

    def poll(self) -> tuple[Socket, ...]:
        return tuple(s for s, _ in _diag_dump(self._diag))

    def close(self) -> None:
        self._diag.close()


def _plain(ip: str) -> str:
    return ip.split("%", 1)[0]


# --------------------------------------------------------------------------- nftables


def collect_ruleset() -> Fact[dict[str, Any]]:
    """`nft -j list ruleset`, parsed; any failure is the Fact's error."""
    nft = shutil.which("nft")
    if nft is None:
        return Fact(None, "nft: command not found")
    try:
        proc = subprocess.run([nft, "-j", "list", "ruleset"], capture_output=True,
                              timeout=NFT_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return Fact(None, f"nft: no answer within {NFT_TIMEOUT_S:g} s")
    except OSError as e:
        return Fact(None, f"nft: {e}")
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        return Fact(None, f"nft: exit {proc.returncode}: {err[0] if err else 'no message'}")
    try:
        data = json.loads(proc.stdout)
    except ValueError as e:
        return Fact(None, f"nft: output is not JSON ({e})")
    if not isinstance(data, dict) or not isinstance(data.get("nftables"), list):
        return Fact(None, "nft: output has no 'nftables' list")
    return Fact(data)


# --------------------------------------------------------------------------- proxy

PROXY_KEYS = re.compile(r"^(?:http|https|ftp|all|socks|rsync)_proxy$", re.I)
SHELL_PROXY = re.compile(r"^\s*(?:export\s+)?([A-Za-z]+_proxy)\s*=\s*(\S+)", re.I)
APT_PROXY = re.compile(r"(Acquire::[\w:.-]*?Proxy(?:::[\w.-]+)?|\bProxy)\s+\"([^\"]*)\"", re.I)
NO_PROXY_VALUES = {"", "direct", "false", "none"}


def collect_proxy(root: Path = Path("/"),
                  environ: Mapping[str, str] | None = None) -> tuple[ProxySetting, ...]:
    """Proxy settings from this process's environment, /etc/environment, /etc/profile.d/* and
    apt's configuration. Unreadable files are skipped: they configure nobody either."""
    env = os.environ if environ is None else environ
    out = [_setting("env", k, v) for k, v in sorted(env.items()) if PROXY_KEYS.match(k)]
    etc = _under(root, Path("/etc"))
    shell_files = [etc / "environment"] + _files(etc / "profile.d")
    for path in shell_files:
        for lineno, line in _lines(path):
            m = SHELL_PROXY.match(line)
            if m and PROXY_KEYS.match(m.group(1)):
                out.append(_setting(f"{_shown(path, root)}:{lineno}", m.group(1),
                                    m.group(2).strip("'\";")))
    for path in [etc / "apt" / "apt.conf"] + _files(etc / "apt" / "apt.conf.d"):
        for lineno, line in _lines(path):
            if line.lstrip().startswith(("//", "#")):
                continue
            for m in APT_PROXY.finditer(line):
                out.append(_setting(f"{_shown(path, root)}:{lineno}", m.group(1), m.group(2)))
    return tuple(s for s in out if s.value.strip().lower() not in NO_PROXY_VALUES)


def _files(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if p.is_file())
    except OSError:
        return []


def _lines(path: Path) -> list[tuple[int, str]]:
    try:
        return list(enumerate(path.read_text(errors="replace").splitlines(), 1))
    except OSError:
        return []


def _shown(path: Path, root: Path) -> str:
    return str(path) if root == Path("/") else "/" + str(path.relative_to(root))


def _setting(source: str, key: str, value: str) -> ProxySetting:
    host, port = _proxy_host(value)
    return ProxySetting(source, key, value, host, port)


def _proxy_host(value: str) -> tuple[str | None, int | None]:
    text = value.strip()
    if not text:
        return None, None
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        return parts.hostname, parts.port
    except ValueError:
        return None, None


# --------------------------------------------------------------------------- DNS and probes


def read_nameservers(path: Path) -> list[str]:
    """The `nameserver` lines of a resolv.conf (port 53); none means 127.0.0.1, as in glibc."""
    servers = []
    for line in path.read_text(errors="replace").splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            servers.append(fields[1])
    return servers or ["127.0.0.1"]


class _Job:
    """One socket in flight in the selector loop."""

    address: str
    port: int
    sock: socket.socket | None = None
    sockaddr: Any = None
    done: bool = False
    detail: str = "timeout"
    ms: float = 0.0

    def finish(self, detail: str, started: float) -> None:
        self.done, self.detail = True, detail
        self.ms = (time.perf_counter() - started) * 1000

    def open(self, kind: int) -> socket.socket:
        info = socket.getaddrinfo(self.address, self.port, type=kind,
                                  flags=socket.AI_NUMERICHOST)[0]
        self.sock = socket.socket(info[0], kind)
        self.sock.setblocking(False)
        mark_probe(self.sock)
        self.sockaddr = info[4]
        return self.sock


def mark_probe(sock: socket.socket) -> bool:
    """Give a probe socket netlock's mark (PROBE_MARK), so a watcher in any netlock process
    leaves it out of `sockets.allowlist`. Without the privilege it stays unmarked, and is then
    counted like any other socket (the safe way round)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, PROBE_MARK)
    except OSError:
        return False
    return True


class _ProbeJob(_Job):
    def __init__(self, area: str, proto: str, address: str, port: int) -> None:
        self.area, self.proto, self.address, self.port = area, proto, address, port

    def probe(self) -> Probe:
        reached = self.detail in ("connected", "reply")
        return Probe(self.proto, self.address, self.port, reached, self.detail,
                     round(self.ms, 2))


class _DnsJob(_Job):
    """Queries for one name to one resolver: one type over UDP, or several over one TCP
    connection (each length-prefixed, RFC 1035 4.2.2)."""

    def __init__(self, resolver: str, name: str, rdtypes: tuple[str, ...],
                 transport: str) -> None:
        self.resolver, self.name, self.rdtypes, self.transport = resolver, name, rdtypes, transport
        self.address, self.port = resolver, 53
        self.addresses: dict[str, list[str]] = {}
        self.details: dict[str, str] = {}  # per type, once answered
        self.queries: list[Any] = []
        self.sent = False
        self.buffer = b""

    def make_queries(self) -> bytes:
        import dns.message

        self.queries = [dns.message.make_query(self.name, t) for t in self.rdtypes]
        wires = [q.to_wire() for q in self.queries]
        if self.transport == "udp":
            return wires[0]
        return b"".join(len(w).to_bytes(2, "big") + w for w in wires)

    def take(self, data: bytes, started: float) -> None:
        """One answer (UDP datagram or TCP message): recorded for the query it answers; the
        job is done when every type has its answer."""
        import dns.exception
        import dns.message
        import dns.rcode
        import dns.rdatatype

        try:
            response = dns.message.from_wire(data)
        except dns.exception.DNSException as e:
            self.finish(f"garbage answer ({type(e).__name__})", started)
            return
        for query, rdtype in zip(self.queries, self.rdtypes, strict=True):
            if rdtype in self.details or not query.is_response(response):
                continue
            found = [rd.address for rrset in response.answer
                     if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) for rd in rrset]
            self.addresses[rdtype] = found
            rcode = dns.rcode.to_text(response.rcode())
            self.details[rdtype] = "answer" if found else (
                "no address" if rcode == "NOERROR" else rcode)
            break  # not ours otherwise: keep waiting
        if len(self.details) == len(self.rdtypes):
            self.finish("answer", started)

    def detail_of(self, rdtype: str) -> str:
        return self.details.get(rdtype, self.detail)


# errno -> probe detail
ERRNO_DETAIL = {
    errno.ECONNREFUSED: "refused", errno.ECONNRESET: "reset",
    errno.EHOSTUNREACH: "unreachable", errno.ENETUNREACH: "unreachable",
    errno.EHOSTDOWN: "unreachable", errno.ENETDOWN: "unreachable",
    errno.EADDRNOTAVAIL: "unreachable", errno.EPERM: "denied", errno.EACCES: "denied",
    errno.ETIMEDOUT: "timeout",
}


def _detail(err: int) -> str:
    return ERRNO_DETAIL.get(err, f"error {errno.errorcode.get(err, err)}")


def udp_payload(port: int) -> bytes:
    """A datagram a real service on that port answers, so "no reply" means "blocked" more
    often than "ignored our garbage": DNS query, QUIC version probe, NTP request."""
    if port == 53:
        return bytes.fromhex("4e4c0100000100000000000007" "6578616d706c6503636f6d0000010001")
    if port == 443:  # QUIC long header, reserved version: servers must answer with a VN
        header = bytes([0xC0]) + bytes.fromhex("1a2a3a4a") + b"\x08" + b"netlock!" + b"\x00"
        return header + bytes(1200 - len(header))
    if port == 123:
        return b"\x1b" + bytes(47)
    return b"floor-netlock probe\n"


def run_round_trips(jobs: list[_Job], timeout: float) -> None:
    """All TCP connects, UDP probes and DNS queries at once, one selector, one deadline."""

    started = time.perf_counter()
    deadline = started + timeout
    sel = selectors.DefaultSelector()
    try:
        for job in jobs:
            try:
                if isinstance(job, _ProbeJob) and job.proto == "tcp":
                    sock = job.open(socket.SOCK_STREAM)
                    err = sock.connect_ex(job.sockaddr)
                    if err == 0:
                        job.finish("connected", started)
                    elif err == errno.EINPROGRESS:
                        sel.register(sock, selectors.EVENT_WRITE, job)
                    else:
                        job.finish(_detail(err), started)
                    continue
                if isinstance(job, _DnsJob) and job.transport == "tcp":
                    sock = job.open(socket.SOCK_STREAM)
                    err = sock.connect_ex(job.sockaddr)
                    if err in (0, errno.EINPROGRESS):
                        sel.register(sock, selectors.EVENT_WRITE, job)
                    else:
                        job.finish(_detail(err), started)
                    continue
                sock = job.open(socket.SOCK_DGRAM)
                sock.connect(job.sockaddr)
                if isinstance(job, _DnsJob):
                    sock.send(job.make_queries())
                else:
                    sock.send(udp_payload(job.port))
                sel.register(sock, selectors.EVENT_READ, job)
            except socket.gaierror:
                job.finish("bad address", started)
            except OSError as e:
                job.finish(_detail(e.errno) if e.errno else f"error {e}", started)
        while sel.get_map():
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            for key, _ in sel.select(remaining):
                job = key.data
                try:
                    _on_ready(job, started)
                except OSError as e:
                    job.finish(_detail(e.errno) if e.errno else f"error {e}", started)
                if job.done:
                    sel.unregister(key.fileobj)
                elif key.events == selectors.EVENT_WRITE and getattr(job, "sent", False):
                    sel.modify(key.fileobj, selectors.EVENT_READ, job)  # TCP query sent
        for key in list(sel.get_map().values()):
            key.data.finish("timeout", started)
    finally:
        sel.close()
        for job in jobs:
            if job.sock is not None:
                job.sock.close()


def _on_ready(job: _Job, started: float) -> None:
    assert job.sock is not None
    if isinstance(job, _ProbeJob) and job.proto == "tcp":
        err = job.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        job.finish("connected" if err == 0 else _detail(err), started)
        return
    if isinstance(job, _DnsJob) and job.transport == "tcp":
        _on_ready_dns_tcp(job, started)
        return
    data = job.sock.recv(65535)  # raises ECONNREFUSED etc. on an ICMP error
    if isinstance(job, _ProbeJob):
        job.finish("reply", started)
        return
    assert isinstance(job, _DnsJob)
    job.take(data, started)


def _on_ready_dns_tcp(job: _DnsJob, started: float) -> None:
    """Connected: send the queries; readable: read what came, take each whole message."""
    assert job.sock is not None
    if not job.sent:
        err = job.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            job.finish(_detail(err), started)
            return
        job.sock.sendall(job.make_queries())  # two small messages: the buffer takes them
        job.sent = True
        return
    data = job.sock.recv(65535)
    if not data:
        job.finish("closed without an answer", started)
        return
    job.buffer += data
    while len(job.buffer) >= 2 and not job.done:
        size = int.from_bytes(job.buffer[:2], "big")
        if len(job.buffer) < 2 + size:
            break
        message, job.buffer = job.buffer[2:2 + size], job.buffer[2 + size:]
        job.take(message, started)


def _round_trips_into(jobs: list[_Job], timeout: float, wanted: frozenset[str],
                      dns_error: str | None, out: dict[str, Fact[Any]]) -> None:
    started = time.perf_counter()
    try:
        run_round_trips(jobs, timeout)
    except Exception as e:
        ms = (time.perf_counter() - started) * 1000
        for area in ("dns", "egress", "reach"):
            out[area] = Fact(None, f"{area}: {_why(e)}", ms)
        return
    ms = (time.perf_counter() - started) * 1000
    if "dns" in wanted:
        out["dns"] = Fact(None, dns_error, ms) if dns_error else Fact(_dns_answers(jobs), None, ms)
    for area in ("egress", "reach"):
        if area in wanted:
            out[area] = Fact(tuple(j.probe() for j in jobs
                                   if isinstance(j, _ProbeJob) and j.area == area), None, ms)


def _dns_answers(jobs: list[_Job]) -> tuple[DnsAnswer, ...]:
    grouped: dict[tuple[str, str, str], list[_DnsJob]] = {}
    for job in jobs:
        if isinstance(job, _DnsJob):
            grouped.setdefault((job.resolver, job.name, job.transport), []).append(job)
    out = []
    for (resolver, name, transport), group in grouped.items():
        addresses = tuple(dict.fromkeys(a for j in group for t in j.rdtypes
                                        for a in j.addresses.get(t, ())))
        errors = "; ".join(f"{t}: {j.detail_of(t)}" for j in group for t in j.rdtypes
                           if not j.addresses.get(t))
        out.append(DnsAnswer(resolver, name, bool(addresses), addresses, errors or None,
                             transport))
    return tuple(out)


__all__ = [
    "AREAS", "Address", "DnsAnswer", "Fact", "Facts", "InterfaceStat", "Link", "Probe",
    "ProxySetting", "Route", "Socket", "collect", "collect_addresses", "collect_netlink",
    "collect_proxy", "collect_ruleset", "collect_sockets", "collect_stats", "join_endpoint",
    "read_nameservers", "run_round_trips", "split_endpoint", "udp_payload",
]
