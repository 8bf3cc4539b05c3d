"""Every dashboard page over real signed batches: what each role sees, acknowledging, CSV export
(with spreadsheet-formula escaping), snapshots and their view log, re-verification, user admin,
and the live feed over a real collector process."""

from __future__ import annotations

import contextlib
import csv
import io
import sqlite3
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import cv2
import httpx
import numpy as np
import orjson
import pytest
from batches import BatchMaker, alter_event
from collector_process import CollectorProcess
from postgres_server import PostgresServer, postgres_server  # noqa: F401  (fixture)
from test_web_support import WebApp, csrf_of

from floor_agent.collector import self_audit
from floor_agent.dashboard import user_admin
from floor_agent.protocol import request_signing
from floor_agent.protocol.event import TS_RE as TS


def floor(web: WebApp) -> None:
    """A small floor: a workstation, a door controller and a camera box, all reporting."""
    web.agent("ws-1")
    web.send("ws-1", [
        ("usb.locked_down", "usb", "info", {"hubs": ["usb1"], "changed": []}),
        ("net.verified", "netlock", "info", {"pass": 3, "fail": 0, "unknown": 0, "ms": 12,
                                             "checks": []}),
        ("usb.blocked", "usb 1-2", "warning", {"id": "0781:5567", "name": "Cruzer",
                                               "serial": "=HYPERLINK(\"http://x\")",
                                               "port": "1-2", "reason": "storage"}),
    ])
    web.agent("door-1", "door")
    web.send("door-1", [
        ("door.granted", "door", "info", {"door_id": "main", "person_id": "p-ann",
                                          "uid": "04a1", "reason": "level day"}),
        ("door.denied", "door", "notice", {"door_id": "lab", "person_id": "p-bob",
                                           "uid": "04b2", "reason": "outside window"}),
        ("door.forced", "door", "critical", {"door_id": "lab", "detail": "opened while locked"}),
    ])
    web.agent("box-1", "cctv")
    web.send("box-1", [
        ("cctv.segment", "camera cam1", "info", {"camera_id": "cam1", "seq": 1}),
        ("cctv.stream_gap", "camera cam1", "warning", {"camera_id": "cam1", "gap_ms": 900}),
        ("cctv.motion_start", "camera cam1", "info", {"camera_id": "cam1", "t_ms": 5}),
        ("cctv.view", "camera cam1", "notice", {"camera_id": "cam1", "who": "inspector",
                                                "why": "incident 7"}),
    ])


def test_overview_shows_each_workstation_door_and_camera(web: WebApp) -> None:
    floor(web)
    client = web.logged_in("ann", "viewer")
    html = client.get("/").text
    assert 'data-testid="workstation-row" data-agent="ws-1"' in html
    row = html[html.index('data-agent="ws-1"'):]
    for cell in ("usb", "isolation", "heartbeat", "chain"):
        assert f'data-testid="{cell}" class="ok"' in row[:row.index("</tr>")]
    assert 'data-testid="door-row" data-door="lab"' in html
    assert 'data-testid="door-row" data-door="main"' in html
    lab = html[html.index('data-door="lab"'):]
    assert ">forced<" in lab[:lab.index("</tr>")]
    cam = html[html.index('data-camera="cam1"'):]
    assert '<td data-testid="camera-state" class="ok">motion</td>' in cam[:cam.index("</tr>")]
    assert 'data-testid="alerts-by-severity"' in html
    wall = client.get("/?wall=1").text
    assert 'class="wall"' in wall and 'id="logout"' not in wall


