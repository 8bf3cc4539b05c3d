"""netlock checks: each check passes, fails and says unknown on hand-built facts, and reads real
`nft -j list ruleset` output (nft 1.0.6) the way the kernel applies it."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from floor_agent.netlock import checks
from floor_agent.netlock.allowlist import Allowlist, build
from floor_agent.netlock.checks import CHECK_IDS, Verdict, run, unconditional_accept
from floor_agent.netlock.config import NetlockConfig
from floor_agent.netlock.facts import (
    CLOSED,
    PROBE_MARK,
    DnsAnswer,
    Fact,
    Facts,
    Link,
    Probe,
    ProxySetting,
    Route,
    Socket,
)

DATA = Path(__file__).parent / "data" / "netlock"

CONFIG = NetlockConfig(
    enabled=True,
    allow=[{"name": "central", "addresses": ["10.99.0.5", "fd00:99::5"], "tcp": [443],
            "must_reach": [443]},
           {"name": "files", "addresses": ["files.floor.example"], "tcp": [445]}],
    gateways=["10.99.0.1"],
    networks=["10.99.0.0/24", "fd00:99::/64"],
    canaries=[{"address": "192.0.2.10", "tcp": [443], "udp": [53]},
              {"address": "2001:db8::10", "tcp": [443], "udp": [53]}],
    public_names=["example.com", "www.google.com"],
)
ALLOW: Allowlist = build(CONFIG, resolve=lambda name: ["10.99.0.6"])

# The sources of the fixtures in tests/data/netlock/<name>.json (`nft -j list ruleset` after
# `nft -f` of this text, nft 1.0.6); test_fixtures_are_real_nft_output regenerates them.
RULESETS = {
    "netlock": """table inet floor_netlock {
	chain input {
		type filter hook input priority filter; policy drop;
		iif "lo" accept
		ct state established,related accept
		ip saddr 10.99.0.5 tcp sport 443 accept
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
	}
	chain output {
		type filter hook output priority filter; policy drop;
		oif "lo" accept
		ct state established,related accept
		ip daddr 10.99.0.5 tcp dport 443 counter accept
		ip6 daddr fd00:99::5 tcp dport 443 accept
		reject with icmpx admin-prohibited
	}
}
""",
    "ip_only": """table ip filter {
	chain INPUT {
		type filter hook input priority filter; policy drop;
		iif "lo" accept
	}
	chain FORWARD {
		type filter hook forward priority filter; policy drop;
	}
	chain OUTPUT {
		type filter hook output priority filter; policy drop;
		oif "lo" accept
	}
}
""",
    "bridge_drop": """table bridge filter {
	chain input {
		type filter hook input priority filter; policy drop;
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
	}
	chain output {
		type filter hook output priority filter; policy drop;
	}
}
table arp filter {
	chain input {
		type filter hook input priority filter; policy drop;
	}
	chain output {
		type filter hook output priority filter; policy drop;
	}
}
table inet floor_netlock {
	chain input {
		type filter hook input priority filter; policy accept;
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
	}
	chain output {
		type filter hook output priority filter; policy accept;
	}
}
""",
    "ip_ip6": """table ip filter {
	chain INPUT {
		type filter hook input priority filter; policy drop;
	}
	chain FORWARD {
		type filter hook forward priority filter; policy drop;
	}
	chain OUTPUT {
		type filter hook output priority filter; policy drop;
	}
}
table ip6 filter {
	chain INPUT {
		type filter hook input priority filter; policy drop;
	}
	chain FORWARD {
		type filter hook forward priority filter; policy drop;
	}
	chain OUTPUT {
		type filter hook output priority filter; policy drop;
	}
}
""",
    "accept_first": """table inet floor_netlock {
	chain input {
		type filter hook input priority filter; policy drop;
		iif "lo" accept
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
	}
	chain output {
		type filter hook output priority filter; policy drop;
		counter accept
		oif "lo" accept
	}
}
table ip nat {
	chain POSTROUTING {
		type nat hook postrouting priority srcnat; policy accept;
		accept
	}
}
""",
    "empty": "",
}


def ruleset(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())


def good_facts(**areas: Fact[Any]) -> Facts:
    """A locked-down workstation: every check passes. Override an area to break it."""
    base: dict[str, Fact[Any]] = dict(
        routes=Fact((Route(4, "10.99.0.0/24", None, "eth0", 254, "unicast"),
                     Route(4, "127.0.0.0/8", None, "lo", 255, "local"),
                     Route(4, "10.99.0.255/32", None, "eth0", 255, "broadcast"),
                     Route(6, "fd00:99::/64", None, "eth0", 254, "unicast"),
                     Route(6, "fe80::/64", None, "eth0", 254, "unicast"),
                     Route(6, "ff00::/8", None, "eth0", 255, "multicast"))),
        links=Fact((Link("lo", 1, None, True, "00:00:00:00:00:00", False, None),
                    Link("enp3s0", 2, None, True, "52:54:00:12:34:56", False, "e1000e", "pci"))),
        addresses=Fact(()), stats=Fact(()),
        ruleset=Fact(ruleset("netlock")),
        sockets=Fact((Socket("tcp", 4, "10.99.0.2:50312", "10.99.0.5:443", "ESTABLISHED", 812,
                             "floor-agent"),
                      Socket("tcp", 4, "0.0.0.0:22", None, "LISTEN", 1, "sshd"),
                      Socket("tcp", 4, "10.99.0.2:50400", "8.8.8.8:443", "TIME_WAIT", None,
                             None))),
        dns=Fact((DnsAnswer("10.99.0.53", "example.com", False, (), "A: NXDOMAIN; AAAA: "
                            "NXDOMAIN"),
                  DnsAnswer("10.99.0.53", "www.google.com", False, (), "A: timeout"))),
        egress=Fact((Probe("tcp", "192.0.2.10", 443, False, "denied", 0.1),
                     Probe("udp", "192.0.2.10", 53, False, "timeout", 50.0),
                     Probe("tcp", "2001:db8::10", 443, False, "unreachable", 0.1),
                     Probe("udp", "2001:db8::10", 53, False, "denied", 0.1))),
        reach=Fact((Probe("tcp", "10.99.0.5", 443, True, "connected", 0.4),)),
        proxy=Fact(()),
    )
    base.update(areas)
    return Facts(**base)


def verdict(check_id: str, facts: Facts, config: NetlockConfig = CONFIG) -> Verdict:
    (v,) = run(facts, config, ALLOW, only=[check_id])
    assert v.id == check_id
    return v


def test_a_locked_down_workstation_passes_every_check() -> None:
    verdicts = run(good_facts(), CONFIG, ALLOW)
    assert [v.id for v in verdicts] == list(CHECK_IDS)
    assert [(v.id, v.verdict) for v in verdicts if v.verdict != "pass"] == []


def test_nothing_collected_is_unknown_never_pass() -> None:
    missing = Fact(None, "not collected")
    facts = Facts(**{f.name: missing for f in dataclasses.fields(Facts)
                     if f.name not in ("collected_at", "ms")})
    verdicts = run(facts, CONFIG, ALLOW)
    assert {v.verdict for v in verdicts} == {"unknown"}
    assert all("not collected" in v.evidence for v in verdicts)


# --------------------------------------------------------------------------- routes


def test_default_route_through_an_allowed_gateway_passes() -> None:
    routes = good_facts().routes.value + (Route(4, "0.0.0.0/0", "10.99.0.1", "eth0", 254,
                                                "unicast"),)
    v = verdict("routes.default", good_facts(routes=Fact(routes)))
    assert v.verdict == "pass"
    assert v.evidence == ("IPv4 default via 10.99.0.1 dev eth0 table main (allowed gateway)",)


@pytest.mark.parametrize(("route", "evidence"), [
    (Route(4, "0.0.0.0/0", "192.168.1.1", "eth0", 254, "unicast"),
     "IPv4 default via 192.168.1.1 dev eth0 table main (gateway not in netlock.gateways)"),
    (Route(6, "::/0", None, "usb0", 254, "unicast"),
     "IPv6 default dev usb0 table main (no gateway)"),
    (Route(4, "0.0.0.0/0", "192.168.8.1", "wwan0", 100, "unicast"),
     "IPv4 default via 192.168.8.1 dev wwan0 table 100 (gateway not in netlock.gateways)"),
], ids=["other-gateway", "ipv6-device-only", "policy-table"])
def test_default_route_elsewhere_fails(route: Route, evidence: str) -> None:
    v = verdict("routes.default", good_facts(routes=Fact(good_facts().routes.value + (route,))))
    assert (v.verdict, v.severity) == ("fail", "critical")
    assert v.evidence == (evidence,)


def test_blackhole_default_route_leads_nowhere() -> None:
    routes = (Route(4, "0.0.0.0/0", None, None, 254, "blackhole"),
              Route(6, "::/0", None, "lo", 254, "unreachable"))
    assert verdict("routes.default", good_facts(routes=Fact(routes))).verdict == "pass"
    assert verdict("routes.allowlist", good_facts(routes=Fact(routes))).verdict == "pass"


def test_route_outside_the_allowlist_fails_naming_it() -> None:
    routes = good_facts().routes.value + (
        Route(4, "8.8.8.0/24", "10.99.0.1", "eth0", 254, "unicast"),
        Route(6, "2001:db8:1::/48", None, "tun0", 254, "unicast"),
        Route(4, "0.0.0.0/0", "10.99.0.1", "eth0", 254, "unicast"))  # routes.default's job
    v = verdict("routes.allowlist", good_facts(routes=Fact(routes)))
    assert v.verdict == "fail"
    assert v.evidence == ("IPv4 8.8.8.0/24 via 10.99.0.1 dev eth0 table main",
                          "IPv6 2001:db8:1::/48 dev tun0 table main")


def test_routes_unknown_when_netlink_failed() -> None:
    facts = good_facts(routes=Fact(None, "netlink: Permission denied"))
    for check_id in ("routes.default", "routes.allowlist"):
        v = verdict(check_id, facts)
        assert v.verdict == "unknown"
        assert v.evidence == ("netlink: Permission denied",)


# --------------------------------------------------------------------------- firewall


@pytest.mark.parametrize("hook", ["input", "forward", "output"])
def test_netlock_table_closes_every_hook(hook: str) -> None:
    v = verdict(f"firewall.{hook}", good_facts())
    assert v.verdict == "pass"
    assert v.evidence == (f"inet floor_netlock {hook} policy drop",)


@pytest.mark.parametrize("hook", ["input", "forward", "output"])
def test_ip_only_drop_leaves_ipv6_open(hook: str) -> None:
    v = verdict(f"firewall.{hook}", good_facts(ruleset=Fact(ruleset("ip_only"))))
    assert v.verdict == "fail"
    assert v.summary == f"{hook} hook open for IPv6"
    assert any(e.startswith(f"IPv6 {hook}: no drop-policy") for e in v.evidence)
    assert not any(e.startswith("IPv4") for e in v.evidence)


@pytest.mark.parametrize("hook", ["input", "forward", "output"])
def test_ip_plus_ip6_drop_chains_cover_both_families(hook: str) -> None:
    v = verdict(f"firewall.{hook}", good_facts(ruleset=Fact(ruleset("ip_ip6"))))
    assert v.verdict == "pass"
    assert set(v.evidence) == {f"ip filter {hook.upper()} (hook {hook}) policy drop",
                               f"ip6 filter {hook.upper()} (hook {hook}) policy drop"}


def test_bridge_and_arp_drop_chains_do_not_count() -> None:
    facts = good_facts(ruleset=Fact(ruleset("bridge_drop")))
    v = verdict("firewall.output", facts)
    assert v.verdict == "fail"
    assert v.summary == "output hook open for IPv4 and IPv6"
    assert "seen: inet floor_netlock output policy accept" in v.evidence
    assert ("seen: bridge filter output policy drop (does not filter this host's IP traffic)"
            in v.evidence)
    assert verdict("firewall.input", facts).verdict == "fail"
    assert verdict("firewall.forward", facts).verdict == "fail"


def test_unconditional_accept_defeats_the_drop_policy() -> None:
    facts = good_facts(ruleset=Fact(ruleset("accept_first")))
    v = verdict("firewall.output", facts)
    assert v.verdict == "fail"
    assert v.evidence[0] == ("inet floor_netlock output policy drop: unconditional accept rule "
                             "defeats the drop policy")
    assert verdict("firewall.input", facts).verdict == "pass"  # `iif lo accept` is a condition
    assert verdict("firewall.forward", facts).verdict == "pass"


def test_unconditional_accept_recognises_only_match_free_rules() -> None:
    chains = checks.chains_of(ruleset("accept_first"))
    output = next(c for c in chains if c.name == "output")
    assert [unconditional_accept(r.expr) for r in output.rules] == [True, False]
    assert unconditional_accept(({"accept": None},))
    assert not unconditional_accept(({"counter": {"packets": 0, "bytes": 0}}, {"drop": None}))
    assert not unconditional_accept(())


def test_empty_ruleset_opens_every_hook() -> None:
    facts = good_facts(ruleset=Fact(ruleset("empty")))
    for hook in ("input", "forward", "output"):
        assert verdict(f"firewall.{hook}", facts).summary == f"{hook} hook open for IPv4 and IPv6"
    v = verdict("firewall.table", facts)
    assert (v.verdict, v.severity) == ("fail", "critical")
    assert v.evidence == ("table inet floor_netlock not loaded", "tables: none")


def test_own_table_missing_is_only_a_warning_while_others_close_the_hooks() -> None:
    v = verdict("firewall.table", good_facts(ruleset=Fact(ruleset("ip_ip6"))))
    assert (v.verdict, v.severity) == ("fail", "warning")
    assert v.evidence == ("table inet floor_netlock not loaded", "tables: ip filter, ip6 filter")
    v = verdict("firewall.table", good_facts(ruleset=Fact(ruleset("ip_only"))))
    assert (v.verdict, v.severity) == ("fail", "critical")


def test_own_table_present_passes_and_follows_the_configured_name() -> None:
    assert verdict("firewall.table", good_facts()).verdict == "pass"
    other = CONFIG.model_copy(update={"table": "lockdown"})
    assert verdict("firewall.table", good_facts(), other).verdict == "fail"


def test_firewall_checks_unknown_on_nft_error() -> None:
    facts = good_facts(ruleset=Fact(None, "nft: output is not JSON (Expecting value)"))
    for check_id in ("firewall.input", "firewall.forward", "firewall.output", "firewall.table"):
        v = verdict(check_id, facts)
        assert v.verdict == "unknown"
        assert v.evidence == ("nft: output is not JSON (Expecting value)",)


@pytest.mark.parametrize("name", sorted(RULESETS))
def test_fixtures_are_real_nft_output(name: str, tmp_path: Path) -> None:
    source = tmp_path / "rules.nft"
    source.write_text(RULESETS[name])
    load = f"nft -f {source} && " if RULESETS[name] else ""
    proc = subprocess.run(["unshare", "-n", "sh", "-c", load + "nft -j list ruleset"],
                          capture_output=True, text=True, timeout=10, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ruleset(name)


# --------------------------------------------------------------------------- DNS


def test_public_name_answered_fails_with_resolver_and_answer() -> None:
    dns = Fact((DnsAnswer("127.0.0.1", "example.com", True, ("10.99.0.7",), "AAAA: no address"),
                DnsAnswer("127.0.0.1", "www.google.com", False, (), "A: NXDOMAIN")))
    v = verdict("dns.public_names", good_facts(dns=dns))
    assert (v.verdict, v.severity) == ("fail", "critical")
    assert v.evidence == ("resolver 127.0.0.1: example.com -> 10.99.0.7",)


def test_sinkholed_public_names_pass() -> None:
    dns = Fact((DnsAnswer("127.0.0.1", "example.com", True, ("0.0.0.0", "::"), None),))
    v = verdict("dns.public_names", good_facts(dns=dns))
    assert v.verdict == "pass"
    assert v.evidence == ("resolver 127.0.0.1: example.com: sinkholed to 0.0.0.0, ::",)


def test_unanswered_public_names_pass_with_the_reasons() -> None:
    v = verdict("dns.public_names", good_facts())
    assert v.verdict == "pass"
    assert v.evidence[0] == "resolver 10.99.0.53: example.com: A: NXDOMAIN; AAAA: NXDOMAIN"


def test_dns_unknown_without_resolv_conf_or_names() -> None:
    v = verdict("dns.public_names", good_facts(dns=Fact(None, "resolv.conf: /etc/resolv.conf: "
                                                              "No such file or directory")))
    assert v.verdict == "unknown"
    assert verdict("dns.public_names", good_facts(dns=Fact(()))).verdict == "unknown"


# --------------------------------------------------------------------------- probes


def test_canary_reached_fails_naming_the_probe() -> None:
    egress = Fact(good_facts().egress.value + (
        Probe("tcp", "2001:db8::10", 80, True, "connected", 12.5),
        Probe("udp", "192.0.2.10", 443, True, "reply", 20.0)))
    v = verdict("probes.egress", good_facts(egress=egress))
    assert (v.verdict, v.severity) == ("fail", "critical")
    assert v.evidence == ("tcp [2001:db8::10]:80 connected (12.5 ms)",
                          "udp 192.0.2.10:443 reply (20 ms)")


def test_canaries_blocked_pass_with_every_probe_as_evidence() -> None:
    v = verdict("probes.egress", good_facts())
    assert v.verdict == "pass"
    assert "udp 192.0.2.10:53 timeout (50 ms)" in v.evidence
    assert len(v.evidence) == 4


def test_untested_ip_version_or_protocol_is_unknown_never_pass() -> None:
    """Issue 16 item 3: IPv4 canaries only, IPv6 open: "untested" must not read as locked."""
    egress = Fact((Probe("tcp", "192.0.2.10", 443, False, "denied", 0.1),
                   Probe("udp", "192.0.2.10", 53, False, "denied", 0.1)))
    v = verdict("probes.egress", good_facts(egress=egress))
    assert (v.verdict, v.severity) == ("unknown", "critical")
    assert v.summary == "egress untested for IPv6 TCP, IPv6 UDP"
    assert "no IPv6 TCP canary probe: IPv6 TCP egress untested" in v.evidence
    # one protocol missing in one family is enough
    tcp_only = Fact(tuple(p for p in good_facts().egress.value or () if p.proto == "tcp"))
    v = verdict("probes.egress", good_facts(egress=tcp_only))
    assert v.verdict == "unknown" and v.summary == "egress untested for IPv4 UDP, IPv6 UDP"
    # a probe that got through still fails, and the untested ways are named with it
    through = Fact(egress.value + (Probe("tcp", "192.0.2.10", 80, True, "connected", 1.0),))
    v = verdict("probes.egress", good_facts(egress=through))
    assert v.verdict == "fail"
    assert v.evidence[0] == "tcp 192.0.2.10:80 connected (1 ms)"
    assert "no IPv6 UDP canary probe: IPv6 UDP egress untested" in v.evidence
    # and the whole verification is then not "all pass" (what `netlock status` calls LOCKED)
    assert not all(c.ok for c in run(good_facts(egress=egress), CONFIG, ALLOW))


def test_egress_unknown_without_probes() -> None:
    assert verdict("probes.egress", good_facts(egress=Fact(()))).verdict == "unknown"
    v = verdict("probes.egress", good_facts(egress=Fact(None, "egress: OSError: x")))
    assert v.evidence == ("egress: OSError: x",)


def test_allowed_server_down_is_a_warning_naming_the_destination() -> None:
    reach = Fact((Probe("tcp", "10.99.0.5", 443, False, "timeout", 50.0),
                  Probe("tcp", "fd00:99::5", 443, True, "connected", 0.3)))
    v = verdict("probes.allowed", good_facts(reach=reach))
    assert (v.verdict, v.severity) == ("fail", "warning")
    assert v.evidence == ("tcp 10.99.0.5:443 timeout (50 ms) [central]",)


def test_allowed_server_answering_passes() -> None:
    v = verdict("probes.allowed", good_facts())
    assert v.verdict == "pass"
    assert v.evidence == ("tcp 10.99.0.5:443 connected (0.4 ms) [central]",)


def test_a_probe_is_named_by_the_entry_whose_must_reach_it_tests() -> None:
    """Two entries on one address (a central policy's per-service entries on a shared host):
    the failing probe names the entry that asked for its port, not the first on the address."""
    config = CONFIG.model_copy(update={"allow": [
        *CONFIG.allow,
        *NetlockConfig.model_validate({"enabled": True, "allow": [
            {"name": "scanner", "addresses": ["10.99.0.5"], "tcp": [139],
             "must_reach": [139]}]}).allow]})
    allow = build(config, resolve=lambda name: ["10.99.0.6"])
    reach = Fact((Probe("tcp", "10.99.0.5", 443, True, "connected", 0.4),
                  Probe("tcp", "10.99.0.5", 139, False, "refused", 0.2)))
    (v,) = run(good_facts(reach=reach), config, allow, only=["probes.allowed"])
    assert v.evidence == ("tcp 10.99.0.5:139 refused (0.2 ms) [scanner]",)


def test_allowed_unknown_without_must_reach() -> None:
    v = verdict("probes.allowed", good_facts(reach=Fact(())))
    assert (v.verdict, v.severity) == ("unknown", "warning")


# --------------------------------------------------------------------------- interfaces


def links(*extra: Link) -> Fact[tuple[Link, ...]]:
    return Fact(good_facts().links.value + extra)


def test_wireless_interface_fails() -> None:
    wlan = Link("wlp2s0", 3, None, False, "aa:bb:cc:dd:ee:ff", True, "iwlwifi", "pci")
    v = verdict("interfaces.wireless", good_facts(links=links(wlan)))
    assert (v.verdict, v.severity) == ("fail", "critical")
    assert v.evidence == ("wlp2s0 (hardware, down, driver iwlwifi, bus pci, wireless)",)
    assert verdict("interfaces.wireless", good_facts()).verdict == "pass"


@pytest.mark.parametrize(("link", "evidence"), [
    (Link("usb0", 4, "dummy", True, None, False, None),
     "usb0 (dummy, up): matches forbidden pattern 'usb*'"),
    (Link("enx00e04c680001", 4, None, True, None, False, "r8152", "usb"),
     "enx00e04c680001 (hardware, up, driver r8152, bus usb): matches forbidden pattern 'enx*'"),
    (Link("eth9", 4, "wireguard", True, None, False, None),
     "eth9 (wireguard, up): wireguard tunnel"),
    (Link("eth1", 4, None, True, None, False, "cdc_ether", "usb"),
     "eth1 (hardware, up, driver cdc_ether, bus usb): tethering/mobile broadband driver "
     "cdc_ether"),
    (Link("docker0", 4, "bridge", False, None, False, None),
     "docker0 (bridge, down): matches no pattern of netlock.interfaces"),
], ids=["usb0", "enx", "renamed-wireguard", "tethering-driver", "docker"])
def test_unexpected_interface_fails(link: Link, evidence: str) -> None:
    v = verdict("interfaces.unexpected", good_facts(links=links(link)))
    assert (v.verdict, v.severity) == ("fail", "critical")
    assert v.evidence == (evidence,)


def test_expected_interfaces_pass_and_patterns_come_from_config() -> None:
    assert verdict("interfaces.unexpected", good_facts()).verdict == "pass"
    docker = links(Link("docker0", 4, "bridge", False, None, False, None))
    config = CONFIG.model_copy(update={"interfaces": ["lo", "en*", "docker*"]})
    assert verdict("interfaces.unexpected", good_facts(links=docker), config).verdict == "pass"


def test_interfaces_unknown_without_links() -> None:
    facts = good_facts(links=Fact(None, "netlink: [Errno 13] Permission denied"))
    assert verdict("interfaces.wireless", facts).verdict == "unknown"
    assert verdict("interfaces.unexpected", facts).verdict == "unknown"


# --------------------------------------------------------------------------- sockets


def test_connection_outside_the_allowlist_fails_naming_process() -> None:
    sockets = Fact(good_facts().sockets.value + (
        Socket("tcp", 4, "10.99.0.2:51234", "10.98.0.5:443", "ESTABLISHED", 1234, "curl"),
        Socket("tcp", 6, "[fd00:99::2]:40000", "[2001:db8::1]:22", "SYN_SENT", 99, "ssh"),
        Socket("udp", 4, "10.99.0.2:5353", "1.1.1.1:53", "NONE", None, None)))
    v = verdict("sockets.allowlist", good_facts(sockets=sockets))
    assert (v.verdict, v.severity) == ("fail", "critical")
    assert v.evidence == (
        "10.98.0.5:443 pid 1234 curl (tcp ESTABLISHED from 10.99.0.2:51234)",
        "[2001:db8::1]:22 pid 99 ssh (tcp SYN_SENT from [fd00:99::2]:40000)",
        "1.1.1.1:53 pid ? (udp NONE from 10.99.0.2:5353)")


def test_connections_inside_the_allowlist_pass() -> None:
    sockets = Fact(good_facts().sockets.value + (
        Socket("tcp", 6, "[::1]:631", "[::1]:40000", "ESTABLISHED", 5, "cupsd"),
        Socket("tcp", 6, "[fd00:99::2]:443", "[::ffff:10.99.0.5]:50000", "ESTABLISHED", 5, "x"),
        Socket("udp", 4, "10.99.0.2:6000", "10.99.0.6:445", "NONE", 7, "smbd")))
    assert verdict("sockets.allowlist", good_facts(sockets=sockets)).verdict == "pass"


def test_probe_sockets_are_left_out_only_when_marked_and_to_a_probe_target() -> None:
    """Issue 16 item 5: `netlock verify` run during a breach (or any netlock process) must not
    show up as its own probe sockets; a socket that merely goes to a canary, or is marked but
    goes elsewhere, is counted."""
    mark = PROBE_MARK
    probe = Socket("tcp", 4, "10.99.0.2:40001", "192.0.2.10:443", "ESTABLISHED", None, None, mark)
    dns = Socket("tcp", 4, "10.99.0.2:40002", "203.0.113.53:53", "ESTABLISHED", None, None, mark)
    unmarked = dataclasses.replace(probe, local="10.99.0.2:40003", mark=None)
    other_mark = dataclasses.replace(probe, local="10.99.0.2:40004", mark=0x1)
    elsewhere = dataclasses.replace(probe, local="10.99.0.2:40005", remote="192.0.2.10:8080")
    sockets = Fact(good_facts().sockets.value + (probe, dns, unmarked, other_mark, elsewhere))
    v = verdict("sockets.allowlist", good_facts(sockets=sockets))
    assert v.verdict == "fail"
    assert [e.split(" (")[1] for e in v.evidence] == [
        "tcp ESTABLISHED from 10.99.0.2:40003)", "tcp ESTABLISHED from 10.99.0.2:40004)",
        "tcp ESTABLISHED from 10.99.0.2:40005)"]
    only_probes = Fact(good_facts().sockets.value + (probe, dns))
    assert verdict("sockets.allowlist", good_facts(sockets=only_probes)).verdict == "pass"


def test_a_connection_that_ended_between_polls_fails_naming_its_owner() -> None:
    """Issue 16 item 4: a short DNS-over-TCP connection reported at its end by the kernel."""
    closed = Socket("tcp", 4, "10.99.0.2:40010", "203.0.113.53:53", CLOSED, None, "uid 1000")
    v = verdict("sockets.allowlist", good_facts(sockets=Fact((closed,))))
    assert v.verdict == "fail"
    assert v.evidence == ("203.0.113.53:53 uid 1000 (tcp from 10.99.0.2:40010, ended between "
                          "two polls: seen as the kernel destroyed it)",)
    assert v.keys == ("tcp 10.99.0.2:40010 203.0.113.53:53",)


def test_public_name_answered_over_tcp_only_fails() -> None:
    """Issue 16 item 4: the resolver ignores UDP but answers over TCP (options use-vc)."""
    dns = Fact((DnsAnswer("10.99.0.53", "example.com", False, (), "A: timeout; AAAA: timeout"),
                DnsAnswer("10.99.0.53", "example.com", True, ("93.184.216.34",), None, "tcp")))
    v = verdict("dns.public_names", good_facts(dns=dns))
    assert v.verdict == "fail"
    assert v.evidence == ("resolver 10.99.0.53 over TCP: example.com -> 93.184.216.34",)


def test_sockets_unknown_when_psutil_failed() -> None:
    v = verdict("sockets.allowlist", good_facts(sockets=Fact(None, "sockets: AccessDenied")))
    assert v.verdict == "unknown"


# --------------------------------------------------------------------------- proxy


@pytest.mark.parametrize(("setting", "problem"), [
    (ProxySetting("env", "https_proxy", "http://203.0.113.9:3128", "203.0.113.9", 3128),
     "203.0.113.9:3128 is not allowed"),
    (ProxySetting("/etc/apt/apt.conf.d/01proxy:1", "Acquire::http::Proxy",
                  "http://proxy.isp.example:8080", "proxy.isp.example", 8080),
     "host proxy.isp.example is not in the allowlist"),
    (ProxySetting("/etc/environment:2", "http_proxy", "http://10.99.0.5:3128", "10.99.0.5",
                  3128), "10.99.0.5:3128 is not allowed"),
    (ProxySetting("/etc/environment:2", "http_proxy", "http://files.floor.example:8080",
                  "files.floor.example", 8080), "port 8080 is not allowed for files"),
], ids=["ip-outside", "name-outside", "allowed-host-wrong-port", "allowed-name-wrong-port"])
def test_proxy_outside_the_allowlist_fails(setting: ProxySetting, problem: str) -> None:
    v = verdict("proxy.settings", good_facts(proxy=Fact((setting,))))
    assert (v.verdict, v.severity) == ("fail", "warning")
    assert v.evidence == (f"{setting.source} {setting.key}={setting.value}: {problem}",)


def test_proxy_inside_the_allowlist_passes() -> None:
    proxy = Fact((ProxySetting("env", "https_proxy", "http://10.99.0.5:443", "10.99.0.5", 443),
                  ProxySetting("env", "http_proxy", "files.floor.example", "files.floor.example",
                               None),
                  ProxySetting("env", "all_proxy", "socks5://localhost:1080", "localhost",
                               1080)))
    v = verdict("proxy.settings", good_facts(proxy=proxy))
    assert v.verdict == "pass"
    assert len(v.evidence) == 3
    assert verdict("proxy.settings", good_facts()).verdict == "pass"


def test_proxy_unknown_when_not_collected() -> None:
    v = verdict("proxy.settings", good_facts(proxy=Fact(None, "not collected")))
    assert v.verdict == "unknown"
