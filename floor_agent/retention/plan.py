"""What a retention sweep deletes, decided over plain data (no SFTP, no clock).

The input is a listing of one server root, made with lstat only: every entry with its path
relative to the root, type, size, mtime and, for a symlink, its target (never followed). The
output says which image files go, which jobs are kept and why, and what was refused: symlinks
(never followed, never deleted), paths that are not plainly inside the root, unreadable
entries, broken completion markers. The share guard and the empty-root check live here too,
so the rules an auditor reads are the rules the sweep runs.

The file list hash in receipts is `file_list_sha256`: SHA-256 over the UTF-8 lines
"PATH<TAB>SIZE<LF>", sorted by PATH, with PATH relative to the server's root. Anyone holding
the list can recompute it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from floor_agent.retention.config import RetentionServer

EntryKind = Literal["file", "dir", "symlink", "other"]
JobState = Literal["due", "kept", "incomplete", "refused"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One thing found under the root (lstat: a symlink is itself, not its target)."""

    path: str  # relative to the root, '/'-separated, e.g. "C0001/J0001/a.jpg"
    kind: EntryKind
    size: int = 0
    mtime: int = 0  # seconds since the epoch
    link_target: str | None = None
    error: str | None = None  # set when the entry (a directory, a manifest) could not be read


@dataclass(frozen=True, slots=True)
class Listing:
    """A server root as the adapter saw it, plus the manifest texts it read."""

    root: str
    entries: tuple[Entry, ...]
    texts: Mapping[str, str] = field(default_factory=dict)  # path -> manifest content


@dataclass(frozen=True, slots=True)
class Policy:
    """The parts of a server's configuration the decision needs."""

    root: str
    retention_days: int
    marker_file: str | None
    manifest: str | None
    manifest_field: str
    image_patterns: tuple[str, ...]
    client_pattern: str
    job_pattern: str
    max_share: float


@dataclass(frozen=True, slots=True)
class Deletion:
    path: str  # relative to the root
    size: int
    job: str  # "CLIENT/JOB"


@dataclass(frozen=True, slots=True)
class Refusal:
    path: str  # relative to the root
    reason: str


@dataclass(frozen=True, slots=True)
class JobStatus:
    job: str
    state: JobState
    completed_at: datetime | None = None
    due_at: datetime | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Plan:
    root: str
    deletions: tuple[Deletion, ...]
    refusals: tuple[Refusal, ...]
    jobs: tuple[JobStatus, ...]
    unexpected: tuple[str, ...]  # folders and files outside the CLIENT/JOB layout, left alone
    total_files: int  # regular files under the root, due or not
    blocked: str | None  # why the sweep must not delete anything (None: it may)

    @property
    def total_bytes(self) -> int:
        return sum(d.size for d in self.deletions)

    @property
    def share(self) -> float:
        return len(self.deletions) / self.total_files if self.total_files else 0.0

    @property
    def job_codes(self) -> list[str]:
        """The jobs whose images this plan removes, sorted."""
        return sorted({d.job for d in self.deletions})

    @property
    def file_list_sha256(self) -> str:
        return file_list_sha256((d.path, d.size) for d in self.deletions)


def policy_of(server: RetentionServer) -> Policy:
    c = server.completion
    return Policy(root=server.root, retention_days=server.retention_days,
                  marker_file=c.file, manifest=c.manifest, manifest_field=c.field,
                  image_patterns=tuple(p.lower() for p in server.image_patterns),
                  client_pattern=server.client_pattern, job_pattern=server.job_pattern,
                  max_share=server.max_share)


def event_ref(path: str, policy: Policy) -> str:
    """A path as it may appear in audit events: client and job codes kept, every other name
    (file names, folders that are not codes, which might carry a customer's name) replaced
    by "#" and the first 12 hex digits of SHA-256 over the whole relative path. `--dry-run`
    prints the same reference next to each name, so staff on the host can find the file."""
    parts = path.split("/")
    shown: list[str] = []
    for depth, part in enumerate(parts):
        pattern = policy.client_pattern if depth == 0 else policy.job_pattern
        if depth < 2 and re.fullmatch(pattern, part):
            shown.append(part)
        else:
            break
    if len(shown) == len(parts):
        return path
    digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return "/".join([*shown, f"#{digest}"])


def file_list_sha256(files: Iterable[tuple[str, int]]) -> str:
    """SHA-256 of "PATH\\tSIZE\\n" lines sorted by path (see the module docstring)."""
    digest = hashlib.sha256()
    for path, size in sorted(files):
        digest.update(f"{path}\t{size}\n".encode())
    return digest.hexdigest()


def is_plain_relative(path: str) -> bool:
    """True for "a/b/c": no leading '/', no empty, '.' or '..' part, no NUL."""
    if not path or path.startswith("/") or "\x00" in path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def absolute(root: str, path: str) -> str:
    """The server path of an entry; refuses anything that is not plainly inside root."""
    if not is_plain_relative(path):
        raise ValueError(f"{path!r} is not a plain path inside {root}")
    return f"{root.rstrip('/')}/{path}"


def link_leaves_root(root: str, entry_path: str, target: str) -> bool:
    """Where a symlink points, judged on the names alone (it is never followed)."""
    base = posixpath.dirname(f"{root}/{entry_path}")
    resolved = posixpath.normpath(posixpath.join(base, target))
    return not (resolved + "/").startswith(root.rstrip("/") + "/")


