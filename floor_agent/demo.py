"""`floor-agent demo`: the floor on simulated hardware, one command (as root).

The collector runs as its own process over real HTTPS, exactly as under systemd. The
workstation agent runs as its own process too, with usb_guard on a simulated USB bus (umockdev)
where a stick and a phone get plugged and blocked, and with netlock inside a simulated floor
network (namespaces: workstation, router, central server, an "internet" host) whose firewall it
loads and watches; a phone then starts USB tethering (usb0 appears) and is unplugged again:
a breach and its recovery. The workstation reaches the collector through the central server's
address, relayed to the host. A door controller runs as its own process too (`floor-agent
door`, enrolled with the collector) on the door floor of simulated/door_floor.py: a real pcscd
with virtual readers and cards, a fingerprint module simulator, a simulated door; Alice gets in
with her card and finger, a clone of her card is refused with an alarm. A camera box runs as its
own process too (`floor-agent cctv`, enrolled with the collector) recording a synthetic camera: a
scripted scene (camera_scenes: a worker walks across, the lens gets covered) encoded to H.264 and
served by a real RTSP server (GStreamer); its footage, hash-chained segments, stays in the work
dir. Every capability now runs for real: there is no sample-events agent any more.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

from floor_agent import service
from floor_agent.access.door_io import DoorIoError
from floor_agent.audit.agent import enroll
from floor_agent.audit.forwarder import pinned_client
from floor_agent.cctv.config import CctvConfig, CctvSection
from floor_agent.collector import core, self_audit, server, tls
from floor_agent.collector.config import CollectorConfig, CollectorSection
from floor_agent.config.audit import AuditClientConfig
from floor_agent.dashboard import user_admin
from floor_agent.netlock.config import NetlockConfig
from floor_agent.protocol.event import utc_timestamp
from floor_agent.protocol.kinds.door import DoorKind
from floor_agent.roles.config import WorkstationConfig
from floor_agent.simulated.camera import RtspServer, make_scene_file
from floor_agent.simulated.camera_scenes import Covered, MovingObject, Scene, Script
from floor_agent.simulated.door_floor import ALWAYS, WAIT, DoorFloor, DoorFloorError, Finger, Holder
from floor_agent.simulated.network import NamespaceRelay, Topology
from floor_agent.simulated.usb_bus import SimulatedUsbBus
from floor_agent.simulated.usb_devices import KEYBOARD, PHONE_MTP, STICK, WACOM
from floor_agent.store.interface import Store
from floor_agent.usb_guard.config import UsbGuardConfig

DEFAULT_USB_RULES = Path(__file__).resolve().parents[1] / "config" / "usb-rules.conf"
PLUGS = ((STICK, "a SanDisk stick"), (PHONE_MTP, "a phone in MTP mode"))
COLLECTOR_ON_FLOOR = ("10.77.1.10", 9443)  # the central server's address, relayed to the host
TETHER = "usb0"
DEMO_ADMIN = "admin"
DEMO_CUSTOMERS = (("client_code", "customer_name"), ("C-1001", "Hochzeitsstudio Sonnenschein"),
                  ("C-1002", "Meyer Portraitfotografie"), ("C-1003", "Alpenblick Hotels"))
ALICE_UID = bytes.fromhex("04A224B2C35E80")
ALICE = Holder("alice", "Alice", ALICE_UID, "always",
               (Finger("alice-1", 1, b"demo: alice right index"),))
CAMERA_SIZE = (320, 180, 10)  # width, height, fps: a small camera, cheap on two cores
CAMERA_SECONDS = 180.0  # the scene's length; then the stream ends, a reconnect replays it


def camera_script() -> Script:
    """Every 30 s a worker walks across the floor (motion); at 10-14 s and again every minute
    the lens is covered (cctv.tamper covered, then cleared)."""
    walkers = tuple(MovingObject(f"worker-{n}", 30 * n + 2, 30 * n + 7, (-0.1, 0.6),
                                 (1.1, 0.5)) for n in range(round(CAMERA_SECONDS / 30)))
    covers = tuple(Covered(60 * n + 10, 60 * n + 14) for n in range(round(CAMERA_SECONDS / 60)))
    return Script(CAMERA_SECONDS, walkers + covers)


def camera_file(work: Path) -> Path:
    """The synthetic camera's scene as H.264 (made once per work dir, a few seconds)."""
    path = work / "camera" / "floor-a.mp4"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        width, height, fps = CAMERA_SIZE
        make_scene_file(path.with_suffix(".tmp.mp4"), Scene(width, height, fps, seed=3),
                        camera_script())
        path.with_suffix(".tmp.mp4").rename(path)
    return path


