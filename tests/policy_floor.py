"""A floor for the central policy's end-to-end tests: the real collector process, real
`floor-agent workstation` processes enrolled with tokens (`policy.enabled: true`), each on its
own umockdev bus, the admin API with a key of scope `policy`, and a tampering proxy.

umockdev-run gives each agent process a fake /sys of its own; its files are plain files under
the testbed's directory (UMOCKDEV_DIR, written to a file by the shell around the agent), so the
test reads a device's `authorized` from outside while the agent runs. umockdev is not a
kernel: these tests show what the agents write to sysfs and report, nothing more.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import yaml
from collector_process import CollectorProcess

from floor_agent.audit.agent import enroll
from floor_agent.audit.forwarder import pinned_client
from floor_agent.collector.tls import TlsFiles
from floor_agent.simulated.usb_devices import UsbSpec, bus_text
from floor_agent.store.interface import EventQuery

REPO = Path(__file__).resolve().parent.parent
BOOTSTRAP_RULES = (REPO / "config" / "usb-rules.conf").read_text()
# the shipped rules with mass storage allowed first (a group whose editors may use sticks)
STORAGE_ALLOWED = "allow with-interface one-of { 08:*:* }\n" + BOOTSTRAP_RULES


def wait_until(what: str, check: Callable[[], Any], seconds: float = 30,
               step: float = 0.05) -> Any:
    """check()'s first truthy value within `seconds`, else AssertionError naming `what`."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds} s (last: {value!r})")
        time.sleep(step)


class PolicyAdmin:
    """The collector's policy admin API with an API key of scope `policy`."""

    def __init__(self, collector: CollectorProcess) -> None:
        self.collector = collector
        self.key = collector.api_key("policy-admin", ("policy",))

    def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        with pinned_client(self.collector.url, self.collector.ca, 10.0) as client:
            response = client.request(method, path, json=body,
                                      headers={"Authorization": f"Bearer {self.key}"})
        assert response.status_code == expect, (response.status_code, response.text)
        return response.json()

    def set_group(self, group: str, usb_rules: str, allow: list[dict[str, Any]] | None = None,
                  reason: str = "e2e") -> int:
        return int(self.call("POST", f"/api/v1/policy/groups/{group}",
                             {"usb_rules": usb_rules, "netlock_allow": allow or [],
                              "reason": reason})["change"])

    def assign(self, agent_id: str, group: str) -> int:
        return int(self.call("POST", "/api/v1/policy/assignments",
                             {"agent_id": agent_id, "group": group, "reason": "e2e"})["change"])

    def approve(self, event_id: int, scope: str, expires_at: str | None = None) -> Any:
        body: dict[str, Any] = {"event_id": event_id, "scope": scope,
                                "reason": "new tablet model, approved by IT"}
        if expires_at is not None:
            body["expires_at"] = expires_at
        return self.call("POST", "/api/v1/policy/exceptions", body, expect=201)


class Events:
    """The collector's stored events, read through its store."""

    def __init__(self, collector: CollectorProcess) -> None:
        self.collector = collector

    def of(self, agent: str | None, kind: str, limit: int = 200) -> list[dict[str, Any]]:
        store = self.collector.store()
        try:
            return store.query_events(EventQuery(agent_id=agent, kind=kind, limit=limit)).events
        finally:
            store.close()

    def applied(self, agent: str, version: int, seconds: float = 30) -> dict[str, Any]:
        """The stored policy.applied of `agent` for `version`, waiting for it."""
        return wait_until(
            f"policy.applied v{version} from {agent}",
            lambda: next((e for e in self.of(agent, "policy.applied")
                          if e["data"]["version"] == version), None), seconds, 0.2)

    def refused(self, agent: str, reason: str, seconds: float = 30) -> dict[str, Any]:
        return wait_until(
            f"policy.refused {reason} from {agent}",
            lambda: next((e for e in self.of(agent, "policy.refused")
                          if e["data"]["reason"] == reason), None), seconds, 0.2)

    def blocked(self, agent: str, serial: str, seconds: float = 30) -> dict[str, Any]:
        """The stored usb.blocked event of the device with `serial` on `agent`."""
        return wait_until(
            f"usb.blocked of {serial} from {agent}",
            lambda: next((e for e in self.of(agent, "usb.blocked")
                          if serial in orjson.dumps(e["data"]).decode()), None), seconds, 0.2)


