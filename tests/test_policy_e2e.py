"""The central policy end to end: the real collector process and real `floor-agent
workstation` processes (enrolled with tokens, `policy.enabled: true`), each on its own
umockdev bus (tests/policy_floor.py). What the admin API changes on the collector is what the
workstations' sysfs shows and what the collector's stored events report."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import yaml
from collector_process import CollectorProcess
from netns_topology import (
    probe,
    topology_fixture,  # noqa: F401
)
from policy_floor import (
    BOOTSTRAP_RULES,
    REPO,
    STORAGE_ALLOWED,
    Events,
    PolicyAdmin,
    TamperingProxy,
    Workstation,
    wait_until,
)
from umockdev_bus import KEYBOARD, STICK

from floor_agent.audit.agent import enroll
from floor_agent.protocol.event import utc_timestamp
from floor_agent.simulated.network import CENTRAL_V4, CENTRAL_V6, FILES_V4, NamespaceRelay, Topology

# the same model (0781:5567 SanDisk Cruzer Blade) with another serial, on another port
OTHER = dataclasses.replace(STICK, port=5, devnum=6, serial=b"4C530009999999999999")


@dataclasses.dataclass
class Floor:
    collector: CollectorProcess
    admin: PolicyAdmin
    events: Events
    stations: list[Workstation]

    def workstation(self, name: str, devices: tuple = (STICK, KEYBOARD),
                    collector_url: str | None = None) -> Workstation:
        station = Workstation(self.collector, name, devices, collector_url)
        self.stations.append(station)
        return station

    def document(self, agent: str) -> dict:
        return self.admin.call("GET", f"/api/v1/policy/documents/{agent}")


@pytest.fixture
def floor(tmp_path: Path) -> Iterator[Floor]:
    collector = CollectorProcess(tmp_path, policy={"expiry_check_seconds": 1})
    collector.start()
    made = Floor(collector, PolicyAdmin(collector), Events(collector), [])
    try:
        yield made
    finally:
        for station in made.stations:
            station.stop()
        collector.stop()


def test_a_change_reaches_two_groups_differently(floor: Floor) -> None:
    admin, events = floor.admin, floor.events
    first = admin.set_group("retouch", BOOTSTRAP_RULES)
    second = admin.set_group("prepress", BOOTSTRAP_RULES)
    a, b = floor.workstation("ws-a"), floor.workstation("ws-b")
    assigned_a = admin.assign("ws-a", "retouch")
    assigned_b = admin.assign("ws-b", "prepress")
    assert first < second < assigned_a < assigned_b
    a.start()
    b.start()
    start_a = events.applied("ws-a", assigned_a)
    start_b = events.applied("ws-b", assigned_b)
    for station in (a, b):
        station.wait_authorized(STICK, "0")
        assert station.authorized(KEYBOARD) == "1"
    # the change: prepress's editors may use sticks, retouch's still may not
    change = admin.set_group("prepress", STORAGE_ALLOWED, reason="prepress reads client sticks")
    b.wait_authorized(STICK, "1", 10)
    applied_b = events.applied("ws-b", change)
    assert applied_b["data"]["content_hash"] == floor.document("ws-b")["content_hash"]
    assert applied_b["data"]["group"] == "prepress"
    assert applied_b["data"]["content_hash"] != start_b["data"]["content_hash"]
    allowed = [e for e in events.of("ws-b", "usb.allowed") if STICK.serial.decode() in str(e)]
    assert allowed and allowed[0]["data"]["rule"] == "allow with-interface one-of { 08:*:* }"
    # retouch's workstation: nothing changed, its version and its stick as before
    assert a.authorized(STICK) == "0" and a.authorized(KEYBOARD) == "1"
    # (its bootstrap at start, then the collector's version: no other)
    assert [(e["data"]["source"], e["data"]["version"])
            for e in reversed(events.of("ws-a", "policy.applied"))] == [
        ("bootstrap", None), ("collector", assigned_a)], events.of("ws-a", "policy.applied")
    only_a = events.applied("ws-a", assigned_a)
    assert only_a["data"]["version"] == assigned_a
    assert only_a["data"]["content_hash"] == start_a["data"]["content_hash"]
    assert only_a["data"]["content_hash"] == floor.document("ws-a")["content_hash"]
    assert floor.document("ws-a")["document"]["version"] == assigned_a


def test_forged_and_replayed_versions_are_refused(floor: Floor) -> None:
    """Through a proxy holding the collector's own TLS certificate (what a stolen server key
    or a second collector gives an attacker): a document rewritten in transit and an older
    version replayed are both refused, reported at the collector with their reason, and the
    enforced policy stays; the genuine next version is applied after them."""
    admin, events = floor.admin, floor.events
    with TamperingProxy(floor.collector) as proxy:
        station = floor.workstation("ws-a", collector_url=proxy.url)
        admin.set_group("retouch", STORAGE_ALLOWED)  # once, sticks were allowed
        first = admin.assign("ws-a", "retouch")
        station.start()
        station.wait_authorized(STICK, "1")
        old = events.applied("ws-a", first)
        enforced = admin.set_group("retouch", BOOTSTRAP_RULES, reason="no more sticks")
        station.wait_authorized(STICK, "0", 10)
        enforced_hash = events.applied("ws-a", enforced)["data"]["content_hash"]

        # forged: the next version's rules rewritten to allow sticks, its signature kept
        proxy.mode = "forge"
        proxy.forge = lambda document: document.update(usb_rules=STORAGE_ALLOWED)
        forged = admin.set_group("retouch", "# 2nd floor\n" + BOOTSTRAP_RULES)
        refused = events.refused("ws-a", "bad_signature")
        assert refused["data"]["version"] == forged
        assert refused["severity"] == "critical"
        # replayed: the first version (sticks allowed), genuinely signed, served again
        proxy.mode = "replay"
        proxy.replay = proxy.envelopes[old["data"]["version"]]
        replay_trigger = admin.set_group("retouch", "# 3rd floor\n" + BOOTSTRAP_RULES)
        rollback = events.refused("ws-a", "rollback")
        assert rollback["data"]["version"] == old["data"]["version"]
        assert old["data"]["version"] in proxy.served[-1:]
        served = len(proxy.served)
        time.sleep(2)  # refused once, not pulled again and again: the long poll waits
        assert len(proxy.served) - served <= 1, proxy.served
        # through all of it: the stick stayed off, the version enforced stayed
        assert station.authorized(STICK) == "0"
        applied = [e["data"]["version"] for e in events.of("ws-a", "policy.applied")]
        assert forged not in applied and replay_trigger not in applied
        assert applied[0] == enforced

        # the proxy honest again: the next genuine version is applied
        proxy.mode = "pass"
        latest = admin.set_group("retouch", "# 4th floor\n" + BOOTSTRAP_RULES)
        events.applied("ws-a", latest)
        assert station.authorized(STICK) == "0"
        assert enforced_hash != events.applied("ws-a", latest)["data"]["content_hash"]


def test_a_cache_edited_on_disk_is_refused_at_start(floor: Floor) -> None:
    """The cached envelope rewritten while the agent is stopped (sticks allowed, the
    signature kept): refused at start, the bootstrap enforced until the collector's genuine
    version is fetched again; the stick never works."""
    admin, events = floor.admin, floor.events
    station = floor.workstation("ws-a")
    admin.set_group("retouch", BOOTSTRAP_RULES)
    version = admin.assign("ws-a", "retouch")
    station.start()
    events.applied("ws-a", version)
    station.wait_authorized(STICK, "0")
    station.stop()
    cache = station.state / "policy.json"
    envelope = orjson.loads(cache.read_bytes())
    envelope["document"]["usb_rules"] = STORAGE_ALLOWED
    cache.write_bytes(orjson.dumps(envelope))
    floor.collector.stop()  # the cache alone decides at start
    station.start()  # a new bus: the stick starts authorized, as after a reboot
    station.wait_authorized(STICK, "0")
    time.sleep(2)
    assert station.authorized(STICK) == "0"
    floor.collector.start()
    refused = events.refused("ws-a", "bad_signature")
    assert refused["data"]["source"] == "cache"
    wait_until("the bootstrap, then the genuine version fetched again", lambda: [
        (e["data"]["source"], e["data"]["version"])
        for e in events.of("ws-a", "policy.applied")][:2] == [("collector", version),
                                                             ("bootstrap", None)])
    assert station.authorized(STICK) == "0"
    assert orjson.loads(cache.read_bytes())["document"]["usb_rules"] == BOOTSTRAP_RULES


def test_an_exception_unblocks_one_device_on_one_workstation_until_it_expires(
        floor: Floor) -> None:
    """Approved from the stick's usb.blocked event as stored at the collector (what the
    dashboard's button sends), for one workstation, expiring in a few seconds."""
    admin, events = floor.admin, floor.events
    a = floor.workstation("ws-a", (STICK, OTHER, KEYBOARD))
    b = floor.workstation("ws-b", (STICK, KEYBOARD))  # the very same stick (serial) on B
    admin.set_group("retouch", BOOTSTRAP_RULES)
    admin.assign("ws-a", "retouch")
    version = admin.assign("ws-b", "retouch")
    a.start()
    b.start()
    events.applied("ws-b", version)
    blocked = events.blocked("ws-a", STICK.serial.decode())
    for station, specs in ((a, (STICK, OTHER)), (b, (STICK,))):
        for spec in specs:
            station.wait_authorized(spec, "0")
    expires = datetime.now(UTC) + timedelta(seconds=15)
    approved = admin.approve(blocked["id"], "agent:ws-a", utc_timestamp(expires))
    item = approved["exception"]
    assert item["scope"] == "agent:ws-a"
    assert item["rule"] == (f'allow id 0781:5567 serial "{STICK.serial.decode()}" '
                            f'hash "{blocked["data"]["hash"]}"')
    a.wait_authorized(STICK, "1", 10)
    applied = events.applied("ws-a", approved["change"])
    [in_force] = applied["data"]["exceptions"]
    assert (in_force["exception_id"], in_force["rule"]) == (item["exception_id"], item["rule"])
    assert applied["data"]["next_expiry"] is not None
    # the other stick of the model on A, the same stick on B: still off
    assert a.authorized(OTHER) == "0"
    assert b.authorized(STICK) == "0"
    assert [e["data"]["version"] for e in events.of("ws-b", "policy.applied")
            if e["data"]["source"] == "collector"] == [version]
    # its expiry (the collector's expiry check every second, the workstation's own clock)
    a.wait_authorized(STICK, "0", 30)
    assert datetime.now(UTC) >= expires - timedelta(seconds=1)
    expired = wait_until("policy.exception_expired at the collector", lambda: [
        e for e in events.of(None, "policy.exception_expired")
        if e["data"]["exception_id"] == item["exception_id"]])
    events.applied("ws-a", expired[0]["data"]["change"])
    deauthorized = [e for e in events.of("ws-a", "usb.blocked")
                    if e["data"].get("action") == "deauthorized"]
    assert deauthorized and STICK.serial.decode() in str(deauthorized[0]["data"])
    assert a.authorized(OTHER) == "0" and b.authorized(STICK) == "0"