def test_events_page_filters_and_detail_verifies_the_chain(web: WebApp) -> None:
    floor(web)
    client = web.logged_in("ann", "viewer")
    html = client.get("/events?kind=usb.").text
    assert html.count('data-testid="event-row"') == 2
    assert 'data-agent="ws-1" data-seq="3" data-kind="usb.blocked" data-severity="warning"' in html
    assert client.get("/events?severity=critical").text.count('data-testid="event-row"') == 1
    assert client.get("/events?agent=door-1").text.count('data-testid="event-row"') == 3
    bad = client.get("/events?since=yesterday")
    assert bad.status_code == 422 and "since" in bad.text
    detail = client.get("/events/ws-1/2").text
    assert 'data-testid="chain-position"' in detail
    assert '<p class="verification ok" data-testid="verification">verified</p>' in detail
    # someone edits the stored event: the detail page says so
    db = sqlite3.connect(web.store.path)  # type: ignore[attr-defined]
    db.execute("UPDATE events SET subject = 'nothing' WHERE agent_id = 'ws-1' AND seq = 2")
    db.commit()
    db.close()
    assert "not verified: the stored event does not match its chain hash" in client.get(
        "/events/ws-1/2").text
    assert "not verified: event 3 after it does not link" not in client.get(
        "/events/ws-1/1").text
    assert "not verified: event 2 after it does not link (altered)" in client.get(
        "/events/ws-1/1").text
    db = sqlite3.connect(web.store.path)  # type: ignore[attr-defined]
    db.execute("DELETE FROM events WHERE agent_id = 'ws-1' AND seq = 2")
    db.commit()
    db.close()
    assert "not verified: event 2 is missing from the store (gap)" in client.get(
        "/events/ws-1/1").text
    assert client.get("/events/ws-1/99").status_code == 404


def test_acknowledging_records_who_when_and_why(web: WebApp) -> None:
    maker = web.agent("ws-2")
    maker.spool.emit_many([("test.event", "x", "info", {"i": 1})])
    rejected = web.collector.ingest(alter_event(maker.body(), 0, subject="forged"))
    assert rejected.status != 200
    client = web.logged_in("ann", "viewer")
    html = client.get("/alerts?state=open").text
    (alert,) = web.store.list_alerts(open_only=True)
    assert f'data-alert-id="{alert["id"]}" data-state="open"' in html
    assert 'data-testid="ack-button"' in html
    token = csrf_of(html)
    client.post(f"/alerts/{alert['id']}/ack", data={"comment": "  ", "csrf_token": token})
    assert web.store.get_alert(alert["id"])["acked_at"] is None  # a comment is required
    done = client.post(f"/alerts/{alert['id']}/ack",
                       data={"comment": "checked the cable", "csrf_token": token})
    assert done.status_code == 200
    assert f'data-alert-id="{alert["id"]}" data-state="acknowledged"' in done.text
    stored = web.store.get_alert(alert["id"])
    assert stored["acked_by"] == "ann" and stored["ack_comment"] == "checked the cable"
    (event,) = web.own_events("alert.acknowledged")
    assert event["data"] | {"acked_at": None} == {
        "alert_id": alert["id"], "alert_kind": alert["kind"], "alert_agent": "ws-2",
        "alert_severity": alert["severity"], "who": "ann", "comment": "checked the cable",
        "acked_at": None, "via": "dashboard"}


def rows_of(response: httpx.Response) -> list[list[str]]:
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(response.text)))


def test_csv_exports_the_filtered_table_and_defuses_formulas(web: WebApp) -> None:
    floor(web)
    client = web.logged_in("audrey", "auditor")
    page = client.get("/events?kind=usb.blocked").text
    assert 'data-testid="export-csv" href="/events?kind=usb.blocked&amp;format=csv"' in page
    rows = rows_of(client.get("/events?kind=usb.blocked&format=csv"))
    # issue 15: the collector's received time beside the agent's own stamp
    assert rows[0] == ["time", "agent", "seq", "kind", "severity", "subject", "data", "received"]
    assert len(rows) == 2 and rows[1][3] == "usb.blocked"
    assert "serial='=HYPERLINK" not in rows[1][6] and "=HYPERLINK" in rows[1][6]
    access = rows_of(client.get("/doors?outcome=denied&format=csv"))
    assert access == [["person", "card", "door", "outcome", "reason", "time"],
                      ["p-bob", "04b2", "lab", "denied", "outside window", access[1][5]]]
    # a value that starts like a formula is prefixed with '
    web.send("ws-1", [("usb.blocked", "=1+2", "warning", {"id": "+cmd", "name": "@x"})])
    exported = rows_of(client.get("/events?kind=usb.blocked&format=csv"))
    assert exported[1][5] == "'=1+2"
    devices = rows_of(client.get("/workstations/ws-1?format=csv"))
    assert devices[0] == ["time", "section", "event", "severity", "summary"]
    assert any(r[4].startswith("'@x") for r in devices[1:])


