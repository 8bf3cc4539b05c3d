"""Retention sweeps against a real sshd on loopback, receipts read back from a real collector.

Roots are generated per test under the sshd's home: jobs of known ages on an online root
(15 days, `.done` marker mtime) and an offline root (30 days, job.json manifest), symlinks to
a file and a directory outside the root, a FIFO named like an image, a file the server cannot
remove (chattr +i: root deletes everything else), and a server that goes away mid-sweep.
Unreadable entries in the permission sense need an account that root's rights do not cover:
that test runs its own sshd logging the SFTP session in as `nobody`, over a tree nobody owns
except for the folders and files root keeps to itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from collector_process import CollectorProcess
from sshd_server import SshdServer

from floor_agent.audit.agent import AuditAgent, enroll
from floor_agent.config.audit import AuditClientConfig
from floor_agent.privacy import Customer, find_customer_names
from floor_agent.retention.config import (
    CompletionMarker,
    RetentionConfig,
    RetentionSection,
    RetentionServer,
)
from floor_agent.retention.plan import event_ref, file_list_sha256, policy_of
from floor_agent.retention.sweep import resume_note_path, sweep_server
from floor_agent.store.interface import EventQuery

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def sshd() -> Iterator[SshdServer]:
    with SshdServer() as server:
        yield server


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    process = CollectorProcess(tmp_path_factory.mktemp("collector"))
    process.start()
    try:
        yield process
    finally:
        process.stop()


def days_ago(days: float) -> float:
    return (NOW - timedelta(days=days)).timestamp()


def write(path: Path, data: bytes, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def marker_job(root: Path, job: str, done_days: float | None, files: dict[str, bytes]) -> None:
    (root / job).mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        write(root / job / name, data)
    if done_days is not None:
        write(root / job / ".done", b"", days_ago(done_days))


def manifest_job(root: Path, job: str, done_days: float, files: dict[str, bytes]) -> None:
    completed = (NOW - timedelta(days=done_days)).isoformat()
    write(root / job / "job.json", json.dumps({"completed_at": completed}).encode())
    for name, data in files.items():
        write(root / job / name, data)


def online_tree(root: Path, outside: Path) -> dict[str, int]:
    """Returns the files that must go (path relative to root -> size)."""
    marker_job(root, "C0001/J0001", 20, {"a.jpg": b"a" * 100, "b.TIF": b"b" * 200,
                                         "notes.txt": b"keep"})
    marker_job(root, "C0001/J0002", 10, {"c.jpg": b"c" * 300, "d.psd": b"d" * 10})
    marker_job(root, "C0002/J0003", None, {"e.jpg": b"e" * 50, "f.jpg": b"f" * 5})
    marker_job(root, "C0002/J0004", 16, {"raw/g.cr2": b"g" * 400, "h.png": b"h" * 7})
    marker_job(root, "C0003/J0008", 14.5, {"i.jpg": b"i" * 9, "j.jpg": b"j" * 9,
                                           "k.jpg": b"k" * 9})
    write(outside / "secret.jpg", b"outside file")
    write(outside / "album" / "x.jpg", b"outside dir")
    (root / "C0002/J0004/link.jpg").symlink_to(outside / "secret.jpg")
    (root / "C0002/J0004/album").symlink_to(outside / "album")
    os.mkfifo(root / "C0002/J0004/pipe.jpg")
    return {"C0001/J0001/a.jpg": 100, "C0001/J0001/b.TIF": 200, "C0002/J0004/raw/g.cr2": 400,
            "C0002/J0004/h.png": 7}


def offline_tree(root: Path) -> dict[str, int]:
    manifest_job(root, "C0001/J0001", 31, {"a.jpg": b"A" * 11, "b.jpg": b"B" * 12})
    manifest_job(root, "C0001/J0002", 20, {"c.jpg": b"C" * 13})
    manifest_job(root, "C0004/J0007", 40, {"d.jpg": b"D" * 14})
    (root / "C0004/J0007/job.json").write_text('{"finished": "yesterday"}')
    manifest_job(root, "C0005/J0009", 29, {"e.jpg": b"E" * 15, "f.jpg": b"F" * 16})
    return {"C0001/J0001/a.jpg": 11, "C0001/J0001/b.jpg": 12}


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir() or p.is_symlink()}


class Site:
    """One test's roots on the sshd, its retention config and enrolled agent."""

    def __init__(self, name: str, sshd: SshdServer, collector: CollectorProcess,
                 tmp_path: Path) -> None:
        self.name = name
        self.sshd = sshd
        self.collector = collector
        self.base = sshd.home / name
        self.online = self.base / "online"
        self.offline = self.base / "offline"
        self.outside = self.base / "outside"
        for root in (self.online, self.offline, self.outside):
            root.mkdir(parents=True)
        known = sshd.write_known_hosts(tmp_path / "known_hosts")
        common: dict[str, Any] = {"host": "127.0.0.1", "port": sshd.port, "user": sshd.user,
                                  "key_file": sshd.client_key, "timeout_seconds": 5.0}
        self.config = RetentionConfig(
            audit=AuditClientConfig(
                agent_id=f"retention-{name}", state_dir=tmp_path / "state",
                collector_url=collector.url, ca_cert=collector.ca, heartbeat_seconds=5.0,
                backoff_initial_seconds=0.05, backoff_max_seconds=0.5),
            retention=RetentionSection(servers=[
                RetentionServer(name="online", root=str(self.online), retention_days=15,
                                known_hosts_file=known, **common),
                RetentionServer(name="offline", root=str(self.offline), retention_days=30,
                                host_key=sshd.known_hosts_line,
                                completion=CompletionMarker(manifest="job.json"), **common),
            ]))
        self.path = tmp_path / "retention.yaml"
        self.save()
        enroll(self.config.audit, "retention", collector.token("retention"), collector.ca)

    def save(self) -> None:
        self.path.write_text(yaml.safe_dump(self.config.model_dump(mode="json")))

    def set_server(self, name: str, **changes: Any) -> None:
        servers = [s.model_copy(update=changes) if s.name == name else s
                   for s in self.config.retention.servers]
        self.config = self.config.model_copy(update={"retention": RetentionSection(
            servers=servers)})
        self.save()

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "floor_agent.retention.cli", "sweep", "--config",
             str(self.path), *args], capture_output=True, text=True, timeout=120)

    def events(self, kind: str, wait: float = 10.0, count: int = 1) -> list[dict[str, Any]]:
        """This site's events of one kind from the collector's store, oldest first."""
        deadline = time.monotonic() + wait
        while True:
            store = self.collector.store()
            try:
                page = store.query_events(EventQuery(agent_id=f"retention-{self.name}",
                                                     kind=kind, limit=1000))
            finally:
                store.close()
            if len(page.events) >= count or time.monotonic() > deadline:
                return sorted(page.events, key=lambda e: e["seq"])
            time.sleep(0.1)


