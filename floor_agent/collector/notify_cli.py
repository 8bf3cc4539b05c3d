"""`floor-agent collector notify test|list`: try each channel now, see what waits.

`test` hands a test notification (type "test", id 0) straight to each channel (or one) with
the running collector's senders and secrets, and says for each whether the receiver took it;
each try is an event on the collector's own trail like any notification. `list` shows the
outbox's notifications not yet sent (pending: waiting for their receiver; folded: waiting for
their digest), with attempts and the last error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from floor_agent.config.cli_option import add_config_option
from floor_agent.protocol.kinds.collector import CollectorKind

if TYPE_CHECKING:
    from floor_agent.collector.self_audit import OwnAudit
    from floor_agent.store.interface import Store

DEFAULT_CONFIG = Path("/etc/floor-agent/collector.yaml")


def cmd_test(args: argparse.Namespace) -> int:
    from floor_agent.collector import self_audit
    from floor_agent.collector.config import CollectorConfig
    from floor_agent.collector.notify_format import document
    from floor_agent.collector.notify_senders import SecretError, SendError, make_senders
    from floor_agent.config import load_role

    settings = load_role(args.config, CollectorConfig).collector.notifications
    names = [args.channel] if args.channel else list(settings.channels)
    if args.channel and args.channel not in settings.channels:
        print(f"error: no channel {args.channel!r} in {args.config} (channels: "
              f"{', '.join(settings.channels) or 'none'})", file=sys.stderr)
        return 2
    if not names:
        print(f"{args.config}: no notification channels configured", file=sys.stderr)
        return 2
    try:
        senders = make_senders(settings)
    except SecretError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def action(args: argparse.Namespace, store: Store, own: OwnAudit, now: str) -> int:
        failures = 0
        for name in names:
            doc = document(0, "test", {"alert": {
                "id": 0, "kind": "notification.test", "severity": "notice", "agent_id": None,
                "site": None, "detail": f"a test of channel {name} from 'floor-agent "
                                        f"collector notify test'",
                "created_at": now, "source": None, "seq": None}}, now)
            try:
                senders[name].send(doc)
            except SendError as exc:
                failures += 1
                print(f"{name}: FAILED: {exc}")
                own.emit(CollectorKind.NOTIFICATION_FAILED, f"test of {name}", "warning",
                         notification_id=0, channel=name, type="test", alert_id=None,
                         attempts=1, error=str(exc), retry_at=None)
            else:
                print(f"{name}: taken by the receiver")
                own.emit(CollectorKind.NOTIFICATION_SENT, f"test of {name}", "info",
                         notification_id=0, channel=name, type="test", alert_id=None,
                         attempts=1, send_ms=0)
        for sender in senders.values():
            sender.close()
        return 1 if failures else 0

    return self_audit.run_audited(args, action)


def cmd_list(args: argparse.Namespace) -> int:
    from floor_agent.collector import self_audit

    def action(args: argparse.Namespace, store: Store, own: OwnAudit, now: str) -> int:
        rows = [r for state in ("pending", "folded")
                for r in store.list_notifications(state, limit=args.limit)]
        for row in sorted(rows, key=lambda r: int(r["id"])):
            print(f"{row['id']}  {row['channel']}  {row['kind']}  alert "
                  f"{row['alert_id'] if row['alert_id'] is not None else '-'}  {row['state']}  "
                  f"created {row['created_at']}  attempts {row['attempts']}  next "
                  f"{row['next_at']}  {row['last_error'] or ''}".rstrip())
        counts = store.notification_counts()
        waiting = sum(n for (_, state), n in counts.items() if state in ("pending", "folded"))
        print(f"# {waiting} waiting, {sum(counts.values()) - waiting} sent or digested in the "
              f"outbox", file=sys.stderr)
        return 0

    return self_audit.run_audited(args, action)


def add_parsers(collector_subparsers: argparse._SubParsersAction,  # type: ignore[type-arg]
                default_config: Path = DEFAULT_CONFIG) -> None:
    """Add `notify test|list` under `floor-agent collector`."""
    notify = collector_subparsers.add_parser("notify", help="notification channels and "
                                                            "the outbox")
    actions = notify.add_subparsers(dest="notify_action", required=True)

    p = add_config_option(actions.add_parser("test", help="send a test notification to each "
                                                          "channel now"), default_config)
    p.add_argument("--channel", help="only this channel")
    p.set_defaults(func=cmd_test)
    p = add_config_option(actions.add_parser("list", help="notifications not yet sent"),
                          default_config)
    p.add_argument("--limit", type=int, default=1000)
    p.set_defaults(func=cmd_list)