def test_short_cells_stay_on_one_line_and_times_are_compact(web: WebApp) -> None:
    """time, agent, seq, kind and severity never wrap; the time shows as MM-DD HH:MM:SS with
    the stored stamp in its title, and the CSV export keeps the stamp."""
    floor(web)
    client = web.logged_in("audrey", "auditor")
    stamp = client.get("/events?kind=usb.blocked&format=csv").text.splitlines()[1][:27]
    assert TS.match(stamp), stamp
    html = client.get("/events?kind=usb.blocked").text
    row = html[html.index('data-testid="event-row"'):]
    cells = row[:row.index("</tr>")].split("<td")[1:]
    assert f'class="nowrap" title="{stamp}"><a' in cells[0]
    assert f">{stamp[5:10]} {stamp[11:19]}</a>" in cells[0]
    assert all('class="nowrap"' in c or 'nowrap"' in c for c in cells[1:5]), cells[1:5]
    assert 'class="data"' in cells[6] and "nowrap" not in cells[5] + cells[6]
    overview = client.get("/").text
    door = overview[overview.index('data-door="lab"'):]
    assert 'class="nowrap" title="20' in door[:door.index("</tr>")]


def test_doors_link_the_people_page_for_admins_only(web: WebApp) -> None:
    floor(web)
    assert '<a href="/doors/people"' in web.logged_in("root", "admin").get("/doors").text
    viewer = web.logged_in("ann", "viewer").get("/doors").text
    assert "/doors/people" not in viewer


def test_recording_gaps_leave_out_a_camera_coming_online(web: WebApp) -> None:
    """`camera_online offline_ms=0` (a start) is no gap; a stream gap and an offline spell are,
    with how long they lasted."""
    floor(web)
    web.send("box-1", [
        ("cctv.camera_online", "camera cam1", "notice", {"camera_id": "cam1", "offline_ms": 0}),
        ("cctv.camera_offline", "camera cam1", "critical", {"camera_id": "cam1",
                                                            "reason": "timeout"}),
        ("cctv.camera_online", "camera cam1", "notice", {"camera_id": "cam1",
                                                         "offline_ms": 65_000})])
    html = web.logged_in("ann", "viewer").get("/cameras/box-1/cam1").text
    gaps = html[html.index('data-testid="recording-gaps"'):]
    gaps = gaps[:gaps.index("</table>")]
    rows = [r[:r.index("</tr>")] for r in gaps.split('data-testid="gap-row"')[1:]]
    assert len(rows) == 3, rows
    assert "cctv.camera_online" in rows[0] and ">65 s<" in rows[0]
    assert "cctv.camera_offline" in rows[1]
    assert "cctv.stream_gap" in rows[2] and "900 ms" in rows[2]
    assert "offline_ms=0" not in gaps


