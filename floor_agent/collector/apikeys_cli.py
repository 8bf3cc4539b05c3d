"""`floor-agent collector apikey create|list|revoke`: scoped, expiring API keys.

Every create and revoke is an event on the collector's own audit trail (`apikey.created`,
`apikey.revoked`: name, scopes, expiry, by whom; never the key), written through its spool
like `collector user` changes (self_audit.run_audited) and delivered by the running collector.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from floor_agent.collector.api_keys import SCOPE_HELP, SCOPES
from floor_agent.config.cli_option import add_config_option
from floor_agent.protocol.kinds.collector import CollectorKind

if TYPE_CHECKING:
    from floor_agent.collector.self_audit import OwnAudit
    from floor_agent.store.interface import Store

DEFAULT_CONFIG = Path("/etc/floor-agent/collector.yaml")
CLI_ACTOR = "cli"
DEFAULT_EXPIRY_DAYS = 90


def _days(value: str) -> int:
    """--expires-days: 1 to 3650."""
    days = int(value)
    if not 1 <= days <= 3650:
        raise argparse.ArgumentTypeError("expected 1 to 3650 days")
    return days


def cmd_create(args: argparse.Namespace) -> int:
    from floor_agent.collector import api_keys, core, self_audit
    from floor_agent.protocol.event import parse_timestamp, utc_timestamp

    scopes = [s for s in SCOPES if s in set(args.scope)]
    if args.never_expires and args.expires_days is not None:
        print("error: --never-expires and --expires-days exclude each other", file=sys.stderr)
        return 2
    days = None if args.never_expires else (args.expires_days or DEFAULT_EXPIRY_DAYS)

    def action(args: argparse.Namespace, store: Store, own: OwnAudit, now: str) -> int:
        expires_at = None if days is None else utc_timestamp(
            parse_timestamp(now) + timedelta(days=days))
        key = core.create_api_key(store, args.name, scopes, expires_at)
        own.emit(CollectorKind.APIKEY_CREATED, args.name, "notice", name=args.name, scopes=scopes,
                 expires_at=expires_at, by=CLI_ACTOR)
        print(key)
        print(f"# API key {args.name!r}: scopes {api_keys.stored_scopes(scopes)}, expires "
              f"{expires_at or 'never'}; shown once, stored only hashed", file=sys.stderr)
        return 0

    return self_audit.run_audited(args, action)


def cmd_list(args: argparse.Namespace) -> int:
    from floor_agent.collector import api_keys, self_audit

    def action(args: argparse.Namespace, store: Store, own: OwnAudit, now: str) -> int:
        lines = [api_keys.list_line(api_keys.record(row), now)
                 for row in store.list_api_keys()]
        header = {"name": "name", "scopes": "scopes", "state": "state", "created": "created",
                  "expires": "expires", "last_used": "last used", "revoked": "revoked"}
        widths = {col: max(len(line[col]) for line in [header, *lines]) for col in header}
        for line in [header, *lines]:
            print("  ".join(line[col].ljust(widths[col]) for col in header).rstrip())
        if any(line["scopes"].startswith("legacy") for line in lines):
            print("# legacy: made before scopes, it keeps every scope; replace it with a "
                  "scoped key and revoke it", file=sys.stderr)
        return 0

    return self_audit.run_audited(args, action)


def cmd_revoke(args: argparse.Namespace) -> int:
    from floor_agent.collector import self_audit

    def action(args: argparse.Namespace, store: Store, own: OwnAudit, now: str) -> int:
        revoked = store.revoke_api_key(args.name, now)
        if not revoked:
            raise ValueError(f"name: no unrevoked API key named {args.name!r}")
        own.emit(CollectorKind.APIKEY_REVOKED, args.name, "notice", name=args.name, keys=revoked,
                 by=CLI_ACTOR)
        print(f"revoked API key {args.name!r}; it is refused from now on")
        return 0

    return self_audit.run_audited(args, action)


def add_parsers(collector_subparsers: argparse._SubParsersAction,  # type: ignore[type-arg]
                default_config: Path = DEFAULT_CONFIG) -> None:
    """Add `apikey ...` under `floor-agent collector`."""
    apikey = collector_subparsers.add_parser("apikey", help="API keys for scripts and "
                                                            "integrations")
    actions = apikey.add_subparsers(dest="key_action", required=True)

    p = add_config_option(actions.add_parser("create", help="print a new API key (shown once)"),
                          default_config)
    p.add_argument("--name", required=True,
                   help="who uses it (recorded on acknowledgements); unique among unrevoked "
                        "keys")
    p.add_argument("--scope", action="append", required=True, choices=SCOPES,
                   help="repeatable: " + "; ".join(f"{s}: {h}" for s, h in SCOPE_HELP.items()))
    p.add_argument("--expires-days", type=_days, default=None,
                   help=f"valid for this many days (default {DEFAULT_EXPIRY_DAYS})")
    p.add_argument("--never-expires", action="store_true", help="no expiry (not advised)")
    p.set_defaults(func=cmd_create)
    p = add_config_option(actions.add_parser("list", help="name, scopes, created, expires, last "
                                             "used, revoked (never the key)"), default_config)
    p.set_defaults(func=cmd_list)
    p = add_config_option(actions.add_parser("revoke", help="refuse a key from now on"),
                          default_config)
    p.add_argument("name", help="the key's name")
    p.set_defaults(func=cmd_revoke)
