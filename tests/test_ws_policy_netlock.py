"""The central policy on real netlock, in network namespaces (tests/netns_topology.py): a
policy's allowlist is loaded as the nftables ruleset, the running watcher proves it at once,
and the workstation reaches what the policy added; a policy whose allowlist cannot be built
changes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from audit_events import AuditRecorder
from netns_topology import topology_fixture  # noqa: F401

from floor_agent.simulated.network import FILES_V4, Topology

PROBE_TIMEOUT_MS = 1000
TESTS = Path(__file__).resolve().parent

# Run inside the workstation namespace: bootstrap netlock (central only), then a signed policy
# that adds the file server, then one that cannot be built. Prints one JSON result.
SCRIPT = r"""
import json, socket, sys, threading, time
sys.path.insert(0, sys.argv[2])
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pathlib import Path
from floor_agent.netlock.allowlist import build
from floor_agent.netlock.config import NetlockConfig
from floor_agent.netlock.runner import enforce
from floor_agent.netlock.watch import NetlockWatcher
from floor_agent.netlock import firewall
from floor_agent.ws_policy.apply import PolicyEnforcer
from floor_agent.ws_policy.cache import PolicyCache
from ws_policy_docs import AGENT, document, signed

config = NetlockConfig.model_validate_json(sys.argv[1])
files_v4 = sys.argv[3]
events = []
def emit(kind, subject, severity="info", **data):
    events.append({"kind": kind, "subject": subject, "severity": severity, "data": data})

def reaches(address, port):
    try:
        socket.create_connection((address, port), timeout=2).close()
        return True
    except OSError:
        return False

def table():
    return firewall._run_json("nft", ["-j", "list", "table", "inet", config.table])

def wait_verified(after):
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if watcher.last_full is not None and watcher.last_full > after:
            return True
        time.sleep(0.05)
    return False

out = {}
allowlist = build(config)
enforce(config, allowlist, emit, source="bootstrap")
watcher = NetlockWatcher(config, allowlist, emit)
stop = threading.Event()
watcher.start(stop)
out["before"] = {"files": reaches(files_v4, 445),
                 "failing": sorted(v.id for v in watcher.verdicts.values() if not v.ok)}
key = Ed25519PrivateKey.generate()
state = Path(sys.argv[4])
enforcer = PolicyEnforcer(AGENT, emit, PolicyCache(state), key.public_key(), config)
enforcer.netlock = watcher
enforcer.load_ruleset = lambda c, a: enforce(c, a, emit, source="policy")
central = json.loads(config.model_dump_json())["allow"][0]
files = {"name": "files", "addresses": [files_v4], "tcp": [445], "must_reach": [445]}
full = watcher.last_full
mark = len(events)
out["offered"] = enforcer.offer(signed(document(2, netlock_allow=(central, files)), key))
out["verified_again"] = wait_verified(full)
time.sleep(0.3)
out["after"] = {"files": reaches(files_v4, 445),
                "failing": sorted(v.id for v in watcher.verdicts.values() if not v.ok),
                "watcher_allows": [d.name for d in watcher.allowlist.destinations],
                "events": [e["kind"] for e in events[mark:]]}
