"""The notifications' decisions, over plain data: no clock, no store, no network.

Which channels an alert goes to (routes by kind, severity, agent, site, time of day), whether
it goes out singly or is folded into its channel's digest (a flood), when a window's digest is
due, and which open critical alerts are due to escalate. collector/notify.py feeds them from the
store and the clock and hands what they decide to the senders.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from fnmatch import fnmatchcase
from typing import Any
from zoneinfo import ZoneInfo

from floor_agent.collector.notify_config import DAYS, NotificationSettings, Route
from floor_agent.store.records import NotificationDraft

SEVERITY_RANK = {"info": 0, "notice": 1, "warning": 2, "error": 3, "critical": 4}



@dataclass(frozen=True, slots=True)
class AlertFacts:
    """What a notification says of an alert: a row of the alerts table, by name."""

    id: int
    kind: str
    severity: str
    agent_id: str | None
    detail: str
    created_at: str
    source: str | None = None
    seq: int | None = None

    @classmethod
    def of(cls, row: dict[str, Any]) -> AlertFacts:
        return cls(int(row["id"]), str(row["kind"]), str(row["severity"]), row.get("agent_id"),
                   str(row["detail"]), str(row["created_at"]), row.get("source"),
                   row.get("seq"))

    def document(self, site: str | None) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "severity": self.severity,
                "agent_id": self.agent_id, "site": site, "detail": self.detail,
                "created_at": self.created_at, "source": self.source, "seq": self.seq}


def site_of(agent_id: str | None, sites: dict[str, list[str]]) -> str | None:
    """The first site (in config order) one of whose patterns the agent id matches."""
    if agent_id is None:
        return None
    for name, patterns in sites.items():
        if any(fnmatchcase(agent_id, pattern) for pattern in patterns):
            return name
    return None


def within_hours(hours: str | None, moment: time) -> bool:
    """"22:00-06:00" runs past midnight; the start is inside, the end is not."""
    if hours is None:
        return True
    start = time(int(hours[0:2]), int(hours[3:5]))
    end_h, end_m = int(hours[6:8]), int(hours[9:11])
    end = time.max if end_h == 24 else time(end_h, end_m)
    if start < end:
        return start <= moment < end
    return moment >= start or moment < end


def route_matches(route: Route, alert: AlertFacts, site: str | None, local: datetime) -> bool:
    if SEVERITY_RANK.get(alert.severity, 0) < SEVERITY_RANK[route.min_severity]:
        return False
    if route.kinds and not any(fnmatchcase(alert.kind, k) for k in route.kinds):
        return False
    if route.agents and (alert.agent_id is None or not any(
            fnmatchcase(alert.agent_id, a) for a in route.agents)):
        return False
    if route.sites and site not in route.sites:
        return False
    if route.days and DAYS[local.weekday()] not in route.days:
        return False
    return within_hours(route.hours, local.time().replace(tzinfo=None))


def channels_for(alert: AlertFacts, settings: NotificationSettings, now: datetime
                 ) -> list[str]:
    """Every channel of every matching route, in route order, each once; a matching route
    with stop ends the walk."""
    local = now.astimezone(ZoneInfo(settings.timezone))
    site = site_of(alert.agent_id, settings.sites)
    out: list[str] = []
    for route in settings.routes:
        if route_matches(route, alert, site, local):
            out += [c for c in route.to if c not in out]
            if route.stop:
                break
    return out


def raised_at(alert: AlertFacts, fallback: datetime) -> datetime:
    """When the alert was raised: routes by time of day go by it, not by when it is planned
    (a door forced at 03:00 and planned after a restart at 08:00 is still a night alert)."""
    try:
        return datetime.fromisoformat(alert.created_at)
    except ValueError:
        return fallback


def window_of(now: datetime, window_seconds: int) -> datetime:
    """The start of the digest window holding `now` (windows are aligned to the epoch)."""
    epoch = int(now.timestamp())
    return datetime.fromtimestamp(epoch - epoch % window_seconds, now.tzinfo)


def window_closed(window_start: datetime, now: datetime, window_seconds: int) -> bool:
    return now >= window_start + timedelta(seconds=window_seconds)


@dataclass(slots=True)
class Plan:
    drafts: list[NotificationDraft] = field(default_factory=list)
    routed: int = 0  # alerts that matched some route


def plan_alerts(alerts: list[AlertFacts], settings: NotificationSettings, now: datetime,
                sent_in_window: dict[str, int], window: str) -> Plan:
    """The outbox rows for new alerts: one per (alert, channel); past max_per_window in the
    current window a channel's rows are folded (they wait for the window's digest).
    sent_in_window: the channel's rows of this window already planned (singles and folded)."""
    counts = Counter(sent_in_window)
    plan = Plan()
    for alert in alerts:
        channels = channels_for(alert, settings, raised_at(alert, now))
        if channels:
            plan.routed += 1
        document = alert.document(site_of(alert.agent_id, settings.sites))
        for channel in channels:
            counts[channel] += 1
            folded = counts[channel] > settings.digest.max_per_window
            plan.drafts.append(NotificationDraft(
                f"alert:{alert.id}:{channel}", channel, "alert", {"alert": document},
                alert.id, "folded" if folded else "pending", window if folded else None))
    return plan


DIGEST_LISTED = 200  # alerts a digest lists one by one; its count and kinds cover them all


def plan_digest(channel: str, window: str, folded: list[dict[str, Any]]) -> NotificationDraft:
    """One digest for a channel's window from its folded rows' payloads."""
    alerts = [row["alert"] for row in folded]
    kinds = Counter(str(a["kind"]) for a in alerts)
    worst = max((str(a["severity"]) for a in alerts), key=lambda s: SEVERITY_RANK.get(s, 0),
                default="info")
    return NotificationDraft(f"digest:{channel}:{window}", channel, "digest",
                       {"digest": {"window": window, "count": len(alerts), "severity": worst,
                                   "kinds": dict(sorted(kinds.items())),
                                   "alerts": alerts[:DIGEST_LISTED]}})


def escalations_due(open_critical: list[AlertFacts], escalated: set[int], now: datetime,
                    after_minutes: int) -> list[AlertFacts]:
    """Open critical alerts older than after_minutes that have not escalated yet."""
    cutoff = now - timedelta(minutes=after_minutes)
    return [a for a in open_critical
            if a.id not in escalated and datetime.fromisoformat(a.created_at) <= cutoff]


def plan_escalations(due: list[AlertFacts], settings: NotificationSettings, now: datetime,
                     ) -> list[NotificationDraft]:
    return [NotificationDraft(f"escalation:{a.id}:{channel}", channel, "escalation",
                        {"alert": a.document(site_of(a.agent_id, settings.sites)),
                         "unacknowledged_minutes": int(
                             (now - datetime.fromisoformat(a.created_at)).total_seconds() // 60)},
                        a.id)
            for a in due for channel in settings.escalation.to]
