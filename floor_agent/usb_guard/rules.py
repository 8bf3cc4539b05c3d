"""USBGuard rule language: parse, print and match (pure, no I/O).

Admins already keep `/etc/usbguard/rules.conf` files and `usbguard generate-policy` output;
this module reads them unchanged and prints rules in the canonical form `usbguard-rule-parser`
(Debian package usbguard 1.1.x) prints, so policies move between the two without drift.
Acceptance follows USBGuard exactly, quirks included (see the notes at the quirk sites): a rule
we accept is one the daemon accepts, and the reverse.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from datetime import time as dtime

__all__ = [
    "ATTRIBUTE_NAMES",
    "CONDITION_NAMES",
    "SET_OPERATORS",
    "TARGETS",
    "AttributeSet",
    "Condition",
    "ConditionContext",
    "DeviceAttributes",
    "Rule",
    "RuleSyntaxError",
    "evaluate",
    "format_rule",
    "matches",
    "parse_rule",
    "parse_rules_file",
]

# "match" and "device" are accepted because USBGuard's grammar accepts them; they never decide.
TARGETS = ("allow", "block", "reject", "match", "device")
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
# Keyword try order of the grammar; no keyword is a prefix of another.
_KEYWORDS = (
    "id",
    "name",
    "hash",
    "parent-hash",
    "serial",
    "via-port",
    "with-interface",
    "with-connect-type",
    "if",
    "label",
)
_STRING_ATTRS = frozenset(
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
_BLANK = " \t"
_HEX = frozenset("0123456789abcdefABCDEF")
_DIGITS = frozenset("0123456789")
_COND_ID_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-")
_COND_ID_REST = _COND_ID_FIRST | _DIGITS
_SINGLE_ESCAPES = frozenset("abfnrtv\\'0\n")
_C_SPACE = " \t\n\v\f\r"


class RuleSyntaxError(ValueError):
    """A rule that USBGuard would refuse; names where and what was expected, for admins."""

    def __init__(self, message: str, line: int, column: int, source: str = "<rule>") -> None:
        self.message = message
        self.line = line
        self.column = column
        self.source = source
        super().__init__(f"{source}:{line}:{column}: {message}")


@dataclass(frozen=True)
class Condition:
    """One rule condition; `parameter` is kept raw because USBGuard prints it unescaped."""

    name: str
    parameter: str | None = None
    negated: bool = False


@dataclass(frozen=True)
class AttributeSet:
    """An attribute's values with its set operator (USBGuard's default is `equals`)."""

    values: tuple = ()
    operator: str = "equals"


@dataclass(frozen=True)
class Rule:
    """A parsed rule; frozen so it can key the caller's applied/evaluated bookkeeping."""

    target: str
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


# ---------------------------------------------------------------------------------------------
# Strings


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


def _raw_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


# ---------------------------------------------------------------------------------------------
# glibc emulation: USBGuard validates time parameters with strptime() and numbers with stod(),
# so acceptance depends on their exact prefix-parsing behaviour.


def _get_number(s: str, i: int, hi: int) -> tuple[int, int] | None:
    while i < len(s) and s[i] in _C_SPACE:
        i += 1
    if i >= len(s) or s[i] not in _DIGITS:
        return None
    val = 0
    n = 2
    while True:
        val = val * 10 + int(s[i])
        i += 1
        n -= 1
        if not (n > 0 and val * 10 <= hi and i < len(s) and s[i] in _DIGITS):
            break
    if val > hi:
        return None
    return val, i


