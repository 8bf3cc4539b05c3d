"""A second copy off the box: segments go over SFTP (paramiko) to central storage.

Trust is pinned, never learned: the server's host key must be the one line in known_hosts_file
(RejectPolicy: an unknown or changed key is refused with a clear error), and we log in with our
key only (no agent, no password, no keys found lying around).

Each segment goes to remote_dir/CAMERA/YYYY-MM-DD/HH/<file> by way of `<file>.part`, renamed
when complete, so a half-written file never has the final name. After an outage the upload
continues from the size of the .part on the server. The remote file is then read back and
hashed; only a match with the segment's recorded SHA-256 marks it offloaded (a mismatch deletes
the remote file and sends it again from the start). The local copy is not touched: only
retention deletes footage.

A local file whose hash no longer matches its record is never sent (it would pass on altered
footage as the original); it is reported once as `cctv.offload_refused` and left pending.
Events: `cctv.offloaded` (counts per round), `cctv.offload_failed` (once per outage, warning),
`cctv.offload_recovered`. Error texts name the host, the camera and the seq, never key material.
"""

from __future__ import annotations

import hashlib
import posixpath
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import paramiko

from floor_agent.cctv.config import OffloadConfig
from floor_agent.cctv.index import IndexError_, SegmentIndex, SegmentRecord
from floor_agent.common.backoff import backoff_delay
from floor_agent.common.files import file_sha256
from floor_agent.protocol.emit import Emit
from floor_agent.protocol.kinds.cctv import CctvKind
from floor_agent.sftp import SftpConnectError, close_quietly, connect_pinned

Progress = Callable[[SegmentRecord, int], object]  # (segment, bytes on the server so far)
SUBJECT = "cctv offload"
CHUNK = 256 * 1024


class OffloadError(Exception):
    """An upload or the connection failed; the text says what and where."""


class FootageAltered(OffloadError):
    """The local file is gone or no longer matches its recorded hash: it is not sent (and an
    unreadable file must not hold up the queue as if the server were down)."""


@dataclass(frozen=True, slots=True)
class Upload:
    """One segment at central storage."""

    camera_id: str
    seq: int
    remote_path: str
    size: int
    resumed_from: int  # bytes already on the server in a .part (0: from the start)
    retries: int  # hash mismatches after upload, each followed by a fresh upload


@dataclass
class OffloadRound:
    """What one pass over the pending segments did."""

    uploads: list[Upload] = field(default_factory=list)
    error: str | None = None
    refused: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(u.size for u in self.uploads)


def remote_path_of(remote_dir: str, record: SegmentRecord) -> str:
    """remote_dir/CAMERA/YYYY-MM-DD/HH/<file>, from the segment's UTC start."""
    seg = record.segment
    start = seg.start.astimezone(UTC)
    return posixpath.join(remote_dir, seg.camera_id, start.strftime("%Y-%m-%d"),
                          start.strftime("%H"), PurePosixPath(seg.path).name)


