"""The SQL both stores share. Written with `?` placeholders; a dialect may rewrite them.

Subclasses provide `_write()` (a cursor inside one write transaction, serialised) and
`_read()` (a cursor for reads that may run beside writes), plus their DDL.
"""

from __future__ import annotations

from abc import abstractmethod
from contextlib import AbstractContextManager
from typing import Any

import orjson

from floor_agent.audit.chain import GENESIS_HASH, Checkpoint
from floor_agent.audit.event import SEVERITY_RANK
from floor_agent.collector.ingest import AgentRecord, AlertDraft, WireEvent
from floor_agent.collector.store import EventPage, EventQuery, Store

EVENT_COLUMNS = ("id", "agent_id", "seq", "boot_id", "ts", "kind", "severity", "subject", "data",
                 "hash", "received_at")
ALERT_COLUMNS = ("id", "kind", "severity", "agent_id", "seq", "detail", "created_at",
                 "last_seen_at", "count", "acked_at", "acked_by", "ack_comment")
INSERT_EVENT = ("INSERT INTO events (agent_id, seq, boot_id, ts, kind, severity, severity_rank, "
                "subject, data, hash, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def event_params(wire: WireEvent, received_at: str) -> tuple[Any, ...]:
    """The INSERT_EVENT parameters of one event (shared with the ingest benchmark)."""
    e = wire.event
    return (e.agent_id, e.seq, e.boot_id, e.ts, e.kind, e.severity, SEVERITY_RANK[e.severity],
            e.subject, orjson.dumps(e.data).decode(), wire.claimed_hash, received_at)


class SqlStore(Store):
    """Store over a DB-API connection; the dialect subclasses give connections and DDL."""

    placeholder = "?"

    def _q(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    @abstractmethod
    def _write(self) -> AbstractContextManager[Any]: ...

    @abstractmethod
    def _read(self) -> AbstractContextManager[Any]: ...

    # -- enrollment ----------------------------------------------------------------------
    def add_token(self, token_hash: bytes, role: str, created_at: str, expires_at: str) -> None:
        with self._write() as cur:
            cur.execute(self._q("INSERT INTO tokens (token_hash, role, created_at, expires_at) "
                                "VALUES (?, ?, ?, ?)"), (token_hash, role, created_at, expires_at))

    def consume_token(self, token_hash: bytes, now: str, agent_id: str) -> str | None:
        with self._write() as cur:
            cur.execute(self._q("SELECT role, expires_at, used_at FROM tokens "
                                "WHERE token_hash = ?"), (token_hash,))
            row = cur.fetchone()
            if row is None or row[2] is not None or row[1] <= now:
                return None
            cur.execute(self._q("UPDATE tokens SET used_at = ?, used_by = ? WHERE token_hash = ?"),
                        (now, agent_id, token_hash))
            return str(row[0])

    def add_agent(self, agent_id: str, role: str, public_key: str, hostname: str,
                  enrolled_at: str) -> bool:
        with self._write() as cur:
            cur.execute(self._q("SELECT 1 FROM agents WHERE agent_id = ?"), (agent_id,))
            if cur.fetchone() is not None:
                return False
            cur.execute(self._q(
                "INSERT INTO agents (agent_id, role, public_key, hostname, enrolled_at, head_seq, "
                "head_hash) VALUES (?, ?, ?, ?, ?, 0, ?)"),
                (agent_id, role, public_key, hostname, enrolled_at, GENESIS_HASH))
            return True

    def get_agent(self, agent_id: str) -> AgentRecord | None:
        with self._read() as cur:
            cur.execute(self._q("SELECT agent_id, role, public_key, head_seq, head_hash, "
                                "checkpoint_seq, checkpoint_ts FROM agents WHERE agent_id = ?"),
                        (agent_id,))
            row = cur.fetchone()
        if row is None:
            return None
        return AgentRecord(row[0], row[1], row[2], int(row[3]), bytes(row[4]),
                           None if row[5] is None else int(row[5]), row[6])

    def list_agents(self) -> list[dict[str, Any]]:
        cols = ("agent_id", "role", "hostname", "enrolled_at", "head_seq", "head_hash",
                "checkpoint_seq", "checkpoint_hash", "checkpoint_ts", "checkpoint_received_at",
                "last_seen_at", "events_total")
        with self._read() as cur:
            cur.execute(f"SELECT {', '.join(cols)} FROM agents ORDER BY agent_id")
            rows = cur.fetchall()
        out = []
        for row in rows:
            item = dict(zip(cols, row, strict=True))
            for name in ("head_hash", "checkpoint_hash"):
                item[name] = bytes(item[name]).hex() if item[name] is not None else None
            out.append(item)
        return out

    def add_api_key(self, key_hash: bytes, name: str, created_at: str) -> None:
        with self._write() as cur:
            cur.execute(self._q("INSERT INTO api_keys (key_hash, name, created_at) "
                                "VALUES (?, ?, ?)"), (key_hash, name, created_at))

    def api_key_name(self, key_hash: bytes) -> str | None:
        with self._read() as cur:
            cur.execute(self._q("SELECT name FROM api_keys WHERE key_hash = ? "
                                "AND revoked_at IS NULL"), (key_hash,))
            row = cur.fetchone()
        return None if row is None else str(row[0])

    # -- ingest --------------------------------------------------------------------------
    def stored_hashes(self, agent_id: str, seqs: list[int]) -> dict[int, bytes]:
        if not seqs:
            return {}
        low, high = min(seqs), max(seqs)
        with self._read() as cur:
            cur.execute(self._q("SELECT seq, hash FROM events WHERE agent_id = ? "
                                "AND seq BETWEEN ? AND ?"), (agent_id, low, high))
            found = {int(seq): bytes(digest) for seq, digest in cur.fetchall()}
        if low <= 0:
            found[0] = GENESIS_HASH
        return found

    def commit_batch(self, agent_id: str, events: list[WireEvent], checkpoint: Checkpoint,
                     new_head: tuple[int, bytes] | None, alerts: list[AlertDraft],
                     received_at: str) -> None:
        with self._write() as cur:
            if events:
                cur.executemany(self._q(INSERT_EVENT),
                                [event_params(w, received_at) for w in events])
            cur.execute(self._q(
                "UPDATE agents SET checkpoint_seq = ?, checkpoint_hash = ?, checkpoint_ts = ?, "
                "checkpoint_sig = ?, checkpoint_boot_id = ?, checkpoint_received_at = ?, "
                "last_seen_at = ?, events_total = events_total + ? WHERE agent_id = ?"),
                (checkpoint.seq, checkpoint.hash, checkpoint.ts, checkpoint.signature,
                 checkpoint.boot_id, received_at, received_at, len(events), agent_id))
            if new_head is not None:
                cur.execute(self._q("UPDATE agents SET head_seq = ?, head_hash = ? "
                                    "WHERE agent_id = ?"), (new_head[0], new_head[1], agent_id))
            self._upsert_alerts(cur, alerts, received_at)

    def add_alerts(self, alerts: list[AlertDraft], now: str) -> None:
        if alerts:
            with self._write() as cur:
                self._upsert_alerts(cur, alerts, now)

    def _upsert_alerts(self, cur: Any, alerts: list[AlertDraft], now: str) -> None:
        for alert in alerts:
            cur.execute(self._q("SELECT id FROM alerts WHERE fingerprint = ? AND acked_at IS NULL"),
                        (alert.fingerprint,))
            row = cur.fetchone()
            if row is not None:
                cur.execute(self._q("UPDATE alerts SET count = count + 1, last_seen_at = ?, "
                                    "detail = ? WHERE id = ?"), (now, alert.detail, row[0]))
            else:
                cur.execute(self._q(
                    "INSERT INTO alerts (fingerprint, kind, severity, agent_id, seq, detail, "
                    "created_at, last_seen_at, count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)"),
                    (alert.fingerprint, alert.kind, alert.severity, alert.agent_id, alert.seq,
                     alert.detail, now, now))

    def touch_agent(self, agent_id: str, now: str) -> None:
        with self._write() as cur:
            cur.execute(self._q("UPDATE agents SET last_seen_at = ? WHERE agent_id = ?"),
                        (now, agent_id))

    # -- queries -------------------------------------------------------------------------
    def query_events(self, query: EventQuery) -> EventPage:
        where: list[str] = []
        params: list[Any] = []
        if query.agent_id:
            where.append("agent_id = ?")
            params.append(query.agent_id)
        if query.kind:
            where.append("kind = ?")
            params.append(query.kind)
        if query.kind_prefix:
            where.append("kind >= ? AND kind < ?")
            params += [query.kind_prefix, query.kind_prefix + "\U0010ffff"]
        if query.severities:
            where.append(f"severity IN ({', '.join('?' for _ in query.severities)})")
            params += list(query.severities)
        if query.since:
            where.append("ts >= ?")
            params.append(query.since)
        if query.until:
            where.append("ts < ?")
            params.append(query.until)
        if query.cursor:
            where.append("(ts < ? OR (ts = ? AND id < ?))")
            params += [query.cursor[0], query.cursor[0], query.cursor[1]]
        sql = f"SELECT {', '.join(EVENT_COLUMNS)} FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts DESC, id DESC LIMIT ?"
        params.append(query.limit + 1)
        with self._read() as cur:
            cur.execute(self._q(sql), params)
            rows = cur.fetchall()
        page = EventPage([_event_dict(row) for row in rows[: query.limit]])
        if len(rows) > query.limit and page.events:
            last = page.events[-1]
            page.next_cursor = (last["ts"], last["id"])
        return page

    def chain_events(self, agent_id: str, from_seq: int, to_seq: int
                     ) -> list[tuple[dict[str, Any], bytes]]:
        with self._read() as cur:
            cur.execute(self._q(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE "
                                "agent_id = ? AND seq BETWEEN ? AND ? ORDER BY seq"),
                        (agent_id, from_seq, to_seq))
            rows = cur.fetchall()
        return [(_event_dict(row), bytes(row[9])) for row in rows]

    def checkpoint_of(self, agent_id: str) -> Checkpoint | None:
        """The last checkpoint accepted from an agent: the anchor for re-verification."""
        with self._read() as cur:
            cur.execute(self._q("SELECT checkpoint_seq, checkpoint_hash, checkpoint_ts, "
                                "checkpoint_boot_id, checkpoint_sig FROM agents "
                                "WHERE agent_id = ?"), (agent_id,))
            row = cur.fetchone()
        if row is None or row[0] is None:
            return None
        return Checkpoint(agent_id, int(row[0]), bytes(row[1]), row[2], row[3], bytes(row[4]))

    def list_alerts(self, open_only: bool = False, agent_id: str | None = None,
                    kind: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        where, params = [], []
        if open_only:
            where.append("acked_at IS NULL")
        if agent_id:
            where.append("agent_id = ?")
            params.append(agent_id)
        if kind:
            where.append("kind = ?")
            params.append(kind)
        sql = f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        with self._read() as cur:
            cur.execute(self._q(sql), params)
            return [dict(zip(ALERT_COLUMNS, row, strict=True)) for row in cur.fetchall()]

    def ack_alert(self, alert_id: int, who: str, comment: str, now: str) -> bool:
        with self._write() as cur:
            cur.execute(self._q("UPDATE alerts SET acked_at = ?, acked_by = ?, ack_comment = ? "
                                "WHERE id = ? AND acked_at IS NULL"),
                        (now, who, comment, alert_id))
            return bool(cur.rowcount)

    def stats(self) -> dict[str, Any]:
        with self._read() as cur:
            cur.execute("SELECT count(*), coalesce(sum(events_total), 0) FROM agents")
            agents, events = cur.fetchone()
            cur.execute("SELECT kind, count(*) FROM alerts WHERE acked_at IS NULL GROUP BY kind")
            open_alerts = {kind: int(n) for kind, n in cur.fetchall()}
        return {"agents": int(agents), "events": int(events), "open_alerts": open_alerts}

    def agents_with_stale_checkpoint(self, older_than: str) -> list[tuple[str, str | None]]:
        """Agents whose last checkpoint arrived before older_than (or never, once enrolled)."""
        with self._read() as cur:
            cur.execute(self._q("SELECT agent_id, checkpoint_received_at FROM agents WHERE "
                                "coalesce(checkpoint_received_at, enrolled_at) < ?"),
                        (older_than,))
            return [(row[0], row[1]) for row in cur.fetchall()]


def _event_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    item = dict(zip(EVENT_COLUMNS, row, strict=True))
    item["data"] = orjson.loads(item["data"])
    item["hash"] = bytes(item["hash"]).hex()
    return item