def free_port(preferred: int) -> int:
    """The preferred port when it is free, else (or for 0) one the kernel picks."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
        except OSError:
            probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_yaml(path: Path, config: CollectorConfig | WorkstationConfig | CctvConfig) -> None:
    path.write_text("# written by floor-agent demo\n"
                    + yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))


def wait_healthy(url: str, ca: Path, proc: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    with pinned_client(url, ca, 2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"collector exited with {proc.returncode}")
            try:
                if client.get("/healthz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"collector not healthy within {seconds} s")


def dashboard_admin(store: Store, config: CollectorConfig) -> str:
    """The dashboard's admin with a fresh one-time password (a demo run again in the same
    directory resets it): there is no default password, not even in the demo."""
    own = self_audit.open_writer(config)
    try:
        now = utc_timestamp()
        try:
            return user_admin.create(store, own, DEMO_ADMIN, "admin", "floor-agent demo", now)
        except user_admin.UserError:
            return user_admin.reset(store, own, DEMO_ADMIN, "floor-agent demo", now)
    finally:
        own.close()


def door_steps(door: DoorFloor) -> list[tuple[str, Callable[[], None]]]:
    """Alice in with her card and finger, a clone of her card refused, Alice out again (so a
    demo run again in the same directory finds her outside)."""

    def show(uid: bytes, finger: str | None, reader: int, key: bool, walk_through: bool
             ) -> None:
        try:
            event = door.present(uid, finger, reader=reader, key=key)
            alarms = ", ".join(event["data"]["alarms"]) or "none"
            print(f"demo:   {event['kind']} ({event['data']['reason']}; alarms: {alarms})",
                  flush=True)
            if walk_through and event["kind"] == DoorKind.GRANTED:
                assert door.relay is not None
                if not door.relay.wait_for(True, WAIT):
                    raise DoorFloorError("granted, but the lock relay was never energised")
                door.relay.open_door()
                door.relay.close_door()
                if not door.relay.wait_for(False, WAIT):
                    raise DoorFloorError("the door closed, but the lock never relocked")
                print("demo:   the lock opened, the door opened and closed, relocked", flush=True)
        except (DoorFloorError, DoorIoError) as exc:
            print(f"demo: the door did not answer as expected: {exc}", file=sys.stderr,
                  flush=True)

    def forced() -> None:
        try:
            assert door.relay is not None
            door.relay.open_door()  # the lock is engaged: nobody was granted
            event = door.wait_event(DoorKind.FORCED)
            print(f"demo:   {event['kind']} ({event['severity']}): the door opened while "
                  f"locked", flush=True)
            door.relay.close_door()
        except (DoorFloorError, DoorIoError) as exc:
            print(f"demo: the door did not answer as expected: {exc}", file=sys.stderr,
                  flush=True)

    return [
        ("Alice shows her card and finger at the front door's entry reader (demo-door-01)",
         lambda: show(ALICE_UID, "alice-1", 0, True, True)),
        ("a clone of Alice's card (her UID, not the site's key) at the entry reader",
         lambda: show(ALICE_UID, "alice-1", 0, False, False)),
        ("Alice leaves: card and finger at the exit reader",
         lambda: show(ALICE_UID, "alice-1", 1, True, True)),
        ("someone forces the front door open: no card, the lock engaged", forced),
    ]


def main(args: argparse.Namespace) -> int:
    service.setup_logging("info")
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="floor-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    if not DEFAULT_USB_RULES.exists():
        print(f"{DEFAULT_USB_RULES}: the shipped USB rules are missing; run the demo from a "
              f"checkout of floor-agent", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("floor-agent demo: run it as root (it builds network namespaces for netlock)",
              file=sys.stderr)
        return 2
    port = free_port(args.port)
    url = f"https://127.0.0.1:{port}"
    floor_host, floor_port = COLLECTOR_ON_FLOOR
    collector_config = CollectorConfig(collector=CollectorSection(
        state_dir=work / "collector", listen_port=port,
        server_names=["localhost", "127.0.0.1", floor_host]))
    network = Topology(workdir=work / "network")
    network.start()
    relay: NamespaceRelay | None = None
    # The workstation agent runs for real: usb_guard on a simulated USB bus, netlock in the
    # workstation's namespace, allowed to reach the central server (collector, DNS, 8443).
    # probes get 500 ms (not 50): the demo shares 2 cores with the whole floor
    netlock = network.config(probe_timeout_ms=500).model_dump(mode="json")
    netlock["allow"][0]["tcp"].append(floor_port)
    workstation_config = WorkstationConfig(
        audit=AuditClientConfig(agent_id="demo-ws-01", state_dir=work / "workstation",
                                collector_url=(f"https://{floor_host}:{floor_port}",),
                                heartbeat_seconds=10),
        usb_guard=UsbGuardConfig(rules_file=DEFAULT_USB_RULES),
        netlock=NetlockConfig.model_validate(netlock))
    # The camera box: a synthetic camera on a real RTSP server, recorded by `floor-agent cctv`.
    camera = RtspServer({"floor-a": camera_file(work)})
    cctv_config = CctvConfig(
        audit=AuditClientConfig(agent_id="demo-cctv-01", state_dir=work / "cctv",
                                collector_url=(url,), heartbeat_seconds=10),
        cctv=CctvSection.model_validate({
            "storage_dir": str(work / "cctv" / "footage"), "segment_seconds": 4.0,
            "offline_after_seconds": 5.0, "reconnect_initial_seconds": 0.5,
            "reconnect_max_seconds": 5.0, "sweep_interval_seconds": 60.0,
            "min_free_bytes": 0, "min_free_percent": 1.0,
            "cameras": [{"camera_id": "floor-a", "name": "Floor A (synthetic)",
                         "url": camera.url("floor-a"),
                         "motion": {"analysis_fps": 5.0, "end_after_seconds": 2.0}}]}))
    write_yaml(work / "collector.yaml", collector_config)
    write_yaml(work / "workstation.yaml", workstation_config)
    write_yaml(work / "cctv.yaml", cctv_config)
    # the seed company's customer list, kept on the collector host only (0600): floor-side
    # data carries the client codes, and `privacy scan` proves no name got into an event
    customers = work / "customers.csv"
    customers.write_text("".join(f"{code},{name}\n" for code, name in DEMO_CUSTOMERS))
    customers.chmod(0o600)

    files = server.init(collector_config)
    store, _ = server.open_collector(collector_config)
    try:
        tokens = [core.create_token(store, "workstation", 600),
                  core.create_token(store, "cctv", 600)]
        door_token = core.create_token(store, "door", 600)
        api_key = core.create_api_key(store, "demo")
        admin_password = dashboard_admin(store, collector_config)
    finally:
        store.close()

    stop = threading.Event()
    service.install_shutdown_handlers(stop)
    proc = subprocess.Popen([sys.executable, "-m", "floor_agent.cli", "collector", "run",
                             "--config", str(work / "collector.yaml")],
                            start_new_session=True)  # Ctrl-C reaches the demo, which stops
    # the agents first (so their last events are delivered) and then the collector.
    bus = SimulatedUsbBus([KEYBOARD, WACOM], work / "usb-bus")
    cctv: subprocess.Popen[bytes] | None = None
    # The door: pcscd (started here unless one with the vpcd readers runs), the fingerprint
    # module simulator, the simulated door and `floor-agent door`, enrolled with the collector.
    door = DoorFloor(collector_url=url, ca=files.ca_cert, api_key=api_key,
                     door_token=lambda: door_token, work=work / "door", holders=[ALICE],
                     levels={"always": ALWAYS}, agent_id="demo-door-01", unlock_seconds=3.0,
                     held_open_seconds=10.0, sync_interval_seconds=5.0, heartbeat_seconds=10.0)
    try:
        wait_healthy(url, files.ca_cert, proc, 30)
        relay = NamespaceRelay(network.ns["cen"], COLLECTOR_ON_FLOOR, ("127.0.0.1", port))
        relay.start()
        for audit, role, token in zip((workstation_config.audit, cctv_config.audit),
                                      ("workstation", "cctv"), tokens, strict=True):
            if not (audit.state_dir / "agent.key").exists():  # enrolled from the host
                local = audit.model_copy(update={"collector_url": (url,)})
                enroll(local, role, token, files.ca_cert)
        bus.start(["ip", "netns", "exec", network.ns["ws"], sys.executable, "-m",
                   "floor_agent.cli", "workstation", "--config", str(work / "workstation.yaml")])
        camera.start()
        with (work / "cctv" / "agent.log").open("ab") as log:  # its own session, like the door
            cctv = subprocess.Popen([sys.executable, "-m", "floor_agent.cli", "cctv",
                                     "--config", str(work / "cctv.yaml")],
                                    stdout=subprocess.DEVNULL, stderr=log,
                                    start_new_session=True)
        door.__enter__()
        pcscd = ("started by the demo" if door.pcscd.proc is not None
                 else "already running, left running")
        print(f"""
