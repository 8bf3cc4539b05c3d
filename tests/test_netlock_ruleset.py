"""netlock.ruleset: what a ruleset means for new connections, read from real `nft -j list
ruleset` output (each ruleset below is loaded by nft in a throwaway network namespace, so the
JSON is exactly what the kernel holds), and the firewall checks built on it."""

from __future__ import annotations

import copy
import json
import subprocess
import tempfile
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from floor_agent.netlock import firewall, ruleset
from floor_agent.netlock.allowlist import Allowlist, build
from floor_agent.netlock.checks import Verdict, judge_hook, run
from floor_agent.netlock.config import NetlockConfig
from floor_agent.netlock.facts import Fact, Facts
from floor_agent.netlock.ruleset import admits, evaluate

CONFIG = NetlockConfig(
    enabled=True,
    allow=[{"name": "central", "addresses": ["10.99.0.5", "fd00:99::5"], "tcp": [443],
            "udp": [53], "must_reach": [443]}],
    networks=["10.99.0.0/24", "fd00:99::/64"],
)
ALLOW: Allowlist = build(CONFIG, resolve=lambda name: [])
HEAD = "table inet fw {\n chain output {\n  type filter hook output priority 0; policy drop;\n"
SAFE = ('  oif "lo" accept\n  ct state established,related accept\n'
        "  ip daddr 10.99.0.5 tcp dport 443 accept\n")


