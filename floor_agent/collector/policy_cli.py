"""`floor-agent collector policy ...`: the workstations' central USB and network policy.

  set-group GROUP --rules FILE [--allow FILE] --reason TEXT   a group's rules and allowlist
  assign AGENT GROUP --reason TEXT                            move a workstation to a group
  approve (--event-id N | --device-id V:P --hash H [--serial S]) --scope SCOPE --reason TEXT
          [--expires UTC]                                     a device exception
  withdraw EXCEPTION_ID --reason TEXT                         end an exception early
  show [GROUP] | show --agent AGENT                           groups, or one workstation's document
  exceptions [--active]                                       device exceptions
  log [--limit N] [--group G] [--agent A]                     the change log with before/after
  key                                                         the policy public key to pin

Each change goes through policy_admin (the same checks and store as the API) and is an event on
the collector's own trail (`policy.*`), written through its spool like `collector apikey`
changes (self_audit.run_audited) and delivered by the running collector. The actor recorded
is "cli:<login name>".
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from floor_agent.config.cli_option import add_config_option

if TYPE_CHECKING:
    from floor_agent.collector.self_audit import OwnAudit
    from floor_agent.store.interface import Store

DEFAULT_CONFIG = Path("/etc/floor-agent/collector.yaml")


def actor() -> str:
    try:
        name = os.environ.get("SUDO_USER") or getpass.getuser()
    except (KeyError, OSError):
        name = str(os.getuid())
    return f"cli:{name}"


def _config(args: argparse.Namespace) -> Any:
    from floor_agent.collector.config import CollectorConfig
    from floor_agent.config import load_role

    return load_role(args.config, CollectorConfig)


def _audited(args: argparse.Namespace, change: Any) -> int:
    """run_audited, with a refused lookup (unknown group, agent, exception) as an error too."""
    from floor_agent.collector import self_audit

    def action(args: argparse.Namespace, store: Store, own: OwnAudit, now: str) -> int:
        try:
            return int(change(store, own, now))
        except LookupError as exc:
            raise ValueError(str(exc).strip("'\"")) from None

    return self_audit.run_audited(args, action)


def read_allowlist(path: Path) -> Any:
    """A YAML file holding the allowlist: a list of destinations, or `allow:` / `netlock:
    allow:` as in workstation.yaml."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("netlock"), dict):
        data = data["netlock"]
    if isinstance(data, dict) and "allow" in data:
        data = data["allow"]
    return [] if data is None else data


def cmd_set_group(args: argparse.Namespace) -> int:
    from floor_agent.collector import policy_admin

    try:
        rules = args.rules.read_text()
        allow = read_allowlist(args.allow) if args.allow is not None else []
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def change(store: Store, own: OwnAudit, now: str) -> int:
        number = policy_admin.set_group(store, own, actor(), args.group, rules, allow,
                                        args.reason, now)
        print(f"group {args.group}: change {number}")
        return 0

    return _audited(args, change)


def cmd_assign(args: argparse.Namespace) -> int:
    from floor_agent.collector import policy_admin

    default = _config(args).collector.policy.default_group

    def change(store: Store, own: OwnAudit, now: str) -> int:
        number = policy_admin.assign(store, own, actor(), args.agent, args.group, args.reason,
                                     default, now)
        print(f"{args.agent} -> group {args.group}: change {number}")
        return 0

    return _audited(args, change)


def cmd_approve(args: argparse.Namespace) -> int:
    from floor_agent.collector import policy_admin

    device = None
    if args.event_id is None:
        if not args.device_id or not args.hash:
            print("error: give --event-id, or --device-id and --hash (and --serial)",
                  file=sys.stderr)
            return 2
        device = {"id": args.device_id, "hash": args.hash, "serial": args.serial or ""}

    def change(store: Store, own: OwnAudit, now: str) -> int:
        item = policy_admin.approve(store, own, actor(), args.scope, args.reason,
                                    event_id=args.event_id, device=device,
                                    expires_at=args.expires, now=now)
        print(f"exception {item['exception_id']} ({item['scope']}): {item['rule']}; change "
              f"{item['approved_change']}; expires {item['expires_at'] or 'never'}")
        return 0

    return _audited(args, change)


def cmd_withdraw(args: argparse.Namespace) -> int:
    from floor_agent.collector import policy_admin

    def change(store: Store, own: OwnAudit, now: str) -> int:
        number = policy_admin.withdraw(store, own, actor(), args.exception_id, args.reason,
                                       now)
        print(f"exception {args.exception_id} withdrawn: change {number}")
        return 0

    return _audited(args, change)


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def _read(args: argparse.Namespace, show: Any) -> int:
    from floor_agent.store import open_store

    config = _config(args)
    store = open_store(config.collector.resolved_database_url())
    try:
        return int(show(store, config))
    finally:
        store.close()


