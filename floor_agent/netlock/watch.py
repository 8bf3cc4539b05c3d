"""Watching: verify again at once when the network changes, poll what has no change event, and
turn changes of the verdicts into audit events.

What triggers what (the issue's budget is one second from breach to `net.breach`):
- links, addresses and routes: rtnetlink multicast (pyroute2) -> a full verification at once;
- the nftables ruleset: `nft monitor` (the kernel's nftables notifications) -> a full
  verification at once; if the monitor cannot run, the ruleset is polled instead;
- sockets: live ones have no change event: their peers are polled over sock_diag every
  `poll_interval_seconds` (a full collection names the process when one is outside); a TCP
  connection that ends between two polls is reported by the kernel as it is destroyed
  (sock_diag destroy multicast) -> a verification at once, with that connection as a fact;
- DNS: a resolver that starts answering gives no local event: the public names are asked
  again, over UDP and TCP, every `dns_interval_seconds`;
- everything, probes included: every `full_interval_seconds`.

`transitions` (pure) decides the events: `net.breach` (critical) when a critical check starts
failing or a failing one has a new failing fact (another route, connection, interface: its
evidence compared by stable keys), naming what is new and every failing check with its
evidence; `net.recovered` when failing checks pass again; `net.warning` likewise for
non-critical failures and `net.unverifiable` when a check cannot be decided (unknown is never
taken as pass). Each event's `trigger` names the change messages that concern its own checks,
in the order they arrived (`attribute`), or says what woke the round when the change had no
message of its own.
"""

from __future__ import annotations

import dataclasses
import logging
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from floor_agent.netlock import checks as checks_module
from floor_agent.netlock import facts as facts_module
from floor_agent.netlock.allowlist import Allowlist
from floor_agent.netlock.checks import Status, Verdict
from floor_agent.netlock.config import NetlockConfig
from floor_agent.protocol.emit import Emit
from floor_agent.protocol.kinds.net import NetKind
from floor_agent.service import guarded_thread

log = logging.getLogger(__name__)

SUBJECT = "netlock"

# Which checks a partial collection decides (the rest keep their last verdict).
AREA_CHECKS: Mapping[str, tuple[str, ...]] = {
    "sockets": ("sockets.allowlist",),
    "dns": ("dns.public_names",),
    "ruleset": ("firewall.input", "firewall.forward", "firewall.output", "firewall.table"),
}
MIN_GAP_SECONDS = 0.05  # a burst of netlink messages (one `ip link add`) is one verification
MAX_CAUSES = 50  # change messages kept per round (a flood of them is still one round)
# What each check's verdict depends on, as the topics of the change messages: a verdict change
# is attributed to the messages of its topic (a new tun device to RTM_NEWLINK tun0, not to a
# route message that happened to arrive in the same batch).
CHECK_TOPICS: Mapping[str, frozenset[str]] = {
    "routes": frozenset({"routes"}), "interfaces": frozenset({"links"}),
    "firewall": frozenset({"ruleset"}), "sockets": frozenset({"sockets"}),
    "dns": frozenset({"dns"}), "probes": frozenset({"routes", "ruleset", "links"}),
}
# Topics whose changes always come with a message (rtnetlink, nft monitor), and the checks that
# change only with them: such a verdict change waits briefly for its message. (Probes can
# change with nothing local changing: they never wait.)
WAITABLE_TOPICS = frozenset({"links", "routes", "ruleset"})
WAITING_CHECKS = frozenset({"routes", "interfaces", "firewall"})
SETTLE_SECONDS = 0.2
# rtnetlink message -> topic (RTM_NEWLINK -> links, ...)
NETLINK_TOPICS = {"LINK": "links", "ROUTE": "routes", "ADDR": "addresses"}


@dataclass(frozen=True, slots=True)
class Cause:
    """One change message that woke the watcher: its text and what it is about."""

    text: str  # "netlink RTM_NEWLINK tun0", "nft add chain inet floor_netlock output ..."
    topic: str  # links, routes, addresses, ruleset, sockets, dns, other


