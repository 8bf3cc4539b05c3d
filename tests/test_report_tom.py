"""The TOM evidence report: a real collector fed signed batches of every measure's event kinds,
rendered to HTML and PDF through `report tom`, each measure's verdict and rows checked, the PDF
turned into PNG pages (pdftoppm) that are looked at by numpy and kept for a person to look at."""

from __future__ import annotations

import argparse
import getpass
import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from batches import BatchMaker
from collector_process import CollectorProcess, wait_for_kind

from floor_agent.audit.forwarder import pinned_client
from floor_agent.collector import backup, self_audit, tls
from floor_agent.collector.verify import verify_all
from floor_agent.protocol.event import utc_timestamp
from floor_agent.report import cli as report_cli
from floor_agent.report.tom import (
    MET,
    NO_EVIDENCE,
    NOT_MET,
    Facts,
    audio_state,
    collect_evidence,
    evaluate,
)

ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "report"
CUSTOMER = "Mueller"  # a customer's name in a file path: must never reach the report
PERSON = "p-anna-schmidt"  # a person id on a door event: people are not listed either


class Sections(HTMLParser):
    """measure key -> {"verdict": str, "rows": [(status, [cells])]} from the rendered HTML."""

    def __init__(self) -> None:
        super().__init__()
        self.measures: dict[str, dict[str, Any]] = {}
        self._current: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section" and a.get("id", "").startswith("measure-"):
            self._current = str(a["id"]).removeprefix("measure-")
            self.measures[self._current] = {"verdict": a["data-verdict"], "rows": []}
        elif tag == "tr" and self._current and "data-status" in a:
            self._row = []
            self.measures[self._current]["rows"].append((a["data-status"], self._row))
        elif tag == "td" and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr":
            self._row = None
        elif tag == "section":
            self._current = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def enroll(site: CollectorProcess, client: httpx.Client, root: Path, agent_id: str,
           role: str) -> BatchMaker:
    maker = BatchMaker(root, agent_id)
    response = client.post("/api/v1/enroll",
                           json=maker.enroll_payload(site.token(role), role))
    assert response.status_code == 201, response.text
    return maker


def send(client: httpx.Client, maker: BatchMaker,
         events: list[tuple[str, str, str, dict[str, Any]]]) -> None:
    maker.spool.emit_many(events)
    response = client.post("/api/v1/ingest", content=maker.body())
    assert response.status_code == 200, response.text
    maker.ack(response.json()["acked_seq"])


def segment(camera: str, seq: int) -> tuple[str, str, str, dict[str, Any]]:
    return ("cctv.segment", f"camera {camera}", "info", {
        "camera_id": camera, "seq": seq, "path": f"{camera}/2026-11-29/13/{seq}.mkv",
        "start": "2026-11-29T13:00:00+00:00", "duration_ms": 10000, "size": 1_000_000,
        "sha256": f"{seq:064x}", "prev_sha256": f"{seq - 1:064x}", "packets": 250,
        "keyframe_start": True, "motion": False})


