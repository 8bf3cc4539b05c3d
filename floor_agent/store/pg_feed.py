"""PostgreSQL LISTEN/NOTIFY as the channel between the collectors of one database.

Notes go out on a connection of their own in a transaction of their own, after the batch they
tell of committed: a NOTIFY inside the ingest transaction would take PostgreSQL's notify-queue
lock through that transaction's commit and line up every ingest commit of the site behind it.
The sending connection commits without waiting for its WAL flush (synchronous_commit off): a
note lost in a crash loses a line of a live view, never an event. The listening connection is
another one, LISTENing; a note reaches every listener, the sender's own included.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from floor_agent.store.interface import StoreError

CHANNEL = "floor_agent_live"
MAX_RECEIVED = 1000  # notes taken in one receive(); the rest wait for the next call


class PgFeedChannel:
    """interface.FeedChannel over two autocommit connections made by `connect`."""

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], where: str) -> None:
        self._connect = connect
        self.where = where
        self._sender: psycopg.Connection[Any] | None = None
        self._listener: psycopg.Connection[Any] | None = None

    def send(self, notes: Sequence[str]) -> None:
        if not notes:
            return
        try:
            if self._sender is None or self._sender.closed:
                self._sender = self._connect()
                self._sender.execute("SET synchronous_commit = off")
            with self._sender.transaction(), self._sender.cursor() as cur:
                cur.executemany("SELECT pg_notify(%s, %s)", [(CHANNEL, note) for note in notes])
        except psycopg.Error as exc:
            self._sender = _closed(self._sender)
            raise StoreError(f"{self.where}: cannot notify the other collectors "
                             f"({' '.join(str(exc).split())})") from None

    def receive(self, timeout: float) -> list[str]:
        try:
            if self._listener is None or self._listener.closed:
                listener = self._connect()
                listener.execute(f"LISTEN {CHANNEL}")
                self._listener = listener
            notes = [n.payload for n in self._listener.notifies(timeout=timeout, stop_after=1)]
            if notes:  # and whatever else is already there, without waiting
                notes += [n.payload for n in self._listener.notifies(
                    timeout=0.0, stop_after=MAX_RECEIVED)]
            return notes
        except psycopg.Error as exc:
            self._listener = _closed(self._listener)
            raise StoreError(f"{self.where}: lost the other collectors' notes "
                             f"({' '.join(str(exc).split())})") from None

    def close(self) -> None:
        self._sender = _closed(self._sender)
        self._listener = _closed(self._listener)


def _closed(conn: psycopg.Connection[Any] | None) -> psycopg.Connection[Any] | None:
    """Close conn if there is one; None, to put where it was kept."""
    if conn is not None:
        conn.close()
    return None
