"""The event kinds, as typed constants each emitter declares (one module per emitter).

A kind is a StrEnum member: it is the str it names, so events, spools and stores hold exactly
the text they always did. A kind that sets a current state declares its Topic beside it
(`STATES`); protocol/topics.py derives the dashboard's topics from those declarations.
"""

from __future__ import annotations

from enum import StrEnum

from floor_agent.protocol.kinds import (
    agent,
    cctv,
    collector,
    dashboard,
    door,
    net,
    policy,
    retention,
    usb,
)
from floor_agent.protocol.kinds.topic import Topic

DECLARED: tuple[type[StrEnum], ...] = (
    agent.AgentKind, usb.UsbKind, net.NetKind, door.DoorKind, cctv.CctvKind,
    retention.RetentionKind, collector.CollectorKind, dashboard.DashboardKind,
    policy.PolicyKind,
)
KINDS: frozenset[str] = frozenset(str(kind) for enum in DECLARED for kind in enum)
STATES: dict[str, Topic] = {
    str(kind): topic
    for declared in (usb.STATES, net.STATES, door.STATES, cctv.STATES, policy.STATES)
    for kind, topic in declared.items()
}
