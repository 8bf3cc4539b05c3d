"""The one way a capability records an audit fact: `emit(kind, subject, severity, **data)`.

AuditAgent.emit is the real one (it spools the event and wakes the forwarder); tests pass a
recorder of their own. Capabilities take an `Emit`, never the agent, so their cores stay pure.
"""

from __future__ import annotations

from typing import Any, Protocol


class Emit(Protocol):
    """Record one event of `kind` about `subject`; `data` is the event's JSON object."""

    def __call__(self, kind: str, subject: str, severity: str = "info",
                 **data: Any) -> object: ...
