"""What an agent runs: the capability interface, and the runner every capability's is made of.

A capability (usb_guard, netlock, access, cctv) is built from its own config section, started
with the agent (its audit trail) and the agent's shutdown event, asked by the watchdog whether
it is healthy, and stopped when the agent stops. floor_agent/roles/run.py wires a role's
capabilities; each capability's runner.py says only how it starts.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import Generic, Protocol, TypeVar

from floor_agent.audit.agent import AuditAgent


class Capability(Protocol):
    """Built from its config section (the constructor), then started with the agent and the
    agent's shutdown event, which it sets when a part of it fails. start raises
    service.StartRefused when it cannot work at all."""

    def start(self, agent: AuditAgent, shutdown: threading.Event) -> None: ...

    def healthy(self) -> bool: ...

    def stop(self) -> None: ...


class Running(Protocol):
    """What a capability's start leaves running."""

    def healthy(self) -> bool: ...

    def stop(self) -> None: ...


ConfigT = TypeVar("ConfigT")
RunningT = TypeVar("RunningT", bound=Running)


class CapabilityRunner(ABC, Generic[ConfigT, RunningT]):
    """A capability around what its `launch` starts: not started is not healthy, and stop
    stops what was started (nothing, if start refused)."""

    def __init__(self, config: ConfigT) -> None:
        self.config = config
        self.running: RunningT | None = None

    @abstractmethod
    def launch(self, agent: AuditAgent, shutdown: threading.Event) -> RunningT:
        """Start the capability (service.StartRefused when it cannot work at all)."""

    def start(self, agent: AuditAgent, shutdown: threading.Event) -> None:
        self.running = self.launch(agent, shutdown)

    def healthy(self) -> bool:
        return self.running is not None and self.running.healthy()

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop()
