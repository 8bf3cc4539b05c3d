"""`floor-agent collector user create|list|disable|enable|reset`: the first admin and recovery.

There is no default user: `user create --role admin` prints a one-time password, once.
Changes are recorded on the collector's own audit trail through its spool (delivered by the
running collector), like any other change made on the collector host.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from floor_agent.config.cli_option import add_config_option
from floor_agent.dashboard.users import ROLES

if TYPE_CHECKING:
    from floor_agent.collector.self_audit import OwnAudit
    from floor_agent.store.interface import Store

# The store, the argon2 hasher and FastAPI load only when a user command runs: this module is
# imported whenever `floor-agent` builds its parser, by every agent's start too.

DEFAULT_CONFIG = Path("/etc/floor-agent/collector.yaml")
CLI_ACTOR = "cli"


def cmd_create(args: argparse.Namespace) -> int:
    from floor_agent.collector import self_audit
    from floor_agent.dashboard import user_admin

    def action(args: argparse.Namespace, store: Store, own: OwnAudit, now: str) -> int:
        secret = user_admin.create(store, own, args.username, args.role,
                                   CLI_ACTOR, now)
        print(f"created {args.role} {args.username}; one-time password (shown once, must be "
              f"changed at first login):")
        print(secret)
        return 0

    return self_audit.run_audited(args, action)


def cmd_reset(args: argparse.Namespace) -> int:
    from floor_agent.collector import self_audit
    from floor_agent.dashboard import user_admin

    def action(args: argparse.Namespace, store: Store, own: OwnAudit, now: str) -> int:
        secret = user_admin.reset(store, own, args.username, CLI_ACTOR, now)
        print(f"reset {args.username}; one-time password (shown once):")
        print(secret)
        return 0

    return self_audit.run_audited(args, action)


def cmd_disable(args: argparse.Namespace) -> int:
    from floor_agent.collector import self_audit
    from floor_agent.dashboard import user_admin

    def action(args: argparse.Namespace, store: Store, own: OwnAudit, now: str) -> int:
        user_admin.set_disabled(store, own, args.username, True, CLI_ACTOR,
                                now)
        print(f"disabled {args.username}; their sessions ended")
        return 0

    return self_audit.run_audited(args, action)


def cmd_enable(args: argparse.Namespace) -> int:
    from floor_agent.collector import self_audit
    from floor_agent.dashboard import user_admin

    def action(args: argparse.Namespace, store: Store, own: OwnAudit, now: str) -> int:
        user_admin.set_disabled(store, own, args.username, False, CLI_ACTOR,
                                now)
        print(f"enabled {args.username}")
        return 0

    return self_audit.run_audited(args, action)


def cmd_list(args: argparse.Namespace) -> int:
    from floor_agent.collector import self_audit

    def action(args: argparse.Namespace, store: Store, own: OwnAudit, now: str) -> int:
        users = store.list_users()
        print(f"{'username':<24} {'role':<8} {'state':<10} created")
        for user in users:
            state = "disabled" if user["disabled"] else (
                "must-change" if user["must_change"] else "active")
            if user["locked_until"] and user["locked_until"] > now:
                state = "locked"
            print(f"{user['username']:<24} {user['role']:<8} {state:<10} {user['created_at']}")
        return 0

    return self_audit.run_audited(args, action)


def add_parsers(collector_subparsers: argparse._SubParsersAction,  # type: ignore[type-arg]
                default_config: Path = DEFAULT_CONFIG) -> None:
    """Add `user ...` under `floor-agent collector`."""
    user = collector_subparsers.add_parser("user", help="dashboard users")
    actions = user.add_subparsers(dest="user_action", required=True)

    p = add_config_option(actions.add_parser("create", help="create a user; prints a one-time "
                                                            "password"), default_config)
    p.add_argument("--username", required=True)
    p.add_argument("--role", required=True, choices=ROLES)
    p.set_defaults(func=cmd_create)
    p = add_config_option(actions.add_parser("list", help="list users"), default_config)
    p.set_defaults(func=cmd_list)
    for name, func, text in (("disable", cmd_disable, "disable a user and end their sessions"),
                             ("enable", cmd_enable, "enable a disabled user"),
                             ("reset", cmd_reset, "new one-time password; lifts a lockout")):
        p = add_config_option(actions.add_parser(name, help=text), default_config)
        p.add_argument("--username", required=True)
        p.set_defaults(func=func)
