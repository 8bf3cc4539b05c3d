"""What an nftables ruleset *means* for new connections: a pure evaluator over `nft -j list
ruleset` output (the `ruleset` fact), no I/O.

For one hook (output, input or forward) and one IP version it computes the region of packets
that may be accepted: boxes over (L4 protocol, address, port, interface, conntrack state),
where the address is the destination (the source, the peer, for input) and the port is the
destination port, or the ICMP type for ICMP. Every base chain of an inet/ip/ip6 table at the
hook is run in priority order: a packet must survive each of them (accept ends only its own
base chain, drop anywhere is final), with jump/goto/return, named and anonymous sets, verdict
maps, prefixes, ranges and negations followed the way the kernel does.

It is sound rather than complete: the accepted region is an over-approximation. Each match is
read twice, as the packets it surely matches (`under`) and the packets it may match (`over`);
an accept adds `over`, a drop removes only `under`. A match it does not understand therefore
counts as "may match everything its known conditions allow" in an accept rule and as "matches
nothing" in a drop rule, and a statement it does not understand (a rewrite, a duplicate) lets
the packet go anywhere; each such case is reported in `notes`. So an answer of "inside the
allowlist" can be trusted, while an answer of "outside" may be a false alarm that the notes
explain.

Packets that conntrack files as established or related only continue flows some hook let
start, so the evaluation starts from the states that can begin one: new, invalid, untracked.
Loopback traffic (`oif lo` / `iif lo`) is the machine itself and is left out. A nat chain sees
only the first packet of a tracked flow and, as the kernel test showed, drops nothing unless a
ct expression or nat statement has started conntrack; a dnat in it may send a packet anywhere.
`tests/test_netlock_ruleset_kernel.py` holds the evaluator to what the kernel does.
"""

from __future__ import annotations

import ipaddress
import json
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from floor_agent.netlock.allowlist import LINK_LOCAL, LOOPBACK, MULTICAST, Allowlist

HOOKS = ("input", "forward", "output")
# Which IP versions the base chains of each table family see.
FAMILY_VERSIONS = {"inet": (4, 6), "ip": (4,), "ip6": (6,)}
Interval = tuple[int, int]
Ivs = tuple[Interval, ...]  # sorted, disjoint, non-adjacent closed intervals

# Dimensions of a box, in order.
PROTO, ADDR, PORT, IFACE, CT = range(5)
DIMS = 5
CT_STATES = ("new", "established", "related", "invalid", "untracked")
# Conntrack states a connection can begin in (established/related continue one).
OPENING = (0, 3, 4)
# Before conntrack (priority -200 on the output hook) `ct state` reads as invalid/untracked.
CONNTRACK_PRIORITY = -200
TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
PORT_PROTOS = (6, 17, 33, 132, 136)  # tcp, udp, dccp, sctp, udplite: have a destination port
# IPv6 extension headers: a packet carrying one has `ip6 nexthdr` = the header, not the L4
# protocol. Such a packet with L4 protocol p is coded as 256 + p in the protocol dimension.
EXT_HEADERS = frozenset({0, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254})
EXT = 256
PROTO_NAMES = {"tcp": 6, "udp": 17, "icmp": 1, "ipv6-icmp": 58, "icmpv6": 58, "sctp": 132,
               "dccp": 33, "udplite": 136, "gre": 47, "esp": 50, "ah": 51, "igmp": 2,
               "ipip": 4, "ipv6": 41, "comp": 108, "hopopt": 0}
NUMBER_NAMES = {v: k for k, v in PROTO_NAMES.items() if k not in ("ipv6-icmp", "hopopt")}
ICMP_TYPES = {"echo-reply": 0, "destination-unreachable": 3, "source-quench": 4,
              "redirect": 5, "echo-request": 8, "router-advertisement": 9,
              "router-solicitation": 10, "time-exceeded": 11, "parameter-problem": 12,
              "timestamp-request": 13, "timestamp-reply": 14, "info-request": 15,
              "info-reply": 16, "address-mask-request": 17, "address-mask-reply": 18}
ICMPV6_TYPES = {"destination-unreachable": 1, "packet-too-big": 2, "time-exceeded": 3,
                "parameter-problem": 4, "echo-request": 128, "echo-reply": 129,
                "mld-listener-query": 130, "mld-listener-report": 131,
                "mld-listener-done": 132, "mld-listener-reduction": 132,
                "nd-router-solicit": 133, "nd-router-advert": 134, "nd-neighbor-solicit": 135,
                "nd-neighbor-advert": 136, "nd-redirect": 137, "router-renumbering": 138,
                "ind-neighbor-solicit": 141, "ind-neighbor-advert": 142,
                "mld2-listener-report": 143}
# Link-scope ICMPv6 (neighbour discovery, MLD) that the project's own ruleset lets through to
# and from anywhere: it keeps the LAN working and carries no connection.
ND_MLD_TYPES = (130, 131, 132, 133, 134, 135, 136, 137, 143)
# Statements that end (or may end) the packet's walk through the chain.
VERDICTS = frozenset({"accept", "drop", "reject", "return", "jump", "goto", "continue",
                      "queue", "snat", "masquerade", "dnat", "redirect", "tproxy"})
# Expressions whose loading makes the kernel track connections in the table's family.
NAT_KEYS = frozenset({"ct", "snat", "dnat", "masquerade", "redirect", "ct helper",
                      "ct timeout", "ct expectation", "ct count", "tproxy"})
OTHER = "*other*"  # the interface slot of every name no rule mentions
WILDCARD = "\0"
IFACE_KEYS = ("oif", "oifname", "iif", "iifname")
MAX_DEPTH = 16  # the kernel's jump stack


# --------------------------------------------------------------------------- interval sets


def ivs(*pairs: Interval) -> Ivs:
    return normalize(pairs)


