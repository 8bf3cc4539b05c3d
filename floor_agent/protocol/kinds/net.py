"""What the network lock (netlock/) records."""

from __future__ import annotations

from enum import StrEnum

from floor_agent.protocol.kinds.topic import Topic


class NetKind(StrEnum):
    ENFORCED = "net.enforced"
    ENFORCE_FAILED = "net.enforce_failed"
    CONFIG_INVALID = "net.config_invalid"
    VERIFIED = "net.verified"
    BREACH = "net.breach"
    RECOVERED = "net.recovered"
    UNVERIFIABLE = "net.unverifiable"
    WARNING = "net.warning"
    WATCH_FAILED = "net.watch_failed"


NET_STATE = Topic("net.state")
# the kinds that set a workstation's current network state
STATES: dict[NetKind, Topic] = {
    kind: NET_STATE for kind in (
        NetKind.VERIFIED, NetKind.BREACH, NetKind.RECOVERED, NetKind.ENFORCED,
        NetKind.ENFORCE_FAILED, NetKind.CONFIG_INVALID, NetKind.WATCH_FAILED)
}
