"""The ruleset evaluator against the kernel: generated rulesets are loaded with `nft -f` into a
namespace, real TCP SYNs and UDP datagrams are sent, and what reached the other end of a veth
must be exactly what `netlock.ruleset` says the output hook accepts.

Two namespaces made here, `<prefix>-snd` and `<prefix>-rcv`, joined by a veth. The sender
routes 10.201.0.0/16 and fd55::/16 over it (static neighbours, so no ARP/ND packet has to
pass the ruleset under test); the receiver has none of those addresses and does not forward,
so nothing answers and nothing goes further: an AF_PACKET socket on its end of the veth
records each (IP version, protocol, destination, port) that arrived. Per ruleset, one
long-lived process in the sender loads it (replacing the previous one), reads it back as JSON,
sends every probe, flushes the ruleset and sends a marker datagram; the receiver reports what
arrived before the marker. The generator uses only constructs the evaluator claims to read
exactly, so the answer must be equal, not merely on the safe side: a packet that got through
where the evaluator says "dropped" is a soundness bug, the reverse a precision bug.
"""

from __future__ import annotations

import json
import random
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from floor_agent.netlock import ruleset
from floor_agent.simulated.network import namespaces, new_prefix

EXAMPLES = 600
SND_V4, RCV_V4 = "10.200.0.1", "10.200.0.2"
SND_V6, RCV_V6 = "fd54::1", "fd54::2"
RCV_MAC = "02:00:00:00:00:02"
MARKER = ("10.201.255.255", 9)  # never a probe address; sent with the ruleset flushed

V4_HOSTS = ["10.201.0.1", "10.201.0.77", "10.201.1.5", "10.201.1.200", "10.201.2.9",
            "10.201.3.250"]
V6_HOSTS = ["fd55::1", "fd55::77", "fd55:0:0:1::5", "fd55:0:0:1::c8", "fd55:0:0:2::9",
            "fd55:1::fa"]
PORTS = [22, 53, 80, 443, 1000, 8080]

RECEIVER = r"""
import json, socket, struct, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind(("eth0", 0))
print("ready", flush=True)
seen = set()
while True:
    frame, addr = s.recvfrom(65535)
    if addr[2] == socket.PACKET_OUTGOING:
        continue
    kind = struct.unpack("!H", frame[12:14])[0]
    ip = frame[14:]
    if kind == 0x0800:
        proto, hl = ip[9], (ip[0] & 15) * 4
        dst = socket.inet_ntop(socket.AF_INET, ip[16:20])
        l4, version = ip[hl:], 4
    elif kind == 0x86DD:
        proto, dst, l4, version = ip[6], socket.inet_ntop(socket.AF_INET6, ip[24:40]), ip[40:], 6
    else:
        continue
    if proto not in (6, 17):
        continue
    port = struct.unpack("!H", l4[2:4])[0]
    if (dst, port) == (sys.argv[1], int(sys.argv[2])):
        print(json.dumps(sorted(seen)), flush=True)
        seen = set()
    else:
        seen.add((version, proto, dst, port))
"""

# Each probe leaves from a source port of its own for the whole run: a probe that reused the
# 5-tuple of an earlier ruleset's probe met that probe's conntrack entry, and a packet of a
# known connection skips the nat chains (seen once in ~1,800 rulesets: a nat chain's drop the
# kernel did not apply, for a connection that was not new to it).
SENDER = r"""
import errno, itertools, json, socket, subprocess, sys
def nft(args, text=None):
    return subprocess.run(["nft", *args], input=text, capture_output=True, text=True)
source_ports = itertools.cycle(range(20000, 65000))
for line in sys.stdin:
    job = json.loads(line)
    load = nft(["-f", "-"], "flush ruleset\n" + job["nft"])
    if load.returncode != 0:
        print(json.dumps({"error": load.stderr}), flush=True)
        continue
    listing = json.loads(nft(["-j", "list", "ruleset"]).stdout)
    for version, proto, address, port in job["probes"]:
        family = socket.AF_INET if version == 4 else socket.AF_INET6
        kind = socket.SOCK_STREAM if proto == 6 else socket.SOCK_DGRAM
        with socket.socket(family, kind) as s:
            s.setblocking(False)
            try:
                s.bind(("0.0.0.0" if version == 4 else "::", next(source_ports)))
            except OSError:
                pass  # taken by something else: an ephemeral port, as before
            try:
                if proto == 6:
                    s.connect_ex((address, port))
                else:
                    s.sendto(b"probe", (address, port))
            except OSError:
                pass  # EPERM: the ruleset dropped it
    nft(["flush", "ruleset"])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"marker", (sys.argv[1], int(sys.argv[2])))
    print(json.dumps({"listing": listing}), flush=True)
"""


