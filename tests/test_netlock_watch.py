"""watch.py: verdict changes become audit events (pure), and on the namespace floor every kind
of breach is caught by the right check through the right trigger, then its recovery.

The detection latency itself (target: 1 s) is measured by bench/netlock.py, not asserted
here: a test asserts that the breach is seen, by which check, and what woke the watcher (an
rtnetlink or nftables notification, or the fast poll for sockets and DNS), which is what keeps
it well inside the second.
"""

from __future__ import annotations

import json
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from audit_events import AuditRecorder, enrolled_offline
from netns_topology import apply_in, topology_fixture  # noqa: F401

from floor_agent.netlock.checks import Verdict
from floor_agent.netlock.watch import (
    SUBJECT,
    Cause,
    attribute,
    event_checks,
    summary_data,
    transitions,
)
from floor_agent.simulated.network import (
    INTERNET_V4,
    INTERNET_V6,
    ROUTER_LAN_V4,
    WATCHER_SCRIPT,
    WS_V4,
    Topology,
)

# the allowed server must answer within this: generous, because a loaded CI box can stall a
# namespace's first connection past the production default (50 ms), and a slow answer is
# "blocked cannot be told from down", not what these tests are about
PROBE_TIMEOUT_MS = 1000

REPO = Path(__file__).resolve().parent.parent


def v(check_id: str, verdict: str, severity: str = "critical") -> Verdict:
    return Verdict(check_id, verdict, severity, f"{check_id} is {verdict}", (f"ev {check_id}",))


def states(*verdicts: Verdict) -> dict[str, Verdict]:
    return {x.id: x for x in verdicts}


# --- transitions (pure) ----------------------------------------------------------------------

def test_no_change_no_event() -> None:
    same = states(v("routes.default", "pass"), v("dns.public_names", "fail"))
    assert transitions(same, same) == []


def test_a_new_critical_failure_is_a_breach_naming_every_failing_check() -> None:
    before = states(v("routes.default", "fail"), v("firewall.output", "pass"))
    after = states(v("routes.default", "fail"), v("firewall.output", "fail"))
    [(kind, severity, data)] = transitions(before, after)
    assert (kind, severity) == ("net.breach", "critical")
    assert data["new"] == ["firewall.output"]
    assert data["summary"] == "firewall.output is fail"
    assert [c["id"] for c in data["failed"]] == ["firewall.output", "routes.default"]
    assert data["failed"][0]["evidence"] == ["ev firewall.output"]


def test_recovery_partial_then_whole() -> None:
    both = states(v("routes.default", "fail"), v("firewall.output", "fail"))
    one = states(v("routes.default", "pass"), v("firewall.output", "fail"))
    none = states(v("routes.default", "pass"), v("firewall.output", "pass"))
    [(kind, severity, data)] = transitions(both, one)
    assert (kind, severity) == ("net.recovered", "warning")
    assert data["recovered"] == ["routes.default"] and data["still_failing"] == ["firewall.output"]
    [(kind, severity, data)] = transitions(one, none)
    assert (kind, severity, data["recovered"], data["still_failing"]) == (
        "net.recovered", "notice", ["firewall.output"], [])


def test_warnings_and_unknowns_are_reported_and_never_taken_as_pass() -> None:
    before = states(v("probes.allowed", "pass", "warning"), v("firewall.input", "pass"))
    after = states(v("probes.allowed", "fail", "warning"), v("firewall.input", "unknown"))
    kinds = [(k, s, d["new"]) for k, s, d in transitions(before, after)]
    assert kinds == [("net.warning", "warning", ["probes.allowed"]),
                     ("net.unverifiable", "warning", ["firewall.input"])]
    [(kind, _, data)] = transitions(after, before)
    assert kind == "net.recovered" and data["recovered"] == ["firewall.input", "probes.allowed"]


def test_first_verification_reports_what_already_fails() -> None:
    after = states(v("routes.default", "fail"), v("dns.public_names", "pass"))
    assert [k for k, _, _ in transitions({}, after)] == ["net.breach"]
    summary = summary_data(after.values(), 42.0)
    assert (summary["pass"], summary["fail"], summary["unknown"], summary["ms"]) == (1, 1, 0, 42)


