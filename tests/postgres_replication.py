"""A real PostgreSQL 15 primary with a synchronous streaming standby, for failover tests.

The standby is a copy taken with `pg_basebackup -R` (it writes the standby.signal and the
primary_conninfo) and streams from the primary; once it is attached, the primary is made to
wait for it at every commit (`synchronous_standby_names`, `synchronous_commit = on`), as the
admin guide (docs/DATABASE.md) sets a production pair up. `promote()` is `pg_ctl promote`,
what Patroni or repmgr run in production.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from pathlib import Path

import psycopg
from postgres_server import SYSTEM_USER, PostgresServer

# a primary whose commits must survive its loss: synchronous commit and full-page writes on
# (pg_basebackup needs them); fsync may stay off, the tests kill processes, not the machine
PRIMARY_SETTINGS = {"synchronous_commit": "on", "full_page_writes": "on",
                    "wal_level": "replica", "max_wal_senders": "5"}


class StandbyServer(PostgresServer):
    """A streaming standby of `primary`, named `name` (its application_name there)."""

    def __init__(self, primary: PostgresServer, name: str = "standby1") -> None:
        super().__init__(primary.dbname, primary.start_timeout,
                         PRIMARY_SETTINGS | {"cluster_name": name, "hot_standby": "on"})
        self.primary = primary
        self.name = name

    def start(self) -> StandbyServer:
        self.dir = Path(tempfile.mkdtemp(prefix="floor-pg-standby-"))
        atexit.register(self.stop)
        try:
            if os.geteuid() == 0:
                shutil.chown(self.dir, SYSTEM_USER)
            self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary.port),
                      "-U", "postgres", "-D", str(self.dir / "data"), "-R", "-X", "stream",
                      "-c", "fast", "--no-sync")
            self._start_on_free_port()
            self._started = True
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def make_synchronous(self, timeout: float = 60.0) -> None:
        """Have the primary wait for this standby at every commit, once it streams."""
        with psycopg.connect(self.primary.admin_url, autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{self.name}'")
            conn.execute("SELECT pg_reload_conf()")
            deadline = time.monotonic() + timeout
            while True:
                row = conn.execute("SELECT sync_state FROM pg_stat_replication WHERE "
                                   "application_name = %s", (self.name,)).fetchone()
                if row is not None and row[0] == "sync":
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"standby {self.name} not synchronous: {row}"
                                       f"{self._log_tail()}")
                time.sleep(0.1)

    def promote(self) -> None:
        """pg_ctl promote: the standby ends recovery and takes writes."""
        assert self.dir is not None
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-w", "-t",
                  str(int(self.start_timeout)), "promote")
