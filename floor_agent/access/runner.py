"""The door controller as the door agent's capability: site key, cache, sync, doors, readers
(started, watched and stopped by floor_agent/roles/run.py).

What cannot work is refused before any door is touched, with the reason (exit 2: a restart
cannot fix it): an unreadable site key, a cache that cannot be opened, a door I/O that cannot
be opened. Readers and the fingerprint module may be missing at start: their absence is an
alarm and means no decision (never a grant), and the door stays locked.

Time: decisions read the controller's clock corrected by the offset the signed client measured
against the collector (audit/signed_client.py), so schedules and card validity follow the
collector's clock when this one is off; until the first answer the offset is unknown and the
host's clock is used as it is. The credentials' age (freshness.py) never reads either.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from floor_agent.access import sitekey
from floor_agent.access.cache import CacheError, CredentialsCache
from floor_agent.access.config import DoorConfig, DoorSection
from floor_agent.access.controller import AccessController, DoorRunner
from floor_agent.access.door_io import DoorIo, DoorIoError, GpiodDoorIo, SimulatedDoorIo
from floor_agent.access.fingerprint import FingerprintModule
from floor_agent.access.freshness import Freshness
from floor_agent.access.model import CardRead
from floor_agent.access.sync import CredentialSync
from floor_agent.audit.agent import AuditAgent
from floor_agent.audit.capability import CapabilityRunner
from floor_agent.audit.signed_client import AgentClient
from floor_agent.protocol.kinds.door import DoorKind
from floor_agent.service import StartRefused

log = logging.getLogger(__name__)
OSDP_POLL_SECONDS = 0.2


class AccessStartError(StartRefused):
    """The controller cannot start; the message says what and where."""

    refusal = "door controller refuses to start (doors stay locked)"
    stop_reason = "door controller config invalid"


@dataclass
class RunningAccess:
    """Everything started, for the watchdog and an orderly stop."""

    controller: AccessController
    cache: CredentialsCache
    sync: CredentialSync
    readers: list[Any] = field(default_factory=list)
    buses: list[Any] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def healthy(self) -> bool:
        return self.controller.healthy() and self.sync.alive and all(
            t.is_alive() for t in self.threads)

    def stop(self) -> None:
        for reader in self.readers:
            reader.stop()
        for bus in self.buses:
            bus.stop()
        self.sync.stop(5)
        for runner in self.controller.doors.values():
            runner.stop()
        self.cache.close()


class AccessRunner(CapabilityRunner[DoorConfig, RunningAccess]):
    """The door controller built from the door role's file; started, watched and stopped by
    the agent."""

    def launch(self, agent: AuditAgent, shutdown: threading.Event) -> RunningAccess:
        return _start(self.config, agent, shutdown)


def schedule_zone(name: str | None) -> tzinfo:
    """The time zone schedules are read in: the configured IANA zone, else local time."""
    if name is None:
        local = datetime.now().astimezone().tzinfo
        assert local is not None
        return local
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise AccessStartError(f"access.policy.timezone: unknown time zone {name!r} ({e})") \
            from None


def corrected_clock(client: AgentClient) -> Callable[[], datetime]:
    """The decisions' clock: this host's, corrected by the offset measured to the collector."""
    return lambda: datetime.fromtimestamp(client.corrected_time(), UTC)


def open_door_io(section: DoorSection) -> DoorIo:
    io = section.io
    try:
        if io.driver == "simulated":
            return SimulatedDoorIo(io.fail_mode, relay_path=io.simulated_link)
        return GpiodDoorIo(io.chip, io.lock_line, io.position_line, io.rex_line, io.fail_mode)
    except DoorIoError as e:
        raise AccessStartError(f"door {section.door_id}: {e}") from None


def _start(config: DoorConfig, agent: AuditAgent, shutdown: threading.Event) -> RunningAccess:
    access = config.access
    try:
        key = sitekey.load(access.site_key_file)
    except sitekey.SiteKeyError as e:
        agent.emit(DoorKind.CONFIG_INVALID, "door", "critical", error=str(e))
        raise AccessStartError(str(e)) from None
    tz = schedule_zone(access.policy.timezone)
    cache_path = access.cache_file or config.audit.state_dir / "credentials.db"
    try:
        cache = CredentialsCache(cache_path)
    except (CacheError, OSError) as e:
        raise AccessStartError(f"{cache_path}: {e}") from None
    sync = CredentialSync.from_config(config, cache.replace, agent.emit, cache.version)
    client = sync.client
    try:
        freshness = Freshness(cache, access.max_credential_age_seconds, agent.emit,
                              client.agent_id, access.emergency_uids,
                              version=lambda: cache.version)
    except CacheError as e:
        cache.close()
        raise AccessStartError(f"{cache_path}: {e}") from None
    sync.on_synced, sync.on_tick = freshness.synced, freshness.tick
    controller = AccessController(access.policy, key, cache, agent.emit, tz,
                                  clock=corrected_clock(client))
    controller.freshness = freshness
    running = RunningAccess(controller, cache, sync)
    try:
        for section in access.doors:
            io = open_door_io(section)
            finger = FingerprintModule.from_config(section.fingerprint)
            controller.doors[section.door_id] = DoorRunner(controller, section, io, finger)
    except AccessStartError:
        for runner in controller.doors.values():
            runner.io.close()
        cache.close()
        raise
    sync.start()
    for runner in controller.doors.values():
        runner.start(shutdown)
    _start_readers(config, running, key, shutdown)
    log.info("door controller running: %s (credentials version %d)",
             ", ".join(controller.doors), cache.version)
    return running


def _start_readers(config: DoorConfig, running: RunningAccess, key: sitekey.SiteKey,
                   shutdown: threading.Event) -> None:
    from floor_agent.access.pcsc import PcscCardReader

    controller = running.controller
    access = config.access
    master = key.card_master_key() if access.policy.require_card_proof else None
    osdp_buses: dict[tuple[str, int], list[tuple[str, Any]]] = defaultdict(list)
    for section in access.doors:
        runner = controller.doors[section.door_id]
        for reader in section.readers:
            if reader.kind == "pcsc":
                driver = PcscCardReader.from_config(section.door_id, reader,
                                                    on_card=runner.on_card,
                                                    card_master_key=master)
                driver.start()
                running.readers.append(driver)
            else:
                assert reader.osdp_port is not None
                osdp_buses[(reader.osdp_port, reader.osdp_baud)].append(
                    (section.door_id, reader))
    for (port, baud), members in osdp_buses.items():
        _start_osdp_bus(port, baud, members, running, shutdown)


def _start_osdp_bus(port: str, baud: int, members: list[tuple[str, Any]],
                    running: RunningAccess, shutdown: threading.Event) -> None:
    from floor_agent.access.osdp import OsdpBus, OsdpError, ReaderEvent, reader_from_config

    controller = running.controller
    try:
        readers = [reader_from_config(door_id, reader) for door_id, reader in members]
        bus = OsdpBus.open_serial(port, baud, readers)
    except (OsdpError, OSError) as e:  # the bus is an alarm, the other doors go on
        controller.emit(DoorKind.READER_OFFLINE, f"osdp {port}", "critical",
                        detail=f"OSDP bus {port} cannot be opened: {e}")
        return
    for door_id, _ in members:
        runner = controller.doors[door_id]
        runner.feedback = bus.feedback
    bus.start()
    running.buses.append(bus)

    def pump(stop: threading.Event) -> None:
        while not stop.is_set():
            item = bus.next_item(OSDP_POLL_SECONDS)
            if isinstance(item, CardRead):
                controller.doors[item.door_id].on_card(item)
            elif isinstance(item, ReaderEvent):
                controller.emit(item.kind, f"door {item.door_id}", item.severity,
                                door_id=item.door_id, reader_id=item.reader_id,
                                detail=item.detail)

    thread = threading.Thread(target=pump, args=(shutdown,), name=f"osdp-{port}", daemon=True)
    thread.start()
    running.threads.append(thread)
