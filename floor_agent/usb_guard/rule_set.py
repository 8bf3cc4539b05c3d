"""Which rule decides for a device: USBGuard's matching (set operators, conditions), first
match wins, and the index that finds the few rules pinned to a device's hash or id. Pure: the
clock, the rule history and randomness come in through ConditionContext."""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from datetime import time as dtime
from typing import Literal

from floor_agent.usb_guard.glibc import stod, strptime
from floor_agent.usb_guard.rule import AttributeSet, Condition, Rule
from floor_agent.usb_guard.rule_parser import parse_rule

__all__ = [
    "ConditionContext",
    "DeviceAttributes",
    "RuleIndex",
    "evaluate",
    "index_rules",
    "matches",
]

# The targets that decide (a `match` or `device` rule never does).
Verdict = Literal["allow", "block", "reject"]


@dataclass(frozen=True)
class DeviceAttributes:
    """What a rule is matched against: a plain description of one USB device."""

    id: str = ""  # "vvvv:pppp"
    hash: str | None = None
    parent_hash: str | None = None
    name: str | None = None
    serial: str | None = None
    via_port: str | None = None
    with_interface: Sequence[str] = ()  # "cc:ss:pp" each
    with_connect_type: str | None = None


def _never_allowed(rule: Rule) -> bool:
    return False


def _never(rule: Rule) -> float | None:
    return None


def _half() -> float:
    return 0.5


@dataclass(frozen=True)
class ConditionContext:
    """Everything conditions may look at, passed in so matching stays pure and testable.

    `now` is the local time (required only by localtime() conditions, so a forgotten clock
    fails loudly instead of deciding at some default hour). `rule_applied` / `rule_evaluated`
    give the seconds since that rule last applied / was evaluated, or None if never.
    `allowed_matches` answers whether an allowed device matches the query rule. `random`
    returns a float in [0, 1).
    """

    now: datetime | dtime | None = None
    allowed_matches: Callable[[Rule], bool] = _never_allowed
    rule_applied: Callable[[Rule], float | None] = _never
    rule_evaluated: Callable[[Rule], float | None] = _never
    random: Callable[[], float] = _half


def _sane_seconds(param: str) -> int:
    """The duration the admin meant (USBGuard's %s quirk reads HH:MM:SS as SS since midnight)."""
    m = re.match(r"\s*(\d+)(?::(\d+))?(?::(\d+))?", param)
    if m is None:
        return 0
    parts = [int(p) for p in m.groups() if p is not None]
    if len(parts) == 1:
        return parts[0]
    return parts[0] * 3600 + parts[1] * 60 + (parts[2] if len(parts) > 2 else 0)


def _sane_daytime(part: str) -> int:
    got = strptime(part, "%H:%M")
    if got is None:
        return 0
    value, i = got
    m = re.match(r":(\d{1,2})", part[i:])
    return value + (min(int(m.group(1)), 59) if m else 0)


# ---------------------------------------------------------------------------------------------
# Matching


def _id_matches(pattern: str, value: str) -> bool:
    pv, _, pp = pattern.lower().partition(":")
    vv, _, vp = value.lower().partition(":")
    return (pv == "*" or pv == vv) and (pp == "*" or pp == vp)


def _interface_matches(pattern: str, value: str) -> bool:
    want = pattern.lower().split(":")
    have = value.lower().split(":")
    return len(have) == 3 and all(w in ("*", h) for w, h in zip(want, have, strict=True))


def _set_applies(
    attr: AttributeSet, device_values: Sequence[str], item: Callable[[str, str], bool]
) -> bool:
    """USBGuard's set operators: rule values on the left, the device's values on the right."""
    rule_values = attr.values
    op = attr.operator
    if op == "all-of":
        return all(any(item(r, d) for d in device_values) for r in rule_values)
    if op == "one-of":
        return any(item(r, d) for r in rule_values for d in device_values)
    if op == "none-of":
        return not any(item(r, d) for r in rule_values for d in device_values)
    if op == "equals":
        return len(rule_values) == len(device_values) and all(
            any(item(r, d) for d in device_values) for r in rule_values
        )
    if op == "equals-ordered":
        return len(rule_values) == len(device_values) and all(
            item(r, d) for r, d in zip(rule_values, device_values, strict=True)
        )
    # match-all: every device value is covered by some rule value
    return all(any(item(r, d) for r in rule_values) for d in device_values)


def _device_values(device: DeviceAttributes, name: str) -> Sequence[str]:
    if name == "with-interface":
        return list(device.with_interface)
    value = getattr(device, name.replace("-", "_"))
    return [] if value is None else [value]


def _eq(a: str, b: str) -> bool:
    return a == b


_ITEM_MATCHERS: dict[str, Callable[[str, str], bool]] = {
    "id": _id_matches, "with-interface": _interface_matches}


def _device_matches(rule: Rule, device: DeviceAttributes) -> bool:
    for name, attr in rule.attributes:
        if name in ("if", "label") or not attr.values:
            continue
        if not _set_applies(attr, _device_values(device, name), _ITEM_MATCHERS.get(name, _eq)):
            return False
    return True