def normalize(pairs: Iterable[Interval]) -> Ivs:
    out: list[list[int]] = []
    for lo, hi in sorted(p for p in pairs if p[0] <= p[1]):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return tuple((a, b) for a, b in out)


def iv_and(a: Ivs, b: Ivs) -> Ivs:
    if len(a) < len(b):
        a, b = b, a
    if len(b) == 1 and b[0][0] <= a[0][0] and a[-1][1] <= b[0][1]:
        return a  # b covers a: the common case of a full dimension
    out: list[Interval] = []
    for lo, hi in b:  # b is the short side: find its overlaps in a by bisection
        i = bisect_left(a, lo, key=_hi)
        while i < len(a) and a[i][0] <= hi:
            x, y = max(a[i][0], lo), min(a[i][1], hi)
            if x <= y:
                out.append((x, y))
            i += 1
    return tuple(out)


def iv_sub(a: Ivs, b: Ivs) -> Ivs:
    out = a
    for blo, bhi in b:
        i = bisect_left(out, blo, key=_hi)  # first interval reaching blo
        j = bisect_right(out, bhi, key=_lo)  # first interval starting after bhi
        if i >= j:
            continue
        pieces = []
        if out[i][0] < blo:
            pieces.append((out[i][0], blo - 1))
        if out[j - 1][1] > bhi:
            pieces.append((bhi + 1, out[j - 1][1]))
        out = out[:i] + tuple(pieces) + out[j:]
    return out


def _lo(iv: Interval) -> int:
    return iv[0]


def _hi(iv: Interval) -> int:
    return iv[1]


def iv_or(a: Ivs, b: Ivs) -> Ivs:
    if not a or not b:
        return a or b
    if a[-1][1] + 1 < b[0][0]:  # the usual case when merging boxes in order: no overlap
        return a + b
    if b[-1][1] + 1 < a[0][0]:
        return b + a
    return normalize(a + b)


def iv_size(a: Ivs) -> int:
    return sum(hi - lo + 1 for lo, hi in a)


# --------------------------------------------------------------------------- regions


@dataclass(frozen=True, slots=True)
class Source:
    """Where an accept came from: a rule (with its handle and text) or a chain's policy."""

    family: str
    table: str
    chain: str
    handle: int | None
    text: str
    rewrites: bool = False  # a dnat/redirect or unknown statement: the packet may go anywhere

    def describe(self) -> str:
        where = f"{self.family} {self.table} {self.chain}"
        if self.handle is None:
            return f"{where}: {self.text}"
        return f"{where} handle {self.handle}: {self.text}"


Dims = tuple[Ivs, Ivs, Ivs, Ivs, Ivs]


@dataclass(frozen=True, slots=True)
class Box:
    """A product of one interval set per dimension, and the accepts that let it through."""

    dims: Dims
    via: tuple[Source, ...] = ()


Region = list[Box]
Cond = list[Dims]  # a union of constraint boxes


def cut(a: Dims, b: Dims) -> Dims | None:
    """a & b, or None when empty (found at the first empty dimension)."""
    dims = []
    for x, y in zip(a, b, strict=True):
        d = x if x is y else iv_and(x, y)
        if not d:
            return None
        dims.append(d)
    return tuple(dims)  # type: ignore[return-value]


def minus(a: Dims, b: Dims) -> list[Dims]:
    """a - b as disjoint boxes (at most one per dimension)."""
    if cut(a, b) is None:
        return [a]
    out, rest = [], list(a)
    for d in range(DIMS):
        outside = iv_sub(rest[d], b[d])
        if outside:
            piece = list(rest)
            piece[d] = outside
            out.append(tuple(piece))
        rest[d] = iv_and(rest[d], b[d])
    return out  # type: ignore[return-value]


def intersect(region: Region, cond: Cond) -> Region:
    out = []
    for box in region:
        for c in cond:
            dims = cut(box.dims, c)
            if dims is not None:
                out.append(Box(dims, box.via))
    return out


def subtract(region: Region, cond: Cond) -> Region:
    for c in cond:
        region = [Box(d, box.via) for box in region for d in minus(box.dims, c)]
    return region


def coalesce(region: Region) -> Region:
    """Merge boxes that differ in one dimension only (same origin): keeps regions small."""
    boxes = list(dict.fromkeys(region))
    changed = True
    while changed and len(boxes) > 1:
        changed = False
        for d in range(DIMS):
            groups: dict[Any, Ivs] = {}
            for box in boxes:
                key = (box.via, box.dims[:d] + box.dims[d + 1:])
                groups[key] = iv_or(groups[key], box.dims[d]) if key in groups else box.dims[d]
            if len(groups) < len(boxes):
                changed = True
                boxes = [Box(k[1][:d] + (v,) + k[1][d:], k[0]) for k, v in groups.items()]
    return boxes


def region_minus(region: Region, other: Region) -> Region:
    return coalesce(subtract(region, [b.dims for b in other]))


# --------------------------------------------------------------------------- the ruleset


@dataclass(frozen=True, slots=True)
class Rule:
    handle: int | None
    expr: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Chain:
    family: str
    table: str
    name: str
    type: str | None
    hook: str | None
    prio: int
    policy: str | None
    rules: tuple[Rule, ...]

    def describe(self) -> str:
        hook = "" if self.hook in (None, self.name) else f" (hook {self.hook})"
        return f"{self.family} {self.table} {self.name}{hook} policy {self.policy or 'none'}"


@dataclass(frozen=True, slots=True)
class Ruleset:
    chains: dict[tuple[str, str, str], Chain]
    sets: dict[tuple[str, str, str], dict[str, Any]]
    interfaces: tuple[str, ...]  # index 0 is lo; the last index stands for every other name
    tracked: frozenset[int] = frozenset()  # IP versions conntrack surely runs for

    def base_chains(self, hook: str) -> list[Chain]:
        return [c for c in self.chains.values() if c.hook == hook and c.type is not None]


