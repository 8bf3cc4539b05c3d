"""Central workstation policy: the changes an admin makes, with who and why, each recorded on
the collector's own audit trail; the expiry of device exceptions; the signed documents.

One place for every way in: the API (api_policy.py, an API key with the `policy` scope), the
CLI (`floor-agent collector policy ...`, policy_cli.py) and the dashboard (a logged-in admin:
call these with the user's name as `actor`). Each function checks its input (collector/
policy.py; PolicyInputError names where), makes the change in one store transaction (the
change number comes from the store), then emits the event (`policy.*`, CollectorKind) once
the change is committed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from floor_agent.collector import policy
from floor_agent.collector.policy import PolicyInputError
from floor_agent.collector.self_audit import OwnAudit
from floor_agent.protocol import policy as wire
from floor_agent.protocol.event import utc_timestamp
from floor_agent.protocol.kinds.collector import CollectorKind
from floor_agent.store.interface import Store, StoreUnavailable, UnknownRecord

log = logging.getLogger(__name__)

WORKSTATION_ROLE = "workstation"
EXPIRY_ACTOR = "collector"  # who ends an exception at its expiry


class UnknownException(LookupError):
    """No exception in force with that id (withdraw)."""


def _workstation(store: Store, agent_id: str, field: str) -> str:
    agent = store.get_agent(agent_id)
    if agent is None:
        raise UnknownRecord(field, f"no enrolled agent {agent_id!r}")
    if agent.role != WORKSTATION_ROLE:
        raise PolicyInputError(f"{field}: {agent_id!r} is a {agent.role} agent; policy is for "
                               f"workstations")
    return agent_id


def _before(store: Store, change: int) -> Any:
    """What a change replaced, as recorded in its own transaction (the change log)."""
    row = store.policy_change(change)
    return None if row is None else row["before"]


def set_group(store: Store, own: OwnAudit, actor: str, group: str, usb_rules: Any,
              netlock_allow: Any, reason: Any, now: str | None = None) -> int:
    """Create or replace a group's USB rules and netlock allowlist; the change number."""
    group = policy.check_group(group)
    rules = policy.check_usb_rules(usb_rules)
    allow = policy.check_netlock_allow(netlock_allow)
    why = policy.check_reason(reason)
    change = store.put_policy_group(group, rules, allow, actor, why, now or utc_timestamp())
    old = _before(store, change)  # as the change's own transaction saw it
    own.emit(CollectorKind.POLICY_CHANGED, group, "notice", group=group, change=change,
             by=actor, reason=why, created=old is None,
             rules_changed=old is None or old["usb_rules"] != rules,
             allow_changed=old is None or old["netlock_allow"] != allow,
             rule_lines=sum(1 for line in rules.splitlines()
                            if line.strip() and not line.lstrip().startswith("#")),
             allow_entries=len(allow))
    return change


def assign(store: Store, own: OwnAudit, actor: str, agent_id: str, group: str, reason: Any,
           default_group: str, now: str | None = None) -> int:
    """Move a workstation to a group; the change number."""
    group = policy.check_group(group)
    why = policy.check_reason(reason)
    _workstation(store, agent_id, "agent_id")
    change = store.assign_policy_group(agent_id, group, actor, why, now or utc_timestamp(),
                                       default_group)
    before = (_before(store, change) or {}).get("group", default_group)
    own.emit(CollectorKind.POLICY_ASSIGNED, agent_id, "notice", agent_id=agent_id,
             group=group, previous_group=before, change=change, by=actor, reason=why)
    return change


