"""The notifications' outbox, in SQL both stores share (mixed into sql.SqlStore).

A row is written once per (alert, channel), escalation or digest (unique `dedupe`), in the
same transaction that marks the alerts it routes planned (alerts.planned): an alert is planned
exactly once, and a plan is never lost between the two. The mark is the alert's own, not a
place in the table, so an alert committed after one with a higher id (two collectors raise
alerts side by side, without a lock) is still planned. Delivery marks a row sent only after
the receiver took it; a process killed between the two sends that row again on restart, with
the same id, which receivers deduplicate by (the outbox's guarantee: at least once, and
exactly once unless the collector dies during a hand-off). A sender claims a row before the
hand-off (its next attempt moved past the hand-off's timeout, only if no one moved it
first), so two collectors delivering from one database do not both send it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from floor_agent.store.records import NotificationDraft

NOTIFICATION_COLUMNS = ("id", "dedupe", "channel", "kind", "alert_id", "payload", "state",
                        "digest_window", "created_at", "next_at", "attempts", "last_error",
                        "sent_at")
OUTBOX_ALERT_COLUMNS = ("id", "kind", "severity", "agent_id", "seq", "detail", "created_at",
                        "source")


def _row(row: Sequence[Any]) -> dict[str, Any]:
    out = dict(zip(NOTIFICATION_COLUMNS, row, strict=True))
    out["payload"] = orjson.loads(out["payload"])
    return out


class _PlannedElsewhere(Exception):
    """Rolls back a plan whose alerts another notifier marked first (theirs stands)."""


class OutboxSql:
    """The outbox part of SqlStore; see interface.Store for what each method promises."""

    # provided by SqlStore
    _q: Any
    _write: Any
    _read: Any

    def notify_first_alert(self) -> int:
        with self._read() as cur:
            cur.execute("SELECT first_alert FROM notify_state WHERE id = 1")
            row = cur.fetchone()
        return 0 if row is None else int(row[0])

    def unplanned_alerts(self, limit: int = 500) -> list[dict[str, Any]]:
        with self._read() as cur:
            cur.execute(self._q(f"SELECT {', '.join(OUTBOX_ALERT_COLUMNS)} FROM alerts "
                                f"WHERE planned = 0 ORDER BY id LIMIT ?"), (limit,))
            return [dict(zip(OUTBOX_ALERT_COLUMNS, row, strict=True))
                    for row in cur.fetchall()]

    def _insert_notifications(self, cur: Any, drafts: Sequence[NotificationDraft],
                              now: str) -> None:
        for d in drafts:
            cur.execute(self._q(
                "INSERT INTO notifications (dedupe, channel, kind, alert_id, payload, state, "
                "digest_window, created_at, next_at, attempts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0) ON CONFLICT (dedupe) DO NOTHING"),
                (d.dedupe, d.channel, d.kind, d.alert_id,
                 orjson.dumps(d.payload, option=orjson.OPT_SORT_KEYS).decode(), d.state,
                 d.digest_window, now, now))

    def enqueue_notifications(self, drafts: Sequence[NotificationDraft], now: str,
                              planned: Sequence[int] = ()) -> bool:
        try:
            with self._write() as cur:
                for alert_id in sorted(set(planned)):
                    cur.execute(self._q("UPDATE alerts SET planned = 1 WHERE id = ? AND "
                                        "planned = 0"), (alert_id,))
                    if cur.rowcount != 1:
                        raise _PlannedElsewhere
                self._insert_notifications(cur, drafts, now)
        except _PlannedElsewhere:
            return False  # the whole transaction rolled back: nothing added, nothing marked
        return True

    def notifications_since(self, since: str) -> dict[str, int]:
        with self._read() as cur:
            cur.execute(self._q("SELECT channel, count(*) FROM notifications WHERE "
                                "created_at >= ? AND kind = 'alert' GROUP BY channel"), (since,))
            return {str(channel): int(n) for channel, n in cur.fetchall()}

    def due_notifications(self, now: str, limit: int = 100, channel: str | None = None
                          ) -> list[dict[str, Any]]:
        where = "state = 'pending' AND next_at <= ?" + (" AND channel = ?" if channel else "")
        params = (now, channel, limit) if channel else (now, limit)
        with self._read() as cur:
            cur.execute(self._q(f"SELECT {', '.join(NOTIFICATION_COLUMNS)} FROM notifications "
                                f"WHERE {where} ORDER BY id LIMIT ?"), params)
            return [_row(row) for row in cur.fetchall()]

    def claim_notification(self, notification_id: int, due_at: str, until: str) -> bool:
        with self._write() as cur:
            cur.execute(self._q("UPDATE notifications SET next_at = ? WHERE id = ? AND "
                                "state = 'pending' AND next_at = ?"),
                        (until, notification_id, due_at))
            return bool(cur.rowcount == 1)

    def notification_sent(self, notification_id: int, now: str) -> None:
        with self._write() as cur:
            cur.execute(self._q("UPDATE notifications SET state = 'sent', sent_at = ?, "
                                "attempts = attempts + 1, last_error = NULL WHERE id = ?"),
                        (now, notification_id))

    def notification_failed(self, notification_id: int, next_at: str, error: str) -> int:
        with self._write() as cur:
            cur.execute(self._q("UPDATE notifications SET attempts = attempts + 1, "
                                "next_at = ?, last_error = ? WHERE id = ?"),
                        (next_at, error[:500], notification_id))
            cur.execute(self._q("SELECT attempts FROM notifications WHERE id = ?"),
                        (notification_id,))
            row = cur.fetchone()
        return 0 if row is None else int(row[0])

    def folded_notifications(self) -> list[dict[str, Any]]:
        with self._read() as cur:
            cur.execute(f"SELECT {', '.join(NOTIFICATION_COLUMNS)} FROM notifications "
                        f"WHERE state = 'folded' ORDER BY id")
            return [_row(row) for row in cur.fetchall()]

    def fold_into_digest(self, folded_ids: Sequence[int], digest: NotificationDraft,
                         now: str) -> None:
        with self._write() as cur:
            self._insert_notifications(cur, [digest], now)
            for notification_id in folded_ids:
                cur.execute(self._q("UPDATE notifications SET state = 'digested' "
                                    "WHERE id = ? AND state = 'folded'"), (notification_id,))

    def unescalated_critical_alerts(self, after_id: int) -> list[dict[str, Any]]:
        columns = ", ".join(f"a.{c}" for c in OUTBOX_ALERT_COLUMNS)
        with self._read() as cur:
            cur.execute(self._q(
                f"SELECT {columns} FROM alerts a WHERE a.acked_at IS NULL AND "
                f"a.severity = 'critical' AND a.id > ? AND NOT EXISTS (SELECT 1 FROM "
                f"notifications n WHERE n.alert_id = a.id AND n.kind = 'escalation') "
                f"ORDER BY a.id"), (after_id,))
            return [dict(zip(OUTBOX_ALERT_COLUMNS, row, strict=True))
                    for row in cur.fetchall()]

    def list_notifications(self, state: str | None = None, limit: int = 1000
                           ) -> list[dict[str, Any]]:
        sql = f"SELECT {', '.join(NOTIFICATION_COLUMNS)} FROM notifications"
        params: list[Any] = []
        if state is not None:
            sql += " WHERE state = ?"
            params.append(state)
        with self._read() as cur:
            cur.execute(self._q(sql + " ORDER BY id LIMIT ?"), [*params, limit])
            return [_row(row) for row in cur.fetchall()]

    def notification_counts(self) -> dict[tuple[str, str], int]:
        with self._read() as cur:
            cur.execute("SELECT channel, state, count(*) FROM notifications "
                        "GROUP BY channel, state")
            return {(str(c), str(s)): int(n) for c, s, n in cur.fetchall()}

    def prune_notifications(self, before: str) -> int:
        with self._write() as cur:
            cur.execute(self._q("DELETE FROM notifications WHERE created_at < ? AND "
                                "state IN ('sent', 'digested')"), (before,))
            return int(cur.rowcount)