@pytest.fixture
def site(request: pytest.FixtureRequest, sshd: SshdServer, collector: CollectorProcess,
         tmp_path: Path) -> Site:
    return Site(request.node.name.removeprefix("test_")[:40].replace("_", "-"), sshd,
                collector, tmp_path)


def test_dry_run_lists_and_deletes_nothing(site: Site) -> None:
    due = online_tree(site.online, site.outside)
    offline_tree(site.offline)
    before = files_under(site.base)
    proc = site.run("--dry-run")
    assert proc.returncode == 0, proc.stderr
    for path in due:
        assert f"would delete {path}" in proc.stdout
    assert "job C0001/J0002: kept" in proc.stdout and "job C0002/J0003: incomplete" in proc.stdout
    assert "symlink to" in proc.stdout and "resolves outside the root" in proc.stdout
    assert files_under(site.base) == before
    assert site.events("retention.receipt", wait=0) == []


def test_sweep_removes_exactly_the_due_images_and_the_receipt_matches(site: Site) -> None:
    due_online = online_tree(site.online, site.outside)
    due_offline = offline_tree(site.offline)
    # names that must never reach an event: a folder and a file named after the customer
    write(site.online / "Mueller Studio" / "J0001" / "x.jpg", b"misfiled")
    due_online["C0001/J0001/mueller_portrait.jpg"] = 3
    write(site.online / "C0001/J0001/mueller_portrait.jpg", b"mmm")
    before = files_under(site.base)
    proc = site.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    gone = {f"online/{p}" for p in due_online} | {f"offline/{p}" for p in due_offline}
    assert before - files_under(site.base) == gone
    assert (site.outside / "secret.jpg").read_bytes() == b"outside file"
    assert (site.outside / "album" / "x.jpg").read_bytes() == b"outside dir"
    assert (site.online / "C0002/J0004/link.jpg").is_symlink()
    assert (site.online / "C0001/J0001/.done").exists()  # the marker stays: proof of age

    receipts = {e["data"]["server"]: e for e in site.events("retention.receipt", count=2)}
    for server, due, root in (("online", due_online, site.online),
                              ("offline", due_offline, site.offline)):
        receipt = receipts[server]
        data = receipt["data"]
        assert receipt["severity"] == "notice"
        assert data["root"] == str(root) and data["dry_run"] is False
        assert data["file_count"] == len(due) and data["total_bytes"] == sum(due.values())
        assert data["file_list_sha256"] == file_list_sha256(due.items())
        assert data["jobs"] == sorted({"/".join(p.split("/")[:2]) for p in due})
        assert data["residue_count"] == 0 and data["resumes"] is None
    refused = {e["data"]["server"]: e["data"] for e in site.events("retention.refused",
                                                                     count=2)}
    policy = policy_of(site.config.retention.servers[0])
    left_alone = {item["path"] for item in refused["online"]["left_alone"]}
    assert {event_ref(p, policy) for p in ("C0002/J0004/link.jpg", "C0002/J0004/album",
                                           "C0002/J0004/pipe.jpg")} <= left_alone
    assert refused["online"]["unexpected"] == [event_ref("Mueller Studio", policy)]
    assert any(item["path"] == "C0004/J0007" for item in refused["offline"]["left_alone"])
    started = site.events("retention.sweep_started", count=2)
    assert {e["data"]["sweep_id"] for e in started} == {
        e["data"]["sweep_id"] for e in receipts.values()}

    again = site.run()  # nothing left to do: still a receipt, now for zero files
    assert again.returncode == 0, again.stderr
    latest = site.events("retention.receipt", count=4)[-2:]
    assert [e["data"]["file_count"] for e in latest] == [0, 0]

    store = site.collector.store()
    try:
        events = store.query_events(EventQuery(agent_id=f"retention-{site.name}",
                                               limit=1000)).events
    finally:
        store.close()
    assert len(events) > 10
    assert find_customer_names(events, [Customer("C0001", "Mueller")]) == []