def listing(text: str) -> dict[str, Any]:
    """`nft -j list ruleset` after loading `text` in a fresh network namespace."""
    with tempfile.NamedTemporaryFile("w", suffix=".nft") as f:
        f.write(text)
        f.flush()
        proc = subprocess.run(["unshare", "-n", "sh", "-c", f"nft -f {f.name} && nft -j list "
                               "ruleset"], capture_output=True, text=True, timeout=20,
                              check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def output(rules: str, head: str = HEAD, tail: str = " }\n}\n") -> dict[str, Any]:
    return listing(head + rules + tail)


def out(data: dict[str, Any], version: int = 4) -> ruleset.Result:
    return evaluate(data, "output", version)


def firewall_output(data: dict[str, Any]) -> Verdict:
    """The firewall.output check on facts holding only this ruleset."""
    facts = Facts(**{name: Fact(data) if name == "ruleset" else Fact(None, "not collected")
                     for name in Facts.__dataclass_fields__})
    (verdict,) = run(facts, CONFIG, ALLOW, only=["firewall.output"])
    return verdict


# --------------------------------------------------------------------------- the holes


@pytest.mark.parametrize(("hole", "version", "proto", "address", "port"), [
    ("meta nfproto ipv6 accept", 6, 6, "2001:db8::1", 443),
    ("ip daddr 0.0.0.0/0 accept", 4, 17, "192.0.2.1", 9999),
    ("tcp dport 53 accept", 4, 6, "8.8.8.8", 53),
])
def test_a_conditional_accept_that_opens_everything_fails(hole: str, version: int, proto: int,
                                                          address: str, port: int) -> None:
    """Issue 16 item 1: each of these passed as "drops by default" before."""
    data = output(SAFE + f"  {hole}\n")
    assert admits(out(data, version), proto, address, port, "eth0")
    v = firewall_output(data)
    assert v.verdict == "fail"
    assert v.summary.startswith("output hook open for IPv")
    [line] = [e for e in v.evidence if hole in e and e.startswith(f"IPv{version} ")]
    assert line.startswith(f"IPv{version} output: inet fw output handle ")
    assert "outside the allowlist" in line


def test_the_three_holes_name_the_right_versions() -> None:
    assert firewall_output(output(SAFE + "  meta nfproto ipv6 accept\n")).summary == (
        "output hook open for IPv6")
    assert firewall_output(output(SAFE + "  ip daddr 0.0.0.0/0 accept\n")).summary == (
        "output hook open for IPv4")
    v = firewall_output(output(SAFE + "  tcp dport 53 accept\n"))
    assert v.summary == "output hook open for IPv4 and IPv6"
    assert any("tcp to 0.0.0.0-126.255.255.255, 128.0.0.0/1 port 53" in e
               for e in v.evidence), v.evidence


def test_the_projects_own_rendered_ruleset_passes_every_hook() -> None:
    script = firewall.render(CONFIG, ALLOW)
    data = listing(script)
    for hook in ("input", "forward", "output"):
        judged = judge_hook(data, hook, ALLOW)
        assert judged.closed, (hook, judged.bad)
    assert firewall_output(data).verdict == "pass"
    result = out(data)
    assert admits(result, 6, "10.99.0.5", 443, "eth0")
    assert not admits(result, 6, "10.99.0.5", 444, "eth0")
    assert admits(result, 17, "10.99.0.5", 53, "eth0")
    assert not admits(result, 17, "10.99.0.6", 53, "eth0")
    assert admits(out(data, 6), 6, "fd00:99::5", 443, "eth0")


def test_an_allowed_server_on_a_wider_port_range_fails() -> None:
    v = firewall_output(output("  ip daddr 10.99.0.5 tcp dport 1-1000 accept\n"))
    assert v.verdict == "fail"
    assert any("port 1-442, 444-1000" in e for e in v.evidence), v.evidence


# --------------------------------------------------------------------------- conntrack


def test_established_and_related_do_not_open_egress_but_new_does() -> None:
    assert not out(output("  ct state established,related accept\n")).accepted
    data = output("  ct state new accept\n")
    assert admits(out(data), 6, "192.0.2.1", 80, "eth0")
    assert not admits(out(data), 6, "192.0.2.1", 80, "eth0", state="invalid")
    # no ct condition: new, invalid and untracked packets all pass
    data = output("  tcp dport 80 accept\n")
    assert all(admits(out(data), 6, "192.0.2.1", 80, "eth0", state=s)
               for s in ("new", "invalid", "untracked"))
    assert not admits(out(data), 6, "192.0.2.1", 80, "eth0", state="established")


def test_ct_state_invalid_accept_opens_egress() -> None:
    """Invalid packets continue no flow: accepting them opens a way out."""
    data = output("  ct state invalid accept\n")
    assert firewall_output(data).verdict == "fail"


def test_loopback_is_the_machine_itself() -> None:
    data = output('  oif "lo" accept\n  oifname "lo" accept\n')
    assert not out(data).accepted
    assert firewall_output(data).verdict == "pass"
    data = output('  oifname "eth0" accept\n')
    assert admits(out(data), 6, "192.0.2.1", 80, "eth0")
    assert not admits(out(data), 6, "192.0.2.1", 80, "wlan0")
    assert firewall_output(data).verdict == "fail"
    data = output('  oifname != "eth0" accept\n')
    assert admits(out(data), 6, "192.0.2.1", 80, "wlan0")
    assert not admits(out(data), 6, "192.0.2.1", 80, "eth0")


# --------------------------------------------------------------------------- control flow


def test_jump_returns_and_goto_ends_in_the_policy() -> None:
    chains = (" chain sub {\n  tcp dport 22 return\n  tcp dport 1-100 accept\n }\n"
              " chain sub2 {\n  tcp dport 25 drop\n }\n")
    head = "table inet fw {\n" + chains + (" chain output {\n  type filter hook output "
                                           "priority 0; policy drop;\n")
    data = output("  jump sub\n  tcp dport 22 accept\n", head=head)
    assert admits(out(data), 6, "192.0.2.1", 22, "eth0")  # returned, then accepted
    assert admits(out(data), 6, "192.0.2.1", 80, "eth0")
    assert not admits(out(data), 6, "192.0.2.1", 443, "eth0")
    # goto: falling off sub2 ends in the base chain's policy, not in the next rule
    data = output("  goto sub2\n  accept\n", head=head)
    assert not out(data).accepted
    data = output("  goto sub2\n  accept\n", head=head.replace("policy drop", "policy accept"))
    assert admits(out(data), 6, "192.0.2.1", 80, "eth0")
    assert not admits(out(data), 6, "192.0.2.1", 25, "eth0")


def test_named_sets_maps_and_verdict_maps() -> None:
    head = ("table inet fw {\n set bad { type ipv4_addr; flags interval; elements = "
            "{ 192.0.2.0/24, 198.51.100.1-198.51.100.9 } }\n"
            " map ports { type inet_service : verdict; elements = { 22 : drop, 80 : accept } }\n"
            " chain output {\n  type filter hook output priority 0; policy drop;\n")
    data = output("  ip daddr @bad drop\n  tcp dport vmap @ports\n"
                  "  udp dport vmap { 53 : accept, 54-60 : drop }\n", head=head)
    r = out(data)
    assert admits(r, 6, "203.0.113.1", 80, "eth0")
    assert not admits(r, 6, "192.0.2.7", 80, "eth0")
    assert not admits(r, 6, "198.51.100.5", 80, "eth0")
    assert admits(r, 6, "198.51.100.10", 80, "eth0")
    assert not admits(r, 6, "203.0.113.1", 22, "eth0")
    assert admits(r, 17, "203.0.113.1", 53, "eth0")
    assert not admits(r, 17, "203.0.113.1", 55, "eth0")
    data = output("  ip daddr . tcp dport { 203.0.113.1 . 80, 203.0.113.2 . 443 } accept\n")
    assert admits(out(data), 6, "203.0.113.2", 443, "eth0")
    assert not admits(out(data), 6, "203.0.113.2", 80, "eth0")


def test_negations_keep_the_protocol_they_depend_on() -> None:
    data = output("  tcp dport != 22 accept\n")
    assert admits(out(data), 6, "192.0.2.1", 80, "eth0")
    assert not admits(out(data), 6, "192.0.2.1", 22, "eth0")
    assert not admits(out(data), 17, "192.0.2.1", 80, "eth0")  # != 22 still needs TCP
    data = output("  ip daddr != { 10.0.0.0/8, 192.0.2.1 } accept\n")
    assert admits(out(data), 17, "192.0.2.2", 1, "eth0")
    assert not admits(out(data), 17, "10.1.2.3", 1, "eth0")
    assert not out(data, 6).accepted  # an ip match never matches IPv6
    data = output("  meta l4proto != tcp accept\n")
    assert admits(out(data), 17, "192.0.2.2", 1, "eth0")
    assert not admits(out(data), 6, "192.0.2.2", 1, "eth0")


def test_every_table_and_base_chain_at_the_hook_must_let_a_packet_through() -> None:
    """Accept ends only its own base chain; a drop in any other is final, at any priority."""
    text = ("table inet a {\n chain output {\n  type filter hook output priority -10; "
            "policy accept;\n  tcp dport 22 drop\n }\n}\n"
            "table ip b {\n chain out {\n  type filter hook output priority 10; policy drop;\n"
            "  tcp dport { 22, 80 } accept\n }\n}\n"
            "table ip6 c {\n chain out {\n  type filter hook output priority 0; policy drop;\n"
            " }\n}\n")
    data = listing(text)
    assert admits(out(data), 6, "192.0.2.1", 80, "eth0")
    assert not admits(out(data), 6, "192.0.2.1", 22, "eth0")  # accepted by b, dropped by a
    assert not admits(out(data), 6, "192.0.2.1", 443, "eth0")
    assert admits(out(data, 6), 6, "2001:db8::1", 22, "eth0") is False  # c drops all IPv6
    v = firewall_output(data)
    assert v.summary == "output hook open for IPv4"
    assert any(e.startswith("IPv4 output: inet a output: policy accept then ip b out handle")
               for e in v.evidence), v.evidence


def test_a_policy_accept_chain_alone_is_open() -> None:
    data = listing("table inet a {\n chain output {\n  type filter hook output priority 0; "
                   "policy accept;\n }\n}\n")
    v = firewall_output(data)
    assert v.summary == "output hook open for IPv4 and IPv6"
    assert "IPv4 output: no drop-policy filter chain in an inet or ip table" in v.evidence


# --------------------------------------------------------------------------- unknowns


def test_an_unknown_match_in_an_accept_rule_may_match_everything() -> None:
    data = output(SAFE + "  meta skuid 0 accept\n")
    assert admits(out(data), 6, "192.0.2.1", 80, "eth0")
    v = firewall_output(data)
    assert v.verdict == "fail"
    assert any(e.startswith("evaluator: inet fw output handle ") and "meta skuid" in e
               and "counted as matching every packet" in e for e in v.evidence), v.evidence


def test_an_unknown_match_in_a_drop_rule_may_match_nothing() -> None:
    text = ("table inet fw {\n chain output {\n  type filter hook output priority 0; "
            "policy accept;\n  meta skuid 0 drop\n  tcp dport 22 drop\n }\n}\n")
    data = listing(text)
    assert admits(out(data), 6, "192.0.2.1", 80, "eth0")
    assert not admits(out(data), 6, "192.0.2.1", 22, "eth0")
    v = firewall_output(data)
    assert v.verdict == "fail"
    assert any("meta skuid" in e and "counted as matching nothing" in e for e in v.evidence)


def test_a_rate_limit_never_counts_as_a_drop() -> None:
    data = output("  limit rate 1/second accept\n")
    assert admits(out(data), 6, "192.0.2.1", 80, "eth0")
    data = listing("table inet fw {\n chain output {\n  type filter hook output priority 0; "
                   "policy accept;\n  limit rate 1/second drop\n }\n}\n")
    assert admits(out(data), 6, "192.0.2.1", 80, "eth0")


def test_a_rewrite_after_the_filter_sends_packets_anywhere() -> None:
    """A dnat after the filter (priority 100) takes an allowed packet elsewhere; one before
    it (-100) is filtered by where it now goes."""
    nat = ("table ip nat {{\n chain output {{\n  type nat hook output priority {}; "
           "policy accept;\n  tcp dport 443 dnat to 192.0.2.99\n }}\n}}\n")
    data = listing(nat.format(100) + HEAD + SAFE + " }\n}\n")
    assert admits(out(data), 6, "192.0.2.99", 443, "eth0")
    v = firewall_output(data)
    assert v.verdict == "fail"
    assert any(e.startswith("IPv4 output: inet fw output handle ") and " then ip nat output "
               "handle " in e and "dnat" in e for e in v.evidence), v.evidence
    data = listing(nat.format(-100) + HEAD + SAFE + " }\n}\n")
    assert not admits(out(data), 6, "192.0.2.99", 443, "eth0")
    assert firewall_output(data).verdict == "pass"


def test_unknown_set_elements_are_not_trusted() -> None:
    head = ("table inet fw {\n set seen { type ipv4_addr; flags dynamic,timeout; timeout 1m; }\n"
            " chain output {\n  type filter hook output priority 0; policy accept;\n")
    data = output("  ip daddr @seen drop\n", head=head)
    assert admits(out(data), 6, "192.0.2.1", 80, "eth0")


# --------------------------------------------------------------------------- input, forward


def test_input_accepts_only_peers_inside_the_allowlist() -> None:
    head = "table inet fw {\n chain input {\n  type filter hook input priority 0; policy drop;\n"
    ok = output('  iif "lo" accept\n  ct state established,related accept\n'
                "  ip saddr 10.99.0.5 tcp sport 443 accept\n  ip saddr 10.99.0.0/24 accept\n",
                head=head)
    assert judge_hook(ok, "input", ALLOW).closed
    bad = output("  tcp dport 22 accept\n", head=head)
    judged = judge_hook(bad, "input", ALLOW)
    assert judged.open_versions == (4, 6)
    assert any("tcp from 0.0.0.0-10.98.255.255, 10.99.1.0-" in e for e in judged.bad), judged.bad


def test_forward_judged_like_output() -> None:
    head = ("table inet fw {\n chain forward {\n  type filter hook forward priority 0; "
            "policy drop;\n")
    assert judge_hook(output("  ip daddr 10.99.0.5 tcp dport 443 accept\n", head=head),
                      "forward", ALLOW).closed
    assert not judge_hook(output("  udp dport 53 accept\n", head=head), "forward",
                          ALLOW).closed


# --------------------------------------------------------------------------- generated


@settings(max_examples=60, deadline=None)
@given(ports=st.lists(st.integers(1, 65535), min_size=1, max_size=6, unique=True),
       negate=st.booleans(), probe=st.integers(1, 65535))
def test_a_port_set_accepts_exactly_its_ports(ports: list[int], negate: bool,
                                              probe: int) -> None:
    """Pure JSON (no nft): the evaluator reads a port set and its negation exactly."""
    data = {"nftables": [
        {"table": {"family": "inet", "name": "fw"}},
        {"chain": {"family": "inet", "table": "fw", "name": "output", "type": "filter",
                   "hook": "output", "prio": 0, "policy": "drop"}},
        {"rule": {"family": "inet", "table": "fw", "chain": "output", "handle": 2, "expr": [
            {"match": {"op": "!=" if negate else "==",
                       "left": {"payload": {"protocol": "udp", "field": "dport"}},
                       "right": {"set": sorted(ports)}}},
            {"accept": None}]}}]}
    for version, address in ((4, "192.0.2.1"), (6, "2001:db8::1")):
        r = evaluate(data, "output", version)
        assert admits(r, 17, address, probe, "eth0") == ((probe in ports) != negate)
        assert not admits(r, 6, address, probe, "eth0")


intervals = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 8)), max_size=6).map(
    lambda pairs: ruleset.normalize((lo, lo + span) for lo, span in pairs))


