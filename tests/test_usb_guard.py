"""guard.py: the enforcement loop on the real stack (pyudev, libudev, sysfs files) under umockdev.

Scenarios run in a child whose /sys is a umockdev testbed (tests/umockdev_harness.py) with the
real default rules (config/usb-rules.conf); `emit` collects events in a list there (the audit
spool is tested elsewhere). umockdev is not a kernel: the scenarios play the kernel's side and
say so where they do. What they model (Documentation/usb/authorization.rst):
- a device plugged after lock down starts with `authorized` = its root hub's
  `authorized_default` (0) and unconfigured: no interface nodes;
- writing authorized=1 configures it: its interfaces appear, each with `authorized` = the root
  hub's `interface_authorized_default` (0 after lock down), with an `add` uevent each;
- writing `remove` disconnects it: `remove` uevents, interfaces first.
So these tests prove which decisions the guard takes, which files it writes with which values,
and what it reports; not that a real kernel then keeps the device off.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from audit_events import AuditRecorder
from umockdev_bus import (
    COMPOSITE,
    EXT_HUB,
    HUB_INTERFACE,
    KEYBOARD,
    PHONE_MTP,
    PHONE_RNDIS,
    STICK,
    WACOM,
    UsbSpec,
    attributes,
    descriptors,
    interface_attributes,
)
from umockdev_harness import (
    SECOND_HUB,
    BusHandle,
    bus_text,
    device_text,
    interfaces_text,
    run_scenario,
)

from floor_agent.usb_guard import sysfs
from floor_agent.usb_guard.device import device_from_attributes
from floor_agent.usb_guard.guard import (
    UsbGuard,
    decision_event,
    failure_event,
    interface_allowed,
    interface_class,
    subject_of,
)
from floor_agent.usb_guard.policy import Decision, decide
from floor_agent.usb_guard.rule_parser import parse_rules_file

REPO = Path(__file__).resolve().parent.parent
RULES_TEXT = (REPO / "config" / "usb-rules.conf").read_text()
NO_REJECT = "\n".join(line for line in RULES_TEXT.split("\n") if not line.startswith("reject"))
BLOCK_RULE = "block with-interface one-of { 08:*:* }"
USB1, USB2 = "/sys/bus/usb/devices/usb1", "/sys/bus/usb/devices/usb2"
WAIT_SECONDS = 5.0
BEHIND = dataclasses.replace(STICK, hub=EXT_HUB, port=3, devnum=11, serial=b"BEHIND0001")


def dev(spec: UsbSpec) -> str:
    return "/sys" + spec.devpath


def ifaces(spec: UsbSpec) -> tuple[str, ...]:
    return tuple(f"{dev(spec)}/{spec.sysname}:1.{n}" for n in range(len(spec.interfaces)))


def guard_bus(specs: tuple[UsbSpec, ...], second_hub: bool = False) -> str:
    """The harness bus plus what the kernel has and umockdev_bus lacks: `authorized` on the root
    hub's interface and `remove` on every non-root device."""
    text = bus_text(specs, second_hub).replace(
        f"P: {HUB_INTERFACE}\n", f"P: {HUB_INTERFACE}\nA: authorized=1\n", 1)
    for spec in specs:
        text = text.replace(f"P: {spec.devpath}\n", f"P: {spec.devpath}\nA: remove=\n", 1)
    return text


# --- the child side: a recording guard and the kernel model --------------------------------

