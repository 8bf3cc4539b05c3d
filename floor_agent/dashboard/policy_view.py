"""What the dashboard's policy pages show, shaped from the store's rows (pure, no I/O).

The allowlist as the admin edits it (YAML or JSON text in workstation.yaml's `netlock.allow`
shape) and back; the change log's diffs (difflib, line by line, each line marked added,
removed or kept; the template escapes them); the blocked devices an admin may approve (the
newest blocked/rejected event per workstation and device hash, less those an exception in
force already covers); and what a workstation enforces beside what it would be served.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from floor_agent.collector.policy import PolicyInputError

SCOPES = ("agent", "group", "all")  # the approve form's choices: this workstation, its group


def allow_text(allow: Iterable[Mapping[str, Any]] | None) -> str:
    """The allowlist as YAML text for the edit form ("" for none)."""
    items = [dict(item) for item in allow or ()]
    return "" if not items else yaml.safe_dump(items, sort_keys=False, allow_unicode=True)


def parse_allow(text: str) -> Any:
    """The allowlist text (YAML or JSON) as data for policy.check_netlock_allow; an empty text
    is the empty list. A text that does not parse: PolicyInputError naming the line."""
    if not text.strip():
        return []
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not YAML or JSON"
        raise PolicyInputError(f"netlock_allow{where}: {problem}") from None


@dataclass(frozen=True, slots=True)
class DiffLine:
    mark: str  # "+", "-", " " or "@" (a hunk header)
    text: str

    @property
    def cls(self) -> str:
        return {"+": "add", "-": "del", "@": "hunk"}.get(self.mark, "same")


def diff(before: str, after: str, name: str) -> list[DiffLine]:
    """A unified diff of two texts, line by line ([] when they are equal)."""
    lines = difflib.unified_diff(before.splitlines(), after.splitlines(),
                                 f"{name} before", f"{name} after", lineterm="", n=2)
    out = []
    for line in lines:
        if line.startswith(("---", "+++")):
            continue
        mark = "@" if line.startswith("@@") else line[:1] or " "
        out.append(DiffLine(mark, line if mark == "@" else line[1:]))
    return out


def _text(value: Any) -> str:
    if value is None:
        return ""
    return yaml.safe_dump(value, sort_keys=True, allow_unicode=True)


def change_diffs(change: Mapping[str, Any]) -> list[tuple[str, list[DiffLine]]]:
    """(what, diff lines) of one change: rules and allowlist of a group; otherwise its
    before/after as YAML."""
    before, after = change.get("before") or {}, change.get("after") or {}
    if change.get("kind") == "group_set" or "usb_rules" in after:
        out = [("USB rules", diff(before.get("usb_rules") or "", after.get("usb_rules") or "",
                                  "usb_rules")),
               ("netlock allowlist", diff(allow_text(before.get("netlock_allow")),
                                          allow_text(after.get("netlock_allow")),
                                          "netlock_allow"))]
        return [(what, lines) for what, lines in out if lines]
    lines = diff(_text(change.get("before")), _text(change.get("after")), "change")
    return [("before / after", lines)] if lines else []


def covers(scope: str, agent_id: str, group: str) -> bool:
    """Whether an exception's scope reaches a workstation in `group`."""
    return (scope == "all" or scope == f"agent:{agent_id}" or scope == f"group:{group}")


def blocked_devices(events: Iterable[Mapping[str, Any]], exceptions: Iterable[Mapping[str, Any]],
                    group_of: Mapping[str, str], default_group: str) -> list[dict[str, Any]]:
    """The newest blocked/rejected event per (workstation, device hash), newest first, less
    the devices an exception in force already lets in on that workstation."""
    active = [e for e in exceptions if e.get("active")]
    newest: dict[tuple[str, str], Mapping[str, Any]] = {}
    for event in events:
        data = event.get("data") or {}
        digest = data.get("hash")
        if not isinstance(digest, str) or not digest:
            continue
        key = (event["agent_id"], digest)
        held = newest.get(key)
        if held is None or (event["ts"], event["id"]) > (held["ts"], held["id"]):
            newest[key] = event
    out = []
    for (agent_id, digest), event in newest.items():
        group = group_of.get(agent_id, default_group)
        if any((e.get("device") or {}).get("hash") == digest
               and covers(e["scope"], agent_id, group) for e in active):
            continue
        out.append({**event, "group": group, "device": shown_device(event.get("data") or {})})
    out.sort(key=lambda e: (e["ts"], e["id"]), reverse=True)
    return out


SHOWN_FIELDS = ("id", "name", "manufacturer", "serial", "hash", "rule", "reason", "port")


def shown_device(data: Mapping[str, Any]) -> dict[str, Any]:
    """What the blocked-devices page shows of an event's device, as text whatever an agent
    sent (interfaces: a list of text)."""
    out: dict[str, Any] = {key: "" if data.get(key) is None else str(data.get(key))
                           for key in SHOWN_FIELDS}
    interfaces = data.get("interfaces")
    out["interfaces"] = [str(i) for i in interfaces] if isinstance(interfaces, list) else (
        [] if interfaces is None else [str(interfaces)])
    return out


def scope_of(choice: str, agent_id: str, group: str) -> str:
    """The approve form's scope choice as policy.check_scope reads it."""
    if choice == "agent":
        return f"agent:{agent_id}"
    if choice == "group":
        return f"group:{group}"
    if choice == "all":
        return "all"
    raise PolicyInputError(f"scope: expected one of {', '.join(SCOPES)}, got {choice!r}")


def expiry_of(text: str) -> str | None:
    """The form's expiry (a datetime-local value, read as UTC, or an ISO time with its zone)
    as policy.check_expiry reads it; None when empty."""
    text = text.strip()
    if not text:
        return None
    if len(text) == 16 and text[10] == "T":  # 2026-12-31T18:00 from <input type=datetime-local>
        return text + ":00Z"
    if len(text) == 19 and text[10] == "T":
        return text + "Z"
    return text


@dataclass(frozen=True, slots=True)
class Enforcement:
    enforced: str  # the version it reports enforcing, "bootstrap", or "-"
    applied_at: str | None
    served: str  # the version the collector would serve it now, or "-"
    state: str  # "current", "behind", "bootstrap", "no policy", "not reported", "ahead"

    @property
    def cls(self) -> str:
        return {"current": "ok", "behind": "bad", "bootstrap": "unknown",
                "ahead": "unknown"}.get(self.state, "")


def enforcement(applied: Mapping[str, Any] | None, served: int | None) -> Enforcement:
    """A workstation's latest policy.applied event (None: none yet) beside its served version."""
    served_text = "-" if served is None else str(served)
    if applied is None:
        return Enforcement("-", None, served_text, "not reported")
    data = applied.get("data") or {}
    version = data.get("version")
    if data.get("source") == "bootstrap" or not isinstance(version, int):
        return Enforcement("bootstrap", applied["ts"], served_text, "bootstrap")
    if served is None:
        state = "no policy"
    elif version < served:
        state = "behind"
    elif version > served:
        state = "ahead"
    else:
        state = "current"
    return Enforcement(str(version), applied["ts"], served_text, state)
