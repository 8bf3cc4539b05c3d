"""A private SQLite file (mode 0600, WAL, synchronous=FULL) with a schema version: how the
local stores of the agents (the door's credentials cache, the camera box's segment index)
are opened. One place, so each store only says what it holds."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path


def open_private_db(path: Path, schema: str, version: int, what: str,
                    error: type[Exception]) -> sqlite3.Connection:
    """Open (or create) `path` readable by its owner only (the file and its WAL and shared-
    memory files), apply `schema` (CREATE ... IF NOT EXISTS, with a `meta(key, value)` table)
    and check its recorded version. Any failure is `error("<path>: ... <what> ...")`."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        for suffix in ("", "-wal", "-shm"):
            side = Path(f"{path}{suffix}")
            if side.exists():
                os.chmod(side, 0o600)
    except OSError as e:
        raise error(f"{path}: cannot open the {what} ({e.strerror})") from None
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as e:
        raise error(f"{path}: cannot open the {what} ({e})") from None
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(schema)
        row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None:
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(version),))
        elif row[0] != str(version):
            raise error(f"{path}: {what} schema {row[0]!r}, expected {version}")
    except sqlite3.Error as e:
        db.close()
        raise error(f"{path}: not a {what} ({e})") from None
    except error:
        db.close()
        raise
    return db
