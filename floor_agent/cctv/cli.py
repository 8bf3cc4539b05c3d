"""`floor-agent cctv verify`, `export` and `view`: the admin side of the recorder."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any


def _config(args: argparse.Namespace) -> Any:
    from floor_agent.cctv.config import CctvConfig
    from floor_agent.config import load_role

    config = load_role(args.config, CctvConfig)
    return config


def cmd_verify(args: argparse.Namespace) -> int:
    """Every camera's segment chain against the files: exit 1 when anything is broken."""
    from floor_agent.cctv.runner import verify_storage

    result = verify_storage(_config(args).cctv)
    print("\n".join(result.lines) if result.lines else "no footage recorded yet")
    return 0 if result.report.ok else 1


def _when(text: str, what: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise SystemExit(f"cctv export: {what}: expected ISO 8601, e.g. "
                         f"2026-11-29T09:00:00+00:00, got {text!r}") from None
    if value.tzinfo is None:
        raise SystemExit(f"cctv export: {what}: give the time zone (e.g. +00:00 or Z)")
    return value


def who_runs_this() -> str:
    """The person behind the command: sudo's user when run through sudo."""
    return os.environ.get("SUDO_USER") or getpass.getuser()


def cmd_export(args: argparse.Namespace) -> int:
    """A clip with its hash proof; recorded (who, why) in the agent's audit spool."""
    from floor_agent.audit.spool import open_spool
    from floor_agent.cctv.export import ExportError, export
    from floor_agent.cctv.index import SegmentIndex

    config = _config(args)
    start, end = _when(args.start, "--from"), _when(args.end, "--to")
    out = args.out or Path(f"{args.camera}-{start:%Y%m%dT%H%M%S}.mp4")
    spool = open_spool(config.audit, config.role)
    try:
        with SegmentIndex.in_storage(config.cctv.storage_dir) as index:
            result = export(index, config.cctv.storage_dir, args.camera, start, end,
                            args.reason, who_runs_this(), out, spool.emit)
    except ExportError as e:
        print(f"cctv export: {e}", file=sys.stderr)
        return 2
    finally:
        spool.close()
    print(f"{result.clip_path} ({result.segments} segments, sha256 {result.sha256}); "
          f"proof {result.proof_path}")
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    """The segment files of a time range, after the view is recorded (who, why)."""
    from floor_agent.audit.spool import open_spool
    from floor_agent.cctv.export import ExportError, view
    from floor_agent.cctv.index import SegmentIndex

    config = _config(args)
    start, end = _when(args.start, "--from"), _when(args.end, "--to")
    spool = open_spool(config.audit, config.role)
    try:
        with SegmentIndex.in_storage(config.cctv.storage_dir) as index:
            paths = view(index, config.cctv.storage_dir, args.camera, start, end,
                         who_runs_this(), args.reason, spool.emit)
    except ExportError as e:
        print(f"cctv view: {e}", file=sys.stderr)
        return 2
    finally:
        spool.close()
    print("\n".join(str(p) for p in paths))
    return 0


def add_parsers(cctv_sub: Any) -> None:
    p = cctv_sub.add_parser("verify", help="check every camera's segment hash chain")
    p.add_argument("--config", type=Path, default=argparse.SUPPRESS)
    p.set_defaults(func=cmd_verify)
    p = cctv_sub.add_parser("export", help="a clip with its hash proof (audited)")
    p.add_argument("--config", type=Path, default=argparse.SUPPRESS)
    p.add_argument("camera")
    p.add_argument("--from", dest="start", required=True, help="ISO 8601 with time zone")
    p.add_argument("--to", dest="end", required=True)
    p.add_argument("--reason", required=True, help="why (recorded with who asked)")
    p.add_argument("--out", type=Path, default=None)
    p.set_defaults(func=cmd_export)
    p = cctv_sub.add_parser("view", help="the footage files of a time range (audited)")
    p.add_argument("--config", type=Path, default=argparse.SUPPRESS)
    p.add_argument("camera")
    p.add_argument("--from", dest="start", required=True, help="ISO 8601 with time zone")
    p.add_argument("--to", dest="end", required=True)
    p.add_argument("--reason", required=True, help="why (recorded with who looked)")
    p.set_defaults(func=cmd_view)
