"""The controller's side of credentials: fetch the collector's snapshot and hand it to the cache.

`CredentialSync` is one thread: it fetches GET /api/v1/credentials at start and then every
`sync_interval_seconds` (asking ?since=<version it has>, so an unchanged snapshot costs a 304),
checks the snapshot record by record (protocol/credentials.py) and hands the Credentials
to `replace` (CredentialsCache.replace). When the collector is unreachable or answers badly the
cache keeps the last snapshot and the doors keep deciding from it; the outage is logged once
and recorded once (door.sync_failed), and its end too (door.sync_recovered). For how long
the doors may decide from it, see freshness.py (`on_synced` after every verified answer,
`on_tick` every round).

Between fetches the thread holds a long poll open (GET /api/v1/credentials/watch), which the
collector answers as soon as the version changes: a revoke reaches a connected controller in
about the collector's poll period plus one fetch, not a sync interval later. A collector
without the route (404) is polled every interval as before.

Clock: the signed client measures the offset to the collector's clock on every answer and
signs with corrected time (audit/signed_client.py), so a wrong controller clock does not stop
the sync. An offset past `skew_alarm` is recorded once per episode (door.clock_skew, with the
offset in seconds and the host's own time-sync state where timedatectl can tell), and its
end (door.clock_skew_resolved).

`SignedClient` is the door's agent-signed HTTP client (audit/signed_client.py), shared with
`door enroll`, which uploads sealed templates with it.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from floor_agent.access.config import DoorConfig
from floor_agent.audit.signed_client import AgentClient, answer_detail
from floor_agent.protocol import credentials as wire
from floor_agent.protocol.credentials import Credentials, Template
from floor_agent.protocol.emit import Emit
from floor_agent.protocol.kinds.door import DoorKind

log = logging.getLogger(__name__)



class SyncError(RuntimeError):
    """The collector could not be asked or its answer not used; the message says which."""


class WatchUnsupported(SyncError):
    """The collector has no long-poll route (an older release): poll every interval."""


WATCH_MAX_SECONDS = 25.0  # one long poll; below proxies' usual idle limits


def host_time_synchronized() -> bool | None:
    """The host's own view of its clock (systemd-timesyncd/chrony via timedatectl); None when
    it cannot tell (no systemd, no timedatectl)."""
    tool = shutil.which("timedatectl")
    if tool is None:
        return None
    try:
        answer = subprocess.run([tool, "show", "-p", "NTPSynchronized", "--value"],
                                capture_output=True, text=True, timeout=2, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = answer.stdout.strip()
    return {"yes": True, "no": False}.get(value) if answer.returncode == 0 else None


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
            raise SyncError(f"collector refused the credentials request "
                            f"({answer_detail(response)})")
        try:
            return wire.credentials_from_json(orjson.loads(response.content))
        except orjson.JSONDecodeError as exc:
            raise SyncError(f"credentials snapshot is not JSON ({exc})") from None
        except wire.CredentialError as exc:
            raise SyncError(f"credentials snapshot refused: {exc}") from None

    def watch(self, since: int, wait: float) -> bool:
        """Hold a long poll until the collector's version is not `since` (True) or `wait`
        seconds pass (False). WatchUnsupported from a collector without the route."""
        timeout = wait + (self.client.timeout.read or 10.0)
        try:
            response = self.request("GET", f"/api/v1/credentials/watch?since={since}"
                                    f"&wait={wait:g}", timeout=timeout, held=True)
        except httpx.HTTPError as exc:
            raise SyncError(f"collector unreachable: {exc.__class__.__name__}: {exc}") from None
        if response.status_code in (404, 405):
            raise WatchUnsupported(answer_detail(response))
        if response.status_code != 200:
            raise SyncError(f"collector refused the watch ({answer_detail(response)})")
        try:
            return bool(response.json()["changed"])
        except (ValueError, KeyError, TypeError):
            raise SyncError("watch answer is not {\"changed\": ...}") from None

    def upload_template(self, template: Template) -> int:
        """Store one templates.seal() output on the collector; returns the new version."""
        try:
            response = self.request("POST", "/api/v1/templates",
                                    wire.template_to_json(template))
        except httpx.HTTPError as exc:
            raise SyncError(f"collector unreachable: {exc.__class__.__name__}: {exc}") from None
        if response.status_code != 201:
            raise SyncError(f"collector refused the template ({answer_detail(response)})")
        return int(response.json()["version"])


class CredentialSync:
    """The sync thread; `step()` is one fetch, usable without the thread (tests, start-up)."""

    def __init__(self, client: SignedClient, replace: Callable[[Credentials], Any], emit: Emit,
                 interval: float, version: int | None = None, *,
                 on_synced: Callable[[], Any] = lambda: None,
                 on_tick: Callable[[], Any] = lambda: None,
                 skew_alarm: float = 10.0,
                 time_sync_state: Callable[[], bool | None] = host_time_synchronized) -> None:
        self.client = client
        self.replace = replace
        self.emit = emit
        self.interval = interval
        self.version = version  # what the cache holds (None: nothing yet)
        self.on_synced = on_synced  # a verified answer: the cache is current now
        self.on_tick = on_tick  # every round, whatever happened (freshness alarm)
        self.skew_alarm = skew_alarm
        self.time_sync_state = time_sync_state
        self.skewed = False  # door.clock_skew raised and not yet resolved
        self.watching = True  # the collector has the long-poll route
        self.last_error: str | None = None
        self.last_success: float | None = None  # time.time() of the last good answer
        self._outage_since: float | None = None
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, config: DoorConfig, replace: Callable[[Credentials], Any], emit: Emit,
                    version: int | None = None, **hooks: Any) -> CredentialSync:
        """The door agent's sync: its key and collector from `audit`, the interval from
        `access.sync_interval_seconds`; version: what the cache holds (cache.version);
        hooks: on_synced, on_tick."""
        return cls(SignedClient.from_config(config.audit, config.role), replace, emit,
                   config.access.sync_interval_seconds, version,
                   skew_alarm=config.access.clock_skew_alarm_seconds, **hooks)

    def step(self) -> bool:
        """Fetch once; True when the collector answered and the cache is current."""
        try:
            try:
                credentials = self.client.fetch_credentials(self.version)
            finally:
                self._check_clock()
            if credentials is not None:
                try:
                    self.replace(credentials)
                except Exception as exc:  # a cache failure must not end the sync
                    raise SyncError(f"local cache refused the snapshot: {exc}") from None
        except SyncError as exc:
            self._failed(str(exc))
            return False
        self.on_synced()
        if self._outage_since is not None:
            outage = time.monotonic() - self._outage_since
            log.warning("credentials sync recovered after %.0f s", outage)
            self.emit(DoorKind.SYNC_RECOVERED, self.client.agent_id, "notice",
                      outage_seconds=round(outage),  # whole seconds: no floats in audit data
                      version=credentials.version if credentials else self.version)
        self._outage_since = None
        self.last_error = None
        self.last_success = time.time()
        if credentials is not None:
            log.info("credentials version %d: %d people, %d cards", credentials.version,
                     len(credentials.people), len(credentials.cards))
            self.emit(DoorKind.CREDENTIALS_UPDATED, self.client.agent_id, "info",
                      version=credentials.version, previous=self.version,
                      people=len(credentials.people), cards=len(credentials.cards))
            self.version = credentials.version
        return True

    def _check_clock(self) -> None:
        """door.clock_skew when the measured offset passes the alarm, once per episode; its
        end when the offset is back under half of it."""
        offset_ms = self.client.offset_ms
        if offset_ms is None:
            return  # no answer yet: nothing measured, the host's clock is used as it is
        offset = offset_ms / 1000
        if not self.skewed and abs(offset) > self.skew_alarm:
            self.skewed = True
            synchronized = self.time_sync_state()
            log.warning("this controller's clock is %+.1f s off the collector's (host "
                        "time-sync: %s); signing and schedules use the collector's time",
                        offset, synchronized)
            self.emit(DoorKind.CLOCK_SKEW, self.client.agent_id, "warning",
                      offset_seconds=int(round(offset)), alarm_seconds=int(self.skew_alarm),
                      host_time_synchronized=synchronized)
        elif self.skewed and abs(offset) <= self.skew_alarm / 2:
            self.skewed = False
            log.warning("controller clock back within %.1f s of the collector's", offset)
            self.emit(DoorKind.CLOCK_SKEW_RESOLVED, self.client.agent_id, "notice",
                      offset_seconds=int(round(offset)))

    def _failed(self, reason: str) -> None:
        """Log and record the first failure of an outage; later ones only at debug."""
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning("credentials sync failed, doors keep deciding from the cached version "
                        "%s: %s", self.version, reason)
            self.emit(DoorKind.SYNC_FAILED, self.client.agent_id, "warning", reason=reason,
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
            current = False
            try:
                current = self.step()
            except Exception:  # keep syncing whatever one failure was
                log.exception("credentials sync step failed")
            try:
                self.on_tick()
            except Exception:
                log.exception("credentials freshness check failed")
            if current and self.watching and not self.stop_event.is_set() and self._watch():
                continue  # changed, or a quiet long poll: fetch (a 304 when unchanged)
            self.wake.wait(self.interval)
            self.wake.clear()

    def _watch(self) -> bool:
        """One long poll; False when it failed and the thread should wait an interval."""
        try:
            self.client.watch(self.version or 0, min(self.interval, WATCH_MAX_SECONDS))
        except WatchUnsupported as exc:
            log.warning("collector has no credentials watch (%s): polling every %.0f s",
                        exc, self.interval)
            self.watching = False
            return False
        except SyncError as exc:
            log.debug("credentials watch failed: %s", exc)
            return False
        return True

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
