"""A real collector process on loopback HTTPS for integration tests, stopped by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from floor_agent.audit.forwarder import pinned_client
from floor_agent.collector import api_keys, core, server, tls
from floor_agent.collector.config import CollectorConfig, CollectorSection
from floor_agent.config.audit import AuditClientConfig
from floor_agent.roles.config import WorkstationConfig, load_config
from floor_agent.store import open_store
from floor_agent.store.interface import EventQuery, Store
from floor_agent.usb_guard.config import UsbGuardConfig


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_kind(store: Store, agent: str, kind: str, seconds: float = 20) -> dict:
    """The newest `kind` event of `agent` in the store, waiting for it to be delivered."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        page = store.query_events(EventQuery(agent_id=agent, kind=kind, limit=5))
        if page.events:
            return page.events[0]
        time.sleep(0.2)
    raise AssertionError(f"no {kind} from {agent} within {seconds} s")


class CollectorProcess:
    """`floor-agent collector run` in its own process, with its config, CA and store."""

    def __init__(self, root: Path, database_url: str | None = None, init: bool = True,
                 hostname: str | None = None, **section: object) -> None:
        """init=False: no CA or certificate made here; a collector that joins a site gets them
        from 'collector join' (tests/test_collector_join.py). hostname: run init and the
        process as on a host of that name (its own UTS namespace), so a second collector on
        one store has an audit identity of its own."""
        self.root = root
        self.hostname = hostname
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.config = CollectorConfig(collector=CollectorSection(
            state_dir=root / "collector", listen_port=self.port, database_url=database_url,
            **section))
        self.config_path = root / "collector.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config.model_dump(mode="json")))
        assert isinstance(load_config(self.config_path, "collector"), CollectorConfig)
        if not init:
            self.files = tls.TlsFiles.in_dir(self.config.collector.state_dir)
        elif hostname is None:
            self.files = server.init(self.config)
        else:
            subprocess.run(self._command("init"), check=True, capture_output=True, timeout=120)
            self.files = tls.TlsFiles.in_dir(self.config.collector.state_dir)
        self.ca = self.files.ca_cert
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / "collector.log"

    def store(self) -> Store:
        return open_store(self.config.collector.resolved_database_url())

    def token(self, role: str = "workstation") -> str:
        store = self.store()
        try:
            return core.create_token(store, role, 600)
        finally:
            store.close()

    def api_key(self, name: str = "tests", scopes: tuple[str, ...] = api_keys.SCOPES,
                expires_at: str | None = None) -> str:
        """A new key (every scope unless told); a name already in use gets a -2, -3... suffix
        (names are unique among unrevoked keys, and tests ask for "tests" more than once)."""
        store = self.store()
        try:
            taken = {row["name"] for row in store.list_api_keys() if row["revoked_at"] is None}
            unique = name
            for n in range(2, 1000):
                if unique not in taken:
                    break
                unique = f"{name}-{n}"
            return core.create_api_key(store, unique, scopes, expires_at)
        finally:
            store.close()

    def start(self, timeout: float = 30, env: dict[str, str] | None = None) -> None:
        """Run it and wait until /healthz answers; env: variables added (NOTIFY_SOCKET...)."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self._command("run"), stdout=log, stderr=subprocess.STDOUT,
                                     env=None if env is None else os.environ | env)
        deadline = time.monotonic() + timeout
        with pinned_client(self.url, self.ca, 2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"collector exited: {self.log_path.read_text()[-2000:]}")
                try:
                    if client.get("/healthz").status_code == 200:
                        return
                except httpx.HTTPError:
                    time.sleep(0.05)
        raise RuntimeError("collector did not become healthy")

    def run_to_exit(self, timeout: float = 60,
                    env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """`collector run` when it is meant to stop by itself (a start refused): its output."""
        return subprocess.run(self._command("run"), capture_output=True, text=True,
                              timeout=timeout, env=None if env is None else os.environ | env)

    def _command(self, action: str) -> list[str]:
        """`floor-agent collector ACTION`, under self.hostname when one is set."""
        command = [sys.executable, "-m", "floor_agent.cli", "collector", action, "--config",
                   str(self.config_path)]
        if self.hostname is None:
            return command
        as_root = [] if os.geteuid() == 0 else ["--map-root-user"]
        return ["unshare", "--uts", *as_root, "sh", "-c", 'hostname "$0" && exec "$@"',
                self.hostname, *command]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            from audit_events import note_stored_kinds  # the plugin's own import, not before

            note_stored_kinds(self.config.collector.state_dir / "collector.db",
                              self.config.collector.database_url)
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def agent_config(self, name: str, **audit: object) -> WorkstationConfig:
        """A workstation config pointing at this collector, written to ROOT/NAME.yaml."""
        settings = {"agent_id": name, "state_dir": self.root / name, "collector_url": self.url,
                    "ca_cert": self.ca, "backoff_initial_seconds": 0.05,
                    "backoff_max_seconds": 0.5, "heartbeat_seconds": 5.0} | audit
        # usb_guard stays off: these tests are about the audit path and must never touch the
        # machine's real /sys (the usb_guard tests run it on a umockdev bus).
        config = WorkstationConfig(audit=AuditClientConfig(**settings),
                                   usb_guard=UsbGuardConfig(enabled=False))
        (self.root / f"{name}.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
        return config
