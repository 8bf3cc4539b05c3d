"""The last verified policy envelope, kept in the agent's state dir (policy.json, 0600).

Kept as the collector signed it, never as parsed data: at start it is verified again with the
pinned key, so a file edited on disk is refused like a forged answer. Written atomically: a
temporary file beside it, flushed to disk, renamed over it, the directory flushed; a crash at
any moment leaves the old file or the new one, never a part of either."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

CACHE_FILE = "policy.json"


class PolicyCache:
    """One file under the agent's state dir."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / CACHE_FILE
        self.temporary = state_dir / (CACHE_FILE + ".tmp")

    def load(self) -> bytes | None:
        """The cached envelope's bytes, or None when there is none yet."""
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def store(self, envelope: bytes) -> None:
        """Replace the cached envelope atomically (mode 0600)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temporary)  # a crash's leftover: never opened as the cache
        fd = os.open(self.temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(envelope)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self.temporary, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
