"""A real, throwaway PostgreSQL 15 server for tests: initdb in a temp dir, one port, gone after.

Root cannot run initdb/postgres, so as root the server runs as the `postgres` system user (the
Debian package creates it); as anyone else it runs as that user. It listens on 127.0.0.1 only,
with trust auth and fsync off: nothing here outlives the test session. Tests import the
`postgres_server` fixture (session-scoped); every test store gets its own database from
`new_database()`, so tests never see each other's rows.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

PG_BIN = Path(os.environ.get("FLOOR_AGENT_PG_BIN", "/usr/lib/postgresql/15/bin"))
SYSTEM_USER = "postgres"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """A PostgreSQL cluster of its own; use as a context manager or start()/stop()."""

    # fsync, synchronous commit and full-page writes off: nothing here outlives the session
    DEFAULT_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
                        "max_connections": "300"}

    def __init__(self, dbname: str = "floor_test", start_timeout: float = 60.0,
                 settings: dict[str, str] | None = None) -> None:
        """settings: server settings over DEFAULT_SETTINGS (a replicated primary turns
        synchronous commit and full-page writes back on)."""
        self.dbname = dbname
        self.start_timeout = start_timeout
        self.settings = self.DEFAULT_SETTINGS | (settings or {})
        self.port = 0
        self.dir: Path | None = None
        self._started = False

    # -- lifecycle -----------------------------------------------------------------------
    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a server binary as the postgres user (as root) or as ourselves."""
        command = [str(PG_BIN / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", SYSTEM_USER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                                check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n"
                               f"{result.stdout}{result.stderr}{self._log_tail()}")
        return result

    def _log_tail(self) -> str:
        log = self.dir / "log" if self.dir else None
        if log is None or not log.exists():
            return ""
        return "\n--- server log ---\n" + "\n".join(log.read_text(errors="replace")
                                                      .splitlines()[-30:])

    def start(self) -> PostgresServer:
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError(f"PostgreSQL 15 is not installed: no {PG_BIN}/initdb "
                               f"(apt-get install postgresql-15)")
        self.dir = Path(tempfile.mkdtemp(prefix="floor-pg-"))
        atexit.register(self.stop)  # a session that dies before teardown leaves no server
        try:
            if os.geteuid() == 0:
                shutil.chown(self.dir, SYSTEM_USER)
            # UTF8 (the store needs it) and the C locale, which exists on every host.
            self._run("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres",
                      "-E", "UTF8", "--locale=C", "--no-sync")
            self._start_on_free_port()
            self._started = True
            self._wait_ready()
            self._admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.dbname)))
        except BaseException:
            self.stop()
            raise
        return self

    def _start_on_free_port(self) -> None:
        """pg_ctl start on a free port; another process may grab it first, so retry."""
        for attempt in range(5):
            self.port = _free_port()
            if self._pg_ctl_start(check=attempt == 4).returncode == 0:
                return

    def _pg_ctl_start(self, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert self.dir is not None
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 " + " ".join(
            f"-c {name}={value}" for name, value in self.settings.items())
        return self._run("pg_ctl", "-D", str(self.dir / "data"), "-o", options,
                         "-l", str(self.dir / "log"), "-w", "-t",
                         str(int(self.start_timeout)), "start", check=check)

    # -- outages (tests of what the collector does while its database is away) -----------
    def halt(self, mode: str = "fast") -> None:
        """Stop the server, keeping its data and port: fast (clients are told, as at a
        planned stop) or immediate (no shutdown at all, as at a crash)."""
        assert self.dir is not None and self._started
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", mode, "-w", "stop")
        self._started = False

    def resume(self) -> None:
        """Start a halted server again on the same port, with the same data."""
        self._pg_ctl_start()
        self._started = True
        self._wait_ready()

    def _wait_ready(self) -> None:
        """pg_ctl -w already waits; also make sure TCP connections get through."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                psycopg.connect(self.admin_url, connect_timeout=2).close()
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL on port {self.port} does not accept "
                                       f"connections: {exc}{self._log_tail()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.dir is None:
            return
        if self._started:
            self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop",
                      check=False)
            self._started = False
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- databases -----------------------------------------------------------------------
    def url_of(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    @property
    def url(self) -> str:
        return self.url_of(self.dbname)

    @property
    def admin_url(self) -> str:
        return self.url_of("postgres")

    def _admin(self, statement: sql.Composable) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(statement)

    def new_database(self, name: str | None = None, icu_locale: str | None = None) -> str:
        """Create an empty database (a unique name when none is given); returns its URL.

        icu_locale (e.g. "en-US") makes it the database's default collation, under which
        "Zone" sorts after "door": a store must not depend on the C order of the cluster.
        """
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if icu_locale:
            statement += sql.SQL(" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE {}").format(
                sql.Literal(icu_locale))
        self._admin(statement)
        return self.url_of(name)


# One server per test session, even when several modules (or conftest.py and a test module)
# import the fixture: each import defines a fixture of its own, they all share this server.
_shared: PostgresServer | None = None
_users = 0
_shared_lock = threading.Lock()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server; call .new_database() for an isolated database."""
    global _shared, _users
    with _shared_lock:
        if _shared is None:
            _shared = PostgresServer().start()
        _users += 1
        server = _shared
    try:
        yield server
    finally:
        with _shared_lock:
            _users -= 1
            if _users == 0:
                server.stop()
                _shared = None
