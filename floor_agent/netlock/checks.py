"""Judge the facts: is this workstation cut off from the internet? Pure functions, no I/O.

Each check has a stable id (the watcher, the tests and the dashboard key on it), says pass, fail
or unknown, and carries the evidence an admin needs to act: the route, the chain, the socket,
the resolver and its answer. A fact that could not be collected makes its checks `unknown`
with the collector's reason, never `pass`: "I could not look" is not "all is well".
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from floor_agent.netlock import ruleset as nft_meaning
from floor_agent.netlock.allowlist import Allowlist
from floor_agent.netlock.config import NetlockConfig
from floor_agent.netlock.facts import (
    CLOSED,
    PROBE_MARK,
    DnsAnswer,
    Fact,
    Facts,
    Link,
    Probe,
    Route,
    Socket,
    join_endpoint,
)

# A check's outcome, and what its failing (or being unknown) means: these strings are what the
# netlock events carry, so they are Literal types (checked by mypy), not a runtime enum.
Status = Literal["pass", "fail", "unknown"]
Severity = Literal["critical", "warning"]
PASS: Final = "pass"
FAIL: Final = "fail"
UNKNOWN: Final = "unknown"
CRITICAL: Final = "critical"
WARNING: Final = "warning"

CHECK_IDS = (
    "routes.default", "routes.allowlist", "firewall.input", "firewall.forward",
    "firewall.output", "firewall.table", "dns.public_names", "probes.egress",
    "probes.allowed", "interfaces.wireless", "interfaces.unexpected", "sockets.allowlist",
    "proxy.settings",
)

# Only these route types send packets somewhere; blackhole/unreachable/prohibit/local/... don't.
LEADING_OUT = frozenset({"unicast"})
# Families whose hooks see this host's own IP traffic, and which IP versions each covers.
HOOK_FAMILIES = {"inet": (4, 6), "ip": (4,), "ip6": (6,)}
# Statements that do not make a rule conditional (a rule of only these + accept accepts all).
NON_MATCHING = frozenset({"counter", "log", "accept", "mangle", "notrack"})
# Link kinds that are tunnels out, whatever their name (a WireGuard link renamed eth9).
TUNNEL_KINDS = frozenset({"wireguard", "tun", "tap", "ipip", "ip6tnl", "gre", "gretap",
                          "ip6gre", "ip6gretap", "sit", "vxlan", "geneve", "l2tp", "ppp",
                          "vti", "vti6", "xfrm", "openvpn"})
# Drivers of phone tethering and mobile broadband, whatever the interface is called.
TETHERING_DRIVERS = frozenset({"rndis_host", "cdc_ether", "cdc_ncm", "cdc_eem", "cdc_subset",
                               "cdc_mbim", "qmi_wwan", "ipheth", "huawei_cdc_ncm", "r8153_ecm",
                               "rndis_wlan", "sierra_net", "option"})
# TCP states in which data can flow (TIME_WAIT is over, LISTEN has no peer).
LIVE_TCP = frozenset({"ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",
                      "CLOSE_WAIT", "LAST_ACK", "CLOSING"})
TABLE_NAMES = {254: "main", 255: "local", 253: "default"}


@dataclass(frozen=True, slots=True)
class Verdict:
    id: str
    verdict: Status
    severity: Severity  # what a fail (or unknown) of this check means
    summary: str
    evidence: tuple[str, ...] = ()
    # A stable identity per evidence line, for lines that carry changing detail (a probe's
    # time, a socket's process known only in a full collection): the watcher compares these
    # between rounds to tell a new failing fact from the same one seen again. Empty: each line
    # is its own identity.
    keys: tuple[str, ...] = ()

    def items(self) -> dict[str, str]:
        """Evidence by identity (see `keys`)."""
        if len(self.keys) == len(self.evidence):
            return dict(zip(self.keys, self.evidence, strict=True))
        return {line: line for line in self.evidence}

    @property
    def ok(self) -> bool:
        return self.verdict == PASS


def _unknown(check_id: str, severity: Severity, *facts: Fact[Any]) -> Verdict | None:
    """Unknown when any fact the check needs is missing, with the collectors' reasons."""
    errors = tuple(f.error or "no value" for f in facts if not f.ok)
    if not errors:
        return None
    return Verdict(check_id, UNKNOWN, severity, "could not collect: " + "; ".join(errors),
                   errors)