def _strptime(s: str, fmt: str) -> tuple[int, int] | None:
    """Emulate glibc strptime for %H, %M, %s and ':'; returns (daytime seconds, end) or None."""
    i = 0
    hour = minute = sec = 0
    for index, directive in enumerate(fmt.split(":")):
        if index:
            if i >= len(s) or s[i] != ":":
                return None
            i += 1
        if directive == "%H":
            got = _get_number(s, i, 23)
            if got is None:
                return None
            hour, i = got
        elif directive == "%M":
            got = _get_number(s, i, 59)
            if got is None:
                return None
            minute, i = got
        else:  # %s: seconds since the epoch, then localtime() (UTC assumed) overwrites all
            if i >= len(s) or s[i] not in _DIGITS:
                return None
            j = i
            while j < len(s) and s[j] in _DIGITS:
                j += 1
            secs = int(s[i:j]) % 2**64
            if secs >= 2**63:
                secs -= 2**64
            if abs(secs) > 67767976233532799:  # localtime_r fails: year overflows int
                return None
            i = j
            day = secs % 86400
            hour, minute, sec = day // 3600, day // 60 % 60, day % 60
    return hour * 3600 + minute * 60 + sec, i


_STOD_RE = re.compile(
    r"[ \t\n\v\f\r]*[+-]?(?:"
    r"(?P<hex>0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?[0-9]+)?)"
    r"|(?P<inf>inf(?:inity)?)|(?P<nan>nan(?:\([0-9A-Za-z_]*\))?)"
    r"|(?P<dec>(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?))",
    re.IGNORECASE,
)


def _stod(text: str) -> float | None:
    """Emulate std::stod: longest strtod prefix; None when it would throw."""
    m = _STOD_RE.match(text)
    if m is None:
        return None
    token = m.group(0).strip(_C_SPACE)
    if m.group("nan"):
        return math.nan
    if m.group("inf"):
        return -math.inf if token.startswith("-") else math.inf
    try:
        value = float.fromhex(token) if m.group("hex") else float(token)
    except (ValueError, OverflowError):
        return None
    if math.isinf(value):
        return None  # ERANGE overflow -> std::out_of_range
    if value != 0 and abs(value) < 2.2250738585072014e-308:
        return None  # ERANGE underflow
    mantissa = re.split(r"[pP]" if m.group("hex") else r"[eE]", token)[0].lstrip("+-")
    nonzero = r"[1-9a-fA-F]" if m.group("hex") else r"[1-9]"
    if value == 0 and re.search(nonzero, mantissa[2:] if m.group("hex") else mantissa):
        return None
    return value


def _seconds_param(param: str) -> int | None:
    """Duration of rule-applied/rule-evaluated as USBGuard accepts it (HH:MM:SS, HH:MM, SS)."""
    for fmt in ("%H:%M:%s", "%H:%M", "%s"):
        got = _strptime(param, fmt)
        if got is not None:
            return got[0]
    return None


def _sane_seconds(param: str) -> int:
    """The duration the admin meant (USBGuard's %s quirk reads HH:MM:SS as SS since midnight)."""
    m = re.match(r"\s*(\d+)(?::(\d+))?(?::(\d+))?", param)
    if m is None:
        return 0
    parts = [int(p) for p in m.groups() if p is not None]
    if len(parts) == 1:
        return parts[0]
    return parts[0] * 3600 + parts[1] * 60 + (parts[2] if len(parts) > 2 else 0)


def _localtime_range(param: str) -> tuple[int, int] | None:
    """USBGuard's acceptance of localtime(): begin[-end], begin <= end (with its %s quirk)."""
    begin_s, _, end_s = param.partition("-")
    begin = _daytime(begin_s)
    if begin is None:
        return None
    end = begin
    if end_s:
        end = _daytime(end_s)
        if end is None:
            return None
    if begin > end:
        return None
    return begin, end


def _daytime(part: str) -> int | None:
    got = _strptime(part, "%H:%M:%s") or _strptime(part, "%H:%M")
    return None if got is None else got[0]


def _sane_daytime(part: str) -> int:
    got = _strptime(part, "%H:%M")
    if got is None:
        return 0
    value, i = got
    m = re.match(r":(\d{1,2})", part[i:])
    return value + (min(int(m.group(1)), 59) if m else 0)


# ---------------------------------------------------------------------------------------------
# Parser


