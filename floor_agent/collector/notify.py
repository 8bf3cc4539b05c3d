"""Notifications: the collector's alerts handed to people and systems, through a durable outbox.

One thread (started by server.run) runs steps 1-3 whenever an alert is stored (the collector's
alert listeners wake it) and every poll_seconds besides, and wakes one delivery thread per
channel for step 4 (a receiver that hangs until its timeout delays its own channel only);
`tick()` runs all four in the caller's thread (the tests, with their own clock):

1. plan: the alerts stored since its place in the alerts table are routed (notify_rules) and
   written to the outbox together with the new place, in one transaction (store/outbox_sql);
2. escalate: open critical alerts older than escalation.after_minutes get an escalation;
3. fold: a closed window's folded notifications become one digest per channel;
4. deliver: due notifications go to their senders, oldest first; one that fails is retried
   with backoff (common/backoff, per channel), never dropped.

Nothing is decided here that notify_rules does not decide; the clock is injected, so tests
run escalation and digests without waiting. Every notification handed over or failed is an
event on the collector's own trail (`collector.notification_sent` / `_failed`; failures of
one notification at attempts 1, 2, 4, 8 ..., so an outage of days does not flood the trail).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from floor_agent.collector import notify_format as fmt
from floor_agent.collector import notify_rules as rules
from floor_agent.collector.notify_config import NotificationSettings
from floor_agent.collector.notify_senders import Sender, SendError, make_senders
from floor_agent.collector.self_audit import OwnAudit
from floor_agent.common.backoff import backoff_delay
from floor_agent.common.clock import utc_now
from floor_agent.protocol.event import utc_timestamp
from floor_agent.protocol.kinds.collector import CollectorKind
from floor_agent.store.interface import Store, StoreUnavailable
from floor_agent.store.records import AlertDraft

log = logging.getLogger(__name__)

PLAN_BATCH = 500
# a hand-off's claim on a notification lasts its channel's timeouts (connect, TLS, answer)
# and this much more; a deliverer that died during one leaves it due again after that
CLAIM_SECONDS = 10.0
DELIVER_BATCH = 100
PRUNE_SECONDS = 3600.0  # the outbox's old sent rows are looked for hourly


class Notifier:
    def __init__(self, store: Store, settings: NotificationSettings, own_audit: OwnAudit,
                 senders: dict[str, Sender] | None = None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.store = store
        self.settings = settings
        self.own = own_audit
        self.senders = senders if senders is not None else make_senders(settings)
        self.clock = clock
        self.counters: Counter[str] = Counter()
        self._failures: dict[str, int] = defaultdict(int)  # channel -> failures in a row
        self._blocked_until: dict[str, datetime] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._channel_wake = {name: threading.Event() for name in self.senders}
        self._tick_lock = threading.Lock()
        self._next_prune = 0.0

    # -- the thread -------------------------------------------------------------------------
    def alert_listener(self, alerts: list[AlertDraft], now: str) -> None:
        """Collector.alert_listeners: a stored alert wakes the thread (quick, never raises)."""
        self._wake.set()

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._run, name="notifier", daemon=True)]
        self._threads += [threading.Thread(target=self._run_channel, args=(name,),
                                           name=f"notify-{name}", daemon=True)
                          for name in self.senders]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        for event in self._channel_wake.values():
            event.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for sender in self.senders.values():
            sender.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.settings.poll_seconds)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                with self._tick_lock:
                    now = self.clock()
                    self.plan(now)
                    self.escalate(now)
                    self.fold(now)
                    self.deliver_orphans(now)
                    if time.monotonic() >= self._next_prune:
                        self.prune(now)
                        self._next_prune = time.monotonic() + PRUNE_SECONDS
            except StoreUnavailable:  # the database away: said once (database_watch.py)
                self._stop.wait(self.settings.poll_seconds)
            except Exception:  # the store away for a moment: the outbox keeps it all
                log.exception("notifications: planning failed; trying again")
                self._stop.wait(self.settings.poll_seconds)
            for event in self._channel_wake.values():
                event.set()

    def _run_channel(self, channel: str) -> None:
        wake = self._channel_wake[channel]
        while not self._stop.is_set():
            wake.wait(self.settings.poll_seconds)
            wake.clear()
            if self._stop.is_set():
                break
            try:
                self.deliver(self.clock(), channel)
            except StoreUnavailable:  # the database away: said once (database_watch.py)
                self._stop.wait(self.settings.poll_seconds)
            except Exception:
                log.exception("notifications: delivery to %s failed; trying again", channel)
                self._stop.wait(self.settings.poll_seconds)

    # -- one round --------------------------------------------------------------------------
    def tick(self) -> None:
        with self._tick_lock:
            now = self.clock()
            self.plan(now)
            self.escalate(now)
            self.fold(now)
            self.prune(now)
            self.deliver(now)

    def plan(self, now: datetime) -> int:
        """Route the alerts stored since the notifier's place; how many were routed."""
        routed = 0
        while True:
            rows = self.store.unplanned_alerts(PLAN_BATCH)
            if not rows:
                return routed
            window = rules.window_of(now, self.settings.digest.window_seconds)
            window_ts = utc_timestamp(window)
            plan = rules.plan_alerts([rules.AlertFacts.of(r) for r in rows], self.settings, now,
                                     self.store.notifications_since(window_ts), window_ts)
            if self.store.enqueue_notifications(plan.drafts, utc_timestamp(now),
                                                [int(row["id"]) for row in rows]):
                routed += plan.routed
                self.counters["folded"] += sum(d.state == "folded" for d in plan.drafts)
            if len(rows) < PLAN_BATCH:
                return routed

    def escalate(self, now: datetime) -> list[int]:
        if not self.settings.escalation.to:
            return []
        first = self.store.notify_first_alert()
        candidates = [rules.AlertFacts.of(r)
                      for r in self.store.unescalated_critical_alerts(first)]
        due = rules.escalations_due(candidates, set(), now,
                                    self.settings.escalation.after_minutes)
        if not due:
            return []
        self.store.enqueue_notifications(rules.plan_escalations(due, self.settings, now),
                                         utc_timestamp(now))
        for alert in due:
            self.own.emit(CollectorKind.ALERT_ESCALATED, f"alert {alert.id}", "warning",
                          alert_id=alert.id, alert_kind=alert.kind, alert_agent=alert.agent_id,
                          raised_at=alert.created_at,
                          after_minutes=self.settings.escalation.after_minutes,
                          to=list(self.settings.escalation.to))
        return [a.id for a in due]

    def fold(self, now: datetime) -> int:
        """Turn each closed window's folded notifications into its channel's digest."""
        groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for row in self.store.folded_notifications():
            groups[(row["channel"], row["digest_window"])].append(row)
        made = 0
        for (channel, window), rows in groups.items():
            start = datetime.fromisoformat(window)
            if not rules.window_closed(start, now, self.settings.digest.window_seconds):
                continue
            digest = rules.plan_digest(channel, window, [r["payload"] for r in rows])
            self.store.fold_into_digest([r["id"] for r in rows], digest, utc_timestamp(now))
            made += 1
        return made

    def prune(self, now: datetime) -> int:
        """Forget sent notifications older than keep_days (the trail keeps their record)."""
        return self.store.prune_notifications(
            utc_timestamp(now - timedelta(days=self.settings.keep_days)))

    def deliver(self, now: datetime, only: str | None = None) -> int:
        """Hand the due notifications (of one channel, `only`) over, DELIVER_BATCH at a time
        while every one of a batch was taken; how many were taken."""
        sent = 0
        while not self._stop.is_set():
            rows = self.store.due_notifications(utc_timestamp(now), DELIVER_BATCH, only)
            taken = 0
            for row in rows:
                channel = row["channel"]
                if self._stop.is_set():
                    break
                blocked = self._blocked_until.get(channel)
                if blocked is not None and self.clock() < blocked:
                    continue
                taken += self._deliver_one(row)
            sent += taken
            if len(rows) < DELIVER_BATCH or taken < len(rows):
                return sent
        return sent

    def deliver_orphans(self, now: datetime) -> None:
        """Notifications for a channel no longer configured: no channel thread looks at them,
        so they fail here (with backoff, on the trail) until the channel is back."""
        for row in self.store.due_notifications(utc_timestamp(now)):
            if row["channel"] not in self.senders:
                self._deliver_one(row)

    def _deliver_one(self, row: dict[str, Any]) -> int:
        channel = row["channel"]
        doc = fmt.document(row["id"], row["kind"], row["payload"], row["created_at"])
        sender = self.senders.get(channel)
        lease = self.clock() + timedelta(seconds=CLAIM_SECONDS + (
            self.settings.channels[channel].timeout_seconds * 3
            if channel in self.settings.channels else 0))
        if not self.store.claim_notification(row["id"], row["next_at"], utc_timestamp(lease)):
            return 0  # another deliverer (a second collector on this database) has it
        started = time.monotonic()
        try:
            if sender is None:
                raise SendError(f"channel {channel!r} is not configured (any more)")
            sender.send(doc)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, SendError) else f"{type(exc).__name__}: {exc}"
            self._failures[channel] += 1
            delay = backoff_delay(self._failures[channel], self.settings.retry.initial_seconds,
                                  self.settings.retry.max_seconds)
            retry_at = self.clock() + timedelta(seconds=delay)
            self._blocked_until[channel] = retry_at
            attempts = self.store.notification_failed(row["id"], utc_timestamp(retry_at),
                                                       reason)
            self.counters["failed"] += 1
            log.warning("notification %d to %s failed (attempt %d, next in %.1f s): %s",
                        row["id"], channel, attempts, delay, reason)
            if attempts & (attempts - 1) == 0:  # 1, 2, 4, 8 ...
                self.own.emit(CollectorKind.NOTIFICATION_FAILED, f"notification {row['id']}",
                              "warning", notification_id=row["id"], channel=channel,
                              type=row["kind"], alert_id=row["alert_id"], attempts=attempts,
                              error=reason, retry_at=utc_timestamp(retry_at))
            return 0
        self._failures[channel] = 0
        self._blocked_until.pop(channel, None)
        handed = self.clock()
        self.store.notification_sent(row["id"], utc_timestamp(handed))
        self.counters["sent"] += 1
        self.own.emit(CollectorKind.NOTIFICATION_SENT, f"notification {row['id']}", "info",
                      notification_id=row["id"], channel=channel, type=row["kind"],
                      alert_id=row["alert_id"], attempts=int(row["attempts"]) + 1,
                      send_ms=int((time.monotonic() - started) * 1000))
        return 1