def test_packets_a_camera_lost_are_on_its_page(web: WebApp) -> None:
    """`cctv.packets_lost` (issue 22: no silent loss): each with its segment, count, time range
    and why, and the total, on the camera's page and in its CSV."""
    floor(web)
    web.send("box-1", [
        ("cctv.packets_lost", "camera cam1", "warning", {
            "camera_id": "cam1", "seq": 41, "count": 6, "damaged": 2,
            "since": "2026-12-07T06:00:00.300000+00:00",
            "until": "2026-12-07T06:00:00.800000+00:00",
            "reasons": "waiting for a key frame: 6"}),
        ("cctv.packets_lost", "camera cam1", "warning", {
            "camera_id": "cam1", "seq": 42, "count": 1,
            "since": "2026-12-07T06:00:03.300000+00:00",
            "until": "2026-12-07T06:00:03.300000+00:00",
            "reasons": "NAL unit length 255 at byte 0 runs past the packet (64 bytes)"})])
    client = web.logged_in("ann", "viewer")
    html = client.get("/cameras/box-1/cam1").text
    table = html[html.index('data-testid="packets-lost"'):]
    table = table[:table.index("</table>")]
    rows = [r[:r.index("</tr>")] for r in table.split('data-testid="lost-row"')[1:]]
    assert len(rows) == 2, rows
    assert ">42<" in rows[0] and ">1<" in rows[0] and "NAL unit length" in rows[0]
    assert ">41<" in rows[1] and ">6<" in rows[1] and ">2<" in rows[1]
    assert ">12-07 06:00:00.300<" in rows[1]
    assert "waiting for a key frame: 6" in rows[1] and ">12-07 06:00:00.800<" in rows[1]
    assert '<p data-testid="lost-total">7 packets' in html and "2 kept damaged" in html
    exported = web.logged_in("audrey", "auditor").get("/cameras/box-1/cam1?format=csv").text
    assert exported.count(",lost,cctv.packets_lost,") == 2


def test_doors_access_log_filters(web: WebApp) -> None:
    floor(web)
    client = web.logged_in("ann", "viewer")
    assert client.get("/doors").text.count('data-testid="access-row"') == 2
    assert client.get("/doors?outcome=granted").text.count('data-testid="access-row"') == 1
    assert client.get("/doors?person=bob").text.count('data-testid="access-row"') == 1
    assert client.get("/doors?card=04A1").text.count('data-testid="access-row"') == 1
    assert client.get("/doors?door=main&outcome=denied").text.count(
        'data-testid="access-row"') == 0
    assert client.get("/doors?outcome=maybe").status_code == 422


def test_people_page_for_admins(web: WebApp) -> None:
    from datetime import time as clock

    from floor_agent.protocol.credentials import AccessLevel, Person, TimeWindow

    window = TimeWindow(frozenset(range(5)), clock(8), clock(18))
    web.store.put_level(AccessLevel("day", frozenset({"main"}), (window,)), "admin",
                        "2026-01-01")
    web.store.put_person(Person("p-ann", "Ann", True, ("day",)), "admin", "2026-01-01")
    html = web.logged_in("root", "admin").get("/doors/people").text
    assert 'data-testid="person-row" data-person="p-ann"' in html and "Ann" in html
    assert 'data-testid="level-row"' in html and "Mon,Tue,Wed,Thu,Fri 08:00-18:00" in html


def jpeg(width: int = 64, height: int = 48) -> bytes:
    ok, data = cv2.imencode(".jpg", np.full((height, width, 3), 128, np.uint8))
    assert ok
    return data.tobytes()


def upload(web: WebApp, client: httpx.Client, maker: BatchMaker, camera: str, body: bytes,
           content_type: str = "image/jpeg") -> httpx.Response:
    path = f"/api/v1/snapshots/{camera}"
    header = request_signing.sign_header(maker.key, maker.agent_id, "POST", path, body)
    return client.post(path, content=body, headers={"content-type": content_type,
                                                     request_signing.HEADER: header})


