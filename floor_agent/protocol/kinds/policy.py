"""What a workstation's central policy (ws_policy/) records."""

from __future__ import annotations

from enum import StrEnum

from floor_agent.protocol.kinds.topic import Topic


class PolicyKind(StrEnum):
    APPLIED = "policy.applied"  # a verified policy (or the bootstrap) is enforced now
    REFUSED = "policy.refused"  # an envelope or cache not applied; the enforced one stays
    KEY_PINNED = "policy.key_pinned"  # the collector's policy key pinned on first use
    SYNC_FAILED = "policy.sync_failed"  # the collector out of reach: the last policy stays
    SYNC_RECOVERED = "policy.sync_recovered"


POLICY = Topic("policy")
# the kind that sets a workstation's current policy (version, hashes, group, exceptions)
STATES: dict[PolicyKind, Topic] = {
    PolicyKind.APPLIED: POLICY,
}
