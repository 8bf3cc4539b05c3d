"""generate-policy and check-rules: our output parses in the real usbguard and matches back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from umockdev_bus import (
    COMPOSITE,
    KEYBOARD,
    NO_SERIAL,
    STICK,
    UsbSpec,
    device_of,
    umockdev_text,
)

from floor_agent.usb_guard.admin import check_rules, generate_policy, rule_for
from floor_agent.usb_guard.policy import decide
from floor_agent.usb_guard.rule import format_rule
from floor_agent.usb_guard.rule_parser import RuleSyntaxError

make = device_of


def test_generated_policy_allows_exactly_those_devices_and_usbguard_agrees() -> None:
    devices = [make(s) for s in (STICK, KEYBOARD, COMPOSITE, NO_SERIAL)]
    text = generate_policy(devices)
    rules = check_rules(text, "generated.conf")
    assert len(rules) == 4
    for device in devices:
        assert decide(rules, device).target == "allow"
    other = make(UsbSpec(0x0781, 0x5567, b"Cruzer Blade", b"SanDisk", b"OTHER-SERIAL",
                         ((0x08, 0x06, 0x50),), port=7, devnum=9))
    assert decide(rules, other).target == "block"  # same model, another stick: not allowed
    assert 'via-port "1-8"' in format_rule(rule_for(devices[3]))  # no serial: pinned to port
    for line in text.splitlines():
        printed = subprocess.run(["usbguard-rule-parser", line], capture_output=True,
                                 text=True, check=True).stdout
        outputs = [o for o in printed.splitlines() if o.startswith("OUTPUT: ")]
        assert outputs == [f"OUTPUT: {line}"]  # usbguard reads it and prints it back the same


def test_check_rules_names_line_and_column() -> None:
    with pytest.raises(RuleSyntaxError) as error:
        check_rules("allow id 1234:5678\nallow nme \"x\"\n", "rules.conf")
    assert str(error.value).startswith("rules.conf:2:")


def test_cli_generate_policy_and_list_on_a_simulated_bus(tmp_path: Path) -> None:
    bus = tmp_path / "bus.umockdev"
    bus.write_text(umockdev_text((STICK, KEYBOARD)))
    cli = [sys.executable, "-m", "floor_agent.cli"]
    ours = subprocess.run(["umockdev-run", "--device", str(bus), "--", *cli, "usb",
                           "generate-policy"], capture_output=True, text=True, timeout=60,
                          check=True).stdout
    theirs = subprocess.run(["umockdev-run", "--device", str(bus), "--", "usbguard",
                             "generate-policy"], capture_output=True, text=True, timeout=60,
                            check=True).stdout
    assert ours.splitlines() == theirs.splitlines()  # the very same policy as USBGuard's
    config = tmp_path / "workstation.yaml"
    rules = Path(__file__).resolve().parents[1] / "config" / "usb-rules.conf"
    config.write_text(yaml.safe_dump({"role": "workstation",
                                      "usb_guard": {"rules_file": str(rules)}}))
    listing = subprocess.run(["umockdev-run", "--device", str(bus), "--", *cli, "usb", "list",
                              "--config", str(config)], capture_output=True, text=True,
                             timeout=60, check=True).stdout
    assert "0781:5567 authorized block" in " ".join(listing.split())
    assert "block with-interface one-of { 08:*:* }" in listing
    assert "046d:c31c authorized allow" in " ".join(listing.split())