def parse(data: dict[str, Any]) -> Ruleset:
    """The chains, rules and sets of `nft -j list ruleset` output, in ruleset order."""
    items = data.get("nftables") if isinstance(data, dict) else None
    if not isinstance(items, list):
        items = []
    chains: dict[tuple[str, str, str], dict[str, Any]] = {}
    rules: dict[tuple[str, str, str], list[Rule]] = {}
    sets: dict[tuple[str, str, str], dict[str, Any]] = {}
    names: set[str] = set()
    tracked: set[int] = set()
    for item in items:
        if not isinstance(item, dict):
            continue
        for kind in ("set", "map"):
            if isinstance(item.get(kind), dict):
                s = item[kind]
                sets[_key(s, "name")] = s
        if isinstance(item.get("chain"), dict):
            c = item["chain"]
            chains[_key(c, "name")] = c
        elif isinstance(item.get("rule"), dict):
            r = item["rule"]
            listed = r.get("expr") if isinstance(r.get("expr"), list) else []
            # an expression of another shape than {key: value} is kept: it will be unknown
            expr = tuple(e if isinstance(e, dict) else {"?": e} for e in listed)
            handle = r.get("handle") if isinstance(r.get("handle"), int) else None
            rules.setdefault(_key(r, "chain"), []).append(Rule(handle, expr))
            names.update(_interface_names(expr))
            if _starts_conntrack(expr):
                tracked.update(FAMILY_VERSIONS.get(_key(r, "chain")[0], ()))
    names.discard("lo")
    built = {key: Chain(key[0], key[1], key[2], _text(c.get("type")), _text(c.get("hook")),
                        _prio(c.get("prio")), _text(c.get("policy")), tuple(rules.get(key, ())))
             for key, c in chains.items()}
    return Ruleset(built, sets, ("lo", *sorted(names), OTHER), frozenset(tracked))


def _key(item: dict[str, Any], name: str) -> tuple[str, str, str]:
    """(family, table, name) of a listed object, as text whatever the JSON held."""
    return (str(item.get("family", "?")), str(item.get("table", "?")), str(item.get(name, "?")))


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _prio(value: Any) -> int:
    if isinstance(value, int):
        return value
    named = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50,
             "srcnat": 100}
    return named.get(str(value), 0)


def _interface_names(expr: Iterable[dict[str, Any]]) -> set[str]:
    """Interface names appearing in a rule (they get their own slot in the iface dimension)."""
    found: set[str] = set()

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        elif isinstance(x, str):
            # a wildcard `eth*` gets a slot for the names it matches that no rule names:
            # "eth" + NUL stands for them (no real name holds a NUL)
            found.add(x[:-1] + WILDCARD if _wildcard(x) else x)
    for e in expr:
        m = e.get("match")
        if isinstance(m, dict) and _meta_key(m.get("left")) in ("oif", "oifname", "iif",
                                                                "iifname"):
            walk(m.get("right"))
        v = e.get("vmap")
        if isinstance(v, dict) and _meta_key(v.get("key")) in ("oif", "oifname", "iif",
                                                               "iifname"):
            walk(v.get("data"))
    return found


def _starts_conntrack(expr: Iterable[dict[str, Any]]) -> bool:
    """Whether a rule makes the kernel track connections in its table's family: any ct
    expression or nat statement does (loading it takes a reference on conntrack)."""
    def walk(x: Any) -> bool:
        if isinstance(x, dict):
            return any(k in NAT_KEYS or walk(v) for k, v in x.items())
        if isinstance(x, list):
            return any(walk(v) for v in x)
        return False
    return any(walk(e) for e in expr)


def _wildcard(name: str) -> bool:
    """nft's `eth*` (a trailing unescaped star) matches every name starting with `eth`."""
    return name.endswith("*") and not name.endswith("\\*")


def _meta_key(left: Any) -> str | None:
    if isinstance(left, dict) and isinstance(left.get("meta"), dict):
        key: str | None = left["meta"].get("key")
        return key
    return None


# --------------------------------------------------------------------------- rendering


def render_rule(expr: Sequence[dict[str, Any]]) -> str:
    """A readable nft-like rendering of a rule's JSON expressions."""
    try:
        return " ".join(_render_stmt(e) for e in expr)
    except (TypeError, AttributeError, KeyError, ValueError, IndexError):
        return json.dumps(list(expr), separators=(",", ":"), default=str)


def _render_stmt(e: dict[str, Any]) -> str:
    (key, value), = e.items() if len(e) == 1 else ((None, e),)
    if key == "match":
        op = value.get("op")
        sep = " " if op in ("==", "in") else f" {op} "
        right = value.get("right")
        if _meta_key(value.get("left")) in IFACE_KEYS:  # nft quotes interface names
            right = _quoted(right)
        return f"{_render_value(value.get('left'))}{sep}{_render_value(right)}"
    if key in ("accept", "drop", "return", "continue") and value is None:
        return key
    if key in ("jump", "goto") and isinstance(value, dict):
        return f"{key} {value.get('target')}"
    if key == "counter":
        return "counter"
    if key == "reject":
        return "reject" + (f" with {value.get('type')} {value.get('expr', '')}".rstrip()
                           if isinstance(value, dict) and value else "")
    if key == "vmap" and isinstance(value, dict):
        return f"{_render_value(value.get('key'))} vmap {_render_value(value.get('data'))}"
    return json.dumps(e, separators=(",", ":"))


def _quoted(v: Any) -> Any:
    if isinstance(v, str) and not v.startswith("@"):
        return f'"{v}"'
    if isinstance(v, list):
        return [_quoted(x) for x in v]
    if isinstance(v, dict) and "set" in v:
        return {"set": _quoted(v["set"])}
    return v


