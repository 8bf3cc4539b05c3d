"""Admin tools over rules and devices: generate a policy from what is plugged, check a file.

`generate_policy` writes what `usbguard generate-policy` writes: one allow rule per present
device, pinned to its identity and descriptor hash (and its port when it has no serial), so an
admin can start from the machine as it is and then tighten.
"""

from __future__ import annotations

from collections.abc import Iterable

from floor_agent.usb_guard.device import UsbDevice
from floor_agent.usb_guard.rule import AttributeSet, Rule, RuleTarget, format_rule
from floor_agent.usb_guard.rule_parser import parse_rules_file


def rule_for(device: UsbDevice, target: RuleTarget = "allow") -> Rule:
    """The rule USBGuard's generate-policy would write for this device."""
    attributes: list[tuple[str, AttributeSet]] = [
        ("id", AttributeSet((device.id,))),
        ("serial", AttributeSet((device.serial,))),
        ("name", AttributeSet((device.name,))),
        ("hash", AttributeSet((device.hash,))),
        ("parent-hash", AttributeSet((device.parent_hash,))),
    ]
    if not device.serial:  # nothing else tells two identical serial-less devices apart
        attributes.append(("via-port", AttributeSet((device.port,))))
    attributes.append(("with-interface", AttributeSet(tuple(device.interfaces))))
    attributes.append(("with-connect-type", AttributeSet((device.connect_type,))))
    return Rule(target, tuple(attributes))


def generate_policy(devices: Iterable[UsbDevice]) -> str:
    """A rules file allowing exactly the given devices, one canonical rule per line."""
    return "".join(format_rule(rule_for(device)) + "\n" for device in devices)


def check_rules(text: str, source: str) -> list[Rule]:
    """Parse a rules file; RuleSyntaxError names source:line:column and what was expected."""
    return parse_rules_file(text, source)
