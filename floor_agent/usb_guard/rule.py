"""USBGuard rules as data (Rule, its attributes and conditions) and their canonical printing.

Admins already keep `/etc/usbguard/rules.conf` files and `usbguard generate-policy` output;
rule_parser.py reads them unchanged and format_rule prints rules in the canonical form
`usbguard-rule-parser` (Debian package usbguard 1.1.x) prints, so policies move between the two
without drift. rule_set.py matches rules against devices. All three are pure (no I/O).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

__all__ = [
    "ATTRIBUTE_NAMES",
    "CONDITION_NAMES",
    "SET_OPERATORS",
    "STRING_ATTRIBUTES",
    "TARGETS",
    "AttributeSet",
    "Condition",
    "Rule",
    "format_rule",
]

# "match" and "device" are accepted because USBGuard's grammar accepts them; they never decide.
RuleTarget = Literal["allow", "block", "reject", "match", "device"]
TARGETS: tuple[RuleTarget, ...] = get_args(RuleTarget)
SET_OPERATORS = ("all-of", "one-of", "none-of", "equals-ordered", "equals", "match-all")
# Canonical print order, which is USBGuard's (conditions come before with-connect-type).
ATTRIBUTE_NAMES = (
    "id",
    "serial",
    "name",
    "hash",
    "parent-hash",
    "via-port",
    "with-interface",
    "if",
    "with-connect-type",
    "label",
)
# Attributes whose values are quoted strings (the rest are ids, interfaces or conditions).
STRING_ATTRIBUTES = frozenset(
    {"name", "hash", "parent-hash", "serial", "via-port", "with-connect-type", "label"}
)
CONDITION_NAMES = (
    "allowed-matches",
    "localtime",
    "true",
    "false",
    "random",
    "rule-applied",
    "rule-evaluated",
)


@dataclass(frozen=True)
class Condition:
    """One rule condition; `parameter` is kept raw because USBGuard prints it unescaped."""

    name: str
    parameter: str | None = None
    negated: bool = False


@dataclass(frozen=True)
class AttributeSet:
    """An attribute's values with its set operator (USBGuard's default is `equals`)."""

    values: tuple[Any, ...] = ()  # strings; Conditions in the `condition` attribute's set
    operator: str = "equals"


@dataclass(frozen=True)
class Rule:
    """A parsed rule; frozen so it can key the caller's applied/evaluated bookkeeping."""

    target: RuleTarget
    attributes: tuple[tuple[str, AttributeSet], ...] = ()

    def get(self, name: str) -> AttributeSet | None:
        """The attribute named as in the rule language (`parent-hash`, `if`...), or None."""
        for key, value in self.attributes:
            if key == name:
                return value
        return None

    @property
    def conditions(self) -> AttributeSet | None:
        return self.get("if")


# ---------------------------------------------------------------------------------------------
# Printing


def _escape(value: str) -> str:
    """USBGuard's canonical string escape: printable ASCII as is, every other byte as \\xHH."""
    out = []
    for byte in value.encode("utf-8", "surrogateescape"):
        if byte == 0x22:
            out.append('\\"')
        elif byte == 0x5C:
            out.append("\\\\")
        elif 0x20 <= byte <= 0x7E:
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02x}")
    return '"' + "".join(out) + '"'


def _format_value(name: str, value: object) -> str:
    if name in STRING_ATTRIBUTES:
        return _escape(str(value))
    if isinstance(value, Condition):
        text = ("!" if value.negated else "") + value.name
        return text + (f"({value.parameter})" if value.parameter else "")
    return str(value)


def format_rule(rule: Rule) -> str:
    """The canonical text, identical to what `usbguard-rule-parser` prints for the rule."""
    parts: list[str] = [rule.target]
    by_name = dict(rule.attributes)
    for name in ATTRIBUTE_NAMES:
        attr = by_name.get(name)
        if attr is None or not attr.values:
            continue
        values = [_format_value(name, v) for v in attr.values]
        if len(values) == 1 and attr.operator == "equals":
            parts.append(f"{name} {values[0]}")
        else:
            op = "" if attr.operator == "equals" else attr.operator + " "
            parts.append(f"{name} {op}{{ {' '.join(values)} }}")
    return " ".join(parts)