def _render_value(v: Any) -> str:
    if isinstance(v, dict):
        if "payload" in v and isinstance(v["payload"], dict):
            p = v["payload"]
            return f"{p.get('protocol', p.get('base', '?'))} {p.get('field', p.get('offset', '?'))}"
        if isinstance(v.get("meta"), dict):
            key = v["meta"].get("key")
            return key if key in IFACE_KEYS else f"meta {key}"
        if "ct" in v and isinstance(v["ct"], dict):
            return f"ct {v['ct'].get('key')}"
        if "prefix" in v and isinstance(v["prefix"], dict):
            return f"{v['prefix'].get('addr')}/{v['prefix'].get('len')}"
        if "range" in v and isinstance(v["range"], list):
            return "-".join(_render_value(x) for x in v["range"])
        if "set" in v:
            inner = v["set"] if isinstance(v["set"], list) else [v["set"]]
            return "{ " + ", ".join(_render_value(x) for x in inner) + " }"
        if "concat" in v and isinstance(v["concat"], list):
            return " . ".join(_render_value(x) for x in v["concat"])
        if "elem" in v and isinstance(v["elem"], dict):
            return _render_value(v["elem"].get("val"))
        if len(v) == 1:
            return _render_stmt(v)
        return json.dumps(v, separators=(",", ":"))
    if isinstance(v, list):
        if len(v) == 2 and isinstance(v[1], dict) and len(v[1]) == 1 and next(iter(v[1])) in (
                "accept", "drop", "jump", "goto", "return", "continue"):
            return f"{_render_value(v[0])} : {_render_stmt(v[1])}"
        return ", ".join(_render_value(x) for x in v)
    return str(v)


# --------------------------------------------------------------------------- evaluation


class Unknown(Exception):
    """A match the evaluator cannot read exactly; carries why."""


@dataclass
class Space:
    """The domains of one evaluation: hook, IP version, interface names."""

    hook: str
    version: int
    interfaces: tuple[str, ...]

    def __post_init__(self) -> None:
        self.full: Dims = (ivs((0, 511 if self.version == 6 else 255)), ivs((0, self.addr_max)),
                           ivs((0, 65535)), ivs((0, len(self.interfaces) - 1)), ivs((0, 4)))

    @property
    def addr_max(self) -> int:
        return (1 << (32 if self.version == 4 else 128)) - 1

    def start(self) -> Dims:
        """Packets that can open a connection, off loopback."""
        full = self.full
        return (full[PROTO], full[ADDR], full[PORT], ivs((1, len(self.interfaces) - 1)),
                normalize((s, s) for s in OPENING))

    def only(self, dim: int, values: Ivs) -> Dims:
        dims = list(self.full)
        dims[dim] = iv_and(dims[dim], values)
        return tuple(dims)  # type: ignore[return-value]

    def protos(self, numbers: Iterable[int], nexthdr: bool = False) -> Ivs:
        """L4 protocol numbers as the protocol dimension: also behind IPv6 extension headers,
        unless read from `ip6 nexthdr` (which then names the first extension header)."""
        pairs = [(n, n) for n in numbers]
        if self.version == 6 and not nexthdr:
            pairs += [(n + EXT, n + EXT) for n in numbers]
        return normalize(pairs)


@dataclass
class Result:
    """The accepted region of one hook for one IP version, and what could not be read."""

    hook: str
    version: int
    accepted: Region
    chains: list[Chain]
    notes: list[str] = field(default_factory=list)
    interfaces: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Match:
    under: Cond
    over: Cond
    free: Cond = field(default_factory=list)  # packets it may match whatever the value


