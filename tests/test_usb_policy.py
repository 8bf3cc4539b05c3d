"""usb_guard policy: the shipped default rules decide the devices of the floor as promised."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from umockdev_bus import (
    COMPOSITE,
    EXT_HUB,
    KEYBOARD,
    NO_SERIAL,
    PHONE_MTP,
    PHONE_RNDIS,
    RNDIS_MISC,
    STICK,
    WACOM,
    UsbSpec,
    descriptors,
    device_of,
)

from floor_agent.usb_guard.policy import IMPLICIT, decide
from floor_agent.usb_guard.rule_parser import parse_rule, parse_rules_file

DEFAULT_RULES = parse_rules_file(
    (Path(__file__).resolve().parents[1] / "config" / "usb-rules.conf").read_text(),
    "config/usb-rules.conf")
make = device_of


KEYBOARD_AUDIO = UsbSpec(0x046D, 0x0A8F, b"G935 Gaming Headset + Keys", b"Logitech", b"",
                         ((0x03, 0x00, 0x00), (0x01, 0x01, 0x00), (0x01, 0x02, 0x00)),
                         port=11, devnum=12)


@pytest.mark.parametrize("spec", [KEYBOARD, WACOM, EXT_HUB], ids=["keyboard", "wacom", "hub"])
def test_input_devices_and_hubs_keep_working(spec: UsbSpec) -> None:
    decision = decide(DEFAULT_RULES, make(spec))
    assert decision.target == "allow"
    assert decision.authorize_device
    assert decision.allowed_interfaces == make(spec).interfaces


@pytest.mark.parametrize(("spec", "rule"), [
    (STICK, "block with-interface one-of { 08:*:* }"),
    (NO_SERIAL, "block with-interface one-of { 08:*:* }"),
    (PHONE_MTP, "block with-interface one-of { 06:*:* }"),
    (PHONE_RNDIS, "block with-interface one-of { 02:*:* 0a:*:* }"),
    (RNDIS_MISC, "block with-interface one-of { 02:*:* 0a:*:* }"),
], ids=["stick", "stick-no-serial", "phone-mtp", "phone-rndis", "rndis-gadget"])
def test_storage_phones_and_tethering_are_blocked(spec: UsbSpec, rule: str) -> None:
    decision = decide(DEFAULT_RULES, make(spec))
    assert decision.target == "block"
    assert not decision.authorize_device
    assert decision.rule == rule
    assert decision.allowed_interfaces == ()


def test_keyboard_plus_storage_is_rejected_as_badusb() -> None:
    decision = decide(DEFAULT_RULES, make(COMPOSITE))
    assert decision.target == "reject"
    assert decision.rule == "reject with-interface all-of { 03:*:* 08:*:* }"


def test_without_a_reject_rule_a_composite_keeps_only_its_keyboard() -> None:
    rules = [r for r in DEFAULT_RULES if r.target != "reject"]
    decision = decide(rules, make(COMPOSITE))
    assert decision.target == "partial"
    assert decision.authorize_device
    assert decision.allowed_interfaces == ("03:01:01",)
    assert decision.blocked_interfaces == ("08:06:50",)
    assert decision.rule == "allow with-interface match-all { 03:*:* }"


def test_keyboard_with_audio_types_but_nothing_else() -> None:
    decision = decide(DEFAULT_RULES, make(KEYBOARD_AUDIO))
    assert decision.target == "partial"
    assert decision.allowed_interfaces == ("03:00:00",)
    assert decision.blocked_interfaces == ("01:01:00", "01:02:00")


def test_unknown_device_is_blocked_implicitly() -> None:
    printer = UsbSpec(0x03F0, 0x0C17, b"LaserJet", b"HP", b"CN123", ((0x07, 0x01, 0x02),),
                      port=12, devnum=13)
    decision = decide(DEFAULT_RULES, make(printer))
    assert (decision.target, decision.rule) == ("block", IMPLICIT)


def test_malformed_descriptors_fail_closed_unless_pinned_by_hash() -> None:
    broken = dataclasses.replace(KEYBOARD, raw_descriptors=descriptors(KEYBOARD)[:30])
    device = make(broken)
    assert any(p.startswith("descriptors") for p in device.problems)
    assert decide(DEFAULT_RULES, device).target == "block"
    pinned = [parse_rule(f'allow id {device.id} hash "{device.hash}"')] + DEFAULT_RULES
    decision = decide(pinned, device)
    assert decision.target == "allow" and "exact hash" in decision.reason


def test_admin_rules_by_identity_win_over_the_defaults() -> None:
    stick = make(STICK)
    rules = [parse_rule(f'allow id {stick.id} serial "{stick.serial}" via-port "{stick.port}"'),
             *DEFAULT_RULES]
    decision = decide(rules, stick)
    assert decision.target == "allow"
    assert decision.rule.startswith("allow id 0781:5567")
