"""The collector's store: one small interface, SQLite by default, PostgreSQL for larger sites.

Everything the collector keeps goes through `Store`: enrolled agents and their chain heads,
one-time enrollment tokens, API keys, events, and alerts. The SQL is shared (store_sql.py);
the dialects differ only in connection handling and DDL. `open_store(url)` picks one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from floor_agent.audit.chain import Checkpoint
from floor_agent.collector.ingest import AgentRecord, AlertDraft


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Filters for the event list; all optional, combined with AND; newest first."""

    agent_id: str | None = None
    kind: str | None = None
    kind_prefix: str | None = None
    severities: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None
    limit: int = 100
    cursor: tuple[str, int] | None = None  # (ts, id) of the last row of the previous page


@dataclass(slots=True)
class EventPage:
    events: list[dict[str, Any]] = field(default_factory=list)
    next_cursor: tuple[str, int] | None = None


class StoreError(RuntimeError):
    """The database refused or is unreachable; the message says which and why."""


class Store(ABC):
    """What the collector needs from a database; implementations must be thread-safe."""

    url: str

    @abstractmethod
    def close(self) -> None: ...

    # enrollment and credentials
    @abstractmethod
    def add_token(self, token_hash: bytes, role: str, created_at: str, expires_at: str) -> None: ...

    @abstractmethod
    def consume_token(self, token_hash: bytes, now: str, agent_id: str) -> str | None:
        """Mark an unused, unexpired token used by agent_id; return its role, else None."""

    @abstractmethod
    def add_agent(self, agent_id: str, role: str, public_key: str, hostname: str,
                  enrolled_at: str) -> bool:
        """Register an agent; False when the id is taken."""

    @abstractmethod
    def get_agent(self, agent_id: str) -> AgentRecord | None: ...

    @abstractmethod
    def list_agents(self) -> list[dict[str, Any]]: ...

    @abstractmethod
    def add_api_key(self, key_hash: bytes, name: str, created_at: str) -> None: ...

    @abstractmethod
    def api_key_name(self, key_hash: bytes) -> str | None: ...

    # ingest
    @abstractmethod
    def stored_hashes(self, agent_id: str, seqs: list[int]) -> dict[int, bytes]: ...

    @abstractmethod
    def commit_batch(self, agent_id: str, events: list[tuple[Any, ...]], checkpoint: Checkpoint,
                     new_head: tuple[int, bytes] | None, alerts: list[AlertDraft],
                     received_at: str) -> None:
        """Store event rows (ingest.event_params), the accepted checkpoint, the new head and
        alerts in one transaction."""

    @abstractmethod
    def add_alerts(self, alerts: list[AlertDraft], now: str) -> None:
        """Store alerts; an open alert with the same fingerprint is counted, not repeated."""

    @abstractmethod
    def touch_agent(self, agent_id: str, now: str) -> None: ...

    # queries
    @abstractmethod
    def query_events(self, query: EventQuery) -> EventPage: ...

    @abstractmethod
    def chain_events(self, agent_id: str, from_seq: int, to_seq: int
                     ) -> list[tuple[dict[str, Any], bytes]]:
        """Events of one agent in seq order, each with its stored hash, for re-verification."""

    @abstractmethod
    def list_alerts(self, open_only: bool = False, agent_id: str | None = None,
                    kind: str | None = None, limit: int = 100) -> list[dict[str, Any]]: ...

    @abstractmethod
    def ack_alert(self, alert_id: int, who: str, comment: str, now: str) -> bool: ...

    @abstractmethod
    def checkpoint_of(self, agent_id: str) -> Checkpoint | None:
        """The last checkpoint accepted from an agent: the anchor for re-verification."""

    @abstractmethod
    def agents_with_stale_checkpoint(self, older_than: str) -> list[tuple[str, str | None]]:
        """Agents whose last checkpoint arrived before older_than (or never, once enrolled)."""

    @abstractmethod
    def stats(self) -> dict[str, Any]:
        """Counts for /metrics: events, agents, open alerts by kind."""


def open_store(url: str) -> Store:
    """A store for `sqlite:///path` or `postgresql://...`; the schema is created if missing."""
    if url.startswith("sqlite:///"):
        from floor_agent.collector.store_sqlite import SqliteStore

        return SqliteStore(url)
    if url.startswith(("postgresql://", "postgres://")):
        from floor_agent.collector.store_postgres import PostgresStore

        return PostgresStore(url)
    raise StoreError(f"database_url: expected sqlite:///PATH or postgresql://..., got {url!r}")