def approve(store: Store, own: OwnAudit, actor: str, scope: Any, reason: Any, *,
            event_id: int | None = None, device: Mapping[str, Any] | None = None,
            expires_at: Any = None, now: str | None = None) -> dict[str, Any]:
    """Approve a device exception from a stored usb.blocked/usb.rejected event (event_id) or
    explicit device fields (id, serial, hash); the exception as stored, with its change."""
    now = now or utc_timestamp()
    scope = policy.check_scope(scope)
    why = policy.check_reason(reason)
    expiry = policy.check_expiry(expires_at, now)
    if (event_id is None) == (device is None):
        raise PolicyInputError("event_id: give either the id of a usb.blocked/usb.rejected "
                               "event or the device's fields, not both")
    source = None
    if event_id is not None:
        event = store.policy_event(event_id)
        if event is None:
            raise UnknownRecord("event_id", f"no stored event {event_id}")
        checked = policy.device_from_event(event["kind"], event["data"])
        source = f"{event['agent_id']}#{event['seq']}"
    else:
        assert device is not None
        checked = policy.check_device(device)
    if scope.startswith("agent:"):
        _workstation(store, scope[6:], "scope")
    rule = policy.exception_rule(checked)
    item = store.add_policy_exception(rule, scope, checked, why, actor, now, expiry)
    own.emit(CollectorKind.POLICY_EXCEPTION_APPROVED, item["exception_id"], "notice",
             exception_id=item["exception_id"], change=item["approved_change"], scope=scope,
             rule=rule, device_id=checked["id"], device_hash=checked["hash"],
             device_serial=checked["serial"], expires_at=expiry, by=actor, reason=why,
             from_event=source)
    return item


def withdraw(store: Store, own: OwnAudit, actor: str, exception_id: str, reason: Any,
             now: str | None = None) -> int:
    """End an exception in force before its expiry; the change number."""
    why = policy.check_reason(reason)
    item = store.policy_exception(exception_id) if wire.EXCEPTION_ID_RE.fullmatch(
        exception_id) else None
    change = None if item is None else store.end_policy_exception(
        exception_id, "withdrawn", actor, why, now or utc_timestamp())
    if item is None or change is None:
        raise UnknownException(f"exception_id: no exception {exception_id!r} in force")
    own.emit(CollectorKind.POLICY_EXCEPTION_WITHDRAWN, exception_id, "notice",
             exception_id=exception_id, change=change, scope=item["scope"], rule=item["rule"],
             by=actor, reason=why)
    return change


def expire_due(store: Store, own: OwnAudit, now: str | None = None) -> list[dict[str, Any]]:
    """End every exception past its expiry (one change each) and record each as an event."""
    ended = store.expire_policy_exceptions(now or utc_timestamp(), EXPIRY_ACTOR)
    for item in ended:
        own.emit(CollectorKind.POLICY_EXCEPTION_EXPIRED, item["exception_id"], "notice",
                 exception_id=item["exception_id"], change=item["ended_change"],
                 scope=item["scope"], rule=item["rule"], expires_at=item["expires_at"],
                 approved_by=item["approved_by"])
        log.info("device exception %s (%s) expired: change %d", item["exception_id"],
                 item["scope"], item["ended_change"])
    return ended


def document_for(store: Store, agent_id: str, default_group: str, issuer: str,
                 now: str | None = None) -> wire.PolicyDocument | None:
    """The document a workstation gets now; None while its group has no rules set."""
    inputs = store.policy_inputs(agent_id, default_group)
    if inputs is None:
        return None
    return policy.build_document(inputs, issuer, now or utc_timestamp())


def signed_for(store: Store, key: Ed25519PrivateKey, agent_id: str, default_group: str,
               issuer: str) -> dict[str, Any] | None:
    """The signed envelope (protocol/policy.sign) for a workstation, or None."""
    document = document_for(store, agent_id, default_group, issuer)
    return None if document is None else wire.sign(document, key)


class ExpiryWatch:
    """The collector's thread that ends expired exceptions every `period` seconds (each one a
    new version for the workstations in its scope and a policy.exception_expired event).
    Several collectors on one database may each run one: the store's write lock lets one end
    an exception, the other then finds nothing due."""

    def __init__(self, store: Store, own: OwnAudit, period: float) -> None:
        self.store = store
        self.own = own
        self.period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="policy-expiry", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                expire_due(self.store, self.own)
            except StoreUnavailable:  # the database away: said once (database_watch.py)
                pass
            except Exception:  # a store hiccup must not end the watch
                log.exception("policy exception expiry check failed")
            self._stop.wait(self.period)