def parse_manifest_time(text: str, field_name: str) -> datetime:
    """The completion time in a JSON manifest; ValueError says what is wrong with it."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"manifest is not JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict) or field_name not in data:
        raise ValueError(f"manifest has no {field_name!r} field")
    value = data[field_name]
    if not isinstance(value, str):
        raise ValueError(f"manifest field {field_name!r} is not a time string")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"manifest field {field_name!r} is not an ISO 8601 time "
                         f"(got {value[:40]!r})") from None
    if when.tzinfo is None:
        raise ValueError(f"manifest field {field_name!r} has no UTC offset (got {value[:40]!r});"
                         " a local time would make the age depend on the server's zone")
    return when


def _is_image(path: str, patterns: Sequence[str]) -> bool:
    name = posixpath.basename(path).lower()
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _completion(job: str, by_path: Mapping[str, Entry], texts: Mapping[str, str],
                policy: Policy) -> tuple[datetime | None, str]:
    """(completed_at, "") when complete, (None, "") when not yet, (None, reason) if broken."""
    name = policy.marker_file if policy.marker_file is not None else policy.manifest
    assert name is not None
    entry = by_path.get(f"{job}/{name}")
    if entry is None:
        return None, ""
    if entry.kind != "file":
        return None, f"completion marker {name} is a {entry.kind}, not a regular file"
    if entry.error is not None:
        return None, f"completion marker {name} unreadable ({entry.error})"
    if policy.marker_file is not None:
        return datetime.fromtimestamp(entry.mtime, UTC), ""
    text = texts.get(entry.path)
    if text is None:
        return None, f"manifest {name} was not read"
    try:
        return parse_manifest_time(text, policy.manifest_field), ""
    except ValueError as e:
        return None, str(e)


def plan(listing: Listing, policy: Policy, now: datetime, *, force: bool = False) -> Plan:
    """Decide the sweep of one root at `now` (timezone-aware)."""
    client_re = re.compile(policy.client_pattern)
    job_re = re.compile(policy.job_pattern)
    refusals: list[Refusal] = []
    unexpected: list[str] = []
    by_path: dict[str, Entry] = {}
    for entry in listing.entries:
        if not is_plain_relative(entry.path):
            refusals.append(Refusal(entry.path, "not a plain path inside the root"))
            continue
        by_path[entry.path] = entry
        if entry.error is not None:
            refusals.append(Refusal(entry.path, f"unreadable ({entry.error})"))

    jobs: dict[str, list[Entry]] = {}
    for path, entry in sorted(by_path.items()):
        parts = path.split("/")
        client_ok = entry.kind == "dir" and bool(client_re.fullmatch(parts[0]))
        if len(parts) == 1:
            if not client_ok:
                unexpected.append(path)
            continue
        first = by_path.get(parts[0])
        if first is None or first.kind != "dir" or not client_re.fullmatch(parts[0]):
            continue  # under an unexpected top-level entry: reported once, above
        job = "/".join(parts[:2])
        job_entry = by_path.get(job)
        if len(parts) == 2:
            if entry.kind == "dir" and job_re.fullmatch(parts[1]):
                jobs.setdefault(job, [])
            else:
                unexpected.append(path)
            continue
        if job_entry is None or job_entry.kind != "dir" or not job_re.fullmatch(parts[1]):
            continue
        parents = ["/".join(parts[:depth]) for depth in range(3, len(parts))]
        if any(getattr(by_path.get(parent), "kind", None) != "dir" for parent in parents):
            refusals.append(Refusal(path, "a folder above it was not listed as a directory"))
            continue
        jobs.setdefault(job, []).append(entry)

    statuses: list[JobStatus] = []
    deletions: list[Deletion] = []
    keep_for = timedelta(days=policy.retention_days)
    for job, entries in sorted(jobs.items()):
        completed_at, problem = _completion(job, by_path, listing.texts, policy)
        if problem:
            statuses.append(JobStatus(job, "refused", reason=problem))
            refusals.append(Refusal(job, problem))
            continue
        if completed_at is None:
            statuses.append(JobStatus(job, "incomplete"))
            continue
        due_at = completed_at + keep_for
        if due_at > now:
            statuses.append(JobStatus(job, "kept", completed_at, due_at))
            continue
        statuses.append(JobStatus(job, "due", completed_at, due_at))
        for entry in entries:
            if entry.kind == "symlink":
                where = ("resolves outside the root"
                         if link_leaves_root(listing.root, entry.path, entry.link_target or "")
                         else "inside the root")
                refusals.append(Refusal(entry.path, f"symlink to {entry.link_target!r} "
                                                    f"({where}): never followed, left alone"))
            elif entry.kind == "other" and _is_image(entry.path, policy.image_patterns):
                refusals.append(Refusal(entry.path, "not a regular file, left alone"))
            elif (entry.kind == "file" and entry.error is None
                  and _is_image(entry.path, policy.image_patterns)):
                deletions.append(Deletion(entry.path, entry.size, job))

    total_files = sum(1 for e in by_path.values() if e.kind == "file")
    blocked = None
    if not by_path:
        blocked = f"root {listing.root} is empty: wrong root or unmounted storage"
    elif total_files == 0:
        blocked = f"root {listing.root} holds no files: wrong root or unmounted storage"
    elif not force and deletions and len(deletions) / total_files > policy.max_share:
        blocked = (f"{len(deletions)} of {total_files} files "
                   f"({len(deletions) / total_files:.0%}) would go at once, more than "
                   f"max_share {policy.max_share:.0%}; check the clock, root and markers, "
                   "then run with --force")
    deletions.sort(key=lambda d: d.path)
    return Plan(listing.root, tuple(deletions), tuple(refusals), tuple(statuses),
                tuple(unexpected), total_files, blocked)