def _verdict(check_id: str, severity: Severity, bad: Sequence[str], good: str, bad_summary: str,
             context: Iterable[str] = (), keys: Sequence[str] = ()) -> Verdict:
    if bad:
        return Verdict(check_id, FAIL, severity, bad_summary, tuple(bad), tuple(keys))
    return Verdict(check_id, PASS, severity, good, tuple(context))


# --------------------------------------------------------------------------- routes


def describe_route(route: Route) -> str:
    dst = "default" if route.is_default else route.dst
    text = f"IPv{route.family} {dst}"
    if route.gateway:
        text += f" via {route.gateway}"
    if route.oif:
        text += f" dev {route.oif}"
    text += f" table {TABLE_NAMES.get(route.table, route.table)}"
    if route.type != "unicast":
        text += f" type {route.type}"
    return text


def _leading_out(routes: Iterable[Route]) -> list[Route]:
    return [r for r in routes if r.type in LEADING_OUT]


def check_routes_default(facts: Facts, config: NetlockConfig, allowlist: Allowlist) -> Verdict:
    """A default route is tolerated only through an allowed gateway (in any routing table:
    a policy rule can select any of them)."""
    cid = "routes.default"
    if (u := _unknown(cid, CRITICAL, facts.routes)) is not None:
        return u
    allowed = {str(g) for g in allowlist.gateways}
    defaults = [r for r in _leading_out(facts.routes.value or ()) if r.is_default]
    bad, context = [], []
    for r in defaults:
        if r.gateway is None:
            bad.append(describe_route(r) + " (no gateway)")
        elif _ip_text(r.gateway) not in allowed:
            bad.append(describe_route(r) + " (gateway not in netlock.gateways)")
        else:
            context.append(describe_route(r) + " (allowed gateway)")
    good = "no default route" if not defaults else "default routes only via allowed gateways"
    return _verdict(cid, CRITICAL, bad, good,
                    f"{len(bad)} default route(s) not through an allowed gateway", context)


def check_routes_allowlist(facts: Facts, config: NetlockConfig,
                           allowlist: Allowlist) -> Verdict:
    """Every other route leads into the allowlist (its networks, destinations, link-local).
    Default routes are routes.default's business."""
    cid = "routes.allowlist"
    if (u := _unknown(cid, CRITICAL, facts.routes)) is not None:
        return u
    bad = [describe_route(r) for r in _leading_out(facts.routes.value or ())
           if not r.is_default and not allowlist.covers_network(r.dst)]
    return _verdict(cid, CRITICAL, bad, "all routes lead into the allowlist",
                    f"{len(bad)} route(s) to networks outside the allowlist")


def _ip_text(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.split("%", 1)[0]))
    except ValueError:
        return text


# --------------------------------------------------------------------------- firewall


def chains_of(ruleset: dict[str, Any]) -> list[nft_meaning.Chain]:
    """The chains of `nft -j list ruleset` output with their rules, in ruleset order (as the
    evaluator reads them: one parser)."""
    return list(nft_meaning.parse(ruleset).chains.values())


def tables_of(ruleset: dict[str, Any]) -> list[tuple[str, str]]:
    items = ruleset.get("nftables", []) if isinstance(ruleset, dict) else []
    return [(i["table"].get("family", "?"), i["table"].get("name", "?")) for i in items
            if isinstance(i, dict) and isinstance(i.get("table"), dict)]


def unconditional_accept(expr: Sequence[dict[str, Any]]) -> bool:
    """A rule that accepts every packet reaching it (`accept`, `counter accept`, ...)."""
    return (bool(expr) and "accept" in expr[-1]
            and all(len(e) == 1 and next(iter(e)) in NON_MATCHING for e in expr))


@dataclass(frozen=True, slots=True)
class HookJudgement:
    """What the ruleset evaluator found at one hook: the IP versions through which new
    connections outside the allowlist may pass, and the evidence naming the rules."""

    hook: str
    open_versions: tuple[int, ...]
    bad: tuple[str, ...]

    @property
    def closed(self) -> bool:
        return not self.open_versions


