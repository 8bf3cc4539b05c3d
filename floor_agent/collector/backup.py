"""Online backups of the collector's store, verified before they count, and restores.

A backup only counts once it has been restored somewhere and its chains re-verified: a file that
cannot be read back is not a backup. So `backup()` copies the store (SQLite's backup API, one
consistent snapshot while `collector run` keeps writing; `pg_dump --format=custom` for
PostgreSQL), restores the copy into a scratch store (a temp SQLite file, or a scratch PostgreSQL
database created and dropped), re-verifies every agent's chain there with verify.py, checks that
the copy is a prefix of the live chains, and writes a JSON manifest beside it (sha256, size,
per-agent heads), signed by the collector's trust anchor (collector/anchor.py). The outcome, good
or bad, is a `collector.backup` event on the collector's own audit trail.

`restore()` checks the manifest's anchor signature against the anchor public key from outside
the backup (--anchor-key, the pinned config key, anchor.pub), the file against the manifest
(sha256), then chains, heads and every agent key's endorsement in a scratch store, before it
touches the target. A backup from before the anchor (unsigned manifest, unendorsed keys) is
refused unless `--allow-unanchored` says the admin accepts it (recorded). It refuses a target
that holds events unless forced, and refuses while the collector runs. "Runs" means: something
accepts TCP connections on the collector's listen port (the port is what `collector run` holds
for as long as it lives; a lock file would outlive a crashed process). Its outcome is a
`collector.restore` event.

The decisions (names, manifests, head comparison, what to prune) are pure functions below; the
I/O is in the functions after them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from floor_agent.collector import anchor, self_audit
from floor_agent.collector.config import CollectorConfig
from floor_agent.collector.verify import (
    KEY_PROBLEMS,
    AgentVerification,
    StoreVerification,
    record,
    verify_store,
)
from floor_agent.common.files import file_sha256
from floor_agent.common.urls import redact_url
from floor_agent.protocol.event import utc_timestamp
from floor_agent.protocol.kinds.collector import CollectorKind
from floor_agent.store import open_store
from floor_agent.store.interface import Store, StoreError

FORMAT = "floor-agent-collector-backup/1"
PREFIX = "floor-collector-"
SUFFIXES = {"sqlite": ".sqlite3", "postgresql": ".pgdump"}
NAME_RE = re.compile(r"^floor-collector-(\d{8}T\d{9}Z)\.(sqlite3|pgdump)$")
MANIFEST_SUFFIX = ".json"
PG_TIMEOUT_SECONDS = 3600


class BackupError(RuntimeError):
    """The backup or restore cannot even be attempted (bad input, refused); exit status 2."""


@dataclass
class Contents:
    """What a restored copy holds: per-agent heads and event counts, and the chain problems."""

    heads: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    unendorsed: list[str] = field(default_factory=list)  # agents whose keys the anchor never saw

    @property
    def agents(self) -> int:
        return len(self.heads)

    @property
    def events(self) -> int:
        return sum(int(h["events"]) for h in self.heads.values())


@dataclass
class BackupResult:
    ok: bool
    path: Path | None
    manifest: Path | None
    sha256: str = ""
    bytes: int = 0
    agents: int = 0
    events: int = 0
    verified: bool = False
    reason: str = ""
    pruned: list[str] = field(default_factory=list)


@dataclass
class RestoreResult:
    ok: bool
    refused: bool
    source: Path
    target: str
    agents: int = 0
    events: int = 0
    reason: str = ""
    problems: list[str] = field(default_factory=list)
    anchor: str = ""  # which anchor key the backup was checked against, and from where


# --------------------------------------------------------------------------- pure decisions

def store_kind(url: str) -> str:
    return "sqlite" if url.startswith("sqlite:///") else "postgresql"


def backup_name(kind: str, now: datetime) -> str:
    """floor-collector-20261129T133456123Z.sqlite3: sorts by time, says what made it."""
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z"
    return f"{PREFIX}{stamp}{SUFFIXES[kind]}"


def contents_of(verification: StoreVerification, agents: Iterable[Mapping[str, Any]],
                allow_unendorsed: bool = False) -> Contents:
    """Heads and problems of a verified store, from verify_store() and list_agents().

    An agent that never reported has no chain to check, but its key is checked all the same;
    `allow_unendorsed` (a backup from before the anchor, accepted by the admin) lists keys
    without endorsement apart instead of as problems. A bad endorsement is always a problem."""
    out = Contents()
    by_id = {item["agent_id"]: item for item in agents}
    for result in verification.agents:
        item = by_id[result.agent_id]
        out.heads[result.agent_id] = {"head_seq": int(item["head_seq"]),
                                      "head_hash": item["head_hash"],
                                      "events": result.stored_events}
        quiet = never_reported(result, int(item["head_seq"]))
        for problem, line in zip(result.report.problems, result.problem_lines(), strict=True):
            if problem.kind == "unendorsed" and allow_unendorsed:
                out.unendorsed.append(result.agent_id)
            elif not quiet or problem.kind in KEY_PROBLEMS:
                out.problems.append(line)
    out.problems += [o.line() for o in verification.orphans]
    return out


def never_reported(result: AgentVerification, head_seq: int) -> bool:
    """Enrolled, but nothing sent yet: no events, no checkpoint, nothing to anchor or lose."""
    return head_seq == 0 and result.stored_events == 0 and result.checkpoint_seq is None


def head_mismatches(expected: Mapping[str, Mapping[str, Any]],
                    found: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Where a restored copy's heads differ from the manifest's (agent by agent)."""
    problems = []
    for agent in sorted(set(expected) | set(found)):
        want, got = expected.get(agent), found.get(agent)
        if want is None:
            problems.append(f"{agent}: in the backup but not in its manifest")
        elif got is None:
            problems.append(f"{agent}: in the manifest but missing from the backup")
        elif (int(want["head_seq"]), want["head_hash"], int(want["events"])) != \
                (int(got["head_seq"]), got["head_hash"], int(got["events"])):
            problems.append(f"{agent}: manifest says head {want['head_seq']} "
                            f"({want['events']} events), backup holds head {got['head_seq']} "
                            f"({got['events']} events)")
    return problems