def _condition_true(cond: Condition, rule: Rule, ctx: ConditionContext) -> bool:
    name, param = cond.name, cond.parameter
    if name in ("true", "false"):
        result = name == "true"
    elif name == "random":
        p = 0.5 if param is None else (stod(param) or 0.0)
        result = ctx.random() < p
    elif name == "localtime":
        begin_s, _, end_s = (param or "").partition("-")
        begin = _sane_daytime(begin_s)
        end = _sane_daytime(end_s) if end_s else begin
        now = ctx.now
        if now is None:
            raise ValueError("a localtime() condition needs ConditionContext.now")
        daytime = now.hour * 3600 + now.minute * 60 + now.second
        result = begin <= daytime <= end
    elif name in ("rule-applied", "rule-evaluated"):
        since = (ctx.rule_applied if name == "rule-applied" else ctx.rule_evaluated)(rule)
        limit = _sane_seconds(param) if param else 0
        result = since is not None and (limit == 0 or since <= limit)
    else:
        result = ctx.allowed_matches(parse_rule("allow " + (param or "")))
    return result != cond.negated


def _conditions_hold(rule: Rule, ctx: ConditionContext) -> bool:
    conds = rule.conditions
    if conds is None or not conds.values:
        return True
    results = [_condition_true(c, rule, ctx) for c in conds.values]
    if conds.operator == "one-of":
        return any(results)
    if conds.operator == "none-of":
        return not any(results)
    return all(results)  # all-of, equals, equals-ordered (and match-all) mean "all true"


def matches(rule: Rule, device: DeviceAttributes, ctx: ConditionContext | None = None) -> bool:
    """Whether the rule applies to the device: attributes match and conditions hold."""
    return _device_matches(rule, device) and _conditions_hold(rule, ctx or ConditionContext())


# Operators under which a rule can only match a single-valued attribute (id, hash) equal to
# one of the rule's values; none-of and match-all can match other values too.
_PINNING_OPERATORS = frozenset({"equals", "equals-ordered", "one-of", "all-of"})


def _pinned_values(rule: Rule, name: str) -> tuple[str, ...] | None:
    """The values a device's `name` must equal for the rule to match it, or None when the rule
    does not pin that attribute (absent, empty, a wildcard id, or a non-pinning operator)."""
    attr = rule.get(name)
    if attr is None or not attr.values or attr.operator not in _PINNING_OPERATORS:
        return None
    values = tuple(str(v) for v in attr.values)
    if name == "id":
        if any("*" in v for v in values):
            return None
        values = tuple(v.lower() for v in values)
    return values


@dataclass(frozen=True)
class RuleIndex:
    """The rules in file order, with those pinned to an exact hash or id found by lookup, so a
    generated policy of thousands of `allow id ... hash ...` lines costs a few rules per
    decision. Only rules that cannot match a device are skipped: first match still wins."""

    rules: tuple[Rule, ...]
    generic: tuple[int, ...]  # positions of rules that must be tried for every device
    by_hash: Mapping[str, tuple[int, ...]]
    by_id: Mapping[str, tuple[int, ...]]

    def candidates(self, device: DeviceAttributes) -> list[Rule]:
        """The rules that may match `device`, in file order."""
        lists = [self.generic]
        if device.hash is not None:
            lists.append(self.by_hash.get(device.hash, ()))
        lists.append(self.by_id.get(device.id.lower(), ()))
        return [self.rules[i] for i in heapq.merge(*lists)]


def index_rules(rules: Iterable[Rule]) -> RuleIndex:
    """Build the RuleIndex of a rule list (once per policy load)."""
    ordered = tuple(rules)
    generic: list[int] = []
    by_hash: dict[str, list[int]] = {}
    by_id: dict[str, list[int]] = {}
    for position, rule in enumerate(ordered):
        hashes = _pinned_values(rule, "hash")
        ids = None if hashes is not None else _pinned_values(rule, "id")
        if hashes is not None:
            for value in dict.fromkeys(hashes):
                by_hash.setdefault(value, []).append(position)
        elif ids is not None:
            for value in dict.fromkeys(ids):
                by_id.setdefault(value, []).append(position)
        else:
            generic.append(position)
    return RuleIndex(ordered, tuple(generic), {k: tuple(v) for k, v in by_hash.items()},
                     {k: tuple(v) for k, v in by_id.items()})


def evaluate(
    rules: Iterable[Rule] | RuleIndex, device: DeviceAttributes,
    ctx: ConditionContext | None = None,
) -> tuple[Verdict, Rule | None]:
    """First matching allow/block/reject rule decides; none matching means implicit block."""
    ctx = ctx or ConditionContext()
    if isinstance(rules, RuleIndex):
        rules = rules.candidates(device)
    for rule in rules:
        target = rule.target
        if target in ("allow", "block", "reject") and matches(rule, device, ctx):
            return target, rule
    return "block", None