def test_share_guard_refuses_and_force_overrides(site: Site) -> None:
    marker_job(site.online, "C0001/J0001", 40, {"a.jpg": b"1", "b.jpg": b"2", "c.jpg": b"3"})
    marker_job(site.online, "C0001/J0002", 1, {"d.jpg": b"4"})
    before = files_under(site.base)
    site.set_server("online", max_share=0.4)  # 3 of the 6 files are due: 50%
    refused = site.run("--server", "online")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "3 of 6 files (50%) would go at once, more than max_share 40%" in refused.stderr
    assert files_under(site.base) == before
    event = site.events("retention.refused")[-1]
    assert event["severity"] == "warning" and "--force" in event["data"]["reason"]
    forced = site.run("--server", "online", "--force")
    assert forced.returncode == 0, forced.stderr
    assert files_under(site.online) == {"C0001/J0001/.done", "C0001/J0002/.done",
                                        "C0001/J0002/d.jpg"}


def test_empty_missing_or_symlinked_root_is_refused(site: Site) -> None:
    proc = site.run("--server", "online")
    assert proc.returncode == 2 and "is empty" in proc.stderr
    assert site.events("retention.refused")[-1]["severity"] == "error"
    site.set_server("online", root=str(site.base / "nowhere"))
    proc = site.run("--server", "online")
    assert proc.returncode == 2 and "unusable (No such file" in proc.stderr
    (site.base / "linked").symlink_to(site.outside)
    site.set_server("online", root=str(site.base / "linked"))
    proc = site.run("--server", "online")
    assert proc.returncode == 2 and "is a symlink" in proc.stderr
    assert site.run("--server", "elsewhere").returncode == 2