def wait_for_own(site: CollectorProcess, kind: str) -> dict[str, Any]:
    """The collector's own `kind` event, once delivered into its store."""
    store = site.store()
    try:
        return wait_for_kind(store, self_audit.agent_id(site.config), kind)
    finally:
        store.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    """A floor in miniature: two workstations (one breached), a door controller, a camera
    recorder, a retention sweeper, a verified backup and an unknown agent's alert."""
    root = tmp_path_factory.mktemp("site")
    site = CollectorProcess(root, backup={"directory": str(root / "backups")})
    site.start()
    try:
        with pinned_client(site.url, site.ca, 10) as client:
            ws1 = enroll(site, client, root, "ws-01", "workstation")
            send(client, ws1, [
                ("usb.locked_down", "usb", "info", {"hubs": ["usb1", "usb2"], "changed": 2}),
                ("net.enforced", "netlock", "info", {"table": "inet floor"}),
                ("net.verified", "netlock", "info",
                 {"pass": 12, "fail": 0, "unknown": 0, "ms": 40, "checks": []}),
                ("usb.blocked", "usb 1-2 0781:5567 SanDisk Cruzer Blade", "warning",
                 {"id": "0781:5567", "rule": "implicit", "action": "deauthorized"}),
                ("usb.blocked", "usb 1-2 0781:5567 SanDisk Cruzer Blade", "warning",
                 {"id": "0781:5567", "rule": "implicit", "action": "deauthorized"}),
                ("usb.allowed", "usb 1-1 046d:c31c Logitech Keyboard", "info",
                 {"id": "046d:c31c", "rule": "allow hid", "action": "authorized"}),
            ])
            ws2 = enroll(site, client, root, "ws-02", "workstation")
            send(client, ws2, [
                ("usb.locked_down", "usb", "info", {"hubs": ["usb1"], "changed": 1}),
                ("net.verified", "netlock", "info",
                 {"pass": 12, "fail": 0, "unknown": 0, "ms": 38, "checks": []}),
                ("net.breach", "netlock", "critical",
                 {"new": ["egress"], "summary": "reaches 203.0.113.9:443 past the allowlist",
                  "failed": []}),
            ])
            door = enroll(site, client, root, "door-ctl-1", "door")
            decision = {"reader_id": "in", "direction": "in", "uid": "04a1b2c3",
                        "person_id": PERSON, "alarms": [], "detail": ""}
            send(client, door, [
                ("door.granted", "door prod-a", "info",
                 decision | {"door_id": "prod-a", "reason": "granted"}),
                ("door.granted", "door prod-a", "info",
                 decision | {"door_id": "prod-a", "reason": "granted"}),
                ("door.denied", "door prod-a", "notice",
                 decision | {"door_id": "prod-a", "reason": "finger_mismatch"}),
                ("door.denied", "door prod-a", "notice",
                 decision | {"door_id": "prod-a", "reason": "unknown_card", "person_id": None}),
                ("door.granted", "door prod-b", "info",
                 decision | {"door_id": "prod-b", "reason": "granted"}),
                ("door.denied", "door prod-b", "notice",
                 decision | {"door_id": "prod-b", "reason": "finger_too_late"}),
            ])
            cctv = enroll(site, client, root, "cctv-box-1", "cctv")
            send(client, cctv, [segment("cam-1", n) for n in range(1, 6)] + [
                ("cctv.audio_not_recorded", "camera cam-1", "info",
                 {"camera_id": "cam-1", "codec": "aac",
                  "reason": "not recorded by policy (audio: false)"}),
                ("cctv.retention_sweep", "cctv storage", "info",
                 {"segments": {"cam-1": {"retention": 40}}, "bytes": {"cam-1": {
                     "retention": 40_000_000}}, "missing": {}, "failed": [],
                  "failed_count": 0}),
            ])
            sweeper = enroll(site, client, root, "fs-retention", "retention")
            where = {"server": "fs-1", "host": "10.0.0.5", "root": "/srv/images"}
            send(client, sweeper, [
                ("retention.sweep_failed", "retention fs-1", "error",
                 where | {"sweep_id": "a1", "stage": "connect", "error": "timed out"}),
                ("retention.receipt", "retention fs-1", "notice", where | {
                    "sweep_id": "b2", "jobs": ["C1042/J0007", "C1042/J0008"],
                    "file_count": 312, "total_bytes": 9_876_543_210,
                    "file_list_sha256": "ab" * 32, "residue_count": 0,
                    "paths": [f"/srv/images/C1042/J0007/{CUSTOMER}_wedding_001.tif"]}),
            ])
            # an agent nobody enrolled: an open (warning) alert
            stranger = BatchMaker(root, "ws-stranger")
            stranger.emit(1)
            assert client.post("/api/v1/ingest", content=stranger.body()).status_code == 401
        made = backup.backup(site.config)
        assert made.ok, made.reason
        wait_for_own(site, "collector.backup")
        yield site
    finally:
        site.stop()


@pytest.fixture(scope="module")
def rendered(site: CollectorProcess, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Path, Path, int]:
    out = tmp_path_factory.mktemp("report")
    parser = argparse.ArgumentParser(prog="floor-agent")
    report_cli.add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", "tom", "--config", str(site.config_path),
                              "--out", str(out / "report.html"), "--pdf",
                              str(out / "report.pdf"), "--days", "30"])
    status = args.func(args)
    return out / "report.html", out / "report.pdf", status


def measures(html: Path) -> dict[str, dict[str, Any]]:
    parser = Sections()
    parser.feed(html.read_text())
    return parser.measures


