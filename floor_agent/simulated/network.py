"""A simulator twin of a production floor: real kernel namespaces, veth, routes, nftables and
real servers, for the tests, the benchmark and the demo.

    <prefix>-ws   workstation     eth0 10.77.1.2/24  fd77:1::2/64   (no default route: locked)
    <prefix>-cen  central server  eth0 10.77.1.10/24 fd77:1::10/64  (+ .20/::20, the file server)
    <prefix>-rt   floor router    br0  10.77.1.1/24  fd77:1::1/64   (bridge of ws0 and cen0)
                                  wan0 10.77.9.1/24  fd77:9::1/64   (forwarding v4 and v6 on)
    <prefix>-net  "internet" host eth0 10.77.9.9/24  fd77:9::9/64   (default route via rt)

Only private addresses (RFC 1918, ULA) that exist inside these namespaces; nothing here changes
the host's own interfaces, routes or ruleset: every command runs under `ip -n NS` or `ip netns
exec NS`. Interfaces are named inside their namespace, so parallel runs only need a unique
prefix. Servers (TCP banner/echo, UDP echo, dnsmasq) run as children under `ip netns exec`
(Python 3.11 has no os.setns); `close()` stops them and deletes every namespace, also after a
half-finished setup, and an atexit hook does the same if the caller forgot.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from floor_agent.netlock.config import NetlockConfig

ROLES = ("ws", "rt", "cen", "net")
WS_V4, WS_V6 = "10.77.1.2", "fd77:1::2"
CENTRAL_V4, CENTRAL_V6 = "10.77.1.10", "fd77:1::10"
FILES_V4, FILES_V6 = "10.77.1.20", "fd77:1::20"
ROUTER_LAN_V4, ROUTER_LAN_V6 = "10.77.1.1", "fd77:1::1"
ROUTER_WAN_V4, ROUTER_WAN_V6 = "10.77.9.1", "fd77:9::1"
INTERNET_V4, INTERNET_V6 = "10.77.9.9", "fd77:9::9"
LAN_V4, LAN_V6 = "10.77.1.0/24", "fd77:1::/64"
WAN_V4, WAN_V6 = "10.77.9.0/24", "fd77:9::/64"
CENTRAL_TCP = (8443, 445, 443, 80)
INTERNET_TCP = (8443, 443, 80, 853)
UDP_PORTS = (443, 9999)
INTERNET_UDP = (*UDP_PORTS, 853)
# The canary ports: the internet host's servers plus DNS (53, its dnsmasq), over TCP and UDP.
CANARY_TCP = (*INTERNET_TCP, 53)
CANARY_UDP = (*INTERNET_UDP, 53)
LAN_DOMAIN = "floor.lan"
PUBLIC_NAMES = ("example.com", "www.google.com", "cloudflare.com")
READY_SECONDS = 5.0
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,15}$")

# The servers: one process, a thread per port, bound to :: (dual stack: v4 and v6). TCP sends
# "<name> <port>\n" then echoes; UDP answers "<name> <port> <data>". Exits when its parent dies,
# so a killed test run leaves no server behind in a namespace.
ECHO_SERVER = r"""
import os, socket, sys, threading, time
name, tcp, udp = sys.argv[1], sys.argv[2], sys.argv[3]
parent = os.getppid()

def listener(kind, port):
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    if kind == socket.SOCK_STREAM:
        s.listen(64)
    return s

def serve_tcp(s, port):
    while True:
        conn, _ = s.accept()
        threading.Thread(target=echo, args=(conn, port), daemon=True).start()

def echo(conn, port):
    with conn:
        try:
            conn.sendall(f"{name} {port}\n".encode())
            while data := conn.recv(4096):
                conn.sendall(data)
        except OSError:
            pass  # a probe that connects and resets at once is the normal case

def serve_udp(s, port):
    while True:
        data, peer = s.recvfrom(4096)
        s.sendto(f"{name} {port} ".encode() + data, peer)

