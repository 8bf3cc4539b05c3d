"""The dashboard's charts, in SQL both stores share (mixed into sql.SqlStore).

Counting is done by the database, grouped by a time bucket that is a prefix of the stored
stamp (`2026-11-29T14` is an hour, `2026-11-29T14:3` ten minutes): the stamps are one fixed
ISO form (protocol.event.TS_RE), so `substr` buckets them alike in SQLite and PostgreSQL and a
window of a million events comes back as a few hundred rows. Counting every kind names the
stored kinds first (one index seek each), so the count reads the (kind, ts) index alone:
about 1 s for a million events in a day on SQLite, against 6 s reading the rows. The state
events a timeline draws (a camera's motion, tamper and gaps, a workstation's lock and
isolation) are changes, not a stream, and are read as rows, bounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

# the stamp prefixes a bucket may be: a day, an hour, ten minutes, a minute
BUCKET_CHARS = frozenset({10, 13, 15, 16})
TIMELINE_COLUMNS = ("agent_id", "seq", "ts", "kind", "severity", "subject", "data")


def _bucket(chars: int) -> int:
    if chars not in BUCKET_CHARS:
        raise ValueError(f"bucket: one of {sorted(BUCKET_CHARS)} characters of the stamp")
    return chars


def _filters(since: str, until: str, kinds: Sequence[str], agent_id: str | None,
             subject: str | None, column: str = "ts") -> tuple[str, list[Any]]:
    where = [f"{column} >= ?", f"{column} < ?"]
    params: list[Any] = [since, until]
    if kinds:
        where.append(f"kind IN ({', '.join('?' for _ in kinds)})")
        params.extend(kinds)
    if agent_id is not None:
        where.append("agent_id = ?")
        params.append(agent_id)
    if subject is not None:
        where.append("subject = ?")
        params.append(subject)
    return " AND ".join(where), params


class ChartSql:
    """The charts' part of SqlStore; see interface.Store for what each method promises."""

    # provided by SqlStore
    _q: Any
    _read: Any

    MAX_KINDS = 256

    def _stored_kinds(self, cur: Any) -> list[str]:
        """The distinct stored kinds, one index seek each (events_kind_ts); [] past
        MAX_KINDS (the count then reads the rows themselves)."""
        kinds: list[str] = []
        op, value = ">=", ""
        while len(kinds) <= self.MAX_KINDS:
            cur.execute(self._q(f"SELECT kind FROM events WHERE kind {op} ? ORDER BY kind "
                                "LIMIT 1"), (value,))
            row = cur.fetchone()
            if row is None:
                return kinds
            kinds.append(str(row[0]))
            op, value = ">", row[0]
        return []

    def count_events(self, since: str, until: str, bucket_chars: int = 13,
                     kinds: Sequence[str] = (), agent_id: str | None = None,
                     subject: str | None = None) -> list[tuple[str, str, int]]:
        chars = _bucket(bucket_chars)
        with self._read() as cur:
            if not kinds and agent_id is None and subject is None:
                # every kind named: the count reads only the (kind, ts) index, never a row
                kinds = self._stored_kinds(cur)
            where, params = _filters(since, until, kinds, agent_id, subject)
            cur.execute(self._q(f"SELECT substr(ts, 1, {chars}), kind, count(*) FROM events "
                                f"WHERE {where} GROUP BY 1, 2 ORDER BY 1, 2"), params)
            return [(str(b), str(k), int(n)) for b, k, n in cur.fetchall()]

    def count_alerts(self, since: str, until: str, bucket_chars: int = 13
                     ) -> list[tuple[str, str, int]]:
        chars = _bucket(bucket_chars)
        where, params = _filters(since, until, (), None, None, "created_at")
        with self._read() as cur:
            cur.execute(self._q(f"SELECT substr(created_at, 1, {chars}), kind, count(*) "
                                f"FROM alerts WHERE {where} GROUP BY 1, 2 ORDER BY 1, 2"),
                        params)
            return [(str(b), str(k), int(n)) for b, k, n in cur.fetchall()]

    def timeline_events(self, kinds: Sequence[str], since: str, until: str,
                        agent_id: str | None = None, subject: str | None = None,
                        limit: int = 5000) -> list[dict[str, Any]]:
        if not kinds:
            return []
        where, params = _filters(since, until, kinds, agent_id, subject)
        with self._read() as cur:
            cur.execute(self._q(f"SELECT {', '.join(TIMELINE_COLUMNS)} FROM events "
                                f"WHERE {where} ORDER BY ts DESC, id DESC LIMIT ?"),
                        [*params, limit])
            rows = cur.fetchall()
        out = []
        for row in reversed(rows):  # oldest first
            item = dict(zip(TIMELINE_COLUMNS, row, strict=True))
            item["data"] = orjson.loads(item["data"])
            out.append(item)
        return out

    def last_kinds_before(self, kinds: Sequence[str], before: str,
                          agent_id: str | None = None) -> list[tuple[str, str, str, str]]:
        if not kinds:
            return []
        where = [f"kind IN ({', '.join('?' for _ in kinds)})", "ts < ?"]
        params: list[Any] = [*kinds, before]
        if agent_id is not None:
            where.append("agent_id = ?")
            params.append(agent_id)
        with self._read() as cur:
            cur.execute(self._q(f"SELECT agent_id, subject, kind, max(ts) FROM events "
                                f"WHERE {' AND '.join(where)} GROUP BY agent_id, subject, kind"),
                        params)
            return [(str(a), str(s), str(k), str(t)) for a, s, k, t in cur.fetchall()]