# --- pure ----------------------------------------------------------------------------------

def verdict_data(verdict: Verdict) -> dict[str, Any]:
    """A verdict as event data: what failed, how bad, and the evidence an admin acts on."""
    return {"id": verdict.id, "verdict": verdict.verdict, "severity": verdict.severity,
            "summary": verdict.summary, "evidence": list(verdict.evidence)}


def _ids(verdicts: Mapping[str, Verdict], verdict: Status,
         critical: bool | None = None) -> set[str]:
    return {i for i, v in verdicts.items() if v.verdict == verdict
            and (critical is None or (v.severity == "critical") == critical)}


def new_evidence(before: Verdict | None, after: Verdict) -> list[str]:
    """The evidence lines of a failing check that were not failing evidence before: a second
    route out under a `routes.allowlist` that already failed is a new breach, not old news."""
    if after.verdict != "fail":
        return []
    seen = before.items() if before is not None and before.verdict == "fail" else {}
    return [line for key, line in after.items().items() if key not in seen]


def transitions(before: Mapping[str, Verdict],
                after: Mapping[str, Verdict]) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, severity, data) of the events for a change of verdicts, in the order to emit.

    A check that starts failing, and a failing check with new evidence (a new failing fact:
    another route, connection, interface), each make a `net.breach` (critical checks) or
    `net.warning`; `new` lists the first, `worse` the second, `new_evidence` what is new in
    each of them."""
    events: list[tuple[str, str, dict[str, Any]]] = []
    breached_before, breached = _ids(before, "fail", True), _ids(after, "fail", True)
    new = breached - breached_before
    worse = {i for i in breached & breached_before if new_evidence(before.get(i), after[i])}
    if new or worse:
        events.append((NetKind.BREACH, "critical", {
            "new": sorted(new), "worse": sorted(worse),
            "summary": "; ".join(_change_summary(before.get(i), after[i])
                                 for i in sorted(new | worse)),
            "new_evidence": {i: new_evidence(before.get(i), after[i])
                             for i in sorted(new | worse)},
            "failed": [verdict_data(after[i]) for i in sorted(breached)]}))
    problems_before = breached_before | _ids(before, "fail", False) | _ids(before, "unknown")
    recovered = sorted(i for i in problems_before if i in after and after[i].ok)
    if recovered:
        still = sorted(breached)
        events.append((NetKind.RECOVERED, "warning" if still else "notice", {
            "recovered": recovered, "still_failing": still,
            "checks": [verdict_data(after[i]) for i in recovered]}))
    warned_before = _ids(before, "fail", False)
    warned = _ids(after, "fail", False) - warned_before
    warned_worse = {i for i in _ids(after, "fail", False) & warned_before
                    if new_evidence(before.get(i), after[i])}
    if warned or warned_worse:
        changed = sorted(warned | warned_worse)
        events.append((NetKind.WARNING, "warning", {
            "new": sorted(warned), "worse": sorted(warned_worse),
            "summary": "; ".join(_change_summary(before.get(i), after[i]) for i in changed),
            "new_evidence": {i: new_evidence(before.get(i), after[i]) for i in changed},
            "checks": [verdict_data(after[i]) for i in changed]}))
    unknown = _ids(after, "unknown") - _ids(before, "unknown")
    if unknown:
        events.append((NetKind.UNVERIFIABLE, "warning", {
            "new": sorted(unknown),
            "summary": "; ".join(after[i].summary for i in sorted(unknown)),
            "checks": [verdict_data(after[i]) for i in sorted(unknown)]}))
    return events


def _change_summary(before: Verdict | None, after: Verdict) -> str:
    if before is None or before.verdict != "fail":
        return after.summary
    return f"{after.id}: new: " + "; ".join(new_evidence(before, after))


def attribute(causes: Sequence[Cause], check_ids: Iterable[str], limit: int = 3) -> str:
    """The `trigger` of an event about `check_ids`: the change messages of their topics, in
    the order they arrived. When none is of those topics the change had no message of its
    own (a resolver that starts answering): "woken by" the messages that ran the round."""
    topics = _topics(check_ids)
    texts = list(dict.fromkeys(c.text for c in causes if c.topic in topics))
    prefix = ""
    if not texts:
        if not causes:
            return ""  # no message at all: the caller names the round (poll, periodic)
        texts, prefix = list(dict.fromkeys(c.text for c in causes)), "woken by "
    if len(texts) > limit:
        return prefix + ", ".join(texts[:limit]) + f" (+{len(texts) - limit} more)"
    return prefix + ", ".join(texts)


def socket_key(s: Any) -> str:
    """The identity of a connection across rounds (the sockets check's evidence key)."""
    return f"{s.proto} {s.local} {s.remote}"


def _topics(check_ids: Iterable[str]) -> frozenset[str]:
    return frozenset().union(*(CHECK_TOPICS.get(i.split(".", 1)[0], frozenset())
                               for i in check_ids))


def event_checks(data: Mapping[str, Any]) -> list[str]:
    """The check ids an event from `transitions` is about."""
    return [*data.get("new", ()), *data.get("worse", ()), *data.get("recovered", ())]


def describe_netlink(message: Any) -> Cause:
    """An rtnetlink message as a Cause naming its subject: the link, route or address."""
    event = str(message.get("event"))
    kind = event.removeprefix("RTM_NEW").removeprefix("RTM_DEL")
    topic = NETLINK_TOPICS.get(kind, "other")
    subject = ""
    try:
        if kind == "LINK":
            subject = message.get_attr("IFLA_IFNAME") or f"#{message['index']}"
        elif kind == "ROUTE":
            dst = message.get_attr("RTA_DST") or "default"
            subject = dst if dst == "default" else f"{dst}/{message['dst_len']}"
        elif kind == "ADDR":
            subject = (f"{message.get_attr('IFA_ADDRESS')}/{message['prefixlen']} "
                       f"#{message['index']}")
    except (KeyError, TypeError, AttributeError):
        subject = ""
    return Cause(f"netlink {event} {subject}".rstrip(), topic)


def summary_data(verdicts: Iterable[Verdict], ms: float) -> dict[str, Any]:
    """The `net.verified` data: counts, every verdict, how long the verification took."""
    listed = list(verdicts)
    counts = {k: sum(1 for v in listed if v.verdict == k) for k in ("pass", "fail", "unknown")}
    return {**counts, "ms": int(round(ms)), "checks": [verdict_data(v) for v in listed]}


# --- the imperative shell ---------------------------------------------------------------------

class NetlockWatcher:
    """Keeps the verdicts current and reports their changes through `emit`."""

    def __init__(self, config: NetlockConfig, allowlist: Allowlist, emit: Emit, *,
                 collect: Callable[..., facts_module.Facts] = facts_module.collect,
                 nft: str = "nft") -> None:
        self.config = config
        self.allowlist = allowlist
        self.emit = emit
        self.collect = collect
        self.nft = nft
        self.verdicts: dict[str, Verdict] = {}
        self.last_full: float | None = None  # monotonic time of the last full verification
        self.last_ms: float = 0.0
        self.error: BaseException | None = None
        self._wake = threading.Event()
        self._causes: list[Cause] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._monitor: subprocess.Popen[str] | None = None
        self._peers: facts_module.SocketPeers | None = None
        self._poll_ruleset = False  # set when `nft monitor` cannot run
        # TCP connections outside the allowlist that ended between two polls (sock_diag destroy
        # notifications), waiting to be judged by the next round
        self._closed: list[facts_module.Socket] = []
        self._probe_targets = checks_module.probe_targets(config, allowlist)

    def replace_allowlist(self, config: NetlockConfig, allowlist: Allowlist,
                          reason: str = "policy") -> None:
        """Prove against a new allowlist from now on (a central policy's; the caller has
        loaded its ruleset already) and verify everything again at once, in the watcher's own
        loop like any change (`reason` names it in the events' trigger). A round running
        meanwhile finishes under the old allowlist, the next runs under the new."""
        with self._lock:
            self.config = config
            self.allowlist = allowlist
            self._probe_targets = checks_module.probe_targets(config, allowlist)
        self.trigger(Cause(reason, "ruleset"))

    # -- verification --

    def verify(self, areas: frozenset[str] | None = None, reason: str = "",
               causes: Sequence[Cause] = ()) -> list[Verdict]:
        """Collect, judge, merge and report. `areas` None means everything. Each event's
        `trigger` names the change messages of this round that concern its checks (`causes`,
        else `reason`: start, poll, periodic)."""
        started = time.perf_counter()
        closed = self._take_closed() if areas is None or "sockets" in areas else []
        verdicts = self._judge(areas, fast=areas is not None, closed=closed)
        if areas is not None and "sockets" in areas and any(
                v.id == "sockets.allowlist" and not v.ok
                and (self.verdicts.get(v.id) is None or self.verdicts[v.id].ok)
                for v in verdicts):
            # the full collection names the process (~10 ms)
            verdicts = self._judge(areas, fast=False, closed=closed)
        ms = (time.perf_counter() - started) * 1000
        with self._lock:
            before = dict(self.verdicts)
            self.verdicts.update({v.id: v for v in verdicts})
            after = dict(self.verdicts)
            if areas is None:
                self.last_full, self.last_ms = time.monotonic(), ms
            # messages that arrived while collecting describe changes it may have seen: they
            # may name this round's change (they also wake the next round)
            candidates = [*causes, *self._causes]
        events = transitions(before, after)
        if events and areas is None and reason != "start":
            candidates = self._settle(causes, candidates,
                                      [i for _, _, data in events for i in event_checks(data)])
        for kind, severity, data in events:
            ids = event_checks(data)
            own = [c for c in candidates if c.topic in _topics(ids)]
            trigger = attribute(own or causes, ids)
            if trigger or reason:
                data["trigger"] = trigger or reason
            self.emit(kind, SUBJECT, severity, **data)
        return verdicts

    def _settle(self, causes: Sequence[Cause], candidates: list[Cause],
                ids: Iterable[str]) -> list[Cause]:
        """The change messages that may have caused this round's changes, waiting up to
        SETTLE_SECONDS for the message of a change the collection already saw: the kernel
        queues it before the change is visible, but our reading thread may not have had the
        CPU yet (a tun device created just after a route message woke the round)."""
        wanted = _topics(i for i in ids if i.split(".", 1)[0] in WAITING_CHECKS) & (
            WAITABLE_TOPICS)
        if self._poll_ruleset:
            wanted -= {"ruleset"}  # no nft monitor: no ruleset messages to wait for
        deadline = time.monotonic() + SETTLE_SECONDS
        # every topic with a change must have its message (a route message already there
        # says nothing about the tun device the same round saw)
        while wanted - {c.topic for c in candidates}:
            if time.monotonic() >= deadline:
                break
            time.sleep(0.01)
            with self._lock:
                candidates = [*causes, *self._causes]
        return candidates

    def _judge(self, areas: frozenset[str] | None, fast: bool,
               closed: Sequence[facts_module.Socket] = ()) -> list[Verdict]:
        facts = self.collect(self.config, self.allowlist, areas,
                             peers=self._peers if fast else None)
        if closed and facts.sockets.ok:
            facts = dataclasses.replace(facts, sockets=dataclasses.replace(
                facts.sockets, value=(*(facts.sockets.value or ()), *closed)))
        only = None if areas is None else [c for a in areas for c in AREA_CHECKS.get(a, ())]
        return checks_module.run(facts, self.config, self.allowlist, only=only)

    def _take_closed(self) -> list[facts_module.Socket]:
        """The ended connections waiting, minus those a poll already saw alive (their breach
        was reported then)."""
        with self._lock:
            closed, self._closed = self._closed, []
            previous = self.verdicts.get("sockets.allowlist")
        seen = set(previous.items()) if previous is not None else set()
        return [s for s in closed if socket_key(s) not in seen]

    def closed_connections(self, sockets: Iterable[facts_module.Socket]) -> None:
        """Ended TCP connections from sock_diag: those to a peer outside the allowlist (and
        not to a probe target: netlock's own probes, of any netlock process, end there) are
        kept for the next round, which is asked for at once."""
        for s in sockets:
            host = s.remote_host
            if host is None or self.allowlist.covers_address(host):
                continue
            if (s.proto, host, s.remote_port) in self._probe_targets or (
                    s.remote_port == 53 and host in self._resolvers()):
                continue
            with self._lock:
                if len(self._closed) < MAX_CAUSES:
                    self._closed.append(s)
            self.trigger(Cause(f"sock_diag tcp {s.local} -> {s.remote} ended", "sockets"))

    def _resolvers(self) -> set[str]:
        """The resolvers netlock asks over TCP (its own DNS probes end there too)."""
        try:
            return set(facts_module.read_nameservers(self.config.resolv_conf))
        except OSError:
            return set()

    def trigger(self, cause: Cause | str) -> None:
        """Ask for a full verification as soon as possible (netlink, nft monitor)."""
        if isinstance(cause, str):
            cause = Cause(cause, "other")
        with self._lock:
            if len(self._causes) < MAX_CAUSES:
                self._causes.append(cause)
            self._wake.set()  # under the lock: the loop clears it and takes the causes at once

    # -- lifecycle --

    def start(self, shutdown: threading.Event) -> None:
        """First full verification (reported as `net.verified`), then the event sources and the
        loop, each in a thread, until `shutdown` is set."""
        try:
            self._peers = facts_module.SocketPeers()
        except Exception as e:  # sock_diag unavailable: polls fall back to psutil
            log.warning("netlock: sock_diag unavailable, polling sockets with psutil: %s", e)
        verdicts = self.verify(reason="start")
        self.emit(NetKind.VERIFIED, SUBJECT, "info", **summary_data(verdicts, self.last_ms))
        self._threads = [
            guarded_thread(name, body, shutdown, self._failed(name))
            for name, body in (("netlock-netlink", self._netlink),
                               ("netlock-nft-monitor", self._nft_monitor),
                               ("netlock-sock-destroy", self._destroyed),
                               ("netlock-watch", self._loop))
        ]
        for thread in self._threads:
            thread.start()

    def healthy(self) -> bool:
        """For the watchdog: every thread runs and a full verification ran recently."""
        if self.error is not None or not self._threads:
            return False
        if not all(t.is_alive() for t in self._threads):
            return False
        recent = self.config.watch.full_interval_seconds * 3 + 30
        return self.last_full is not None and time.monotonic() - self.last_full < recent

    def stop(self) -> None:
        if self._monitor is not None and self._monitor.poll() is None:
            self._monitor.terminate()
        for thread in self._threads:
            thread.join(2)
        if self._peers is not None:
            self._peers.close()

    def _failed(self, thread: str) -> Callable[[BaseException], None]:
        def failed(e: BaseException) -> None:
            self.error = e
            self.emit(NetKind.WATCH_FAILED, SUBJECT, "critical", error=f"{type(e).__name__}: {e}",
                      thread=thread)
        return failed

    def _loop(self, shutdown: threading.Event) -> None:
        watch = self.config.watch
        now = time.monotonic()
        next_full = now + watch.full_interval_seconds
        next_poll = now + watch.poll_interval_seconds
        next_dns = now + watch.dns_interval_seconds
        while not shutdown.is_set():
            now = time.monotonic()
            timeout = max(0.0, min(next_full, next_poll, next_dns) - now)
            if self._wake.wait(timeout):
                if shutdown.is_set():
                    return
                time.sleep(MIN_GAP_SECONDS)  # let the rest of a burst arrive
                with self._lock:  # a cause added after this wakes the next round
                    causes, self._causes = self._causes, []
                    self._wake.clear()
                if not causes:
                    continue
                self.verify(causes=causes)
                next_full = time.monotonic() + watch.full_interval_seconds
                continue
            now = time.monotonic()
            if now >= next_full:
                self.verify(reason="periodic")
                next_full = time.monotonic() + watch.full_interval_seconds
                continue
            areas = set()
            if now >= next_poll:
                areas.add("sockets")
                if self._poll_ruleset:
                    areas.add("ruleset")
                next_poll = now + watch.poll_interval_seconds
            if now >= next_dns:
                areas.add("dns")
                next_dns = now + watch.dns_interval_seconds
            if areas:
                self.verify(frozenset(areas), reason="poll")

    def _netlink(self, shutdown: threading.Event) -> None:
        from pyroute2 import IPRoute
        from pyroute2.netlink.rtnl import (
            RTMGRP_IPV4_IFADDR,
            RTMGRP_IPV4_ROUTE,
            RTMGRP_IPV6_IFADDR,
            RTMGRP_IPV6_ROUTE,
            RTMGRP_LINK,
        )

        groups = (RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE
                  | RTMGRP_IPV6_ROUTE)
        with IPRoute() as ipr:
            ipr.bind(groups=groups)
            while not shutdown.is_set():
                readable, _, _ = select.select([ipr.fileno()], [], [], 0.2)
                if not readable:
                    continue
                for message in ipr.get():  # in the order the kernel sent them
                    self.trigger(describe_netlink(message))

    def _destroyed(self, shutdown: threading.Event) -> None:
        """TCP connections as the kernel destroys them (sock_diag destroy multicast): one that
        lived between two socket polls is still judged. Without the privilege to listen, only
        the poll remains, and the log says so."""
        try:
            source = facts_module.DestroyedConnections()
        except OSError as e:
            log.warning("netlock: no sock_diag destroy notifications (%s): connections "
                        "shorter than the %g s poll can go unseen", e,
                        self.config.watch.poll_interval_seconds)
            shutdown.wait()  # stays alive: healthy() counts this thread
            return
        try:
            while not shutdown.is_set():
                readable, _, _ = select.select([source.fileno()], [], [], 0.2)
                if not readable:
                    continue
                try:
                    self.closed_connections(source.read())
                except OSError as e:  # ENOBUFS: notifications were lost
                    self.emit(NetKind.UNVERIFIABLE, SUBJECT, "warning", new=["sockets.allowlist"],
                              summary=f"ended connections may have been missed: {e}",
                              checks=[], trigger="sock_diag")
        finally:
            source.close()

    def _nft_monitor(self, shutdown: threading.Event) -> None:
        """`nft monitor` prints a line per ruleset change; any line triggers a verification.
        If it cannot run or dies, the ruleset joins the fast poll instead."""
        path = shutil.which(self.nft)
        if path is None:
            log.warning("netlock: %s not found; polling the ruleset", self.nft)
            self._poll_ruleset = True
            shutdown.wait()  # stays alive: healthy() counts this thread
            return
        while not shutdown.is_set():
            self._monitor = subprocess.Popen(
                [path, "monitor", "ruleset"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, bufsize=1)
            assert self._monitor.stdout is not None
            self._poll_ruleset = False
            for line in self._monitor.stdout:
                if line.strip():
                    self.trigger(Cause("nft " + line.strip()[:120], "ruleset"))
            self._monitor.wait()
            if shutdown.is_set():
                return
            log.warning("netlock: nft monitor ended (%s); polling the ruleset",
                        self._monitor.returncode)
            self._poll_ruleset = True
            self.trigger(Cause("nft monitor ended", "ruleset"))
            shutdown.wait(5)  # then try the monitor again
