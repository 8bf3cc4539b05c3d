"""`floor-agent report tom`: the TOM evidence report as HTML (and PDF), itself an audit event.

Exit status: 0 written, 2 bad input (config, store unreachable, output not writable).
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import os
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from floor_agent.collector.config import CollectorConfig
from floor_agent.config import load_role
from floor_agent.protocol.kinds.collector import CollectorKind

DEFAULT_CONFIG = "/etc/floor-agent/collector.yaml"


def _write(path: Path, data: bytes) -> str:
    """Write 0600 (the report describes the site's defences); returns the sha256."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def who() -> str:
    """The OS user, and who ran sudo when it was sudo: the person an auditor asks."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    sudo = os.environ.get("SUDO_USER")
    return f"{user} (sudo by {sudo})" if sudo and sudo != user else user


def generate(config: CollectorConfig, out: Path, pdf: Path | None, days: int,
             now: datetime | None = None) -> dict[str, Any]:
    """Collect, render, write, record `report.generated`; returns the event's data."""
    from floor_agent.collector import self_audit, tls
    from floor_agent.common.urls import redact_url
    from floor_agent.report.render import render_html, render_pdf
    from floor_agent.report.tom import collect_evidence
    from floor_agent.store import open_store

    now = now or datetime.now(UTC)
    section = config.collector
    ca = tls.TlsFiles.in_dir(section.state_dir).ca_cert
    url = section.resolved_database_url()
    store = open_store(url)
    try:
        evidence = collect_evidence(
            store, now, days, site=socket.gethostname(),
            collector_id=self_audit.agent_id(config),
            ca_fingerprint=tls.fingerprint(ca) if ca.exists() else "no CA in " + str(ca.parent),
            store_name=redact_url(url), default_group=section.policy.default_group)
    finally:
        store.close()
    html = render_html(evidence).encode()
    files = {out.name: _write(out, html)}
    if pdf is not None:
        files[pdf.name] = _write(pdf, render_pdf(html.decode()))
    data: dict[str, Any] = {"report": "tom", "who": who(), "files": files, "days": days,
                            "period_start": evidence.period_start,
                            "period_end": evidence.period_end, "verdicts": evidence.verdicts}
    writer = self_audit.open_writer(config)
    try:
        writer.emit(CollectorKind.REPORT_GENERATED, f"tom report {out.name}", "notice", **data)
    finally:
        writer.close()
    return data


def cmd_report_tom(args: argparse.Namespace) -> int:
    from floor_agent.store.interface import StoreError

    config = load_role(args.config, CollectorConfig)
    if args.days < 1:
        print(f"--days: must be at least 1, got {args.days}", file=sys.stderr)
        return 2
    for path in (args.out, args.pdf):
        if path is not None and not path.parent.is_dir():
            print(f"{path}: directory {path.parent} does not exist", file=sys.stderr)
            return 2
    try:
        data = generate(config, args.out, args.pdf, args.days)
    except StoreError as exc:
        print(f"report tom: {exc}", file=sys.stderr)
        return 2
    for name, digest in data["files"].items():
        print(f"{name}: sha256 {digest}")
    for key, verdict in data["verdicts"].items():
        print(f"  {key}: {verdict}")
    return 0


def add_parsers(subparsers: Any) -> None:
    """Add `report tom` under the top-level `floor-agent` subcommands."""
    report = subparsers.add_parser("report", help="reports for auditors").add_subparsers(
        dest="report_action", required=True)
    p = report.add_parser("tom", help="TOM evidence report (HTML, optionally PDF)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="collector.yaml")
    p.add_argument("--out", type=Path, required=True, help="the HTML file to write")
    p.add_argument("--pdf", type=Path, default=None, help="also write this PDF")
    p.add_argument("--days", type=int, default=30, help="the period: the last N days")
    p.set_defaults(func=cmd_report_tom)
