"""Image retention on a real systemd: the retention package's timer fires its sweep.

One guest with dist/floor-agent-retention_*.deb (and -common) installed by apt, enrolled at the
host's collector as `floor-vm-retention`. Its image server is a real OpenSSH server on the
host's loopback (tests/sshd_server.py, as the retention tests use it), which the guest reaches
as 10.0.2.101:22 through a second QEMU guestfwd, and nothing else: it serves a temporary tree
of jobs, some completed longer ago than the retention period. The timer, moved by a drop-in in
/run to fire now, starts floor-retention.service under systemd; the sweep deletes exactly the
due images on the host and its signed receipt reaches the collector.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from conftest import HostCollector, timing
from image import COLLECTOR_GUEST_PORT, COLLECTOR_NAME, INSTALL, REPO, build
from vm import Guest

from floor_agent.retention.plan import file_list_sha256

sys.path.insert(0, str(REPO / "tests"))
from sshd_server import SshdServer  # noqa: E402

TIMER = "floor-retention.timer"
UNIT = "floor-retention.service"
CONFIG = "/etc/floor-agent/retention.yaml"
USER = "floor-retention"
AGENT = "floor-vm-retention"        # the config's default: <hostname>-retention
IMAGES_ADDRESS = "10.0.2.101"       # the image server as the guest sees it (QEMU guestfwd)
NOW = datetime.now(UTC)


def show(vm: Guest, unit: str, *props: str) -> dict[str, str]:
    out = vm.run(["systemctl", "show", unit, *(f"--property={p}" for p in props)]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def job(root: Path, path: str, done_days_ago: float | None, files: dict[str, bytes]) -> None:
    """A job folder ROOT/CLIENT/JOB with its files; `.done` dated its completion."""
    folder = root / path
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    if done_days_ago is not None:
        marker = folder / ".done"
        marker.touch()
        when = (NOW - timedelta(days=done_days_ago)).timestamp()
        os.utime(marker, (when, when))


def image_tree(root: Path) -> dict[str, int]:
    """Jobs past the 15 days, within them, and unfinished; returns what must go (path: size)."""
    job(root, "C1001/J2001", 20, {"a.jpg": b"a" * 1000, "b.tif": b"b" * 2000,
                                   "notes.txt": b"kept: not an image"})
    job(root, "C1001/J2002", 3, {"c.jpg": b"c" * 300})
    job(root, "C1002/J2003", 40, {"d.png": b"d" * 70})
    job(root, "C1002/J2004", None, {"e.jpg": b"e" * 50, "f.psd": b"f" * 60})
    job(root, "C1003/J2005", 1, {"g.jpg": b"g" * 10, "h.jpg": b"h" * 11})
    return {"C1001/J2001/a.jpg": 1000, "C1001/J2001/b.tif": 2000, "C1002/J2003/d.png": 70}


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def sshd() -> Iterator[SshdServer]:
    with SshdServer() as server:
        yield server


@pytest.fixture(scope="module")
def box(collector: HostCollector, sshd: SshdServer,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    if not sorted(REPO.glob("dist/floor-agent-retention_*.deb")) or INSTALL == "wheels":
        pytest.skip("no dist/floor-agent-retention_*.deb (ROLES=retention make packages): "
                    "the retention role is tested as its package installs it")
    t0 = time.monotonic()
    image = build(role="retention")
    timing("retention_image_build_or_cache", time.monotonic() - t0)
    collector.agent_id = AGENT
    vm = Guest(image, tmp_path_factory.mktemp("vm-retention"), collector.port,
               forwards=((IMAGES_ADDRESS, 22, sshd.port),))
    try:
        timing("retention_qemu_start_to_system_running", vm.boot())
        yield vm
    finally:
        vm.close()


@pytest.fixture(scope="module")
def images(sshd: SshdServer) -> tuple[Path, dict[str, int]]:
    root = sshd.home / "images" / "online"
    return root, image_tree(root)


def configure(box: Guest, collector: HostCollector, sshd: SshdServer, root: Path) -> None:
    """What the admin does: the site's config (collector, image server with its pinned host
    key, our key), then enroll as the role's user."""
    kind, blob = Path(f"{sshd.host_key}.pub").read_text().split()[:2]
    config = {
        "role": "retention",
        "audit": {"collector_url": f"https://{COLLECTOR_NAME}:{COLLECTOR_GUEST_PORT}"},
        "retention": {"servers": [{
            "name": "online", "host": IMAGES_ADDRESS, "port": 22, "user": sshd.user,
            "key_file": "/etc/floor-agent/retention.key",
            "host_key": f"{IMAGES_ADDRESS} {kind} {blob}",
            "root": str(root), "retention_days": 15, "completion": {"file": ".done"}}]},
    }
    box.write(CONFIG, yaml.safe_dump(config, sort_keys=False).encode(), mode=0o644)
    box.write("/etc/floor-agent/retention.key", sshd.client_key.read_bytes(), mode=0o600)
    box.run(["chown", f"{USER}:{USER}", "/etc/floor-agent/retention.key"])
    box.write("/tmp/collector-ca.pem", collector.ca.read_bytes(), mode=0o644)
    box.run(["runuser", "-u", USER, "--", "floor-agent", "enroll", "--config", CONFIG,
             "--token", collector.token("retention"), "--ca", "/tmp/collector-ca.pem"],
            timeout=300)


