"""An alert's life after ingest stored it: acknowledged by a person (from the API or the
dashboard, then on the own trail), and the chain state an agent's open alerts and its last
re-verification give (the API's agent list and the dashboard's overview agree on it)."""

from __future__ import annotations

from typing import Any

from floor_agent.collector.ingest import CHAIN_BREAKS
from floor_agent.collector.self_audit import OwnAudit
from floor_agent.protocol.kinds.collector import CollectorKind
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
    own_audit.emit(CollectorKind.ALERT_ACKNOWLEDGED, f"alert {alert_id}", "notice",
                   alert_id=alert_id,
                   alert_kind=alert["kind"], alert_agent=alert["agent_id"],
                   alert_severity=alert["severity"], who=who, comment=comment, acked_at=now,
                   via=via)
    return True


def chain_state(open_kinds: set[str], verification: dict[str, Any] | None) -> str:
    """broken | stale | intact: broken by an open chain-break alert or by the last
    re-verification of the stored chain (`collector verify`, the integrity page) failing; an
    alert acknowledged does not make a failed verification pass, only a new one that passes."""
    if open_kinds & set(CHAIN_BREAKS) or (verification is not None and not verification["ok"]):
        return "broken"
    return "stale" if "stale_checkpoint" in open_kinds else "intact"
