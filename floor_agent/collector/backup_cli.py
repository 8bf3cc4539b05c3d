"""`floor-agent collector backup` and `collector restore`: parse, load config, call backup.py.

Exit status: 0 done and verified, 1 verification failed (the file or the restored store does not
check out), 2 refused or bad input (collector running, non-empty store without --force, no
manifest, unusable backup directory, bad config).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from floor_agent.config import CollectorConfig, load_config

DEFAULT_CONFIG = "/etc/floor-agent/collector.yaml"


def _config(args: argparse.Namespace) -> CollectorConfig:
    config = load_config(args.config, "collector")
    assert isinstance(config, CollectorConfig)
    return config


def cmd_backup(args: argparse.Namespace) -> int:
    from floor_agent.collector.backup import backup

    result = backup(_config(args))
    if result.ok:
        print(f"backup {result.path} verified: {result.agents} agents, {result.events} events, "
              f"{result.bytes} bytes, sha256 {result.sha256}")
        for name in result.pruned:
            print(f"  pruned {name}")
        return 0
    print(f"backup FAILED: {result.reason}", file=sys.stderr)
    return 1 if result.path is not None else 2


def cmd_restore(args: argparse.Namespace) -> int:
    from floor_agent.collector.backup import restore

    result = restore(_config(args), Path(args.source), args.force)
    if result.ok:
        print(f"restored {result.source.name} into {result.target} and verified: "
              f"{result.agents} agents, {result.events} events")
        return 0
    print(f"restore {'refused' if result.refused else 'FAILED'}: {result.reason}",
          file=sys.stderr)
    return 2 if result.refused else 1


def add_parsers(collector_subparsers: Any) -> None:
    """Add `backup` and `restore` under `floor-agent collector`."""
    p = collector_subparsers.add_parser(
        "backup", help="online backup of the store, verified by restoring it")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="collector.yaml")
    p.set_defaults(func=cmd_backup)
    p = collector_subparsers.add_parser(
        "restore", help="replace the store with a verified backup (collector stopped)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="collector.yaml")
    p.add_argument("--from", dest="source", required=True, metavar="BACKUP",
                   help="the backup file (its .json manifest must be beside it)")
    p.add_argument("--force", action="store_true",
                   help="replace a store that already holds events")
    p.set_defaults(func=cmd_restore)
