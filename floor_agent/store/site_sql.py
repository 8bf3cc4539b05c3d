"""The per-site state part of SqlStore (mixed in): what several collectors on one database
must share rather than keep per process (issue 23, point 4).

The replay memory of agent-signed requests is one row per accepted signature under a unique
key: of two collectors that receive the same signed request, the database lets one insert
it; the other finds the row and refuses a replay. No site-wide lock: the key is the guard.
"""

from __future__ import annotations

from typing import Any

from floor_agent.store.records import EventRow


class SiteSql:
    _q: Any
    _row_write: Any
    _read: Any

    def remember_request(self, signature: bytes, agent_id: str, keep_until_ms: int) -> bool:
        with self._row_write() as cur:
            cur.execute(self._q("INSERT INTO request_signatures (signature, agent_id, keep_until) "
                                "VALUES (?, ?, ?) ON CONFLICT (signature) DO NOTHING"),
                        (signature, agent_id, keep_until_ms))
            return int(cur.rowcount) == 1

    def forget_requests(self, now_ms: int) -> int:
        with self._row_write() as cur:
            cur.execute(self._q("DELETE FROM request_signatures WHERE keep_until < ?"), (now_ms,))
            return int(cur.rowcount)

    def event_rows(self, agent_id: str, low: int, high: int) -> list[EventRow]:
        with self._read() as cur:
            cur.execute(self._q(f"SELECT {', '.join(EventRow._fields)} FROM events "
                                "WHERE agent_id = ? AND seq BETWEEN ? AND ? ORDER BY seq"),
                        (agent_id, low, high))
            rows = cur.fetchall()
        return [EventRow(str(r[0]), int(r[1]), r[2], r[3], r[4], r[5], int(r[6]), r[7], r[8],
                         bytes(r[9]), r[10]) for r in rows]
