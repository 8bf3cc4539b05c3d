"""Applying the central policy: one verified document becomes the USB guard's rules and
netlock's allowlist, atomically, or nothing changes.

Order, for every document offered (by the sync, or the cache at start):
1. verify (protocol/policy.verify): the pinned key, this agent, no rollback, no conflict;
2. prepare, changing nothing: the effective USB rules (exceptions in force first) parsed by the
   guard's own parser, the allowlist validated by netlock's config model and built (names
   resolved); a document that fails any of this is refused whole;
3. netlock first: its ruleset load is the one step that can still fail as a whole, and nft
   loads a ruleset in one transaction, so a failure leaves the kernel's ruleset and
   everything else as they were (the policy is refused); then the watcher proves the new
   allowlist;
4. the USB guard's rules replaced and every present device judged again (cannot fail as a
   whole: a device's failed write is its own critical event, as on plug);
5. the envelope cached (atomic, cache.py), then `policy.applied`.
A crash between 3 and 5 leaves the previous envelope cached: the next start enforces it and the
sync brings the new one again.

Exceptions expire on the workstation's own clock: `expire_due` (run by the runner's timer at
`next_expiry`, and every minute) drops them from the guard's rules without the collector.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from floor_agent.common.clock import utc_now
from floor_agent.netlock.allowlist import (
    Allowlist,
    AllowlistError,
    Resolver,
    build,
    system_resolver,
)
from floor_agent.netlock.config import NetlockConfig
from floor_agent.netlock.firewall import FirewallError
from floor_agent.protocol.emit import Emit
from floor_agent.protocol.event import utc_timestamp
from floor_agent.protocol.kinds.policy import PolicyKind
from floor_agent.protocol.policy import (
    DeviceException,
    PolicyDocument,
    PolicyRefused,
    content_hash,
    effective_usb_rules,
    in_force,
    next_expiry,
    policy_hash,
    verify,
)
from floor_agent.usb_guard.rule import Rule
from floor_agent.usb_guard.rule_parser import RuleSyntaxError, parse_rules_file
from floor_agent.ws_policy.cache import PolicyCache

log = logging.getLogger(__name__)

SUBJECT = "policy"
# refusals that say the document or its channel is not to be trusted (the security staff act);
# the others say the document cannot be enforced here (the policy's author acts)
CRITICAL_REASONS = frozenset({"bad_signature", "wrong_agent", "rollback", "conflict",
                              "key_changed"})
# refusals of this machine's moment, not of the document: the same version is tried again
RETRIED_REASONS = frozenset({"enforce_failed"})


class UsbTarget(Protocol):
    """The running USB guard (usb_guard/guard.UsbGuard)."""

    def replace_rules(self, rules: list[Rule]) -> Any: ...


class NetlockTarget(Protocol):
    """The running netlock watcher (netlock/watch.NetlockWatcher)."""

    def replace_allowlist(self, config: NetlockConfig, allowlist: Allowlist,
                          reason: str = "policy") -> None: ...


# loads the ruleset of a config and its built allowlist; raises FirewallError
LoadRuleset = Callable[[NetlockConfig, Allowlist], Any]


@dataclass(frozen=True, slots=True)
class Prepared:
    """A document checked for this workstation, ready to hand to the guard and netlock."""

    document: PolicyDocument
    rules: list[Rule]
    netlock: NetlockConfig | None  # None: netlock is off on this workstation
    allowlist: Allowlist | None
    in_force: tuple[DeviceException, ...]


def netlock_config(bootstrap: NetlockConfig, allow: Any) -> NetlockConfig:
    """The local netlock section with its `allow` entries replaced by the policy's, validated
    as the config file's would be; PolicyRefused("invalid_allowlist") when they are not."""
    data = {name: getattr(bootstrap, name) for name in NetlockConfig.model_fields}
    data["allow"] = [dict(item) for item in allow]
    try:
        return NetlockConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_where(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise PolicyRefused("invalid_allowlist", problems) from None


def _where(loc: tuple[int | str, ...]) -> str:
    """A validation error's place as the document names it: netlock_allow[1].tcp[0]."""
    if not loc or loc[0] != "allow":
        return "netlock"
    return "netlock_allow" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}"
                                     for p in loc[1:])