def prune_plan(entries: Iterable[tuple[str, bool]], keep: int) -> list[str]:
    """Names to delete: all but the newest `keep` verified backups, and failed ones older
    than the oldest kept. A run of failures never pushes out the last good backups.

    entries: (name, verified); names sort by time (backup_name).
    """
    ordered = sorted(entries, reverse=True)
    kept_good = 0
    delete = []
    for name, verified in ordered:
        if kept_good >= keep:
            delete.append(name)
        elif verified:
            kept_good += 1
    return sorted(delete)


def manifest_data(kind: str, source: str, name: str, sha256: str, size: int, created: str,
                  contents: Contents, verified: bool, tool: str) -> dict[str, Any]:
    return {"format": FORMAT, "store": kind, "source": redact_url(source), "file": name,
            "sha256": sha256, "bytes": size, "created": created, "tool": tool,
            "agents": contents.heads, "events": contents.events, "verified": verified,
            "problems": contents.problems[:50]}


# --------------------------------------------------------------------------- file helpers

def manifest_path(backup_file: Path) -> Path:
    return backup_file.with_name(backup_file.name + MANIFEST_SUFFIX)


def read_manifest(backup_file: Path) -> dict[str, Any]:
    """The manifest beside a backup file; BackupError naming the file when unusable."""
    path = manifest_path(backup_file)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BackupError(f"{path}: no manifest beside the backup file (made by "
                          f"'floor-agent collector backup'?)") from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"{path}: unreadable manifest ({exc})") from None
    missing = [k for k in ("format", "store", "file", "sha256", "agents") if k not in data]
    if not isinstance(data, dict) or data.get("format") != FORMAT or missing:
        raise BackupError(f"{path}: not a {FORMAT} manifest (missing {missing or 'format'})")
    if data["store"] not in SUFFIXES or data["file"] != backup_file.name:
        raise BackupError(f"{path}: manifest describes {data.get('file')!r} "
                          f"({data.get('store')}), not {backup_file.name!r}")
    return data


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def backups_in(directory: Path) -> list[tuple[str, bool]]:
    """(name, verified) of the backups this command made: name pattern and manifest agree."""
    out = []
    for path in directory.iterdir() if directory.is_dir() else []:
        if not NAME_RE.match(path.name):
            continue
        try:
            data = read_manifest(path)
        except BackupError:
            continue
        out.append((path.name, bool(data.get("verified"))))
    return out