ports = [(socket.SOCK_STREAM, int(p), serve_tcp) for p in tcp.split(",") if p]
ports += [(socket.SOCK_DGRAM, int(p), serve_udp) for p in udp.split(",") if p]
for kind, port, serve in [(k, p, f) for k, p, f in ports]:
    threading.Thread(target=serve, args=(listener(kind, port), port), daemon=True).start()
print("ready", flush=True)
while os.getppid() == parent:
    time.sleep(0.5)
"""

# Held by open_connection_to_internet: connect, say so, keep the socket until stdin closes.
HOLD_CONNECTION = r"""
import socket, struct, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
# close with a reset: the route that carried it is gone, so a FIN could never be delivered and
# the socket would linger in FIN_WAIT1 (still a live connection) for minutes
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
print(s.recv(100).decode().strip(), flush=True)
sys.stdin.read()
"""


# The real NetlockWatcher run inside the workstation namespace (`python -c WATCHER_SCRIPT
# CONFIG_JSON`), printing its events as JSON lines with CLOCK_MONOTONIC times (system-wide, so
# they compare across namespaces) until its stdin closes: for the tests and the benchmark.
WATCHER_SCRIPT = r"""
import json, sys, threading, time
from floor_agent.netlock.config import NetlockConfig
from floor_agent.netlock.allowlist import build
from floor_agent.netlock.watch import NetlockWatcher

config = NetlockConfig.model_validate_json(sys.argv[1])
def emit(kind, subject, severity="info", **data):
    print(json.dumps({"t": time.monotonic(), "kind": kind, "severity": severity, "data": data}),
          flush=True)