class RecordingGuard(UsbGuard):
    """The real guard; also notes each handled event, so a scenario knows when it is done."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handled: list[tuple[str, str]] = []

    def handle(self, action: str, device: Any, **kwargs: Any) -> None:
        try:
            super().handle(action, device, **kwargs)
        finally:
            self.handled.append((action, device.sys_path))


class Floor:
    """One scenario's guard, its collected events and the kernel model around the testbed."""

    def __init__(self, tb: BusHandle, rules_text: str = RULES_TEXT) -> None:
        import pyudev

        self.tb = tb
        self.events: list[dict[str, Any]] = []
        # scenarios run in a child whose working directory is the test's tmp_path: the spool
        # stays there, where the event-kind coverage (tests/audit_events.py) reads it
        self.spool = AuditRecorder(Path.cwd() / "audit-events")
        self.shutdown = threading.Event()
        self.guard = RecordingGuard(parse_rules_file(rules_text), self.emit,
                                    context=pyudev.Context())

    def emit(self, kind: str, subject: str, severity: str = "info", **data: Any) -> None:
        self.spool(kind, subject, severity, **data)  # refused here as the audit chain would
        self.events.append({"kind": kind, "subject": subject, "severity": severity,
                            "data": data})

    def start(self) -> None:
        self.thread = self.guard.start(self.shutdown)

    def wait(self, action: str, sys_path: str, count: int = 1) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while self.guard.handled.count((action, sys_path)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"guard did not handle {action} {sys_path}: "
                                     f"{self.guard.handled}")
            time.sleep(0.005)

    def plug(self, spec: UsbSpec) -> dict[str, Any]:
        """Plug `spec` as the kernel would, and return what the guard left it with."""
        path = dev(spec)
        # kernel: a new device starts with authorized = the root hub's authorized_default
        default = int(sysfs.read_attribute(f"{USB1}/authorized_default"))
        self.tb.add(device_text(spec, authorized=default).replace(
            f"P: {spec.devpath}\n", f"P: {spec.devpath}\nA: remove=\n", 1))
        self.wait("add", path)
        configured = sysfs.read_authorized(path)
        if configured:
            # kernel: an authorized device is configured; its interfaces appear with
            # authorized = the root hub's interface_authorized_default
            iface_default = int(sysfs.read_attribute(f"{USB1}/interface_authorized_default"))
            self.tb.add(interfaces_text(spec, authorized=iface_default))
            for interface in ifaces(spec):
                self.wait("add", interface)
        return self.state(spec, configured)

    def state(self, spec: UsbSpec, configured: bool = True) -> dict[str, Any]:
        path = dev(spec)
        return {
            "authorized": sysfs.read_authorized(path),
            "remove": sysfs.read_attribute(path + "/remove"),
            "interfaces": [sysfs.read_authorized(i) for i in ifaces(spec)] if configured
            else None,
        }

    def stop(self) -> dict[str, Any]:
        healthy = self.guard.healthy()
        self.shutdown.set()
        self.thread.join(2)
        hubs = [str(h) for h in sysfs.root_hubs()]
        return {"healthy_running": healthy, "healthy_stopped": self.guard.healthy(),
                "stopped": not self.thread.is_alive(),
                "defaults": {h: [sysfs.read_attribute(f"{h}/{a}") for a in
                                 ("authorized_default", "interface_authorized_default")]
                             for h in hubs}}

    def kinds(self, port: str) -> list[str]:
        return [e["kind"] for e in self.events if e["data"].get("port") == port]


# --- scenarios (run in the child) ------------------------------------------------------------