def judge_hook(data: dict[str, Any] | nft_meaning.Ruleset, hook: str, allowlist: Allowlist,
               limit: int = 20) -> HookJudgement:
    """Evaluate the ruleset's meaning at a hook for IPv4 and IPv6 (floor_agent.netlock.ruleset)
    and compare the accepted region with the allowlist. Evidence: rules that accept a match-free
    packet first (they defeat the policy), versions with no drop-policy chain, then each rule
    (or policy) through which something outside the allowlist passes, then what the evaluator
    could not read (which may make the fail a false alarm, never a pass a false one)."""
    rs = data if isinstance(data, nft_meaning.Ruleset) else nft_meaning.parse(data)
    exprs = {(c.family, c.table, c.name, r.handle): r.expr
             for c in rs.chains.values() for r in c.rules}
    defeated: dict[str, None] = {}
    no_drop: list[str] = []
    lines: list[str] = []
    notes: dict[str, None] = {}
    open_versions = []
    for version in (4, 6):
        result = nft_meaning.evaluate(rs, hook, version)
        outside = nft_meaning.outside(result, allowlist)
        if not outside:
            continue
        open_versions.append(version)
        notes.update(dict.fromkeys(result.notes))
        if not any(c.type == "filter" and c.policy == "drop" for c in result.chains):
            no_drop.append(f"IPv{version} {hook}: no drop-policy filter chain in an inet or "
                           f"ip{'' if version == 4 else '6'} table")
        groups: dict[tuple[nft_meaning.Source, ...], list[nft_meaning.Box]] = {}
        for box in outside:
            groups.setdefault(box.via, []).append(box)
        for via, boxes in groups.items():
            for src in via:
                chain = rs.chains.get((src.family, src.table, src.chain))
                if (chain is not None and chain.hook == hook and chain.policy == "drop"
                        and unconditional_accept(exprs.get((src.family, src.table, src.chain,
                                                            src.handle), ()))):
                    defeated[f"{chain.describe()}: unconditional accept rule defeats the "
                             "drop policy"] = None
            path = " then ".join(s.describe() for s in via) or "no base chain at this hook"
            shown = "; ".join(nft_meaning.describe_box(b, result) for b in boxes[:3])
            more = f" (and {len(boxes) - 3} more regions)" if len(boxes) > 3 else ""
            lines.append(f"IPv{version} {hook}: {path}: lets through new {shown}{more}, "
                         "outside the allowlist")
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more"]
    bad = [*defeated, *no_drop, *lines,
           *(f"evaluator: {n}" for n in list(notes)[:limit])]
    return HookJudgement(hook, tuple(open_versions), tuple(bad))


def check_firewall_hook(hook: str) -> Callable[[Facts, NetlockConfig, Allowlist], Verdict]:
    def check(facts: Facts, config: NetlockConfig, allowlist: Allowlist) -> Verdict:
        cid = f"firewall.{hook}"
        if (u := _unknown(cid, CRITICAL, facts.ruleset)) is not None:
            return u
        data = facts.ruleset.value or {}
        judged = judge_hook(data, hook, allowlist)
        others = [c.describe() + ("" if c.family in HOOK_FAMILIES else
                                  " (does not filter this host's IP traffic)")
                  for c in chains_of(data) if c.hook == hook]
        if not judged.closed:
            summary = (f"{hook} hook open for "
                       f"{' and '.join(f'IPv{v}' for v in judged.open_versions)}")
            return Verdict(cid, FAIL, CRITICAL, summary,
                           judged.bad + tuple(f"seen: {c}" for c in others))
        return Verdict(cid, PASS, CRITICAL, f"{hook} hook drops by default for IPv4 and IPv6",
                       tuple(others))
    check.__name__ = f"check_firewall_{hook}"
    check.__doc__ = (f"What the {hook} hook accepts for new connections (every base chain of "
                     f"the inet/ip/ip6 tables, evaluated by netlock.ruleset) lies inside the "
                     f"allowlist, for IPv4 and IPv6; bridge/arp/netdev chains do not count.")
    return check


check_firewall_input = check_firewall_hook("input")
check_firewall_forward = check_firewall_hook("forward")
check_firewall_output = check_firewall_hook("output")


