"""One retention sweep of one server: list, plan, delete, re-check, receipt (the I/O shell).

The audit trail an auditor follows, per server and run (all carry the same sweep_id):
- `retention.sweep_started` (info): the planned file count, bytes and file_list_sha256, and
  `resumes`, the id of an earlier sweep of this server that lost its connection, if any.
- `retention.receipt` (notice): what THIS run removed (file_count, total_bytes,
  file_list_sha256 over exactly those files), the jobs, files already absent, refusals, and
  for a resumed run `previously_removed`: the files of the interrupted plan that are gone
  now (the interrupted run's deletions, proven by their absence).
- `retention.residue` (critical): planned files still present after deletion.
- `retention.refused` (error: the root looks wrong; warning: entries left alone, or the
  share guard; the sweep deletes nothing when the root or the share is refused).
- `retention.sweep_failed` (error): the connection failed or dropped; what was removed
  until then is in the event, and a resume note in state_dir links the next run to it.
Dry runs print the plan and record nothing.

Events name client and job codes, never file names or other folder names (which might carry
a customer's name): those appear as `plan.event_ref` references, e.g. "C0001/J0001/#3f2a9c1e0b7d".
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from floor_agent.protocol.emit import Emit
from floor_agent.protocol.kinds.retention import RetentionKind
from floor_agent.retention.config import RetentionServer
from floor_agent.retention.plan import (
    Deletion,
    Plan,
    Policy,
    event_ref,
    file_list_sha256,
    plan,
    policy_of,
)
from floor_agent.retention.sftp_tree import ConnectionLost, NotRemovable, RootUnusable, SftpTree
from floor_agent.sftp import SftpConnectError

OnRemoved = Callable[[Deletion], object]
MAX_LISTED = 200  # paths listed in one event; counts and hashes always cover everything

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2


@dataclass
class SweepResult:
    """What one sweep of one server did; exit_code follows the CLI's contract."""

    server: str
    sweep_id: str
    plan: Plan | None = None
    removed: list[Deletion] = field(default_factory=list)
    absent: list[Deletion] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    residue: list[Deletion] = field(default_factory=list)
    error: str | None = None  # connection failed or dropped
    refused: str | None = None  # the root or the share guard refused the sweep

    @property
    def exit_code(self) -> int:
        if self.refused is not None:
            return EXIT_REFUSED
        if self.error is not None or self.residue or self.failed:
            return EXIT_FAILED
        return EXIT_OK