def test_the_timer_fires_the_sweep_that_deletes_the_due_images(
        box: Guest, collector: HostCollector, sshd: SshdServer,
        images: tuple[Path, dict[str, int]]) -> None:
    root, due = images
    # Installed: the timer enabled and waiting, the service (a oneshot) only its target.
    assert box.run(["systemctl", "is-enabled", TIMER]).stdout.strip() == "enabled"
    assert box.run(["systemctl", "is-active", TIMER]).stdout.strip() == "active"
    assert show(box, TIMER, "Unit")["Unit"] == UNIT
    t0 = time.monotonic()
    configure(box, collector, sshd, root)
    timing("retention_configure_and_enroll", time.monotonic() - t0)
    before = files_under(root)
    # (The guest's clock is the host's: past 02:30 UTC the daily calendar may have fired
    # already, against the shipped config's servers, and failed; that run is not this one.)
    box.run(["systemctl", "reset-failed", UNIT], check=False)
    took = box.fire_timer_now("floor-retention.timer", UNIT, seconds=400)
    timing("retention_timer_to_sweep_done", took)
    result = show(box, UNIT, "Result", "ExecMainStatus", "ActiveState")
    log = box.run(f"journalctl -b -u {UNIT} --no-pager -o cat").stdout
    assert result == {"Result": "success", "ExecMainStatus": "0", "ActiveState": "inactive"}, \
        log[-3000:]
    assert "retention online" in log and f"removed {len(due)} of {len(due)} planned" in log, \
        log[-3000:]
    # On the server: exactly the due images gone; the markers, notes and newer jobs stay.
    assert before - files_under(root) == set(due), sorted(before - files_under(root))
    assert (root / "C1001/J2001/notes.txt").exists() and (root / "C1001/J2001/.done").exists()
    # The signed receipt at the collector, matching what went.
    receipt = collector.wait_event("retention.receipt", seconds=120, server="online")
    data = receipt["data"]
    assert data["dry_run"] is False and data["residue_count"] == 0
    assert data["file_count"] == len(due) and data["total_bytes"] == sum(due.values())
    assert data["file_list_sha256"] == file_list_sha256(due.items())
    assert data["jobs"] == ["C1001/J2001", "C1002/J2003"]
    # The sweep logged in over the forwarded port only: the host's sshd saw it.
    assert "Accepted publickey" in sshd.log_tail(200)


def test_the_sweep_ran_in_its_sandbox_as_its_user(box: Guest) -> None:
    props = show(box, UNIT, "User", "PrivateUsers", "PrivateDevices", "ProtectSystem",
                 "NoNewPrivileges", "CapabilityBoundingSet")
    assert props["User"] == USER and props["ProtectSystem"] == "strict"
    for flag in ("PrivateUsers", "PrivateDevices", "NoNewPrivileges"):
        assert props[flag] == "yes", (flag, props[flag])
    assert props["CapabilityBoundingSet"] == ""
    # Its resume notes and spool are its own, in its 0700 state directory.
    state = box.run("stat -c '%U %a' /var/lib/floor-agent/retention").stdout.split()
    assert state == [USER, "700"], state
    kernel = box.run("journalctl -k -b --no-pager -o cat").stdout
    assert not [line for line in kernel.splitlines() if "type=1326" in line
                or "audit: " in line and "denied" in line], kernel[-3000:]
