"""The state topic a kind declares: which current state (a door's lock, a camera's link...) an
event of that kind sets, for the dashboard's `latest` table (protocol/topics.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topic:
    """`name` alone is a fixed topic ("usb.lock"); with `key`, the topic is
    name + data[key] + suffix ("cam:" + camera_id + ":conn"), one per door or camera."""

    name: str
    key: str | None = None
    suffix: str = ""