def test_a_new_failing_fact_under_an_already_failing_check_is_a_breach() -> None:
    """Issue 16 item 2: a second route out while routes.allowlist already fails."""
    one = Verdict("routes.allowlist", "fail", "critical", "1 route(s)",
                  ("IPv4 10.77.50.0/24 via 10.77.1.1 dev eth0 table main",))
    two = Verdict("routes.allowlist", "fail", "critical", "2 route(s)",
                  one.evidence + ("IPv4 8.8.8.0/24 via 10.77.1.1 dev eth0 table main",))
    [(kind, severity, data)] = transitions(states(one), states(two))
    assert (kind, severity) == ("net.breach", "critical")
    assert (data["new"], data["worse"]) == ([], ["routes.allowlist"])
    assert data["new_evidence"] == {
        "routes.allowlist": ["IPv4 8.8.8.0/24 via 10.77.1.1 dev eth0 table main"]}
    assert "8.8.8.0/24" in data["summary"]
    # fewer failing facts is no breach; the same again is no event
    assert transitions(states(two), states(one)) == []
    assert transitions(states(two), states(two)) == []


def test_changing_detail_of_the_same_failing_fact_is_not_a_new_breach() -> None:
    """Keys identify a fact whose line changes between rounds (the fast socket poll cannot
    name the process a full collection named; a probe's time varies)."""
    full = Verdict("sockets.allowlist", "fail", "critical", "1",
                   ("10.77.9.9:443 pid 42 curl (tcp ESTABLISHED from 10.77.1.2:5000)",),
                   ("tcp 10.77.1.2:5000 10.77.9.9:443",))
    fast = Verdict("sockets.allowlist", "fail", "critical", "1",
                   ("10.77.9.9:443 pid ? (tcp ESTABLISHED from 10.77.1.2:5000)",),
                   ("tcp 10.77.1.2:5000 10.77.9.9:443",))
    assert transitions(states(full), states(fast)) == []
    other = Verdict("sockets.allowlist", "fail", "critical", "2",
                    fast.evidence + ("10.77.9.9:80 pid ? (tcp SYN_SENT from 10.77.1.2:5001)",),
                    fast.keys + ("tcp 10.77.1.2:5001 10.77.9.9:80",))
    [(kind, _, data)] = transitions(states(fast), states(other))
    assert kind == "net.breach"
    assert data["new_evidence"]["sockets.allowlist"] == [
        "10.77.9.9:80 pid ? (tcp SYN_SENT from 10.77.1.2:5001)"]


def test_a_new_failing_fact_under_a_failing_warning_check_is_a_warning() -> None:
    one = Verdict("probes.allowed", "fail", "warning", "1", ("tcp 10.0.0.1:443 timeout",))
    two = Verdict("probes.allowed", "fail", "warning", "2",
                  one.evidence + ("tcp 10.0.0.2:443 refused",))
    [(kind, _, data)] = transitions(states(one), states(two))
    assert kind == "net.warning" and data["worse"] == ["probes.allowed"]
    assert data["new_evidence"] == {"probes.allowed": ["tcp 10.0.0.2:443 refused"]}


def test_an_event_names_the_messages_of_its_own_checks_in_arrival_order() -> None:
    causes = [Cause("netlink RTM_DELROUTE 10.77.50.0/24", "routes"),
              Cause("netlink RTM_NEWLINK tun0", "links"),
              Cause("netlink RTM_NEWLINK tun0", "links"),
              Cause("nft add rule inet floor_netlock output accept", "ruleset")]
    assert attribute(causes, ["interfaces.unexpected"]) == "netlink RTM_NEWLINK tun0"
    assert attribute(causes, ["routes.allowlist"]) == "netlink RTM_DELROUTE 10.77.50.0/24"
    assert attribute(causes, ["firewall.output", "routes.default"]) == (
        "netlink RTM_DELROUTE 10.77.50.0/24, nft add rule inet floor_netlock output accept")
    # nothing of the checks' topics: the round was only woken by those messages, and says so
    assert attribute(causes[:1], ["dns.public_names"]) == (
        "woken by netlink RTM_DELROUTE 10.77.50.0/24")
    assert attribute([], ["dns.public_names"]) == ""  # the round's own name is used then


# --- on the namespace floor --------------------------------------------------------------------



