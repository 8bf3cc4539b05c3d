"""floor-agent <role|tool>: parse arguments, load config, call one module. Nothing else here."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import orjson

from floor_agent import __version__, service
from floor_agent.collector.config import CollectorConfig
from floor_agent.config import ConfigError, load_role
from floor_agent.config.cli_option import add_config_option
from floor_agent.protocol.kinds.collector import CollectorKind
from floor_agent.roles.config import AgentConfig, WorkstationConfig, check_file, load_config

log = logging.getLogger("floor_agent")
DEFAULT_CONFIG = {
    "collector": "/etc/floor-agent/collector.yaml",
    "workstation": "/etc/floor-agent/workstation.yaml",
    "door": "/etc/floor-agent/door.yaml",
    "cctv": "/etc/floor-agent/cctv.yaml",
}
AGENT_ROLES = ("workstation", "door", "cctv")
# Roles a token can enroll: the agents, and `retention` (sweeps report their receipts).
ENROLLABLE_ROLES = (*AGENT_ROLES, "retention")


def _collector_config(args: argparse.Namespace) -> CollectorConfig:
    return load_role(args.config, CollectorConfig)


def _agent_config(args: argparse.Namespace, role: str | None = None) -> AgentConfig:
    config = load_config(args.config, role)
    if isinstance(config, CollectorConfig):
        print(f"{args.config}: this is the collector's file; give an agent role's file "
              f"({', '.join(AGENT_ROLES)})", file=sys.stderr)
        raise SystemExit(2)
    return config


def cmd_config_check(args: argparse.Namespace) -> int:
    print(check_file(args.file))
    return 0


def cmd_collector_init(args: argparse.Namespace) -> int:
    from floor_agent.collector import anchor, policy_key, server, tls

    config = _collector_config(args)
    try:
        files = server.init(config, force_certs=args.renew_certificate)
    except (anchor.AnchorError, tls.JoinedCollectorError) as exc:
        # anchor.key is not the pinned anchor_public_key; a new CA asked of a joined collector
        print(f"init: {exc}", file=sys.stderr)
        return 2
    print(f"collector initialised in {config.collector.state_dir}")
    print(f"CA certificate for agents: {files.ca_cert} ({tls.fingerprint(files.ca_cert)})")
    trusted = anchor.trusted_key(config)
    print(f"trust anchor {trusted.key_id}: {trusted.source} (pin its key elsewhere: "
          f"'floor-agent collector anchor show'; keep anchor.key offline too)")
    signing = policy_key.load(config.collector)
    print(f"policy key {policy_key.fingerprint(signing)}: "
          f"{policy_key.key_dir(config.collector) / policy_key.PUBLIC_FILE} (workstations pin "
          f"it at enrollment)")
    return 0


def cmd_collector_run(args: argparse.Namespace) -> int:
    """Serve the collector with its dashboard (floor_agent/roles/run.py)."""
    from floor_agent.roles.run import run_collector

    config = _collector_config(args)
    service.setup_logging(config.log_level)
    return run_collector(config)


def cmd_collector_token(args: argparse.Namespace) -> int:
    from floor_agent.collector import core, server, tls

    config = _collector_config(args)
    store, _ = server.open_collector(config)
    try:
        ttl = args.ttl or config.collector.token_ttl_seconds
        token = core.create_token(store, args.role, ttl)
    finally:
        store.close()
    ca = tls.TlsFiles.in_dir(config.collector.state_dir).ca_cert
    print(token)
    print(f"# one-time token for a {args.role} agent, valid {ttl} s; give the agent the CA "
          f"file {ca} too", file=sys.stderr)
    return 0


def cmd_collector_verify(args: argparse.Namespace) -> int:
    """Every chain and agent key against the anchor public key from outside the store; the
    outcome is stored (integrity page, chain_state) and recorded on the own audit trail."""
    from floor_agent.collector import anchor, self_audit, server
    from floor_agent.collector.verify import (
        StoreVerification,
        record,
        verify_agent,
        verify_store,
    )
    from floor_agent.protocol.event import utc_timestamp

    config = _collector_config(args)
    try:
        trusted = anchor.trusted_key(config, args.anchor_key)
    except anchor.AnchorError as exc:
        print(f"verify: {exc}", file=sys.stderr)
        return 2
    seal = anchor.read_seal(config)
    store, _ = server.open_collector(config)
    try:
        if args.agent:
            result = StoreVerification([verify_agent(store, args.agent, trusted.key)], [],
                                       trusted.key_id)
        else:
            result = verify_store(store, trusted.key, seal)
        now = utc_timestamp()
        record(store, result, "collector verify", now)
    except KeyError:
        print(f"agent {args.agent!r} is not enrolled", file=sys.stderr)
        return 2
    finally:
        store.close()
    print(f"agent keys checked against anchor {trusted.key_id} from {trusted.source}; "
          + (f"heads against the seal of {seal.get('sealed_at')}" if seal and not args.agent
             else "no head seal yet" if not args.agent else "heads not checked (--agent)"))
    try:  # on the collector host: seal the heads that verified, for the next run
        signer = anchor.load(config)
        if signer.key_id == trusted.key_id and result.verified_heads():
            anchor.write_seal(config, signer, result.verified_heads(), now, "collector verify")
    except (anchor.AnchorError, OSError) as exc:
        print(f"heads not sealed: {exc}", file=sys.stderr)
    for item in result.agents:
        kinds = {p.kind for p in item.report.problems}
        state = "intact" if item.ok else "UNENDORSED" if kinds == {"unendorsed"} else "BROKEN"
        print(f"{item.agent_id}: {state}: {item.stored_events} events, signed checkpoint at "
              f"seq {item.checkpoint_seq}, key endorsement {item.endorsement}")
        for problem in item.report.problems:
            where = f" at seq {problem.seq}" if problem.seq is not None else ""
            print(f"  {problem.kind}{where}: {problem.detail}")
    for orphan in result.orphans:
        print(f"{orphan.agent_id}: ORPHAN: {orphan.line().split(': ', 1)[1]}")
    for line in result.findings:
        print(f"STORE: {line}")
    writer = self_audit.open_writer(config)
    try:
        writer.emit(CollectorKind.INTEGRITY_VERIFIED, "audit chains",
                    "notice" if result.ok else "warning",
                    who="collector verify", agents=len(result.agents), anchor=trusted.key_id,
                    failed=[a.agent_id for a in result.agents if not a.ok],
                    orphans=[o.agent_id for o in result.orphans])
    finally:
        writer.close()
    return 0 if result.ok else 1


def cmd_enroll(args: argparse.Namespace) -> int:
    from floor_agent.audit.agent import EnrollmentError, enroll

    config = _agent_config(args)
    try:
        agent_id = enroll(config.audit, config.role, args.token, args.ca)
    except EnrollmentError as exc:
        print(f"enroll: {exc}", file=sys.stderr)
        return 1
    print(f"enrolled {agent_id} ({config.role}) with {', '.join(config.audit.collector_url)}")
    return 0


def cmd_emit(args: argparse.Namespace) -> int:
    """Record one event in the agent's spool (the running agent forwards it)."""
    from floor_agent.audit.spool import open_spool
    from floor_agent.protocol.event import EventError

    config = _agent_config(args)
    try:
        data: Any = orjson.loads(args.data) if args.data else {}
    except orjson.JSONDecodeError as exc:
        print(f"--data: not valid JSON ({exc})", file=sys.stderr)
        return 2
    if not isinstance(data, dict):
        print("--data: expected a JSON object", file=sys.stderr)
        return 2
    spool = open_spool(config.audit, config.role)
    try:
        event = spool.emit(args.kind, args.subject, args.severity, **data)
    except EventError as exc:
        print(f"emit: {exc}", file=sys.stderr)
        return 2
    finally:
        spool.close()
    print(f"seq {event.seq}" if event else "dropped: spool full and severity below warning")
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    """Run an agent role until SIGTERM/SIGINT (its capabilities: floor_agent/roles/run.py)."""
    from floor_agent.roles.run import run_agent

    return run_agent(_agent_config(args, args.role), args.config)


