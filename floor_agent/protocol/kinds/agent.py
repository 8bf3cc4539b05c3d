"""The spine's own kinds, every agent role and the collector's own trail: lifecycle and spool."""

from __future__ import annotations

from enum import StrEnum


class AgentKind(StrEnum):
    STARTED = "agent.started"
    STOPPED = "agent.stopped"
    # now delivering to another of its collector URLs (audit/failover.py): from_url, to_url,
    # reason "failover" (the one before stopped answering) or "return" (back to the first)
    COLLECTOR_SWITCHED = "agent.collector_switched"
    SPOOL_HIGH = "agent.spool_high"
    SPOOL_FULL = "agent.spool_full"
    SPOOL_RECOVERED = "agent.spool_recovered"
    SPOOL_DAMAGED = "audit.spool_damaged"
