"""The thin SFTP side of a retention sweep: list a root with lstat, remove files, re-check.

Nothing here decides: the listing is plain data for `plan`, removal takes a path the plan
chose. Symlinks are never followed (lstat and readdir attributes only, readlink for the
report); a path is re-checked as a regular file right before it is removed, so a file swapped
for a symlink between listing and removal is refused, not followed.
"""

from __future__ import annotations

import stat
from typing import Literal

import paramiko

from floor_agent.retention.config import RetentionServer
from floor_agent.retention.plan import (
    Entry,
    EntryKind,
    Listing,
    absolute,
    event_ref,
    policy_of,
)
from floor_agent.sftp import close_quietly, connect_pinned

MANIFEST_MAX_BYTES = 1 << 20


class ConnectionLost(Exception):
    """The SSH connection failed or dropped; the text says where and during what."""


class RootUnusable(Exception):
    """The configured root is missing, not a directory, a symlink or unreadable."""


class NotRemovable(Exception):
    """The path is no longer a regular file, or the server refused to remove it; the text is
    the reason only (the caller names the path in the form its output allows)."""


def is_connection_loss(exc: BaseException) -> bool:
    """SFTP status errors carry an errno; a dead transport does not."""
    if isinstance(exc, EOFError | paramiko.SSHException | TimeoutError | ConnectionError):
        return True
    return isinstance(exc, OSError) and exc.errno is None


def _kind(mode: int) -> EntryKind:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    return "other"


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


class SftpTree:
    """One server's root over one SFTP session."""

    def __init__(self, server: RetentionServer) -> None:
        self.server = server
        self.where = f"{server.user}@{server.host}:{server.port}"
        self.policy = policy_of(server)
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    def connect(self) -> None:
        """Raises floor_agent.sftp.SftpConnectError when the pinned session cannot open."""
        s = self.server
        self._client, self._sftp = connect_pinned(
            s.host, s.port, s.user, s.key_file, s.known_hosts_file, s.timeout_seconds,
            host_key_line=s.host_key)

    def close(self) -> None:
        sftp, client = self._sftp, self._client
        self._sftp = self._client = None
        close_quietly(sftp, client)

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            raise ConnectionLost(f"{self.where}: not connected")
        return self._sftp

    def _lost(self, during: str, exc: BaseException) -> ConnectionLost:
        self.close()
        return ConnectionLost(f"{self.where}: connection lost while {during} "
                              f"({exc or type(exc).__name__})")

    def listing(self, manifest_name: str | None) -> Listing:
        """Every entry under the root (lstat), and the text of each job's manifest."""
        root = self.server.root
        try:
            mode = self.sftp.lstat(root).st_mode or 0
        except OSError as e:
            if is_connection_loss(e):
                raise self._lost(f"reading {root}", e) from None
            raise RootUnusable(f"{self.where}: root {root} is unusable ({_reason(e)})") from None
        except (EOFError, paramiko.SSHException) as e:
            raise self._lost(f"reading {root}", e) from None
        if stat.S_ISLNK(mode):
            raise RootUnusable(f"{self.where}: root {root} is a symlink; configure the real path")
        if not stat.S_ISDIR(mode):
            raise RootUnusable(f"{self.where}: root {root} is not a directory")
        entries: list[Entry] = []
        texts: dict[str, str] = {}
        pending = [""]
        while pending:
            rel_dir = pending.pop()
            path = f"{root}/{rel_dir}" if rel_dir else root
            try:
                attrs = self.sftp.listdir_attr(path)
            except OSError as e:
                if is_connection_loss(e):
                    raise self._lost(f"listing {self._dir_ref(rel_dir)}", e) from None
                if not rel_dir:
                    raise RootUnusable(f"{self.where}: root {root} is unreadable "
                                       f"({_reason(e)})") from None
                entries = [x for x in entries if x.path != rel_dir]
                entries.append(Entry(rel_dir, "dir", error=f"cannot list: {_reason(e)}"))
                continue
            except (EOFError, paramiko.SSHException) as e:
                raise self._lost(f"listing {self._dir_ref(rel_dir)}", e) from None
            for attr in attrs:
                rel = f"{rel_dir}/{attr.filename}" if rel_dir else attr.filename
                kind = _kind(attr.st_mode or 0)
                entry = Entry(rel, kind, int(attr.st_size or 0), int(attr.st_mtime or 0))
                if kind == "symlink":
                    entry = Entry(rel, kind, entry.size, entry.mtime, self._readlink(rel))
                elif kind == "dir":
                    pending.append(rel)
                elif (kind == "file" and manifest_name is not None
                      and attr.filename == manifest_name and rel.count("/") == 2):
                    text, error = self._read_text(rel)
                    if text is not None:
                        texts[rel] = text
                    else:
                        entry = Entry(rel, kind, entry.size, entry.mtime, error=error)
                entries.append(entry)
        return Listing(root, tuple(entries), texts)

    def _dir_ref(self, rel_dir: str) -> str:
        return event_ref(rel_dir, self.policy) if rel_dir else self.server.root

    def _readlink(self, rel: str) -> str:
        try:
            return self.sftp.readlink(absolute(self.server.root, rel)) or ""
        except OSError as e:
            if is_connection_loss(e):
                raise self._lost(f"reading the link {event_ref(rel, self.policy)}", e) from None
            return f"<unreadable: {_reason(e)}>"

    def _read_text(self, rel: str) -> tuple[str | None, str | None]:
        try:
            with self.sftp.open(absolute(self.server.root, rel), "rb") as f:
                data = f.read(MANIFEST_MAX_BYTES + 1)
        except OSError as e:
            if is_connection_loss(e):
                raise self._lost(f"reading {event_ref(rel, self.policy)}", e) from None
            return None, _reason(e)
        if len(data) > MANIFEST_MAX_BYTES:
            return None, f"larger than {MANIFEST_MAX_BYTES} bytes"
        try:
            return data.decode("utf-8"), None
        except UnicodeDecodeError:
            return None, "not UTF-8"

    def remove(self, rel: str) -> Literal["removed", "absent"]:
        """Remove one regular file; "absent" when an earlier (interrupted) sweep got it."""
        path = absolute(self.server.root, rel)
        try:
            mode = self.sftp.lstat(path).st_mode or 0
            if not stat.S_ISREG(mode):
                raise NotRemovable(f"no longer a regular file ({_kind(mode)}), left alone")
            self.sftp.remove(path)
        except FileNotFoundError:
            return "absent"
        except OSError as e:
            if is_connection_loss(e):
                raise self._lost(f"removing {event_ref(rel, self.policy)}", e) from None
            raise NotRemovable(f"the server refused ({_reason(e)})") from None
        except (EOFError, paramiko.SSHException) as e:
            raise self._lost(f"removing {event_ref(rel, self.policy)}", e) from None
        return "removed"

    def present(self, rel: str) -> bool:
        """Is anything still at this path (lstat, so a dangling symlink counts too)?"""
        try:
            self.sftp.lstat(absolute(self.server.root, rel))
        except FileNotFoundError:
            return False
        except OSError as e:
            if is_connection_loss(e):
                raise self._lost(f"re-checking {event_ref(rel, self.policy)}", e) from None
            return True  # cannot prove it is gone: it counts as residue
        except (EOFError, paramiko.SSHException) as e:
            raise self._lost(f"re-checking {event_ref(rel, self.policy)}", e) from None
        return True
