"""The workstation's side of the central policy: pull it from the collector and offer it to the
enforcer (apply.py), which verifies and applies it or refuses it.

`PolicySync` is one thread: GET /api/v1/policy (?since=<enforced version>, a 304 when that is
current), then a long poll on GET /api/v1/policy/watch, which the collector answers as soon as
the version changes, so a new version arrives within seconds. Every request is agent-signed
over the pinned-CA channel (audit/signed_client.py). When the collector is out of reach the
workstation keeps enforcing the last verified policy; the outage is recorded once
(policy.sync_failed) and its end too (policy.sync_recovered), and it retries with a growing
delay (common/backoff.py). A collector without the watch route is asked every
`watch_wait_seconds` instead. A version refused for what it says is not asked for again: the
long poll waits for the collector's version to change (also when what came was older than the
one enforced: a collector restored from an older backup, a replayed envelope; pulled again at
once, 200 workstations would flood it); one refused because this machine could not load it
(`enforce_failed`: nft failed) is tried again after the same growing delay.

The policy key: pinned at enrollment (audit/policy_key.py), else fetched here once from
GET /api/v1/policy/key and pinned (trust on first use, `policy.key_pinned`). A version whose
signature does not match makes the sync ask for the key again: a different one is refused
(`policy.refused`, reason key_changed) and never pinned over the old one.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import httpx

from floor_agent.audit.policy_key import PolicyKeyError, parse_key, pin
from floor_agent.audit.signed_client import AgentClient, answer_detail
from floor_agent.common.backoff import backoff_delay
from floor_agent.protocol.emit import Emit
from floor_agent.protocol.kinds.policy import PolicyKind
from floor_agent.protocol.policy import MAX_ENVELOPE_BYTES
from floor_agent.ws_policy.apply import RETRIED_REASONS, SUBJECT, PolicyEnforcer, offered_version
from floor_agent.ws_policy.config import PolicyConfig

log = logging.getLogger(__name__)


class SyncError(RuntimeError):
    """The collector could not be asked or its answer not used; the message says which."""


class WatchUnsupported(SyncError):
    """The collector has no policy watch route: ask every `watch_wait_seconds`."""


def _unreachable(exc: httpx.HTTPError) -> SyncError:
    return SyncError(f"collector unreachable: {exc.__class__.__name__}: {exc}")


class PolicyClient(AgentClient):
    """A workstation's signed requests for its policy."""

    def fetch_policy(self, since: int | None = None) -> bytes | None:
        """The envelope's bytes as served (verified by the enforcer, not here), or None when
        `since` is still current (304)."""
        path = "/api/v1/policy" + (f"?since={since}" if since is not None else "")
        try:
            response = self.request("GET", path)
        except httpx.HTTPError as exc:
            raise _unreachable(exc) from None
        if response.status_code == 304:
            return None
        if response.status_code != 200:
            raise SyncError(f"collector refused the policy request ({answer_detail(response)})")
        if len(response.content) > MAX_ENVELOPE_BYTES:
            raise SyncError(f"policy answer larger than {MAX_ENVELOPE_BYTES} bytes")
        return response.content

    def watch(self, since: int, wait: float) -> int:
        """Hold a long poll until the collector's version for this workstation is not `since`
        or `wait` seconds pass; the version it then says. WatchUnsupported from a collector
        without the route."""
        timeout = wait + (self.client.timeout.read or 10.0)
        try:
            response = self.request("GET", f"/api/v1/policy/watch?since={since}&wait={wait:g}",
                                    timeout=timeout, held=True)
        except httpx.HTTPError as exc:
            raise _unreachable(exc) from None
        if response.status_code in (404, 405):
            raise WatchUnsupported(answer_detail(response))
        if response.status_code != 200:
            raise SyncError(f"collector refused the policy watch ({answer_detail(response)})")
        try:
            version = response.json()["version"]
        except (ValueError, KeyError, TypeError):
            raise SyncError("policy watch answer is not {\"version\": ...}") from None
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise SyncError(f"policy watch answer's version is {version!r}")
        return version

    def fetch_key(self) -> str:
        """The collector's policy public key, base64 (checked to be one)."""
        try:
            response = self.request("GET", "/api/v1/policy/key")
        except httpx.HTTPError as exc:
            raise _unreachable(exc) from None
        if response.status_code != 200:
            raise SyncError(f"collector refused the policy key request "
                            f"({answer_detail(response)})")
        try:
            text = response.json()["policy_key"]
            parse_key(text)
        except (ValueError, KeyError, TypeError) as exc:
            raise SyncError(f"policy key answer refused: {exc}") from None
        return str(text).strip()