def cmd_show(args: argparse.Namespace) -> int:
    from floor_agent.collector import policy_admin, self_audit
    from floor_agent.protocol import policy as wire

    def show(store: Store, config: Any) -> int:
        default = config.collector.policy.default_group
        if args.agent:
            document = policy_admin.document_for(store, args.agent, default,
                                                 self_audit.agent_id(config))
            if document is None:
                print(f"error: no policy for {args.agent!r} yet (its group has no rules)",
                      file=sys.stderr)
                return 1
            _print_json(wire.document_to_json(document))
            return 0
        groups = store.policy_groups()
        if args.group:
            groups = [g for g in groups if g["group"] == args.group]
            if not groups:
                print(f"error: no group {args.group!r}", file=sys.stderr)
                return 1
        _print_json({"default_group": default, "change": store.policy_change_number(),
                     "groups": groups})
        return 0

    return _read(args, show)


def cmd_exceptions(args: argparse.Namespace) -> int:
    def show(store: Store, config: Any) -> int:
        _print_json(store.policy_exceptions(args.active))
        return 0

    return _read(args, show)


def cmd_log(args: argparse.Namespace) -> int:
    def show(store: Store, config: Any) -> int:
        _print_json(store.policy_changes(args.limit, args.group, args.agent))
        return 0

    return _read(args, show)


def cmd_key(args: argparse.Namespace) -> int:
    from floor_agent.audit.keys import public_key_b64
    from floor_agent.collector import policy_key

    try:
        key = policy_key.load(_config(args).collector)
    except policy_key.PolicyKeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(public_key_b64(key))
    print(f"# policy key {policy_key.fingerprint(key)}: workstations pin it at enrollment",
          file=sys.stderr)
    return 0


def _limit(value: str) -> int:
    number = int(value)
    if not 1 <= number <= 10_000:
        raise argparse.ArgumentTypeError("expected 1 to 10000")
    return number


def add_parsers(collector_subparsers: argparse._SubParsersAction,  # type: ignore[type-arg]
                default_config: Path = DEFAULT_CONFIG) -> None:
    """Add `policy ...` under `floor-agent collector`."""
    policy = collector_subparsers.add_parser(
        "policy", help="the workstations' USB and network policy, device exceptions")
    actions = policy.add_subparsers(dest="policy_action", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        return add_config_option(actions.add_parser(name, help=help_), default_config)

    p = add("set-group", "set a group's USB rules and netlock allowlist")
    p.add_argument("group")
    p.add_argument("--rules", type=Path, required=True,
                   help="USBGuard rules file (checked line by line)")
    p.add_argument("--allow", type=Path,
                   help="YAML: the allowlist (a list, or allow: / netlock: allow: as in "
                        "workstation.yaml); none: an empty allowlist")
    p.add_argument("--reason", required=True, help="why (recorded with the change)")
    p.set_defaults(func=cmd_set_group)

    p = add("assign", "move a workstation to a group")
    p.add_argument("agent")
    p.add_argument("group")
    p.add_argument("--reason", required=True)
    p.set_defaults(func=cmd_assign)

    p = add("approve", "approve a blocked device for a workstation, a group or all")
    p.add_argument("--event-id", type=int, help="row id of its usb.blocked/usb.rejected event")
    p.add_argument("--device-id", help="VVVV:PPPP (without --event-id)")
    p.add_argument("--serial", help="the device's serial (without --event-id)")
    p.add_argument("--hash", help="USBGuard's device hash (without --event-id)")
    p.add_argument("--scope", required=True, help="agent:<id>, group:<name> or all")
    p.add_argument("--reason", required=True)
    p.add_argument("--expires", help="UTC time it ends, e.g. 2026-12-31T18:00:00Z")
    p.set_defaults(func=cmd_approve)

    p = add("withdraw", "end a device exception before its expiry")
    p.add_argument("exception_id")
    p.add_argument("--reason", required=True)
    p.set_defaults(func=cmd_withdraw)

    p = add("show", "groups (JSON), or the document one workstation gets")
    p.add_argument("group", nargs="?")
    p.add_argument("--agent", help="print this workstation's current document")
    p.set_defaults(func=cmd_show)

    p = add("exceptions", "device exceptions (JSON)")
    p.add_argument("--active", action="store_true", help="only those in force")
    p.set_defaults(func=cmd_exceptions)

    p = add("log", "the change log, newest first, with before/after (JSON)")
    p.add_argument("--limit", type=_limit, default=50)
    p.add_argument("--group")
    p.add_argument("--agent")
    p.set_defaults(func=cmd_log)

    p = add("key", "print the policy public key (base64) to pin on workstations")
    p.set_defaults(func=cmd_key)
