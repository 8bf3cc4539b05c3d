"""Decide what happens to a USB device: pure, over the parsed rules and the device identity.

USBGuard decides per device. We decide per device first, and when that says block, per
interface too: each interface is matched alone (same identity, only that interface), so a
composite keyboard+storage device keeps its keyboard while its storage interface stays off
(USBGuard's oldest open request). A rule that names the combination (`reject with-interface
all-of { 03:*:* 08:*:* }`) still rejects the whole device: the admin's policy decides.

Fail closed: a device whose descriptors could not be read has no trustworthy interface list,
so only a rule pinned to its exact hash can allow it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from floor_agent.usb_guard.device import UsbDevice
from floor_agent.usb_guard.rule import Rule, format_rule
from floor_agent.usb_guard.rule_set import ConditionContext, DeviceAttributes, RuleIndex, evaluate

IMPLICIT = "implicit"
# A device decision: a rule's verdict, or partial (device on, some interfaces off).
Target = Literal["allow", "block", "reject", "partial"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one device, and why, in words an auditor can check against the rules."""

    target: Target
    rule: str  # the text of the rule that decided, or "implicit"
    allowed_interfaces: tuple[str, ...] = ()
    blocked_interfaces: tuple[str, ...] = ()
    reason: str = ""

    @property
    def authorize_device(self) -> bool:
        return self.target in ("allow", "partial")


def attributes_of(device: UsbDevice, interfaces: Sequence[str] | None = None) -> DeviceAttributes:
    """The rule-language view of a device (optionally with only some of its interfaces)."""
    return DeviceAttributes(
        id=device.id, hash=device.hash, parent_hash=device.parent_hash, name=device.name,
        serial=device.serial, via_port=device.port,
        with_interface=tuple(device.interfaces if interfaces is None else interfaces),
        with_connect_type=device.connect_type)


def _descriptor_trouble(device: UsbDevice) -> str | None:
    for problem in device.problems:
        if problem.startswith("descriptors"):
            return problem
    return None


def _text(rule: Rule | None) -> str:
    return IMPLICIT if rule is None else format_rule(rule)


def decide(rules: Sequence[Rule] | RuleIndex, device: UsbDevice,
           ctx: ConditionContext | None = None) -> Decision:
    """First matching rule for the device; on block, interface by interface. `rules` may be
    a RuleIndex (same decisions, fewer rules tried: the daemon builds one per policy load)."""
    ctx = ctx or ConditionContext()
    trouble = _descriptor_trouble(device)
    if trouble is not None:
        listed = rules.rules if isinstance(rules, RuleIndex) else rules
        pinned = [r for r in listed if r.get("hash") is not None]
        target, rule = evaluate(pinned, attributes_of(device), ctx)
        if target == "allow" and rule is not None:
            return Decision("allow", _text(rule), device.interfaces,
                            reason="allowed by its exact hash despite: " + trouble)
        return Decision("reject" if target == "reject" else "block", _text(rule),
                        blocked_interfaces=device.interfaces,
                        reason=f"malformed device, fail closed ({trouble})")
    target, rule = evaluate(rules, attributes_of(device), ctx)
    if target == "allow":
        return Decision("allow", _text(rule), device.interfaces, reason="device rule")
    if target == "reject" or len(device.interfaces) < 2:
        return Decision(target, _text(rule), blocked_interfaces=device.interfaces,
                        reason="device rule" if rule else "no rule matched")
    allowed: list[str] = []
    blocked: list[str] = []
    deciding: list[str] = []
    for interface in device.interfaces:
        each, each_rule = evaluate(rules, attributes_of(device, [interface]), ctx)
        (allowed if each == "allow" else blocked).append(interface)
        if each == "allow":
            deciding.append(_text(each_rule))
    if not allowed:
        return Decision("block", _text(rule), blocked_interfaces=tuple(blocked),
                        reason="device rule" if rule else "no rule matched")
    return Decision("partial", "; ".join(dict.fromkeys(deciding)), tuple(allowed),
                    tuple(blocked), reason=f"device {_text(rule)}: only allowed interfaces on")