class _LineParser:
    """Recursive descent over one line, mirroring USBGuard's PEG grammar and its actions."""

    def __init__(self, text: str, source: str, line: int) -> None:
        self.s = text
        self.pos = 0
        self.source = source
        self.line = line

    def fail(self, message: str, pos: int | None = None) -> RuleSyntaxError:
        return RuleSyntaxError(
            message, self.line, (self.pos if pos is None else pos) + 1, self.source
        )

    def peek(self) -> str:
        return self.s[self.pos] if self.pos < len(self.s) else ""

    def blanks(self) -> int:
        start = self.pos
        while self.pos < len(self.s) and self.s[self.pos] in _BLANK:
            self.pos += 1
        return self.pos - start

    def describe(self) -> str:
        if self.pos >= len(self.s):
            return "end of rule"
        return repr(self.s[self.pos])

    # -- line ---------------------------------------------------------------------------------

    def parse_line(self) -> Rule | None:
        s = self.s
        if s.lstrip(_BLANK).startswith("#"):
            return None
        for target in TARGETS:
            if s.startswith(target):
                break
        else:
            where = "at the start of the line, no leading whitespace" if s[:1] in _BLANK else ""
            raise self.fail(
                "expected a rule target (allow, block or reject)"
                + (f" {where}" if where else f", found {self.describe()}")
            )
        self.pos = len(target)
        attrs: dict[str, tuple[str, list]] = {}
        first = True
        while self.pos < len(s):
            if self.peek() == "#":
                break
            glued = next((t for t in TARGETS if s.startswith(t, self.pos)), None)
            if glued is not None:
                # USBGuard 1.1.2 quirk: its grammar repeats `rule` with no separator, so
                # `allow name "x"block` parses as one rule whose last target wins.
                target = glued
                self.pos += len(glued)
                first = True
                continue
            if self.blanks() == 0:
                raise self.fail(f"expected whitespace, a comment or end of rule, found "
                                f"{self.describe()}")
            if self.pos >= len(s):
                raise self.fail("expected an attribute or a comment (no trailing whitespace)")
            if self.peek() == "#":
                break
            if first:
                first = False
                dev_pos = self.pos
                dev = self.try_device_id()
                if dev is not None:
                    # The shorthand *sets* the id (a glued later rule replaces it in place).
                    op, values = attrs.get("id", ("equals", []))
                    if len(values) > 1:
                        raise self.fail("id attribute already defined with several values",
                                        dev_pos)
                    attrs["id"] = (op, [dev])
                    continue
            self.attribute(attrs)
        ordered = tuple(
            (name, AttributeSet(tuple(attrs[name][1]), attrs[name][0]))
            for name in ATTRIBUTE_NAMES
            if name in attrs
        )
        return Rule(target, ordered)

    def attribute(self, attrs: dict[str, tuple[str, list]]) -> None:
        start = self.pos
        for kw in _KEYWORDS:
            if self.s.startswith(kw, start):
                break
        else:
            raise self.fail(
                "expected an attribute (id, hash, parent-hash, name, serial, via-port, "
                "with-interface, with-connect-type, label, if) or a comment, found "
                + self.describe()
            )
        if kw in attrs and kw != "label":  # USBGuard lets `label` repeat and appends
            what = "conditions" if kw == "if" else f"{kw} attribute"
            raise self.fail(f"{what} already defined", start)
        self.pos += len(kw)
        if self.blanks() == 0:
            raise self.fail(f"expected whitespace after '{kw}', found {self.describe()}")
        op = None
        save = self.pos
        for candidate in SET_OPERATORS:
            if self.s.startswith(candidate, self.pos):
                self.pos += len(candidate)
                if self.blanks() and self.peek() == "{":
                    op = candidate
                else:
                    self.pos = save
                break
        old_op, values = attrs.get(kw, ("equals", []))
        if op is not None or self.peek() == "{":
            self.pos += 1
            self.blanks()
            values.append(self.value(kw))
            while True:
                n = self.blanks()
                if self.peek() == "}":
                    self.pos += 1
                    break
                if n == 0:
                    raise self.fail(f"expected whitespace or '}}', found {self.describe()}")
                values.append(self.value(kw))
        else:
            if self.s.startswith(SET_OPERATORS, self.pos) and kw != "if":
                raise self.fail("expected '{' after the set operator")
            values.append(self.value(kw))
        attrs[kw] = (op or old_op, values)

    # -- values -------------------------------------------------------------------------------

    def value(self, kw: str) -> object:
        if kw in _STRING_ATTRS:
            return self.string_value()
        if kw == "id":
            start = self.pos
            dev = self.try_device_id()
            if dev is None:
                raise self.fail("expected a USB device id like 1d6b:0002, 1d6b:* or *:*", start)
            return dev
        if kw == "with-interface":
            return self.interface()
        return self.condition()

    def try_device_id(self) -> str | None:
        start = self.pos
        parts = []
        for i in range(2):
            if i:
                if self.peek() != ":":
                    self.pos = start
                    return None
                self.pos += 1
            chunk = self.s[self.pos:self.pos + 4]
            if self.peek() == "*":
                parts.append("*")
                self.pos += 1
            elif len(chunk) == 4 and all(c in _HEX for c in chunk):
                parts.append(chunk)
                self.pos += 4
            else:
                self.pos = start
                return None
        if parts[0] == "*" and parts[1] != "*":
            raise self.fail("invalid USB device id: a vendor wildcard needs a product wildcard",
                            start)
        return ":".join(parts)

    def interface(self) -> str:
        start = self.pos
        parts = []
        for i in range(3):
            if i:
                if self.peek() != ":":
                    raise self.fail(f"expected ':' in interface type, found {self.describe()}")
                self.pos += 1
            chunk = self.s[self.pos:self.pos + 2]
            if i and self.peek() == "*":
                parts.append("*")
                self.pos += 1
            elif len(chunk) == 2 and all(c in _HEX for c in chunk):
                parts.append(chunk)
                self.pos += 2
            else:
                raise self.fail(
                    "expected an interface type cc:ss:pp (hex, '*' for ss or pp)", start
                )
        if parts[1] == "*" and parts[2] != "*":
            raise self.fail("invalid interface type: a subclass wildcard needs a protocol "
                            "wildcard", start)
        return ":".join(parts).lower()  # USBGuard keeps numbers, so it prints lower case

    def bounded(self, close: str) -> str:
        """Raw text between delimiters, escapes checked as the grammar does (not decoded)."""
        open_pos = self.pos
        self.pos += 1
        s = self.s
        while True:
            if self.pos >= len(s) or s[self.pos] in "\r\n":
                raise self.fail(f"expected closing '{close}' for the one opened at column "
                                f"{open_pos + 1}")
            c = s[self.pos]
            if c == close:
                self.pos += 1
                return s[open_pos + 1:self.pos - 1]
            if c != "\\":
                self.pos += 1
                continue
            esc = self.pos
            self.pos += 1
            c = self.peek()
            if c == "x":
                hx = s[self.pos + 1:self.pos + 3]
                if len(hx) != 2 or not all(h in _HEX for h in hx):
                    raise self.fail("expected two hex digits after \\x", self.pos + 1)
                self.pos += 3
            elif c in _DIGITS:
                self.pos += 1
                for _ in range(2):
                    if self.peek() in _DIGITS and self.peek():
                        self.pos += 1
            elif c and (c in _SINGLE_ESCAPES or c == close):
                self.pos += 1
            else:
                raise self.fail(f"unknown escape sequence, expected \\\\, \\{close} or \\xHH",
                                esc)

    def string_value(self) -> str:
        if self.peek() != '"':
            raise self.fail(f'expected a double-quoted string, found {self.describe()}')
        start = self.pos
        raw = self.bounded('"')
        out = bytearray()
        i = 0
        while i < len(raw):
            c = raw[i]
            if c != "\\":
                out += _raw_bytes(c)
                i += 1
                continue
            nxt = raw[i + 1]
            if nxt in '"\\':
                out.append(ord(nxt))
                i += 2
            elif nxt == "x":
                out.append(int(raw[i + 2:i + 4], 16))
                i += 4
            else:
                # The grammar admits \n, \t, \0, \123 ... but USBGuard's unescape refuses them.
                raise self.fail('unknown escape sequence, expected \\\\, \\" or \\xHH',
                                start + 1 + i)
        return out.decode("utf-8", "surrogateescape")

    def condition(self) -> Condition:
        start = self.pos
        negated = self.peek() == "!"
        if negated:
            self.pos += 1
        if self.peek() not in _COND_ID_FIRST or not self.peek():
            raise self.fail(f"expected a condition ({', '.join(CONDITION_NAMES)}), found "
                            f"{self.describe()}")
        id_start = self.pos
        while self.peek() and self.peek() in _COND_ID_REST:
            self.pos += 1
        name = self.s[id_start:self.pos]
        param = self.bounded(")") if self.peek() == "(" else None
        if param == "":
            raise self.fail("expected a condition parameter between the parentheses", start)
        if name not in CONDITION_NAMES:
            raise self.fail(f"unknown rule condition {name!r}, expected one of "
                            f"{', '.join(CONDITION_NAMES)}", start)
        if name in ("true", "false"):
            param = None  # USBGuard ignores and drops it
        elif name == "random":
            if param is not None and _stod(param) is None:
                raise self.fail("expected a probability for random(), like random(0.25)", start)
        elif name == "localtime":
            if param is None or _localtime_range(param) is None:
                raise self.fail("expected a time range for localtime(), HH:MM[:SS][-HH:MM[:SS]]"
                                " with begin <= end", start)
        elif name in ("rule-applied", "rule-evaluated"):
            if param is not None and _seconds_param(param) is None:
                raise self.fail(f"expected a duration for {name}(), HH:MM:SS, HH:MM or SS",
                                start)
        else:  # allowed-matches: its parameter is a rule without the target
            if param is None:
                raise self.fail("expected a device query for allowed-matches(...)", start)
            try:
                _LineParser("allow " + param, self.source, self.line).parse_line()
            except RuleSyntaxError as exc:
                raise self.fail(f"invalid allowed-matches() query: {exc.message}", start) from None
        return Condition(name, param, negated)