def prepare(document: PolicyDocument, now: datetime, netlock: NetlockConfig | None,
            resolve: Resolver = system_resolver) -> Prepared:
    """Everything checked before anything changes: the effective rules parse, the allowlist
    is valid and builds. PolicyRefused("invalid_rules" | "invalid_allowlist") otherwise.
    `netlock`: the local section (None or disabled: the policy's allowlist is not used)."""
    text = effective_usb_rules(document, now)
    try:
        rules = parse_rules_file(text, f"policy version {document.version}")
    except RuleSyntaxError as exc:
        raise PolicyRefused("invalid_rules", str(exc)) from None
    config = allowlist = None
    if netlock is not None and netlock.enabled:
        config = netlock_config(netlock, document.netlock_allow)
        try:
            allowlist = build(config, resolve)
        except AllowlistError as exc:
            raise PolicyRefused("invalid_allowlist", str(exc)) from None
    return Prepared(document, rules, config, allowlist, in_force(document, now))


def offered_version(raw: bytes) -> int | None:
    """The version an envelope claims (for a refusal's event), if it says one."""
    try:
        version = orjson.loads(raw)["document"]["version"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def exceptions_data(items: tuple[DeviceException, ...]) -> list[dict[str, Any]]:
    return [{"exception_id": e.exception_id, "rule": e.rule, "scope": e.scope,
             "approved_by": e.approved_by, "expires_at": e.expires_at} for e in items]


class PolicyEnforcer:
    """What the workstation enforces now, and the one door through which that changes.

    Before the guard and netlock run, `start_from_cache` decides what they start with; once
    they run, `usb`, `netlock` and `load_ruleset` are set and `offer` and `expire_due` change
    them. One lock: the sync and the expiry timer never apply at the same time."""

    def __init__(self, agent_id: str, emit: Emit, cache: PolicyCache,
                 key: Ed25519PublicKey | None, netlock: NetlockConfig | None, *,
                 clock: Callable[[], datetime] = utc_now,
                 resolve: Resolver = system_resolver) -> None:
        self.agent_id = agent_id
        self.emit = emit
        self.cache = cache
        self.key = key
        self.bootstrap_netlock = netlock
        self.clock = clock
        self.resolve = resolve
        self.usb: UsbTarget | None = None
        self.netlock: NetlockTarget | None = None
        self.load_ruleset: LoadRuleset | None = None
        self.document: PolicyDocument | None = None  # None: the bootstrap is enforced
        self.content: str | None = None
        self.in_force: tuple[str, ...] = ()  # exception ids the guard's rules hold now
        self.netlock_config: NetlockConfig | None = netlock
        self.refused_version = 0  # newest version refused: not waited for again
        self.last_refusal: str | None = None  # reason of the last envelope refused
        self._refused: set[tuple[str, int | None, str]] = set()
        self.changed = threading.Event()  # set when the enforced document changes
        self._lock = threading.RLock()

    @property
    def version(self) -> int | None:
        return None if self.document is None else self.document.version

    # -- at start --------------------------------------------------------------------------

    def start_from_cache(self) -> Prepared | None:
        """The cached envelope verified again (the pinned key, this agent) and prepared: what
        the guard and netlock start with. None: the bootstrap (no cache, or the cache refused,
        which is a `policy.refused` event naming why)."""
        raw = self.cache.load()
        if raw is None:
            self._bootstrap("no policy cached yet")
            return None
        with self._lock:
            try:
                document = self._verify(raw)
                prepared = prepare(document, self.clock(), self.bootstrap_netlock, self.resolve)
            except PolicyRefused as exc:
                self._refuse(exc, raw, "cache")
                self._bootstrap(f"cached policy refused ({exc.reason})")
                return None
            self._enforced(prepared)
            self._applied(prepared, "cache", changed=True)
            return prepared

    def _bootstrap(self, why: str) -> None:
        log.warning("policy: enforcing the bootstrap (local rules file and netlock section): %s",
                    why)
        self.emit(PolicyKind.APPLIED, SUBJECT, "notice", source="bootstrap", reason=why,
                  version=None, policy_hash=None, content_hash=None, group=None,
                  exceptions=[])

    # -- while running ---------------------------------------------------------------------

    def offer(self, raw: bytes, source: str = "collector") -> bool:
        """Verify, prepare and apply one envelope; False (and `policy.refused`, once per
        version and reason) when it is refused, and then nothing changed."""
        with self._lock:
            try:
                document = self._verify(raw)
            except PolicyRefused as exc:
                self._refuse(exc, raw, source)
                return False
            if document.version == self.version:
                return True  # fetched again: the same content (verify refused other content)
            changed = content_hash(document) != self.content
            try:
                prepared = prepare(document, self.clock(), self.bootstrap_netlock, self.resolve)
                if changed:
                    self._enforce(prepared)
            except PolicyRefused as exc:
                self._refuse(exc, raw, source)
                return False
            try:
                self.cache.store(raw)
            except OSError as exc:  # enforced all the same; the next start falls back further
                log.error("policy: caching version %d failed: %s", document.version, exc)
            self._enforced(prepared)
            self._applied(prepared, source, changed=changed)
            return True

    def expire_due(self) -> list[str]:
        """Drop the exceptions that expired by the workstation's clock from the guard's rules;
        returns their ids (none: nothing changed, nothing emitted)."""
        with self._lock:
            if self.document is None:
                return []
            now = self.clock()
            current = in_force(self.document, now)
            if tuple(e.exception_id for e in current) == self.in_force:
                return []
            expired = [i for i in self.in_force if i not in {e.exception_id for e in current}]
            try:
                prepared = prepare(self.document, now, self.bootstrap_netlock, self.resolve)
            except PolicyRefused as exc:  # parsed before with these exceptions: cannot be
                log.error("policy: rules without the expired exceptions refused: %s", exc)
                return []
            if self.usb is not None:
                self.usb.replace_rules(prepared.rules)
            self._enforced(prepared)
            log.info("policy version %d: exception(s) %s expired", self.document.version,
                     ", ".join(expired))
            self._applied(prepared, "expiry", changed=True, expired=expired)
            return expired

    def next_expiry(self) -> datetime | None:
        with self._lock:
            return None if self.document is None else next_expiry(self.document, self.clock())

    # -- steps -----------------------------------------------------------------------------

    def _verify(self, raw: bytes) -> PolicyDocument:
        if self.key is None:
            raise PolicyRefused("no_key", "no policy key pinned (state_dir/policy.pub): "
                                "nothing can be verified")
        return verify(raw, self.key, agent_id=self.agent_id, enforced_version=self.version,
                      enforced_content=self.content)

    def _enforce(self, prepared: Prepared) -> None:
        """netlock (the one step that can fail as a whole, atomically), then the USB guard."""
        version = prepared.document.version
        if prepared.netlock is not None and prepared.allowlist is not None and (
                self.netlock_config is None
                or prepared.netlock.allow != self.netlock_config.allow):
            if prepared.netlock.enforce and self.load_ruleset is not None:
                try:
                    self.load_ruleset(prepared.netlock, prepared.allowlist)
                except FirewallError as exc:
                    raise PolicyRefused("enforce_failed", f"netlock ruleset not loaded, the "
                                        f"previous one stays: {exc}") from None
            if self.netlock is not None:
                self.netlock.replace_allowlist(prepared.netlock, prepared.allowlist,
                                               reason=f"policy version {version}")
        if self.usb is not None:
            self.usb.replace_rules(prepared.rules)

    def _enforced(self, prepared: Prepared) -> None:
        self.document = prepared.document
        self.content = content_hash(prepared.document)
        self.in_force = tuple(e.exception_id for e in prepared.in_force)
        if prepared.netlock is not None:
            self.netlock_config = prepared.netlock
        self.changed.set()

    def _applied(self, prepared: Prepared, source: str, *, changed: bool,
                 expired: list[str] | None = None) -> None:
        document = prepared.document
        due = next_expiry(document, self.clock())
        log.info("policy version %d of group %s enforced (%s, %d exception(s) in force)",
                 document.version, document.group, source, len(prepared.in_force))
        self.emit(PolicyKind.APPLIED, SUBJECT, "info", source=source, version=document.version,
                  policy_hash=policy_hash(document), content_hash=self.content,
                  group=document.group, issued_at=document.issued_at, changed=changed,
                  exceptions=exceptions_data(prepared.in_force), expired=expired or [],
                  next_expiry=None if due is None else utc_timestamp(due),
                  netlock_allow=None if prepared.netlock is None
                  else [d.name for d in prepared.netlock.allow])

    def _refuse(self, exc: PolicyRefused, raw: bytes, source: str) -> None:
        self.last_refusal = exc.reason
        version = offered_version(raw)
        if version is not None and exc.reason not in RETRIED_REASONS:
            self.refused_version = max(self.refused_version, version)
        key = (source, version, exc.reason)
        if key in self._refused:
            log.debug("policy version %s refused again: %s", version, exc)
            return
        self._refused.add(key)
        log.error("policy version %s from the %s refused, version %s stays enforced: %s",
                  version, source, self.version or "bootstrap", exc)
        self.emit(PolicyKind.REFUSED, SUBJECT,
                  "critical" if exc.reason in CRITICAL_REASONS else "warning",
                  reason=exc.reason, detail=exc.detail[:2000], version=version, source=source,
                  enforced_version=self.version)

    def refuse(self, reason: str, detail: str, raw: bytes = b"", source: str = "collector"
               ) -> None:
        """Record a refusal decided outside verify (the sync's key check)."""
        with self._lock:
            self._refuse(PolicyRefused(reason, detail), raw, source)