def test_report_verdicts_and_evidence_rows(site: CollectorProcess,
                                          rendered: tuple[Path, Path, int]) -> None:
    html, _, status = rendered
    assert status == 0
    m = measures(html)
    assert list(m) == ["workstations", "doors", "cameras", "retention", "backups", "chains",
                       "alerts"]
    # 1. ws-01 blocked USB and is isolated; ws-02 is breached
    assert m["workstations"]["verdict"] == NOT_MET
    ws = {cells[0]: (st, cells) for st, cells in m["workstations"]["rows"]}
    assert ws["ws-01"][0] == "ok" and "2 blocked" in ws["ws-01"][1][2]
    assert "12 checks pass" in ws["ws-01"][1][3]
    assert ws["ws-02"][0] == "bad" and "BREACH" in ws["ws-02"][1][3]
    assert "203.0.113.9" in ws["ws-02"][1][3]
    # 2. both doors: every grant with card + finger, fingerprint denials seen
    assert m["doors"]["verdict"] == MET
    doors = {cells[0]: cells for _, cells in m["doors"]["rows"]}
    assert doors["prod-a"][2] == "2 of 2" and doors["prod-a"][3] == "1"
    assert doors["prod-a"][4] == "1" and doors["prod-b"][4] == "1"
    # 3. the camera records and its old footage was swept
    assert m["cameras"]["verdict"] == MET
    ((cam_status, cam),) = m["cameras"]["rows"]
    assert cam_status == "ok" and cam[0] == "cam-1" and cam[2] == "recording" and cam[4] == "5"
    assert "40 (retention)" in cam[5]
    # its sound is not recorded, by policy, and the report says so
    assert cam[6] == "not recorded (policy, audio: false; the camera sends aac)"
    # 4. the failed sweep was followed by a clean receipt: the latest decides
    assert m["retention"]["verdict"] == MET
    receipt, failed = m["retention"]["rows"]
    assert receipt[0] == "ok" and receipt[1][3] == "receipt"
    assert receipt[1][4] == "C1042/J0007, C1042/J0008" and receipt[1][5] == "312"
    assert receipt[1][7] == "ab" * 8 and failed[0] == "bad"
    # 5. the backup made above, verified
    assert m["backups"]["verdict"] == MET
    ((bk_status, bk),) = m["backups"]["rows"]
    assert bk_status == "ok" and bk[1].startswith("floor-collector-") and bk[2] == "verified"
    # 6. every chain verifies (the same code as `collector verify`)
    assert m["chains"]["verdict"] == MET
    store = site.store()
    try:
        expected = {v.agent_id: v.stored_events for v in verify_all(store)}
    finally:
        store.close()
    chains = {cells[0]: cells for _, cells in m["chains"]["rows"]}
    assert set(chains) == set(expected)
    assert all(chains[a][2] == str(n) and chains[a][5] == "intact"
               for a, n in expected.items() if a != self_audit.agent_id(site.config))
    # 7. open alerts: the agents' own warning-or-worse events (the breach, the failed sweep,
    # the stick blocked twice: one alert seen twice) and the stranger's; critical and error
    # ones left open mean the measure is not met
    assert m["alerts"]["verdict"] == NOT_MET
    assert sorted((st, c[0], c[1], c[2], c[6]) for st, c in m["alerts"]["rows"]) == [
        ("bad", "critical", "net.breach", "ws-02", "1"),
        ("bad", "error", "retention.sweep_failed", "fs-retention", "1"),
        ("warn", "warning", "unknown_agent", "-", "1"),  # issue 15: per sender, no agent
        ("warn", "warning", "usb.blocked", "ws-01", "2")]


def test_report_header_privacy_and_self_containment(site: CollectorProcess,
                                                    rendered: tuple[Path, Path, int]) -> None:
    text = rendered[0].read_text()
    assert tls.fingerprint(site.ca) in text
    assert self_audit.agent_id(site.config) in text
    assert CUSTOMER not in text and PERSON not in text and "04a1b2c3" not in text
    for attribute in ("src=", "href=", "@import", "url("):
        assert attribute not in text
    assert rendered[0].stat().st_mode & 0o777 == 0o600


def test_generating_the_report_is_an_audit_event(site: CollectorProcess,
                                                 rendered: tuple[Path, Path, int]) -> None:
    html, pdf, _ = rendered
    event = wait_for_own(site, "report.generated")
    assert event["data"]["who"] == report_cli.who() and getpass.getuser() in event["data"]["who"]
    assert event["data"]["files"] == {
        "report.html": hashlib.sha256(html.read_bytes()).hexdigest(),
        "report.pdf": hashlib.sha256(pdf.read_bytes()).hexdigest()}
    assert event["data"]["verdicts"]["workstations"] == NOT_MET


