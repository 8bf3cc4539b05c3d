"""`floor-agent demo`: the floor on simulated hardware, one command (as root).

The collector runs as its own process over real HTTPS, exactly as under systemd. The
workstation agent runs as its own process too, with usb_guard on a simulated USB bus (umockdev)
where a stick and a phone get plugged and blocked, and with netlock inside a simulated floor
network (namespaces: workstation, router, central server, an "internet" host) whose firewall it
loads and watches; a phone then starts USB tethering (usb0 appears) and is unplugged again:
a breach and its recovery. The workstation reaches the collector through the central server's
address, relayed to the host. Capabilities not built yet are stood in for by a second agent
sending labelled sample events. Later issues add their simulated hardware here.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

from floor_agent import service
from floor_agent.audit.agent import AuditAgent, enroll
from floor_agent.audit.forwarder import pinned_client
from floor_agent.collector import core, server, tls
from floor_agent.config import (
    AuditClientConfig,
    CollectorConfig,
    CollectorSection,
    NetlockConfig,
    UsbGuardConfig,
    WorkstationConfig,
)
from floor_agent.netlock.sim import NamespaceRelay, Topology
from floor_agent.usb_guard.sim import SimulatedUsbBus
from floor_agent.usb_guard.sim_bus import KEYBOARD, PHONE_MTP, STICK, WACOM

DEFAULT_USB_RULES = Path(__file__).resolve().parents[1] / "config" / "usb-rules.conf"
PLUGS = ((STICK, "a SanDisk stick"), (PHONE_MTP, "a phone in MTP mode"))
COLLECTOR_ON_FLOOR = ("10.77.1.10", 9443)  # the central server's address, relayed to the host
TETHER = "usb0"
SAMPLES = (
    ("door.granted", "door front", "info", {"person": "P-0042", "sample": True}),
    ("cctv.segment", "cam-1", "info", {"segment": "cam-1/2026-11-29/08/0001.mp4",
                                        "sample": True}),
)


def free_port(preferred: int) -> int:
    """The preferred port when it is free, else (or for 0) one the kernel picks."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
        except OSError:
            probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_yaml(path: Path, config: CollectorConfig | WorkstationConfig) -> None:
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
    netlock = network.config().model_dump(mode="json")
    netlock["allow"][0]["tcp"].append(floor_port)
    workstation_config = WorkstationConfig(
        audit=AuditClientConfig(agent_id="demo-ws-01", state_dir=work / "workstation",
                                collector_url=f"https://{floor_host}:{floor_port}",
                                heartbeat_seconds=10),
        usb_guard=UsbGuardConfig(rules_file=DEFAULT_USB_RULES),
        netlock=NetlockConfig.model_validate(netlock))
    # The capabilities not built yet are stood in for by labelled sample events.
    samples_config = WorkstationConfig(audit=AuditClientConfig(
        agent_id="demo-samples", state_dir=work / "samples", collector_url=url,
        heartbeat_seconds=10), usb_guard=UsbGuardConfig(enabled=False))
    write_yaml(work / "collector.yaml", collector_config)
    write_yaml(work / "workstation.yaml", workstation_config)

    files = server.init(collector_config)
    store, _ = server.open_collector(collector_config)
    try:
        tokens = [core.create_token(store, "workstation", 600) for _ in range(2)]
        api_key = core.create_api_key(store, "demo")
    finally:
        store.close()

    stop = threading.Event()
    service.install_shutdown_handlers(stop)
    proc = subprocess.Popen([sys.executable, "-m", "floor_agent.cli", "collector", "run",
                             "--config", str(work / "collector.yaml")],
                            start_new_session=True)  # Ctrl-C reaches the demo, which stops
    # the agents first (so their last events are delivered) and then the collector.
    bus = SimulatedUsbBus([KEYBOARD, WACOM], work / "usb-bus")
    samples: AuditAgent | None = None
    try:
        wait_healthy(url, files.ca_cert, proc, 30)
        relay = NamespaceRelay(network.ns["cen"], COLLECTOR_ON_FLOOR, ("127.0.0.1", port))
        relay.start()
        for config, token in zip((workstation_config, samples_config), tokens, strict=True):
            if not (config.audit.state_dir / "agent.key").exists():  # enrolled from the host
                local = config.audit.model_copy(update={"collector_url": url})
                enroll(local, "workstation", token, files.ca_cert)
        bus.start(["ip", "netns", "exec", network.ns["ws"], sys.executable, "-m",
                   "floor_agent.cli", "workstation", "--config", str(work / "workstation.yaml")])
        samples = AuditAgent(samples_config.audit, "workstation")
        samples.start()
        print(f"""
floor-agent demo is running (work dir {work})
  collector   {url}  (CA {files.ca_cert}, {tls.fingerprint(files.ca_cert)})
  demo-ws-01  workstation agent with usb_guard on a simulated USB bus (keyboard, Wacom
              tablet); a SanDisk stick and a phone are plugged in a few seconds: both blocked;
              and netlock in namespace {network.ns["ws"]} (firewall loaded, every check
              verified); then a phone tethers (usb0 appears): net.breach, and is unplugged:
              net.recovered. Try: ip netns exec {network.ns["ws"]} floor-agent netlock status \
              --config {work / 'workstation.yaml'}
  demo-samples  sample events for the capabilities still to come (door, camera)
  API key     {api_key}

Look at it:
  curl -s --cacert {files.ca_cert} -H 'Authorization: Bearer {api_key}' \\
       '{url}/api/v1/events?kind_prefix=usb.&limit=5'
  curl -s --cacert {files.ca_cert} -H 'Authorization: Bearer {api_key}' {url}/api/v1/agents
  floor-agent collector verify --config {work / 'collector.yaml'}
  API document: {url}/docs

Ctrl-C stops everything.
""", flush=True)
        started = time.monotonic()
        steps = [(f"plugging {label} into demo-ws-01", lambda spec=spec: bus.plug(spec))
                 for spec, label in PLUGS]
        steps += [
            (f"a phone starts USB tethering on demo-ws-01 ({TETHER} appears)",
             lambda: network.add_tether_interface(TETHER)),
            ("", lambda: None),
            (f"the tethering phone is unplugged ({TETHER} goes away)",
             lambda: network.exec("ws", ["ip", "link", "del", TETHER])),
        ]
        for kind, subject, severity, data in itertools.cycle(SAMPLES):
            if stop.wait(2.0):
                break
            elapsed = time.monotonic() - started
            if args.duration is not None and elapsed > args.duration:
                break
            if steps:
                label, step = steps.pop(0)
                if label:
                    print(f"demo: {label}", flush=True)
                step()
            samples.emit(kind, subject, severity, **data)
            for name, child in (("collector", proc), ("workstation agent", bus.proc)):
                if child is not None and child.poll() is not None:
                    print(f"{name} exited with {child.returncode}", file=sys.stderr)
                    return 1
    finally:
        if samples is not None:
            samples.stop(drain_seconds=5)
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
