"""`floor-agent retention sweep`: the daily sweep the systemd timer runs.

Exit codes: 0 every server swept (or dry run listed), 1 residue, a failed removal or a lost
connection, 2 a bad config, an unknown --server, or a root / share the sweep refused.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from floor_agent.config import ConfigError, load_role
from floor_agent.retention.config import RetentionConfig

if TYPE_CHECKING:
    from floor_agent.retention.sweep import SweepResult

EXIT_REFUSED = 2  # sweep.EXIT_REFUSED; paramiko loads only when a sweep runs

log = logging.getLogger("floor_agent.retention")


def _summary(result: SweepResult) -> str:
    p = result.plan
    head = f"retention {result.server} (sweep {result.sweep_id})"
    if result.refused is not None:
        return f"{head}: REFUSED: {result.refused}"
    if result.error is not None and p is None:
        return f"{head}: FAILED: {result.error}"
    if result.error is not None:
        return (f"{head}: FAILED after removing {len(result.removed)} files: {result.error}; "
                "run again to complete")
    planned = len(p.deletions) if p is not None else 0
    text = (f"{head}: removed {len(result.removed)} of {planned} planned files "
            f"({sum(d.size for d in result.removed)} bytes), {len(result.absent)} already gone")
    if result.residue:
        text += f"; RESIDUE: {len(result.residue)} files still present"
    return text


def cmd_sweep(args: argparse.Namespace) -> int:
    from floor_agent.retention.sweep import sweep_server

    try:
        config = load_role(args.config, RetentionConfig)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return EXIT_REFUSED
    assert isinstance(config, RetentionConfig)
    servers = config.retention.servers
    if args.server is not None:
        servers = [s for s in servers if s.name == args.server]
        if not servers:
            names = ", ".join(s.name for s in config.retention.servers)
            print(f"{args.config}: no server named {args.server!r} (configured: {names})",
                  file=sys.stderr)
            return EXIT_REFUSED
    if args.dry_run:
        results = [sweep_server(s, None, config.audit.state_dir, dry_run=True, force=args.force,
                                out=sys.stdout) for s in servers]
        for result in results:
            if result.refused or result.error:
                print(_summary(result), file=sys.stderr)
        return max(r.exit_code for r in results)

    from floor_agent.audit.agent import AuditAgent
    from floor_agent.audit.keys import KeyFileError

    try:
        agent = AuditAgent(config.audit, "retention")
    except KeyFileError as e:
        print(f"retention: {e}", file=sys.stderr)
        return EXIT_REFUSED
    agent.start()
    results = []
    try:
        for server in servers:
            result = sweep_server(server, agent.emit, config.audit.state_dir, force=args.force)
            print(_summary(result), file=sys.stderr if result.exit_code else sys.stdout)
            results.append(result)
    finally:
        agent.stop(drain_seconds=args.drain_seconds, reason="sweep finished")
    return max(r.exit_code for r in results)


def add_parsers(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`retention sweep ...` under the caller's subcommands."""
    retention = subparsers.add_parser("retention", help="image retention over SFTP")
    sub = retention.add_subparsers(dest="retention_command", required=True)
    p = sub.add_parser("sweep", help="delete the images of jobs past their retention")
    p.add_argument("--config", required=True, help="retention.yaml")
    p.add_argument("--dry-run", action="store_true", help="list what would go; delete nothing")
    p.add_argument("--force", action="store_true",
                   help="go on when more than max_share of a root's files would go")
    p.add_argument("--server", help="only this server (its name in the config)")
    p.add_argument("--drain-seconds", type=float, default=15.0,
                   help="how long to wait for the collector to take the receipts")
    p.set_defaults(func=cmd_sweep)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="floor-agent")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(["retention", *raw] if raw[:1] != ["retention"] else raw)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
