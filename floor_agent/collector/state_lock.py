"""One running collector per state directory.

The state directory holds the collector's own audit identity: its key, its spool and the
forwarder's position. Two `collector run` on one directory are two forwarders of one chain:
each sends what the other already delivered, with an older checkpoint, and the store calls it
a replay (a false critical alert within seconds, issue 23). A second collector of a site gets a
directory of its own (`collector join-request` makes it); this lock makes the mistake an error
at start instead of an alarm.

flock, not a PID file alone: the kernel drops it when the holder dies, kill -9 too, so a
crashed collector never blocks its restart. The PID written into the file is only for the
message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = "run.lock"


class StateDirBusy(RuntimeError):
    """Another live collector holds the state directory: the message names it and the fix."""


def busy_message(state_dir: Path, holder: str) -> str:
    who = f"pid {holder}" if holder.isdigit() else "another process"
    return (f"{state_dir} is in use by another running collector ({who}): every collector "
            f"needs a state_dir of its own (its audit key and spool are there); a second "
            f"collector of a site is prepared with 'floor-agent collector join-request' "
            f"(docs/ADMIN.md)")


def hold(state_dir: Path) -> int:
    """Take the state directory for this process (until it exits); StateDirBusy when another
    live collector has it. Returns the descriptor, which must stay open."""
    path = Path(state_dir) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise StateDirBusy(busy_message(Path(state_dir), holder)) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