def test_snapshots_upload_view_log_and_footage_log(web: WebApp) -> None:
    floor(web)
    box = web.makers["box-1"]
    api = web.client()
    assert upload(web, api, box, "cam1", b"\xff\xd8\xff not a picture").status_code == 422
    assert "JPEG" in upload(web, api, box, "cam1", b"GIF89a").json()["detail"]
    assert upload(web, api, box, "cam1", jpeg(), "image/png").status_code == 415
    assert upload(web, api, box, "cam1", b"\xff" * (600 * 1024)).status_code == 413
    assert upload(web, api, web.makers["ws-1"], "cam1", jpeg()).status_code == 403
    unsigned = api.post("/api/v1/snapshots/cam1", content=jpeg(),
                        headers={"content-type": "image/jpeg"})
    assert unsigned.status_code == 401
    stored = upload(web, api, box, "cam1", jpeg(64, 48))
    assert stored.status_code == 201 and stored.json()["width"] == 64
    viewer = web.logged_in("ann", "viewer")
    page = viewer.get("/cameras/box-1/cam1").text
    assert 'img class="snapshot" data-testid="snapshot"' in page
    assert 'data-testid="gap-row"' in page and 'data-testid="motion-row"' in page
    assert 'data-testid="footage-log"' not in page  # the footage log is for auditors
    picture = viewer.get("/cameras/box-1/cam1/snapshot.jpg")
    assert picture.headers["content-type"] == "image/jpeg" and picture.content == jpeg(64, 48)
    (viewed,) = web.own_events("footage.viewed")
    assert viewed["data"]["who"] == "ann" and viewed["data"]["camera_id"] == "cam1"
    assert viewer.get("/cameras").text.count('data-testid="camera-row"') == 1
    auditor = web.logged_in("audrey", "auditor")
    log = auditor.get("/cameras/box-1/cam1").text
    assert 'data-testid="footage-log"' in log and "incident 7" in log


def test_integrity_reverifies_and_records_the_result(web: WebApp) -> None:
    floor(web)
    client = web.logged_in("audrey", "auditor")
    page = client.get("/integrity").text
    assert 'id="verify"' in page and "never verified here" in page
    result = client.post("/integrity/verify", data={"csrf_token": csrf_of(page)})
    assert result.status_code == 200 and 'data-testid="verify-result"' in result.text
    assert "ws-1: verified (3 events)" in result.text
    assert web.store.list_verifications()["ws-1"]["ok"] is True
    (event,) = web.own_events("integrity.verified")
    assert event["data"]["who"] == "audrey" and event["data"]["failed"] == []


def test_admin_creates_changes_and_disables_users(web: WebApp) -> None:
    client = web.logged_in("root", "admin")
    token = csrf_of(client.get("/admin/users").text)
    created = client.post("/admin/users", data={"username": "bob", "role": "viewer",
                                                "csrf_token": token})
    assert 'data-testid="one-time-password"' in created.text
    assert client.post("/admin/users", data={"username": "bob", "role": "viewer",
                                             "csrf_token": token}).status_code == 422
    client.post("/admin/users/bob/role", data={"role": "auditor", "csrf_token": token})
    assert web.store.get_user("bob")["role"] == "auditor"
    client.post("/admin/users/bob/disable", data={"csrf_token": token})
    assert web.store.get_user("bob")["disabled"] is True
    refused = client.post("/admin/users/root/disable", data={"csrf_token": token})
    assert refused.status_code == 422 and "yourself" in refused.text
    kinds = [e["kind"] for e in web.own_events() if e["kind"].startswith("dashboard.user")]
    assert kinds == ["dashboard.user_created", "dashboard.user_role_changed",
                     "dashboard.user_disabled"]
    assert created.text.split('one-time-password">')[1].split("<")[0] not in str(
        web.own_events())


def read_sse(stream: Iterator[str], wanted: int, seconds: float,
             name: str = "audit") -> list[dict]:
    """The data of the first `wanted` SSE events; any other event name first fails."""
    found: list[dict] = []
    deadline = time.monotonic() + seconds
    event = None
    for line in stream:
        if line.startswith("event: "):
            event = line[7:]
            assert event == name, f"{event!r} before the {wanted} {name!r} wanted"
        elif line.startswith("data: ") and event == name:
            found.append(orjson.loads(line[6:]))
            if len(found) == wanted:
                return found
        assert time.monotonic() < deadline, "no event in time"
    return found


def read_audit_events(stream: Iterator[str], wanted: int, seconds: float) -> list[dict]:
    return read_sse(stream, wanted, seconds)


