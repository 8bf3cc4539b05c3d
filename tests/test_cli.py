"""The console script as an admin uses it: config check, emit, verify, and the demo."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
from collector_process import CollectorProcess

from floor_agent.audit.agent import enroll
from floor_agent.simulated.door_floor import pcsc_readers

ROOT = Path(__file__).resolve().parents[1]


def floor_agent(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "floor_agent.cli", *args], text=True,
                          capture_output=True, timeout=timeout)


def test_config_check_accepts_shipped_files_and_names_errors(tmp_path: Path) -> None:
    for role in ("collector", "workstation", "door", "cctv"):
        result = floor_agent("config", "check", str(ROOT / "config" / f"{role}.yaml"))
        assert result.returncode == 0, result.stderr
    bad = tmp_path / "workstation.yaml"
    bad.write_text("role: workstation\naudit:\n  heartbeat_secs: 30\n")
    result = floor_agent("config", "check", str(bad))
    assert result.returncode == 2
    assert f"{bad}:3" in result.stderr and "heartbeat_seconds" in result.stderr
    result = floor_agent("config", "check", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2 and "missing.yaml" in result.stderr


def test_emit_then_verify_detects_tampering_in_the_store(
        sqlite_collector: CollectorProcess) -> None:
    collector = sqlite_collector
    config = collector.agent_config("ws-cli")
    enroll(config.audit, "workstation", collector.token(), None)
    config_file = str(collector.root / "ws-cli.yaml")
    for n in range(3):
        result = floor_agent("emit", "--config", config_file, "--kind", "usb.blocked",
                             "--subject", f"stick {n}", "--severity", "warning",
                             "--data", '{"port": "1-2"}')
        assert result.stdout.strip() == f"seq {n + 1}", result.stderr
    bad = floor_agent("emit", "--config", config_file, "--kind", "Bad Kind", "--subject", "x")
    assert bad.returncode == 2 and "kind" in bad.stderr
    agent = subprocess.Popen([sys.executable, "-m", "floor_agent.cli", "workstation",
                              "--config", config_file], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        verify = floor_agent("collector", "verify", "--config", str(collector.config_path))
        while "4 events" not in verify.stdout and time.monotonic() < deadline:
            time.sleep(0.2)
            verify = floor_agent("collector", "verify", "--config", str(collector.config_path))
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "ws-cli: intact" in verify.stdout
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0
    db = sqlite3.connect(collector.config.collector.state_dir / "collector.db")
    db.execute("UPDATE events SET subject = 'nothing happened' WHERE agent_id = 'ws-cli' "
               "AND seq = 2")
    db.commit()
    db.close()
    verify = floor_agent("collector", "verify", "--config", str(collector.config_path))
    assert verify.returncode == 1
    assert "ws-cli: BROKEN" in verify.stdout and "altered at seq 2" in verify.stdout


def _namespaces_of(pid: int) -> list[str]:
    """The network namespaces a process's simulated floor made (sim.new_prefix names them
    `fl<pid % 100000><4 hex>-<role>`): other runs on the machine own theirs."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [name for name in names if re.fullmatch(rf"fl{pid % 100000}[0-9a-f]{{4}}-\w+", name)]