class Workstation:
    """`floor-agent workstation` (usb_guard on, the central policy on) on a umockdev bus of
    its own, enrolled with a one-time token at the collector (its policy key pinned)."""

    def __init__(self, collector: CollectorProcess, name: str, devices: tuple[UsbSpec, ...],
                 collector_url: str | None = None) -> None:
        self.name = name
        self.dir = collector.root / f"{name}-run"
        self.dir.mkdir()
        config = collector.agent_config(name)
        self.state = config.audit.state_dir
        enroll(config.audit, "workstation", collector.token(), None)
        data = config.model_dump(mode="json")
        if collector_url is not None:
            data["audit"]["collector_url"] = collector_url
        data["usb_guard"] = {"enabled": True, "rules_file": str(REPO / "config/usb-rules.conf"),
                             "sys_root": "/sys"}
        data["policy"] = {"enabled": True, "watch_wait_seconds": 20,
                          "backoff_initial_seconds": 0.2, "backoff_max_seconds": 1}
        self.config = self.dir / "workstation.yaml"
        self.config.write_text(yaml.safe_dump(data))
        (self.dir / "bus.umockdev").write_text(bus_text(devices))
        self.proc: subprocess.Popen[bytes] | None = None
        self.root: str | None = None
        self.pid: int | None = None

    def start(self) -> None:
        for name in ("root", "pid"):
            (self.dir / name).unlink(missing_ok=True)
        script = (f'echo "$UMOCKDEV_DIR" > root; echo $$ > pid; exec {sys.executable} '
                  f'-m floor_agent.cli workstation --config {self.config} 2>>agent.log')
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            ["umockdev-run", "--device", str(self.dir / "bus.umockdev"), "--", "sh", "-c",
             script], cwd=self.dir, env=env, stdout=subprocess.DEVNULL,
            stderr=(self.dir / "umockdev.log").open("ab"))

        def started() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            text = (self.dir / "pid").read_text() if (self.dir / "pid").exists() else ""
            return text.endswith("\n")

        wait_until(f"{self.name} started", started, 20)
        self.root = (self.dir / "root").read_text().strip()
        self.pid = int((self.dir / "pid").read_text())

    def log(self) -> str:
        path = self.dir / "agent.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def authorized(self, spec: UsbSpec) -> str:
        """The device's sysfs `authorized` as the agent last wrote it ("0" or "1")."""
        assert self.root is not None
        path = Path(self.root) / "sys/bus/usb/devices" / spec.sysname / "authorized"
        return path.read_text().strip()

    def wait_authorized(self, spec: UsbSpec, value: str, seconds: float = 30) -> None:
        wait_until(f"{self.name} {spec.sysname} authorized={value}",
                   lambda: self.authorized(spec) == value, seconds)

    def stop(self) -> None:
        """SIGTERM to the agent (umockdev-run ends with it)."""
        if self.proc is None:
            return
        if self.proc.poll() is None and self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None
        self.pid = None


class TamperingProxy:
    """An HTTPS server with the collector's own certificate (so the workstation's pinned CA
    accepts it) forwarding every request to the collector; in `forge` mode it rewrites the
    policy document it passes on (the signature kept), in `replay` mode it answers policy
    fetches with an envelope it recorded earlier."""

    def __init__(self, collector: CollectorProcess) -> None:
        self.collector = collector
        self.mode = "pass"
        self.forge: Callable[[dict[str, Any]], None] = lambda document: None
        self.replay: bytes | None = None
        self.served: list[int] = []  # versions of the envelopes served, in order
        self.envelopes: dict[int, bytes] = {}  # genuine ones seen, by version
        files = TlsFiles.in_dir(collector.config.collector.state_dir)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(files.server_cert), str(files.server_key))
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length", "connection",
                                                "accept-encoding")}
                with pinned_client(collector.url, collector.ca, 90.0) as client:
                    answer = client.request(self.command, self.path, content=body,
                                            headers=headers)
                content = answer.content
                if (self.path.startswith("/api/v1/policy?") or self.path == "/api/v1/policy"
                        ) and answer.status_code == 200:
                    content = proxy._policy(content)
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding",
                                            "connection", "content-encoding"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _policy(self, content: bytes) -> bytes:
        envelope = orjson.loads(content)
        self.envelopes[int(envelope["document"]["version"])] = content
        if self.mode == "forge":
            self.forge(envelope["document"])
            content = orjson.dumps(envelope)
        elif self.mode == "replay":
            assert self.replay is not None
            content = self.replay
        self.served.append(int(orjson.loads(content)["document"]["version"]))
        return content

    def __enter__(self) -> TamperingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

