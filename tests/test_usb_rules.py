"""USBGuard rule language: parse, print, match; differential against usbguard-rule-parser.

The differential test needs `usbguard-rule-parser` (Debian package usbguard) and fails, rather
than skips, without it: compatibility with the real parser is the point of the module.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from datetime import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from floor_agent.usb_guard.rule import AttributeSet, Condition, Rule, format_rule
from floor_agent.usb_guard.rule_parser import RuleSyntaxError, parse_rule, parse_rules_file
from floor_agent.usb_guard.rule_set import (
    ConditionContext,
    DeviceAttributes,
    evaluate,
    index_rules,
    matches,
)

RULE_PARSER = "usbguard-rule-parser"


def canon(text: str) -> str:
    return format_rule(parse_rule(text))


# --- parse and print ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("allow", "allow"),
        ("block", "block"),
        ("reject", "reject"),
        ("allow 1050:0011", "allow id 1050:0011"),
        ("allow id *:*", "allow id *:*"),
        ("allow id 046d:*", "allow id 046d:*"),
        ('allow hash "abc="', 'allow hash "abc="'),
        ('allow parent-hash "p"', 'allow parent-hash "p"'),
        ('allow name "Yubico Yubikey II"', 'allow name "Yubico Yubikey II"'),
        ('allow serial "0001234567"', 'allow serial "0001234567"'),
        ('allow via-port "1-2"', 'allow via-port "1-2"'),
        ("allow with-interface 08:*:*", "allow with-interface 08:*:*"),
        ("allow with-interface 03:01:*", "allow with-interface 03:01:*"),
        ('allow with-connect-type "hotplug"', 'allow with-connect-type "hotplug"'),
        ('allow label "office"', 'allow label "office"'),
        # the default operator is equals and a single value loses its braces
        ("allow id { 1234:5678 }", "allow id 1234:5678"),
        ("allow id equals { 1234:5678 }", "allow id 1234:5678"),
        ("allow id {1234:5678   abcd:*}", "allow id { 1234:5678 abcd:* }"),
        ("allow with-interface all-of { 08:*:* 03:00:* }",
         "allow with-interface all-of { 08:*:* 03:00:* }"),
        ('allow name one-of { "a" }', 'allow name one-of { "a" }'),
        ('allow serial none-of { "a" "b" }', 'allow serial none-of { "a" "b" }'),
        ('allow via-port equals-ordered { "1-1" }', 'allow via-port equals-ordered { "1-1" }'),
        ("allow id match-all { *:* 0000:0000 }", "allow id match-all { *:* 0000:0000 }"),
        # canonical attribute order: conditions print before with-connect-type
        (
            'allow label "l" with-connect-type "hotplug" if true via-port "1-2" '
            'parent-hash "p" with-interface 08:06:50 hash "h" name "y" serial "x" id 0001:0002',
            'allow id 0001:0002 serial "x" name "y" hash "h" parent-hash "p" via-port "1-2" '
            'with-interface 08:06:50 if true with-connect-type "hotplug" label "l"',
        ),
        ("allow\tname\t\"a\"", 'allow name "a"'),
        ('allow name "a" # trailing comment', 'allow name "a"'),
        ("allow#c", "allow"),
        # label may repeat: values are appended, as USBGuard does
        ('allow label "a" label "b"', 'allow label { "a" "b" }'),
        ('allow label "a" label all-of { "b" }', 'allow label all-of { "a" "b" }'),
    ],
)
def test_parse_and_print(text: str, expected: str) -> None:
    assert canon(text) == expected
    assert canon(expected) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("allow if true", "allow if true"),
        ("allow if false", "allow if false"),
        ("allow if !true", "allow if !true"),
        ("allow if true(ignored)", "allow if true"),
        ("allow if random", "allow if random"),
        ("allow if random(0.1666)", "allow if random(0.1666)"),
        ("allow if localtime(08:00-17:30)", "allow if localtime(08:00-17:30)"),
        ("allow if localtime(08:00)", "allow if localtime(08:00)"),
        ("allow if rule-applied", "allow if rule-applied"),
        ("allow if rule-applied(00:10:00)", "allow if rule-applied(00:10:00)"),
        ("allow if rule-evaluated(30)", "allow if rule-evaluated(30)"),
        (
            "allow with-interface one-of { 03:00:01 03:01:01 } "
            "if !allowed-matches(with-interface one-of { 03:00:01 03:01:01 })",
            "allow with-interface one-of { 03:00:01 03:01:01 } "
            "if !allowed-matches(with-interface one-of { 03:00:01 03:01:01 })",
        ),
        ("allow if {true}", "allow if true"),
        ("allow if one-of { true !false }", "allow if one-of { true !false }"),
        ("allow if none-of { false }", "allow if none-of { false }"),
    ],
)
def test_conditions_parse_and_print(text: str, expected: str) -> None:
    assert canon(text) == expected


def test_rule_structure() -> None:
    rule = parse_rule('reject 1234:* via-port one-of { "1-2" "1-3" } if !random(0.5)')
    assert rule.target == "reject"
    assert rule.get("id") == AttributeSet(("1234:*",))
    assert rule.get("via-port") == AttributeSet(("1-2", "1-3"), "one-of")
    assert rule.conditions == AttributeSet((Condition("random", "0.5", negated=True),))
    assert rule.get("name") is None


@pytest.mark.parametrize(
    ("raw", "value", "printed"),
    [
        (r'"a\"b"', 'a"b', r'"a\"b"'),
        (r'"a\\b"', "a\\b", r'"a\\b"'),
        (r'"\x41\x0a"', "A\n", r'"A\x0a"'),
        (r'"\x22\x5c"', '"\\', r'"\"\\"'),
        ('"\t"', "\t", r'"\x09"'),
        ('"é"', "é", r'"\xc3\xa9"'),
        (r'"\xff"', "\udcff", r'"\xff"'),
        ('""', "", '""'),
    ],
)
def test_string_escapes_round_trip(raw: str, value: str, printed: str) -> None:
    rule = parse_rule(f"allow name {raw}")
    assert rule.get("name") == AttributeSet((value,))
    assert format_rule(rule) == f"allow name {printed}"
    assert parse_rule(format_rule(rule)) == rule


# --- errors ---------------------------------------------------------------------------------


def test_file_error_names_line_column_and_expectation() -> None:
    text = "# policy\nallow id 1d6b:0002\nallow id 1234:5678 nme \"x\"\n"
    with pytest.raises(RuleSyntaxError) as info:
        parse_rules_file(text)
    err = info.value
    assert (err.line, err.column, err.source) == (3, 20, "rules.conf")
    assert str(err).startswith("rules.conf:3:20: expected an attribute")


@pytest.mark.parametrize(
    ("text", "column", "fragment"),
    [
        ("", 1, "expected a rule target"),
        ("permit", 1, "expected a rule target"),
        ("  allow", 1, "no leading whitespace"),
        ("allow ", 7, "no trailing whitespace"),
        ('allow name "a" name "b"', 16, "name attribute already defined"),
        ("allow 1234:* id 1234:5678", 14, "id attribute already defined"),
        ("allow if true if false", 15, "conditions already defined"),
        ('allow name "abc', 16, "expected closing '\"'"),
        (r'allow name "\q"', 13, "unknown escape"),
        (r'allow name "\n"', 13, "unknown escape"),
        ("allow name {}", 13, 'expected a double-quoted string'),
        ("allow id 123:4567", 10, "expected a USB device id"),
        ("allow *:1234", 7, "vendor wildcard"),
        ("allow with-interface 08:*:50", 22, "subclass wildcard"),
        ("allow with-interface 8:06:50", 22, "expected an interface type"),
        ("allow name one-of{ \"a\" }", 12, "expected '{' after the set operator"),
        ("allow if foo", 10, "unknown rule condition"),
        ("allow if true()", 10, "parameter"),
        ("allow if localtime(25:00)", 10, "localtime"),
        ("allow if localtime(12:00-10:00)", 10, "begin <= end"),
        ("allow if random(abc)", 10, "probability"),
        ("allow if rule-applied(ab)", 10, "duration"),
        ("allow if allowed-matches(foo)", 10, "allowed-matches"),
        ("allow name \"a\"x", 15, "expected whitespace"),
    ],
)
def test_rule_errors(text: str, column: int, fragment: str) -> None:
    with pytest.raises(RuleSyntaxError) as info:
        parse_rule(text)
    assert info.value.column == column, str(info.value)
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"<rule>:1:{column}: ")


def test_rules_file_comments_and_blank_lines() -> None:
    text = "# header\n\nallow id 1d6b:*\n   # indented comment\nreject # no\n"
    assert [format_rule(r) for r in parse_rules_file(text)] == ["allow id 1d6b:*", "reject"]


@pytest.mark.parametrize("text", ["allow\n   \n", "allow\r\n", "allow\n  block\n"])
def test_rules_file_rejects_what_usbguard_rejects(text: str) -> None:
    with pytest.raises(RuleSyntaxError) as info:
        parse_rules_file(text, source="/etc/usbguard/rules.conf")
    assert str(info.value).startswith("/etc/usbguard/rules.conf:")


# --- matching -------------------------------------------------------------------------------

KEYBOARD = DeviceAttributes(
    id="046d:c31c",
    hash="kbdhash",
    parent_hash="roothash",
    name="USB Keyboard",
    serial="",
    via_port="1-2",
    with_interface=("03:01:01", "03:00:00"),
    with_connect_type="hotplug",
)
FLASH = DeviceAttributes(
    id="0781:5567",
    hash="flashhash",
    parent_hash="roothash",
    name="Cruzer Blade",
    serial="4C530001",
    via_port="1-3",
    with_interface=("08:06:50",),
    with_connect_type="hotplug",
)
BADUSB = DeviceAttributes(
    id="0781:5567",
    name="Cruzer Blade",
    via_port="1-3",
    with_interface=("08:06:50", "03:01:01"),
    with_connect_type="hotplug",
)


def m(text: str, device: DeviceAttributes, ctx: ConditionContext | None = None) -> bool:
    return matches(parse_rule(text), device, ctx)


def test_match_each_attribute() -> None:
    assert m("allow", KEYBOARD)
    assert m("allow 046d:c31c", KEYBOARD) and not m("allow 046d:c31d", KEYBOARD)
    assert m("allow id 046d:*", KEYBOARD) and m("allow id *:*", KEYBOARD)
    assert m("allow id 046D:C31C", KEYBOARD)  # hex ids compare case-insensitively
    assert m('allow hash "kbdhash"', KEYBOARD) and not m('allow hash "x"', KEYBOARD)
    assert m('allow parent-hash "roothash"', KEYBOARD)
    assert m('allow name "USB Keyboard"', KEYBOARD) and not m('allow name "usb keyboard"',
                                                               KEYBOARD)
    assert m('allow serial "4C530001"', FLASH) and m('allow serial ""', KEYBOARD)
    assert m('allow via-port "1-2"', KEYBOARD) and not m('allow via-port "1-2"', FLASH)
    assert m('allow with-connect-type "hotplug"', KEYBOARD)
    assert not m('allow with-connect-type "hardwired"', KEYBOARD)
    assert m('allow 046d:c31c label "ignored for matching"', KEYBOARD)
    assert not m('allow name "x"', DeviceAttributes(id="1234:5678"))  # unknown name


def test_interface_wildcards_and_operators() -> None:
    allow_storage = "allow with-interface equals { 08:*:* }"
    assert m(allow_storage, FLASH) and not m(allow_storage, BADUSB)
    assert m("allow with-interface 08:06:*", FLASH) and m("allow with-interface 08:06:50", FLASH)
    assert not m("allow with-interface 08:05:*", FLASH)
    suspicious = "reject with-interface all-of { 08:*:* 03:01:* }"
    assert m(suspicious, BADUSB) and not m(suspicious, FLASH)
    assert m("allow with-interface one-of { 03:00:01 03:01:01 }", KEYBOARD)
    assert not m("allow with-interface one-of { 03:00:01 02:*:* }", KEYBOARD)
    assert m("allow with-interface none-of { 03:*:* }", FLASH)
    assert not m("allow with-interface none-of { 03:*:* }", BADUSB)
    # equals: same size, every rule value found; equals-ordered: position by position
    assert m("allow with-interface equals { 03:00:00 03:01:01 }", KEYBOARD)
    assert not m("allow with-interface equals { 03:01:01 }", KEYBOARD)
    assert m("allow with-interface equals-ordered { 03:01:* 03:00:* }", KEYBOARD)
    assert not m("allow with-interface equals-ordered { 03:00:* 03:01:01 }", KEYBOARD)
    # match-all: every device interface is covered by one of the rule's
    assert m("allow with-interface match-all { 03:*:* 08:*:* }", KEYBOARD)
    assert m("allow with-interface match-all { 03:*:* 08:*:* }", BADUSB)
    assert not m("allow with-interface match-all { 08:*:* }", BADUSB)


def test_set_operators_on_string_attributes() -> None:
    assert m('allow via-port one-of { "1-1" "1-3" }', FLASH)
    assert not m('allow via-port none-of { "1-1" "1-3" }', FLASH)
    assert m('allow name all-of { "Cruzer Blade" }', FLASH)
    assert not m('allow name all-of { "Cruzer Blade" "x" }', FLASH)
    assert m('allow name match-all { "Cruzer Blade" "x" }', FLASH)
    assert m("allow id one-of { 1111:2222 0781:* }", FLASH)


def test_conditions() -> None:
    noon = ConditionContext(now=time(12, 0))
    assert m("allow if true", FLASH) and not m("allow if false", FLASH)
    assert m("allow if !false", FLASH)
    assert m("allow if localtime(08:00-17:00)", FLASH, noon)
    assert not m("allow if localtime(13:00-17:00)", FLASH, noon)
    assert m("allow if localtime(11:59-12:00)", FLASH, noon)
    # USBGuard reads HH:MM:SS with strptime's %s (epoch seconds): 11:59:30 is 00:00:30 there,
    # so such a range is refused unless it stays ordered; we evaluate what the admin meant.
    assert m("allow if localtime(00:00:10-12:00)", FLASH, noon)
    assert not m("allow if !localtime(08:00-17:00)", FLASH, noon)
    with pytest.raises(ValueError, match="needs ConditionContext.now"):
        m("allow if localtime(08:00-17:00)", FLASH, ConditionContext())
    low, high = ConditionContext(random=lambda: 0.1), ConditionContext(random=lambda: 0.9)
    assert m("allow if random(0.5)", FLASH, low) and not m("allow if random(0.5)", FLASH, high)
    assert m("allow if random", FLASH, low) and not m("allow if random", FLASH, high)
    assert m("allow if one-of { false true }", FLASH)
    assert not m("allow if all-of { false true }", FLASH)
    assert m("allow if none-of { false false }", FLASH)
    assert not m("allow if { true false }", FLASH)


def test_rule_applied_and_evaluated_conditions() -> None:
    applied = parse_rule("allow if rule-applied(00:05:00)")
    recent = ConditionContext(rule_applied=lambda r: 60.0 if r == applied else None)
    stale = ConditionContext(rule_applied=lambda r: 600.0)
    assert matches(applied, FLASH, recent) and not matches(applied, FLASH, stale)
    assert not matches(applied, FLASH, ConditionContext())
    assert m("allow if rule-applied", FLASH, stale)
    evaluated = ConditionContext(rule_evaluated=lambda r: 10.0)
    assert m("allow if rule-evaluated(30)", FLASH, evaluated)
    assert not m("allow if rule-evaluated(5)", FLASH, evaluated)
    assert not m("allow if rule-evaluated", FLASH, ConditionContext())


def test_allowed_matches_gets_the_query() -> None:
    seen: list[Rule] = []

    def keyboard_allowed(query: Rule) -> bool:
        seen.append(query)
        return matches(query, KEYBOARD)

    ctx = ConditionContext(allowed_matches=keyboard_allowed)
    rule = "allow with-interface one-of { 03:00:01 03:01:01 } if !allowed-matches(" \
           "with-interface one-of { 03:00:01 03:01:01 })"
    other_keyboard = DeviceAttributes(id="1111:2222", with_interface=("03:01:01",))
    assert not m(rule, other_keyboard, ctx)
    assert format_rule(seen[0]) == "allow with-interface one-of { 03:00:01 03:01:01 }"
    assert m(rule, other_keyboard, ConditionContext())


def test_evaluate_first_match_wins_and_implicit_block() -> None:
    rules = parse_rules_file(
        "allow with-interface equals { 08:*:* }\n"
        "reject with-interface all-of { 08:*:* 03:01:* }\n"
        "match\n"
        'allow 046d:c31c via-port "1-2"\n'
    )
    assert evaluate(rules, FLASH, ConditionContext()) == ("allow", rules[0])
    assert evaluate(rules, BADUSB, ConditionContext()) == ("reject", rules[1])
    assert evaluate(rules, KEYBOARD, ConditionContext()) == ("allow", rules[3])
    assert evaluate(rules, DeviceAttributes(id="1234:5678"), ConditionContext()) == (
        "block", None)
    assert evaluate([], FLASH) == ("block", None)
    roulette = parse_rules_file("allow if random(0.1666)\nreject\n")
    assert evaluate(roulette, FLASH, ConditionContext(random=lambda: 0.5))[0] == "reject"
    assert evaluate(roulette, FLASH, ConditionContext(random=lambda: 0.1))[0] == "allow"


# --- a generate-policy file -----------------------------------------------------------------

GENERATED_POLICY = """\
allow id 1d6b:0002 serial "0000:00:14.0" name "xHCI Host Controller" \
hash "jEP/6WzviqdJ5VSeTUY8PatCNBKeaREvo2OqdplND/o=" \
parent-hash "rV9bfLq7c2eA4tYjVjwO4bxhm+y6GgZpl9J60L0fBkY=" via-port "usb1" \
with-interface 09:00:00 with-connect-type ""
allow id 1d6b:0003 serial "0000:00:14.0" name "xHCI Host Controller" \
hash "prM+Jby/bFHCn2lNjQdAMbgc6tse3xVx+hZwjOPHSdQ=" \
parent-hash "rV9bfLq7c2eA4tYjVjwO4bxhm+y6GgZpl9J60L0fBkY=" via-port "usb2" \
with-interface 09:00:00 with-connect-type ""
allow id 046d:c52b serial "" name "USB Receiver" \
hash "a4Iy3yMtDzPkN5WzjBoXOaSwRZf7QH0lbkq0xI/IBdo=" \
parent-hash "jEP/6WzviqdJ5VSeTUY8PatCNBKeaREvo2OqdplND/o=" via-port "1-2" \
with-interface { 03:01:01 03:01:02 03:00:00 } with-connect-type "hotplug"
allow id 0bda:5411 serial "" name "4-Port USB 2.0 Hub" \
hash "U8KZVi6cJ/rw/7QyqCi/VEL4KfhFeOW4FIZGPzWmp3s=" \
parent-hash "jEP/6WzviqdJ5VSeTUY8PatCNBKeaREvo2OqdplND/o=" via-port "1-4" \
with-interface { 09:00:01 09:00:02 } with-connect-type "hardwired"
allow id 8087:0029 serial "" name "" hash "ZXsUmHOCKGE7HtbhaVCL8U5eMJ4WEivXfyOfNr4tfvQ=" \
parent-hash "jEP/6WzviqdJ5VSeTUY8PatCNBKeaREvo2OqdplND/o=" via-port "1-10" \
with-interface { e0:01:01 e0:01:01 e0:01:01 e0:01:01 e0:01:01 e0:01:01 e0:01:01 } \
with-connect-type "hardwired"
allow id 0781:5567 serial "4C530001231219114290" name "Cruzer Blade" \
hash "mIPqx3DZ5lOWb2jVV4hMRw6W1Gq2E3jA2Yzz4rMzT5E=" \
parent-hash "prM+Jby/bFHCn2lNjQdAMbgc6tse3xVx+hZwjOPHSdQ=" via-port "2-1" \
with-interface 08:06:50 with-connect-type "hotplug" label "badge 4711 \\"night shift\\""
"""


def test_generate_policy_file_parses_and_round_trips() -> None:
    rules = parse_rules_file("# generated by usbguard generate-policy\n" + GENERATED_POLICY)
    assert len(rules) == 6
    assert [format_rule(r) for r in rules] == GENERATED_POLICY.splitlines()
    receiver = rules[2]
    assert receiver.get("with-interface") == AttributeSet(("03:01:01", "03:01:02", "03:00:00"))
    assert receiver.get("with-connect-type") == AttributeSet(("hotplug",))
    assert rules[5].get("label") == AttributeSet(('badge 4711 "night shift"',))
    unifying = DeviceAttributes(
        id="046d:c52b",
        hash="a4Iy3yMtDzPkN5WzjBoXOaSwRZf7QH0lbkq0xI/IBdo=",
        parent_hash="jEP/6WzviqdJ5VSeTUY8PatCNBKeaREvo2OqdplND/o=",
        name="USB Receiver",
        serial="",
        via_port="1-2",
        with_interface=("03:01:02", "03:00:00", "03:01:01"),
        with_connect_type="hotplug",
    )
    assert evaluate(rules, unifying, ConditionContext()) == ("allow", receiver)
    moved = DeviceAttributes(**{**unifying.__dict__, "via_port": "1-3"})
    assert evaluate(rules, moved, ConditionContext()) == ("block", None)


# --- differential against usbguard-rule-parser ----------------------------------------------


def usbguard_canonical(text: str) -> str | None:
    """What the real parser prints for the rule, or None when it rejects it."""
    proc = subprocess.run(
        [RULE_PARSER, "--", text],
        capture_output=True,
        env={**os.environ, "TZ": "UTC", "LC_ALL": "C"},
        timeout=30,
    )
    if proc.returncode != 0:
        return None
    for line in proc.stdout.decode("utf-8", "surrogateescape").splitlines():
        if line.startswith("OUTPUT: "):
            return line[len("OUTPUT: "):]
        if line == "OUTPUT:":  # a comment-only line
            return ""
    raise AssertionError(f"no OUTPUT line from {RULE_PARSER}: {proc.stdout!r}")


def our_canonical(text: str) -> str | None:
    if text == "":
        return None
    try:
        rules = parse_rules_file(text) if "\n" not in text else [parse_rule(text)]
    except RuleSyntaxError:
        return None
    if not rules:
        return ""
    # USBGuard 1.1.2 prints rule-evaluated as rule-applied (a bug we do not copy).
    return format_rule(rules[0]).replace("rule-evaluated", "rule-applied")


HEX = "0123456789abcdefABCDEF"
hex4 = st.text(HEX, min_size=4, max_size=4)
hex2 = st.text(HEX, min_size=2, max_size=2)
device_ids = st.one_of(
    st.builds(lambda v, p: f"{v}:{p}", hex4, st.one_of(hex4, st.just("*"))),
    st.just("*:*"),
    st.builds(lambda p: f"*:{p}", hex4),  # invalid in USBGuard
)
interfaces = st.one_of(
    st.builds(lambda c, s, p: f"{c}:{s}:{p}", hex2, hex2, st.one_of(hex2, st.just("*"))),
    st.builds(lambda c: f"{c}:*:*", hex2),
    st.builds(lambda c, p: f"{c}:*:{p}", hex2, hex2),  # invalid in USBGuard
)
string_chars = st.one_of(
    st.sampled_from(list("abcXYZ019 -_.:/+={}()#!'*")),
    st.sampled_from(['\\"', "\\\\", "\t", "é", "\\x41", "\\xff", "\\x0a", "\\x22", "\\x5C"]),
    st.sampled_from(["\\n", "\\0", "\\123", "\\q", "\\x4", '"']),  # mostly invalid
)
strings = st.lists(string_chars, max_size=6).map(lambda cs: '"' + "".join(cs) + '"')
condition_params = st.sampled_from(
    [
        "", "0.5", "0.1666", "1e-3", "-1", "abc", "0x1p3", "inf", "1e999", " 0.5", "0.5x",
        "10:00", "10:00-12:00", "10:00:00", "1:00", "10:0", "25:00", "10:60", "12:00-10:00",
        "10:00-12:00:30", "10:00-", "-10:00", "5", " 5", "99:99:99", "00:10:00", "ab",
        "id 1234:5678", "with-interface one-of { 03:00:01 03:01:01 }", "name \"x\"", "foo",
        "allow id 1234:5678", "# x", "id 1234:5678 if true", "id 1234:5678 ", "a\\)b", "(",
    ]
)
conditions = st.builds(
    lambda neg, name, param: ("!" if neg else "") + name + (f"({param})" if param is not None
                                                            else ""),
    st.booleans(),
    st.sampled_from(
        ["true", "false", "random", "localtime", "rule-applied", "rule-evaluated",
         "allowed-matches", "TRUE", "foo"]
    ),
    st.one_of(st.none(), condition_params),
)
VALUES = {
    "id": device_ids,
    "with-interface": interfaces,
    "if": conditions,
    **{name: strings for name in ("name", "hash", "parent-hash", "serial", "via-port",
                                  "with-connect-type", "label")},
}
blanks = st.sampled_from([" ", " ", " ", "\t", "  "])
operators = st.sampled_from(
    [None, None, "all-of", "one-of", "none-of", "equals", "equals-ordered", "match-all"]
)


@st.composite
def attribute_texts(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(sorted(VALUES)))
    values = draw(st.lists(VALUES[name], min_size=1, max_size=3))
    op = draw(operators)
    if len(values) == 1 and op is None and draw(st.booleans()):
        return f"{name}{draw(blanks)}{values[0]}"
    inner = "".join(draw(blanks) + v for v in values)[1:]
    braces = "{" + draw(st.sampled_from(["", " "])) + inner + draw(st.sampled_from(["", " "]))
    return f"{name}{draw(blanks)}{op + draw(blanks) if op else ''}{braces}}}"


@st.composite
def rule_texts(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(["allow", "block", "reject", "allow", "block", "match"]))
    if draw(st.integers(0, 4)) == 0:
        text += draw(blanks) + draw(device_ids)
    for attribute in draw(st.lists(attribute_texts(), max_size=4)):
        text += draw(blanks) + attribute
    if draw(st.integers(0, 5)) == 0:
        text += draw(st.sampled_from(["", " "])) + "# comment"
    if draw(st.integers(0, 20)) == 0:
        text = draw(st.sampled_from(["# only a comment", " # indented", ""]))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2]))):  # invalid-ish mutations
        pos = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["delete", "insert", "insert"]))
        if kind == "delete":
            text = text[:pos] + text[pos + 1:]
        else:
            ch = draw(st.sampled_from([*' \t"{}()!#:*\\x0aF-', "block", "allow 1234:5678"]))
            text = text[:pos] + ch + text[pos:]
    return text


def test_usbguard_rule_parser_is_installed() -> None:
    assert shutil.which(RULE_PARSER), (
        f"{RULE_PARSER} not found: install the Debian package usbguard"
    )


@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(rule_texts(), min_size=8, max_size=8))
def test_differential_against_usbguard_rule_parser(texts: list[str]) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        theirs = list(pool.map(usbguard_canonical, texts))
    for text, expected in zip(texts, theirs, strict=True):
        assert our_canonical(text) == expected, f"rule {text!r}"


def test_differential_quirks_are_pinned() -> None:
    """Cases where USBGuard is surprising; each pinned here so a package update shows up."""
    cases = {
        "allow ": None,  # trailing whitespace refused
        " # indented comment": "",
        "allow if localtime(10:00-12:00:30)": None,  # %s quirk reads :30 as epoch seconds
        "allow if localtime(10:60)": "allow if localtime(10:60)",  # strptime prefix parse
        "allow if random(0.5x)": "allow if random(0.5x)",  # stod prefix parse
        "allow if true(x)": "allow if true",
        'allow label "a" label "b"': 'allow label { "a" "b" }',
        # rules glued without a separator merge, the last target winning
        'allow name "x"block': 'block name "x"',
        "allow 1234:5678block 1111:2222": "block id 1111:2222",
        'allow name "x" block': None,
    }
    for text, expected in cases.items():
        assert usbguard_canonical(text) == expected, text
        assert our_canonical(text) == expected, text
    assert usbguard_canonical("allow if rule-evaluated(5)") == "allow if rule-applied(5)"
    assert canon("allow if rule-evaluated(5)") == "allow if rule-evaluated(5)"


# --- fuzzing --------------------------------------------------------------------------------


def _parse_all_ways(text: str) -> None:
    for parse in (parse_rule, parse_rules_file):
        try:
            result = parse(text)
        except RuleSyntaxError as exc:
            assert exc.line >= 1 and exc.column >= 1
            continue
        for rule in result if isinstance(result, list) else [result]:
            printed = format_rule(rule)
            assert format_rule(parse_rule(printed)) == printed


@settings(max_examples=1500, deadline=None)
@given(st.text())
def test_fuzz_text_never_crashes(text: str) -> None:
    _parse_all_ways(text)


@settings(max_examples=1000, deadline=None)
@given(st.binary().map(lambda b: b.decode("utf-8", "surrogateescape")))
def test_fuzz_bytes_never_crash(text: str) -> None:
    _parse_all_ways(text)


@settings(max_examples=1500, deadline=None)
@given(rule_texts())
def test_fuzz_rule_shaped_text_never_crashes_and_round_trips(text: str) -> None:
    _parse_all_ways(text)


# --- the rule index: same first match as trying every rule -------------------------------------

_IDS = ["0781:5567", "0781:5568", "046D:C52B", "046d:c52b", "0781:*", "*:*"]
_HASHES = ["aGFzaDE=", "aGFzaDI=", "aGFzaDM="]
_OPS = ["", "one-of ", "all-of ", "none-of ", "equals ", "equals-ordered ", "match-all "]


@st.composite
def _indexable_rule(draw: st.DrawFn) -> str:
    parts = [draw(st.sampled_from(["allow", "block", "reject"]))]
    if draw(st.booleans()):
        op = draw(st.sampled_from(_OPS))
        ids = draw(st.lists(st.sampled_from(_IDS), min_size=1, max_size=2))
        parts.append(f"id {ids[0]}" if not op else f"id {op}{{ {' '.join(ids)} }}")
    if draw(st.booleans()):
        op = draw(st.sampled_from(_OPS))
        hashes = draw(st.lists(st.sampled_from(_HASHES), min_size=1, max_size=2))
        quoted = " ".join(f'"{h}"' for h in hashes)
        parts.append(f'hash "{hashes[0]}"' if not op else f"hash {op}{{ {quoted} }}")
    if draw(st.booleans()):
        parts.append("with-interface " + draw(st.sampled_from(
            ["08:06:50", "one-of { 03:*:* 08:*:* }", "none-of { 08:*:* }"])))
    return " ".join(parts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_indexable_rule(), max_size=12), st.sampled_from(_IDS[:4] + ["1234:abcd"]),
       st.sampled_from([*_HASHES, None]), st.sampled_from([("08:06:50",), ("03:01:01",)]))
def test_rule_index_decides_like_trying_every_rule(rule_texts: list[str], device_id: str,
                                                    device_hash: str | None,
                                                    interfaces: tuple[str, ...]) -> None:
    rules = [parse_rule(text) for text in rule_texts]
    device = DeviceAttributes(id=device_id, hash=device_hash, with_interface=interfaces)
    assert evaluate(index_rules(rules), device) == evaluate(rules, device)


def test_rule_index_tries_only_rules_that_can_match() -> None:
    rules = [parse_rule(f'allow id 046d:{i:04x} serial "KB{i}"') for i in range(1000)]
    rules += [parse_rule('allow id 0781:5567 hash "aGFzaDE="'),
              parse_rule("block with-interface one-of { 08:*:* }")]
    index = index_rules(rules)
    stick = DeviceAttributes(id="0781:5567", hash="aGFzaDI=", with_interface=("08:06:50",))
    assert index.candidates(stick) == [rules[-1]]  # the pinned hash differs, ids differ
    keyboard = DeviceAttributes(id="046D:0007", serial="KB7")
    assert index.candidates(keyboard) == [rules[7], rules[-1]]
    assert evaluate(index, keyboard) == ("allow", rules[7])