def live_viewer(collector: CollectorProcess, tmp_path: Path) -> None:
    """ann the viewer, made the way the CLI makes users (before the collector starts)."""
    store = collector.store()
    own = self_audit.open_writer(collector.config)
    try:
        secret = user_admin.create(store, own, "ann", "viewer", "test", "2026-11-29T08:00:00Z")
    finally:
        own.close()
        store.close()
    (tmp_path / "ann.secret").write_text(secret)


def browser_client(collector: CollectorProcess, tmp_path: Path) -> httpx.Client:
    """A browser's client logged in as ann: forms as forms (pinned_client sends JSON)."""
    secret = (tmp_path / "ann.secret").read_text()
    browser = ssl.create_default_context(cafile=str(collector.ca))
    client = httpx.Client(base_url=collector.url, verify=browser, timeout=10)
    login = client.get("/login")
    client.post("/login", data={"username": "ann", "password": secret,
                                "csrf_token": csrf_of(login.text)})
    form = client.get("/account/password")
    client.post("/account/password", data={
        "current": secret, "new": "a long new password", "confirm":
        "a long new password", "csrf_token": csrf_of(form.text)})
    assert client.get("/").status_code == 200
    return client


def test_live_feed_delivers_ingested_events_matching_its_filters(tmp_path: Path) -> None:
    collector = CollectorProcess(tmp_path)
    live_viewer(collector, tmp_path)
    collector.start()
    try:
        with contextlib.closing(browser_client(collector, tmp_path)) as client:
            maker = BatchMaker(tmp_path, "ws-live")
            assert client.post("/api/v1/enroll", json=maker.enroll_payload(collector.token())
                               ).status_code == 201
            with client.stream("GET", "/events/stream?kind=usb.&severity=warning") as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                lines = stream.iter_lines()
                assert next(lines).startswith("retry:")
                maker.spool.emit_many([("net.verified", "netlock", "info", {"fail": 0}),
                                       ("usb.allowed", "usb 1-1", "info", {"id": "k"}),
                                       ("usb.blocked", "usb 1-2", "warning", {"id": "x"})])
                sent = time.monotonic()
                assert client.post("/api/v1/ingest", content=maker.body()).status_code == 200
                (event,) = read_audit_events(lines, 1, 10)
                assert time.monotonic() - sent < 10
            assert (event["agent_id"], event["seq"], event["kind"]) == ("ws-live", 3,
                                                                        "usb.blocked")
            assert event["data"] == {"id": "x"} and event["ingested_at"].endswith("Z")
            client.cookies.clear()
            assert client.get("/events/stream").status_code == 401
    finally:
        collector.stop()


def test_overview_and_alerts_streams_carry_only_what_moved(tmp_path: Path) -> None:
    """The overview's stream says `changed` only for a state topic or a stored alert (a batch
    of neither says nothing: the next note is the alert's), and /alerts' stream names each
    stored alert, an agent's warning (a blocked stick) included."""
    collector = CollectorProcess(tmp_path)
    live_viewer(collector, tmp_path)
    collector.start()
    try:
        with contextlib.closing(browser_client(collector, tmp_path)) as client:
            maker = BatchMaker(tmp_path, "ws-live")
            assert client.post("/api/v1/enroll", json=maker.enroll_payload(collector.token())
                               ).status_code == 201

            def send(*events: tuple[str, str, str, dict]) -> None:
                maker.spool.emit_many(list(events))
                answer = client.post("/api/v1/ingest", content=maker.body())
                assert answer.status_code == 200, answer.text
                maker.ack(answer.json()["acked_seq"])

            with client.stream("GET", "/overview/stream") as overview, \
                    client.stream("GET", "/alerts/stream") as alerts:
                o_lines, a_lines = overview.iter_lines(), alerts.iter_lines()
                assert next(o_lines).startswith("retry:") and next(a_lines).startswith("retry:")
                send(("usb.allowed", "usb 1-1", "info", {"id": "046d:c31c"}),
                     ("agent.started", "agent", "notice", {"version": "1"}))
                send(("usb.blocked", "usb 1-2", "warning", {"id": "0781:5567"}))
                (first,) = read_sse(o_lines, 1, 10, "changed")
                assert first == {"states": 0, "alerts": 1}  # not the quiet batch's
                (alert,) = read_sse(a_lines, 1, 10, "alert")
                assert (alert["kind"], alert["severity"], alert["agent_id"]) == (
                    "usb.blocked", "warning", "ws-live")
                send(("usb.locked_down", "usb", "info", {"hubs": ["usb1"]}))
                (second,) = read_sse(o_lines, 1, 10, "changed")
                assert second == {"states": 1, "alerts": 0}
            fragment = client.get("/overview/state")
            assert fragment.status_code == 200 and "<html" not in fragment.text
            row = fragment.text[fragment.text.index('data-agent="ws-live"'):]
            assert '<td data-testid="usb" class="ok">locked</td>' in row[:row.index("</tr>")]
            client.cookies.clear()
            for path in ("/overview/stream", "/alerts/stream", "/overview/state"):
                assert client.get(path).status_code == 401, path  # not a login page
    finally:
        collector.stop()