def points(ivs: ruleset.Ivs) -> set[int]:
    return {x for lo, hi in ivs for x in range(lo, hi + 1)}


@settings(max_examples=300, deadline=None)
@given(a=intervals, b=intervals)
def test_interval_operations_agree_with_sets(a: ruleset.Ivs, b: ruleset.Ivs) -> None:
    """The bisecting interval operations under every region computation, against plain sets
    (results stay sorted, disjoint and non-adjacent)."""
    for got, want in ((ruleset.iv_and(a, b), points(a) & points(b)),
                      (ruleset.iv_sub(a, b), points(a) - points(b)),
                      (ruleset.iv_or(a, b), points(a) | points(b))):
        assert points(got) == want
        assert got == ruleset.normalize(got)


def _chain_json(policy: str, *rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"nftables": [
        {"table": {"family": "ip", "name": "filter"}},
        {"chain": {"family": "ip", "table": "filter", "name": "OUTPUT", "type": "filter",
                   "hook": "output", "prio": 0, "policy": policy}},
        *({"rule": {"family": "ip", "table": "filter", "chain": "OUTPUT", "handle": i + 2,
                    "expr": expr}} for i, expr in enumerate(rules))]}


def test_iptables_nft_matches_and_targets_stay_on_the_safe_side() -> None:
    """iptables-nft lists its matches and targets as `xt` (no iptables-nft here to make one:
    the JSON is nft's form for `-m owner --uid-owner 0 -j ACCEPT` and `-j LOG`)."""
    owner = {"xt": {"type": "match", "name": "owner"}}
    data = _chain_json("drop", [owner, {"accept": None}])
    assert admits(evaluate(data, "output", 4), 6, "192.0.2.1", 80, "eth0")
    data = _chain_json("accept", [owner, {"drop": None}])
    assert admits(evaluate(data, "output", 4), 6, "192.0.2.1", 80, "eth0")
    log = {"xt": {"type": "target", "name": "LOG"}}
    data = _chain_json("drop", [log])
    result = evaluate(data, "output", 4)
    assert admits(result, 6, "192.0.2.1", 80, "eth0")
    assert any("statement not understood" in n for n in result.notes)