def check_firewall_table(facts: Facts, config: NetlockConfig, allowlist: Allowlist) -> Verdict:
    """netlock's own table is loaded. Missing while others' drop chains still close every hook
    is a warning (nothing leaks, but netlock is not enforcing); otherwise critical."""
    cid = "firewall.table"
    if (u := _unknown(cid, CRITICAL, facts.ruleset)) is not None:
        return u
    ruleset = facts.ruleset.value or {}
    tables = tables_of(ruleset)
    present = [f"{f} {n}" for f, n in tables]
    if ("inet", config.table) in tables:
        return Verdict(cid, PASS, CRITICAL, f"table inet {config.table} is loaded",
                       tuple(present))
    parsed = nft_meaning.parse(ruleset)
    closed = all(judge_hook(parsed, hook, allowlist).closed
                 for hook in ("input", "forward", "output"))
    evidence = (f"table inet {config.table} not loaded",
                "tables: " + (", ".join(present) or "none"))
    if closed:
        return Verdict(cid, FAIL, WARNING, f"table inet {config.table} is not loaded (other "
                       "drop chains still close every hook)", evidence)
    return Verdict(cid, FAIL, CRITICAL, f"table inet {config.table} is not loaded", evidence)


# --------------------------------------------------------------------------- DNS


def check_dns_public_names(facts: Facts, config: NetlockConfig,
                           allowlist: Allowlist) -> Verdict:
    """Public names do not resolve through the configured resolvers, asked over UDP and over
    TCP (`options use-vc`, or a resolver reachable only over TCP). An answer of only
    0.0.0.0/:: is a sinkhole, not a resolution."""
    cid = "dns.public_names"
    if (u := _unknown(cid, CRITICAL, facts.dns)) is not None:
        return u
    answers = facts.dns.value or ()
    if not answers:
        return Verdict(cid, UNKNOWN, CRITICAL, "no public names configured to test",
                       ("netlock.public_names is empty",))
    bad, context = [], []
    for a in answers:
        real = [x for x in a.addresses if not _unspecified(x)]
        if real:
            bad.append(f"resolver {_over(a)}: {a.name} -> {', '.join(real)}")
        else:
            context.append(f"resolver {_over(a)}: {a.name}: "
                           + (f"sinkholed to {', '.join(a.addresses)}" if a.addresses
                              else a.error or "no answer"))
    return _verdict(cid, CRITICAL, bad, "public names do not resolve",
                    f"{len(bad)} public name lookup(s) answered", context)


def _over(answer: DnsAnswer) -> str:
    """The resolver, and "over TCP" when asked over TCP (UDP is the usual way, unmarked)."""
    return answer.resolver + (" over TCP" if answer.transport == "tcp" else "")


