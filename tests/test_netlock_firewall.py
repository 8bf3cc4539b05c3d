"""netlock's firewall: the rendered ruleset, and what it does in a real namespace floor.

Render tests check the text and let `nft -c` parse it inside `unshare -n` (never the host's
ruleset). Topology tests build workstation, router, central server and internet host in
network namespaces and probe from inside the workstation.
"""

from __future__ import annotations

import json
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from netns_topology import (  # noqa: F401  (topology_fixture: the `topology` fixture)
    PREFIXES,
    apply_in,
    floor,
    probe,
    topology_fixture,
)

from floor_agent.netlock import allowlist, firewall
from floor_agent.netlock.config import NetlockConfig, NetlockDestination
from floor_agent.netlock.firewall import FirewallError
from floor_agent.simulated import network

CONFIG = NetlockConfig(
    enabled=True,
    allow=[
        {"name": "central", "addresses": ["10.0.5.10", "fd00:5::10"], "tcp": [8443],
         "must_reach": [8443]},
        {"name": "files", "addresses": ["10.0.6.0/24", "files.floor.lan"], "tcp": [445, 2049],
         "udp": [2049]},
    ],
    networks=["10.0.5.0/24"],
    table="floor_test",
)


def fake_resolver(name: str) -> list[str]:
    if name == "files.floor.lan":
        return ["10.0.7.20", "fd00:7::20"]
    raise OSError(f"no such host {name}")


def rendered(config: NetlockConfig = CONFIG) -> str:
    return firewall.render(config, allowlist.build(config, fake_resolver),
                           source="/etc/floor-agent/workstation.yaml",
                           now=datetime(2026, 11, 29, 12, 0, tzinfo=UTC))


def chain(script: str, name: str) -> list[str]:
    body = script.split(f"\tchain {name} {{\n", 1)[1].split("\n\t}", 1)[0]
    return [line.strip() for line in body.splitlines()]


