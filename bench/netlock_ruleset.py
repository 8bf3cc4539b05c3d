"""Netlock ruleset evaluator: time to judge a generated 1,000-rule ruleset.

    .venv/bin/python bench/netlock_ruleset.py              # ~1 min: 20 runs per figure
    .venv/bin/python bench/netlock_ruleset.py --rules 200 --runs 5

Prints one line per figure on stdout; progress goes to stderr. Needs root and nft: the ruleset
is loaded with `nft -f` in a throwaway network namespace (`unshare -n`) and read back with
`nft -j list ruleset`, so the evaluator reads exactly the JSON the `ruleset` fact holds.

The ruleset (table inet bench, output chain, policy drop): loopback and established first, then
--rules rules in the shapes an allowlist produces (`ip daddr A tcp dport { 443, 8443 } accept`,
`ip6 daddr B udp dport 53 accept`), every 25th a jump into a regular chain of 5 rules with a
return, a named set of 100 file servers (`ip daddr @files tcp dport 445 accept`), a verdict map
on the destination port and a final reject. The allowlist has exactly those destinations and
ports.

1. netlock_ruleset_evaluate: `ruleset.evaluate(listing, "output", v)` for IPv4 and IPv6 (parse
   included), --runs times after one discarded warm-up; p50, p95, max of the pair.
2. netlock_ruleset_judge: `checks.judge_hook` for input, forward and output, what the three
   firewall checks do each verification round.
Sanity, before any timing: the judge says every hook is closed; with one hole rule
(`tcp dport 53 accept`) inserted in the middle it says the output hook is open for IPv4 and
IPv6 and names that rule; `admits` is right for one allowed and one refused packet per shape.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from typing import Any

from netlock import note, p95  # bench/netlock.py: the same report helpers

from floor_agent.netlock import ruleset
from floor_agent.netlock.allowlist import Allowlist, build
from floor_agent.netlock.checks import judge_hook
from floor_agent.netlock.config import NetlockConfig

HOLE = "tcp dport 53 accept"


def v4(i: int) -> str:
    return f"10.{20 + i // 250}.{i % 250}.1"


def v6(i: int) -> str:
    return f"fd00:be:{i:x}::1"


def generate(rules: int, hole: bool = False) -> tuple[str, NetlockConfig]:
    """The nft text of the ruleset and the netlock config whose allowlist it implements."""
    body = ['oif "lo" accept', "ct state established,related accept", "ct state invalid drop"]
    chains: list[str] = []
    allow: list[dict[str, Any]] = []
    files = [f"10.19.{i // 250}.{i % 250 + 1}" for i in range(100)]
    for i in range(rules):
        if hole and i == rules // 2:
            body.append(HOLE)
        if i % 25 == 24:
            name = f"sub{i}"
            inner = [f"ip daddr {v4(i * 10 + k)} tcp dport 8080 accept" for k in range(4)]
            chains.append(f" chain {name} {{\n  " + "\n  ".join([*inner, "return"]) + "\n }")
            allow += [{"name": f"sub{i}-{k}", "addresses": [v4(i * 10 + k)], "tcp": [8080]}
                      for k in range(4)]
            body.append(f"meta l4proto tcp jump {name}")
        elif i % 2:
            body.append(f"ip daddr {v4(i)} tcp dport {{ 443, 8443 }} accept")
            allow.append({"name": f"web{i}", "addresses": [v4(i)], "tcp": [443, 8443]})
        else:
            body.append(f"ip6 daddr {v6(i)} udp dport 53 accept")
            allow.append({"name": f"dns{i}", "addresses": [v6(i)], "udp": [53]})
    body += ["ip daddr @files tcp dport 445 accept",
             f"ip daddr {v4(rules * 20)} tcp dport vmap {{ 22 : accept, 23 : drop }}",
             "counter reject with icmpx admin-prohibited"]
    allow.append({"name": "files", "addresses": files, "tcp": [445]})
    allow.append({"name": "ssh", "addresses": [v4(rules * 20)], "tcp": [22]})
    text = ("table inet bench {\n set files { type ipv4_addr; elements = { "
            + ", ".join(files) + " } }\n" + "\n".join(chains)
            + "\n chain output {\n  type filter hook output priority 0; policy drop;\n  "
            + "\n  ".join(body) + "\n }\n"
            + " chain input {\n  type filter hook input priority 0; policy drop;\n"
            + '  iif "lo" accept\n  ct state established,related accept\n }\n'
            + " chain forward {\n  type filter hook forward priority 0; policy drop;\n }\n}\n")
    return text, NetlockConfig(enabled=True, allow=allow)


def listing(text: str) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".nft") as f:
        f.write(text)
        f.flush()
        proc = subprocess.run(["unshare", "-n", "sh", "-c",
                               f"nft -f {f.name} && nft -j list ruleset"],
                              capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"nft refused the generated ruleset: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def sanity(data: dict[str, Any], holed: dict[str, Any], allowlist: Allowlist,
           rules: int) -> None:
    for hook in ("input", "forward", "output"):
        judged = judge_hook(data, hook, allowlist)
        if not judged.closed:
            raise SystemExit(f"sanity: {hook} judged open: {judged.bad[:3]}")
    judged = judge_hook(holed, "output", allowlist)
    if judged.open_versions != (4, 6) or not any(HOLE in line for line in judged.bad):
        raise SystemExit(f"sanity: the hole was not found: {judged.bad[:3]}")
    r4, r6 = (ruleset.evaluate(data, "output", v) for v in (4, 6))
    checks = [
        (ruleset.admits(r4, 6, v4(1), 443, "eth0"), True),
        (ruleset.admits(r4, 6, v4(1), 444, "eth0"), False),
        (ruleset.admits(r6, 17, v6(0), 53, "eth0"), True),
        (ruleset.admits(r6, 6, v6(0), 53, "eth0"), False),
        (ruleset.admits(r4, 6, v4(24 * 10 + 3), 8080, "eth0"), True),
        (ruleset.admits(r4, 6, v4(24 * 10 + 4), 8080, "eth0"), False),
        (ruleset.admits(r4, 6, "10.19.0.50", 445, "eth0"), True),
        (ruleset.admits(r4, 6, v4(rules * 20), 23, "eth0"), False),
        (ruleset.admits(r4, 6, "192.0.2.1", 443, "eth0"), False),
    ]
    wrong = [i for i, (got, want) in enumerate(checks) if got != want]
    if wrong:
        raise SystemExit(f"sanity: admits wrong for checks {wrong}")


def timed(label: str, runs: int, fn: Any) -> list[float]:
    fn()  # warm-up, discarded
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    note(f"{label}: {runs} runs done")
    return samples


def report(name: str, samples: list[float], rules: int, extra: str = "") -> None:
    print(f"{name}_p50: {statistics.median(samples):.1f} ms (n={len(samples)}, p95 "
          f"{p95(samples):.1f} ms, max {max(samples):.1f} ms, {rules} rules{extra})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    text, config = generate(args.rules)
    allowlist = build(config, resolve=lambda name: [])
    note(f"loading {args.rules} rules with nft in a throwaway namespace")
    data = listing(text)
    holed = listing(generate(args.rules, hole=True)[0])
    loaded = sum(1 for item in data["nftables"] if "rule" in item)
    note(f"{loaded} rules loaded; sanity checks")
    sanity(data, holed, allowlist, args.rules)

    def evaluate() -> None:
        for version in (4, 6):
            ruleset.evaluate(data, "output", version)

    def judge() -> None:
        for hook in ("input", "forward", "output"):
            judge_hook(data, hook, allowlist)

    report("netlock_ruleset_evaluate", timed("evaluate", args.runs, evaluate), loaded,
           ", output hook, IPv4 + IPv6")
    report("netlock_ruleset_judge", timed("judge", args.runs, judge), loaded,
           ", input + forward + output against the allowlist; sanity ok")


if __name__ == "__main__":
    main()
