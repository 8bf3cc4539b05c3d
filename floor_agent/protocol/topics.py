"""Which events describe a current state (a door's lock, a camera's link...), derived from the
Topic each kind declares (protocol/kinds/): there is no second list of kinds here.

The overview must render fast on a store of millions of events, so ingest keeps the newest
event per (agent, topic) in a small `latest` table; topic_of decides the topic of an event
(pure, called for every stored event: a dict lookup for the kinds that are not state).
"""

from __future__ import annotations

from typing import Any

import orjson

from floor_agent.protocol.kinds import STATES

# kind -> topic, for state events whose topic does not depend on their data
FIXED_TOPICS: dict[str, str] = {
    kind: topic.name for kind, topic in STATES.items() if topic.key is None}
# kind -> (topic prefix, data field naming the door or camera, topic suffix)
KEYED_TOPICS: dict[str, tuple[str, str, str]] = {
    kind: (topic.name, topic.key, topic.suffix) for kind, topic in STATES.items()
    if topic.key is not None}
STATE_KINDS: frozenset[str] = frozenset(STATES)


def topic_of(kind: str, data: str | dict[str, Any]) -> str | None:
    """The state topic of an event, or None; `data` as stored (JSON text) or parsed."""
    fixed = FIXED_TOPICS.get(kind)
    if fixed is not None:
        return fixed
    keyed = KEYED_TOPICS.get(kind)
    if keyed is None:
        return None
    parsed = orjson.loads(data) if isinstance(data, str) else data
    key = parsed.get(keyed[1]) if isinstance(parsed, dict) else None
    if not isinstance(key, str) or not key:
        return None
    return f"{keyed[0]}{key}{keyed[2]}"