def nft_check(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "ruleset.nft"
    path.write_text(script)
    return subprocess.run(["unshare", "-n", "nft", "-c", "-f", str(path)], capture_output=True,
                          text=True, check=False)


# --------------------------------------------------------------------------- render


def test_render_lists_every_destination_with_its_ports() -> None:
    output = chain(rendered(), "output")
    assert 'ip daddr { 10.0.5.10 } tcp dport { 8443 } accept comment "allow[0] central: tcp"' \
        in output
    assert 'ip6 daddr { fd00:5::10 } tcp dport { 8443 } accept comment "allow[0] central: tcp"' \
        in output
    assert "ip daddr { 10.0.6.0/24, 10.0.7.20 } tcp dport { 445, 2049 } accept" in " ".join(output)
    assert "ip daddr { 10.0.6.0/24, 10.0.7.20 } udp dport { 2049 } accept" in " ".join(output)
    assert "ip6 daddr { fd00:7::20 } udp dport { 2049 } accept" in " ".join(output)
    assert not any("udp dport" in line and "10.0.5.10" in line for line in output)


def test_render_rule_order_and_defaults() -> None:
    script = rendered()
    output, inbound = chain(script, "output"), chain(script, "input")
    for name in ("input", "forward", "output"):
        assert chain(script, name)[0] == f"type filter hook {name} priority 0; policy drop;"
    assert output[1].startswith('oif "lo" accept')
    assert output[2].startswith("ct state established,related accept")
    assert output[3].startswith("ct state invalid drop")
    assert "nd-neighbor-solicit" in output[4] and "nd-router-solicit" in output[4]
    assert output[-2].startswith("counter meta l4proto tcp reject with tcp reset")
    assert output[-1].startswith("counter reject with icmpx admin-prohibited")
    assert inbound[1].startswith('iif "lo" accept')
    assert inbound[-1].startswith("counter drop")
    assert any(line.startswith("ip saddr { 10.0.5.10 } icmp type echo-request accept")
               for line in inbound)
    assert chain(script, "forward")[1:] == [
        'counter drop comment "a workstation routes nothing for anyone"']


def test_render_comments_every_rule_and_names_its_source() -> None:
    script = rendered()
    assert "# Rendered from /etc/floor-agent/workstation.yaml at 2026-11-29T12:00:00Z." in script
    for name in ("input", "forward", "output"):
        for line in chain(script, name)[1:]:
            assert re.search(r' comment "[^"]+"$', line), line


def test_render_is_atomic_and_touches_only_its_table() -> None:
    lines = [line for line in rendered().splitlines() if line and not line.startswith("#")]
    assert lines[:3] == ["table inet floor_test {}", "delete table inet floor_test",
                         "table inet floor_test {"]
    assert not any(w in rendered() for w in ("flush ruleset", "table ip ", "table ip6 "))


def test_render_keeps_odd_names_out_of_the_syntax(tmp_path: Path) -> None:
    config = CONFIG.model_copy(update={"allow": [NetlockDestination(
        name='central "main" \\ server ' + "x" * 30, addresses=["10.0.5.10"], tcp=[8443])]})
    script = rendered(config)
    assert "central 'main' / server" in script
    check = nft_check(script, tmp_path)
    assert check.returncode == 0, check.stderr


def test_nft_accepts_the_rendered_script(tmp_path: Path) -> None:
    check = nft_check(rendered(), tmp_path)
    assert check.returncode == 0, check.stderr


def test_render_refuses_an_empty_allowlist() -> None:
    empty = allowlist.Allowlist((), (), ())
    with pytest.raises(FirewallError, match="netlock.allow: empty"):
        firewall.render(CONFIG, empty)


@pytest.mark.parametrize(("address", "where", "message"), [
    ("10.0.5.0/33", "netlock.allow[0].addresses[0]", "not a network in CIDR form"),
    ("10.0.5.1/24", "netlock.allow[0].addresses[0]", "not a network in CIDR form"),
    ("nowhere.floor.lan", "netlock.allow[0].addresses[0]", "unknown host 'nowhere.floor.lan'"),
    ("0.0.0.0/0", "netlock.allow[0].addresses", "every address"),
])
def test_apply_refuses_a_bad_config_before_calling_nft(address: str, where: str,
                                                       message: str) -> None:
    config = CONFIG.model_copy(update={"allow": [NetlockDestination(
        name="central", addresses=[address], tcp=[8443])]})
    with pytest.raises(FirewallError, match=re.escape(message)) as caught:
        firewall.apply(config, nft="/nonexistent/nft", resolve=fake_resolver)
    assert caught.value.where == where


def test_apply_refuses_a_config_with_no_allowlist() -> None:
    with pytest.raises(FirewallError, match="empty"):
        firewall.apply(NetlockConfig(), nft="/nonexistent/nft")


# --------------------------------------------------------------------------- on the floor

INTERNET = [("tcp", network.INTERNET_V4, 443), ("tcp", network.INTERNET_V6, 80),
            ("tcp", network.INTERNET_V4, 8443), ("udp", network.INTERNET_V4, 9999),
            ("udp", network.INTERNET_V6, 443)]
CENTRAL = [("tcp", network.CENTRAL_V4, 8443), ("tcp", network.CENTRAL_V6, 8443),
           ("tcp", network.FILES_V6, 445)]


def test_topology_reaches_the_internet_once_routed(topology: network.Topology) -> None:
    """Without the lock the floor works end to end: the blocks below are the firewall's."""
    unrouted = probe(topology, INTERNET[:1], timeout=0.5)
    assert unrouted[0]["error"] == "ENETUNREACH"
    topology.add_default_route()
    results = probe(topology, INTERNET + CENTRAL)
    assert all(r["ok"] for r in results), results
    assert results[0]["reply"] == "internet 443"
    assert results[-3]["reply"] == "central 8443"


def test_apply_locks_the_workstation(topology: network.Topology) -> None:
    topology.add_default_route()  # a way out exists: only the firewall stands in it
    result = apply_in(topology, topology.config())
    assert "error" not in result, result
    assert {name: (c["hook"], c["policy"]) for name, c in result["verified"]["chains"].items()} \
        == {"input": ("input", "drop"), "forward": ("forward", "drop"),
            "output": ("output", "drop")}
    assert result["previous"]["nftables"][1:] == []  # nothing loaded before: metainfo only
    blocked = probe(topology, INTERNET + [("tcp", network.CENTRAL_V4, 443)])
    for r in blocked:
        assert not r["ok"], r
        assert r["error"] in ("ECONNREFUSED", "EPERM", "EHOSTUNREACH"), r
        assert r["ms"] < 1500, r  # refused, not the 2 s timeout
    allowed = probe(topology, CENTRAL)
    assert all(r["ok"] for r in allowed), allowed
    assert [r["reply"] for r in allowed] == ["central 8443", "central 8443", "central 445"]


def test_loaded_table_reads_back(topology: network.Topology) -> None:
    config = topology.config()
    result = firewall.apply(config, nft=topology.nft())
    listing = json.loads(topology.exec("ws", ["nft", "-j", "list", "ruleset"]).stdout)
    assert firewall.verify(listing, config.table) == result.verified
    assert firewall.ruleset_json(topology.nft())["nftables"][1]["table"]["name"] == config.table
    text = topology.list_ruleset()
    assert 'comment "allow[0] central: tcp"' in text
    assert "policy drop" in text


@pytest.mark.parametrize("breach", ["flush_ruleset", "set_output_policy_accept"])
def test_verify_notices_a_tampered_table(topology: network.Topology, breach: str) -> None:
    config = topology.config()
    firewall.apply(config, nft=topology.nft())
    getattr(topology, breach)()
    with pytest.raises(FirewallError, match="read-back"):
        firewall.verify(firewall.ruleset_json(topology.nft()), config.table)


def _bad_port(config: NetlockConfig) -> NetlockConfig:
    """A port nft refuses (70000): pydantic would stop it, so it is built past validation."""
    bad = NetlockDestination.model_construct(name="central", addresses=[network.CENTRAL_V4],
                                             tcp=[70000], udp=[], must_reach=[])
    return config.model_copy(update={"allow": [bad]})


BROKEN = {
    "bad CIDR": lambda c: c.model_copy(update={"allow": [NetlockDestination(
        name="central", addresses=["10.77.1.0/33"], tcp=[8443])]}),
    "unknown host": lambda c: c.model_copy(update={"allow": [NetlockDestination(
        name="central", addresses=["central.invalid"], tcp=[8443])]}),
    "port nft refuses": _bad_port,
    "empty allowlist": lambda c: c.model_copy(update={"allow": []}),
    "whole internet": lambda c: c.model_copy(update={"allow": [NetlockDestination(
        name="central", addresses=["::/0"], tcp=[8443])]}),
}


def test_broken_configs_leave_the_running_ruleset_alone(topology: network.Topology) -> None:
    good = topology.config()
    topology.exec("ws", ["nft", "add table inet admin; add chain inet admin out "
                                "{ type filter hook output priority 10; policy accept; }"])
    firewall.apply(good, nft=topology.nft())
    # Stateless (-s: counters can tick with stray multicast) but with handles (-a): a reload,
    # even of identical rules, would give the table and its rules new handles.
    before = topology.list_ruleset("ws", "-a", "-s")
    errors = {}
    for what, breaking in BROKEN.items():
        with pytest.raises(FirewallError) as caught:
            firewall.apply(breaking(good), nft=topology.nft(), resolve=allowlist.system_resolver)
        errors[what] = caught.value
        assert topology.list_ruleset("ws", "-a", "-s") == before, what
    assert errors["bad CIDR"].where == "netlock.allow[0].addresses[0]"
    assert "unknown host 'central.invalid'" in str(errors["unknown host"])
    assert "nothing loaded" in str(errors["port nft refuses"])
    stderr = errors["port nft refuses"].stderr
    assert re.search(r"\.nft:\d+:\d+-\d+: Error: ", stderr) and "dport { 70000 }" in stderr
    # and the lock still holds
    assert not probe(topology, INTERNET[:1], timeout=0.5)[0]["ok"]


def test_apply_replaces_its_table_and_remove_deletes_only_it(topology: network.Topology) -> None:
    config = topology.config()
    topology.exec("ws", ["nft", "add table inet admin"])
    firewall.apply(config, nft=topology.nft())
    narrowed = config.model_copy(update={"allow": config.allow[:1]})
    result = firewall.apply(narrowed, nft=topology.nft())
    assert any(t.get("table", {}).get("name") == config.table
               for t in result.previous["nftables"])
    text = topology.list_ruleset()
    assert "allow[1] files" not in text and text.count(f"table inet {config.table}") == 1
    firewall.remove(config, nft=topology.nft())
    firewall.remove(config, nft=topology.nft())  # idempotent
    assert topology.list_ruleset().strip() == "table inet admin {\n}"


def test_resolvers_and_breach_helpers(topology: network.Topology) -> None:
    lookup = ("import dns.resolver, sys\n"
              "r = dns.resolver.Resolver(filename=sys.argv[1])\n"
              "for name in sys.argv[2:]:\n"
              "    try: print(name, r.resolve(name, 'A')[0])\n"
              "    except Exception as e: print(name, type(e).__name__)\n")
    firewall.apply(topology.config(), nft=topology.nft())
    names = [f"central.{network.LAN_DOMAIN}", "example.com"]
    out = topology.python("ws", lookup, str(topology.resolv_path), *names).stdout
    assert out.splitlines() == ["central.floor.lan 10.77.1.10", "example.com NXDOMAIN"]
    topology.answering_resolver()
    out = topology.python("ws", lookup, str(topology.resolv_path), *names).stdout
    assert out.splitlines()[1] == "example.com 10.77.9.9"
    before = topology.list_ruleset("ws", "-s")
    with topology.open_connection_to_internet() as held:
        assert held.banner == "internet 443"
        sockets = topology.exec("ws", ["ss", "-Htn", "state", "established"]).stdout
        assert f"{network.INTERNET_V4}:443" in sockets
        assert topology.list_ruleset("ws", "-s") == before  # the hole is closed again
        assert "10.77.9.9" not in topology.exec("ws", ["ip", "route"]).stdout
    topology.add_tether_interface()
    assert "usb0" in topology.exec("ws", ["ip", "-br", "link"]).stdout


# --------------------------------------------------------------------------- cleanup


def test_namespaces_are_deleted_when_a_test_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="test failed"), floor(tmp_path) as topo:
        assert len(network.namespaces(topo.prefix)) == 4
        raise RuntimeError("test failed")
    assert network.namespaces(topo.prefix) == []


def test_namespaces_are_deleted_when_setup_fails_halfway(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: network.Topology) -> None:
        raise network.TopologyError("dnsmasq missing")

    monkeypatch.setattr(network.Topology, "_start_servers", broken)
    topo = network.Topology(workdir=tmp_path)
    with pytest.raises(network.TopologyError):
        topo.start()
    assert network.namespaces(topo.prefix) == []


def test_no_namespace_is_left_behind() -> None:
    """Runs last in this file: every fixture's namespaces are gone, failed tests included."""
    assert PREFIXES
    assert [n for prefix in PREFIXES for n in network.namespaces(prefix)] == []