def test_a_verdict_map_whose_elements_expire_may_accept_anything() -> None:
    """Elements with a timeout come and go (the packet path can add them back): the map's
    listing at one moment says nothing about the next."""
    head = ("table inet fw {\n map dyn { type ipv4_addr : verdict; flags timeout; elements = "
            "{ 192.0.2.1 timeout 1h : accept } }\n"
            " chain output {\n  type filter hook output priority 0; policy drop;\n")
    data = output("  ip daddr vmap @dyn\n", head=head)
    result = out(data)
    assert admits(result, 6, "203.0.113.9", 80, "eth0")
    assert any("verdict map not understood" in n for n in result.notes)


JUNK: list[Any] = [None, 1, "x", [], {}, {"a": 1}, [1, 2], {"set": 5}, {"range": [1]},
                   {"prefix": {}}, "@nope", -1, True, {"concat": [1]}]


def _mutate(x: Any, rnd: Any) -> None:
    if isinstance(x, dict) and x:
        key = rnd.choice(sorted(x))
        if rnd.random() < 0.3:
            x[key] = copy.deepcopy(rnd.choice(JUNK))
        else:
            _mutate(x[key], rnd)
    elif isinstance(x, list) and x:
        i = rnd.randrange(len(x))
        if rnd.random() < 0.3:
            x[i] = copy.deepcopy(rnd.choice(JUNK))
        else:
            _mutate(x[i], rnd)


