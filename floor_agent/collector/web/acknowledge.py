"""Acknowledging an alert, from the API or the dashboard: stored, then on the own trail."""

from __future__ import annotations

from floor_agent.collector.web.context import OwnAudit
from floor_agent.store.interface import Store


def acknowledge(store: Store, own_audit: OwnAudit, alert_id: int, who: str, comment: str,
                now: str, via: str) -> bool:
    """False when there is no such open alert. The acknowledgement is itself an audit event
    (`alert.acknowledged`: which alert, its kind and agent, who, when, the comment)."""
    alert = store.get_alert(alert_id)
    if alert is None or alert["acked_at"] is not None:
        return False
    if not store.ack_alert(alert_id, who, comment, now):
        return False
    own_audit.emit("alert.acknowledged", f"alert {alert_id}", "notice", alert_id=alert_id,
                   alert_kind=alert["kind"], alert_agent=alert["agent_id"],
                   alert_severity=alert["severity"], who=who, comment=comment, acked_at=now,
                   via=via)
    return True
