"""`floor-agent demo`: a collector and a workstation agent on loopback, one command.

The collector runs as its own process over real HTTPS, exactly as under systemd; the agent
enrolls with a one-time token and reports sample events through the real spool and forwarder.
Later capabilities add their simulated hardware here.
"""

from __future__ import annotations

import argparse
import itertools
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
    WorkstationConfig,
)

SAMPLES = (
    ("usb.blocked", "usb 1-2 (0781:5567 SanDisk Cruzer)", "warning",
     {"reason": "mass storage (08) is not allowed", "sample": True}),
    ("net.check", "egress", "info", {"result": "isolated", "sample": True}),
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
    port = free_port(args.port)
    url = f"https://127.0.0.1:{port}"
    collector_config = CollectorConfig(collector=CollectorSection(
        state_dir=work / "collector", listen_port=port))
    workstation_config = WorkstationConfig(audit=AuditClientConfig(
        agent_id="demo-ws-01", state_dir=work / "workstation", collector_url=url,
        heartbeat_seconds=10))
    write_yaml(work / "collector.yaml", collector_config)
    write_yaml(work / "workstation.yaml", workstation_config)

    files = server.init(collector_config)
    store, _ = server.open_collector(collector_config)
    try:
        token = core.create_token(store, "workstation", 600)
        api_key = core.create_api_key(store, "demo")
    finally:
        store.close()

    stop = threading.Event()
    service.install_shutdown_handlers(stop)
    proc = subprocess.Popen([sys.executable, "-m", "floor_agent.cli", "collector", "run",
                             "--config", str(work / "collector.yaml")],
                            start_new_session=True)  # Ctrl-C reaches the demo, which stops
    # the agent first (so its last events are delivered) and then the collector.
    agent: AuditAgent | None = None
    try:
        wait_healthy(url, files.ca_cert, proc, 30)
        if not (workstation_config.audit.state_dir / "agent.key").exists():
            enroll(workstation_config.audit, "workstation", token, files.ca_cert)
        agent = AuditAgent(workstation_config.audit, "workstation")
        agent.start()
        print(f"""
floor-agent demo is running (work dir {work})
  collector   {url}  (CA {files.ca_cert}, {tls.fingerprint(files.ca_cert)})
  agent       demo-ws-01, emitting a sample event every 2 s
  API key     {api_key}

Look at it:
  curl -s --cacert {files.ca_cert} -H 'Authorization: Bearer {api_key}' \\
       '{url}/api/v1/events?limit=5'
  curl -s --cacert {files.ca_cert} -H 'Authorization: Bearer {api_key}' {url}/api/v1/agents
  floor-agent collector verify --config {work / 'collector.yaml'}
  API document: {url}/docs

Ctrl-C stops everything.
""", flush=True)
        started = time.monotonic()
        for kind, subject, severity, data in itertools.cycle(SAMPLES):
            if stop.wait(2.0):
                break
            if args.duration is not None and time.monotonic() - started > args.duration:
                break
            agent.emit(kind, subject, severity, **data)
            if proc.poll() is not None:
                print(f"collector exited with {proc.returncode}", file=sys.stderr)
                return 1
    finally:
        if agent is not None:
            agent.stop(drain_seconds=5)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        print(f"demo stopped; data kept in {work}", flush=True)
    return 0


