"""The controller's side of credentials: fetch the collector's snapshot and hand it to the cache.

`CredentialSync` is one thread: it fetches GET /api/v1/credentials at start and then every
`sync_interval_seconds` (asking ?since=<version it has>, so an unchanged snapshot costs a 304),
checks the snapshot record by record (collector/credentials.py) and hands a model.Credentials
to `replace` (CredentialsCache.replace). When the collector is unreachable or answers badly the
cache keeps the last snapshot and the doors keep deciding from it; the outage is logged once
and recorded once (door.sync_failed), and its end too (door.sync_recovered).

`SignedClient` is the door's agent-signed HTTP client (audit/signed_client.py), shared with
`door enroll`, which uploads sealed templates with it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from floor_agent.access.model import Credentials, Template
from floor_agent.audit.signed_client import AgentClient
from floor_agent.collector import credentials as wire
from floor_agent.config import DoorConfig

log = logging.getLogger(__name__)

Emit = Callable[..., Any]  # AuditAgent.emit(kind, subject, severity, **data)


class SyncError(RuntimeError):
    """The collector could not be asked or its answer not used; the message says which."""


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = response.text[:200]
    return f"{response.status_code}: {detail}"


class SignedClient(AgentClient):
    """The door controller's requests to the collector: credentials and sealed templates."""

    def fetch_credentials(self, since: int | None = None) -> Credentials | None:
        """The collector's snapshot, or None when `since` is still current (304)."""
        path = "/api/v1/credentials" + (f"?since={since}" if since is not None else "")
        try:
            response = self.request("GET", path)
        except httpx.HTTPError as exc:
            raise SyncError(f"collector unreachable: {exc.__class__.__name__}: {exc}") from None
        if response.status_code == 304:
            return None
        if response.status_code != 200:
            raise SyncError(f"collector refused the credentials request ({_detail(response)})")
        try:
            return wire.credentials_from_json(orjson.loads(response.content))
        except orjson.JSONDecodeError as exc:
            raise SyncError(f"credentials snapshot is not JSON ({exc})") from None
        except wire.CredentialError as exc:
            raise SyncError(f"credentials snapshot refused: {exc}") from None

    def upload_template(self, template: Template) -> int:
        """Store one templates.seal() output on the collector; returns the new version."""
        try:
            response = self.request("POST", "/api/v1/templates",
                                    wire.template_to_json(template))
        except httpx.HTTPError as exc:
            raise SyncError(f"collector unreachable: {exc.__class__.__name__}: {exc}") from None
        if response.status_code != 201:
            raise SyncError(f"collector refused the template ({_detail(response)})")
        return int(response.json()["version"])


class CredentialSync:
    """The sync thread; `step()` is one fetch, usable without the thread (tests, start-up)."""

    def __init__(self, client: SignedClient, replace: Callable[[Credentials], Any], emit: Emit,
                 interval: float, version: int | None = None) -> None:
        self.client = client
        self.replace = replace
        self.emit = emit
        self.interval = interval
        self.version = version  # what the cache holds (None: nothing yet)
        self.last_error: str | None = None
        self.last_success: float | None = None  # time.time() of the last good answer
        self._outage_since: float | None = None
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, config: DoorConfig, replace: Callable[[Credentials], Any], emit: Emit,
                    version: int | None = None) -> CredentialSync:
        """The door agent's sync: its key and collector from `audit`, the interval from
        `access.sync_interval_seconds`; version: what the cache holds (cache.version)."""
        return cls(SignedClient.from_config(config.audit, config.role), replace, emit,
                   config.access.sync_interval_seconds, version)

    def step(self) -> bool:
        """Fetch once; True when the collector answered and the cache is current."""
        try:
            credentials = self.client.fetch_credentials(self.version)
            if credentials is not None:
                try:
                    self.replace(credentials)
                except Exception as exc:  # a cache failure must not end the sync
                    raise SyncError(f"local cache refused the snapshot: {exc}") from None
        except SyncError as exc:
            self._failed(str(exc))
            return False
        if self._outage_since is not None:
            outage = time.monotonic() - self._outage_since
            log.warning("credentials sync recovered after %.0f s", outage)
            self.emit("door.sync_recovered", self.client.agent_id, "notice",
                      outage_seconds=round(outage),  # whole seconds: no floats in audit data
                      version=credentials.version if credentials else self.version)
        self._outage_since = None
        self.last_error = None
        self.last_success = time.time()
        if credentials is not None:
            log.info("credentials version %d: %d people, %d cards", credentials.version,
                     len(credentials.people), len(credentials.cards))
            self.emit("door.credentials_updated", self.client.agent_id, "info",
                      version=credentials.version, previous=self.version,
                      people=len(credentials.people), cards=len(credentials.cards))
            self.version = credentials.version
        return True

    def _failed(self, reason: str) -> None:
        """Log and record the first failure of an outage; later ones only at debug."""
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning("credentials sync failed, doors keep deciding from the cached version "
                        "%s: %s", self.version, reason)
            self.emit("door.sync_failed", self.client.agent_id, "warning", reason=reason,
                      cached_version=self.version)
        else:
            log.debug("credentials sync still failing: %s", reason)
        self.last_error = reason

    # -- thread ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="credentials-sync", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.step()
            except Exception:  # keep syncing whatever one failure was
                log.exception("credentials sync step failed")
            self.wake.wait(self.interval)
            self.wake.clear()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def sync_now(self) -> None:
        self.wake.set()

    def stop(self, timeout: float | None = None) -> None:
        self.stop_event.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
