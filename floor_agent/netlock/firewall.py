"""The nftables side of netlock: render the default-deny ruleset, load it, read it back.

netlock owns exactly one table, `table inet <netlock.table>`, and never touches another one. A
drop in any base chain is final in nftables, so other tables (docker's, an admin's) cannot
reopen what this table rejects; they can only block more.

The rendered script is atomic on its own: `table inet T {}` / `delete table inet T` / `table
inet T { ... }` in one file is one kernel transaction, so loading it either replaces our table
whole or, if anything in it is wrong, leaves the running ruleset exactly as it was. `apply`
checks the script with `nft -c` first and refuses a bad config before nft is even called, so
a typo in the config never costs the workstation its lock (or its audit link).

The nft binary is called, not libnftables: it is what an admin runs, its errors name the line,
and `nft` may be a command prefix (`["ip", "netns", "exec", "ws", "nft"]`) for tests.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from floor_agent.netlock.allowlist import (
    Allowlist,
    AllowlistError,
    IPNetwork,
    Resolver,
    build,
    system_resolver,
)
from floor_agent.netlock.config import NetlockConfig

NftCommand = str | Sequence[str]
CHAINS = ("input", "forward", "output")
NFT_TIMEOUT_SECONDS = 30
_COMMENT_MAX = 120  # nft allows 128 bytes per comment; leave room for the quotes


class FirewallError(RuntimeError):
    """The ruleset was not (or not verifiably) loaded. `where` is the config path at fault, if
    any; `stderr` is nft's own message (it names the script line)."""

    def __init__(self, message: str, *, where: str | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.where = where
        self.stderr = stderr


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What `apply` did: the script it loaded, the ruleset it replaced (JSON, for the audit
    event) and what the read-back confirmed (per chain: hook, policy, rule count)."""

    script: str
    previous: dict[str, Any]
    verified: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- rendering


def render(config: NetlockConfig, allowlist: Allowlist, *, source: str | os.PathLike[str] | None
           = None, now: datetime | None = None) -> str:
    """The nft script for our table. `source` (the config file) and the time go in the header
    so an admin who finds the file knows where it came from."""
    if not allowlist.destinations:
        raise FirewallError("netlock.allow: empty; refusing to render a ruleset that would cut "
                            "the audit link too", where="netlock.allow")
    table = config.table
    when = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    origin = os.fspath(source) if source is not None else "(config given in memory)"
    out = [
        "#!/usr/sbin/nft -f",
        f"# floor-agent netlock: default-deny egress, table inet {table}.",
        f"# Rendered from {_one_line(origin)} at {when}.",
        "# Generated: `floor-agent netlock apply` replaces this table; edit the config instead.",
        "# Atomic: the next three statements are one transaction (create if missing, delete,",
        "# recreate), so loading replaces only this table and a failure keeps the old one.",
        f"table inet {table} {{}}",
        f"delete table inet {table}",
        f"table inet {table} {{",
        f'\tcomment "{_comment("floor-agent netlock: only the allowlist may be reached")}"',
        "",
        "\tchain input {",
        "\t\ttype filter hook input priority 0; policy drop;",
        *_rules(_input_rules(allowlist)),
        "\t}",
        "",
        "\tchain forward {",
        "\t\ttype filter hook forward priority 0; policy drop;",
        *_rules([("counter drop", "a workstation routes nothing for anyone")]),
        "\t}",
        "",
        "\tchain output {",
        "\t\ttype filter hook output priority 0; policy drop;",
        *_rules(_output_rules(allowlist)),
        "\t}",
        "}",
    ]
    return "\n".join(out) + "\n"


Rule = tuple[str, str]  # (statement, why)

_ND_OUT = "nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, mld2-listener-report"
_ND_IN = "nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert"


def _output_rules(allowlist: Allowlist) -> list[Rule]:
    rules: list[Rule] = [
        ('oif "lo" accept', "the machine itself"),
        ("ct state established,related accept", "replies and ICMP errors of allowed flows"),
        ("ct state invalid drop", "packets conntrack cannot place"),
        (f"icmpv6 type {{ {_ND_OUT} }} accept",
         "IPv6 neighbour discovery (link scope only) so the LAN keeps working"),
    ]
    for i, destination in enumerate(allowlist.destinations):
        label = f"allow[{i}] {destination.name}"
        for family, nets in _by_family(destination.networks):
            daddr = f"{family} daddr {_addresses(nets)}"
            if destination.tcp:
                rules.append((f"{daddr} tcp dport {_set(map(str, destination.tcp))} accept",
                              f"{label}: tcp"))
            if destination.udp:
                rules.append((f"{daddr} udp dport {_set(map(str, destination.udp))} accept",
                              f"{label}: udp"))
            icmp = "icmp type echo-request" if family == "ip" else "icmpv6 type echo-request"
            rules.append((f"{daddr} {icmp} accept", f"{label}: ping, to tell down from blocked"))
    rules += [
        ("counter meta l4proto tcp reject with tcp reset",
         "not allowed: a blocked connect fails at once (RST), it does not time out"),
        ("counter reject with icmpx admin-prohibited",
         "not allowed: everything else refused at once; the policy drop is the backstop"),
    ]
    return rules


def _input_rules(allowlist: Allowlist) -> list[Rule]:
    rules: list[Rule] = [
        ('iif "lo" accept', "the machine itself"),
        ("ct state established,related accept", "replies to what output allowed"),
        ("ct state invalid drop", "packets conntrack cannot place"),
        (f"icmpv6 type {{ {_ND_IN} }} ip6 hoplimit 255 accept",
         "IPv6 neighbour discovery from this link only (hop limit 255)"),
        ("icmpv6 type mld-listener-query ip6 saddr fe80::/10 accept",
         "MLD queries from the link, so snooping switches keep delivering ND multicast"),
    ]
    for i, destination in enumerate(allowlist.destinations):
        for family, nets in _by_family(destination.networks):
            icmp = "icmp type echo-request" if family == "ip" else "icmpv6 type echo-request"
            rules.append((f"{family} saddr {_addresses(nets)} {icmp} accept",
                          f"allow[{i}] {destination.name}: may ping us"))
    rules.append(("counter drop", "nothing else may open a connection to the workstation"))
    return rules


def _by_family(networks: Sequence[IPNetwork]) -> list[tuple[str, list[IPNetwork]]]:
    """Networks split by family and collapsed: nft refuses overlapping elements in a set."""
    v4: list[IPNetwork] = list(ipaddress.collapse_addresses(
        n for n in networks if isinstance(n, ipaddress.IPv4Network)))
    v6: list[IPNetwork] = list(ipaddress.collapse_addresses(
        n for n in networks if isinstance(n, ipaddress.IPv6Network)))
    return [(family, nets) for family, nets in (("ip", v4), ("ip6", v6)) if nets]


def _addresses(networks: Sequence[IPNetwork]) -> str:
    """A set as nft prints it back: single hosts without /32 or /128."""
    return _set(str(n.network_address) if n.num_addresses == 1 else str(n) for n in networks)


def _rules(rules: list[Rule]) -> list[str]:
    return [f'\t\t{statement} comment "{_comment(why)}"' for statement, why in rules]


def _set(items: Any) -> str:
    return "{ " + ", ".join(items) + " }"


def _comment(text: str) -> str:
    """nft comments are quoted strings without escapes: no quotes, one line, <= 128 bytes."""
    text = _one_line(text).replace('"', "'").replace("\\", "/")
    return text.encode()[:_COMMENT_MAX].decode(errors="ignore")


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------- loading


def apply(config: NetlockConfig, allowlist: Allowlist | None = None, nft: NftCommand = "nft",
          resolve: Resolver = system_resolver, *,
          source: str | os.PathLike[str] | None = None) -> ApplyResult:
    """Render, check, load and read back the ruleset; FirewallError if any step fails.

    Before the load nothing is changed (a bad config is refused, a script nft rejects is never
    loaded); the load itself is one transaction, so if it fails the kernel keeps the old
    ruleset. A failed read-back means the table is loaded but not what we rendered."""
    if allowlist is None:
        try:
            allowlist = build(config, resolve)
        except AllowlistError as e:
            raise FirewallError(f"config refused, nothing loaded: {e}", where=e.where) from None
    _refuse_everything(allowlist)
    script = render(config, allowlist, source=source)
    previous = ruleset_json(nft)
    with tempfile.NamedTemporaryFile("w", prefix="floor-netlock-", suffix=".nft") as f:
        f.write(script)
        f.flush()
        _nft(nft, ["-c", "-f", f.name], "nft rejected the rendered ruleset, nothing loaded")
        _nft(nft, ["-f", f.name], "loading the ruleset failed, the previous one stays")
    loaded = _run_json(nft, ["-j", "list", "table", "inet", config.table])
    verified = verify(loaded, config.table, expected=_rule_counts(script))
    return ApplyResult(script=script, previous=previous, verified=verified)


def verify(listing: dict[str, Any], table: str,
           expected: dict[str, int] | None = None) -> dict[str, Any]:
    """Check an `nft -j list` result: our table has the three base chains, each type filter
    with policy drop (and, if given, the expected number of rules). Returns what it saw."""
    chains: dict[str, dict[str, Any]] = {}
    rules: dict[str, int] = {}
    for item in listing.get("nftables", []):
        if "chain" in item:
            chain = item["chain"]
            if chain.get("family") == "inet" and chain.get("table") == table:
                chains[chain["name"]] = chain
        elif "rule" in item:
            rule = item["rule"]
            if rule.get("family") == "inet" and rule.get("table") == table:
                rules[rule["chain"]] = rules.get(rule["chain"], 0) + 1
    seen: dict[str, Any] = {}
    for name in CHAINS:
        chain = chains.get(name)
        if chain is None:
            raise FirewallError(f"read-back: table inet {table} has no chain {name}")
        got = {"hook": chain.get("hook"), "type": chain.get("type"),
               "policy": chain.get("policy"), "rules": rules.get(name, 0)}
        if got["hook"] != name or got["type"] != "filter" or got["policy"] != "drop":
            raise FirewallError(f"read-back: chain {name} of table inet {table} is {got}, "
                                f"expected a filter chain on hook {name} with policy drop")
        if expected is not None and got["rules"] != expected.get(name):
            raise FirewallError(f"read-back: chain {name} has {got['rules']} rules, "
                                f"{expected.get(name)} were loaded")
        seen[name] = got
    return {"table": f"inet {table}", "chains": seen}


def ruleset_json(nft: NftCommand = "nft") -> dict[str, Any]:
    """The whole running ruleset as nft's JSON (`nft -j list ruleset`)."""
    return _run_json(nft, ["-j", "list", "ruleset"])


def remove(config: NetlockConfig, nft: NftCommand = "nft") -> None:
    """Delete our table (only ours), whether or not it is loaded: for tests and uninstall."""
    table = config.table
    script = f"table inet {table} {{}}\ndelete table inet {table}\n"
    _nft(nft, ["-f", "-"], f"removing table inet {table} failed", stdin=script)


def _refuse_everything(allowlist: Allowlist) -> None:
    """An allow entry of 0.0.0.0/0 or ::/0 would render a lock that locks nothing."""
    for i, destination in enumerate(allowlist.destinations):
        for network in destination.networks:
            if network.prefixlen == 0:
                raise FirewallError(
                    f"netlock.allow[{i}] ({destination.name}): {network} is every address; "
                    f"refused, nothing loaded", where=f"netlock.allow[{i}].addresses")


def _rule_counts(script: str) -> dict[str, int]:
    """Rules per chain in our own rendered script (one rule a line, each with a comment)."""
    counts: dict[str, int] = {}
    chain = None
    for line in script.splitlines():
        text = line.strip()
        if text.startswith("chain "):
            chain = text.split()[1]
            counts[chain] = 0
        elif chain and text == "}":
            chain = None
        elif chain and " comment " in text and not text.startswith("type "):
            counts[chain] += 1
    return counts


def _argv(nft: NftCommand) -> list[str]:
    return [nft] if isinstance(nft, str) else list(nft)


def _nft(nft: NftCommand, args: list[str], failure: str, stdin: str | None = None) -> str:
    argv = _argv(nft) + args
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                              timeout=NFT_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FirewallError(f"{failure}: cannot run {' '.join(argv)}: {e}") from None
    if proc.returncode != 0:
        stderr = proc.stderr.strip()
        raise FirewallError(f"{failure}: {stderr or f'nft exited {proc.returncode}'}",
                            stderr=stderr)
    return proc.stdout


def _run_json(nft: NftCommand, args: list[str]) -> dict[str, Any]:
    out = _nft(nft, args, f"nft {' '.join(args)} failed")
    try:
        data = json.loads(out)
    except json.JSONDecodeError as e:
        raise FirewallError(f"nft {' '.join(args)} printed no JSON ({e})") from None
    if not isinstance(data, dict):
        raise FirewallError(f"nft {' '.join(args)} printed {type(data).__name__}, not an object")
    return data
