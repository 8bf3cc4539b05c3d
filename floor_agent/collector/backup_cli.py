"""`floor-agent collector backup`, `collector restore` and `collector anchor show|endorse-existing`:
parse, load config, call backup.py / anchor.py / verify.py.

Exit status: 0 done and verified, 1 verification failed (the file or the restored store does not
check out, a forged manifest or key), 2 refused or bad input (collector running, non-empty store
without --force, no manifest, no anchor key, unusable backup directory, bad config).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from floor_agent.collector.config import CollectorConfig
from floor_agent.config import load_role
from floor_agent.protocol.kinds.collector import CollectorKind

DEFAULT_CONFIG = "/etc/floor-agent/collector.yaml"


def _config(args: argparse.Namespace) -> CollectorConfig:
    config = load_role(args.config, CollectorConfig)
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

    result = restore(_config(args), Path(args.source), args.force, args.anchor_key,
                     args.allow_unanchored)
    if result.ok:
        print(f"restored {result.source.name} into {result.target} and verified against "
              f"{result.anchor}: {result.agents} agents, {result.events} events")
        return 0
    if result.refused:
        print(f"restore refused: {result.reason}", file=sys.stderr)
        return 2
    print(f"restore FAILED, nothing verified{' against ' + result.anchor if result.anchor else ''}"
          f": {len(result.problems)} problem(s)", file=sys.stderr)
    for line in result.problems:
        print(f"  {line}", file=sys.stderr)
    return 1


def cmd_anchor_show(args: argparse.Namespace) -> int:
    """Print the anchor public key, for an auditor to pin apart from the collector's files."""
    from floor_agent.collector import anchor

    try:
        trusted = anchor.trusted_key(_config(args))
    except anchor.AnchorError as exc:
        print(f"anchor: {exc}", file=sys.stderr)
        return 2
    from floor_agent.audit.keys import public_key_b64

    print(public_key_b64(trusted.key))
    print(f"# anchor {trusted.key_id}, from {trusted.source}; pin it as collector."
          f"anchor_public_key or pass it to verify/restore --anchor-key", file=sys.stderr)
    return 0


def cmd_anchor_endorse(args: argparse.Namespace) -> int:
    """The one-time upgrade of a store from before the anchor; recorded on the own trail."""
    from floor_agent.collector import anchor, self_audit
    from floor_agent.collector.verify import endorse_existing
    from floor_agent.store import open_store

    config = _config(args)
    try:
        signer = anchor.load(config)
        trusted = anchor.trusted_key(config, args.anchor_key)
    except anchor.AnchorError as exc:
        print(f"anchor: {exc}", file=sys.stderr)
        return 2
    store = open_store(config.collector.resolved_database_url())
    try:
        outcome = endorse_existing(store, signer, trusted.key)
    finally:
        store.close()
    writer = self_audit.open_writer(config)
    try:
        writer.emit(CollectorKind.ANCHOR_ENDORSE, "agent keys",
                    "warning" if outcome.refused else "notice", ok=not outcome.refused,
                    anchor=signer.key_id, endorsed=outcome.endorsed,
                    refused=outcome.refused[:50])
    finally:
        writer.close()
    if outcome.refused:
        print("endorse-existing refused: the store does not verify; nothing endorsed:",
              file=sys.stderr)
        for line in outcome.refused:
            print(f"  {line}", file=sys.stderr)
        return 1
    for item in outcome.endorsed:
        print(f"endorsed {item['agent_id']} ({item['role']}) key {item['public_key']}")
    print(f"{len(outcome.endorsed)} key(s) endorsed by anchor {signer.key_id}; compare each key "
          f"with the agent's own key file", file=sys.stderr)
    return 0


def add_parsers(collector_subparsers: Any) -> None:
    """Add `backup`, `restore` and `anchor` under `floor-agent collector`."""
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
    p.add_argument("--anchor-key", metavar="KEY_OR_FILE",
                   help="anchor public key to check against (base64 or a file); default: "
                        "config anchor_public_key, else anchor.pub")
    p.add_argument("--allow-unanchored", action="store_true",
                   help="accept a backup from before the anchor (unsigned manifest, keys "
                        "without endorsement); forged signatures are refused all the same")
    p.set_defaults(func=cmd_restore)
    p = collector_subparsers.add_parser(
        "anchor", help="the trust anchor: show its public key, endorse an older store's keys")
    anchor_sub = p.add_subparsers(dest="anchor_action", required=True)
    p = anchor_sub.add_parser("show", help="print the anchor public key (base64)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="collector.yaml")
    p.set_defaults(func=cmd_anchor_show)
    p = anchor_sub.add_parser(
        "endorse-existing", help="once, after upgrading: verify every chain, then endorse the "
                                 "keys an older release enrolled")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="collector.yaml")
    p.add_argument("--anchor-key", metavar="KEY_OR_FILE",
                   help="anchor public key to check against (default as for verify)")
    p.set_defaults(func=cmd_anchor_endorse)