class PolicySync:
    """The sync thread; `step()` is one pull, usable without the thread (tests)."""

    def __init__(self, client: PolicyClient, enforcer: PolicyEnforcer, emit: Emit,
                 config: PolicyConfig, state_dir: Path, pinned_text: str | None, *,
                 may_pin: bool = True) -> None:
        self.client = client
        self.enforcer = enforcer
        self.emit = emit
        self.config = config
        self.state_dir = state_dir
        self.pinned_text = pinned_text  # the pinned key's base64, None until pinned
        self.may_pin = may_pin  # False: a policy.pub is there but unreadable; never replaced
        self.watching = True
        self.failures = 0
        self.retry = False  # the last version offered is to be tried again (enforce_failed)
        self.retries = 0
        self.last_error: str | None = None
        # the collector's version whose answer was refused for what it says: the long poll
        # waits for that version to change instead of pulling the same answer again (a
        # collector restored from an older backup, a proxy replaying an old envelope)
        self.held: int | None = None
        self.watched: int | None = None  # the version the last long poll reported
        self._outage_since: float | None = None
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one round -------------------------------------------------------------------------

    def step(self) -> bool:
        """Pin the key if none is, pull once and offer what came; True when the collector
        answered (whatever the enforcer then decided)."""
        try:
            if self.pinned_text is None and not self._pin_on_first_use():
                return False
            raw = self.client.fetch_policy(self.enforcer.version)
            self.retry = False
            self.held = None
            if raw is not None and not self.enforcer.offer(raw):
                if self.enforcer.last_refusal == "bad_signature":
                    self._check_key(raw)
                self.retry = self.enforcer.last_refusal in RETRIED_REASONS
                if not self.retry:
                    self.held = self.watched if self.watched is not None \
                        else offered_version(raw)
        except SyncError as exc:
            self._failed(str(exc))
            return False
        if self._outage_since is not None:
            outage = time.monotonic() - self._outage_since
            log.warning("policy sync recovered after %.0f s", outage)
            self.emit(PolicyKind.SYNC_RECOVERED, SUBJECT, "notice",
                      outage_seconds=round(outage), version=self.enforcer.version)
        self._outage_since = None
        self.failures = 0
        self.last_error = None
        self.retries = self.retries + 1 if self.retry else 0
        return True

    def _pin_on_first_use(self) -> bool:
        if not self.may_pin:
            raise SyncError(f"{self.state_dir}/policy.pub is unreadable: nothing is pinned "
                            "over it, nothing can be verified")
        text = self.client.fetch_key()
        try:
            key = pin(self.state_dir, text)
        except (PolicyKeyError, OSError) as exc:
            raise SyncError(f"pinning the policy key failed: {exc}") from None
        self.pinned_text = text
        self.enforcer.key = key
        log.warning("policy key pinned on first use from %s", self.client.client.base_url)
        self.emit(PolicyKind.KEY_PINNED, SUBJECT, "warning", policy_key=text,
                  how="trust on first use over the pinned-CA channel")
        return True

    def _check_key(self, raw: bytes) -> None:
        """After a signature mismatch: does the collector sign with another key now?"""
        offered = self.client.fetch_key()
        if offered != self.pinned_text:
            self.enforcer.refuse("key_changed", f"the collector now offers policy key "
                                 f"{offered}, pinned is {self.pinned_text}; replace "
                                 f"{self.state_dir}/policy.pub to accept it", raw)

    def _failed(self, reason: str) -> None:
        self.failures += 1
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning("policy sync failed, version %s stays enforced: %s",
                        self.enforcer.version or "bootstrap", reason)
            self.emit(PolicyKind.SYNC_FAILED, SUBJECT, "warning", reason=reason[:2000],
                      enforced_version=self.enforcer.version)
        else:
            log.debug("policy sync still failing: %s", reason)
        self.last_error = reason

    # -- thread ----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="policy-sync", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self.stop_event.is_set():
            ok = False
            try:
                ok = self.step()
            except Exception:  # keep syncing whatever one failure was
                log.exception("policy sync step failed")
            if self.stop_event.is_set():
                return
            if ok and not self.retry and self.watching and self._watch():
                continue  # changed, or a quiet long poll: pull (a 304 when unchanged)
            if not ok or self.retry:
                delay = backoff_delay(max(1, self.failures, self.retries),
                                      self.config.backoff_initial_seconds,
                                      self.config.backoff_max_seconds)
            else:
                delay = self.config.watch_wait_seconds
            self.stop_event.wait(delay)

    def _watch(self) -> bool:
        """One long poll; False when it failed (the thread then waits before pulling)."""
        since = max(self.enforcer.version or 0, self.enforcer.refused_version)
        if self.held is not None:
            since = self.held
        try:
            self.watched = self.client.watch(since, self.config.watch_wait_seconds)
        except WatchUnsupported as exc:
            log.warning("collector has no policy watch (%s): asking every %.0f s", exc,
                        self.config.watch_wait_seconds)
            self.watching = False
            return False
        except SyncError as exc:
            self._failed(str(exc))
            return False
        return True

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float | None = None) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)