@dataclass
class Pair:
    snd: str
    rcv: str
    sender: subprocess.Popen[str]
    receiver: subprocess.Popen[str]

    def run(self, text: str, probes: list[tuple[int, int, str, int]]
            ) -> tuple[dict[str, Any], set[tuple[int, int, str, int]]]:
        """Load `text`, send `probes`; the kernel's listing and the probes that arrived."""
        assert self.sender.stdin and self.sender.stdout and self.receiver.stdout
        self.sender.stdin.write(json.dumps({"nft": text, "probes": probes}) + "\n")
        self.sender.stdin.flush()
        answer = json.loads(_line(self.sender))
        if "error" in answer:
            raise AssertionError(f"nft refused a generated ruleset:\n{text}\n{answer['error']}")
        arrived = {tuple(x) for x in json.loads(_line(self.receiver))}
        return answer["listing"], arrived  # type: ignore[return-value]


def _line(proc: subprocess.Popen[str], seconds: float = 20) -> str:
    """The next line a helper prints; a helper that hangs or died fails the test, not the run."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], seconds)
    line = proc.stdout.readline() if ready else ""
    if not line:
        raise AssertionError(f"helper silent for {seconds} s or gone (exit {proc.poll()})")
    return line


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    prefix = new_prefix()
    snd, rcv = f"{prefix}-snd", f"{prefix}-rcv"
    made: list[str] = []
    procs: list[subprocess.Popen[str]] = []
    try:
        for ns in (snd, rcv):
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", snd, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
            "netns", rcv)
        _ip("-n", rcv, "link", "set", "eth0", "address", RCV_MAC)
        _ip("-n", snd, "addr", "add", f"{SND_V4}/24", "dev", "eth0")
        _ip("-n", snd, "addr", "add", f"{SND_V6}/64", "dev", "eth0", "nodad")
        _ip("-n", rcv, "addr", "add", f"{RCV_V4}/24", "dev", "eth0")
        _ip("-n", rcv, "addr", "add", f"{RCV_V6}/64", "dev", "eth0", "nodad")
        for ns in (snd, rcv):
            _ip("-n", ns, "link", "set", "eth0", "up")
        for gw in (RCV_V4, RCV_V6):
            _ip("-n", snd, "neigh", "replace", gw, "lladdr", RCV_MAC, "dev", "eth0", "nud",
                "permanent")
        _ip("-n", snd, "route", "add", "10.201.0.0/16", "via", RCV_V4)
        _ip("-n", snd, "-6", "route", "add", "fd55::/16", "via", RCV_V6)
        receiver = subprocess.Popen(
            ["ip", "netns", "exec", rcv, sys.executable, "-c", RECEIVER, *map(str, MARKER)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        procs.append(receiver)
        assert _line(receiver).strip() == "ready"
        sender = subprocess.Popen(
            ["ip", "netns", "exec", snd, sys.executable, "-c", SENDER, *map(str, MARKER)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(sender)
        yield Pair(snd, rcv, sender, receiver)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)
        for ns in reversed(made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    assert not namespaces(prefix), f"left behind: {namespaces(prefix)}"


# --------------------------------------------------------------------------- the generator


class Gen:
    """A random ruleset of the constructs the evaluator reads exactly, as nft text."""

    def __init__(self, rnd: random.Random) -> None:
        self.r = rnd

    def ruleset(self) -> str:
        r = self.r
        tables = []
        for i in range(r.choice([1, 1, 2, 3])):
            family = r.choice(["inet", "inet", "ip", "ip6"])
            tables.append(self.table(family, f"t{i}"))
        return "\n".join(tables)

    def table(self, family: str, name: str) -> str:
        r = self.r
        regular = [f"c{i}" for i in range(r.choice([0, 1, 2, 2]))]
        lines = [f"table {family} {name} {{"]
        if family in ("inet", "ip"):
            lines.append("  set a4 { type ipv4_addr; flags interval; elements = { "
                         + ", ".join(self.v4_items(r.randint(1, 3))) + " } }")
        if family in ("inet", "ip6"):
            lines.append("  set a6 { type ipv6_addr; flags interval; elements = { "
                         + ", ".join(self.v6_items(r.randint(1, 3))) + " } }")
        lines.append("  set ps { type inet_service; flags interval; elements = { "
                     + ", ".join(self.port_items(r.randint(1, 3))) + " } }")
        lines.append("  map vm { type inet_service : verdict; flags interval; elements = { "
                     + ", ".join(f"{p} : {r.choice(['accept', 'drop'])}"
                                 for p in self.port_items(r.randint(1, 3))) + " } }")
        if family in ("inet", "ip"):
            pairs = {f"{a} . {p}" for a in r.sample(V4_HOSTS, 2) for p in r.sample(PORTS, 2)}
            lines.append("  set cc { type ipv4_addr . inet_service; elements = { "
                         + ", ".join(sorted(pairs)) + " } }")
        for i, chain in enumerate(regular):
            lines.append(f"  chain {chain} {{")
            lines += [f"    {self.rule(family, regular[i + 1:], base=False)}"
                      for _ in range(r.randint(1, 4))]
            lines.append("  }")
        for j in range(r.choice([1, 1, 2])):
            prio = r.choice([-10, 0, 10])
            policy = r.choice(["accept", "drop"])
            # now and then a nat chain: it sees only the first packet of a tracked flow
            nat = family != "ip6" and r.random() < 0.15
            lines.append(f"  chain out{j} {{")
            lines.append(f"    type {'nat' if nat else 'filter'} hook output priority {prio}; "
                         f"policy {policy};")
            lines += [f"    {self.rule(family, regular, base=True)}"
                      for _ in range(r.randint(0, 6))]
            lines.append("  }")
        lines.append("}")
        return "\n".join(lines)

    def rule(self, family: str, targets: list[str], base: bool) -> str:
        r = self.r
        flavor = {"ip": 4, "ip6": 6}.get(family, r.choice([None, None, 4, 6]))
        conds: list[str] = []
        proto: str | None = None
        for _ in range(r.choice([0, 1, 1, 2, 2, 3])):
            kind = r.choice(["nfproto", "l4proto", "ipproto", "daddr", "daddr", "dport",
                             "dport", "oif", "ct", "concat"])
            if kind == "nfproto" and family == "inet" and flavor is None:
                flavor = r.choice([4, 6])
                conds.append(f"meta nfproto {'ipv4' if flavor == 4 else 'ipv6'}")
            elif kind == "l4proto" and proto is None:
                proto, text = r.choice([("tcp", "tcp"), ("udp", "udp"), ("any", "{ tcp, udp }"),
                                        ("any", "!= tcp"), ("any", "!= udp")])
                conds.append(f"meta l4proto {text}")
            elif kind == "ipproto" and flavor is not None and proto is None:
                proto = r.choice(["tcp", "udp"])
                neg = r.choice(["", "!= "]) if flavor == 4 else ""
                proto = "any" if neg else proto
                field = "ip protocol" if flavor == 4 else "ip6 nexthdr"
                conds.append(f"{field} {neg}{'udp' if neg else proto}")
            elif kind == "daddr" and flavor is not None:
                conds.append(self.daddr(flavor))
            elif kind == "dport":
                # after `meta l4proto { tcp, udp }` nft refuses `tcp dport`: only th then
                which = (proto if proto in ("tcp", "udp") else "th" if proto == "any"
                         else r.choice(["tcp", "udp", "th"]))
                if which != "th" and proto is None:
                    proto = which
                conds.append(f"{which} dport {r.choice(['', '!= '])}{self.ports()}")
            elif kind == "concat" and flavor == 4 and proto in (None, "tcp"):
                proto = "tcp"
                if r.random() < 0.5:
                    conds.append(f"ip daddr . tcp dport {r.choice(['', '!= '])}@cc")
                else:
                    pairs = [f"{a} . {p}" for a in r.sample(V4_HOSTS, 2) for p in (22, 80)]
                    conds.append(f"ip daddr . tcp dport {{ {', '.join(pairs)} }}")
            elif kind == "oif":
                conds.append(r.choice(['oifname "eth0"', 'oifname != "eth0"', 'oif "lo"',
                                       'oifname "dummy9"', 'oif != "lo"', 'oif "eth0"',
                                       'oifname "eth*"', 'oifname != "et*"', 'oifname "e*"',
                                       'oifname { "veth*", "lo" }']))
            elif kind == "ct":
                conds.append("ct state " + r.choice(["new", "established,related",
                                                     "!= established", "{ new, untracked }",
                                                     "invalid"]))
        verdict = self.verdict(flavor, proto, targets, base)
        return " ".join([*conds, verdict])

    def verdict(self, flavor: int | None, proto: str | None, targets: list[str],
                base: bool) -> str:
        r = self.r
        choices = ["accept", "accept", "drop", "drop", "reject", "counter", "vmap"]
        if targets:
            choices += ["jump", "goto"]
        if not base:
            choices += ["return"]
        v = r.choice(choices)
        if v in ("jump", "goto"):
            return f"{v} {r.choice(targets)}"
        if v == "vmap":
            simple = ["accept", "drop"] + ([f"jump {t}" for t in targets] if targets else [])
            if proto in (None, "tcp", "udp") and r.random() < 0.2:
                return f"{proto or r.choice(['tcp', 'udp'])} dport vmap @vm"
            if proto in (None, "tcp", "udp") and r.random() < 0.6:
                which = proto or r.choice(["tcp", "udp"])
                keys = r.sample(["22", "53", "80-100", "443", "1000-2000", "8080"], r.randint(1, 3))
                body = ", ".join(f"{k} : {r.choice(simple)}" for k in keys)
                return f"{which} dport vmap {{ {body} }}"
            if flavor is not None and r.random() < 0.5:
                hosts = V4_HOSTS if flavor == 4 else V6_HOSTS
                body = ", ".join(f"{h} : {r.choice(simple)}" for h in r.sample(hosts, 2))
                return f"{'ip' if flavor == 4 else 'ip6'} daddr vmap {{ {body} }}"
            return f"meta l4proto vmap {{ tcp : {r.choice(simple)}, udp : {r.choice(simple)} }}"
        return v

    def daddr(self, flavor: int) -> str:
        r = self.r
        field = "ip daddr" if flavor == 4 else "ip6 daddr"
        items = self.v4_items(r.randint(1, 2)) if flavor == 4 else self.v6_items(r.randint(1, 2))
        spec = r.choice(["one", "set", "named"])
        neg = r.choice(["", "", "!= "])
        if spec == "named":
            return f"{field} {neg}@{'a4' if flavor == 4 else 'a6'}"
        if spec == "set" and len(items) > 1:
            return f"{field} {neg}{{ {', '.join(items)} }}"
        return f"{field} {neg}{items[0]}"

    def v4_items(self, n: int) -> list[str]:
        r = self.r
        pool = ["10.201.0.0/24", "10.201.1.0/25", "10.201.0.77", "10.201.2.0-10.201.3.100",
                "10.201.1.128/25", "0.0.0.0/0", "10.201.0.0/16", "10.201.3.250"]
        return self._disjoint(r.sample(pool, n), 4)

    def v6_items(self, n: int) -> list[str]:
        r = self.r
        pool = ["fd55::/64", "fd55:0:0:1::/64", "fd55::77", "fd55:0:0:2::-fd55:1::ff",
                "fd55:1::/48", "::/0", "fd55::/32", "fd55:0:0:1::c8"]
        return self._disjoint(r.sample(pool, n), 6)

    def port_items(self, n: int) -> list[str]:
        return self._ports_disjoint(self.r.sample(["22", "53", "80-100", "443", "1000-2000",
                                                  "8000-9000", "0-52"], n))

    def ports(self) -> str:
        r = self.r
        shape = r.choice(["one", "range", "set", "named"])
        if shape == "named":
            return "@ps"
        if shape == "set":
            return "{ " + ", ".join(self.port_items(r.randint(1, 3))) + " }"
        return r.choice(["22", "53", "443", "8080"]) if shape == "one" else r.choice(
            ["50-500", "1-1000", "1000-9000"])

    @staticmethod
    def _disjoint(items: list[str], version: int) -> list[str]:
        """nft refuses overlapping elements in a named interval set: keep the first of any
        overlapping ones."""
        kept: list[tuple[str, int, int]] = []
        for item in items:
            lo, hi = _bounds(item, version)
            if all(hi < a or lo > b for _, a, b in kept):
                kept.append((item, lo, hi))
        return [k[0] for k in kept]

    @staticmethod
    def _ports_disjoint(items: list[str]) -> list[str]:
        kept: list[tuple[str, int, int]] = []
        for item in items:
            lo, _, hi = item.partition("-")
            a, b = int(lo), int(hi or lo)
            if all(b < x or a > y for _, x, y in kept):
                kept.append((item, a, b))
        return [k[0] for k in kept]


def _bounds(item: str, version: int) -> tuple[int, int]:
    import ipaddress

    if "-" in item:
        lo, hi = item.split("-")
        return int(ipaddress.ip_address(lo)), int(ipaddress.ip_address(hi))
    net = ipaddress.ip_network(item, strict=False)
    return int(net.network_address), int(net.broadcast_address)


def probes(rnd: random.Random, n: int) -> list[tuple[int, int, str, int]]:
    every = [(v, p, a, port) for v, hosts in ((4, V4_HOSTS), (6, V6_HOSTS)) for p in (6, 17)
             for a in hosts for port in PORTS]
    return rnd.sample(every, n)


# --------------------------------------------------------------------------- the property

STATS = {"rulesets": 0, "probes": 0, "through": 0, "started": 0.0}


@settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_evaluator_agrees_with_the_kernel(pair: Pair, seed: int) -> None:
    if not STATS["started"]:
        STATS["started"] = time.monotonic()
    rnd = random.Random(seed)
    text = Gen(rnd).ruleset()
    batch = probes(rnd, 64)
    listing, arrived = pair.run(text, batch)
    results = {v: ruleset.evaluate(listing, "output", v) for v in (4, 6)}
    wrong = []
    for version, proto, address, port in batch:
        said = ruleset.admits(results[version], proto, address, port, "eth0")
        got = (version, proto, address, port) in arrived
        if said != got:
            wrong.append(f"{'tcp' if proto == 6 else 'udp'} {address} {port}: kernel "
                         f"{'passed' if got else 'dropped'}, evaluator "
                         f"{'accepts' if said else 'drops'}")
    STATS["rulesets"] += 1
    STATS["probes"] += len(batch)
    STATS["through"] += len(arrived)
    assert not wrong, f"seed {seed}\n{text}\n" + "\n".join(wrong[:10]) + "\n" + "\n".join(
        results[4].notes + results[6].notes)


def test_the_property_ran_hundreds_of_rulesets_with_both_outcomes() -> None:
    """Guards the guard: the property above really compared hundreds of rulesets, and the
    probes were neither all dropped nor all through (a dead veth would pass it vacuously)."""
    assert STATS["rulesets"] >= EXAMPLES * 0.9, STATS
    assert 0.1 < STATS["through"] / STATS["probes"] < 0.9, STATS
    print(f"\nkernel differential: {STATS['rulesets']} rulesets, {STATS['probes']} probes, "
          f"{STATS['through']} through, {time.monotonic() - STATS['started']:.1f} s")
