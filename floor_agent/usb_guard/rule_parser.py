"""The USBGuard rule parser: one rule a line, acceptance exactly as USBGuard's (quirks included,
see the notes at the quirk sites): a rule we accept is one the daemon accepts, and the reverse.
Refusals name source:line:column and what was expected. Pure."""

from __future__ import annotations

from floor_agent.usb_guard.glibc import stod, strptime
from floor_agent.usb_guard.rule import (
    ATTRIBUTE_NAMES,
    CONDITION_NAMES,
    SET_OPERATORS,
    STRING_ATTRIBUTES,
    TARGETS,
    AttributeSet,
    Condition,
    Rule,
)

__all__ = ["RuleSyntaxError", "parse_rule", "parse_rules_file"]

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
_BLANK = " \t"
_HEX = frozenset("0123456789abcdefABCDEF")
_DIGITS = frozenset("0123456789")
_COND_ID_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-")
_COND_ID_REST = _COND_ID_FIRST | _DIGITS
_SINGLE_ESCAPES = frozenset("abfnrtv\\'0\n")


class RuleSyntaxError(ValueError):
    """A rule that USBGuard would refuse; names where and what was expected, for admins."""

    def __init__(self, message: str, line: int, column: int, source: str = "<rule>") -> None:
        self.message = message
        self.line = line
        self.column = column
        self.source = source
        super().__init__(f"{source}:{line}:{column}: {message}")


def _raw_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _seconds_param(param: str) -> int | None:
    """Duration of rule-applied/rule-evaluated as USBGuard accepts it (HH:MM:SS, HH:MM, SS)."""
    for fmt in ("%H:%M:%s", "%H:%M", "%s"):
        got = strptime(param, fmt)
        if got is not None:
            return got[0]
    return None


def _localtime_range(param: str) -> tuple[int, int] | None:
    """USBGuard's acceptance of localtime(): begin[-end], begin <= end (with its %s quirk)."""
    begin_s, _, end_s = param.partition("-")
    begin = _daytime(begin_s)
    if begin is None:
        return None
    end = begin
    if end_s:
        parsed_end = _daytime(end_s)
        if parsed_end is None:
            return None
        end = parsed_end
    if begin > end:
        return None
    return begin, end


def _daytime(part: str) -> int | None:
    got = strptime(part, "%H:%M:%s") or strptime(part, "%H:%M")
    return None if got is None else got[0]


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
        attrs: dict[str, tuple[str, list[str | Condition]]] = {}
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

    def attribute(self, attrs: dict[str, tuple[str, list[str | Condition]]]) -> None:
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

    def value(self, kw: str) -> str | Condition:
        if kw in STRING_ATTRIBUTES:
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
            if param is not None and stod(param) is None:
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