def _default_rules_hot_plug(tb: BusHandle) -> dict[str, Any]:
    floor = Floor(tb)
    floor.start()
    started = len(floor.events)
    out: dict[str, Any] = {"state": {}}
    for spec in (STICK, KEYBOARD, WACOM, PHONE_MTP, PHONE_RNDIS):
        out["state"][spec.sysname] = floor.plug(spec)
    # the monitor may report a device twice (present and added): nothing changes, no event
    before = len(floor.events)
    tb.uevent(dev(STICK), "add")
    floor.wait("add", dev(STICK), count=2)
    out["repeat_events"] = len(floor.events) - before
    out["state"]["1-1 again"] = floor.state(STICK, configured=False)
    # a missed remove and the stick back on (as from a hub that could not be locked): the same
    # identity at the same path is judged again because its state is not what was decided
    tb.set_attribute(dev(STICK), "authorized", "1")
    tb.uevent(dev(STICK), "add")
    floor.wait("add", dev(STICK), count=3)
    out["back_on"] = [floor.state(STICK, configured=False)["authorized"],
                      floor.kinds("1-1")]
    # a driver binding to the keyboard's interface again does not change it
    tb.uevent(ifaces(KEYBOARD)[0], "bind")
    floor.wait("bind", ifaces(KEYBOARD)[0])
    # rejected composite: the guard writes `remove`; the kernel then disconnects it
    out["state"][COMPOSITE.sysname] = floor.plug(COMPOSITE)
    if sysfs.read_attribute(dev(COMPOSITE) + "/remove") == "1":
        tb.unplug(dev(COMPOSITE))
        floor.wait("remove", dev(COMPOSITE))
    out["remembered"] = sorted(floor.guard.decisions())
    out["events"] = floor.events[started:]
    out["start_events"] = floor.events[:started]
    out["stop"] = floor.stop()
    return out


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One child for the hot-plug tests under the default rules (each test checks a part)."""
    return run_scenario(tmp_path_factory.mktemp("guard"), _default_rules_hot_plug,
                        guard_bus((), second_hub=True))


def _events_for(out: dict[str, Any], port: str) -> list[dict[str, Any]]:
    return [e for e in out["events"] if e["data"].get("port") == port]


def test_lock_down_first_and_root_hubs_stay_locked_after_stop(default_run: dict) -> None:
    start = default_run["start_events"]
    assert start[0]["kind"] == "usb.locked_down"
    assert start[0]["data"]["hubs"] == [USB1, USB2]
    # the root hubs present at start are judged like any device: the hub rule allows them
    assert [(e["kind"], e["data"]["port"]) for e in start[1:]] == [
        ("usb.allowed", "usb1"), ("usb.allowed", "usb2")]
    stop = default_run["stop"]
    assert stop["defaults"] == {USB1: ["0", "0"], USB2: ["0", "0"]}
    assert stop["healthy_running"] is True
    assert stop["stopped"] and stop["healthy_stopped"] is False


def test_a_stick_plugged_after_start_stays_off_and_the_block_rule_is_named(
        default_run: dict) -> None:
    assert default_run["state"]["1-1"] == {"authorized": False, "remove": "", "interfaces": None}
    event = _events_for(default_run, "1-1")[0]  # (the second is the re-judged one, below)
    assert event["kind"] == "usb.blocked" and event["severity"] == "warning"
    assert event["subject"] == "usb 1-1 0781:5567 SanDisk Cruzer Blade"
    data = event["data"]
    assert data["rule"] == BLOCK_RULE
    assert data["action"] == "deauthorized"
    assert (data["id"], data["name"], data["manufacturer"], data["serial"]) == (
        "0781:5567", "Cruzer Blade", "SanDisk", "4C530001234567891234")
    assert data["interfaces"] == ["08:06:50"] == data["blocked_interfaces"]
    assert data["allowed_interfaces"] == [] and data["problems"] == []
    assert data["connect_type"] == "hotplug"
    assert len(data["hash"]) == 44 and len(data["parent_hash"]) == 44  # base64 SHA-256
    assert set(data) == {"id", "name", "manufacturer", "serial", "port", "interfaces", "hash",
                         "parent_hash", "connect_type", "problems", "rule", "reason",
                         "allowed_interfaces", "blocked_interfaces", "action"}


def test_a_repeated_add_changes_nothing_and_emits_nothing(default_run: dict) -> None:
    assert default_run["repeat_events"] == 0
    assert default_run["state"]["1-1 again"]["authorized"] is False


def test_a_known_device_found_on_again_is_judged_again(default_run: dict) -> None:
    assert default_run["back_on"] == [False, ["usb.blocked", "usb.blocked"]]


def test_keyboard_and_tablet_are_authorized_with_their_interfaces(default_run: dict) -> None:
    state = default_run["state"]
    assert state["1-2"] == {"authorized": True, "remove": "", "interfaces": [True]}
    assert state["1-3"] == {"authorized": True, "remove": "", "interfaces": [True, True]}
    for port in ("1-2", "1-3"):
        [event] = _events_for(default_run, port)  # the interface events add no audit event
        assert (event["kind"], event["severity"]) == ("usb.allowed", "info")
        assert event["data"]["rule"] == "allow with-interface match-all { 03:*:* }"
        assert event["data"]["action"] == "authorized"
    assert _events_for(default_run, "1-3")[0]["subject"] == (
        "usb 1-3 056a:0357 Wacom Co.,Ltd. Intuos Pro M")


def test_phones_offering_storage_or_tethering_are_blocked(default_run: dict) -> None:
    state = default_run["state"]
    for spec, rule in ((PHONE_MTP, "block with-interface one-of { 06:*:* }"),
                       # RNDIS + CDC data: the CDC rule comes first and matches first
                       (PHONE_RNDIS, "block with-interface one-of { 02:*:* 0a:*:* }")):
        assert state[spec.sysname] == {"authorized": False, "remove": "", "interfaces": None}
        [event] = _events_for(default_run, spec.sysname)
        assert (event["kind"], event["data"]["rule"], event["data"]["action"]) == (
            "usb.blocked", rule, "deauthorized")


def test_a_composite_keyboard_and_disk_is_rejected_by_default(default_run: dict) -> None:
    assert default_run["state"]["1-4"] == {"authorized": False, "remove": "1",
                                           "interfaces": None}
    [event] = _events_for(default_run, "1-4")
    assert (event["kind"], event["severity"]) == ("usb.rejected", "critical")
    assert event["data"]["rule"] == "reject with-interface all-of { 03:*:* 08:*:* }"
    assert event["data"]["action"] == "removed"
    # decisions are forgotten on remove; what is still plugged is still remembered
    assert "/sys" + COMPOSITE.devpath not in default_run["remembered"]
    assert dev(STICK) in default_run["remembered"]


def _composite_partial(tb: BusHandle) -> dict[str, Any]:
    # kernel: the bus's drivers_probe (a plain file here: it keeps what the guard writes)
    probe = Path(tb.root()) / "sys" / "bus" / "usb" / "drivers_probe"
    probe.parent.mkdir(parents=True, exist_ok=True)
    probe.write_bytes(b"")
    floor = Floor(tb, NO_REJECT)
    floor.start()
    present = floor.state(COMPOSITE)  # configured before the guard: interfaces were on
    probed_at_start = probe.read_bytes()
    plugged = dataclasses.replace(COMPOSITE, port=8, devnum=9)
    hot = floor.plug(plugged)
    probed = probe.read_bytes()
    storage = ifaces(plugged)[1]
    tb.uevent(storage, "bind")  # a bind on the disk interface must not turn it on
    floor.wait("bind", storage)
    hot_after_bind = floor.state(plugged)
    return {"present": present, "hot": hot, "hot_after_bind": hot_after_bind,
            "probed_at_start": probed_at_start.decode(), "probed": probed.decode(),
            "events": [e for e in floor.events if e["data"].get("port") in ("1-4", "1-8")],
            "stop": floor.stop()}


def test_without_reject_rules_a_composite_keeps_its_keyboard_only(tmp_path: Path) -> None:
    out = run_scenario(tmp_path, _composite_partial, guard_bus((COMPOSITE,)))
    # present at start, interfaces on from boot: the disk interface is turned off
    assert out["present"] == {"authorized": True, "remove": "", "interfaces": [True, False]}
    # plugged later: interfaces appear off (interface_authorized_default=0), HID turned on
    assert out["hot"] == {"authorized": True, "remove": "", "interfaces": [True, False]}
    assert out["hot_after_bind"] == out["hot"]
    # the kernel probed the new interfaces while they were off: the one turned on is probed
    # again (drivers_probe), or the keyboard would be on with no driver; nothing else is
    assert out["probed_at_start"] == ""  # present interfaces were on, bound at boot
    assert out["probed"] == "1-8:1.0"
    assert [(e["kind"], e["severity"], e["data"]["port"]) for e in out["events"]] == [
        ("usb.partial", "notice", "1-4"), ("usb.partial", "notice", "1-8")]
    data = out["events"][1]["data"]
    assert data["allowed_interfaces"] == ["03:01:01"]
    assert data["blocked_interfaces"] == ["08:06:50"]
    assert data["rule"] == "allow with-interface match-all { 03:*:* }"
    assert data["action"] == "authorized"
    assert out["stop"]["defaults"][USB1] == ["0", "0"]


def _present_at_start(tb: BusHandle) -> dict[str, Any]:
    floor = Floor(tb)
    floor.start()
    specs = (EXT_HUB, BEHIND, STICK, KEYBOARD)
    return {"state": {s.sysname: floor.state(s) for s in specs},
            "order": [(e["kind"], e["data"].get("port")) for e in floor.events],
            "stop": floor.stop()}


def test_devices_present_at_start_are_evaluated_parents_first(tmp_path: Path) -> None:
    out = run_scenario(tmp_path, _present_at_start,
                       guard_bus((EXT_HUB, BEHIND, STICK, KEYBOARD)))
    state = out["state"]
    # the stick goes off; its interface node stays only because umockdev is no kernel (a real
    # one deconfigures a deauthorized device: its interfaces go away)
    assert state["1-1"] == {"authorized": False, "remove": "", "interfaces": [True]}
    assert state["1-9.3"]["authorized"] is False
    assert state["1-9"] == {"authorized": True, "remove": "", "interfaces": [True]}
    assert state["1-2"] == {"authorized": True, "remove": "", "interfaces": [True]}
    order = [tuple(item) for item in out["order"]]
    assert order[0] == ("usb.locked_down", None)
    assert set(order[1:]) == {("usb.allowed", "usb1"), ("usb.allowed", "1-9"),
                              ("usb.blocked", "1-9.3"), ("usb.blocked", "1-1"),
                              ("usb.allowed", "1-2")}
    assert order.index(("usb.allowed", "usb1")) == 1
    assert order.index(("usb.allowed", "1-9")) < order.index(("usb.blocked", "1-9.3"))
    assert out["stop"]["defaults"] == {USB1: ["0", "0"]}


def _unlocked_hub(tb: BusHandle) -> dict[str, Any]:
    """A hub whose authorized_default is 1 after all (lock down failed, or an old kernel): a
    new device arrives on. The guard must turn it off before it reads identity and rules."""
    import floor_agent.usb_guard.guard as guard_module

    steps: list[tuple[str, str, bool | None]] = []
    real_authorize, real_decide = sysfs.authorize, guard_module.decide

    def authorize(path: str, value: bool) -> None:
        steps.append(("write", os.path.basename(path), value))
        real_authorize(path, value)

    def decide(rules: Any, device: Any, context: Any) -> Any:
        steps.append(("decide", os.path.basename(device.sys_path), None))
        return real_decide(rules, device, context)

    sysfs.authorize, guard_module.decide = authorize, decide
    floor = Floor(tb)
    floor.start()
    present = list(steps)
    tb.set_attribute(USB1, "authorized_default", "1")  # the kernel's default is "on" again
    steps.clear()
    state = {spec.sysname: floor.plug(spec) for spec in (STICK, KEYBOARD)}
    floor.stop()
    return {"present": present, "steps": steps, "state": state,
            "kinds": [e["kind"] for e in floor.events if e["data"].get("port") in ("1-1", "1-2")]}


def test_a_device_arriving_on_is_turned_off_before_it_is_judged(tmp_path: Path) -> None:
    out = run_scenario(tmp_path, _unlocked_hub, guard_bus((WACOM,)))
    steps = [tuple(step) for step in out["steps"]]
    # the stick: off at once, then judged (block), and the decision's own write
    assert steps[:3] == [("write", "1-1", False), ("decide", "1-1", None),
                         ("write", "1-1", False)]
    # the keyboard: off at once, judged (allow), then on; its interface follows
    assert steps[3:6] == [("write", "1-2", False), ("decide", "1-2", None),
                          ("write", "1-2", True)]
    assert out["state"]["1-1"]["authorized"] is False
    assert out["state"]["1-2"] == {"authorized": True, "remove": "", "interfaces": [True]}
    assert out["kinds"] == ["usb.blocked", "usb.allowed"]
    # devices present at start are judged without being turned off first (a keyboard in use
    # must not drop out whenever the agent restarts)
    assert ("write", WACOM.sysname, False) not in [tuple(s) for s in out["present"]]
    assert ("write", WACOM.sysname, True) in [tuple(s) for s in out["present"]]


def _failures(tb: BusHandle) -> dict[str, Any]:
    root = tb.root()
    os.chmod(root + "/sys" + SECOND_HUB + "/authorized_default", 0o444)  # usb2 cannot lock
    os.chmod(root + dev(STICK) + "/authorized", 0o444)  # the stick cannot be turned off
    floor = Floor(tb)
    floor.start()
    keyboard = floor.plug(KEYBOARD)  # the guard goes on after both failures
    healthy = floor.guard.healthy()
    # the event source breaks under the thread: the guard reports unhealthy, shutdown is set
    null = os.open(os.devnull, os.O_RDONLY)
    assert floor.guard.monitor is not None
    os.dup2(null, floor.guard.monitor._monitor.fileno())
    floor.thread.join(3)
    return {"events": floor.events, "keyboard": keyboard, "healthy": healthy,
            "broken": [floor.guard.healthy(), floor.shutdown.is_set()],
            "usb2": sysfs.read_attribute(f"{USB2}/authorized_default")}


def test_failed_lock_down_and_failed_writes_are_critical_alarms(tmp_path: Path) -> None:
    import errno

    out = run_scenario(tmp_path, _failures, guard_bus((STICK,), second_hub=True),
                       drop_dac_override=True)
    events = out["events"]
    first = events[0]
    assert (first["kind"], first["severity"]) == ("usb.lockdown_failed", "critical")
    assert first["data"]["hubs"] == [USB1]
    [failure] = first["data"]["failures"]
    assert (failure["path"], failure["errno"]) == (f"{USB2}/authorized_default", errno.EACCES)
    assert out["usb2"] == "1"  # never written back: it simply could not be locked
    stick = [e for e in events if e["data"].get("port") == "1-1"]
    assert [(e["kind"], e["severity"]) for e in stick] == [
        ("usb.enforcement_failed", "critical"), ("usb.blocked", "warning")]
    alarm = stick[0]["data"]
    assert (alarm["path"], alarm["errno"], alarm["errno_name"], alarm["target"]) == (
        dev(STICK) + "/authorized", errno.EACCES, "EACCES", "block")
    assert stick[1]["data"]["action"].startswith("failed: write '0' to")
    # keeps going: a keyboard plugged later is authorized with its interface
    assert out["keyboard"] == {"authorized": True, "remove": "", "interfaces": [True]}
    assert out["healthy"] is True
    assert out["broken"] == [False, True]


# --- pure helpers ----------------------------------------------------------------------------

def _device(spec: UsbSpec) -> Any:
    return device_from_attributes(attributes(spec), descriptors(spec), "PARENT",
                                  sys_path=dev(spec), interface_attrs=interface_attributes(spec))


def test_subject_names_port_id_maker_and_product() -> None:
    assert subject_of(_device(STICK)) == "usb 1-1 0781:5567 SanDisk Cruzer Blade"
    nameless = dataclasses.replace(STICK, product=None, manufacturer=None)
    assert subject_of(_device(nameless)) == "usb 1-1 0781:5567"


def test_decision_event_kinds_and_data() -> None:
    rules = parse_rules_file(NO_REJECT)
    device = _device(COMPOSITE)
    decision = decide(rules, device)
    kind, severity, data = decision_event(device, decision, "authorized")
    assert (kind, severity) == ("usb.partial", "notice")
    assert data["allowed_interfaces"] == ["03:01:01"]
    assert data["blocked_interfaces"] == ["08:06:50"]
    assert data["parent_hash"] == "PARENT" and data["port"] == "1-4"
    for target, expected in (("allow", ("usb.allowed", "info")),
                             ("block", ("usb.blocked", "warning")),
                             ("reject", ("usb.rejected", "critical"))):
        assert decision_event(device, Decision(target, ""), "x")[:2] == expected
    assert decision_event(device, Decision("block", ""), "x")[2]["rule"] == "implicit"
    error = sysfs.SysfsError("write '0' to", "/sys/x/authorized", 13, "Permission denied")
    kind, severity, data = failure_event(device, "block", error)
    assert (kind, severity, data["path"], data["errno"], data["errno_name"]) == (
        "usb.enforcement_failed", "critical", "/sys/x/authorized", 13, "EACCES")


def test_interface_class_and_which_interfaces_a_decision_turns_on() -> None:
    attrs = {"bInterfaceClass": "3", "bInterfaceSubClass": "01", "bInterfaceProtocol": "1\n"}
    assert interface_class(attrs) == "03:01:01"
    assert interface_class({**attrs, "bInterfaceClass": "zz"}) is None
    assert interface_class({**attrs, "bInterfaceClass": "103"}) is None
    assert interface_class({"bInterfaceClass": "08"}) is None
    partial = Decision("partial", "r", ("03:01:01",), ("08:06:50",))
    assert interface_allowed(partial, "03:01:01")
    assert not interface_allowed(partial, "08:06:50")
    assert not interface_allowed(partial, None)
    assert interface_allowed(Decision("allow", "r", ("03:01:01",)), "08:06:50")
    assert not interface_allowed(Decision("block", "r"), "03:01:01")
    assert not interface_allowed(Decision("reject", "r"), "03:01:01")