# --------------------------------------------------------------------------- store adapters

def _sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


def sqlite_copy(source: Path, dest: Path) -> None:
    """One consistent snapshot through the backup API, as a standalone (non-WAL) file."""
    if not source.exists():
        raise BackupError(f"{source}: the SQLite store does not exist")
    src = sqlite3.connect(source, timeout=60)
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)  # pages=-1: all at once, under one read transaction
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    finally:
        src.close()


@dataclass(frozen=True)
class Check:
    """How a store is checked: against which anchor key, and whether keys without any
    endorsement (a store from before the anchor) are accepted."""

    anchor: anchor.TrustedKey
    allow_unendorsed: bool = False
    seal: dict[str, Any] | None = None  # the head seal the copy must not fall below (backup)


def _verify_store(store: Store, check: Check) -> Contents:
    verification = verify_store(store, check.anchor.key, check.seal)
    contents = contents_of(verification, store.list_agents(), check.allow_unendorsed)
    contents.problems += verification.findings
    return contents


def sealable(contents: Contents) -> dict[str, dict[str, Any]]:
    """The heads of a verified copy, for the head seal (agents that reported anything)."""
    return {agent: {"head_seq": int(head["head_seq"]), "head_hash": head["head_hash"]}
            for agent, head in contents.heads.items() if int(head["head_seq"]) > 0}


def _verify_sqlite_file(path: Path, scratch_dir: Path, check: Check) -> tuple[Contents, Path]:
    """Copy to a scratch file, open it as a store, verify; the verified scratch file stays."""
    scratch = scratch_dir / f".verify-{uuid.uuid4().hex}.sqlite3"
    shutil.copyfile(path, scratch)
    os.chmod(scratch, 0o600)
    try:
        store = open_store(f"sqlite:///{scratch}")
    except StoreError as exc:
        return Contents(problems=[f"not a readable store: {exc}"]), scratch
    try:
        return _verify_store(store, check), scratch
    except Exception as exc:  # noqa: BLE001  (a damaged file fails in many ways)
        return Contents(problems=[f"not a readable store: {type(exc).__name__}: {exc}"]), scratch
    finally:
        store.close()


def _pg_admin_url(url: str, dbname: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + dbname))


def _pg_env_and_url(url: str) -> tuple[dict[str, str], str]:
    """The password goes to the client tools through the environment, never argv (ps)."""
    parts = urlsplit(url)
    env = dict(os.environ)
    if parts.password is not None:
        env["PGPASSWORD"] = unquote(parts.password)
        user = parts.netloc.rsplit("@", 1)[0].split(":", 1)[0]
        parts = parts._replace(netloc=f"{user}@{parts.netloc.rsplit('@', 1)[1]}")
    return env, urlunsplit(parts)


