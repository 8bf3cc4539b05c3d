"""Client codes only: floor-side data must never carry a customer's name.

Editors and security staff see anonymous client codes; the list that maps codes to names
(CSV `client_code,customer_name`) lives only where the scan runs. `find_customer_names` looks
for every name, case-insensitive and as whole words, in every string of every event (kind,
subject, data values and keys, nested). A finding names the event (agent, seq), the field
path and the customer's CODE, never the name, so the list of findings is safe to log and to
show. `floor-agent privacy scan` runs it over the collector's store and exits 1 on a finding.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CSV_HEADER = ("client_code", "customer_name")
EXIT_CLEAN, EXIT_FOUND, EXIT_BAD_INPUT = 0, 1, 2


class CustomerListError(ValueError):
    """The customer list cannot be used; the text names the file and line (never a name)."""


@dataclass(frozen=True, slots=True)
class Customer:
    code: str
    name: str


@dataclass(frozen=True, slots=True)
class Finding:
    """A customer name found in an event; carries the code, never the name."""

    agent_id: str
    seq: int
    field: str  # e.g. "data.files[2].label", "subject", "data.<key>" for a dict key
    client_code: str

    def __str__(self) -> str:
        return (f"agent {self.agent_id} seq {self.seq}: field {self.field} carries the name "
                f"of client {self.client_code}")


def parse_customers(text: str, source: str = "customers") -> list[Customer]:
    """Read `client_code,customer_name` CSV (header required); errors name the line."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or tuple(cell.strip().lower() for cell in rows[0]) != CSV_HEADER:
        raise CustomerListError(f"{source}:1: the first line must be the header "
                                "'client_code,customer_name'")
    customers: list[Customer] = []
    seen: dict[str, int] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != 2:
            raise CustomerListError(f"{source}:{number}: expected 2 columns "
                                    f"(client_code,customer_name), got {len(row)}")
        code, name = row[0].strip(), row[1].strip()
        if not code or not name:
            raise CustomerListError(f"{source}:{number}: client_code and customer_name "
                                    "must both be set")
        if code in seen:
            raise CustomerListError(f"{source}:{number}: client_code {code} already on line "
                                    f"{seen[code]}")
        seen[code] = number
        customers.append(Customer(code, name))
    return customers


def load_customers(path: Path) -> list[Customer]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise CustomerListError(f"{path}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise CustomerListError(f"{path}: not UTF-8; save it as UTF-8") from None
    return parse_customers(text, str(path))


class NameMatcher:
    """All names in one case-insensitive, whole-word pattern (spaces match any whitespace)."""

    def __init__(self, customers: Iterable[Customer]) -> None:
        self.codes: dict[str, list[str]] = {}
        for customer in customers:
            key = self._key(customer.name)
            if key:
                self.codes.setdefault(key, []).append(customer.code)
        words = sorted(self.codes, key=len, reverse=True)
        alternatives = [r"\s+".join(re.escape(part) for part in key.split()) for key in words]
        # Letters and digits make a longer word; '_' does not ("mueller_01.jpg" is flagged).
        self.pattern = (re.compile(r"(?<![^\W_])(?:" + "|".join(alternatives) + r")(?![^\W_])",
                                   re.IGNORECASE) if alternatives else None)

    @staticmethod
    def _key(text: str) -> str:
        return " ".join(text.casefold().split())

    def codes_in(self, text: str) -> list[str]:
        """Client codes whose customer's name appears in text (sorted, unique)."""
        if self.pattern is None:
            return []
        found: set[str] = set()
        for match in self.pattern.finditer(text):
            found.update(self.codes.get(self._key(match.group(0)), []))
        return sorted(found)


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(field path, text) for every string in a JSON-like value, keys included."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if isinstance(key, str):
                yield f"{path}.<key>" if path else "<key>", key
            yield from _strings(item, child)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")


SCANNED_FIELDS = ("kind", "subject", "data")


def find_customer_names(events: Iterable[Mapping[str, Any]],
                        customers: Iterable[Customer] | NameMatcher) -> list[Finding]:
    """Every place an event carries a customer's name, as code-only findings."""
    matcher = customers if isinstance(customers, NameMatcher) else NameMatcher(customers)
    findings: list[Finding] = []
    for event in events:
        agent_id, seq = str(event.get("agent_id", "")), int(event.get("seq", -1))
        for name in SCANNED_FIELDS:
            if name not in event:
                continue
            for path, text in _strings(event[name], name):
                for code in matcher.codes_in(text):
                    findings.append(Finding(agent_id, seq, path, code))
    return findings


# --------------------------------------------------------------------------- CLI


def _store_events(database_url: str, page_size: int = 1000) -> Iterator[dict[str, Any]]:
    from floor_agent.store import open_store
    from floor_agent.store.interface import EventQuery

    store = open_store(database_url)
    try:
        cursor = None
        while True:
            page = store.query_events(EventQuery(limit=page_size, cursor=cursor))
            yield from page.events
            if page.next_cursor is None:
                return
            cursor = page.next_cursor
    finally:
        store.close()


def cmd_scan(args: argparse.Namespace) -> int:
    from floor_agent.collector.config import CollectorConfig
    from floor_agent.config import ConfigError, load_role

    try:
        config = load_role(args.config, CollectorConfig)
        customers = load_customers(Path(args.customers))
    except (ConfigError, CustomerListError) as e:
        print(e, file=sys.stderr)
        return EXIT_BAD_INPUT
    assert isinstance(config, CollectorConfig)
    matcher = NameMatcher(customers)
    scanned = 0
    findings: list[Finding] = []
    for event in _store_events(config.collector.resolved_database_url()):
        scanned += 1
        findings.extend(find_customer_names([event], matcher))
    for finding in findings:
        print(finding)
    print(f"privacy scan: {scanned} events, {len(customers)} customers, "
          f"{len(findings)} findings", file=sys.stderr)
    return EXIT_FOUND if findings else EXIT_CLEAN


def add_parsers(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`privacy scan ...` under the caller's subcommands."""
    privacy = subparsers.add_parser("privacy", help="client codes only: find customer names")
    sub = privacy.add_subparsers(dest="privacy_command", required=True)
    p = sub.add_parser("scan", help="scan the collector's events for customer names")
    p.add_argument("--config", required=True, help="collector.yaml")
    p.add_argument("--customers", required=True,
                   help="CSV client_code,customer_name (keep it 0600 on the collector host)")
    p.set_defaults(func=cmd_scan)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="floor-agent")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(["privacy", *raw] if raw[:1] != ["privacy"] else raw)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
