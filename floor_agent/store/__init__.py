"""The collector's storage: one interface (interface.py) with its record types (records.py),
the SQL both dialects share (sql.py), SQLite (sqlite.py) and PostgreSQL (postgres.py).

`open_store(url)` picks the dialect; it lives here, above the interface and the
implementations, so neither imports the other.
"""

from __future__ import annotations

from floor_agent.store.interface import Store, StoreError, StoreRefused, StoreUnavailable

__all__ = ["Store", "StoreError", "StoreRefused", "StoreUnavailable", "open_store"]


def open_store(url: str, wait: bool = False) -> Store:
    """A store for `sqlite:///path` or `postgresql://...`; the schema is created if missing.

    wait: a PostgreSQL store is made without reaching its database; its open() connects and
    brings the schema up to date, and until then every call raises StoreUnavailable (a
    collector that starts before its database serves meanwhile). SQLite is a local file: it
    is opened at once either way."""
    if url.startswith("sqlite:///"):
        from floor_agent.store.sqlite import SqliteStore

        return SqliteStore(url)
    if url.startswith(("postgresql://", "postgres://")):
        from floor_agent.store.postgres import PostgresStore  # psycopg only when asked for

        return PostgresStore(url, connect=not wait)
    raise StoreError(f"database_url: expected sqlite:///PATH or postgresql://..., got {url!r}")