floor-agent demo is running (work dir {work})
  dashboard   {url}/  user {DEMO_ADMIN}, one-time password {admin_password}
              (set a new one at first login; the browser must trust the collector's CA
              {files.ca_cert}, or accept its certificate once)
  collector   {url}  (CA {files.ca_cert}, {tls.fingerprint(files.ca_cert)})
  demo-ws-01  workstation agent with usb_guard on a simulated USB bus (keyboard, Wacom
              tablet); a SanDisk stick and a phone are plugged in a few seconds: both blocked;
              and netlock in namespace {network.ns["ws"]} (firewall loaded, every check
              verified); then a phone tethers (usb0 appears): net.breach, and is unplugged:
              net.recovered. Try: ip netns exec {network.ns["ws"]} floor-agent netlock status \\
              --config {work / 'workstation.yaml'}
  demo-door-01  door controller for door "front" (floor-agent door): entry and exit readers
              on pcscd ({pcscd}) with virtual cards, a fingerprint module
              simulator, a simulated door. Alice shows her card and finger at the entry:
              door.granted, the lock relay unlocks, the door opens and closes; then a clone of
              her card (her UID, not the site's key): door.denied clone_suspected and a
              door.clone_suspected alarm; then she leaves by the exit. Config and log in
              {door.root}.
              Try: FLOOR_AGENT_API_KEY={api_key} floor-agent door people list \\
              --config {door.config_path}
  demo-cctv-01  camera box (floor-agent cctv) recording camera "floor-a": a synthetic camera
              on a real RTSP server ({camera.url("floor-a")}), a scripted {CAMERA_SECONDS:.0f} s
              scene in H.264 ({CAMERA_SIZE[0]}x{CAMERA_SIZE[1]}, {CAMERA_SIZE[2]} fps). Packets
              copied into 4 s hash-chained segments (cctv.segment); a worker walks across
              every 30 s (cctv.motion_start/end) and the lens is covered at 0:10 and every
              minute (cctv.tamper covered, then cleared); when the scene ends, so does the
              stream: the agent reports it (cctv.stream_lost, cctv.stream_gap), reconnects
              and the camera plays the scene again.
              Footage in {work / 'cctv' / 'footage'}.
              Try: floor-agent cctv verify --config {work / 'cctv.yaml'}
  (no sample events any more: every capability above runs for real)
  API key     {api_key}

Look at it:
  curl -s --cacert {files.ca_cert} -H 'Authorization: Bearer {api_key}' \\
       '{url}/api/v1/events?kind_prefix=usb.&limit=5'
  curl -s --cacert {files.ca_cert} -H 'Authorization: Bearer {api_key}' \\
       '{url}/api/v1/events?agent_id=demo-door-01&kind_prefix=door.&limit=20'
  curl -s --cacert {files.ca_cert} -H 'Authorization: Bearer {api_key}' \\
       '{url}/api/v1/events?agent_id=demo-cctv-01&kind_prefix=cctv.&limit=20'
  curl -s --cacert {files.ca_cert} -H 'Authorization: Bearer {api_key}' {url}/api/v1/agents
  floor-agent collector verify --config {work / 'collector.yaml'}
  floor-agent privacy scan --config {work / 'collector.yaml'} --customers {customers}
  floor-agent report tom --config {work / 'collector.yaml'} --out {work / 'tom.html'} \
       --pdf {work / 'tom.pdf'}
  API document: {url}/docs

Ctrl-C stops everything.
""", flush=True)
        started = time.monotonic()
        steps: list[tuple[str, Callable[[], object]]] = [
            (f"plugging {label} into demo-ws-01", functools.partial(bus.plug, spec))
            for spec, label in PLUGS]
        steps += door_steps(door)
        steps += [
            (f"a phone starts USB tethering on demo-ws-01 ({TETHER} appears)",
             lambda: network.add_tether_interface(TETHER)),
            ("", lambda: None),
            (f"the tethering phone is unplugged ({TETHER} goes away)",
             lambda: network.exec("ws", ["ip", "link", "del", TETHER])),
        ]
        while not stop.wait(2.0):
            elapsed = time.monotonic() - started
            if args.duration is not None and elapsed > args.duration:
                break
            if steps:
                label, step = steps.pop(0)
                if label:
                    print(f"demo: {label}", flush=True)
                step()
            for name, child in (("collector", proc), ("workstation agent", bus.proc),
                                ("door agent", door.agent), ("cctv agent", cctv)):
                if child is not None and child.poll() is not None:
                    print(f"{name} exited with {child.returncode}", file=sys.stderr)
                    return 1
    finally:
        if cctv is not None and cctv.poll() is None:  # its last events delivered
            cctv.send_signal(signal.SIGTERM)
            try:
                cctv.wait(30)
            except subprocess.TimeoutExpired:
                cctv.kill()
                cctv.wait()
        camera.stop()
        door.close()  # the door agent (its last events delivered), the door, pcscd if ours
        bus.stop()
        if relay is not None:
            relay.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        network.close()
        print(f"demo stopped; data kept in {work}", flush=True)
    return 0