def cmd_usb_check_rules(args: argparse.Namespace) -> int:
    from floor_agent.usb_guard.admin import check_rules
    from floor_agent.usb_guard.rule import format_rule
    from floor_agent.usb_guard.rule_parser import RuleSyntaxError

    try:
        rules = check_rules(Path(args.file).read_text(encoding="utf-8"), str(args.file))
    except OSError as exc:
        print(f"{args.file}: cannot read ({exc.strerror})", file=sys.stderr)
        return 2
    except (RuleSyntaxError, UnicodeDecodeError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(f"{args.file}: {len(rules)} rule(s), OK")
    if args.verbose:
        for rule in rules:
            print(format_rule(rule))
    return 0


def _present_usb_devices() -> list[Any]:
    import pyudev

    from floor_agent.usb_guard.device import device_from_udev
    from floor_agent.usb_guard.monitor import present_devices

    return [device_from_udev(d) for d in present_devices(pyudev.Context())]


def cmd_usb_generate_policy(args: argparse.Namespace) -> int:
    from floor_agent.usb_guard.admin import generate_policy

    sys.stdout.write(generate_policy(_present_usb_devices()))
    return 0


def cmd_usb_list(args: argparse.Namespace) -> int:
    """Every USB device with its authorization and what the configured rules decide for it."""
    from floor_agent.usb_guard import sysfs
    from floor_agent.usb_guard.policy import decide
    from floor_agent.usb_guard.rule_parser import RuleSyntaxError, parse_rules_file
    from floor_agent.usb_guard.rule_set import ConditionContext

    config = load_role(args.config, WorkstationConfig)
    rules_file = config.usb_guard.rules_file
    try:
        rules = parse_rules_file(rules_file.read_text(encoding="utf-8"), str(rules_file))
    except (OSError, RuleSyntaxError, UnicodeDecodeError) as exc:
        print(f"{rules_file}: {exc}", file=sys.stderr)
        return 2
    from datetime import datetime

    ctx = ConditionContext(now=datetime.now())
    for device in _present_usb_devices():
        try:
            state = "authorized" if sysfs.read_authorized(device.sys_path) else "blocked"
        except sysfs.SysfsError:
            state = "unknown"
        decision = decide(rules, device, ctx)
        print(f"{device.port:<10} {device.id} {state:<10} {decision.target:<8} "
              f"{device.manufacturer} {device.name} [{' '.join(device.interfaces)}]")
        print(f"{'':<10} rule: {decision.rule}")
    return 0


def _netlock_setup(args: argparse.Namespace) -> tuple[Any, Any] | None:
    """(netlock config, allowlist) of the workstation config, or None after printing why."""
    from floor_agent.netlock.allowlist import AllowlistError, build

    config = load_role(args.config, WorkstationConfig)
    try:
        return config, build(config.netlock)
    except AllowlistError as exc:
        print(f"{args.config}: {exc}; nothing changed", file=sys.stderr)
        return None


def _print_verdicts(verdicts: list[Any]) -> None:
    for v in verdicts:
        print(f"{v.verdict.upper():<8} {v.id:<22} {v.summary}")
        for line in v.evidence:
            print(f"{'':<31} {line}")


def _verdict_exit(verdicts: list[Any]) -> int:
    """0 when every check passes; 1 when any fails or cannot be decided (never a pass)."""
    return 0 if all(v.ok for v in verdicts) else 1


def _verify_now(config: Any, allowlist: Any) -> tuple[list[Any], float]:
    import time as _time

    from floor_agent.netlock import checks, facts

    started = _time.perf_counter()
    collected = facts.collect(config, allowlist)
    return checks.run(collected, config, allowlist), (_time.perf_counter() - started) * 1000


def cmd_netlock_apply(args: argparse.Namespace) -> int:
    """Load the ruleset (recorded in the agent's audit spool), then run every check."""
    from floor_agent.audit.spool import open_spool
    from floor_agent.netlock.firewall import FirewallError
    from floor_agent.netlock.runner import enforce

    setup = _netlock_setup(args)
    if setup is None:
        return 2
    config, allowlist = setup
    spool = open_spool(config.audit, config.role)
    try:
        enforce(config.netlock, allowlist, spool.emit, source=args.config)
    except FirewallError as exc:  # recorded in the spool; the running ruleset is unchanged
        print(f"netlock apply: {exc}", file=sys.stderr)
        if exc.stderr:
            print(exc.stderr.rstrip(), file=sys.stderr)
        return 2
    finally:
        spool.close()
    print(f"loaded table inet {config.netlock.table}; verifying", file=sys.stderr)
    verdicts, ms = _verify_now(config.netlock, allowlist)
    _print_verdicts(verdicts)
    print(f"{len(verdicts)} checks in {ms:.0f} ms", file=sys.stderr)
    return _verdict_exit(verdicts)


def cmd_netlock_verify(args: argparse.Namespace) -> int:
    setup = _netlock_setup(args)
    if setup is None:
        return 2
    verdicts, ms = _verify_now(setup[0].netlock, setup[1])
    if args.json:
        from floor_agent.netlock.watch import verdict_data

        print(orjson.dumps({"ms": round(ms, 1), "checks": [verdict_data(v) for v in verdicts]},
                           option=orjson.OPT_INDENT_2).decode())
    else:
        _print_verdicts(verdicts)
        print(f"{len(verdicts)} checks in {ms:.0f} ms", file=sys.stderr)
    return _verdict_exit(verdicts)


def cmd_netlock_status(args: argparse.Namespace) -> int:
    setup = _netlock_setup(args)
    if setup is None:
        return 2
    verdicts, ms = _verify_now(setup[0].netlock, setup[1])
    failing = [v for v in verdicts if v.verdict == "fail"]
    unknown = [v for v in verdicts if v.verdict == "unknown"]
    breach = [v for v in failing if v.severity == "critical"]
    state = "BREACH" if breach else "DEGRADED" if failing or unknown else "LOCKED"
    passed = len(verdicts) - len(failing) - len(unknown)
    detail = "; ".join(f"{v.id}: {v.summary}" for v in failing + unknown)
    print(f"{state}: {passed}/{len(verdicts)} checks pass ({ms:.0f} ms)"
          + (f"; {detail}" if detail else ""))
    return _verdict_exit(verdicts)


def cmd_netlock_render(args: argparse.Namespace) -> int:
    from floor_agent.netlock import firewall

    setup = _netlock_setup(args)
    if setup is None:
        return 2
    try:
        ruleset = firewall.render(setup[0].netlock, setup[1], source=args.config)
    except firewall.FirewallError as exc:  # e.g. an empty allowlist: nothing to print
        print(f"netlock render: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(ruleset)
    return 0


def cmd_usb_manual(args: argparse.Namespace) -> int:
    """allow|block one device by hand; audited in the agent's spool, undone by the guard's
    next judgement of the device."""
    import sqlite3

    from floor_agent.audit.spool import open_spool
    from floor_agent.usb_guard.manual import ManualError, run_manual

    config = load_role(args.config, WorkstationConfig)
    audit = config.audit
    try:  # before touching sysfs: no manual change that cannot be recorded
        spool = open_spool(audit, config.role)
    except (OSError, sqlite3.Error) as exc:
        print(f"usb {args.usb_action}: cannot open the audit spool in {audit.state_dir} "
              f"({exc}); nothing done", file=sys.stderr)
        return 2
    try:
        result = run_manual(args.device, args.usb_action == "allow", args.reason,
                            config.usb_guard.sys_root, spool.emit)
    except ManualError as exc:
        print(f"usb {args.usb_action}: {exc}", file=sys.stderr)
        return 2
    finally:
        spool.close()
    print(f"{result.device.port} {result.device.id} {result.action} ({result.kind} recorded); "
          "temporary: the running guard judges it again on its next event", file=sys.stderr)
    return 0 if result.ok else 1


def cmd_usb_udev_rules(args: argparse.Namespace) -> int:
    """The udev rules file that keeps forbidden classes off while the agent is not running."""
    import os
    import tempfile

    from floor_agent.usb_guard.udev_rules import DEFAULT_FORBIDDEN, render_udev_rules

    try:
        text = render_udev_rules(args.forbid or DEFAULT_FORBIDDEN,
                                 lock_root_hubs=not args.no_root_hub_lock)
    except ValueError as exc:
        print(f"--forbid {exc}", file=sys.stderr)
        return 2
    if args.output is None:
        sys.stdout.write(text)
        return 0
    out = Path(args.output)
    try:  # atomic: udev must never read a half-written rules file
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except OSError as exc:
        print(f"{out}: cannot write ({exc.strerror})", file=sys.stderr)
        return 2
    print(f"wrote {out}; apply with: udevadm control --reload", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from floor_agent import demo

    return demo.main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="floor-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"floor-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    cfg = sub.add_parser("config", help="configuration tools").add_subparsers(dest="action",
                                                                             required=True)
    check = cfg.add_parser("check", help="validate a config file and summarise it")
    check.add_argument("file", type=Path)
    check.set_defaults(func=cmd_config_check)

    col = sub.add_parser("collector", help="the central audit collector")
    col_sub = col.add_subparsers(dest="action", required=True)

    def with_config(p: argparse.ArgumentParser, role: str) -> argparse.ArgumentParser:
        return add_config_option(p, DEFAULT_CONFIG[role])

    p = with_config(col_sub.add_parser("init", help="create CA, server certificate, store"),
                    "collector")
    p.add_argument("--renew-certificate", action="store_true",
                   help="issue a new server certificate (the CA is kept)")
    p.set_defaults(func=cmd_collector_init)
    with_config(col_sub.add_parser("run", help="serve the API over HTTPS"),
                "collector").set_defaults(func=cmd_collector_run)
    token = col_sub.add_parser("token", help="enrollment tokens").add_subparsers(
        dest="token_action", required=True)
    p = with_config(token.add_parser("create", help="print a one-time enrollment token"),
                    "collector")
    p.add_argument("--role", required=True, choices=ENROLLABLE_ROLES)
    p.add_argument("--ttl", type=int, default=None, help="seconds (default from config)")
    p.set_defaults(func=cmd_collector_token)
    p = with_config(col_sub.add_parser(
        "verify", help="re-verify stored chains and agent keys against the anchor"), "collector")
    p.add_argument("--agent", help="only this agent")
    p.add_argument("--anchor-key", metavar="KEY_OR_FILE",
                   help="anchor public key to trust (base64 or a file); default: config "
                        "anchor_public_key, else anchor.pub beside the anchor key")
    p.set_defaults(func=cmd_collector_verify)
    from floor_agent.collector.apikeys_cli import add_parsers as add_apikey_parsers
    from floor_agent.collector.backup_cli import add_parsers as add_backup_parsers
    from floor_agent.collector.join_cli import add_parsers as add_join_parsers
    from floor_agent.collector.notify_cli import add_parsers as add_notify_parsers
    from floor_agent.collector.policy_cli import add_parsers as add_policy_parsers
    from floor_agent.dashboard.users_cli import add_parsers as add_user_parsers

    add_user_parsers(col_sub)  # `collector user create|list|disable|enable|reset`
    add_apikey_parsers(col_sub)  # `collector apikey create|list|revoke`
    add_backup_parsers(col_sub)  # `collector backup`, `collector restore`
    add_notify_parsers(col_sub)  # `collector notify test|list`
    add_policy_parsers(col_sub)  # `collector policy set-group|assign|approve|withdraw|...`
    add_join_parsers(col_sub)  # `collector join-request`, `sign-collector`, `join`

    p = sub.add_parser("enroll", help="register this agent with the collector")
    p.add_argument("--config", type=Path, required=True, help="the agent role's YAML file")
    p.add_argument("--token", required=True, help="from 'floor-agent collector token create'")
    p.add_argument("--ca", type=Path, help="collector CA file to pin (copied into state_dir)")
    p.set_defaults(func=cmd_enroll)

    p = sub.add_parser("emit", help="record one audit event in this agent's spool")
    p.add_argument("--config", type=Path, required=True, help="the agent role's YAML file")
    p.add_argument("--kind", required=True)
    p.add_argument("--subject", required=True)
    p.add_argument("--severity", default="info")
    p.add_argument("--data", help="JSON object")
    p.set_defaults(func=cmd_emit)

    for role in AGENT_ROLES:
        p = with_config(sub.add_parser(role, help=f"run the {role} agent"), role)
        p.set_defaults(func=cmd_agent, role=role)
        if role == "door":  # `door --config X` runs the agent; `door people ...` administers
            from floor_agent.access.admin import add_parsers

            add_parsers(p.add_subparsers(dest="door_action", metavar="COMMAND"))
        if role == "cctv":  # `cctv --config X` runs the agent; `cctv verify|export` administer
            from floor_agent.cctv.cli import add_parsers as add_cctv_parsers

            add_cctv_parsers(p.add_subparsers(dest="cctv_action", metavar="COMMAND"))

    usb = sub.add_parser("usb", help="USB guard tools").add_subparsers(dest="usb_action",
                                                                        required=True)
    p = usb.add_parser("check-rules", help="parse a rules file (USBGuard rule language)")
    p.add_argument("file", type=Path)
    p.add_argument("-v", "--verbose", action="store_true", help="print each rule canonically")
    p.set_defaults(func=cmd_usb_check_rules)
    usb.add_parser("generate-policy", help="allow rules for the devices present now"
                   ).set_defaults(func=cmd_usb_generate_policy)
    p = with_config(usb.add_parser("list", help="devices, their state and the deciding rule"),
                    "workstation")
    p.set_defaults(func=cmd_usb_list)
    for action, verb in (("allow", "authorize"), ("block", "deauthorize")):
        p = with_config(usb.add_parser(
            action, help=f"{verb} one device now, by hand (audited as usb.manual_{action})",
            description=f"{verb.capitalize()} one USB device now and record a usb.manual_"
            f"{action} warning event (who, why, the device) for the running agent to forward. "
            "Temporary: the running guard judges the device again on its next udev event "
            "(re-plug, reboot, agent restart) and its rules win; make it lasting with a rule."),
            "workstation")
        p.add_argument("device", metavar="DEVICE",
                       help="sysfs name (1-2, 1-2.3) or path (/sys/bus/usb/devices/1-2)")
        p.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
        p.set_defaults(func=cmd_usb_manual)
    p = usb.add_parser("udev-rules", help="udev rules that keep forbidden interface classes off "
                       "while the agent is not running (boot, crash)")
    p.add_argument("--output", type=Path,
                   help="write here (e.g. /etc/udev/rules.d/70-floor-agent-usb.rules) "
                   "instead of stdout")
    p.add_argument("--forbid", action="append", metavar="CC[:SS[:PP]]",
                   help="interface class to block, hex, repeatable (default: 08 06 02 0a e0 "
                   "ef:04:01); 03 (HID) and 09 (hub) are refused")
    p.add_argument("--no-root-hub-lock", action="store_true",
                   help="do not set authorized_default=0 on root hubs at boot")
    p.set_defaults(func=cmd_usb_udev_rules)

    net = sub.add_parser("netlock", help="network lock tools").add_subparsers(
        dest="net_action", required=True)
    p = with_config(net.add_parser("apply", help="load the default-deny ruleset, then verify"),
                    "workstation")
    p.set_defaults(func=cmd_netlock_apply)
    p = with_config(net.add_parser("verify", help="run every check and print its evidence"),
                    "workstation")
    p.add_argument("--json", action="store_true", help="verdicts as JSON")
    p.set_defaults(func=cmd_netlock_verify)
    p = with_config(net.add_parser("status", help="one line: locked or not, and why"),
                    "workstation")
    p.set_defaults(func=cmd_netlock_status)
    p = with_config(net.add_parser("render", help="print the ruleset apply would load"),
                    "workstation")
    p.set_defaults(func=cmd_netlock_render)

    from floor_agent import privacy
    from floor_agent.report.cli import add_parsers as add_report_parsers
    from floor_agent.retention.cli import add_parsers as add_retention_parsers

    add_retention_parsers(sub)  # `retention sweep`
    add_report_parsers(sub)  # `report tom`
    privacy.add_parsers(sub)  # `privacy scan`

    p = sub.add_parser("demo", help="the floor on simulated hardware, one command")
    p.add_argument("--dir", type=Path, help="working directory (default: a fresh temp dir)")
    p.add_argument("--port", type=int, default=8443)
    p.add_argument("--duration", type=float, default=None,
                   help="stop by itself after this many seconds (default: until Ctrl-C)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Files and directories this process makes are its own alone (keys, stores, spools,
    # footage), whether or not systemd's UMask=0077 applies: run from a shell, umask is 022.
    # (Restored on return, for a caller that runs main in its own process, as the tests do.)
    previous = os.umask(0o077)
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    finally:
        os.umask(previous)


if __name__ == "__main__":
    sys.exit(main())