def spooled(station: Workstation) -> list[dict]:
    """The events still in the workstation's spool (not yet delivered), oldest first."""
    db = sqlite3.connect(station.state / "spool.db")
    try:
        rows = db.execute("SELECT body FROM pending ORDER BY seq").fetchall()
    finally:
        db.close()
    return [orjson.loads(body) for (body,) in rows]


def test_the_last_policy_holds_while_the_collector_is_down(floor: Floor,
                                                           tmp_path: Path) -> None:
    """The collector stopped: the policy enforced stays, also across an agent restart (the
    cache, verified again); a change made meanwhile with the CLI on the collector's store
    reaches the workstation once the collector runs again."""
    admin, events, collector = floor.admin, floor.events, floor.collector
    station = floor.workstation("ws-a")
    admin.set_group("prepress", STORAGE_ALLOWED)
    version = admin.assign("ws-a", "prepress")
    station.start()
    events.applied("ws-a", version)
    station.wait_authorized(STICK, "1")  # the group's rules, not the bootstrap's

    collector.stop()
    wait_until("policy.sync_failed spooled", lambda: [
        e for e in spooled(station) if e["kind"] == "policy.sync_failed"])
    assert station.authorized(STICK) == "1"
    station.stop()
    station.start()  # a new bus (the stick authorized, as the kernel leaves it at boot)
    cached = wait_until("policy.applied from the cache spooled", lambda: [
        e for e in spooled(station) if e["kind"] == "policy.applied"])
    assert [(e["data"]["source"], e["data"]["version"]) for e in cached] == [
        ("cache", version)]
    judged = wait_until("the stick judged after the restart", lambda: [
        e for e in spooled(station) if e["kind"].startswith("usb.")
        and STICK.serial.decode() in str(e["data"])])
    assert judged[0]["kind"] == "usb.allowed"
    time.sleep(1)
    assert station.authorized(STICK) == "1"
    assert not any(e["kind"] == "policy.applied" and e["data"]["source"] == "bootstrap"
                   for e in spooled(station))

    # meanwhile, on the collector's machine: the group changed with the CLI (no server up)
    rules = tmp_path / "prepress.rules"
    rules.write_text(BOOTSTRAP_RULES)
    done = subprocess.run(
        [sys.executable, "-m", "floor_agent.cli", "collector", "policy", "set-group",
         "prepress", "--config", str(collector.config_path), "--rules", str(rules),
         "--reason", "sticks off again"], capture_output=True, text=True, timeout=60,
        env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stderr
    collector.start()
    station.wait_authorized(STICK, "0", 30)
    latest = floor.document("ws-a")["document"]["version"]
    assert latest > version
    events.applied("ws-a", latest)
    recovered = wait_until("policy.sync_recovered", lambda: events.of(
        "ws-a", "policy.sync_recovered"))
    assert recovered
    failed = events.of("ws-a", "policy.sync_failed")
    assert failed and all(e["data"]["enforced_version"] == version for e in failed)


COLLECTOR_ON_FLOOR = (CENTRAL_V4, 9443)  # the central server's address, relayed to loopback


def test_a_group_allowlist_change_reloads_netlock_and_is_verified_again(
        topology: Topology, tmp_path: Path) -> None:
    """`floor-agent workstation` (netlock on, usb_guard off) in the workstation's namespace,
    its collector reached through the central server's address (relayed to the collector on
    this machine's loopback). The group's allowlist gains the file server: the ruleset is
    reloaded and the file server (another namespace) answers only after; an allowlist whose
    server does not answer makes the re-verification fail at once (probes.allowed: a
    net.warning naming the policy version), the next version recovers it."""
    collector = CollectorProcess(tmp_path / "floor", policy={"expiry_check_seconds": 1},
                                 server_names=["localhost", "127.0.0.1", CENTRAL_V4])
    collector.start()
    relays = [NamespaceRelay(topology.ns["cen"], (address, COLLECTOR_ON_FLOOR[1]),
                             ("127.0.0.1", collector.port)).start()
              for address in (CENTRAL_V4, CENTRAL_V6)]  # central is allowed over both
    agent = None
    try:
        admin, events = PolicyAdmin(collector), Events(collector)
        config = collector.agent_config("ws-net")
        enroll(config.audit, "workstation", collector.token(), None)
        netlock = json.loads(topology.config(probe_timeout_ms=1000).model_dump_json())
        central = dict(netlock["allow"][0], tcp=[COLLECTOR_ON_FLOOR[1], 53],
                       must_reach=[COLLECTOR_ON_FLOOR[1]])
        files = {"name": "files", "addresses": [FILES_V4], "tcp": [445], "must_reach": [445]}
        dead = {"name": "scanner", "addresses": [FILES_V4], "tcp": [139], "must_reach": [139]}
        netlock["allow"] = [central]  # the bootstrap: the collector only
        data = config.model_dump(mode="json")
        data["audit"]["collector_url"] = "https://{}:{}".format(*COLLECTOR_ON_FLOOR)
        data["netlock"] = netlock
        data["policy"] = {"enabled": True, "watch_wait_seconds": 20,
                          "backoff_initial_seconds": 0.2, "backoff_max_seconds": 1}
        path = tmp_path / "ws-net.yaml"
        path.write_text(yaml.safe_dump(data))
        admin.set_group("floor2", BOOTSTRAP_RULES, [central])
        first = admin.assign("ws-net", "floor2")
        topology.flush_ruleset()
        agent = topology.popen("ws", [sys.executable, "-m", "floor_agent.cli", "workstation",
                                      "--config", str(path)],
                               env=dict(os.environ, PYTHONPATH=str(REPO)),
                               stdout=subprocess.DEVNULL,
                               stderr=(tmp_path / "agent.log").open("w"))
        assert events.applied("ws-net", first)["data"]["netlock_allow"] == ["central"]
        verified = wait_until("net.verified", lambda: events.of("ws-net", "net.verified"))
        assert verified[0]["data"]["fail"] == 0, [
            c for c in verified[0]["data"]["checks"] if c["verdict"] != "pass"]
        assert not probe(topology, [("tcp", FILES_V4, 445)])[0]["ok"]

        added = admin.set_group("floor2", BOOTSTRAP_RULES, [central, files],
                                reason="the file server for the scans")
        applied = events.applied("ws-net", added)
        assert applied["data"]["netlock_allow"] == ["central", "files"]
        wait_until("the file server reached", lambda: probe(
            topology, [("tcp", FILES_V4, 445)])[0]["ok"], 20, 0.2)
        assert FILES_V4 in topology.list_ruleset()
        enforced = [e["data"] for e in events.of("ws-net", "net.enforced")]
        assert len(enforced) >= 2, enforced  # at start, then for this version

        broken = admin.set_group("floor2", BOOTSTRAP_RULES, [central, files, dead],
                                 reason="the scanner")
        events.applied("ws-net", broken)
        warning = wait_until("net.warning after the reload", lambda: events.of(
            "ws-net", "net.warning"), 20, 0.2)[0]
        assert warning["data"]["new"] == ["probes.allowed"], warning["data"]
        [evidence] = warning["data"]["new_evidence"]["probes.allowed"]
        assert evidence.startswith(f"tcp {FILES_V4}:139 refused"), evidence
        assert evidence.endswith("[scanner]"), evidence  # the entry that asked, not "files"
        # woken by the reload's own nftables messages
        assert "nft delete rule inet floor_netlock" in warning["data"]["trigger"], warning["data"]
        fixed = admin.set_group("floor2", BOOTSTRAP_RULES, [central, files],
                                reason="no scanner after all")
        events.applied("ws-net", fixed)
        recovered = wait_until("net.recovered", lambda: events.of("ws-net", "net.recovered"),
                               20, 0.2)
        assert recovered
        assert probe(topology, [("tcp", FILES_V4, 445)])[0]["ok"]
    finally:
        if agent is not None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(20)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        for relay in relays:
            relay.close()
        collector.stop()


def test_stopping_the_agent_records_no_outage(floor: Floor) -> None:
    """SIGTERM while the sync holds its long poll: the poll is cut by the agent's own stop,
    which is no collector outage (no policy.sync_failed delivered or left in the spool)."""
    admin, events = floor.admin, floor.events
    station = floor.workstation("ws-a")
    admin.set_group("retouch", BOOTSTRAP_RULES)
    version = admin.assign("ws-a", "retouch")
    station.start()
    events.applied("ws-a", version)
    time.sleep(1)  # the long poll held
    station.stop()
    wait_until("agent.stopped delivered", lambda: events.of("ws-a", "agent.stopped"))
    assert events.of("ws-a", "policy.sync_failed") == []
    assert [e["kind"] for e in spooled(station) if e["kind"].startswith("policy.")] == []
    assert "Traceback" not in station.log(), station.log()


def policy_cli(collector: CollectorProcess, *args: str) -> str:
    """`floor-agent collector policy ...` on the collector's machine (its store), while the
    collector runs."""
    done = subprocess.run(
        [sys.executable, "-m", "floor_agent.cli", "collector", "policy", *args, "--config",
         str(collector.config_path)], capture_output=True, text=True, timeout=60,
        env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_group_exception_from_the_cli_reaches_the_whole_group_and_is_withdrawn(
        floor: Floor) -> None:
    """Approved with the CLI for a group (the running collector sees the change in its store
    and wakes the long polls): that stick works on both workstations of the group, the other
    serial of its model does not; withdrawn with the CLI, it is blocked on both again."""
    admin, events = floor.admin, floor.events
    a = floor.workstation("ws-a", (STICK, OTHER, KEYBOARD))
    b = floor.workstation("ws-b", (STICK, KEYBOARD))
    admin.set_group("retouch", BOOTSTRAP_RULES)
    versions = {"ws-a": admin.assign("ws-a", "retouch"), "ws-b": admin.assign("ws-b", "retouch")}
    a.start()
    b.start()
    for agent, version in versions.items():
        events.applied(agent, version)
    blocked = events.blocked("ws-b", STICK.serial.decode())
    out = policy_cli(floor.collector, "approve", "--event-id", str(blocked["id"]),
                     "--scope", "group:retouch", "--reason", "client sticks for retouch")
    exception_id = out.split()[1]
    assert out.startswith(f"exception {exception_id} (group:retouch): allow id 0781:5567 ")
    for station in (a, b):
        station.wait_authorized(STICK, "1", 10)
    assert a.authorized(OTHER) == "0"
    policy_cli(floor.collector, "withdraw", exception_id, "--reason", "job done")
    for station in (a, b):
        station.wait_authorized(STICK, "0", 10)
    assert a.authorized(OTHER) == "0"
    withdrawn = wait_until("policy.exception_withdrawn at the collector", lambda: [
        e for e in events.of(None, "policy.exception_withdrawn")
        if e["data"]["exception_id"] == exception_id])
    assert withdrawn[0]["data"]["by"]
    for agent in ("ws-a", "ws-b"):
        events.applied(agent, withdrawn[0]["data"]["change"])
