"""Events in tests go through the real emit path, and every kind the code can emit does once.

A test double that only appends `(kind, data)` to a list accepts what the audit chain refuses
(a float in `data`, a NUL in a subject): `door.sync_recovered` and `cctv.offload_recovered`
shipped with float fields and failed only in production. So:

- `AuditRecorder` is the emit callable for in-process tests: a real Spool in a temporary
  directory (chained, validated, on disk), plus the list of what was emitted for assertions.
- This plugin notes every kind any Spool in the test process wrote, and every kind a test's
  collector process stored (agents running as processes emit through their own Spool and
  deliver to it); `test_event_kinds.py` (run last) fails when a kind the code can emit was
  never written by any test. Limit: a batch a test forges by hand (tests/batches.py) names
  kinds of its own, which count too; no test forges a capability's kind.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from floor_agent.audit.spool import Spool
from floor_agent.protocol.event import AuditEvent

EMITTED: set[str] = set()
_write_one = Spool._write_one


def _noting_write_one(self: Spool, seq: int, prev: bytes, kind: str, subject: str,
                      severity: str, data: dict[str, Any]) -> tuple[AuditEvent, bytes]:
    written = _write_one(self, seq, prev, kind, subject, severity, data)
    EMITTED.add(kind)
    return written


Spool._write_one = _noting_write_one  # type: ignore[method-assign]


def note_files_under(root: Path) -> None:
    """Add the kinds in every agent spool and collector store under `root` (the session's
    temporary directory): agents that ran as processes wrote them through their own Spool."""
    for path in root.rglob("spool.db"):
        _note_sqlite(path, "SELECT body FROM pending", from_body=True)
    for path in root.rglob("collector.db"):
        note_stored_kinds(path, None)


def _note_sqlite(path: Path, query: str, from_body: bool = False) -> None:
    with contextlib.suppress(Exception):  # a file a test damaged on purpose adds nothing
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            for (value,) in db.execute(query):
                EMITTED.add(json.loads(value)["kind"] if from_body else value)
        finally:
            db.close()


def note_stored_kinds(sqlite_path: Path, database_url: str | None) -> None:
    """Add the kinds a collector stored (its SQLite file, or its PostgreSQL database)."""
    query = "SELECT DISTINCT kind FROM events"
    with contextlib.suppress(Exception):  # a store a test broke on purpose has nothing to add
        if database_url:
            import psycopg

            with psycopg.connect(database_url, connect_timeout=5) as db:
                EMITTED.update(row[0] for row in db.execute(query))
        elif sqlite_path.exists():
            _note_sqlite(sqlite_path, query)


class AuditRecorder:
    """AuditAgent.emit's stand-in: the event is built, validated and chained by a real Spool
    (what would be refused in production is refused here), then kept for assertions."""

    def __init__(self, directory: Path | None = None, agent_id: str = "test-agent",
                 then: Callable[..., Any] | None = None) -> None:
        self._tmp = None if directory is not None else tempfile.TemporaryDirectory()
        base = Path(directory if directory is not None else self._tmp.name)  # type: ignore[union-attr]
        self.spool = Spool(base / "spool.db", agent_id)
        self.items: list[tuple[str, str, str, dict[str, Any]]] = []
        self.then = then

    def __call__(self, kind: str, subject: str, severity: str = "info",
                 **data: Any) -> AuditEvent | None:
        event = self.spool.emit(kind, subject, severity, **data)
        self.items.append((kind, subject, severity, data))
        if self.then is not None:
            self.then(kind, subject, severity, **data)
        return event

    def kinds(self) -> list[str]:
        return [kind for kind, *_ in self.items]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [data for k, _, _, data in self.items if k == kind]

    def close(self) -> None:
        self.spool.close()
        if self._tmp is not None:
            self._tmp.cleanup()


class SpooledEvents(list[tuple[str, str, str, dict[str, Any]]]):
    """An emit callable that is also the list of what it emitted, as (kind, subject, severity,
    data): each event first built, validated and chained by a real Spool (`spooled`)."""

    def __init__(self) -> None:
        super().__init__()
        self.audit = spooled(lambda kind, subject, severity="info", **data: self.append(
            (kind, subject, severity, data)))

    def __call__(self, kind: str, subject: str, severity: str = "info", **data: Any) -> None:
        self.audit(kind, subject, severity, **data)


def spooled(record: Callable[..., Any]) -> AuditRecorder:
    """A test's own emit double, behind a real Spool: `record` sees only what the chain took."""
    return AuditRecorder(then=record)


def enrolled_offline(state: Path, collector_host: str) -> Path:
    """An enrolled agent's state with no collector to reach: its key, and a CA to pin (made
    in state's parent for `collector_host`). The agent runs, its forwarder retries against
    nothing, and its events wait in state/spool.db for the test (and the coverage) to read."""
    from floor_agent.audit.keys import write_private_key
    from floor_agent.collector import tls

    state.mkdir(mode=0o700)
    write_private_key(state / "agent.key", Ed25519PrivateKey.generate())
    files = tls.TlsFiles.in_dir(state.parent)
    tls.create(files, [collector_host])
    (state / "collector-ca.pem").write_bytes(files.ca_cert.read_bytes())
    return state


@pytest.fixture
def audit_events(tmp_path: Path) -> Any:
    """An AuditRecorder on a spool under the test's tmp_path."""
    recorder = AuditRecorder(tmp_path / "audit-events")
    try:
        yield recorder
    finally:
        recorder.close()


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    """The event-kind coverage test runs after every other test of the session."""
    last = [item for item in items if item.get_closest_marker("after_all_tests")]
    items[:] = [item for item in items if item not in last] + last
    config.stash[_COLLECTED] = {Path(str(item.path)).name for item in items}


_COLLECTED = pytest.StashKey[set[str]]()


def collected_modules(config: pytest.Config) -> set[str]:
    """File names of the test modules this session collected items from."""
    return config.stash.get(_COLLECTED, set())
