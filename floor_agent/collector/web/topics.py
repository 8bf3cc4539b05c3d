"""Which stored events describe a current state (a door's lock, a camera's link...).

The overview must render fast on a store of millions of events, so ingest keeps the newest
event per (agent, topic) in a small `latest` table; this module decides the topic of an event
(pure, called for every stored event: a dict lookup for the kinds that are not state).
"""

from __future__ import annotations

from typing import Any

import orjson

# kind -> topic, for state events whose topic does not depend on their data
FIXED_TOPICS: dict[str, str] = {
    "usb.locked_down": "usb.lock",
    "usb.lockdown_failed": "usb.lock",
    "usb.rules_invalid": "usb.lock",
    "net.verified": "net.state",
    "net.breach": "net.state",
    "net.recovered": "net.state",
    "net.enforced": "net.state",
    "net.enforce_failed": "net.state",
    "net.config_invalid": "net.state",
    "net.watch_failed": "net.state",
    "door.controller_failed": "door.controller",
    "door.sync_failed": "door.sync",
    "door.sync_recovered": "door.sync",
    "door.credentials_updated": "door.sync",
}
# kind -> (topic prefix, data field naming the door or camera, topic suffix)
KEYED_TOPICS: dict[str, tuple[str, str, str]] = {
    **{f"door.{k}": ("door:", "door_id", "") for k in (
        "opened", "closed", "forced", "held_open", "held_open_cleared", "relocked", "unlocked",
        "error")},
    "door.granted": ("door.access:", "door_id", ""),
    "door.denied": ("door.access:", "door_id", ""),
    "cctv.camera_online": ("cam:", "camera_id", ":conn"),
    "cctv.camera_offline": ("cam:", "camera_id", ":conn"),
    "cctv.stream_lost": ("cam:", "camera_id", ":conn"),
    "cctv.stream_gap": ("cam:", "camera_id", ":conn"),
    "cctv.tamper": ("cam:", "camera_id", ":tamper"),
    "cctv.tamper_cleared": ("cam:", "camera_id", ":tamper"),
    "cctv.motion_start": ("cam:", "camera_id", ":motion"),
    "cctv.motion_end": ("cam:", "camera_id", ":motion"),
    "cctv.segment": ("cam:", "camera_id", ":segment"),
}


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
