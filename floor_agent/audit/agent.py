"""The audit side of every agent role: identity, spool and forwarder behind one emit().

Capabilities (usb_guard, netlock, access, cctv) get an AuditAgent and call emit(); they never
see keys, HTTP or SQLite.
"""

from __future__ import annotations

import logging
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from floor_agent.audit.collector_link import FAILOVER_ERRORS, CollectorLink, pinned_client
from floor_agent.audit.failover import Switch
from floor_agent.audit.forwarder import Forwarder, ForwarderSettings
from floor_agent.audit.keys import load_or_create_private_key, load_private_key, public_key_b64
from floor_agent.audit.policy_key import PolicyKeyError, pin, read_pinned
from floor_agent.audit.spool import open_spool
from floor_agent.config.audit import AuditClientConfig
from floor_agent.protocol.event import AuditEvent
from floor_agent.protocol.kinds.agent import AgentKind

log = logging.getLogger(__name__)

KEY_FILE = "agent.key"


def kernel_boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


class AuditAgent:
    """One agent's audit trail. emit() is durable on return; forwarding runs in a thread."""

    def __init__(self, audit: AuditClientConfig, role: str) -> None:
        self.role = role
        self.agent_id = audit.resolved_agent_id(role)
        self.config = audit
        self.stop_event = threading.Event()
        self.key = load_private_key(audit.state_dir / KEY_FILE)
        self.spool = open_spool(audit, role)
        self.link = CollectorLink.pinned(audit.collector_url, audit.ca_path(),
                                         audit.request_timeout_seconds,
                                         audit.collector_return_after_seconds, self._switched)
        self.forwarder = Forwarder(self.spool, self.key, self.link, ForwarderSettings(
            audit.batch_max_events, audit.heartbeat_seconds, audit.backoff_initial_seconds,
            audit.backoff_max_seconds), self.stop_event)

    def start(self) -> None:
        self.emit(AgentKind.STARTED, self.agent_id, "notice", role=self.role,
                  kernel_boot_id=kernel_boot_id(), pending=self.spool.pending_count())
        self.forwarder.start()

    def emit(self, kind: str, subject: str, severity: str = "info",
             **data: Any) -> AuditEvent | None:
        """Record an event; returns once it is on disk (see Spool.emit)."""
        event = self.spool.emit(kind, subject, severity, **data)
        self.forwarder.wake.set()
        return event

    def _switched(self, switch: Switch) -> None:
        """On the agent's own trail: which collector holds its events from here on."""
        self.emit(AgentKind.COLLECTOR_SWITCHED, self.agent_id, "notice",
                  from_url=switch.from_url, to_url=switch.to_url, reason=switch.reason)

    def healthy(self) -> bool:
        """For the systemd watchdog: the forwarder thread is alive."""
        return self.forwarder.alive

    def stop(self, drain_seconds: float = 5.0, reason: str = "shutdown") -> None:
        """Record the stop, give the forwarder a moment to deliver, then close."""
        self.emit(AgentKind.STOPPED, self.agent_id, "notice", reason=reason)
        deadline = time.monotonic() + drain_seconds
        while self.spool.pending_count() and time.monotonic() < deadline \
                and self.forwarder.last_error is None:
            self.forwarder.wake.set()
            time.sleep(0.05)
        self.stop_event.set()
        self.forwarder.wake.set()
        self.forwarder.join(timeout=self.config.request_timeout_seconds + 1)
        self.link.close()
        self.spool.close()


class EnrollmentError(RuntimeError):
    pass


def enroll(audit: AuditClientConfig, role: str, token: str, ca_file: Path | None) -> str:
    """Create the agent key (0600) and register it with the collector; returns the agent id."""
    state = audit.state_dir
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_path = audit.ca_path()
    if ca_file is not None and Path(ca_file).resolve() != ca_path.resolve():
        shutil.copyfile(ca_file, ca_path)
    if not ca_path.exists():
        raise EnrollmentError(f"{ca_path}: no collector CA to pin; pass --ca with the file "
                              f"'floor-agent collector init' created")
    key = load_or_create_private_key(state / KEY_FILE)
    agent_id = audit.resolved_agent_id(role)
    payload = {"token": token, "agent_id": agent_id, "role": role,
               "public_key": public_key_b64(key), "hostname": socket.gethostname()}
    url, response = _first_answer(audit, ca_path, "/api/v1/enroll", payload)
    if response.status_code != 201:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:200]
        raise EnrollmentError(f"collector refused enrollment ({response.status_code}): {detail}")
    _pin_policy_key(state, response)
    log.info("enrolled as %s with %s", agent_id, url)
    return agent_id


def _first_answer(audit: AuditClientConfig, ca_path: Path, path: str,
                  payload: dict[str, Any]) -> tuple[str, httpx.Response]:
    """POST to the collectors in order until one answers; its URL and answer. Every collector
    shares one database, so the first answer (a refusal too) is the site's."""
    unreachable: list[str] = []
    for url in audit.collector_url:
        try:
            with pinned_client(url, ca_path, audit.request_timeout_seconds) as client:
                return url, client.post(path, json=payload)
        except FAILOVER_ERRORS as exc:
            unreachable.append(f"{url}: {exc.__class__.__name__}: {exc}")
        except httpx.HTTPError as exc:
            raise EnrollmentError(f"{url}: cannot reach the collector ({exc})") from None
    raise EnrollmentError("cannot reach any collector (" + "; ".join(unreachable) + ")")


def _pin_policy_key(state: Path, response: httpx.Response) -> None:
    """Pin the collector's policy key from the enroll answer (a workstation's central policy
    is signed with it), unless one is pinned already: a different key is never taken over a
    pinned one (the admin replaces state/policy.pub). A collector without policies sends
    none; the workstation then pins it on first use."""
    try:
        offered = response.json().get("policy_key")
    except (ValueError, AttributeError):
        return
    if not isinstance(offered, str) or not offered:
        return
    try:
        pinned = read_pinned(state)
    except PolicyKeyError as exc:
        raise EnrollmentError(f"pinned policy key unreadable: {exc}") from None
    if pinned is not None:
        if pinned[1] != offered.strip():
            log.warning("the collector offers another policy key than the one pinned in %s; "
                        "kept the pinned one (replace the file to accept the new key)", state)
        return
    try:
        pin(state, offered)
    except PolicyKeyError as exc:
        raise EnrollmentError(f"collector's policy_key refused: {exc}") from None
    log.info("pinned the collector's policy key in %s", state)