def test_pdf_pages_are_rendered_and_not_blank(rendered: tuple[Path, Path, int]) -> None:
    _, pdf, _ = rendered
    assert pdf.read_bytes().startswith(b"%PDF-")
    pages = pdf.parent / "pages"
    pages.mkdir(exist_ok=True)
    subprocess.run(["pdftoppm", "-png", "-r", "60", str(pdf), str(pages / "tom")],
                   check=True, timeout=60)
    pngs = sorted(pages.glob("tom-*.png"))
    assert pngs, "pdftoppm made no pages"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("tom-*.png"):
        old.unlink()
    for png in pngs:
        shutil.copy(png, ARTIFACTS / png.name)
        image = cv2.imread(str(png), cv2.IMREAD_COLOR)
        assert image is not None, png
        height, width = image.shape[:2]
        assert width > height  # A4 landscape
        inked = np.count_nonzero(image.min(axis=2) < 200) / (height * width)
        assert inked > 0.01, f"{png.name}: {inked:.4f} of the page inked"
    first = cv2.imread(str(pngs[0]), cv2.IMREAD_COLOR)
    # the verdict badges are coloured: green (met) and red (not met) both on the first page
    b, g, r = (first[:, :, i].astype(int) for i in range(3))
    assert np.count_nonzero((g - r > 40) & (g - b > 20)) > 20
    assert np.count_nonzero((r - g > 60) & (r - b > 60)) > 20


def _facts(now: datetime, **kw: Any) -> Facts:
    return Facts(now, now - timedelta(days=30), kw.pop("agents", []), **kw)


def _event(ts: datetime, kind: str, seq: int = 1, **data: Any) -> dict[str, Any]:
    return {"id": seq, "ts": utc_timestamp(ts), "kind": kind, "severity": "notice",
            "subject": kind, "data": data, "agent_id": "x", "seq": seq}


def test_an_empty_site_has_no_evidence_rather_than_passing() -> None:
    evidence = evaluate(_facts(datetime(2026, 11, 29, 12, tzinfo=UTC)))
    assert evidence.verdicts == {"workstations": NO_EVIDENCE, "doors": NO_EVIDENCE,
                                 "cameras": NO_EVIDENCE, "retention": NO_EVIDENCE,
                                 "backups": NO_EVIDENCE, "chains": NO_EVIDENCE,
                                 "alerts": MET}


def test_stale_or_failed_backups_and_weak_grants_are_not_met() -> None:
    now = datetime(2026, 11, 29, 12, tzinfo=UTC)
    ok = _event(now - timedelta(days=3), "collector.backup", ok=True, verified=True)
    stale = evaluate(_facts(now, events={("*", "collector.backup"): [ok]}))
    assert stale.measure("backups").verdict == NOT_MET
    assert "no backup since" in stale.measure("backups").summary
    failed = _event(now - timedelta(hours=1), "collector.backup", 2, ok=False, verified=False)
    latest_failed = evaluate(_facts(now, events={("*", "collector.backup"): [failed, ok]}))
    assert latest_failed.measure("backups").verdict == NOT_MET
    # a grant without the fingerprint step (no such reason exists today: must never pass)
    door = {"agent_id": "d1", "role": "door"}
    weak = _event(now, "door.granted", door_id="x", reason="granted_card_only", uid="04")
    evidence = evaluate(_facts(now, agents=[door], events={("d1", "door.granted"): [weak]}))
    assert evidence.measure("doors").verdict == NOT_MET
    assert "WITHOUT both factors" in evidence.measure("doors").rows[0].cells[2]


def test_collect_evidence_over_the_live_store_matches_the_report(
        site: CollectorProcess, rendered: tuple[Path, Path, int]) -> None:
    store = site.store()
    try:
        evidence = collect_evidence(store, datetime.now(UTC), 30)
    finally:
        store.close()
    assert evidence.verdicts == {k: v["verdict"] for k, v in measures(rendered[0]).items()}


def test_the_report_says_which_cameras_record_sound() -> None:
    def seg(audio: int) -> dict[str, Any]:
        return {"ts": "2026-11-29T13:00:00.000Z", "data": {"audio_packets": audio}}

    note = {"ts": "2026-11-29T13:00:00.000Z", "severity": "warning",
            "data": {"codec": "pcm_alaw", "reason": "audio: true, but the audio codec pcm_alaw "
                     "cannot be stored in MP4 segments; the video is recorded without it"}}
    assert audio_state([seg(0), seg(40), seg(38)], []) == \
        "RECORDED (2 segments with audio, audio: true)"
    assert audio_state([seg(0)], []) == "video only"
    assert audio_state([seg(0)], [note]).startswith("not recorded: audio: true, but the audio "
                                                    "codec pcm_alaw cannot be stored")