def pg_tool(name: str, url: str) -> str:
    """pg_dump/pg_restore of the server's major version when installed, else the default."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            major = conn.info.server_version // 10000
    except psycopg.Error as exc:
        raise BackupError(f"database_url: cannot reach PostgreSQL ({exc})") from None
    versioned = Path(f"/usr/lib/postgresql/{major}/bin/{name}")
    if versioned.exists():
        return str(versioned)
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} is not installed (apt-get install postgresql-client-{major})")
    return found


def _run_pg(args: list[str], url: str) -> None:
    env, plain = _pg_env_and_url(url)
    result = subprocess.run([*args, f"--dbname={plain}"], env=env, capture_output=True,
                            text=True, timeout=PG_TIMEOUT_SECONDS, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{Path(args[0]).name} failed ({result.returncode}): "
                           f"{result.stderr.strip()[-1000:]}")


def _pg_admin(url: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(_pg_admin_url(url, "postgres"), autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


def pg_dump(url: str, dest: Path) -> str:
    tool = pg_tool("pg_dump", url)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    _run_pg([tool, "--format=custom", "--no-owner", f"--file={dest}"], url)
    return tool


def pg_restore(url: str, dump: Path) -> None:
    """Into `url`, replacing the floor-agent tables there, all or nothing."""
    tool = pg_tool("pg_restore", url)
    _run_pg([tool, "--clean", "--if-exists", "--no-owner", "--single-transaction",
             "--exit-on-error", str(dump)], url)


def _verify_pg_dump(url: str, dump: Path, check: Check) -> Contents:
    """Restore into a scratch database on the same server, verify, drop it."""
    scratch = f"floor_verify_{uuid.uuid4().hex[:16]}"
    _pg_admin(url, f'CREATE DATABASE "{scratch}"')
    scratch_url = _pg_admin_url(url, scratch)
    try:
        try:
            pg_restore(scratch_url, dump)
        except RuntimeError as exc:
            return Contents(problems=[f"pg_restore into a scratch database failed: {exc}"])
        store = open_store(scratch_url)
        try:
            return _verify_store(store, check)
        finally:
            store.close()
    finally:
        _pg_admin(url, f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')


def live_mismatches(store: Store, contents: Contents) -> list[str]:
    """The copy must be a prefix of the live chains: its head hash is the live hash there."""
    problems = []
    for agent, head in contents.heads.items():
        seq = int(head["head_seq"])
        if seq == 0:
            continue
        rows = store.chain_events(agent, seq, seq)
        if not rows or rows[0][1].hex() != head["head_hash"]:
            problems.append(f"{agent}: the backup's head at seq {seq} is not in the live store")
    return problems


# --------------------------------------------------------------------------- backup

def backup(config: CollectorConfig, now: datetime | None = None) -> BackupResult:
    """Copy, verify, write the manifest, prune, and record the outcome as an audit event."""
    try:
        result = _backup(config, now or datetime.now(UTC))
    except (BackupError, StoreError, anchor.AnchorError, OSError, sqlite3.Error) as exc:
        result = BackupResult(False, None, None, reason=str(exc))
    _record(config, CollectorKind.BACKUP, result.path.name if result.path else "backup",
            result.ok, store=store_kind(config.collector.resolved_database_url()),
            sha256=result.sha256, bytes=result.bytes, agents=result.agents,
            events=result.events, verified=result.verified, reason=result.reason,
            pruned=result.pruned)
    return result


def _backup(config: CollectorConfig, now: datetime) -> BackupResult:
    url = config.collector.resolved_database_url()
    kind = store_kind(url)
    directory = config.collector.backup.directory
    signer = anchor.load(config)  # no anchor, no backup: an unsigned one could not be told
    check = Check(anchor.trusted_key(config), seal=anchor.read_seal(config))  # from a forgery
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
    except OSError as exc:
        raise BackupError(f"collector.backup.directory: cannot use {directory} ({exc})") from None
    name = backup_name(kind, now)
    path = directory / name
    partial = directory / f".{name}.partial"
    created = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    scratch: Path | None = None
    try:
        if kind == "sqlite":
            tool = f"sqlite3 backup API (SQLite {sqlite3.sqlite_version})"
            try:
                sqlite_copy(_sqlite_path(url), partial)
            except sqlite3.Error as exc:
                raise BackupError(f"{_sqlite_path(url)}: backup failed ({exc})") from None
            contents, scratch = _verify_sqlite_file(partial, directory, check)
        else:
            try:
                tool = pg_dump(url, partial)
            except RuntimeError as exc:
                raise BackupError(str(exc)) from None
            contents = _verify_pg_dump(url, partial, check)
        if not contents.problems:
            store = open_store(url)
            try:
                contents.problems += live_mismatches(store, contents)
            finally:
                store.close()
        sha256, size = file_sha256(partial), partial.stat().st_size
        verified = not contents.problems
        os.replace(partial, path)
        _write_private(manifest_path(path), json.dumps(anchor.sign_manifest(
            signer.key,
            manifest_data(kind, url, name, sha256, size, created, contents, verified, tool)),
            indent=1, sort_keys=True) + "\n")
    finally:
        partial.unlink(missing_ok=True)
        if scratch is not None:
            scratch.unlink(missing_ok=True)
    if verified:
        anchor.write_seal(config, signer, sealable(contents), created, f"collector backup {name}")
    pruned = prune(directory, config.collector.backup.keep)
    reason = "; ".join(contents.problems[:5]) if contents.problems else ""
    return BackupResult(verified, path, manifest_path(path), sha256, size, contents.agents,
                        contents.events, verified, reason, pruned)


def prune(directory: Path, keep: int) -> list[str]:
    doomed = prune_plan(backups_in(directory), keep)
    for name in doomed:
        (directory / name).unlink(missing_ok=True)
        manifest_path(directory / name).unlink(missing_ok=True)
    return doomed


# --------------------------------------------------------------------------- verify and restore

def manifest_problems(manifest: Mapping[str, Any], check: Check) -> list[str]:
    """The manifest's anchor signature against the trusted key: a forged or foreign manifest
    is a problem; an unsigned one (made before the anchor) only when not allowed (pure)."""
    status, words = anchor.check_manifest(check.anchor.key, manifest)
    if status == anchor.VALID or (status == anchor.MISSING and check.allow_unendorsed):
        return []
    hint = (" (a backup from before the anchor: --allow-unanchored accepts it)"
            if status == anchor.MISSING else "")
    return [f"{manifest.get('file', 'manifest')}: {words}{hint}"]


def verify_backup(backup_file: Path, scratch_dir: Path, check: Check,
                  url_for_pg: str | None = None
                  ) -> tuple[dict[str, Any], Contents, Path | None]:
    """Check a backup file: the manifest's anchor signature, the file's sha256 against it,
    then chains, heads and agent key endorsements in a scratch store. Returns (manifest,
    contents, verified scratch SQLite file or None). Every problem found is listed, so a
    forged backup is refused naming the agent whose key was swapped, not only the manifest."""
    if not backup_file.is_file():
        raise BackupError(f"{backup_file}: no such backup file")
    manifest = read_manifest(backup_file)
    signature = manifest_problems(manifest, check)
    actual = file_sha256(backup_file)
    if actual != manifest["sha256"]:
        return manifest, Contents(problems=[f"{backup_file.name}: sha256 {actual} does not "
                                            f"match the manifest's {manifest['sha256']}",
                                            *signature]), None
    if manifest["store"] == "sqlite":
        contents, scratch = _verify_sqlite_file(backup_file, scratch_dir, check)
    else:
        if url_for_pg is None or store_kind(url_for_pg) != "postgresql":
            raise BackupError(f"{backup_file.name}: a PostgreSQL dump restores into a "
                              f"PostgreSQL store only (database_url)")
        contents, scratch = _verify_pg_dump(url_for_pg, backup_file, check), None
    if not contents.problems:
        contents.problems += head_mismatches(manifest["agents"], contents.heads)
    contents.problems += signature
    return manifest, contents, scratch


def collector_listening(config: CollectorConfig) -> bool:
    """True when something accepts connections on the collector's port (it is running)."""
    section = config.collector
    host = section.listen_host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    try:
        with socket.create_connection((host, section.listen_port), timeout=2):
            return True
    except OSError:
        return False


