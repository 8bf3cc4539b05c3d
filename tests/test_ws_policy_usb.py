"""The central policy on the real USB guard (pyudev, libudev, sysfs files under umockdev):
an exception pinned to one stick's hash authorizes that stick and no other of its model,
refused envelopes change nothing, and expiry on the workstation's clock blocks it again.

The scenario runs in a umockdev child (tests/umockdev_harness.py) and plays the kernel's side
as tests/test_usb_guard.py does (an authorized device is configured: its interfaces appear).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_usb_guard import USB1, Floor, dev, guard_bus, ifaces
from umockdev_bus import STICK
from umockdev_harness import BusHandle, interfaces_text, run_scenario
from ws_policy_docs import AGENT, at, document, exception, signed

from floor_agent.usb_guard import sysfs
from floor_agent.ws_policy.apply import PolicyEnforcer
from floor_agent.ws_policy.cache import PolicyCache

# the same model (0781:5567 SanDisk Cruzer Blade), another serial, another port
OTHER = dataclasses.replace(STICK, port=5, devnum=6, serial=b"4C530009999999999999")
THIRD = dataclasses.replace(STICK, port=6, devnum=7, serial=b"4C530008888888888888")


class Clock:
    def __init__(self) -> None:
        self.now = at()

    def __call__(self) -> Any:
        return self.now


def _one_stick_excepted(tb: BusHandle) -> dict[str, Any]:
    key = Ed25519PrivateKey.generate()
    floor = Floor(tb)  # the bootstrap: config/usb-rules.conf (storage blocked)
    floor.start()
    out: dict[str, Any] = {"plugged": [floor.plug(STICK), floor.plug(OTHER)]}
    stick = floor.guard.decisions()[dev(STICK)].device
    other = floor.guard.decisions()[dev(OTHER)].device
    out["hashes_differ"] = stick.hash != other.hash
    state = Path.cwd() / "state"
    state.mkdir()
    clock = Clock()
    enforcer = PolicyEnforcer(AGENT, floor.emit, PolicyCache(state), key.public_key(), None,
                              clock=clock)
    enforcer.usb = floor.guard
    rule = f'allow id 0781:5567 hash "{stick.hash}"'
    before = len(floor.events)
    out["offered"] = enforcer.offer(signed(document(
        2, exceptions=(exception(rule, expires=at(30)),)), key))
    out["usb_events"] = [(e["kind"], e["data"]["port"], e["data"]["rule"], e["data"]["action"])
                         for e in floor.events[before:] if e["kind"].startswith("usb.")]
    # kernel: the authorized stick is configured, its interface appears (default off)
    default = int(sysfs.read_attribute(f"{USB1}/interface_authorized_default"))
    tb.add(interfaces_text(STICK, authorized=default))
    floor.wait("add", ifaces(STICK)[0])
    out["applied"] = [floor.state(STICK), floor.state(OTHER, configured=False)]
    # plugged now, a third of the model is judged by the udev loop under the new rules: the
    # exception is the one stick's, not the model's
    out["third"] = floor.plug(THIRD)
    out["third_rule"] = floor.guard.decisions()[dev(THIRD)].decision.rule

    # forged, replayed, for another agent: refused, the guard's decisions stay
    before = len(floor.events)
    out["refused"] = [
        enforcer.offer(signed(document(3), Ed25519PrivateKey.generate())),
        enforcer.offer(signed(document(1), key)),
        enforcer.offer(signed(document(3, agent_id="ws-13"), key)),
    ]
    out["after_refusals"] = [floor.state(STICK), floor.state(OTHER, configured=False)]
    out["refusal_events"] = [(e["kind"], e["data"].get("reason")) for e in floor.events[before:]]

    # the exception expires on the workstation's clock, without the collector
    clock.now = at(29)
    out["early"] = enforcer.expire_due()
    clock.now = at(30)
    before = len(floor.events)
    out["expired"] = enforcer.expire_due()
    out["expiry_events"] = [(e["kind"], e["data"].get("port"), e["data"].get("action"))
                            for e in floor.events[before:]]
    out["after_expiry"] = floor.state(STICK, configured=False)["authorized"]
    out["stop"] = floor.stop()
    return out


def test_an_exception_pinned_to_one_stick_allows_it_and_expires(tmp_path: Path) -> None:
    out = run_scenario(tmp_path, _one_stick_excepted, guard_bus(()))
    blocked = {"authorized": False, "remove": "", "interfaces": None}
    assert out["plugged"] == [blocked, blocked]  # the bootstrap blocks storage
    assert out["hashes_differ"]
    assert out["offered"] is True
    # only the excepted stick is judged anew, by the exception's rule, and authorized
    [(kind, port, rule, action)] = out["usb_events"]
    assert (kind, port, action) == ("usb.allowed", "1-1", "authorized")
    assert rule.startswith('allow id 0781:5567 hash "')
    assert out["applied"] == [{"authorized": True, "remove": "", "interfaces": [True]},
                              blocked]
    assert out["third"] == blocked
    assert out["third_rule"] == "block with-interface one-of { 08:*:* }"
    assert out["refused"] == [False, False, False]
    assert out["after_refusals"] == out["applied"]
    assert out["refusal_events"] == [["policy.refused", "bad_signature"],
                                     ["policy.refused", "rollback"],
                                     ["policy.refused", "wrong_agent"]]
    assert out["early"] == []
    assert out["expired"] == ["x-7"]
    assert out["expiry_events"] == [["usb.blocked", "1-1", "deauthorized"],
                                    ["policy.applied", None, None]]
    assert out["after_expiry"] is False
    assert out["stop"]["stopped"]