class Evaluator:
    """One run over one hook and IP version."""

    def __init__(self, rs: Ruleset, space: Space) -> None:
        self.rs, self.space = rs, space
        self.notes: list[str] = []

    # ---- chains

    def hook(self, chains: list[Chain]) -> Region:
        region: Region = [Box(self.space.start())]
        for chain in chains:
            passing: Region = []
            if chain.type == "nat":
                # consulted for the first packet of a tracked flow only, and only while
                # conntrack runs in the namespace: a nat chain alone does not start it (seen in
                # the differential test), a ct expression or nat statement does. Without one
                # its drops are not counted; where it sends packets (dnat) always is.
                new = [self.space.only(CT, ivs((0, 0)))]
                if self.space.version not in self.rs.tracked:
                    accepted, _ = self.chain(chain, intersect(region, new), 0, chain)
                    region = coalesce(region + [b for b in accepted
                                                if b.via and b.via[-1].rewrites])
                    continue
                passing = subtract(region, new)
                region = intersect(region, new)
            accepted, returned = self.chain(chain, region, 0, chain)
            if chain.policy != "drop":
                pol = Source(chain.family, chain.table, chain.name, None,
                             f"policy {chain.policy or 'accept'}")
                accepted += [Box(b.dims, b.via + (pol,)) for b in returned]
            region = coalesce(accepted + passing)
        return region

    def chain(self, chain: Chain, region: Region, depth: int, base: Chain
              ) -> tuple[Region, Region]:
        """(accepted, returned) for the packets entering `chain`."""
        accepted: Region = []
        returned: Region = []
        limit = 8
        for rule in chain.rules:
            if not region:
                break
            region = self.rule(chain, rule, region, accepted, returned, depth, base)
            if len(region) > limit:  # merging costs: only once the region has grown
                region = coalesce(region)
                limit = 2 * len(region) + 8
        return accepted, returned + region

    def rule(self, chain: Chain, rule: Rule, region: Region, accepted: Region,
             returned: Region, depth: int, base: Chain) -> Region:
        """The packets that go on past this rule; adds to accepted/returned what it ends."""
        try:
            return self._rule(chain, rule, region, accepted, returned, depth, base)
        except (TypeError, AttributeError, KeyError, ValueError, IndexError) as e:
            # JSON of a shape this code has never seen: the rule may do anything
            where = f"{chain.family} {chain.table} {chain.name} handle {rule.handle}"
            self.notes.append(f"{where}: rule not understood ({type(e).__name__}: {e}) -- "
                              "counted as sending the packets it may match anywhere")
            src = Source(chain.family, chain.table, chain.name, rule.handle,
                         "(rule not understood)", True)
            accepted += [Box(self._anywhere(b.dims), b.via + (src,)) for b in region]
            return region

    def _rule(self, chain: Chain, rule: Rule, region: Region, accepted: Region,
              returned: Region, depth: int, base: Chain) -> Region:
        src = Source(chain.family, chain.table, chain.name, rule.handle, render_rule(rule.expr))
        cond = Match([self.space.full], [self.space.full])
        verdict: dict[str, Any] | None = None
        vmap: dict[str, Any] | None = None
        unknown_effects: list[str] = []
        unknown_matches: list[str] = []
        for e in rule.expr:
            (key, value), = e.items() if len(e) == 1 else (("?", e),)
            if key == "match":
                try:
                    m = self.match(value, base)
                except Unknown as why:
                    unknown_matches.append(f"{_render_stmt(e)} ({why})")
                    m = Match([], [self.space.full])
                cond = Match(_and(cond.under, m.under), _and(cond.over, m.over))
            elif key == "xt" and isinstance(value, dict) and value.get("type") == "match":
                unknown_matches.append(f"{_render_stmt(e)} (an iptables-nft match)")
                cond = Match([], cond.over)
            elif key in ("limit", "quota", "meter"):
                unknown_matches.append(f"{_render_stmt(e)} (a rate or quota decides)")
                cond = Match([], cond.over)
            elif key in ("counter", "log", "comment") or (
                    key == "mangle" and _harmless_mangle(value)):
                continue
            elif key == "notrack":
                hit = intersect(region, cond.over)
                # CT is the last dimension: the slice plus one is five (mypy cannot count it).
                region = subtract(region, cond.under) + [
                    Box(b.dims[:CT] + (iv_or(b.dims[CT], ivs((4, 4))),), b.via)  # type: ignore[arg-type]
                    for b in hit]
            elif key == "vmap":
                vmap = value
            elif key in VERDICTS:
                verdict = {key: value}
                kind = value.get("type") if isinstance(value, dict) else None
                if key == "reject" and kind in ("icmp", "icmpv6") and (
                        (kind == "icmp") != (self.space.version == 4)):
                    # `meta nfproto ipv6 reject` lists as `reject with icmpv6 ...`: nft hides
                    # the family match the kernel still applies
                    cond = Match([], [])
            else:
                unknown_effects.append(_render_stmt(e))
        if unknown_matches:
            kind = self._kind(verdict, vmap)
            self.notes.append(f"{src.describe()}: not understood: {'; '.join(unknown_matches)}"
                              f" -- {kind}")
        if unknown_effects:
            self.notes.append(f"{src.describe()}: statement not understood: "
                              f"{'; '.join(unknown_effects)} -- counted as sending the packets "
                              "it may match anywhere")
            moved = Source(src.family, src.table, src.chain, src.handle, src.text, True)
            accepted += [Box(self._anywhere(b.dims), b.via + (moved,))
                         for b in intersect(region, cond.over)]
        if vmap is not None:
            try:
                entries = self.vmap_entries(vmap, base, src)
            except Unknown as why:  # elements unknown: any of them may accept, or none match
                self.notes.append(f"{src.describe()}: verdict map not understood ({why}) -- "
                                  "counted as possibly accepting and possibly not matching")
                accepted += [Box(b.dims, b.via + (src,)) for b in intersect(region, cond.over)]
                return region
            for key_cond, v in entries:
                sub = Match(_and(cond.under, key_cond.under), _and(cond.over, key_cond.over))
                region = self.act(v, sub, region, accepted, returned, depth, base, src)
            return region
        if verdict is None:
            return region
        return self.act(verdict, cond, region, accepted, returned, depth, base, src)

    def _kind(self, verdict: dict[str, Any] | None, vmap: dict[str, Any] | None) -> str:
        name = next(iter(verdict)) if verdict else ("vmap" if vmap else "no verdict")
        if name in ("drop", "reject"):
            return "counted as matching nothing (the drop may not happen)"
        if name in ("accept", "queue", "snat", "masquerade", "dnat", "redirect", "tproxy"):
            return "counted as matching every packet its other conditions allow"
        return "counted as possibly matching and possibly not"

    def _anywhere(self, dims: Dims) -> Dims:
        full = self.space.full
        return (dims[PROTO], full[ADDR], full[PORT], dims[IFACE], dims[CT])

    def act(self, verdict: dict[str, Any], cond: Match, region: Region, accepted: Region,
            returned: Region, depth: int, base: Chain, src: Source) -> Region:
        (name, value), = verdict.items()
        hit = intersect(region, cond.over)
        if name in ("accept", "queue", "snat", "masquerade"):
            accepted += [Box(b.dims, b.via + (src,)) for b in hit]
            return subtract(region, cond.under)
        if name in ("dnat", "redirect", "tproxy"):  # rewritten: may now go anywhere
            moved = Source(src.family, src.table, src.chain, src.handle, src.text, True)
            accepted += [Box(self._anywhere(b.dims), b.via + (moved,)) for b in hit]
            return subtract(region, cond.under)
        if name in ("drop", "reject"):
            return subtract(region, cond.under)
        if name == "return":
            returned += hit
            return subtract(region, cond.under)
        if name in ("jump", "goto"):
            target = value.get("target") if isinstance(value, dict) else None
            chain = (self.rs.chains.get((base.family, base.table, target))
                     if isinstance(target, str) else None)
            if chain is None or depth >= MAX_DEPTH:
                self.notes.append(f"{src.describe()}: {name} to a chain not found or too deep "
                                  "-- counted as accepting")
                accepted += [Box(b.dims, b.via + (src,)) for b in hit]
                return subtract(region, cond.under)
            acc, ret = self.chain(chain, hit, depth + 1, base)
            accepted += acc
            if name == "goto":
                returned += ret
                return subtract(region, cond.under)
            return subtract(region, cond.under) + ret
        return region  # continue

    # ---- matches

    def vmap_entries(self, vmap: dict[str, Any], base: Chain, src: Source
                     ) -> list[tuple[Match, dict[str, Any]]]:
        """One (condition, verdict) per element: elements of a map never overlap, so
        applying them in turn is the lookup."""
        data = vmap.get("data")
        elements = self.elements(data, base)
        out = []
        for element in elements:
            if not (isinstance(element, list) and len(element) == 2 and
                    isinstance(element[1], dict) and len(element[1]) == 1):
                raise Unknown(f"element {_render_value(element)}")
            key, verdict = element
            try:
                m = self.match({"op": "==", "left": vmap.get("key"), "right": key}, base)
            except Unknown as why:
                self.notes.append(f"{src.describe()}: vmap key {_render_value(key)} not "
                                  f"understood ({why}) -- {self._kind(verdict, None)}")
                m = Match([], [self.space.full])
            out.append((m, verdict))
        return out

    def elements(self, right: Any, base: Chain) -> list[Any]:
        if isinstance(right, str) and right.startswith("@"):
            s = self.rs.sets.get((base.family, base.table, right[1:]))
            if s is None:
                raise Unknown(f"set {right} not found")
            flags = s.get("flags") or []
            if "dynamic" in flags or "timeout" in flags:
                raise Unknown(f"set {right} changes at run time")
            return [_unwrap(x) for x in s.get("elem") or []]
        if isinstance(right, dict) and "set" in right:
            inner = right["set"]
            return [_unwrap(x) for x in (inner if isinstance(inner, list) else [inner])]
        return [right]

    def match(self, m: dict[str, Any], base: Chain) -> Match:
        op, left, right = m.get("op"), m.get("left"), m.get("right")
        if op not in ("==", "!=", "in"):
            raise Unknown(f"operator {op}")
        keys = left["concat"] if isinstance(left, dict) and "concat" in left else [left]
        fields = [self.field(k, base) for k in keys]
        elements = self.elements(right, base)
        boxes: list[Dims] = []
        for element in elements:
            element = _unwrap(element)
            if isinstance(element, list) and len(element) == 2 and isinstance(element[1], dict):
                element = element[0]  # a map's key
            parts = (element["concat"] if len(fields) > 1 and isinstance(element, dict)
                     and "concat" in element else [element])
            if len(parts) != len(fields):
                raise Unknown("concatenation does not fit its set")
            dims = list(self.space.full)
            for (dim, kind, _guard), part in zip(fields, parts, strict=True):
                dims[dim] = iv_and(dims[dim], self.value(kind, part))
            boxes.append(tuple(dims))  # type: ignore[arg-type]
        # the field's own precondition (`tcp dport` needs TCP, `ip daddr` needs IPv4) is never
        # negated; only the value is
        under_guard, over_guard = [self.space.full], [self.space.full]
        free: Cond = []
        for _dim, _kind, guard in fields:
            under_guard = _and(under_guard, guard.under)
            over_guard = _and(over_guard, guard.over)
            free += guard.free
        values = _minus_all(self.space.full, boxes) if op == "!=" else boxes
        return Match(_and(under_guard, values), _and(over_guard, values) + free)

    def field(self, left: Any, base: Chain) -> tuple[int, str, Match]:
        """(dimension, value kind, guard) of a match's left side; Unknown if not modelled."""
        sp = self.space
        full = [sp.full]
        none: Cond = []
        everything = Match(full, full)
        if not isinstance(left, dict):
            raise Unknown("left side is not an expression")
        if isinstance(left.get("meta"), dict):
            key = left["meta"].get("key")
            if key in ("nfproto", "protocol"):
                return PROTO, "family", everything
            if key == "l4proto":
                return PROTO, "proto", everything
            own = {"output": ("oif", "oifname"), "forward": ("oif", "oifname"),
                   "input": ("iif", "iifname")}[sp.hook]
            if key in own:
                return IFACE, "iface", everything
            raise Unknown(f"meta {key} is not modelled")
        if isinstance(left.get("ct"), dict):
            key = left["ct"].get("key")
            if key == "state" and not (sp.hook == "output" and base.prio <= CONNTRACK_PRIORITY):
                return CT, "ct", everything
            raise Unknown(f"ct {key} is not modelled here")
        if isinstance(left.get("payload"), dict):
            p = left["payload"]
            proto, fld = p.get("protocol"), p.get("field")
            addr_field = "saddr" if sp.hook == "input" else "daddr"
            if proto in ("ip", "ip6"):
                if (proto == "ip") != (sp.version == 4):  # needs the other IP version
                    return PROTO, "never", Match(none, none)
                if fld == addr_field:
                    return ADDR, "addr", everything
                if fld == "protocol" and proto == "ip":
                    return PROTO, "proto", everything
                if fld == "nexthdr" and proto == "ip6":
                    return PROTO, "nexthdr", everything
                raise Unknown(f"{proto} {fld} is not modelled")
            if fld == "dport" and proto in ("tcp", "udp", "sctp", "dccp", "udplite"):
                need = sp.only(PROTO, sp.protos([PROTO_NAMES[proto]]))
                return PORT, "port", Match([need], [need])
            if fld == "dport" and proto == "th":
                # without a port (ICMP, ...) it reads other header bytes: may match or not
                ported = sp.only(PROTO, sp.protos(PORT_PROTOS))
                return PORT, "port", Match([ported], [ported], _minus_all(sp.full, [ported]))
            if fld == "type" and proto in ("icmp", "icmpv6"):
                mine = (proto == "icmp") == (sp.version == 4)
                need = sp.only(PROTO, sp.protos([ICMP if proto == "icmp" else ICMPV6]))
                guard = Match([need], [need]) if mine else Match(none, none)
                return PORT, proto, guard
            raise Unknown(f"{proto} {fld} is not modelled")
        raise Unknown(f"{_render_value(left)} is not modelled")

    def value(self, kind: str, v: Any) -> Ivs:
        """The values of one set element (or the right side) in its dimension."""
        sp = self.space
        if kind == "never":
            return sp.full[PROTO]
        if kind == "family":
            names = {"ipv4": 4, "ip": 4, "ipv6": 6, "ip6": 6}
            versions = {names.get(x) if isinstance(x, str) else x for x in _flat(v)}
            if not versions <= {4, 6}:
                raise Unknown(f"family {v}")
            return sp.full[PROTO] if sp.version in versions else ()
        if kind in ("proto", "nexthdr"):
            numbers = [self._number(x, PROTO_NAMES) for x in _flat(v)]
            out = sp.protos(numbers, nexthdr=kind == "nexthdr")
            if kind == "nexthdr" and sp.version == 6 and EXT_HEADERS & set(numbers):
                raise Unknown("ip6 nexthdr names an extension header")
            return out
        if kind == "port":
            return self._range(v, lambda x: self._number(x, {}), 65535)
        if kind in ("icmp", "icmpv6"):
            names = ICMP_TYPES if kind == "icmp" else ICMPV6_TYPES
            return self._range(v, lambda x: self._number(x, names), 255)
        if kind == "addr":
            return self._addresses(v)
        if kind == "ct":
            states = [x for x in _flat(v)]
            if not all(s in CT_STATES for s in states):
                raise Unknown(f"ct state {v}")
            return normalize((CT_STATES.index(s), CT_STATES.index(s)) for s in states)
        if kind == "iface":
            slots = self.space.interfaces
            hit: list[Interval] = []
            for n in _flat(v):
                if not isinstance(n, str):
                    raise Unknown(f"interface {n!r} (an index)")
                if _wildcard(n):  # every slot whose names start so; never the unnamed rest
                    hit += [(i, i) for i, name in enumerate(slots)
                            if name.startswith(n[:-1]) and (name != OTHER or n == "*")]
                else:
                    slot = slots.index(n)
                    hit.append((slot, slot))
            return normalize(hit)
        raise Unknown(kind)

    def _number(self, x: Any, names: dict[str, int]) -> int:
        if isinstance(x, bool):
            raise Unknown(f"value {x}")
        if isinstance(x, int):
            return x
        if isinstance(x, str):
            if x in names:
                return names[x]
            if x.isdigit():
                return int(x)
        raise Unknown(f"value {x!r}")

    def _range(self, v: Any, number: Any, top: int) -> Ivs:
        if isinstance(v, dict) and isinstance(v.get("range"), list) and len(v["range"]) == 2:
            lo, hi = (number(x) for x in v["range"])
            return ivs((max(lo, 0), min(hi, top)))
        n = number(v)
        return ivs((n, n))

    def _addresses(self, v: Any) -> Ivs:
        version = self.space.version
        if isinstance(v, dict) and isinstance(v.get("prefix"), dict):
            net = _net(f"{v['prefix'].get('addr')}/{v['prefix'].get('len')}", version)
            return ivs((int(net.network_address), int(net.broadcast_address)))
        if isinstance(v, dict) and isinstance(v.get("range"), list) and len(v["range"]) == 2:
            lo, hi = (_ip(x, version) for x in v["range"])
            return ivs((lo, hi))
        return ivs((_ip(v, version),) * 2)