@pytest.fixture(scope="module")
def rendered() -> dict[str, Any]:
    return listing(firewall.render(CONFIG, ALLOW) + HEAD + "  ip daddr @s accept\n"
                   "  ip daddr vmap { 1.2.3.4 : accept }\n  tcp dport vmap { 22 : jump sub }\n"
                   " }\n chain sub {\n  ip daddr . tcp dport { 1.2.3.4 . 22 } return\n }\n"
                   " set s { type ipv4_addr; elements = { 1.2.3.4 } }\n}\n")


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rnd=st.randoms(use_true_random=False), times=st.integers(1, 4))
def test_damaged_json_never_breaks_the_checks(rendered: dict[str, Any], rnd: Any,
                                              times: int) -> None:
    """The checks read JSON from another program: whatever shape it takes they answer, and a
    rule they cannot read is on the safe side, never an exception."""
    data = copy.deepcopy(rendered)
    for _ in range(times):
        _mutate(data, rnd)
    for hook in ("input", "forward", "output"):
        judge_hook(data, hook, ALLOW)


def test_interface_wildcards_match_every_name_with_the_prefix() -> None:
    data = output('  oifname "wg*" accept\n  oifname "wg0" drop\n')
    r = out(data)
    assert admits(r, 17, "192.0.2.1", 51820, "wg7")
    assert admits(r, 17, "192.0.2.1", 51820, "wg0")  # the accept came first
    assert not admits(r, 17, "192.0.2.1", 51820, "eth0")
    data = listing("table inet fw {\n chain output {\n  type filter hook output priority 0; "
                   'policy accept;\n  oifname != "e*" drop\n  oifname "eth1" drop\n }\n}\n')
    r = out(data)
    assert admits(r, 6, "192.0.2.1", 80, "eth0")
    assert admits(r, 6, "192.0.2.1", 80, "enp3s0")
    assert not admits(r, 6, "192.0.2.1", 80, "eth1")
    assert not admits(r, 6, "192.0.2.1", 80, "wlan0")
    v = firewall_output(data)
    assert any("via any other e* interface" in e for e in v.evidence), v.evidence
