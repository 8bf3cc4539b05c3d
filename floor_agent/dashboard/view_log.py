"""How often a snapshot view goes on the collector's own trail.

Every snapshot a person looks at is footage leaving the camera box, recorded with who looked
(`footage.viewed`). A camera tile refreshes its picture while the page stays open; recording
each refresh would bury the trail in repeats. A person's first look at a camera is recorded,
then at most one record per person and camera every `seconds` while they keep looking: the
trail still says who watched which camera, and until when within that margin.
"""

from __future__ import annotations

import threading

REPEAT_SECONDS = 600.0
MAX_KEYS = 10_000  # (person, camera box, camera) remembered; past it, the oldest are forgotten


class ViewThrottle:
    """Thread-safe; times are monotonic seconds given by the caller."""

    def __init__(self, seconds: float = REPEAT_SECONDS) -> None:
        self.seconds = seconds
        self._last: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()

    def record(self, who: str, agent_id: str, camera: str, now: float) -> bool:
        """Whether this view goes on the trail (and, if so, it counts as the last one)."""
        key = (who, agent_id, camera)
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.seconds:
                return False
            self._last.pop(key, None)
            self._last[key] = now
            while len(self._last) > MAX_KEYS:
                del self._last[next(iter(self._last))]
            return True