def test_bad_config_and_changed_host_key_are_clear(site: Site, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("role: retention\nretention:\n  servers:\n    - name: x\n      root: srv\n"
                   "      retention_days: 15\n")
    proc = subprocess.run([sys.executable, "-m", "floor_agent.retention.cli", "sweep",
                           "--config", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"{bad}:5: retention.servers.0.root: must be an absolute path" in proc.stderr
    kind, _ = site.sshd.known_hosts_line.split()[1:3]
    other = SshdServer()  # a different host key for the same address: a changed key
    try:
        blob = Path(f"{other.host_key}.pub").read_text().split()[1]
        site.set_server("offline", host_key=f"[127.0.0.1]:{site.sshd.port} {kind} {blob}")
    finally:
        other.close()
    offline_tree(site.offline)
    proc = site.run("--server", "offline")
    assert proc.returncode == 1 and "host key CHANGED" in proc.stderr
    assert site.events("retention.sweep_failed")[-1]["data"]["stage"] == "connect"
    assert (site.offline / "C0001/J0001/a.jpg").exists()


def test_undeletable_file_is_residue_and_alarms(site: Site) -> None:
    due = online_tree(site.online, site.outside)
    stuck = site.online / "C0001/J0001/a.jpg"
    subprocess.run(["chattr", "+i", str(stuck)], check=True)
    try:
        proc = site.run("--server", "online")
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=True)
    assert proc.returncode == 1 and "RESIDUE: 1 files" in proc.stderr
    residue = site.events("retention.residue")[-1]
    assert residue["severity"] == "critical"
    policy = policy_of(site.config.retention.servers[0])
    assert residue["data"]["files"] == [event_ref("C0001/J0001/a.jpg", policy)]
    assert "the server refused (Permission denied)" in residue["data"]["errors"][0]
    receipt = site.events("retention.receipt")[-1]["data"]
    removed = {p: s for p, s in due.items() if p != "C0001/J0001/a.jpg"}
    assert receipt["file_count"] == 3 and receipt["file_list_sha256"] == file_list_sha256(
        removed.items())
    assert receipt["residue_count"] == 1


def test_server_gone_mid_sweep_then_resumed_sweep_completes(
        collector: CollectorProcess, tmp_path: Path) -> None:
    with SshdServer() as own:
        site = Site("resume", own, collector, tmp_path)
        due = online_tree(site.online, site.outside)
        for n in range(6):  # more due files, and enough kept ones for the share guard
            marker_job(site.online, f"C0009/J10{n:02d}", 50, {f"p{n}.jpg": bytes(20 + n)})
            marker_job(site.online, f"C0010/J20{n:02d}", 1, {f"q{n}.jpg": b"q", "r.jpg": b"r",
                                                             "s.jpg": b"s"})
            due[f"C0009/J10{n:02d}/p{n}.jpg"] = 20 + n
        server = site.config.retention.servers[0]
        removed_before_drop: list[str] = []

        def drop_after_three(deletion: Any) -> None:
            removed_before_drop.append(deletion.path)
            if len(removed_before_drop) == 3:
                own.stop()  # sshd and its session go away while the sweep deletes

        agent = AuditAgent(site.config.audit, "retention")
        agent.start()
        try:
            first = sweep_server(server, agent.emit, site.config.audit.state_dir,
                                 on_removed=drop_after_three)
        finally:
            agent.stop(drain_seconds=10)
        assert first.error is not None and "connection lost" in first.error
        assert first.exit_code == 1 and len(first.removed) == 3
        assert resume_note_path(site.config.audit.state_dir, "online").exists()
        still_there = {p for p in due if (site.online / p).exists()}
        assert len(still_there) == len(due) - 3
        failed = site.events("retention.sweep_failed")[-1]["data"]
        assert failed["sweep_id"] == first.sweep_id and failed["removed_count"] == 3
        assert failed["removed_file_list_sha256"] == file_list_sha256(
            (p, due[p]) for p in removed_before_drop)

        own.start()
        proc = site.run("--server", "online")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert not any((site.online / p).exists() for p in due)
        assert (site.outside / "secret.jpg").exists()
        assert not resume_note_path(site.config.audit.state_dir, "online").exists()
        receipt = site.events("retention.receipt")[-1]["data"]
        assert receipt["resumes"] == first.sweep_id
        assert receipt["file_count"] == len(still_there)
        assert receipt["file_list_sha256"] == file_list_sha256((p, due[p]) for p in still_there)
        assert receipt["previously_removed"] == {
            "file_count": 3, "total_bytes": sum(due[p] for p in removed_before_drop),
            "file_list_sha256": file_list_sha256((p, due[p]) for p in removed_before_drop)}
        started = site.events("retention.sweep_started", count=2)
        assert started[-1]["data"]["resumes"] == first.sweep_id


def test_unreadable_entries_are_reported_and_everything_else_due_goes(
        collector: CollectorProcess, tmp_path: Path) -> None:
    with SshdServer(login_user="nobody") as own:
        site = Site("unreadable", own, collector, tmp_path)
        on, off = site.online, site.offline
        marker_job(on, "C0001/J0001", 20, {"a.jpg": b"a" * 100, "b.TIF": b"b" * 200,
                                           "notes.txt": b"keep", "retouch/r.jpg": b"r" * 5})
        marker_job(on, "C0001/J0002", 10, {"c.jpg": b"c" * 300})
        marker_job(on, "C0002/J0004", 16, {"h.png": b"h" * 7, "raw/g.cr2": b"g" * 400,
                                           "locked.jpg": b"L" * 11})
        marker_job(on, "C0003/J0005", 40, {"hidden.jpg": b"x" * 13})
        marker_job(on, "C0003/J0006", 2, {"k1.jpg": b"k", "k2.jpg": b"k", "k3.jpg": b"k"})
        manifest_job(off, "C0001/J0001", 31, {"a.jpg": b"A" * 11, "b.jpg": b"B" * 12})
        manifest_job(off, "C0004/J0006", 40, {"d.jpg": b"D" * 14})
        manifest_job(off, "C0005/J0009", 29, {"e.jpg": b"E" * 15, "f.jpg": b"F" * 16})
        own.give(site.base)
        # (a) a job folder root keeps to itself, and a folder inside a due job nobody may list
        os.chown(on / "C0003/J0005", 0, 0)
        (on / "C0003/J0005").chmod(0o700)
        (on / "C0001/J0001/retouch").chmod(0o000)
        # (b) a due image nobody can neither read nor delete: root's file in a shared sticky
        # folder, next to nobody's own files, which it may delete
        os.chown(on / "C0002/J0004", 0, 0)
        (on / "C0002/J0004").chmod(0o1777)
        os.chown(on / "C0002/J0004/locked.jpg", 0, 0)
        (on / "C0002/J0004/locked.jpg").chmod(0o600)
        # and a manifest nobody cannot read: the job's age is unknown, so nothing of it goes
        os.chown(off / "C0004/J0006/job.json", 0, 0)
        (off / "C0004/J0006/job.json").chmod(0o600)
        sizes = {str(p.relative_to(site.base)): p.lstat().st_size
                 for p in site.base.rglob("*") if p.is_file()}
        before = files_under(site.base)

        proc = site.run()
        after = files_under(site.base)

    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "RESIDUE: 1 files" in proc.stderr
    gone = before - after
    assert gone == {"online/C0001/J0001/a.jpg", "online/C0001/J0001/b.TIF",
                    "online/C0002/J0004/h.png", "online/C0002/J0004/raw/g.cr2",
                    "offline/C0001/J0001/a.jpg", "offline/C0001/J0001/b.jpg"}
    assert {"online/C0002/J0004/locked.jpg", "online/C0003/J0005/hidden.jpg",
            "online/C0001/J0001/retouch/r.jpg", "offline/C0004/J0006/d.jpg"} <= after

    online, offline = site.config.retention.servers
    receipts = {e["data"]["server"]: e["data"] for e in site.events("retention.receipt",
                                                                     count=2)}
    for server in (online, offline):
        really_gone = {p.removeprefix(f"{server.name}/"): sizes[p] for p in gone
                       if p.startswith(f"{server.name}/")}
        receipt = receipts[server.name]
        assert receipt["file_count"] == len(really_gone)
        assert receipt["total_bytes"] == sum(really_gone.values())
        assert receipt["file_list_sha256"] == file_list_sha256(really_gone.items())
    assert receipts["online"]["planned_file_count"] == 5
    assert receipts["online"]["residue_count"] == 1 and receipts["offline"]["residue_count"] == 0

    residue = site.events("retention.residue")
    assert [e["data"]["server"] for e in residue] == ["online"]
    assert residue[0]["severity"] == "critical"
    assert residue[0]["data"]["files"] == [event_ref("C0002/J0004/locked.jpg",
                                                     policy_of(online))]
    assert "the server refused (Permission denied)" in residue[0]["data"]["errors"][0]

    refused = {e["data"]["server"]: e for e in site.events("retention.refused", count=2)}
    assert {e["severity"] for e in refused.values()} == {"warning"}
    left_online = {item["path"]: item["reason"] for item in refused["online"]["data"]["left_alone"]}
    assert left_online == {
        "C0003/J0005": "unreadable (cannot list: Permission denied)",
        event_ref("C0001/J0001/retouch", policy_of(online)):
            "unreadable (cannot list: Permission denied)"}
    left_offline = {item["path"]: item["reason"]
                    for item in refused["offline"]["data"]["left_alone"]}
    assert left_offline == {
        event_ref("C0004/J0006/job.json", policy_of(offline)): "unreadable (Permission denied)",
        "C0004/J0006": "completion marker job.json unreadable (Permission denied)"}