def restore(config: CollectorConfig, backup_file: Path, force: bool = False,
            anchor_key: str | None = None, allow_unanchored: bool = False) -> RestoreResult:
    """Verify, then replace the store with the backup; records `collector.restore`.

    `anchor_key` (--anchor-key) overrides the trusted anchor public key; `allow_unanchored`
    accepts a backup from before the anchor (unsigned manifest, keys without endorsement)."""
    url = config.collector.resolved_database_url()
    result = RestoreResult(False, False, backup_file, redact_url(url))
    try:
        check = Check(anchor.trusted_key(config, anchor_key), allow_unanchored)
        result.anchor = f"anchor {check.anchor.key_id} from {check.anchor.source}"
        _restore(config, url, backup_file, force, result, check)
    except (BackupError, StoreError, anchor.AnchorError) as exc:
        result.ok, result.refused, result.reason = False, True, str(exc)
    except (OSError, sqlite3.Error) as exc:
        result.ok, result.reason = False, f"{type(exc).__name__}: {exc}"
    if result.reason and not result.problems:
        result.problems = [result.reason]
    _record(config, CollectorKind.RESTORE, backup_file.name, result.ok, refused=result.refused,
            target=result.target, agents=result.agents, events=result.events,
            forced=force, reason=result.reason, anchor=result.anchor,
            allow_unanchored=allow_unanchored, problems=result.problems[:50])
    return result