class Offloader:
    """Uploads pending segments; `start()` runs it as a thread until `stop()`."""

    def __init__(self, config: OffloadConfig, index: SegmentIndex, storage_dir: Path,
                 emit: Emit, *, batch: int = 50, idle_seconds: float = 5.0,
                 progress: Progress | None = None, max_hash_retries: int = 2) -> None:
        self.config = config
        self.index = index
        self.storage_dir = Path(storage_dir)
        self.emit = emit
        self.batch = batch
        self.idle_seconds = idle_seconds
        self.progress = progress
        self.max_hash_retries = max_hash_retries
        self.shutdown = threading.Event()
        self.wake = threading.Event()  # the writer sets it when a segment is complete
        self.failures = 0
        self.outage_since: float | None = None
        self.last_error: str | None = None
        self._refused: set[tuple[str, int]] = set()
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        c = self.config
        return f"Offloader({c.user}@{c.host}:{c.port}, remote_dir={c.remote_dir!r})"

    @property
    def where(self) -> str:
        return f"{self.config.user}@{self.config.host}:{self.config.port}"

    # --- connection ------------------------------------------------------------------------------

    def connect(self) -> paramiko.SFTPClient:
        """An SFTP session to the pinned host with our key, or OffloadError saying why not."""
        if self._sftp is not None:
            return self._sftp
        c = self.config
        try:
            client, sftp = connect_pinned(c.host, c.port, c.user, c.key_file,
                                          c.known_hosts_file, c.timeout_seconds)
        except SftpConnectError as e:
            raise OffloadError(str(e)) from None
        self._client, self._sftp = client, sftp
        return sftp

    def close(self) -> None:
        sftp, client = self._sftp, self._client
        self._sftp = self._client = None
        close_quietly(sftp, client)

    # --- one segment -----------------------------------------------------------------------------

    def upload(self, record: SegmentRecord) -> Upload:
        """Send one segment (resuming a .part), check its hash there, mark it offloaded."""
        seg = record.segment
        what = f"camera {seg.camera_id} seq {seg.seq}"
        local = self.storage_dir / seg.path
        try:
            local_hash = file_sha256(local)
        except OSError as e:
            raise FootageAltered(f"{what}: cannot read {seg.path} ({e.strerror})") from None
        if local_hash != seg.sha256:
            raise FootageAltered(f"{what}: {seg.path} does not match its recorded SHA-256; "
                                 "altered footage is not offloaded")
        remote = remote_path_of(self.config.remote_dir, record)
        sftp = self.connect()
        try:
            self._makedirs(sftp, posixpath.dirname(remote))
            retries = 0
            resumed_from = 0
            while True:
                if not self._final_present(sftp, remote, seg.size):
                    resumed_from = self._send(sftp, record, local, remote)
                if self._remote_sha256(sftp, remote) == seg.sha256:
                    break
                sftp.remove(remote)
                retries += 1
                self.emit(CctvKind.OFFLOAD_MISMATCH, f"camera {seg.camera_id}", "warning",
                          camera_id=seg.camera_id, seq=seg.seq, remote_path=remote,
                          attempt=retries)
                if retries > self.max_hash_retries:
                    raise OffloadError(f"{what}: the copy at {self.where}:{remote} does not "
                                       f"match its hash after {retries} uploads")
        except (TimeoutError, OSError, EOFError, paramiko.SSHException) as e:
            self.close()
            raise OffloadError(f"{what}: upload to {self.where}:{remote} failed "
                               f"({getattr(e, 'strerror', None) or e or type(e).__name__})"
                               ) from None
        self.index.mark_offloaded(seg.camera_id, seg.seq, remote, datetime.now(UTC))
        return Upload(seg.camera_id, seg.seq, remote, seg.size, resumed_from, retries)

    @staticmethod
    def _makedirs(sftp: paramiko.SFTPClient, path: str) -> None:
        parts = PurePosixPath(path).parts
        for i in range(1, len(parts) + 1):
            partial = str(PurePosixPath(*parts[:i]))
            try:
                if not stat.S_ISDIR(sftp.stat(partial).st_mode or 0):
                    raise OSError(f"{partial} exists and is not a directory")
            except FileNotFoundError:
                sftp.mkdir(partial)

    @staticmethod
    def _final_present(sftp: paramiko.SFTPClient, remote: str, size: int) -> bool:
        """A complete file already there (an earlier run died before marking it): check it."""
        try:
            return sftp.stat(remote).st_size == size
        except FileNotFoundError:
            return False

    def _send(self, sftp: paramiko.SFTPClient, record: SegmentRecord, local: Path,
              remote: str) -> int:
        """Copy local to remote.part from where an earlier attempt stopped; rename; returns the
        offset it resumed from."""
        part = remote + ".part"
        try:
            offset = int(sftp.stat(part).st_size or 0)
        except FileNotFoundError:
            offset = 0
        if offset > record.segment.size:
            sftp.remove(part)
            offset = 0
        with open(local, "rb") as src, sftp.open(part, "ab" if offset else "wb") as dst:
            src.seek(offset)
            sent = offset
            while chunk := src.read(CHUNK):
                dst.write(chunk)
                dst.flush()
                sent += len(chunk)
                if self.progress is not None:
                    self.progress(record, sent)
        sftp.posix_rename(part, remote)
        return offset

    @staticmethod
    def _remote_sha256(sftp: paramiko.SFTPClient, remote: str) -> str:
        digest = hashlib.sha256()
        with sftp.open(remote, "rb") as f:
            f.prefetch()
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    # --- rounds and the thread -------------------------------------------------------------------

    def run_once(self) -> OffloadRound:
        """Upload what is pending (oldest first) until done or the first failure."""
        result = OffloadRound()
        try:
            for record in self.index.pending_offload(self.batch):
                key = (record.segment.camera_id, record.segment.seq)
                if key in self._refused or self.shutdown.is_set():
                    continue
                try:
                    result.uploads.append(self.upload(record))
                except FootageAltered as e:
                    self._refused.add(key)
                    result.refused.append(str(e))
                    self.emit(CctvKind.OFFLOAD_REFUSED, f"camera {key[0]}", "critical",
                              camera_id=key[0], seq=key[1], error=str(e))
        except (OffloadError, IndexError_) as e:
            result.error = str(e)
        if result.uploads:
            cameras: dict[str, int] = {}
            for u in result.uploads:
                cameras[u.camera_id] = cameras.get(u.camera_id, 0) + 1
            self.emit(CctvKind.OFFLOADED, SUBJECT, "info", count=len(result.uploads),
                      bytes=result.bytes, cameras=cameras,
                      resumed=sum(1 for u in result.uploads if u.resumed_from))
        self._account(result)
        return result

    def _account(self, result: OffloadRound) -> None:
        """Outage bookkeeping: one warning when it starts, one notice when it ends."""
        if result.error is not None:
            self.failures += 1
            self.last_error = result.error
            if self.outage_since is None:
                self.outage_since = time.monotonic()
                self.emit(CctvKind.OFFLOAD_FAILED, SUBJECT, "warning", host=self.config.host,
                          port=self.config.port, error=result.error)
        elif result.uploads and self.outage_since is not None:
            self.emit(CctvKind.OFFLOAD_RECOVERED, SUBJECT, "notice", host=self.config.host,
                      port=self.config.port, failed_attempts=self.failures,
                      outage_seconds=round(time.monotonic() - self.outage_since))  # int: no floats
            self.failures = 0
            self.outage_since = None
            self.last_error = None

    def next_delay(self) -> float:
        if self.failures:
            return backoff_delay(self.failures, self.config.backoff_initial_seconds,
                                 self.config.backoff_max_seconds)
        return self.idle_seconds

    def run(self) -> None:
        while not self.shutdown.is_set():
            self.wake.clear()
            result = self.run_once()
            if result.uploads and result.error is None:
                continue  # more may be pending
            delay = self.next_delay()
            if result.error is None:
                self.wake.wait(delay)  # idle: a new segment wakes us early
            else:
                self.shutdown.wait(delay)  # outage: back off, whatever arrives
        self.close()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="cctv-offload", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.shutdown.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