def parse_rule(text: str, source: str = "<rule>", line: int = 1) -> Rule:
    """Parse one rule; comment-only or empty text is an error here (there is no rule)."""
    rule = _LineParser(text, source, line).parse_line() if text else None
    if rule is None:
        raise RuleSyntaxError("expected a rule target (allow, block or reject)", line, 1, source)
    return rule


def parse_rules_file(text: str, source: str = "rules.conf") -> list[Rule]:
    """Parse a rules.conf: one rule a line, `#` comments, empty lines skipped.

    As in USBGuard, whitespace-only lines, leading whitespace and CR line ends are errors.
    """
    rules = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line:
            continue
        rule = _LineParser(line, source, number).parse_line()
        if rule is not None:
            rules.append(rule)
    return rules


# ---------------------------------------------------------------------------------------------
# Printing


def _format_value(name: str, value: object) -> str:
    if name in _STRING_ATTRS:
        return _escape(str(value))
    if isinstance(value, Condition):
        text = ("!" if value.negated else "") + value.name
        return text + (f"({value.parameter})" if value.parameter else "")
    return str(value)


def format_rule(rule: Rule) -> str:
    """The canonical text, identical to what `usbguard-rule-parser` prints for the rule."""
    parts = [rule.target]
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
        p = 0.5 if param is None else (_stod(param) or 0.0)
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
) -> tuple[str, Rule | None]:
    """First matching allow/block/reject rule decides; none matching means implicit block."""
    ctx = ctx or ConditionContext()
    if isinstance(rules, RuleIndex):
        rules = rules.candidates(device)
    for rule in rules:
        if rule.target in ("allow", "block", "reject") and matches(rule, device, ctx):
            return rule.target, rule
    return "block", None