def _restore(config: CollectorConfig, url: str, backup_file: Path, force: bool,
             result: RestoreResult, check: Check) -> None:
    if collector_listening(config):
        raise BackupError(f"the collector is running (port {config.collector.listen_port} "
                          f"answers): stop it before restoring")
    kind = store_kind(url)
    target_dir = _sqlite_path(url).parent if kind == "sqlite" else Path(tempfile.gettempdir())
    target_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    manifest, contents, scratch = verify_backup(backup_file, target_dir, check, url)
    try:
        if manifest["store"] != kind:
            raise BackupError(f"{backup_file.name}: a {manifest['store']} backup cannot be "
                              f"restored into a {kind} store")
        if contents.problems:
            result.problems = contents.problems
            result.reason = "; ".join(contents.problems[:5])
            return
        held = _events_in(url)
        if held and not force:
            raise BackupError(f"{result.target}: the store holds {held} events; restoring would "
                              f"replace them (use --force to do it anyway)")
        if kind == "sqlite":
            assert scratch is not None
            target = _sqlite_path(url)
            owner = target.stat() if target.exists() else None
            for leftover in (Path(f"{target}-wal"), Path(f"{target}-shm")):
                leftover.unlink(missing_ok=True)  # an old WAL must never replay onto the copy
            os.replace(scratch, target)
            scratch = None
            if owner is not None and os.geteuid() == 0:
                os.chown(target, owner.st_uid, owner.st_gid)
        else:
            try:
                pg_restore(url, backup_file)
            except RuntimeError as exc:
                result.reason = str(exc)
                return
        store = open_store(url)
        try:
            checked = verify_store(store, check.anchor.key)
            after = contents_of(checked, store.list_agents(), check.allow_unendorsed)
            record(store, checked, "collector restore", utc_timestamp())
        finally:
            store.close()
        problems = after.problems + head_mismatches(manifest["agents"], after.heads)
        result.agents, result.events = after.agents, after.events
        result.ok = not problems
        result.problems = problems
        result.reason = "; ".join(problems[:5])
        if result.ok:
            _reseal(config, check, after, backup_file.name)
    finally:
        if scratch is not None:
            scratch.unlink(missing_ok=True)


def _reseal(config: CollectorConfig, check: Check, contents: Contents, name: str) -> None:
    """After a restore the store is meant to be back at the backup's heads: the head seal
    starts again from them (the restore itself is on the audit trail). Without the anchor key
    (a check elsewhere with --anchor-key) the old seal stays, and verify says the store went
    back below it, which is then the truth."""
    try:
        signer = anchor.load(config)
    except anchor.AnchorError:
        return
    if signer.key_id == check.anchor.key_id:
        anchor.write_seal(config, signer, sealable(contents), utc_timestamp(),
                          f"collector restore {name}", replace=True)


def _events_in(url: str) -> int:
    store = open_store(url)
    try:
        return int(store.stats()["events"])
    finally:
        store.close()


# --------------------------------------------------------------------------- audit

def _record(config: CollectorConfig, kind: str, subject: str, ok: bool, **data: Any) -> None:
    """The outcome on the collector's own trail; the running collector delivers it."""
    severity = "notice" if ok else ("warning" if data.get("refused") else "critical")
    writer = self_audit.open_writer(config)
    try:
        writer.emit(kind, subject, severity, ok=ok, **data)
    finally:
        writer.close()