def _ip(text: Any, version: int) -> int:
    try:
        ip = ipaddress.ip_address(str(text))
    except ValueError:
        raise Unknown(f"address {text!r} (a name?)") from None
    if ip.version != version:
        raise Unknown(f"address {text} of the other family")
    return int(ip)


def _net(text: str, version: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise Unknown(f"prefix {text!r}") from None
    if net.version != version:
        raise Unknown(f"prefix {text} of the other family")
    return net


def _flat(v: Any) -> list[Any]:
    if isinstance(v, list):
        return [x for item in v for x in _flat(item)]
    if isinstance(v, dict) and "set" in v:
        return _flat(v["set"])
    return [v]


def _unwrap(x: Any) -> Any:
    """A set element without its per-element options (`{"elem": {"val": ..., "comment": ...}}`)."""
    while isinstance(x, dict) and isinstance(x.get("elem"), dict) and "val" in x["elem"]:
        x = x["elem"]["val"]
    return x


def _and(a: Cond, b: Cond) -> Cond:
    out = []
    for x in a:
        for y in b:
            d = cut(x, y)
            if d is not None:
                out.append(d)
    return out


def _minus_all(a: Dims, boxes: Cond) -> Cond:
    pieces = [a]
    for b in boxes:
        pieces = [p for piece in pieces for p in minus(piece, b)]
    return pieces


def _harmless_mangle(value: Any) -> bool:
    """Setting a mark or priority changes no address, port or verdict."""
    key = value.get("key") if isinstance(value, dict) else None
    if isinstance(key, dict) and isinstance(key.get("meta"), dict):
        return key["meta"].get("key") in ("mark", "priority", "nftrace")
    if isinstance(key, dict) and isinstance(key.get("ct"), dict):
        return key["ct"].get("key") in ("mark",)
    return False


# --------------------------------------------------------------------------- public API


def evaluate(data: dict[str, Any] | Ruleset, hook: str, version: int) -> Result:
    """The packets that may open a connection through `hook` for IP `version`."""
    rs = data if isinstance(data, Ruleset) else parse(data)
    space = Space(hook, version, rs.interfaces)
    chains = sorted((c for c in rs.base_chains(hook)
                     if version in FAMILY_VERSIONS.get(c.family, ())),
                    key=lambda c: c.prio)  # stable: equal priorities keep ruleset order
    ev = Evaluator(rs, space)
    accepted = ev.hook(chains)
    return Result(hook, version, accepted, chains, ev.notes, rs.interfaces)


def allowed(allowlist: Allowlist, hook: str, version: int, interfaces: tuple[str, ...]
            ) -> Region:
    """The region the allowlist permits at a hook: for output and forward, TCP/UDP to the
    allowed destinations' ports and ping to them; for input, anything from a peer inside the
    allowlist (destinations, netlock.networks, link-local, multicast); at every hook,
    loopback addresses and ICMPv6 neighbour discovery/MLD."""
    space = Space(hook, version, interfaces)
    full = space.full
    boxes: list[Dims] = []

    def add(protos: Ivs, net: Any, ports: Ivs) -> None:
        addr = ivs((int(net.network_address), int(net.broadcast_address)))
        boxes.append((protos, addr, ports, full[IFACE], full[CT]))

    for net in LOOPBACK:
        if net.version == version:
            add(full[PROTO], net, full[PORT])
    if version == 6:
        boxes.append((space.protos([ICMPV6]), full[ADDR],
                      normalize((t, t) for t in ND_MLD_TYPES), full[IFACE], full[CT]))
    nets = [(d, n) for d in allowlist.destinations for n in d.networks if n.version == version]
    if hook == "input":
        for net in (*LINK_LOCAL, *MULTICAST, *allowlist.networks, *(n for _, n in nets)):
            if net.version == version:
                add(full[PROTO], net, full[PORT])
    else:
        echo = ivs((8, 8)) if version == 4 else ivs((128, 128))
        for d, net in nets:
            if d.tcp:
                add(space.protos([TCP]), net, normalize((p, p) for p in d.tcp))
            if d.udp:
                add(space.protos([UDP]), net, normalize((p, p) for p in d.udp))
            add(space.protos([ICMP if version == 4 else ICMPV6]), net, echo)
    return [Box(b) for b in boxes]


def outside(result: Result, allowlist: Allowlist) -> Region:
    """The part of the accepted region the allowlist does not permit."""
    permitted = coalesce(allowed(allowlist, result.hook, result.version, result.interfaces))
    return region_minus(result.accepted, permitted)


def describe_box(box: Box, result: Result) -> str:
    """`tcp to 0.0.0.0/0 port 53` (from ... for input), with interface and state if narrowed."""
    proto, addr, port, iface, ct = box.dims
    version, space = result.version, Space(result.hook, result.version, result.interfaces)
    text = f"{_describe_protos(proto, version)} {'from' if result.hook == 'input' else 'to'} "
    text += _describe_addresses(addr, version)
    numbers = {p % EXT for lo, hi in proto for p in range(lo, min(hi, lo + 600) + 1)}
    if port != space.full[PORT]:
        label = "type" if numbers <= {ICMP, ICMPV6} else "port"
        shown = iv_and(port, ivs((0, 255))) if label == "type" else port
        text += f" {label} " + _describe_ivs(shown, 3)
    if iface != space.start()[IFACE]:
        names = [result.interfaces[i] for lo, hi in iface for i in range(lo, hi + 1)]
        text += " via " + ", ".join(
            "any other interface" if n == OTHER else
            f"any other {n[:-1]}* interface" if n.endswith(WILDCARD) else n for n in names)
    if ct != space.start()[CT]:
        text += " ct state " + ",".join(CT_STATES[i] for lo, hi in ct for i in range(lo, hi + 1))
    return text


def _describe_protos(proto: Ivs, version: int) -> str:
    """Protocol names; a protocol also behind IPv6 extension headers is named once."""
    numbers = {p for lo, hi in proto for p in range(lo, hi + 1)}
    top = 511 if version == 6 else 255
    if len(numbers) > 128:
        rest = iv_sub(ivs((0, top)), proto)
        return "any protocol" + (f" but {_describe_protos(rest, version)}" if rest else "")
    names = []
    for p in sorted(numbers):
        base = p % EXT
        if p >= EXT and base in numbers:
            continue
        name = NUMBER_NAMES.get(base, f"protocol {base}")
        if name == "icmpv6" and version == 4:
            name = "protocol 58"
        names.append(name + (" behind IPv6 extension headers" if p >= EXT else ""))
    return "/".join(names)


def _describe_addresses(addr: Ivs, version: int, limit: int = 3) -> str:
    """Each range as one network where it is one, else as first-last."""
    cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    parts = []
    for lo, hi in addr[:limit]:
        nets = list(ipaddress.summarize_address_range(cls(lo), cls(hi)))
        parts.append(str(nets[0]) if len(nets) == 1 else f"{cls(lo)}-{cls(hi)}")
    if len(addr) > limit:
        parts.append(f"{len(addr) - limit} more ranges")
    return ", ".join(parts)


def _describe_ivs(values: Ivs, limit: int) -> str:
    parts = [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in values]
    if len(parts) > limit:
        return ", ".join(parts[:limit]) + f" and {len(parts) - limit} more"
    return ", ".join(parts)


def slot(interfaces: tuple[str, ...], name: str) -> int:
    """The interface slot a real interface name falls in: its own, else that of the longest
    wildcard matching it, else the slot of every other name."""
    if name in interfaces:
        return interfaces.index(name)
    best = max(((len(n), i) for i, n in enumerate(interfaces)
                if n.endswith(WILDCARD) and name.startswith(n[:-1])), default=None)
    return interfaces.index(OTHER) if best is None else best[1]


def admits(result: Result, proto: int, address: str, port: int, interface: str = "",
           state: str = "new") -> bool:
    """Whether one packet (no IPv6 extension headers) may open a connection through the hook:
    a point query on the accepted region, for tests and for explaining a verdict."""
    ip = ipaddress.ip_address(address)
    if ip.version != result.version:
        return False
    iface = slot(result.interfaces, interface)
    point = (proto, int(ip), port, iface, CT_STATES.index(state))
    return any(all(any(lo <= x <= hi for lo, hi in dim) for x, dim in zip(point, box.dims,
                                                                          strict=True))
               for box in result.accepted)