def test_demo_runs_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    pcscd_before = pcsc_readers() is not None
    demo = subprocess.Popen([sys.executable, "-m", "floor_agent.cli", "demo", "--dir",
                             str(tmp_path), "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert demo.stdout is not None
    seen: list[str] = []
    for line in demo.stdout:
        seen.append(line)
        if "Ctrl-C stops everything" in line:
            break
    text = "".join(seen)
    assert "API key" in text and "https://127.0.0.1:" in text
    # the dashboard's admin and its one-time password work, and must be changed first
    found = re.search(r"dashboard\s+(https://127\.0\.0\.1:\d+)/\s+user admin, one-time "
                      r"password (\S+)", text)
    assert found, text
    trust = ssl.create_default_context(cafile=tmp_path / "collector" / "tls" / "ca.pem")
    with httpx.Client(base_url=found[1], verify=trust, timeout=10) as browser:
        form = browser.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert form.status_code == 200 and token
        login = browser.post("/login", data={"username": "admin", "password": found[2],
                                             "csrf_token": token[1], "next": "/"})
        assert login.status_code == 303 and login.headers["location"].startswith(
            "/account/password"), (login.status_code, login.headers)
    # the stick and the phone get plugged, Alice and a clone of her card at the door, a phone
    # tethers and is unplugged; the camera box records the synthetic camera all along
    for line in demo.stdout:
        seen.append(line)
        if "goes away" in line:
            break
    time.sleep(3)  # the recovery reaches the collector
    assert _namespaces_of(demo.pid)  # the floor's namespaces, named as the check below expects
    demo.send_signal(signal.SIGINT)
    rest = demo.communicate(timeout=60)[0]
    assert demo.returncode == 0, rest
    assert "demo stopped" in rest
    verify = floor_agent("collector", "verify", "--config", str(tmp_path / "collector.yaml"))
    assert verify.returncode == 0 and "demo-ws-01: intact" in verify.stdout
    assert "demo-door-01: intact" in verify.stdout and "demo-cctv-01: intact" in verify.stdout
    assert "demo-samples" not in verify.stdout  # no sample-events agent any more
    db = sqlite3.connect(tmp_path / "collector" / "collector.db")
    rows = db.execute("SELECT agent_id, kind, subject FROM events").fetchall()
    # the real door controller: Alice let in with card and finger, her cloned card refused
    door = [(kind, json.loads(data)) for kind, data in db.execute(
        "SELECT kind, data FROM events WHERE agent_id = 'demo-door-01' ORDER BY seq")]
    decisions = [(kind, data["reason"], data["direction"]) for kind, data in door
                 if kind in ("door.granted", "door.denied")]
    assert decisions[:2] == [("door.granted", "granted", "in"),
                             ("door.denied", "clone_suspected", "in")], decisions
    assert {"door.clone_suspected", "door.unlocked", "door.opened", "door.relocked",
            "door.forced"} <= {kind for kind, _ in door}
    assert not [kind for agent, kind, _ in rows if agent == "demo-samples"
                and kind.startswith(("door.", "cctv."))]  # no samples stand in any more
    # the real camera box on the synthetic RTSP camera: chained segments, the worker walking
    cctv = [(kind, json.loads(data)) for kind, data in db.execute(
        "SELECT kind, data FROM events WHERE agent_id = 'demo-cctv-01' ORDER BY seq")]
    segments = [data for kind, data in cctv if kind == "cctv.segment"]
    assert segments and segments[0]["camera_id"] == "floor-a", [k for k, _ in cctv]
    for previous, current in zip(segments, segments[1:], strict=False):
        assert current["prev_sha256"] == previous["sha256"]
    assert "cctv.motion_start" in {kind for kind, _ in cctv}, [k for k, _ in cctv]
    # the lens covered 10 s into the scene (the demo above runs about 20 s)
    assert ("cctv.tamper", "covered") in {(kind, data.get("tamper")) for kind, data in cctv}
    cctv_verify = floor_agent("cctv", "verify", "--config", str(tmp_path / "cctv.yaml"))
    assert cctv_verify.returncode == 0 and "floor-a: intact" in cctv_verify.stdout, \
        cctv_verify.stdout + cctv_verify.stderr
    # client codes only: no customer name of the configured list in any event of the demo
    scan = floor_agent("privacy", "scan", "--config", str(tmp_path / "collector.yaml"),
                       "--customers", str(tmp_path / "customers.csv"))
    assert scan.returncode == 0, scan.stdout + scan.stderr
    assert re.search(r"privacy scan: [1-9]\d* events, [1-9]\d* customers, 0 findings",
                     scan.stderr), scan.stderr
    if not pcscd_before:
        assert pcsc_readers() is None  # the pcscd the demo started is stopped
    assert {"agent.started", "agent.stopped"} <= {kind for _, kind, _ in rows}
    blocked = {subject for agent, kind, subject in rows
               if agent == "demo-ws-01" and kind == "usb.blocked"}
    assert blocked == {"usb 1-1 0781:5567 SanDisk Cruzer Blade",
                       "usb 1-5 18d1:4ee2 Google Pixel 7"}  # the real usb_guard blocked both
    # the real netlock, in the workstation's namespace: loaded, verified, breach, recovery
    net = [kind for agent, kind, _ in rows if agent == "demo-ws-01" and kind.startswith("net.")]
    assert net == ["net.enforced", "net.verified", "net.breach", "net.recovered"], net
    # the demo's own namespaces are gone (other runs on this machine, or one killed before it
    # cleaned up, may own some too: not the demo's business)
    assert not _namespaces_of(demo.pid)
