"""The central policy as part of the workstation agent (floor_agent/roles/run.py wires it).

Two capabilities around one `WorkstationPolicy`, so that no device is ever judged and no
ruleset loaded under the bootstrap when a verified policy is cached:
- `bootstrap`, started first: reads the pinned key, verifies the cached envelope again and
  hands its rules to the USB guard's runner and its allowlist to netlock's before they start
  (a cache refused: `policy.refused`, and they start with the local files, the bootstrap);
- the policy itself, started after the guard and netlock: the sync thread (sync.py) and the
  expiry timer, which hand later versions and expiries to the running guard and watcher.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from floor_agent.audit.agent import AuditAgent
from floor_agent.audit.policy_key import PolicyKeyError, read_pinned
from floor_agent.config.audit import AuditClientConfig
from floor_agent.netlock.allowlist import Allowlist
from floor_agent.netlock.config import NetlockConfig
from floor_agent.netlock.runner import NetlockRunner, enforce
from floor_agent.usb_guard.runner import UsbGuardRunner
from floor_agent.ws_policy.apply import PolicyEnforcer
from floor_agent.ws_policy.cache import PolicyCache
from floor_agent.ws_policy.config import PolicyConfig
from floor_agent.ws_policy.sync import PolicyClient, PolicySync

log = logging.getLogger(__name__)

EXPIRY_CHECK_SECONDS = 60.0  # the timer looks again at least this often (clock steps)


class PolicyBootstrap:
    """The first capability of a workstation with a central policy: what the guard and
    netlock start with."""

    def __init__(self, policy: WorkstationPolicy) -> None:
        self.policy = policy

    def start(self, agent: AuditAgent, shutdown: threading.Event) -> None:
        self.policy.prepare(agent)

    def healthy(self) -> bool:
        return self.policy.enforcer is not None

    def stop(self) -> None:
        pass


class WorkstationPolicy:
    """The policy sync and the expiry timer over the running guard and netlock."""

    def __init__(self, config: PolicyConfig, audit: AuditClientConfig, role: str, *,
                 usb: UsbGuardRunner | None, netlock: NetlockRunner | None,
                 source: str | os.PathLike[str] | None = None,
                 client: Callable[[], PolicyClient] | None = None) -> None:
        self.config = config
        self.audit = audit
        self.role = role
        self.usb = usb
        self.netlock = netlock
        self.source = source
        self._client = client or (lambda: PolicyClient.from_config(audit, role))
        self.bootstrap = PolicyBootstrap(self)
        self.enforcer: PolicyEnforcer | None = None
        self.pinned_text: str | None = None
        self.key_unreadable = False
        self.sync: PolicySync | None = None
        self._expiry: threading.Thread | None = None
        self._stop = threading.Event()

    def prepare(self, agent: AuditAgent) -> None:
        """The pinned key and the cached policy, before the guard and netlock start."""
        state = self.audit.state_dir
        key = None
        try:
            pinned = read_pinned(state)
        except PolicyKeyError as exc:
            pinned = None
            self.key_unreadable = True
            log.error("policy key unreadable, only the bootstrap can be enforced: %s", exc)
        if pinned is not None:
            key, self.pinned_text = pinned
        netlock = self.netlock.config if self.netlock is not None else None
        self.enforcer = PolicyEnforcer(agent.agent_id, agent.emit, PolicyCache(state), key,
                                       netlock)
        if self.key_unreadable:
            self.enforcer.refuse("key_unreadable", f"{state}/policy.pub is not one base64 "
                                 "Ed25519 public key; replace it", source="key")
        prepared = self.enforcer.start_from_cache()
        if prepared is None:
            return
        if self.usb is not None:
            self.usb.rules = (prepared.rules, f"policy version {prepared.document.version} "
                              f"(group {prepared.document.group})")
        if self.netlock is not None and prepared.netlock is not None:
            self.netlock.config = prepared.netlock

    def start(self, agent: AuditAgent, shutdown: threading.Event) -> None:
        enforcer = self.enforcer
        if enforcer is None:  # started without its bootstrap: do that now
            self.prepare(agent)
            enforcer = self.enforcer
        assert enforcer is not None
        enforcer.usb = self.usb.running if self.usb is not None else None
        enforcer.netlock = self.netlock.running if self.netlock is not None else None
        source = self.source

        def load_ruleset(config: NetlockConfig, allowlist: Allowlist) -> None:
            enforce(config, allowlist, agent.emit, source=source)

        enforcer.load_ruleset = load_ruleset
        self.sync = PolicySync(self._client(), enforcer, agent.emit, self.config,
                               self.audit.state_dir, self.pinned_text,
                               may_pin=not self.key_unreadable)
        self.sync.start()
        self._expiry = threading.Thread(target=self._expire, args=(enforcer,),
                                        name="policy-expiry", daemon=True)
        self._expiry.start()

    def _expire(self, enforcer: PolicyEnforcer) -> None:
        """Re-apply when the next exception expires by this workstation's clock."""
        while not self._stop.is_set():
            due = enforcer.next_expiry()
            wait = EXPIRY_CHECK_SECONDS if due is None else min(
                EXPIRY_CHECK_SECONDS, max(0.0, (due - enforcer.clock()).total_seconds()))
            if enforcer.changed.wait(wait):
                enforcer.changed.clear()
            if self._stop.is_set():
                return
            try:
                enforcer.expire_due()
            except Exception:  # keep the timer whatever one round was
                log.exception("policy expiry failed")

    def healthy(self) -> bool:
        return (self.sync is not None and self.sync.alive and self._expiry is not None
                and self._expiry.is_alive())

    def stop(self) -> None:
        self._stop.set()
        if self.enforcer is not None:
            self.enforcer.changed.set()
        if self.sync is not None:
            self.sync.stop(timeout=1.0)
            self.sync.client.close()
        if self._expiry is not None:
            self._expiry.join(1.0)
