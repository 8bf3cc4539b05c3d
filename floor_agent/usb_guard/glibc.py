"""glibc emulation: USBGuard validates time parameters with strptime() and numbers with
std::stod(), so whether it accepts a rule (and what a parameter means) depends on their exact
prefix-parsing behaviour. Pure."""

from __future__ import annotations

import math
import re

__all__ = ["stod", "strptime"]

_DIGITS = frozenset("0123456789")
_C_SPACE = " \t\n\v\f\r"


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


def strptime(s: str, fmt: str) -> tuple[int, int] | None:
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


def stod(text: str) -> float | None:
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