def _ts(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def resume_note_path(state_dir: Path, server: str) -> Path:
    return state_dir / f"retention-{server}.resume.json"


def _read_note(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"sweep_id": "unreadable-resume-note", "planned": []}
    return data if isinstance(data, dict) else None


def _write_note(path: Path, sweep_id: str, p: Plan) -> None:
    """Written before the first removal, so an interrupted run is always linked."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"sweep_id": sweep_id, "root": p.root,
                               "planned": [[d.path, d.size] for d in p.deletions]}))
    os.replace(tmp, path)


def _listed(deletions: list[Deletion], policy: Policy) -> list[str]:
    return [event_ref(d.path, policy) for d in deletions[:MAX_LISTED]]


def describe_plan(server: RetentionServer, p: Plan, out: TextIO) -> None:
    """The dry-run report: what would go, what is kept and why, with each path's event
    reference (how events name it) in brackets."""
    policy = policy_of(server)
    print(f"server {server.name} root {p.root}: {len(p.deletions)} of {p.total_files} files "
          f"would go ({p.total_bytes} bytes), file_list_sha256 {p.file_list_sha256}", file=out)
    if p.blocked:
        print(f"  REFUSED: {p.blocked}", file=out)
    for job in p.jobs:
        due = f", due {_ts(job.due_at)}" if job.due_at else ""
        print(f"  job {job.job}: {job.state}{due}{': ' + job.reason if job.reason else ''}",
              file=out)
    for d in p.deletions:
        print(f"  would delete {d.path} ({d.size} bytes) [{event_ref(d.path, policy)}]",
              file=out)
    for r in p.refusals:
        print(f"  left alone {r.path} [{event_ref(r.path, policy)}]: {r.reason}", file=out)
    for path in p.unexpected:
        print(f"  unexpected (not a client/job folder, left alone) {path} "
              f"[{event_ref(path, policy)}]", file=out)


def sweep_server(server: RetentionServer, emit: Emit | None, state_dir: Path, *,
                 dry_run: bool = False, force: bool = False, now: datetime | None = None,
                 on_removed: OnRemoved | None = None, out: TextIO | None = None) -> SweepResult:
    """Sweep one server; every outcome is in the result and (unless dry_run) in events."""
    result = SweepResult(server.name, uuid.uuid4().hex)
    started = datetime.now(UTC)
    subject = f"retention {server.name}"
    where = {"sweep_id": result.sweep_id, "server": server.name, "host": server.host,
             "root": server.root}

    def record(kind: str, severity: str, **data: Any) -> None:
        if emit is not None and not dry_run:
            emit(kind, subject, severity, **where, **data)

    tree = SftpTree(server)
    policy = tree.policy
    try:
        try:
            tree.connect()
            listing = tree.listing(server.completion.manifest)
        except (SftpConnectError, ConnectionLost) as e:
            result.error = str(e)
            record(RetentionKind.SWEEP_FAILED, "error", stage="connect", error=str(e))
            return result
        except RootUnusable as e:
            result.refused = str(e)
            record(RetentionKind.REFUSED, "error", reason=str(e))
            return result
        p = plan(listing, policy, now or datetime.now(UTC), force=force)
        result.plan = p
        if dry_run:
            if out is not None:
                describe_plan(server, p, out)
            if p.blocked:
                result.refused = p.blocked
            return result
        if p.blocked:
            result.refused = p.blocked
            severity = "warning" if p.deletions else "error"
            record(RetentionKind.REFUSED, severity, reason=p.blocked,
                   planned_file_count=len(p.deletions), total_files=p.total_files)
            return result
        if p.refusals or p.unexpected:
            record(RetentionKind.REFUSED, "warning", reason="entries left alone",
                   left_alone=[{"path": event_ref(r.path, policy), "reason": r.reason}
                               for r in p.refusals[:MAX_LISTED]],
                   left_alone_count=len(p.refusals),
                   unexpected=[event_ref(u, policy) for u in p.unexpected[:MAX_LISTED]],
                   unexpected_count=len(p.unexpected))
        note_path = resume_note_path(state_dir, server.name)
        previous = _read_note(note_path)
        _write_note(note_path, result.sweep_id, p)
        record(RetentionKind.SWEEP_STARTED, "info", jobs=p.job_codes,
               file_count=len(p.deletions), total_bytes=p.total_bytes,
               file_list_sha256=p.file_list_sha256, total_files=p.total_files,
               retention_days=server.retention_days, force=force,
               resumes=previous.get("sweep_id") if previous else None, started=_ts(started))
        _delete(tree, p, result, on_removed, policy)
        if result.error is None:
            _recheck(tree, p, result)
        if result.error is not None:
            record(RetentionKind.SWEEP_FAILED, "error", stage="delete", error=result.error,
                   removed_count=len(result.removed),
                   removed_bytes=sum(d.size for d in result.removed),
                   removed_file_list_sha256=file_list_sha256(
                       (d.path, d.size) for d in result.removed),
                   planned_file_count=len(p.deletions),
                   planned_file_list_sha256=p.file_list_sha256)
            return result
        record(RetentionKind.RECEIPT, "notice", **_receipt(server, p, result, previous, listing,
                                                         started))
        if result.residue:
            record(RetentionKind.RESIDUE, "critical", count=len(result.residue),
                   files=_listed(result.residue, policy), errors=result.failed[:MAX_LISTED],
                   total_bytes=sum(d.size for d in result.residue))
        note_path.unlink(missing_ok=True)
        return result
    finally:
        tree.close()


def _delete(tree: SftpTree, p: Plan, result: SweepResult, on_removed: OnRemoved | None,
            policy: Policy) -> None:
    for d in p.deletions:
        try:
            outcome = tree.remove(d.path)
        except NotRemovable as e:
            result.failed.append(f"{event_ref(d.path, policy)}: {e}")
            continue
        except ConnectionLost as e:
            result.error = str(e)
            return
        if outcome == "removed":
            result.removed.append(d)
            if on_removed is not None:
                on_removed(d)
        else:
            result.absent.append(d)


def _recheck(tree: SftpTree, p: Plan, result: SweepResult) -> None:
    """Proof of deletion: every planned path is looked up again after the sweep."""
    try:
        result.residue = [d for d in p.deletions if tree.present(d.path)]
    except ConnectionLost as e:
        result.error = str(e)


def _receipt(server: RetentionServer, p: Plan, result: SweepResult,
             previous: dict[str, Any] | None, listing: Any, started: datetime) -> dict[str, Any]:
    removed = result.removed
    data: dict[str, Any] = {
        "jobs": sorted({d.job for d in removed}),
        "file_count": len(removed),
        "total_bytes": sum(d.size for d in removed),
        "file_list_sha256": file_list_sha256((d.path, d.size) for d in removed),
        "already_absent": len(result.absent),
        "planned_file_count": len(p.deletions),
        "planned_file_list_sha256": p.file_list_sha256,
        "residue_count": len(result.residue),
        "left_alone_count": len(p.refusals),
        "retention_days": server.retention_days,
        "started": _ts(started),
        "finished": _ts(datetime.now(UTC)),
        "dry_run": False,
        "resumes": None,
    }
    if previous is not None:
        present = {e.path for e in listing.entries}
        gone = [(str(path), int(size)) for path, size in previous.get("planned", [])
                if path not in present]
        data["resumes"] = previous.get("sweep_id")
        data["previously_removed"] = {"file_count": len(gone),
                                      "total_bytes": sum(size for _, size in gone),
                                      "file_list_sha256": file_list_sha256(gone)}
    return data