def _unspecified(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


# --------------------------------------------------------------------------- probes


def describe_probe(probe: Probe) -> str:
    return f"{probe.target} {probe.detail} ({probe.ms:g} ms)"


def check_probes_egress(facts: Facts, config: NetlockConfig, allowlist: Allowlist) -> Verdict:
    """No TCP or UDP probe to a canary gets through, and each of IPv4 and IPv6 was probed
    over TCP and UDP: an IP version or protocol nobody probed is `unknown`, never a pass."""
    cid = "probes.egress"
    if (u := _unknown(cid, CRITICAL, facts.egress)) is not None:
        return u
    probes = facts.egress.value or ()
    if not probes:
        return Verdict(cid, UNKNOWN, CRITICAL, "no canary probes configured",
                       ("netlock.canaries is empty",))
    reached = [p for p in probes if p.reached]
    context = [describe_probe(p) for p in probes if not p.reached]
    untested = [f"IPv{version} {proto.upper()}" for version in (4, 6) for proto in ("tcp", "udp")
                if not any(_version(p.address) == version and p.proto == proto for p in probes)]
    notes = [f"no {what} canary probe: {what} egress untested" for what in untested]
    if reached:
        return Verdict(cid, FAIL, CRITICAL, f"{len(reached)} canary probe(s) got through",
                       tuple(describe_probe(p) for p in reached) + tuple(notes),
                       tuple(p.target for p in reached) + tuple(notes))
    if untested:  # a way out nobody tried is not a closed one
        return Verdict(cid, UNKNOWN, CRITICAL, f"egress untested for {', '.join(untested)}",
                       tuple(notes + context))
    return Verdict(cid, PASS, CRITICAL, "no canary answered", tuple(context))


def check_probes_allowed(facts: Facts, config: NetlockConfig, allowlist: Allowlist) -> Verdict:
    """Every must_reach port answers; otherwise a failing egress probe could mean "network
    down" instead of "blocked"."""
    cid = "probes.allowed"
    if (u := _unknown(cid, WARNING, facts.reach)) is not None:
        return u
    probes = facts.reach.value or ()
    if not probes:
        return Verdict(cid, UNKNOWN, WARNING, "no must_reach ports configured",
                       ("netlock.allow[].must_reach is empty: blocked cannot be told from "
                        "down",))
    def named(p: Probe) -> str:
        d = allowlist.destination_of(p.address, must_reach=p.port)
        return describe_probe(p) + (f" [{d.name}]" if d else "")
    failed = [p for p in probes if not p.reached]
    return _verdict(cid, WARNING, [named(p) for p in failed], "every allowed server answered",
                    f"{len(failed)} allowed server probe(s) failed: blocked cannot be told "
                    "from down", [named(p) for p in probes if p.reached],
                    keys=[f"{p.target} {p.detail}" for p in failed])


def _version(address: str) -> int | None:
    try:
        return ipaddress.ip_address(address).version
    except ValueError:
        return None


# --------------------------------------------------------------------------- interfaces


def describe_link(link: Link) -> str:
    parts = [link.kind or "hardware", "up" if link.up else "down"]
    if link.driver:
        parts.append(f"driver {link.driver}")
    if link.bus:
        parts.append(f"bus {link.bus}")
    if link.wireless:
        parts.append("wireless")
    return f"{link.name} ({', '.join(parts)})"


def check_interfaces_wireless(facts: Facts, config: NetlockConfig,
                              allowlist: Allowlist) -> Verdict:
    cid = "interfaces.wireless"
    if (u := _unknown(cid, CRITICAL, facts.links)) is not None:
        return u
    bad = [describe_link(link) for link in facts.links.value or () if link.wireless]
    return _verdict(cid, CRITICAL, bad, "no wireless interface",
                    f"{len(bad)} wireless interface(s)")


def check_interfaces_unexpected(facts: Facts, config: NetlockConfig,
                                allowlist: Allowlist) -> Verdict:
    """Every interface matches `interfaces` and none matches `forbidden_interfaces`; tunnels
    and tethering drivers are unexpected whatever their name."""
    cid = "interfaces.unexpected"
    if (u := _unknown(cid, CRITICAL, facts.links)) is not None:
        return u
    bad = []
    for link in facts.links.value or ():
        why = unexpected_reason(link, config)
        if why:
            bad.append(f"{describe_link(link)}: {why}")
    return _verdict(cid, CRITICAL, bad, "only expected interfaces",
                    f"{len(bad)} unexpected interface(s)")


def unexpected_reason(link: Link, config: NetlockConfig) -> str | None:
    forbidden = [p for p in config.forbidden_interfaces if fnmatch.fnmatchcase(link.name, p)]
    if forbidden:
        return f"matches forbidden pattern {forbidden[0]!r}"
    if link.kind in TUNNEL_KINDS:
        return f"{link.kind} tunnel"
    if link.driver in TETHERING_DRIVERS:
        return f"tethering/mobile broadband driver {link.driver}"
    if not any(fnmatch.fnmatchcase(link.name, p) for p in config.interfaces):
        return "matches no pattern of netlock.interfaces"
    return None


# --------------------------------------------------------------------------- sockets


def describe_socket(s: Socket) -> str:
    if s.status == CLOSED:
        return (f"{s.remote} {s.process or 'uid ?'} ({s.proto} from {s.local}, ended between "
                "two polls: seen as the kernel destroyed it)")
    who = f"pid {s.pid} {s.process or '?'}" if s.pid is not None else "pid ?"
    return f"{s.remote} {who} ({s.proto} {s.status} from {s.local})"


def probe_targets(config: NetlockConfig, allowlist: Allowlist) -> frozenset[tuple[str, str, int]]:
    """(proto, address, port) netlock's probes go to: the canaries' ports, the must_reach
    ports, and DNS (53, UDP and TCP) on any resolver (resolv.conf is read at collection)."""
    out = {(proto, c.address, port) for c in config.canaries
           for proto, ports in (("tcp", c.tcp), ("udp", c.udp)) for port in ports}
    out |= {("tcp", str(a), port) for d in allowlist.destinations for a in d.addresses()
            for port in d.must_reach}
    return frozenset(out)


def is_probe_socket(s: Socket, targets: frozenset[tuple[str, str, int]]) -> bool:
    """A netlock probe: marked PROBE_MARK (only a process with CAP_NET_ADMIN/CAP_NET_RAW can
    set a mark) AND to a probe target. A privileged process marking its own sockets can hide
    only connections to those targets, whose reachability the probes themselves report."""
    if s.mark != PROBE_MARK or s.remote is None:
        return False
    host, port = _ip_text(s.remote_host or ""), s.remote_port
    return port == 53 or (s.proto, host, port) in targets


def check_sockets_allowlist(facts: Facts, config: NetlockConfig,
                            allowlist: Allowlist) -> Verdict:
    """No live TCP connection, no connected UDP socket, and no TCP connection that carried
    data and ended between two polls (CLOSED) to a peer outside the allowlist. netlock's own
    probe sockets (any netlock process) are left out: marked PROBE_MARK and to a target the
    probes test (see `is_probe_socket`)."""
    cid = "sockets.allowlist"
    if (u := _unknown(cid, CRITICAL, facts.sockets)) is not None:
        return u
    bad: list[str] = []
    keys: list[str] = []
    targets = probe_targets(config, allowlist)
    for s in facts.sockets.value or ():
        if s.remote is None or (s.proto == "tcp" and s.status not in LIVE_TCP
                                and s.status != CLOSED):
            continue
        if is_probe_socket(s, targets):
            continue
        host = s.remote_host
        if host and _unspecified(host):
            continue
        if host is None or not allowlist.covers_address(host):
            bad.append(describe_socket(s))
            keys.append(f"{s.proto} {s.local} {s.remote}")
    return _verdict(cid, CRITICAL, bad, "no connection outside the allowlist",
                    f"{len(bad)} connection(s) to addresses outside the allowlist", keys=keys)


# --------------------------------------------------------------------------- proxy


def check_proxy_settings(facts: Facts, config: NetlockConfig, allowlist: Allowlist) -> Verdict:
    """No proxy setting points outside the allowlist. A proxy given by name passes only if
    that name is one of the allow entries' addresses (names cannot be resolved here)."""
    cid = "proxy.settings"
    if (u := _unknown(cid, WARNING, facts.proxy)) is not None:
        return u
    bad: list[str] = []
    context: list[str] = []
    for s in facts.proxy.value or ():
        text = f"{s.source} {s.key}={s.value}"
        why = _proxy_problem(s.host, s.port, config, allowlist)
        (bad if why else context).append(f"{text}: {why}" if why else text)
    return _verdict(cid, WARNING, bad, "no proxy setting points outside the allowlist",
                    f"{len(bad)} proxy setting(s) point outside the allowlist", context)


def _proxy_problem(host: str | None, port: int | None, config: NetlockConfig,
                   allowlist: Allowlist) -> str | None:
    if not host:
        return "no host in the value"
    if host.lower() == "localhost":
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        for entry in config.allow:
            if any(a.strip().lower().rstrip(".") == host.lower().rstrip(".")
                   for a in entry.addresses):
                if port is None or port in entry.tcp:
                    return None
                return f"port {port} is not allowed for {entry.name}"
        return f"host {host} is not in the allowlist"
    if port is not None:
        return None if allowlist.allows(ip, "tcp", port) else (
            f"{join_endpoint(str(ip), port)} is not allowed")
    return None if allowlist.covers_address(ip) else f"{ip} is outside the allowlist"


# --------------------------------------------------------------------------- all

CHECKS: tuple[tuple[str, Callable[[Facts, NetlockConfig, Allowlist], Verdict]], ...] = (
    ("routes.default", check_routes_default),
    ("routes.allowlist", check_routes_allowlist),
    ("firewall.input", check_firewall_input),
    ("firewall.forward", check_firewall_forward),
    ("firewall.output", check_firewall_output),
    ("firewall.table", check_firewall_table),
    ("dns.public_names", check_dns_public_names),
    ("probes.egress", check_probes_egress),
    ("probes.allowed", check_probes_allowed),
    ("interfaces.wireless", check_interfaces_wireless),
    ("interfaces.unexpected", check_interfaces_unexpected),
    ("sockets.allowlist", check_sockets_allowlist),
    ("proxy.settings", check_proxy_settings),
)


def run(facts: Facts, config: NetlockConfig, allowlist: Allowlist,
        only: Iterable[str] | None = None) -> list[Verdict]:
    """Every check (or those in `only`), in CHECK_IDS order."""
    wanted = None if only is None else set(only)
    return [check(facts, config, allowlist) for cid, check in CHECKS
            if wanted is None or cid in wanted]
