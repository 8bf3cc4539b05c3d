"""The door's simulated hardware in one place, for tests, the demo and the benchmark: a real
pcscd with vsmartcard's virtual readers (cards are smart_card.VirtualCard threads), the
fingerprint module on a pseudo-terminal (fingerprint_module), the door on a Unix socket
(door.SimulatedRelay). Each speaks the real protocol at the bottom of the stack, so the controller's
own drivers run unchanged.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yaml

from floor_agent.access import sitekey
from floor_agent.access.config import DoorConfig
from floor_agent.access.fingerprint import FingerprintModule
from floor_agent.access.sync import SignedClient
from floor_agent.access.templates import seal
from floor_agent.audit.agent import enroll
from floor_agent.audit.forwarder import pinned_client
from floor_agent.config.audit import AuditClientConfig
from floor_agent.protocol.credentials import Template
from floor_agent.protocol.kinds.door import DoorKind
from floor_agent.simulated.door import SimulatedRelay
from floor_agent.simulated.smart_card import VirtualCard

if TYPE_CHECKING:
    from floor_agent.simulated.fingerprint_module import SimulatedModule

VPCD_READERS = ("Virtual PCD 00 00", "Virtual PCD 00 01")
VPCD_PORTS = {VPCD_READERS[0]: 35963, VPCD_READERS[1]: 35964}


def pcsc_readers() -> list[str] | None:
    """The readers pcscd lists, or None when no pcscd answers."""
    from smartcard import scard

    hresult, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hresult != scard.SCARD_S_SUCCESS:
        return None
    try:
        hresult, readers = scard.SCardListReaders(ctx, [])
        return list(readers) if hresult == scard.SCARD_S_SUCCESS else []
    finally:
        scard.SCardReleaseContext(ctx)


class PcscDaemon:
    """pcscd in the foreground with the vpcd readers; one already running (with them) is reused
    and left running. One pcscd per machine, fixed vpcd ports: never two users at once."""

    def __init__(self, log_dir: Path | None = None) -> None:
        self.log_path = Path(log_dir or tempfile.mkdtemp(prefix="pcscd-")) / "pcscd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15) -> list[str]:
        readers = pcsc_readers()
        if readers is not None:
            if VPCD_READERS[0] not in readers:
                raise RuntimeError(f"a running pcscd lacks the vpcd readers: {readers}")
            return readers
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(["pcscd", "--foreground"], stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while (readers := pcsc_readers()) is None or VPCD_READERS[0] not in readers:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"pcscd without vpcd readers: {self.log_path.read_text()}")
            time.sleep(0.1)
        return readers

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> PcscDaemon:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- a whole door floor --------------------------------------------------------------------

EVERY_DAY = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALWAYS: tuple[dict[str, Any], ...] = (
    {"days": list(EVERY_DAY), "start": "00:00", "end": "00:00"},)  # 00:00-00:00: whole days
DOOR_ID = "front"
WAIT = 20.0  # seconds any single step of the floor may take before it is reported stuck
DECISIONS = (DoorKind.GRANTED, DoorKind.DENIED)


class DoorFloorError(RuntimeError):
    """The simulated floor did not come up, or the door did not answer in time; says why."""


@dataclass(frozen=True)
class Finger:
    """A finger enrolled on the simulated sensor. `features` is what the simulator reads from
    the glass: a stand-in, never a real biometric."""

    template_id: str
    number: int  # 1-10
    features: bytes


@dataclass(frozen=True)
class Holder:
    """A person with their key card and enrolled fingers, as the admin API receives them."""

    person_id: str
    name: str
    uid: bytes
    level: str = "always"
    fingers: tuple[Finger, ...] = ()
    duress_fingers: tuple[int, ...] = ()


class DoorFloor:
    """One door ("front": entry reader 'Virtual PCD 00 00', exit reader 'Virtual PCD 00 01',
    fingerprint module on a pty, the door on a Unix socket) with a real `floor-agent door`
    process enrolled with a running collector. The same setup for the end-to-end test, the demo
    and the benchmark; use it as a context manager.

    The collector is given as its URL, CA file, an admin API key and `door_token` (mints a
    one-time "door" enrollment token). Entering creates the site key, the levels, people and
    cards through the admin API, enrolls the agent, enrolls each finger on the simulated
    module, seals it under the site key and uploads it signed, writes `work/door.yaml`, starts
    pcscd (unless one with the vpcd readers runs), the module, the door and the agent, and
    returns once the agent holds the door and has the credentials. Events are read back over
    the collector's API."""

    def __init__(self, *, collector_url: str, ca: Path, api_key: str,
                 door_token: Callable[[], str], work: Path, holders: Sequence[Holder],
                 levels: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                 agent_id: str = "door-front", unlock_seconds: float = 3.0,
                 held_open_seconds: float = 1.0, sync_interval_seconds: float = 1.0,
                 heartbeat_seconds: float = 5.0, lockout_failures: int = 3) -> None:
        self.collector_url = collector_url
        self.ca = Path(ca)
        self.api_key = api_key
        self.door_token = door_token
        self.root = Path(work)
        self.holders = tuple(holders)
        self.levels = dict(levels) if levels is not None else {"always": ALWAYS}
        self.agent_id = agent_id
        self.config_path = self.root / "door.yaml"
        self.log_path = self.root / "agent.log"
        self.fingers = {f.template_id: f.features for h in self.holders for f in h.fingers}
        self.timing = {"unlock_seconds": unlock_seconds, "held_open_seconds": held_open_seconds,
                       "sync_interval_seconds": sync_interval_seconds,
                       "heartbeat_seconds": heartbeat_seconds}
        self.lockout_failures = lockout_failures
        self.config: DoorConfig | None = None  # once the module's pty is known
        self.pcscd = PcscDaemon(self.root)
        self.module: SimulatedModule | None = None
        self.relay: SimulatedRelay | None = None
        self.site: sitekey.SiteKey | None = None
        self.agent: subprocess.Popen[bytes] | None = None
        self.seen: set[int] = set()
        self._api: httpx.Client | None = None

    def __repr__(self) -> str:  # no API key
        return f"DoorFloor(agent_id={self.agent_id!r}, work={str(self.root)!r})"

    # --- setting up ---------------------------------------------------------------------------

    def _door_config(self, sensor_port: str) -> DoorConfig:
        timing = self.timing
        return DoorConfig.model_validate({
            "audit": {"agent_id": self.agent_id, "state_dir": str(self.root / "state"),
                      "collector_url": self.collector_url, "ca_cert": str(self.ca),
                      "backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.5,
                      "heartbeat_seconds": timing["heartbeat_seconds"]},
            "access": {
                "site_key_file": str(self.root / "site.key"),
                "sync_interval_seconds": timing["sync_interval_seconds"],
                "policy": {"lockout_failures": self.lockout_failures},
                "doors": [{
                    "door_id": DOOR_ID, "name": "Front door", "zone_inside": "floor",
                    "readers": [{"reader_id": "entry", "direction": "in",
                                 "pcsc_reader": VPCD_READERS[0]},
                                {"reader_id": "exit", "direction": "out",
                                 "pcsc_reader": VPCD_READERS[1]}],
                    "fingerprint": {"port": sensor_port, "capture_timeout_seconds": 2.0},
                    "io": {"driver": "simulated", "simulated_link": str(self.root / "door.sock"),
                           "unlock_seconds": timing["unlock_seconds"],
                           "held_open_seconds": timing["held_open_seconds"]}}]}})

    def __enter__(self) -> DoorFloor:
        from floor_agent.simulated.fingerprint_module import SimulatedModule

        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self.pcscd.start()
            self.module = SimulatedModule().start()
            self.config = config = self._door_config(self.module.port)
            self.relay = SimulatedRelay(self.root / "door.sock")
            key_file = self.root / "site.key"
            self.site = sitekey.load(key_file) if key_file.exists() else sitekey.generate(key_file)
            self._api = pinned_client(self.collector_url, self.ca, 5.0)
            # events of an earlier run in the same directory are not this floor's
            self.seen.update(e["seq"] for e in self.events())
            self._credentials()
            self.config_path.write_text("# written by floor_agent.simulated.door_floor.DoorFloor\n"
                                        + yaml.safe_dump(config.model_dump(mode="json"),
                                                         sort_keys=False))
            if not (config.audit.state_dir / "agent.key").exists():
                enroll(config.audit, "door", self.door_token(), self.ca)
            self._upload_fingers()
            self.start_agent()
            self.wait_event(DoorKind.CREDENTIALS_UPDATED)
            if not self.relay.wait_for(False, WAIT, connected=True):  # the agent holds the door
                raise DoorFloorError(f"the door agent never took the door: {self._log_tail()}")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _admin(self, path: str, body: dict[str, Any]) -> None:
        assert self._api is not None
        response = self._api.post(path, json=body,
                                  headers={"authorization": f"Bearer {self.api_key}"})
        if response.status_code != 201:
            raise DoorFloorError(f"POST {path}: {response.status_code} {response.text}")

    def _credentials(self) -> None:
        """Levels, people and cards through the collector's admin API."""
        for level, windows in self.levels.items():
            self._admin("/api/v1/levels", {"level_id": level, "doors": [DOOR_ID],
                                           "windows": [dict(w) for w in windows]})
        for holder in self.holders:
            self._admin("/api/v1/people", {"person_id": holder.person_id, "name": holder.name,
                                           "access_levels": [holder.level],
                                           "duress_fingers": list(holder.duress_fingers)})
            self._admin("/api/v1/cards", {"uid": holder.uid.hex().upper(),
                                          "person_id": holder.person_id})

    def _upload_fingers(self) -> None:
        """Each finger enrolled on the module, sealed under the site key, uploaded signed by the
        door agent (as an enrollment station does)."""
        assert self.module is not None and self.site is not None and self.config is not None
        assert self._api is not None
        response = self._api.get("/api/v1/people",
                                 headers={"authorization": f"Bearer {self.api_key}"})
        if response.status_code != 200:
            raise DoorFloorError(f"GET /api/v1/people: {response.status_code} {response.text}")
        uploaded = {t["template_id"] for person in response.json()["people"]
                    for t in person["templates"]}  # by an earlier run in the same directory
        client = SignedClient.from_config(AuditClientConfig.model_validate(
            self.config.audit.model_dump()), "door")
        try:
            for holder in self.holders:
                for finger in holder.fingers:
                    if finger.template_id in uploaded:
                        continue
                    self.module.place(finger.features)
                    with FingerprintModule(self.module.port, response_timeout=2.0) as sensor:
                        clear = sensor.enroll(capture_timeout=2.0)
                    self.module.place(None)
                    client.upload_template(Template(
                        finger.template_id, holder.person_id, finger.number,
                        seal(self.site.template_key(), holder.person_id, finger.template_id,
                             clear)))
        finally:
            client.close()

    # --- the agent ----------------------------------------------------------------------------

    def start_agent(self) -> None:
        """`floor-agent door` in its own session (a Ctrl-C meant for the demo does not reach
        it: whoever started the floor stops it, after its last events are delivered)."""
        with self.log_path.open("ab") as log:
            self.agent = subprocess.Popen(
                [sys.executable, "-m", "floor_agent.cli", "door", "--config",
                 str(self.config_path)], stdout=subprocess.DEVNULL, stderr=log,
                start_new_session=True)

    def stop_agent(self, timeout: float = 20) -> None:
        if self.agent is not None and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGTERM)
            try:
                self.agent.wait(timeout)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait()

    def close(self) -> None:
        """Agent first (its last events are delivered), then the hardware, then pcscd (only
        if this floor started it)."""
        self.stop_agent()
        if self.relay is not None:
            self.relay.close()
        if self.module is not None:
            self.module.close()
        self.pcscd.stop()
        if self._api is not None:
            self._api.close()
            self._api = None

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no agent log)"

    # --- what the collector received ----------------------------------------------------------

    def events(self, prefix: str = "door.") -> list[dict[str, Any]]:
        """The agent's events of that kind prefix (the newest 1000) in seq order."""
        if self._api is None:
            raise DoorFloorError("the floor is not running")
        response = self._api.get("/api/v1/events", params={
            "agent_id": self.agent_id, "kind_prefix": prefix, "limit": 1000},
            headers={"authorization": f"Bearer {self.api_key}"})
        if response.status_code != 200:
            raise DoorFloorError(f"GET /api/v1/events: {response.status_code} {response.text}")
        return sorted(response.json()["events"], key=lambda e: e["seq"])

    def _next(self, match: Callable[[dict[str, Any]], bool], timeout: float
              ) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                events = self.events()
            except httpx.HTTPError:  # the collector is restarting: ask again
                events = []
            for event in events:
                if event["seq"] not in self.seen and match(event):
                    self.seen.add(event["seq"])
                    return event
            time.sleep(0.1)
        return None

    def wait_event(self, kind: str, where: Callable[[dict[str, Any]], bool] = lambda e: True,
                   timeout: float = WAIT) -> dict[str, Any]:
        """The next event of that kind not seen before (events arrive through the forwarder)."""
        event = self._next(lambda e: e["kind"] == kind and where(e), timeout)
        if event is None:
            kinds = [(e["kind"], e["data"].get("reason")) for e in self.events()]
            raise DoorFloorError(f"no {kind} within {timeout} s; events {kinds}\n"
                                 f"{self._log_tail()}")
        return event

    def decision(self, uid: bytes, timeout: float = WAIT) -> dict[str, Any]:
        """The next door.granted or door.denied for that card not seen before."""
        wanted = uid.hex().upper()
        event = self._next(lambda e: e["kind"] in DECISIONS and e["data"]["uid"] == wanted,
                           timeout)
        if event is None:
            raise DoorFloorError(f"no decision for card {wanted} within {timeout} s\n"
                                 f"{self._log_tail()}")
        return event

    # --- people at the door -------------------------------------------------------------------

    def card(self, uid: bytes, *, reader: int = 0, key: bool = True) -> VirtualCard:
        """A card for the entry (0) or exit (1) reader: issued by the site (keyed), or a clone
        of the UID alone (`key=False`). Not inserted yet."""
        port = VPCD_PORTS[VPCD_READERS[reader]]
        if key:
            assert self.site is not None
            return VirtualCard.issued(uid, self.site, port=port)
        return VirtualCard(uid, None, port=port)

    def present(self, uid: bytes, finger: str | None, *, reader: int = 0,
                key: bool = True) -> dict[str, Any]:
        """A card at a reader while the finger (a template id, None: no finger) is on the
        sensor; returns the decision's event, once the collector has it."""
        assert self.module is not None
        self.module.place(self.fingers[finger] if finger else None)
        try:
            with self.card(uid, reader=reader, key=key):
                event = self.decision(uid)
        finally:
            self.module.place(None)
        return event
