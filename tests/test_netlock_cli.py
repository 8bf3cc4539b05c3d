"""`floor-agent netlock apply|verify|status|render` as an admin runs them on the workstation,
here inside the workstation namespace of the simulated floor."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from netns_topology import probe, topology_fixture  # noqa: F401

from floor_agent.netlock.checks import CHECK_IDS
from floor_agent.netlock.config import NetlockConfig
from floor_agent.simulated.network import (
    CENTRAL_V4,
    INTERNET_V4,
    INTERNET_V6,
    ROUTER_LAN_V6,
    Topology,
)

# the allowed server must answer within this: generous, because a loaded CI box can stall a
# namespace's first connection past the production default (50 ms), and a slow answer is
# "blocked cannot be told from down", not what these tests are about
PROBE_TIMEOUT_MS = 1000

def write_config(path: Path, netlock: NetlockConfig | dict[str, Any]) -> Path:
    data = netlock if isinstance(netlock, dict) else json.loads(netlock.model_dump_json())
    path.write_text(yaml.safe_dump({
        "role": "workstation",
        "audit": {"agent_id": "ws-cli", "state_dir": str(path.parent / "state")},
        "usb_guard": {"enabled": False}, "netlock": data}))
    return path


def netlock(topo: Topology, *args: str) -> subprocess.CompletedProcess[str]:
    return topo.exec("ws", [sys.executable, "-m", "floor_agent.cli", "netlock", *args],
                     check=False)


def test_apply_then_verify_and_status_on_a_locked_workstation(topology: Topology,
                                                               tmp_path: Path) -> None:
    config = write_config(tmp_path / "ws.yaml", topology.config(probe_timeout_ms=PROBE_TIMEOUT_MS))
    applied = netlock(topology, "apply", "--config", str(config))
    assert applied.returncode == 0, applied.stderr
    assert "loaded table inet floor_netlock" in applied.stderr
    verified = netlock(topology, "verify", "--json", "--config", str(config))
    assert verified.returncode == 0, verified.stdout
    checks = json.loads(verified.stdout)["checks"]
    assert [c["id"] for c in checks] == list(CHECK_IDS)
    assert {c["verdict"] for c in checks} == {"pass"}
    status = netlock(topology, "status", "--config", str(config))
    assert status.returncode == 0 and status.stdout.startswith("LOCKED: 13/13 checks pass")
    # the load is an audit event in the agent's spool, with what was loaded
    with sqlite3.connect(tmp_path / "state" / "spool.db") as db:
        bodies = [json.loads(b) for (b,) in db.execute("SELECT body FROM pending")]
    enforced = [e for e in bodies if e["kind"] == "net.enforced"]
    assert len(enforced) == 1 and enforced[0]["data"]["table"] == "inet floor_netlock"
    assert enforced[0]["data"]["source"] == str(config)

    topology.add_default_route()
    breach = netlock(topology, "status", "--config", str(config))
    assert breach.returncode == 1
    assert breach.stdout.startswith("BREACH: ") and "routes.default" in breach.stdout
    text = netlock(topology, "verify", "--config", str(config))
    assert text.returncode == 1
    assert any(line.startswith("FAIL     routes.default") for line in text.stdout.splitlines())


def test_ipv6_egress_without_an_ipv6_canary_is_not_locked(topology: Topology,
                                                          tmp_path: Path) -> None:
    """Issue 16 item 3: IPv4 canaries only, and the workstation reaches the internet host over
    IPv6 (a default route via the floor router, listed as a gateway, and an IPv6 hole in the
    output chain). "IPv6 untested" used to read as LOCKED 13/13."""
    data = json.loads(topology.config(probe_timeout_ms=PROBE_TIMEOUT_MS).model_dump_json())
    data["canaries"] = [c for c in data["canaries"] if ":" not in c["address"]]
    data["gateways"] = [ROUTER_LAN_V6]
    config = write_config(tmp_path / "ws.yaml", data)
    applied = netlock(topology, "apply", "--config", str(config))
    assert "loaded table inet floor_netlock" in applied.stderr, applied.stderr
    assert applied.returncode == 1  # loaded, but IPv6 egress is untested from the start
    topology.exec("ws", ["nft", "insert", "rule", "inet", "floor_netlock", "output",
                         "meta", "nfproto", "ipv6", "accept"])
    topology.exec("ws", ["ip", "-6", "route", "add", "default", "via", ROUTER_LAN_V6])
    [through] = probe(topology, [("tcp", INTERNET_V6, 443)])
    assert through["ok"], through  # the internet host answers over IPv6
    status = netlock(topology, "status", "--config", str(config))
    assert status.returncode == 1, status.stdout
    assert not status.stdout.startswith("LOCKED"), status.stdout
    assert "probes.egress: egress untested for IPv6 TCP, IPv6 UDP" in status.stdout
    verified = netlock(topology, "verify", "--json", "--config", str(config))
    egress = next(c for c in json.loads(verified.stdout)["checks"] if c["id"] == "probes.egress")
    assert egress["verdict"] == "unknown", egress


def test_a_resolver_answering_only_over_tcp_is_caught(topology: Topology,
                                                     tmp_path: Path) -> None:
    """Issue 16 item 4: the LAN resolver answers public names, but UDP to it is dropped on the
    way (a site table of its own): glibc with `options use-vc` resolves over TCP. Asked over
    UDP only, dns.public_names passed."""
    config = write_config(tmp_path / "ws.yaml", topology.config(probe_timeout_ms=PROBE_TIMEOUT_MS))
    assert netlock(topology, "apply", "--config", str(config)).returncode == 0
    topology.answering_resolver("central")
    topology.exec("ws", ["nft", "add table inet site; add chain inet site out { type filter "
                         "hook output priority -10; policy accept; }; "
                         "add rule inet site out udp dport 53 drop"])
    topology.resolv_path.write_text(topology.resolv_path.read_text() + "options use-vc\n")
    verified = netlock(topology, "verify", "--json", "--config", str(config))
    dns = next(c for c in json.loads(verified.stdout)["checks"] if c["id"] == "dns.public_names")
    assert dns["verdict"] == "fail", dns
    assert (f"resolver {CENTRAL_V4} over TCP: example.com -> {INTERNET_V4}, {INTERNET_V6}"
            in dns["evidence"])
    # over UDP the same resolver says nothing: the TCP answers alone failed the check
    assert all(" over TCP: " in line for line in dns["evidence"]), dns["evidence"]


def test_a_broken_config_is_refused_and_the_running_ruleset_stays(topology: Topology,
                                                                  tmp_path: Path) -> None:
    good = write_config(tmp_path / "good.yaml", topology.config(probe_timeout_ms=PROBE_TIMEOUT_MS))
    assert netlock(topology, "apply", "--config", str(good)).returncode == 0
    before = topology.list_ruleset("ws", "-a", "-s")

    data = json.loads(topology.config(probe_timeout_ms=PROBE_TIMEOUT_MS).model_dump_json())
    unknown_host = json.loads(json.dumps(data))
    unknown_host["allow"][1]["addresses"] = ["files.nowhere.invalid"]  # resolved in the ws
    # namespace, which has no route to any resolver: the name cannot resolve
    out = netlock(topology, "apply", "--config", str(write_config(tmp_path / "u.yaml",
                                                                    unknown_host)))
    assert out.returncode == 2
    assert "netlock.allow[1].addresses[0]: unknown host 'files.nowhere.invalid'" in out.stderr
    assert "nothing changed" in out.stderr

    empty = dict(data, allow=[])
    out = netlock(topology, "apply", "--config", str(write_config(tmp_path / "e.yaml", empty)))
    assert out.returncode == 2 and "allow: must list at least the central server" in out.stderr

    bad_cidr = dict(data, networks=["10.77.1.0/33"])
    out = netlock(topology, "apply", "--config", str(write_config(tmp_path / "c.yaml",
                                                                    bad_cidr)))
    assert out.returncode == 2 and "'10.77.1.0/33' is not a network in CIDR form" in out.stderr
    assert "c.yaml:" in out.stderr  # the file and line of the bad value

    assert topology.list_ruleset("ws", "-a", "-s") == before


def test_render_prints_the_ruleset_without_loading_it(topology: Topology,
                                                       tmp_path: Path) -> None:
    config = write_config(tmp_path / "ws.yaml", topology.config(probe_timeout_ms=PROBE_TIMEOUT_MS))
    before = topology.list_ruleset("ws", "-a", "-s")
    out = netlock(topology, "render", "--config", str(config))
    assert out.returncode == 0, out.stderr
    assert "table inet floor_netlock" in out.stdout and "policy drop" in out.stdout
    assert str(config) in out.stdout  # the header names the config it came from
    assert topology.list_ruleset("ws", "-a", "-s") == before


def test_render_of_an_empty_allowlist_is_a_clear_refusal_not_a_traceback(tmp_path: Path) -> None:
    """The shipped example has no allowlist yet: render says why it prints nothing."""
    config = tmp_path / "ws.yaml"
    data = yaml.safe_load((Path(__file__).parent.parent / "config" / "workstation.yaml")
                          .read_text())
    data["netlock"] = {**(data.get("netlock") or {}), "allow": []}
    config.write_text(yaml.safe_dump(data))
    out = subprocess.run([sys.executable, "-m", "floor_agent.cli", "netlock", "render",
                          "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.startswith("netlock render: netlock.allow: empty"), out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_apply_without_the_privilege_to_load_is_a_recorded_failure(topology: Topology,
                                                                   tmp_path: Path) -> None:
    """`netlock apply` run without CAP_NET_ADMIN (a unit whose CapabilityBoundingSet lacks it,
    an admin shell without it): nft itself refuses. The refusal is a critical
    `net.enforce_failed` in the agent's spool with nft's own words, nothing is reported as
    loaded, and the running ruleset is untouched."""
    config = write_config(tmp_path / "ws.yaml", topology.config(probe_timeout_ms=PROBE_TIMEOUT_MS))
    before = topology.list_ruleset("ws", "-a", "-s")
    out = topology.exec("ws", ["setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin",
                               sys.executable, "-m", "floor_agent.cli", "netlock", "apply",
                               "--config", str(config)], check=False)
    assert out.returncode == 2, out.stderr
    assert "Operation not permitted" in out.stderr, out.stderr
    assert "loaded table" not in out.stderr
    with sqlite3.connect(tmp_path / "state" / "spool.db") as db:
        bodies = [json.loads(b) for (b,) in db.execute("SELECT body FROM pending ORDER BY seq")]
    assert [e["kind"] for e in bodies if e["kind"].startswith("net.")] == ["net.enforce_failed"]
    [failed] = [e for e in bodies if e["kind"] == "net.enforce_failed"]
    assert (failed["subject"], failed["severity"]) == ("netlock", "critical")
    data = failed["data"]
    assert data["table"] == "floor_netlock" and data["where"] is None, data
    assert "Operation not permitted" in data["error"], data
    assert "Operation not permitted" in data["stderr"], data  # nft's own message, kept
    assert topology.list_ruleset("ws", "-a", "-s") == before