class WatcherProcess:
    """The real NetlockWatcher in a process inside the workstation namespace; its events are
    JSON lines read by a thread, each written to a real audit Spool (in the topology's
    directory) before a test sees it: an event the chain would refuse fails the test at stop()
    (JSON keeps what the Spool checks: floats, strings, sizes)."""

    def __init__(self, topo: Topology, config_json: str) -> None:
        self.audit = AuditRecorder(topo.workdir, agent_id="ws-watcher")
        self.refused: list[str] = []
        self.proc = topo.popen("ws", [sys.executable, "-c", WATCHER_SCRIPT, config_json],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)
            if event["kind"] != "ready":  # the script's own marker, not an audit event
                try:
                    self.audit(event["kind"], SUBJECT, event["severity"], **event["data"])
                except Exception as e:  # refused by the chain: the test fails at stop()
                    self.refused.append(f"{event['kind']}: {type(e).__name__}: {e}")
            self.events.put(event)

    def _next(self, deadline: float, what: str, timeout: float) -> dict[str, Any]:
        """The next event, remembered in `seen`; none by the deadline fails the test."""
        try:
            event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"{what} within {timeout} s; seen: "
                                 f"{[(e['kind'], e['data'].get('new')) for e in self.seen]}"
                                 ) from None
        self.seen.append(event)
        return event

    def wait(self, kind: str, check: str | None = None, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            event = self._next(deadline, f"no {kind} {check or ''}", timeout)
            if event["kind"] == kind and (check is None or check in event_checks(event["data"])):
                return event

    def drain(self) -> list[dict[str, Any]]:
        """Every event emitted so far (and already read), without waiting."""
        time.sleep(0.2)  # let the reader thread pass on what the watcher printed
        while True:
            try:
                self.seen.append(self.events.get_nowait())
            except queue.Empty:
                return list(self.seen)

    def wait_each(self, *wanted: tuple[str, str], timeout: float = 10) -> list[dict[str, Any]]:
        """The first event of each (kind, check), in whatever order they come (two changes
        of one command may fall into one round or two)."""
        deadline = time.monotonic() + timeout
        found: dict[tuple[str, str], dict[str, Any]] = {}
        while len(found) < len(wanted):
            event = self._next(deadline, f"not all of {wanted}", timeout)
            for kind, check in wanted:
                if (kind, check) not in found and event["kind"] == kind and check in (
                        event_checks(event["data"])):
                    found[(kind, check)] = event
        return [found[w] for w in wanted]

    def stop(self) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        stderr = self.proc.stderr.read() if self.proc.stderr else ""
        self._reader.join(5)
        self.audit.close()
        assert not self.refused, f"events the audit chain refuses: {self.refused}"
        return stderr


def test_every_breach_is_caught_by_the_right_check_and_recovers(topology: Topology) -> None:
    config = topology.config(probe_timeout_ms=PROBE_TIMEOUT_MS)
    assert "error" not in apply_in(topology, config)
    watcher = WatcherProcess(topology, config.model_dump_json())
    try:
        verified = watcher.wait("net.verified", timeout=30)
        assert verified["data"]["fail"] == 0 and verified["data"]["unknown"] == 0, verified
        watcher.wait("ready")

        def breach(check: str, cause: Any, undo: Any,
                   trigger: str | tuple[str, ...]) -> dict[str, Any]:
            cause()
            event = watcher.wait("net.breach", check)
            assert event["severity"] == "critical"
            assert event["data"]["trigger"].startswith(trigger), event["data"]["trigger"]
            failed = {c["id"]: c for c in event["data"]["failed"]}
            undo()
            watcher.wait("net.recovered", check)
            return failed[check]

        route = breach("routes.default", topology.add_default_route,
                       topology.remove_default_route, "netlink")
        assert any("default" in line for line in route["evidence"])

        tether = breach("interfaces.unexpected", topology.add_tether_interface,
                        lambda: topology.exec("ws", ["ip", "link", "del", "usb0"]), "netlink")
        assert any("usb0" in line for line in tether["evidence"])

        hole = breach("firewall.output", topology.open_output_chain,
                      lambda: apply_in(topology, config), "nft")
        assert any("accept" in line for line in hole["evidence"])

        flushed = breach("firewall.input", topology.flush_ruleset,
                         lambda: apply_in(topology, config), "nft")
        assert flushed["verdict"] == "fail"

        held: list[Any] = []
        connection = breach("sockets.allowlist",
                            lambda: held.append(topology.open_connection_to_internet()),
                            lambda: held.pop().close(), "")
        assert any("10.77.9.9:443" in line for line in connection["evidence"])

        # a resolver's answers change with no local message: the DNS poll sees it, or a round
        # that other messages (the last step's route and rule removal) happened to wake
        dns = breach("dns.public_names", topology.answering_resolver,
                     topology.restore_resolver, ("poll", "woken by netlink ",
                                                 "woken by nft "))
        assert any("example.com" in line for line in dns["evidence"])
    finally:
        stderr = watcher.stop()
    assert "Traceback" not in stderr, stderr


def test_an_allowed_server_that_stops_answering_is_a_warning_then_recovers(
        topology: Topology) -> None:
    """A site table on the workstation drops TCP to the central server's must_reach port: the
    lock is intact, but blocked can no longer be told from down, so `probes.allowed` fails as
    a warning (`net.warning`, woken by the nftables message), not as a breach; removing the
    table is `net.recovered`. The full round every 5 s also finds it if the change came
    before `nft monitor` listened (a loaded box: the monitor starts after "ready")."""
    config = topology.config(probe_timeout_ms=PROBE_TIMEOUT_MS,
                             watch={"full_interval_seconds": 5})
    assert "error" not in apply_in(topology, config)
    watcher = WatcherProcess(topology, config.model_dump_json())
    try:
        verified = watcher.wait("net.verified", timeout=30)
        assert verified["data"]["fail"] == 0 and verified["data"]["unknown"] == 0, verified
        watcher.wait("ready")
        topology.exec("ws", ["nft", "add table inet site; add chain inet site out { type filter "
                             "hook output priority -10; policy accept; }; "
                             "add rule inet site out tcp dport 8443 drop"])
        warning = watcher.wait("net.warning", "probes.allowed", timeout=20)
        assert warning["severity"] == "warning"
        assert warning["data"]["new"] == ["probes.allowed"], warning["data"]
        assert warning["data"]["trigger"].startswith(("nft", "periodic")), warning["data"]
        [check] = warning["data"]["checks"]
        assert check["id"] == "probes.allowed" and check["verdict"] == "fail", check
        assert any("8443" in line and "[central]" in line for line in check["evidence"]), check
        topology.exec("ws", ["nft", "delete table inet site"])
        recovered = watcher.wait("net.recovered", "probes.allowed", timeout=20)
        assert recovered["severity"] == "notice" and recovered["data"]["still_failing"] == []
    finally:
        stderr = watcher.stop()
    assert not [e for e in watcher.seen if e["kind"] == "net.breach"], (watcher.seen, stderr)


def test_a_second_route_out_under_a_failing_check_is_its_own_breach(topology: Topology) -> None:
    """Issue 16 item 2 on the floor: routes.allowlist already fails for one route; a second
    route out is a new `net.breach` naming that route (it used to pass unreported)."""
    config = topology.config(probe_timeout_ms=PROBE_TIMEOUT_MS)
    assert "error" not in apply_in(topology, config)
    watcher = WatcherProcess(topology, config.model_dump_json())
    try:
        watcher.wait("ready", timeout=30)
        topology.exec("ws", ["ip", "route", "add", "10.77.50.0/24", "via", ROUTER_LAN_V4])
        first = watcher.wait("net.breach", "routes.allowlist")
        assert first["data"]["new"] == ["routes.allowlist"]
        topology.exec("ws", ["ip", "route", "add", "10.77.51.0/24", "via", ROUTER_LAN_V4])
        second = watcher.wait("net.breach", "routes.allowlist")
        assert (second["data"]["new"], second["data"]["worse"]) == ([], ["routes.allowlist"])
        assert second["data"]["new_evidence"] == {"routes.allowlist": [
            f"IPv4 10.77.51.0/24 via {ROUTER_LAN_V4} dev eth0 table main"]}
        assert second["data"]["trigger"].startswith("netlink RTM_NEWROUTE"), second["data"]
    finally:
        stderr = watcher.stop()
    assert "Traceback" not in stderr, stderr


def test_each_event_names_the_message_that_caused_it(topology: Topology) -> None:
    """Issue 16 item 5: a new tun device was reported as RTM_DELROUTE (every message type of
    the round, sorted). A route deleted and a tun device added in one round: the breach names
    RTM_NEWLINK tun0, the recovery RTM_DELROUTE and the route."""
    config = topology.config(probe_timeout_ms=PROBE_TIMEOUT_MS)
    assert "error" not in apply_in(topology, config)
    watcher = WatcherProcess(topology, config.model_dump_json())
    try:
        watcher.wait("ready", timeout=30)
        topology.exec("ws", ["ip", "route", "add", "10.77.50.0/24", "via", ROUTER_LAN_V4])
        route = watcher.wait("net.breach", "routes.allowlist")
        assert route["data"]["trigger"] == "netlink RTM_NEWROUTE 10.77.50.0/24", route["data"]
        topology.exec("ws", ["sh", "-c", "ip route del 10.77.50.0/24 && "
                                         "ip tuntap add mode tun tun0"])
        tun, recovered = watcher.wait_each(("net.breach", "interfaces.unexpected"),
                                           ("net.recovered", "routes.allowlist"))
        assert tun["data"]["trigger"] == "netlink RTM_NEWLINK tun0", tun["data"]
        assert recovered["data"]["trigger"] == "netlink RTM_DELROUTE 10.77.50.0/24", (
            recovered["data"])
    finally:
        stderr = watcher.stop()
    assert "Traceback" not in stderr, stderr


DNS_OVER_TCP = r"""
import sys, dns.message, dns.query
answer = dns.query.tcp(dns.message.make_query("example.com", "A"), sys.argv[1], timeout=3)
print(answer.answer[0][0].address)
"""


def test_a_short_dns_over_tcp_connection_outside_is_seen(topology: Topology) -> None:
    """Issue 16 item 4: a DNS-over-TCP query to a resolver outside the allowlist lasts a few
    milliseconds; the socket poll (here every 5 s) cannot see it, the kernel's destroy
    notification does. The breach names the peer and says the connection had ended."""
    canaries = [{"address": a, "tcp": [443, 80, 853], "udp": [53, 443, 853]}
                for a in (INTERNET_V4, INTERNET_V6)]  # tcp 53 is the user's, not a probe's
    config = topology.config(probe_timeout_ms=PROBE_TIMEOUT_MS, canaries=canaries,
                             watch={"poll_interval_seconds": 5})
    assert "error" not in apply_in(topology, config)
    watcher = WatcherProcess(topology, config.model_dump_json())
    try:
        watcher.wait("ready", timeout=30)
        # a way out for TCP 53 to the internet host only: a host route and a firewall hole
        topology.exec("ws", ["ip", "route", "add", f"{INTERNET_V4}/32", "via", ROUTER_LAN_V4])
        topology.exec("ws", ["nft", "insert", "rule", "inet", "floor_netlock", "output", "ip",
                             "daddr", INTERNET_V4, "tcp", "dport", "53", "accept"])
        watcher.wait_each(("net.breach", "routes.allowlist"), ("net.breach", "firewall.output"))
        started = time.monotonic()
        answered = topology.python("ws", DNS_OVER_TCP, INTERNET_V4)
        assert answered.stdout.strip() == INTERNET_V4  # the query went through, and is over
        breach = watcher.wait("net.breach", "sockets.allowlist", timeout=4)
        assert time.monotonic() - started < 4  # long before the 5 s poll
        assert breach["data"]["trigger"].startswith("sock_diag tcp "), breach["data"]
        [line] = breach["data"]["new_evidence"]["sockets.allowlist"]
        assert line.startswith(f"{INTERNET_V4}:53 uid 0 (tcp from {WS_V4}:"), line
        assert "ended between two polls" in line
        watcher.wait("net.recovered", "sockets.allowlist")  # it is over: the next round passes
    finally:
        stderr = watcher.stop()
    assert "Traceback" not in stderr, stderr


def test_verify_run_during_a_breach_is_not_counted_as_a_connection(topology: Topology,
                                                                  tmp_path: Path) -> None:
    """Issue 16 item 5: an admin runs `netlock verify` while the floor is open: its probes
    connect to the canaries and stay open until its slowest probe times out. They are not a
    sockets.allowlist breach (marked, to probe targets); a user's connection still is."""
    config = topology.config(probe_timeout_ms=PROBE_TIMEOUT_MS)
    assert "error" not in apply_in(topology, config)
    # one canary port that never answers keeps verify's connected probes open for its timeout
    topology.exec("net", ["nft", "add table inet slow; add chain inet slow in { type filter "
                          "hook input priority 0; policy accept; }; "
                          "add rule inet slow in tcp dport 853 drop"])
    path = tmp_path / "ws.yaml"
    path.write_text(yaml.safe_dump({
        "role": "workstation", "audit": {"agent_id": "ws-cli", "state_dir": str(tmp_path / "s")},
        "usb_guard": {"enabled": False}, "netlock": json.loads(config.model_dump_json())}))
    watcher = WatcherProcess(topology, config.model_dump_json())
    try:
        watcher.wait("ready", timeout=30)
        topology.add_default_route()
        topology.open_output_chain()
        watcher.wait_each(("net.breach", "routes.default"), ("net.breach", "firewall.output"))
        for _ in range(2):
            out = topology.exec("ws", [sys.executable, "-m", "floor_agent.cli", "netlock",
                                       "verify", "--json", "--config", str(path)], check=False)
            egress = next(c for c in json.loads(out.stdout)["checks"]
                          if c["id"] == "probes.egress")
            assert egress["verdict"] == "fail"  # verify's probes did get through
        time.sleep(2 * config.watch.poll_interval_seconds)  # polls after the last verify
        so_far = watcher.drain()
        counted = [e["data"] for e in so_far if "sockets.allowlist" in event_checks(e["data"])]
        assert counted == [], counted
        # the control: a user's connection to the same host is a breach
        with topology.open_connection_to_internet() as held:
            user = watcher.wait("net.breach", "sockets.allowlist")
            pid = held.proc.pid
    finally:
        stderr = watcher.stop()
    assert "Traceback" not in stderr, stderr
    [line] = user["data"]["new_evidence"]["sockets.allowlist"]
    assert line.startswith(f"{INTERNET_V4}:443 pid "), line
    assert f" pid {pid} " in line, (pid, line)  # the user's process, named


def test_the_workstation_agent_enforces_and_watches(topology: Topology, tmp_path: Path) -> None:
    """`floor-agent workstation` itself (no collector needed: events wait in its spool):
    loads the ruleset at start, verifies, reports a tether breach, stops on SIGTERM."""
    config = topology.config(probe_timeout_ms=PROBE_TIMEOUT_MS)
    topology.flush_ruleset()  # nothing loaded before the agent starts
    state = tmp_path / "state"
    path = _workstation_config(tmp_path, state, json.loads(config.model_dump_json()))
    agent = topology.popen("ws", [str(REPO / ".venv/bin/floor-agent"), "workstation",
                                  "--config", str(path)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        kinds = _wait_kinds(state, {"net.enforced", "net.verified"})
        topology.add_tether_interface("enx0a1b2c")
        kinds = _wait_kinds(state, {"net.breach"})
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(15)
        except subprocess.TimeoutExpired:
            agent.kill()
    stderr = agent.stderr.read() if agent.stderr else ""
    assert agent.returncode == 0, stderr
    assert kinds.index("net.enforced") < kinds.index("net.verified") < kinds.index("net.breach")
    rows = _events(state)
    verified = next(d for k, _, d in rows if k == "net.verified")
    assert verified["fail"] == 0 and verified["unknown"] == 0, verified
    breach = next(d for k, _, d in rows if k == "net.breach")
    assert breach["new"] == ["interfaces.unexpected"]
    assert "enx0a1b2c" in " ".join(breach["failed"][0]["evidence"])
    listed = topology.exec("ws", ["nft", "list", "table", "inet", config.table]).stdout
    assert "policy drop" in listed  # the ruleset stays loaded after the agent stops


def test_a_config_whose_allowlist_cannot_be_built_stops_the_workstation_agent(
        topology: Topology, tmp_path: Path) -> None:
    """`floor-agent workstation` with an allow entry naming a host that does not resolve (a
    typo, or DNS down at boot): netlock can neither enforce nor prove anything, so the agent
    records a critical `net.config_invalid` naming the entry and exits non-zero (systemd
    retries); no ruleset is loaded."""
    data = json.loads(topology.config(probe_timeout_ms=PROBE_TIMEOUT_MS).model_dump_json())
    data["allow"][1]["addresses"] = ["files.nowhere.invalid"]  # the ws namespace has no
    # route to any resolver: the name cannot resolve
    topology.flush_ruleset()
    state = tmp_path / "state"
    path = _workstation_config(tmp_path, state, data)
    agent = topology.popen("ws", [str(REPO / ".venv/bin/floor-agent"), "workstation",
                                  "--config", str(path)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        agent.wait(30)
    except subprocess.TimeoutExpired:
        agent.kill()
        agent.wait()
    stderr = agent.stderr.read() if agent.stderr else ""
    assert agent.returncode == 2, stderr
    assert "netlock refuses to start" in stderr, stderr
    rows = _events(state)
    net = [(k, s, d) for k, s, d in rows if k.startswith("net.")]
    assert [k for k, _, _ in net] == ["net.config_invalid"], rows
    _, severity, invalid = net[0]
    assert severity == "critical"
    assert invalid["where"] == "netlock.allow[1].addresses[0]", invalid
    assert "unknown host 'files.nowhere.invalid'" in invalid["error"], invalid
    listed = topology.exec("ws", ["nft", "list", "tables"]).stdout
    assert data["table"] not in listed  # nothing was loaded


def _workstation_config(tmp_path: Path, state: Path, netlock: dict[str, Any]) -> Path:
    """An enrolled workstation agent's config and state, without a collector: its key and a
    CA to pin (the forwarder retries against nothing while the events wait in the spool)."""
    workstation = {"role": "workstation",
                   "audit": {"agent_id": "ws-netlock", "state_dir": str(state),
                             "collector_url": "https://10.77.1.10:8443"},
                   "usb_guard": {"enabled": False}, "netlock": netlock}
    path = tmp_path / "workstation.yaml"
    path.write_text(yaml.safe_dump(workstation))
    enrolled_offline(state, "10.77.1.10")
    return path


def _events(state: Path) -> list[tuple[str, str, dict[str, Any]]]:
    with sqlite3.connect(state / "spool.db") as db:
        rows = db.execute("SELECT body FROM pending ORDER BY seq").fetchall()
    out = []
    for (body,) in rows:
        event = json.loads(body)
        out.append((event["kind"], event["severity"], event["data"]))
    return out


def _wait_kinds(state: Path, wanted: set[str], timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    kinds: list[str] = []
    while time.monotonic() < deadline:
        if (state / "spool.db").exists():
            try:
                kinds = [k for k, _, _ in _events(state)]
            except sqlite3.OperationalError:
                kinds = []
            if wanted <= set(kinds):
                return kinds
        time.sleep(0.1)
    pytest.fail(f"agent did not record {wanted}; recorded {kinds}")


# --- the watcher's shell with a stand-in collector ----------------------------------------------

def test_without_nft_the_ruleset_is_polled_and_the_watcher_stays_healthy(tmp_path: Path) -> None:
    """No `nft` for the monitor: the ruleset joins the fast poll; the thread stays up (the
    watchdog counts it); facts that cannot be collected are reported, never taken as pass."""
    from floor_agent.netlock.allowlist import build
    from floor_agent.netlock.config import NetlockConfig
    from floor_agent.netlock.facts import AREAS, Fact, Facts
    from floor_agent.netlock.watch import NetlockWatcher

    config = NetlockConfig.model_validate({
        "enabled": True, "allow": [{"name": "central", "addresses": ["127.0.0.1"]}],
        "watch": {"poll_interval_seconds": 0.05}})
    asked: list[frozenset[str] | None] = []
    events: list[tuple[str, str, dict[str, Any]]] = []

    def collect(config: Any, allowlist: Any, areas: frozenset[str] | None = None,
                peers: Any = None) -> Facts:
        asked.append(areas)
        return Facts(**{a: Fact(None, "cannot read it here") for a in AREAS})

    audit = AuditRecorder(tmp_path, then=lambda kind, subject, severity, **data: events.append(
        (kind, severity, data)))  # each event through a real Spool first
    watcher = NetlockWatcher(config, build(config), audit, collect=collect,
                             nft="no-such-nft-binary")
    stop = threading.Event()
    watcher.start(stop)
    try:
        deadline = time.monotonic() + 5
        while not any(a and "ruleset" in a for a in asked) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert any(a and "ruleset" in a and "sockets" in a for a in asked), asked
        assert watcher.healthy()
    finally:
        stop.set()
        watcher.stop()
        audit.close()
    assert asked[0] is None  # the first verification is a full one
    kinds = [k for k, _, _ in events]
    assert kinds[:2] == ["net.unverifiable", "net.verified"]
    assert events[0][1] == "warning" and events[0][2]["trigger"] == "start"
    unverifiable = events[0][2]
    assert len(unverifiable["new"]) == 13
    assert all("cannot read it here" in " ".join(c["evidence"]) + c["summary"]
               for c in unverifiable["checks"])
    assert "net.breach" not in kinds and "net.recovered" not in kinds


def test_a_watcher_thread_that_dies_is_a_critical_event_and_stops_the_agent(
        tmp_path: Path) -> None:
    """A round that raises (here the fact collection, on the first periodic round after a
    good start) kills the watch loop: that is `net.watch_failed` (critical, naming the thread
    and the error), the watcher is no longer healthy, and the agent's shutdown is set so
    systemd restarts it. A deaf watcher must never look like a quiet floor."""
    from floor_agent.netlock.allowlist import build
    from floor_agent.netlock.config import NetlockConfig
    from floor_agent.netlock.facts import AREAS, Fact, Facts
    from floor_agent.netlock.watch import NetlockWatcher

    config = NetlockConfig.model_validate({
        "enabled": True, "allow": [{"name": "central", "addresses": ["127.0.0.1"]}],
        "watch": {"full_interval_seconds": 1, "poll_interval_seconds": 5,
                  "dns_interval_seconds": 60}})
    rounds: list[frozenset[str] | None] = []

    def collect(config: Any, allowlist: Any, areas: frozenset[str] | None = None,
                peers: Any = None) -> Facts:
        rounds.append(areas)
        if len(rounds) > 1:
            raise PermissionError(13, "Permission denied", "/proc/net/tcp")
        return Facts(**{a: Fact(None, "stand-in") for a in AREAS})

    audit = AuditRecorder(tmp_path)
    watcher = NetlockWatcher(config, build(config), audit, collect=collect,
                             nft="no-such-nft-binary")
    shutdown = threading.Event()
    watcher.start(shutdown)
    try:
        assert shutdown.wait(10), f"the agent was not stopped; events: {audit.kinds()}"
        assert not watcher.healthy()
    finally:
        shutdown.set()
        watcher.stop()
        audit.close()
    [failed] = audit.of("net.watch_failed")
    assert failed == {"thread": "netlock-watch",
                      "error": "PermissionError: [Errno 13] Permission denied: '/proc/net/tcp'"}
    assert [s for k, _, s, _ in audit.items if k == "net.watch_failed"] == ["critical"]
    assert audit.kinds().index("net.verified") < audit.kinds().index("net.watch_failed")
    assert isinstance(watcher.error, PermissionError)


def test_a_cause_arriving_while_the_loop_takes_the_last_ones_is_not_lost() -> None:
    """The flake under load: a message that came between the loop taking the pending causes
    and clearing its wake-up flag had its wake-up cleared, and waited for the 30 s full round
    (the test waits 10 s). Forced here: the message arrives exactly then, from another thread."""
    from floor_agent.netlock.allowlist import build
    from floor_agent.netlock.config import NetlockConfig
    from floor_agent.netlock.facts import AREAS, Fact, Facts
    from floor_agent.netlock.watch import NetlockWatcher

    config = NetlockConfig.model_validate({
        "enabled": True, "allow": [{"name": "central", "addresses": ["127.0.0.1"]}],
        "watch": {"full_interval_seconds": 3600, "poll_interval_seconds": 5,
                  "dns_interval_seconds": 60}})
    rounds: list[float] = []

    def collect(config: Any, allowlist: Any, areas: frozenset[str] | None = None,
                peers: Any = None) -> Facts:
        if areas is None:
            rounds.append(time.monotonic())
        return Facts(**{a: Fact(None, "stand-in") for a in AREAS})

    watcher = NetlockWatcher(config, build(config), lambda *a, **k: None, collect=collect,
                             nft="no-such-nft-binary")

    class RacingWake(threading.Event):
        raced = False

        def clear(self) -> None:
            if not self.raced:  # the next message arrives right now, on its own thread
                self.raced = True
                late = threading.Thread(target=watcher.trigger, args=("late message",))
                late.start()
                late.join(0.2)  # done, unless the loop rightly holds the lock meanwhile
            super().clear()

    watcher._wake = RacingWake()
    stop = threading.Event()
    loop = threading.Thread(target=watcher._loop, args=(stop,), daemon=True)
    loop.start()
    try:
        watcher.trigger("first message")
        deadline = time.monotonic() + 3
        while len(rounds) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        watcher._wake.set()
        loop.join(2)
    assert watcher._wake.raced
    assert len(rounds) == 2, "the late message's round never ran"