loaded = json.dumps(table())
out["files_in_table"] = files_v4 in loaded
bad = {"name": "nas", "addresses": ["nas.nowhere.invalid"], "tcp": [445]}
out["bad_offered"] = enforcer.offer(signed(document(3, netlock_allow=(central, bad)), key))
out["unchanged"] = json.dumps(table()) == loaded and enforcer.version == 2
out["still_files"] = reaches(files_v4, 445)
stop.set()
watcher.stop()
out["events"] = events
print(json.dumps(out))
"""


def test_a_policy_allowlist_is_loaded_and_proved_at_once(topology: Topology,
                                                         tmp_path: Path) -> None:
    config = topology.config(probe_timeout_ms=PROBE_TIMEOUT_MS)
    bootstrap = config.model_copy(update={"allow": config.allow[:1]})  # central only
    assert [d.name for d in bootstrap.allow] == ["central"]
    topology.flush_ruleset()
    state = tmp_path / "state"
    state.mkdir()
    done = topology.python("ws", SCRIPT, bootstrap.model_dump_json(), str(TESTS), FILES_V4,
                           str(state), timeout=120)
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    recorder = AuditRecorder(tmp_path / "audit-events", agent_id="ws-12")
    try:  # every event the run emitted, through a real Spool
        for event in out["events"]:
            recorder(event["kind"], event["subject"], event["severity"], **event["data"])
    finally:
        recorder.close()
    assert out["before"] == {"files": False, "failing": []}, out["before"]
    assert out["offered"] is True
    assert out["verified_again"] is True
    after = out["after"]
    assert after["files"] is True
    assert after["failing"] == [], after
    assert after["watcher_allows"] == ["central", "files"]
    assert after["events"][:2] == ["net.enforced", "policy.applied"], after["events"]
    assert out["files_in_table"] is True
    assert out["bad_offered"] is False and out["unchanged"] is True
    assert out["still_files"] is True
    refused = [e for e in out["events"] if e["kind"] == "policy.refused"]
    assert [e["data"]["reason"] for e in refused] == ["invalid_allowlist"]
    assert "nas.nowhere.invalid" in refused[0]["data"]["detail"]


def test_the_agent_restarted_without_the_collector_enforces_the_cached_policy(
        topology: Topology, tmp_path: Path) -> None:
    """`floor-agent workstation` with the central policy on, its collector out of reach (the
    central host answers 8443 but is no collector): the cached policy, verified again with the
    pinned key, is the ruleset netlock loads at start, and the outage is recorded."""
    import base64
    import signal
    import subprocess

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    from test_netlock_watch import REPO, _events, _wait_kinds, _workstation_config
    from ws_policy_docs import document, signed

    from floor_agent.audit.policy_key import pin
    from floor_agent.ws_policy.cache import PolicyCache

    config = topology.config(probe_timeout_ms=PROBE_TIMEOUT_MS)
    data = json.loads(config.model_dump_json())
    central, files = data["allow"]
    data["allow"] = [central]  # the bootstrap: central only
    topology.flush_ruleset()
    state = tmp_path / "state"
    path = _workstation_config(tmp_path, state, data)
    text = path.read_text() + ("policy: {enabled: true, backoff_initial_seconds: 0.2, "
                               "backoff_max_seconds: 1}\n")
    path.write_text(text.replace("agent_id: ws-netlock", "agent_id: ws-12"))
    key = Ed25519PrivateKey.generate()
    pin(state, base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
                                ).decode())
    PolicyCache(state).store(signed(document(5, netlock_allow=(central, files)), key))
    agent = topology.popen("ws", [str(REPO / ".venv/bin/floor-agent"), "workstation",
                                  "--config", str(path)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        kinds = _wait_kinds(state, {"policy.applied", "net.enforced", "net.verified",
                                    "policy.sync_failed"})
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(15)
        except subprocess.TimeoutExpired:
            agent.kill()
    stderr = agent.stderr.read() if agent.stderr else ""
    assert agent.returncode == 0, stderr
    assert kinds.index("policy.applied") < kinds.index("net.enforced")
    rows = _events(state)
    applied = next(d for k, _, d in rows if k == "policy.applied")
    assert (applied["source"], applied["version"]) == ("cache", 5)
    assert applied["netlock_allow"] == ["central", "files"]
    listed = topology.exec("ws", ["nft", "list", "table", "inet", config.table]).stdout
    assert FILES_V4 in listed  # the policy's allowlist, not the bootstrap's
    failed = next(d for k, _, d in rows if k == "policy.sync_failed")
    assert failed["enforced_version"] == 5
