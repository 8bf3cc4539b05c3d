"""netlock collectors on real stacks: netlink, nftables, psutil, dnsmasq and probes inside a
private network namespace (`unshare -n`), never touching the host's network configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from floor_agent.netlock import checks
from floor_agent.netlock.allowlist import build
from floor_agent.netlock.config import NetlockConfig
from floor_agent.netlock.facts import (
    Facts,
    collect,
    collect_proxy,
    read_nameservers,
    split_endpoint,
)

# Ports inside the namespace (nothing else listens there).
OPEN, CLOSED, DROPPED, REJECTED = 7001, 7002, 7003, 7004  # tcp
ECHO, CLOSED_U, DROPPED_U, REJECTED_U = 7101, 7102, 7103, 7104  # udp
OUT_REJECT, OUT_REJECT_U = 7005, 7105  # rejected on output, as netlock's own ruleset does

NS_RULES = f"""table inet floor_netlock {{
	chain input {{
		type filter hook input priority filter; policy accept;
		tcp dport {DROPPED} drop
		udp dport {DROPPED_U} drop
		tcp dport {REJECTED} reject with tcp reset
		udp dport {REJECTED_U} reject with icmpx port-unreachable
	}}
	chain output {{
		type filter hook output priority filter; policy accept;
		tcp dport {OUT_REJECT} reject with icmpx admin-prohibited
		udp dport {OUT_REJECT_U} reject with icmpx admin-prohibited
	}}
}}
"""

# Runs as root in the private namespace: builds the stack, collects, prints the facts as JSON.
CHILD = textwrap.dedent(f"""
    import json, os, socket, subprocess, sys, threading, time
    from pathlib import Path

    def sh(*cmd):
        subprocess.run(cmd, check=True, capture_output=True, timeout=10)

    root = Path(sys.argv[1])
    sh("ip", "link", "set", "lo", "up")
    sh("ip", "link", "add", "usb0", "type", "veth", "peer", "name", "vpeer")
    sh("ip", "link", "set", "vpeer", "up")
    sh("ip", "link", "set", "usb0", "up")
    sh("ip", "tuntap", "add", "mode", "tun", "tun0")
    sh("ip", "addr", "add", "10.99.0.2/24", "dev", "usb0")
    sh("ip", "addr", "add", "203.0.113.50/32", "dev", "usb0")
    sh("ip", "-6", "addr", "add", "fd00:99::2/64", "dev", "usb0", "nodad")
    sh("ip", "route", "add", "default", "via", "10.99.0.1", "dev", "usb0")
    sh("ip", "route", "add", "198.51.100.0/24", "table", "100", "nexthop", "via", "10.99.0.1",
       "nexthop", "via", "10.99.0.3")
    sh("ip", "route", "add", "blackhole", "192.0.2.0/24")
    sh("nft", "-f", str(root / "rules.nft"))

    # fake sysfs for usb0: wireless, on USB, tethering driver (ifindex must match)
    index = socket.if_nametoindex("usb0")
    net = root / "sys" / "class" / "net" / "usb0"
    (net / "wireless").mkdir(parents=True)
    (net / "ifindex").write_text(f"{{index}}\\n")
    (root / "sys" / "drivers" / "cdc_ether").mkdir(parents=True)
    (root / "sys" / "bus" / "usb").mkdir(parents=True)
    (net / "device").mkdir()
    os.symlink(root / "sys" / "drivers" / "cdc_ether", net / "device" / "driver")
    os.symlink(root / "sys" / "bus" / "usb", net / "device" / "subsystem")

    listeners = []
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        for port in ({DROPPED}, {REJECTED}, {OPEN}):
            s = socket.socket(family, socket.SOCK_STREAM)
            s.bind((host, port)); s.listen(); listeners.append(s)
        echo = socket.socket(family, socket.SOCK_DGRAM)
        echo.bind((host, {ECHO})); listeners.append(echo)
        def serve(sock=echo):
            while True:
                data, peer = sock.recvfrom(2048)
                sock.sendto(b"pong", peer)
        threading.Thread(target=serve, daemon=True).start()
    # a live connection to an address outside the allowlist (local, on usb0)
    server = socket.socket(); server.bind(("203.0.113.50", 8443)); server.listen()
    client = socket.create_connection(("203.0.113.50", 8443)); peer, _ = server.accept()

    dnsmasq = subprocess.Popen(["dnsmasq", "--no-daemon", "--port=53",
        "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
        "--address=/#/10.99.0.7", "--user=root", "--pid-file=", "--conf-file=/dev/null"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):  # until dnsmasq answers
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                probe.connect(("127.0.0.1", 53)); break
            finally:
                probe.close()
        time.sleep(0.2)

        from floor_agent.netlock.config import NetlockConfig
        from floor_agent.netlock.allowlist import build
        from floor_agent.netlock.facts import collect
        config = NetlockConfig.model_validate_json((root / "config.json").read_text())
        allowlist = build(config)
        collect(config, allowlist, root=root, environ={{}})  # warm up: imports
        times = []
        for _ in range(7):
            started = time.perf_counter()
            facts = collect(config, allowlist, root=root,
                            environ={{"https_proxy": "http://203.0.113.9:3128"}})
            times.append((time.perf_counter() - started) * 1000)
        from floor_agent.netlock.facts import SocketPeers
        peers = SocketPeers()
        fast = collect(config, allowlist, frozenset({{"sockets"}}), root=root, environ={{}},
                       peers=peers)
        peers.close()
        print(json.dumps({{"facts": facts.as_dict(), "times": times,
                          "fast": fast.as_dict()}}))
    finally:
        dnsmasq.terminate(); dnsmasq.wait(5)
""")


def ns_config(**update: Any) -> NetlockConfig:
    data: dict[str, Any] = dict(
        enabled=True,
        allow=[{"name": "central", "addresses": ["127.0.0.1", "::1"], "tcp": [OPEN],
                "must_reach": [OPEN, CLOSED, OUT_REJECT]}],
        networks=["10.99.0.0/24", "fd00:99::/64"],
        interfaces=["lo", "eth*"],
        canaries=[{"address": "127.0.0.1", "tcp": [OPEN, DROPPED], "udp": [ECHO, DROPPED_U]},
                  {"address": "::1", "tcp": [CLOSED, REJECTED], "udp": [REJECTED_U, OUT_REJECT_U]}],
        public_names=["example.com", "www.google.com", "cloudflare.com"],
        resolv_conf="/etc/resolv.conf",
    )
    data.update(update)
    return NetlockConfig.model_validate(data)


@pytest.fixture(scope="module")
def namespace_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("nsroot")
    (root / "rules.nft").write_text(NS_RULES)
    (root / "etc" / "apt" / "apt.conf.d").mkdir(parents=True)
    (root / "etc" / "resolv.conf").write_text("# test\nnameserver 127.0.0.1\nnameserver ::1\n")
    (root / "etc" / "environment").write_text('PATH="/usr/bin"\nhttp_proxy="http://10.99.0.9:80"\n')
    (root / "etc" / "apt" / "apt.conf.d" / "01proxy").write_text(
        'Acquire::http::Proxy "http://192.0.2.80:3142";\n')
    (root / "config.json").write_text(ns_config().model_dump_json())
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run(["unshare", "-n", sys.executable, "-c", CHILD, str(root)],
                          capture_output=True, text=True, timeout=60, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    return {"facts": Facts.from_dict(out["facts"]), "times": out["times"],
            "fast": Facts.from_dict(out["fast"])}


def by_target(probes: Any) -> dict[str, tuple[bool, str]]:
    return {p.target: (p.reached, p.detail) for p in probes}


def test_probes_tell_connected_refused_dropped_and_denied(namespace_run: dict[str, Any]) -> None:
    facts: Facts = namespace_run["facts"]
    assert facts.egress.error is None
    assert by_target(facts.egress.value) == {
        f"tcp 127.0.0.1:{OPEN}": (True, "connected"),
        f"tcp 127.0.0.1:{DROPPED}": (False, "timeout"),
        f"udp 127.0.0.1:{ECHO}": (True, "reply"),
        f"udp 127.0.0.1:{DROPPED_U}": (False, "timeout"),
        f"tcp [::1]:{CLOSED}": (False, "refused"),
        f"tcp [::1]:{REJECTED}": (False, "refused"),
        f"udp [::1]:{REJECTED_U}": (False, "refused"),
        f"udp [::1]:{OUT_REJECT_U}": (False, "denied"),  # EPERM on send
    }
    assert by_target(facts.reach.value) == {
        f"tcp 127.0.0.1:{OPEN}": (True, "connected"),
        f"tcp 127.0.0.1:{CLOSED}": (False, "refused"),
        f"tcp 127.0.0.1:{OUT_REJECT}": (False, "unreachable"),  # ICMP admin prohibited
        f"tcp [::1]:{OPEN}": (True, "connected"),
        f"tcp [::1]:{CLOSED}": (False, "refused"),
        f"tcp [::1]:{OUT_REJECT}": (False, "timeout"),  # TCP ignores ICMPv6 in SYN_SENT
    }
    timeouts = [p.ms for p in facts.egress.value if p.detail == "timeout"]
    assert all(45 <= ms < 1000 for ms in timeouts), timeouts  # the 50 ms timeout, not hung


def test_dns_answers_from_each_nameserver(namespace_run: dict[str, Any]) -> None:
    facts: Facts = namespace_run["facts"]
    answers = {(a.resolver, a.name): a for a in facts.dns.value}
    assert set(answers) == {(r, n) for r in ("127.0.0.1", "::1")
                            for n in ("example.com", "www.google.com", "cloudflare.com")}
    a = answers[("127.0.0.1", "example.com")]
    assert (a.answered, a.addresses) == (True, ("10.99.0.7",))
    b = answers[("::1", "example.com")]  # nothing listens on [::1]:53
    assert (b.answered, b.error) == (False, "A: refused; AAAA: refused")
    # each resolver is asked over UDP and over TCP (one connection for A and AAAA)
    by_transport = {(a.resolver, a.name, a.transport): a for a in facts.dns.value}
    assert len(by_transport) == len(facts.dns.value) == 12
    tcp = by_transport[("127.0.0.1", "example.com", "tcp")]
    assert (tcp.answered, tcp.addresses) == (True, ("10.99.0.7",))
    assert by_transport[("::1", "example.com", "tcp")].error == "A: refused; AAAA: refused"


def test_routes_links_and_addresses_from_netlink(namespace_run: dict[str, Any]) -> None:
    facts: Facts = namespace_run["facts"]
    routes = set(facts.routes.value)
    assert {r.dst for r in routes if r.type == "local" and r.family == 4} >= {
        "127.0.0.0/8", "10.99.0.2/32", "203.0.113.50/32"}
    unicast = {(r.family, r.dst, r.gateway, r.oif, r.table) for r in routes
               if r.type == "unicast"}
    assert unicast >= {(4, "0.0.0.0/0", "10.99.0.1", "usb0", 254),
                       (4, "10.99.0.0/24", None, "usb0", 254),
                       (4, "198.51.100.0/24", "10.99.0.1", "usb0", 100),
                       (4, "198.51.100.0/24", "10.99.0.3", "usb0", 100),
                       (6, "fd00:99::/64", None, "usb0", 254)}
    assert any(r.dst == "192.0.2.0/24" and r.type == "blackhole" for r in routes)
    usb0 = next(link for link in facts.links.value if link.name == "usb0")
    assert (usb0.kind, usb0.up, usb0.wireless, usb0.driver, usb0.bus) == (
        "veth", True, True, "cdc_ether", "usb")
    tun0 = next(link for link in facts.links.value if link.name == "tun0")
    assert (tun0.kind, tun0.up, tun0.wireless) == ("tun", False, False)
    lo = next(link for link in facts.links.value if link.name == "lo")
    assert (lo.kind, lo.wireless, lo.driver) == (None, False, None)
    addrs = {(a.interface, a.family, a.address, a.prefixlen) for a in facts.addresses.value}
    assert {("usb0", 4, "10.99.0.2", 24), ("usb0", 6, "fd00:99::2", 64),
            ("lo", 4, "127.0.0.1", 8)} <= addrs
    assert {s.name for s in facts.stats.value} == {"lo", "usb0", "vpeer", "tun0"}


def test_ruleset_sockets_and_proxy(namespace_run: dict[str, Any]) -> None:
    facts: Facts = namespace_run["facts"]
    chains = {c.name: c for c in checks.chains_of(facts.ruleset.value)}
    assert (chains["input"].family, chains["input"].policy, len(chains["input"].rules)) == (
        "inet", "accept", 4)
    live = [s for s in facts.sockets.value if s.remote == "203.0.113.50:8443"]
    assert len(live) == 1
    assert (live[0].status, live[0].pid, live[0].process) == (
        "ESTABLISHED", live[0].pid, "python" + live[0].process.removeprefix("python"))
    assert live[0].pid is not None
    # the collector's own probe sockets, in flight while sockets are read, are left out
    # (closed ones linger without a pid in FIN_WAIT2: those are real and stay)
    assert not any(s.pid == live[0].pid and split_endpoint(s.remote or "")[1] in (OPEN, DROPPED)
                   for s in facts.sockets.value)
    assert {(p.source, p.host, p.port) for p in facts.proxy.value} == {
        ("env", "203.0.113.9", 3128), ("/etc/environment:2", "10.99.0.9", 80),
        ("/etc/apt/apt.conf.d/01proxy:1", "192.0.2.80", 3142)}


def test_checks_over_the_namespace_see_every_leak(namespace_run: dict[str, Any]) -> None:
    facts: Facts = namespace_run["facts"]
    config = ns_config()
    verdicts = {v.id: v for v in checks.run(facts, config, build(config))}
    assert {k: v.verdict for k, v in verdicts.items()} == {
        "routes.default": "fail", "routes.allowlist": "fail", "firewall.input": "fail",
        "firewall.forward": "fail", "firewall.output": "fail", "firewall.table": "pass",
        "dns.public_names": "fail", "probes.egress": "fail", "probes.allowed": "fail",
        "interfaces.wireless": "fail", "interfaces.unexpected": "fail",
        "sockets.allowlist": "fail", "proxy.settings": "fail"}
    assert verdicts["routes.default"].evidence == (
        "IPv4 default via 10.99.0.1 dev usb0 table main (gateway not in netlock.gateways)",)
    assert "resolver 127.0.0.1: example.com -> 10.99.0.7" in verdicts["dns.public_names"].evidence
    assert set(verdicts["interfaces.unexpected"].evidence) == {
        "usb0 (veth, up, driver cdc_ether, bus usb, wireless): matches forbidden pattern "
        "'usb*'", "vpeer (veth, up): matches no pattern of netlock.interfaces",
        "tun0 (tun, down): matches forbidden pattern 'tun*'"}
    assert any(e.startswith("203.0.113.50:8443 pid ") and "python" in e
               for e in verdicts["sockets.allowlist"].evidence)


def test_the_fast_socket_poll_sees_the_same_peers(namespace_run: dict[str, Any]) -> None:
    """sock_diag (the watcher's 0.25 s poll) finds the live connection psutil found, without
    its process, and the sockets check fails on it all the same."""
    fast: Facts = namespace_run["fast"]
    assert fast.routes.error == "not collected"
    live = [s for s in fast.sockets.value if s.remote == "203.0.113.50:8443"]
    assert [(s.proto, s.status, s.pid) for s in live] == [("tcp", "ESTABLISHED", None)]
    full = [s for s in namespace_run["facts"].sockets.value if s.remote == "203.0.113.50:8443"]
    assert [(s.local, s.status) for s in live] == [(s.local, s.status) for s in full]
    config = ns_config()
    [verdict] = checks.run(fast, config, build(config), only=["sockets.allowlist"])
    assert verdict.verdict == "fail"
    assert any(e.startswith("203.0.113.50:8443") for e in verdict.evidence)


# --------------------------------------------------------------------------- failures


def fake_nft(tmp_path: Path, script: str) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if script:
        nft = bin_dir / "nft"
        nft.write_text("#!/bin/sh\n" + script)
        nft.chmod(0o755)
    return str(bin_dir)


@pytest.mark.parametrize(("script", "error"), [
    ("echo '{\"nftables\": [garbage'\n", "nft: output is not JSON"),
    ("echo '[1, 2]'\n", "nft: output has no 'nftables' list"),
    ("echo 'netlink: Error: Operation not permitted' >&2; exit 1\n",
     "nft: exit 1: netlink: Error: Operation not permitted"),
    ("", "nft: command not found"),
], ids=["garbage", "wrong-shape", "permission", "missing"])
def test_broken_nft_makes_the_firewall_checks_unknown(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      script: str, error: str) -> None:
    monkeypatch.setenv("PATH", fake_nft(tmp_path, script))
    config = ns_config()
    facts = collect(config, build(config), frozenset({"ruleset"}))
    assert facts.ruleset.value is None
    assert facts.ruleset.error is not None and facts.ruleset.error.startswith(error)
    assert facts.routes.error == "not collected"
    verdicts = checks.run(facts, config, build(config))
    firewall = [v for v in verdicts if v.id.startswith("firewall.")]
    assert [v.verdict for v in firewall] == ["unknown"] * 4
    assert all(v.evidence == (facts.ruleset.error,) for v in firewall)


def test_missing_resolv_conf_makes_dns_unknown(tmp_path: Path) -> None:
    config = ns_config(resolv_conf=str(tmp_path / "nope.conf"))
    facts = collect(config, build(config), frozenset({"dns"}))
    assert facts.dns.error == f"resolv.conf: {tmp_path / 'nope.conf'}: No such file or directory"
    (v,) = checks.run(facts, config, build(config), only=["dns.public_names"])
    assert v.verdict == "unknown"


def test_unknown_area_is_refused() -> None:
    config = ns_config()
    with pytest.raises(ValueError, match="unknown fact areas: route"):
        collect(config, build(config), frozenset({"route"}))


def test_nameservers_default_to_localhost_like_glibc(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("search floor.example\noptions timeout:1\n")
    assert read_nameservers(conf) == ["127.0.0.1"]
    conf.write_text("nameserver 10.99.0.53\n  # nameserver 8.8.8.8\nnameserver fe80::1%eth0\n")
    assert read_nameservers(conf) == ["10.99.0.53", "fe80::1%eth0"]


def test_proxy_settings_from_files_and_environment(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    (etc / "apt" / "apt.conf.d").mkdir(parents=True)
    (etc / "profile.d").mkdir()
    (etc / "environment").write_text("LANG=C\nHTTPS_PROXY='https://[2001:db8::8]:8443'\n")
    (etc / "profile.d" / "proxy.sh").write_text(
        "# corporate\nexport ftp_proxy=ftp.proxy.example:21\nexport no_proxy=localhost\n")
    (etc / "apt" / "apt.conf.d" / "90proxy").write_text(
        '// Acquire::http::Proxy "http://commented.example";\n'
        'Acquire::https::Proxy "DIRECT";\n'
        'Acquire { http { Proxy "http://10.99.0.9:3142"; }; };\n')
    (etc / "apt" / "apt.conf.d" / "unreadable").mkdir()  # a directory: skipped
    settings = collect_proxy(tmp_path, {"ALL_PROXY": "socks5://203.0.113.1", "HOME": "/root"})
    assert [(s.source, s.key, s.host, s.port) for s in settings] == [
        ("env", "ALL_PROXY", "203.0.113.1", None),
        ("/etc/environment:2", "HTTPS_PROXY", "2001:db8::8", 8443),
        ("/etc/profile.d/proxy.sh:2", "ftp_proxy", "ftp.proxy.example", 21),
        ("/etc/apt/apt.conf.d/90proxy:3", "Proxy", "10.99.0.9", 3142),
    ]


# --------------------------------------------------------------------------- sock_diag


def destroy_message(family: int, src: str, sport: int, dst: str, dport: int, uid: int,
                    acked: int, received: int) -> bytes:
    """One SOCK_DIAG_BY_FAMILY destroy notification as the kernel sends it (inet_diag_msg,
    then INET_DIAG_INFO carrying tcp_info)."""
    import socket
    import struct

    def addr(text: str) -> bytes:
        return socket.inet_pton(family, text).ljust(16, b"\0")

    body = struct.pack("=BBBB", family, 7, 0, 0) + sport.to_bytes(2, "big") + \
        dport.to_bytes(2, "big") + addr(src) + addr(dst) + struct.pack("=I", 0) + bytes(8) + \
        struct.pack("=IIIII", 0, 0, 0, uid, 0)
    assert len(body) == 72
    info = bytearray(232)
    struct.pack_into("=QQ", info, 120, acked, received)
    attr = struct.pack("=HH", 4 + len(info), 2) + bytes(info)
    payload = body + attr
    return struct.pack("=IHHII", 16 + len(payload), 20, 0, 0, 0) + payload


def test_destroy_notifications_give_the_connections_that_carried_something() -> None:
    import socket

    from floor_agent.netlock.facts import CLOSED, parse_destroyed

    batch = (destroy_message(socket.AF_INET, "10.77.1.2", 40000, "10.77.9.9", 53, 1000, 2, 61)
             + destroy_message(socket.AF_INET, "10.77.1.2", 40001, "10.77.9.9", 0, 1000, 0, 0)
             + destroy_message(socket.AF_INET6, "fd77:1::2", 40002, "fd77:9::9", 443, 0, 1, 0))
    closed = parse_destroyed(batch)
    assert [(s.family, s.local, s.remote, s.status, s.process) for s in closed] == [
        (4, "10.77.1.2:40000", "10.77.9.9:53", CLOSED, "uid 1000"),
        (6, "[fd77:1::2]:40002", "[fd77:9::9]:443", CLOSED, "uid 0")]  # the refused one: none
    assert parse_destroyed(batch[:30]) == []  # a truncated batch is not misread


def test_the_mark_is_read_as_the_kernel_sends_it() -> None:
    import sys

    from floor_agent.netlock.facts import PROBE_MARK, diag_mark

    raw = ":".join(f"{b:02x}" for b in PROBE_MARK.to_bytes(4, sys.byteorder))
    assert diag_mark(raw) == PROBE_MARK
    assert diag_mark(None) is None and diag_mark("zz") is None


def test_an_unprivileged_process_cannot_pass_for_a_probe() -> None:
    """The mark that leaves a socket out of sockets.allowlist needs CAP_NET_ADMIN or
    CAP_NET_RAW: a process without them (as a user's has none; here root with every
    capability dropped, so it can still read a checkout only root may enter) cannot set it, so
    its connections stay counted; netlock's own, as root, carry it."""
    code = ("import socket\nfrom floor_agent.netlock.facts import mark_probe\n"
            "print(mark_probe(socket.socket()))")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    user = subprocess.run(["unshare", "-n", "setpriv", "--bounding-set=-all", "--inh-caps=-all",
                           sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=30, env=env, check=False)
    assert (user.returncode, user.stdout.strip()) == (0, "False"), user.stderr
    root = subprocess.run(["unshare", "-n", sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=30, env=env, check=False)
    assert (root.returncode, root.stdout.strip()) == (0, "True"), root.stderr