BIG = "9" * 30  # beyond any database integer


def bad_input_answers(client: httpx.Client) -> list[str]:
    """Inputs no column can hold, sent with a valid session and token: each must be a 4xx."""
    token = csrf_of(client.get("/").text)
    requests = [
        ("POST", f"/alerts/{BIG}/ack", {"comment": "x", "csrf_token": token}),
        ("POST", "/alerts/-1/ack", {"comment": "x", "csrf_token": token}),
        ("GET", f"/events/nobody/{BIG}", None), ("GET", "/events/%00/5", None),
        ("GET", "/events?since=2026-99-99T00:00:00Z", None), ("GET", "/events?kind=%00", None),
        ("GET", "/events?agent=" + "x" * 5000, None), ("GET", "/cameras/%00/b", None),
        ("GET", "/workstations/%00", None), ("GET", "/cameras/a/%00/snapshot.jpg", None),
        ("POST", "/admin/users/%00/disable", {"csrf_token": token}),
        ("POST", "/admin/users", {"username": "a\x00b", "role": "admin", "csrf_token": token}),
        ("POST", "/integrity/verify", {"agent": "\x00", "csrf_token": token}),
    ]
    wrong = []
    for method, path, form in requests:
        status = client.request(method, path, data=form, follow_redirects=False).status_code
        if not 300 <= status < 500:
            wrong.append(f"{method} {path[:60]} -> {status}")
    fresh = csrf_of(client.get("/login").text)
    status = client.post("/login", data={"username": "a\x00b", "password": "x",
                                         "csrf_token": fresh}).status_code
    if status != 200:
        wrong.append(f"login with a NUL in the name -> {status}")
    return wrong


def test_input_no_column_can_hold_is_a_4xx(web: WebApp) -> None:
    assert bad_input_answers(web.logged_in("root", "admin")) == []


@pytest.mark.postgres
def test_pages_on_postgresql(tmp_path: Path, postgres_server: PostgresServer) -> None:  # noqa: F811
    web = WebApp(tmp_path, postgres_server.new_database())
    web.now = datetime.now(UTC)
    try:
        floor(web)
        client = web.logged_in("root", "admin")
        html = client.get("/").text
        assert 'data-agent="ws-1"' in html and 'data-door="lab"' in html
        assert client.get("/events?kind=door.").text.count('data-testid="event-row"') == 3
        assert "verified" in client.get("/events/ws-1/3").text
        assert client.get("/doors?person=ann").text.count('data-testid="access-row"') == 1
        assert len(rows_of(client.get("/events?format=csv"))) == 11
        page = client.get("/integrity").text
        assert "ws-1: verified" in client.post("/integrity/verify",
                                               data={"csrf_token": csrf_of(page)}).text
        assert bad_input_answers(client) == []  # PostgreSQL refuses NUL and big ints itself
    finally:
        web.close()