watcher = NetlockWatcher(config, build(config), emit)
stop = threading.Event()
watcher.start(stop)
print(json.dumps({"t": time.monotonic(), "kind": "ready", "data": {}}), flush=True)
sys.stdin.read()
stop.set()
watcher.stop()
"""


class TopologyError(RuntimeError):
    """A setup step failed; carries the command and its stderr."""


@dataclass
class HeldConnection:
    """An established TCP connection from the workstation, held by a child process."""

    proc: subprocess.Popen[str]
    address: str
    port: int
    banner: str

    def close(self) -> None:
        _stop(self.proc)

    def __enter__(self) -> HeldConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Topology:
    """The four namespaces and their servers; use as a context manager."""

    def __init__(self, prefix: str | None = None, workdir: str | os.PathLike[str] | None = None
                 ) -> None:
        self.prefix = prefix or new_prefix()
        if not _PREFIX_RE.match(self.prefix):
            raise ValueError(f"prefix {self.prefix!r}: 1-16 lower-case letters and digits")
        self.ns = {role: f"{self.prefix}-{role}" for role in ROLES}
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"floor-netlock-{self.prefix}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.resolv_path = self.workdir / "resolv.conf"
        self.public_resolv_path = self.workdir / "resolv.public.conf"
        self._created: list[str] = []
        self._procs: dict[str, subprocess.Popen[str]] = {}
        self._closed = False
        atexit.register(self.close)

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Topology:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Build namespaces, links, addresses, routes and servers; on failure undo it all."""
        try:
            self._build_network()
            self._start_servers()
            self.resolv_conf(self.resolv_path)
            self.resolv_conf(self.public_resolv_path, public=True)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop every server, then delete every namespace this object created. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for proc in self._procs.values():
            _stop(proc)
        self._procs.clear()
        for name in reversed(self._created):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        self._created.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        atexit.unregister(self.close)

    def _build_network(self) -> None:
        ws, rt, cen, net = (self.ns[r] for r in ROLES)
        for name in (ws, rt, cen, net):
            self._ip("netns", "add", name)
            self._created.append(name)
            # Addresses usable at once (no DAD wait), no router adverts learnt.
            self.exec(name, ["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                             "net.ipv6.conf.default.accept_dad=0",
                             "net.ipv6.conf.default.accept_ra=0"])
            self._ip("-n", name, "link", "set", "lo", "up")
        self.exec(rt, ["sysctl", "-qw", "net.ipv4.ip_forward=1",
                       "net.ipv6.conf.all.forwarding=1"])
        self._ip("-n", rt, "link", "add", "br0", "type", "bridge", "stp_state", "0")
        for host, port in ((ws, "ws0"), (cen, "cen0")):
            self._ip("-n", host, "link", "add", "eth0", "type", "veth", "peer", "name", port,
                     "netns", rt)
            self._ip("-n", rt, "link", "set", port, "master", "br0", "up")
        self._ip("-n", net, "link", "add", "eth0", "type", "veth", "peer", "name", "wan0",
                 "netns", rt)
        self._address(rt, "br0", ROUTER_LAN_V4, 24, ROUTER_LAN_V6)
        self._address(rt, "wan0", ROUTER_WAN_V4, 24, ROUTER_WAN_V6)
        self._address(ws, "eth0", WS_V4, 24, WS_V6)
        self._address(cen, "eth0", CENTRAL_V4, 24, CENTRAL_V6)
        self._address(cen, "eth0", FILES_V4, 24, FILES_V6)
        self._address(net, "eth0", INTERNET_V4, 24, INTERNET_V6)
        for name, dev in ((rt, "br0"), (rt, "wan0"), (ws, "eth0"), (cen, "eth0"), (net, "eth0")):
            self._ip("-n", name, "link", "set", dev, "up")
        self._ip("-n", net, "route", "add", "default", "via", ROUTER_WAN_V4)
        self._ip("-n", net, "-6", "route", "add", "default", "via", ROUTER_WAN_V6)

    def _address(self, ns: str, dev: str, v4: str, plen: int, v6: str) -> None:
        self._ip("-n", ns, "addr", "add", f"{v4}/{plen}", "dev", dev)
        self._ip("-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad")

    def _start_servers(self) -> None:
        cen, net = self.ns["cen"], self.ns["net"]
        self._echo("echo-cen", cen, "central", CENTRAL_TCP, UDP_PORTS)
        self._echo("echo-net", net, "internet", INTERNET_TCP, INTERNET_UDP)
        self._dnsmasq("dns-cen", cen, (CENTRAL_V4, CENTRAL_V6), self._lan_answers())
        self._dnsmasq("dns-net", net, (INTERNET_V4, INTERNET_V6),
                      [f"--address=/#/{INTERNET_V4}", f"--address=/#/{INTERNET_V6}"])

    def _lan_answers(self, public: bool = False) -> list[str]:
        """The LAN resolver: floor.lan names only; NXDOMAIN for the rest unless `public`."""
        answers = [f"--address=/central.{LAN_DOMAIN}/{CENTRAL_V4}",
                   f"--address=/central.{LAN_DOMAIN}/{CENTRAL_V6}",
                   f"--address=/files.{LAN_DOMAIN}/{FILES_V4}",
                   f"--address=/files.{LAN_DOMAIN}/{FILES_V6}"]
        if public:
            return [*answers, f"--address=/#/{INTERNET_V4}", f"--address=/#/{INTERNET_V6}"]
        return [*answers, "--address=/#/"]

    def _echo(self, key: str, ns: str, name: str, tcp: tuple[int, ...],
              udp: tuple[int, ...]) -> None:
        proc = self.popen(ns, [sys.executable, "-c", ECHO_SERVER, name,
                               ",".join(map(str, tcp)), ",".join(map(str, udp))],
                          stdout=subprocess.PIPE)
        self._procs[key] = proc
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise TopologyError(f"echo server in {ns} did not start (exit {proc.poll()})")

    def _dnsmasq(self, key: str, ns: str, listen: tuple[str, str], answers: list[str]) -> None:
        argv = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                "--no-hosts", "--no-poll", "--bind-interfaces", "--pid-file=", "--user=root",
                "--group=root", "--leasefile-ro", "--port=53",
                *(f"--listen-address={a}" for a in listen), *answers]
        proc = self.popen(ns, argv, stderr=subprocess.PIPE)
        self._procs[key] = proc
        deadline = time.monotonic() + READY_SECONDS
        while not _listening_udp(proc.pid, 53):
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
                raise TopologyError(f"dnsmasq in {ns} did not start: {err.strip()}")
            time.sleep(0.01)

    # ------------------------------------------------------------------ running things

    def exec(self, ns: str, argv: list[str], *, check: bool = True, timeout: float = 30,
             **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run a command in a namespace (role "ws" or a full name); raises on failure unless
        check=False."""
        kw.setdefault("capture_output", True)
        proc = subprocess.run(["ip", "netns", "exec", self._name(ns), *argv], text=True,
                              timeout=timeout, check=False, **kw)
        if check and proc.returncode != 0:
            raise TopologyError(f"in {self._name(ns)}: {' '.join(argv)} exited "
                                f"{proc.returncode}: {(proc.stderr or '').strip()}")
        return proc

    def popen(self, ns: str, argv: list[str], **kw: Any) -> subprocess.Popen[str]:
        """Start a process in a namespace (its own session, so stopping it stops its children)."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(["ip", "netns", "exec", self._name(ns), *argv], text=True,
                                start_new_session=True, **kw)

    def python(self, ns: str, code: str, *args: str, input: str | None = None,
               check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run Python code (this interpreter, so the project is importable) in a namespace."""
        return self.exec(ns, [sys.executable, "-c", code, *args], input=input, check=check,
                         timeout=timeout)

    def nft(self, ns: str = "ws") -> list[str]:
        """The nft command for a namespace, as `firewall.apply(nft=...)` takes it."""
        return ["ip", "netns", "exec", self._name(ns), "nft"]

    def list_ruleset(self, ns: str = "ws", *flags: str) -> str:
        """`nft list ruleset` in a namespace; flags e.g. "-a" (handles), "-s" (no counters)."""
        return self.exec(ns, ["nft", *flags, "list", "ruleset"]).stdout

    def _name(self, ns: str) -> str:
        return self.ns.get(ns, ns)

    def _ip(self, *args: str) -> None:
        proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30,
                              check=False)
        if proc.returncode != 0:
            raise TopologyError(f"ip {' '.join(args)}: {proc.stderr.strip()}")

    # ------------------------------------------------------------------ config and DNS

    def resolv_conf(self, path: str | os.PathLike[str], public: bool = False) -> Path:
        """A resolv.conf for the workstation: the central LAN resolver, or (public=True) the
        internet host's resolver that answers every name."""
        servers = (INTERNET_V4, INTERNET_V6) if public else (CENTRAL_V4, CENTRAL_V6)
        text = "".join(f"nameserver {s}\n" for s in servers)
        target = Path(path)
        target.write_text(text + f"search {LAN_DOMAIN}\noptions timeout:1 attempts:1\n")
        return target

    def config(self, **overrides: Any) -> NetlockConfig:
        """The netlock config of this floor: central (8443, its DNS) and the file server allowed,
        the internet host as canary over IPv4 and IPv6, TCP and UDP (web, 53 and 853)."""
        data: dict[str, Any] = {
            "enabled": True,
            "allow": [
                {"name": "central", "addresses": [CENTRAL_V4, CENTRAL_V6], "tcp": [8443, 53],
                 "udp": [53], "must_reach": [8443]},
                {"name": "files", "addresses": [FILES_V4, FILES_V6], "tcp": [445]},
            ],
            "networks": [LAN_V4, LAN_V6],
            "canaries": [{"address": a, "tcp": list(CANARY_TCP), "udp": list(CANARY_UDP)}
                         for a in (INTERNET_V4, INTERNET_V6)],
            "resolv_conf": str(self.resolv_path),
            "public_names": list(PUBLIC_NAMES),
        }
        data.update(overrides)
        return NetlockConfig.model_validate(data)

    # ------------------------------------------------------------------ breaches (one each)

    def add_default_route(self) -> None:
        """Breach: a default route (v4 and v6) through the router, which forwards to the
        internet host."""
        ws = self.ns["ws"]
        self._ip("-n", ws, "route", "replace", "default", "via", ROUTER_LAN_V4)
        self._ip("-n", ws, "-6", "route", "replace", "default", "via", ROUTER_LAN_V6)

    def remove_default_route(self) -> None:
        ws = self.ns["ws"]
        for family in ("-4", "-6"):
            subprocess.run(["ip", "-n", ws, family, "route", "del", "default"],
                           capture_output=True, check=False)

    def add_tether_interface(self, name: str = "usb0") -> None:
        """Breach: an interface named like a USB tether. A veth whose peer sits in the router
        (the dummy driver is not always loadable in a container); no address, just there."""
        self._ip("-n", self.ns["ws"], "link", "add", name, "type", "veth", "peer", "name",
                 f"t{name}"[:15], "netns", self.ns["rt"])
        self._ip("-n", self.ns["ws"], "link", "set", name, "up")

    def flush_ruleset(self) -> None:
        """Breach: the whole ruleset gone (`nft flush ruleset`)."""
        self.exec("ws", ["nft", "flush", "ruleset"])

    def open_output_chain(self, table: str = "floor_netlock") -> None:
        """Breach: an unconditional accept inserted first in the output chain (the policy
        alone is no hole: netlock's chain ends in reject rules, the policy is a backstop)."""
        self.exec("ws", ["nft", f"insert rule inet {table} output counter accept"])

    def set_output_policy_accept(self, table: str = "floor_netlock") -> None:
        """Breach: the output chain's policy switched to accept."""
        self.exec("ws", ["nft", f"chain inet {table} output {{ policy accept; }}"])

    def open_connection_to_internet(self, table: str = "floor_netlock", port: int = 443
                                    ) -> HeldConnection:
        """Breach: an established TCP connection to the internet host. Opened through a
        temporary host route and firewall hole that are removed again once it is up, so the
        only trace left is the connection itself (conntrack keeps it flowing)."""
        ws = self.ns["ws"]
        self._ip("-n", ws, "route", "add", f"{INTERNET_V4}/32", "via", ROUTER_LAN_V4)
        handle = None
        try:
            listed = self.exec("ws", ["nft", "list", "table", "inet", table], check=False)
            if listed.returncode == 0:
                out = self.exec("ws", ["nft", "--echo", "--handle", "insert", "rule", "inet",
                                       table, "output", "ip", "daddr", INTERNET_V4, "tcp",
                                       "dport", str(port), "accept"]).stdout
                found = re.search(r"# handle (\d+)", out)
                handle = found.group(1) if found else None
            proc = self.popen("ws", [sys.executable, "-c", HOLD_CONNECTION, INTERNET_V4,
                                     str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
            assert proc.stdout is not None
            banner = proc.stdout.readline().strip()
            if not banner:
                err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
                _stop(proc)
                raise TopologyError(f"connection to {INTERNET_V4}:{port} failed: {err.strip()}")
            return HeldConnection(proc, INTERNET_V4, port, banner)
        finally:
            if handle is not None:
                self.exec("ws", ["nft", "delete", "rule", "inet", table, "output", "handle",
                                 handle], check=False)
            subprocess.run(["ip", "-n", ws, "route", "del", f"{INTERNET_V4}/32"],
                           capture_output=True, check=False)

    def answering_resolver(self, via: str = "central") -> None:
        """Breach: a resolver the workstation uses answers public names. "central" restarts
        the LAN resolver answering every name (reachable through the lock); "internet" points
        the workstation's resolv.conf at the internet host's resolver."""
        if via == "internet":
            self.resolv_conf(self.resolv_path, public=True)
            return
        _stop(self._procs.pop("dns-cen"))
        self._dnsmasq("dns-cen", self.ns["cen"], (CENTRAL_V4, CENTRAL_V6),
                      self._lan_answers(public=True))


    def restore_resolver(self) -> None:
        """Undo `answering_resolver`: the LAN resolver answers internal names only again, and
        the workstation's resolv.conf points at it."""
        self.resolv_conf(self.resolv_path)
        _stop(self._procs.pop("dns-cen"))
        self._dnsmasq("dns-cen", self.ns["cen"], (CENTRAL_V4, CENTRAL_V6), self._lan_answers())


def new_prefix() -> str:
    """A short per-run namespace prefix: pid and randomness, so parallel runs never clash."""
    return f"fl{os.getpid() % 100000}{secrets.token_hex(2)}"


def namespaces(prefix: str) -> list[str]:
    """Namespaces (from `ip netns list`) named `<prefix>-*`: what a run leaves behind."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                         check=False).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if n.startswith(f"{prefix}-")]


def _listening_udp(pid: int, port: int) -> bool:
    """Whether the process's network namespace has a UDP socket bound to `port` (read through
    /proc/PID/net, which shows that process's namespace, not ours)."""
    suffix = f":{port:04X}"
    for table in ("udp", "udp6"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{table}") as f:
            next(f, None)  # header
            if any(line.split()[1].endswith(suffix) for line in f if len(line.split()) > 1):
                return True
    return False


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the process's session, SIGKILL after a second."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def main() -> None:
    """`python -m floor_agent.simulated.network`: bring a floor up for a demo until Ctrl-C."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # cleaned up on TERM too
    with Topology() as topo:
        for role, name in topo.ns.items():
            print(f"{role:4} {name}")
        print(f"resolv.conf {topo.resolv_path}; try: ip netns exec {topo.ns['ws']} bash")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()


class NamespaceRelay:
    """A TCP port inside a namespace that leads to a TCP port in this process's namespace (the
    host's): how the demo's workstation, locked inside its namespace with nothing but the
    floor LAN, reaches the collector running on the host's loopback, through the address of
    the central server. Bytes are relayed unchanged (TLS stays end to end).

    The listening socket is made by a thread that has entered the namespace (setns is per
    thread, and a socket keeps the namespace it was made in); the connections onward are made
    by threads started from the caller's thread, which stay in the host's namespace."""

    def __init__(self, netns: str, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.netns, self.listen, self.target = netns, listen, target
        self._server: socket.socket | None = None
        self._ready = threading.Event()
        self._accepted: queue.Queue[socket.socket | None] = queue.Queue()
        self._error: BaseException | None = None

    def start(self) -> NamespaceRelay:
        threading.Thread(target=self._listen, name="relay-listen", daemon=True).start()
        threading.Thread(target=self._dispatch, name="relay-dispatch", daemon=True).start()
        if not self._ready.wait(5) or self._error is not None:
            raise TopologyError(f"relay {self.netns} {self.listen}: {self._error}")
        return self

    def close(self) -> None:
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)
            self._server.close()
        self._accepted.put(None)

    def _listen(self) -> None:
        from pyroute2.netns import setns

        try:
            setns(self.netns, flags=0)  # this thread only
            family = socket.AF_INET6 if ":" in self.listen[0] else socket.AF_INET
            server = socket.socket(family, socket.SOCK_STREAM)
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(self.listen)
            server.listen(32)
            self._server = server
        except BaseException as e:  # reported by start()
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return  # closed
            self._accepted.put(conn)

    def _dispatch(self) -> None:
        while (conn := self._accepted.get()) is not None:
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, inside: socket.socket) -> None:
        try:
            outside = socket.create_connection(self.target, timeout=5)
        except OSError:
            inside.close()
            return
        outside.settimeout(None)
        other = threading.Thread(target=_pump, args=(inside, outside), daemon=True)
        other.start()
        _pump(outside, inside)
        other.join()
        inside.close()
        outside.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy one direction until it ends, then pass the end on."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            source.shutdown(socket.SHUT_RD)
