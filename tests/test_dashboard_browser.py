"""The dashboard in a real browser: Debian's Chromium (Playwright) against a real collector.

One collector process for the module, users made through `collector user create`, door events
from a door controller's signed batches, and a real `floor-agent workstation` on a umockdev bus
into which a stick is plugged while the browser watches. Screenshots of the main pages go to
tests/artifacts/dashboard/ and to the test's tmp dir.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from browser import DESKTOP, WALL, chromium, new_context
from collector_process import CollectorProcess
from dashboard_fixtures import (
    Access,
    camera_box,
    create_user,
    door_controller,
    first_login,
    log_in,
    reporting_agents,
    screenshot,
    send_access,
    send_with_gap,
    session_client,
    usb_workstation,
)
from playwright.sync_api import Browser, BrowserContext, Page, expect

from floor_agent.audit.forwarder import pinned_client
from floor_agent.collector import self_audit

ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "dashboard"
PASSWORD = {"alice": "correct horse battery 1", "victor": "correct horse battery 2",
            "otto": "correct horse battery 3"}
ACCESSES = [
    Access("P-0001", "04A1B2C3", "front", True, "granted"),
    Access("P-0002", "04D4E5F6", "front", False, "no_access_level"),
    Access("P-0002", "04D4E5F6", "cleanroom", True, "granted"),
    Access("P-0003", "0411AA22", "cleanroom", False, "outside_schedule"),
    Access("P-0002", "04D4E5F6", "store", False, "card_inactive"),
    Access("=cmd|' /C calc'!A0", "04FFFFFF", "front", False, "unknown_card"),
]
WAIT_MS = 20_000


@pytest.fixture(scope="module")
def floor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    proc = CollectorProcess(tmp_path_factory.mktemp("dashboard"))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def one_time(floor: CollectorProcess) -> dict[str, str]:
    """alice the admin, victor the viewer, otto the auditor: their one-time passwords."""
    return {name: create_user(floor, name, role)
            for name, role in (("alice", "admin"), ("victor", "viewer"), ("otto", "auditor"))}


@pytest.fixture(scope="module")
def browser(floor: CollectorProcess) -> Iterator[Browser]:
    with chromium(floor.files.server_cert) as launched:
        yield launched


def _session(browser: Browser, floor: CollectorProcess, one_time: dict[str, str], name: str,
             **context_args: object) -> Iterator[Page]:
    context = new_context(browser, **context_args)  # type: ignore[arg-type]
    page = context.new_page()
    first_login(page, floor.url, name, one_time[name], PASSWORD[name])
    try:
        yield page
    finally:
        context.close()


@pytest.fixture(scope="module")
def admin(browser: Browser, floor: CollectorProcess, one_time: dict[str, str]) -> Iterator[Page]:
    yield from _session(browser, floor, one_time, "alice", downloads=True)


@pytest.fixture(scope="module")
def viewer(browser: Browser, floor: CollectorProcess, one_time: dict[str, str]) -> Iterator[Page]:
    yield from _session(browser, floor, one_time, "victor")


@pytest.fixture(scope="module")
def doors(floor: CollectorProcess) -> list[Access]:
    """The access log the door tests filter: one batch of a real door controller identity."""
    send_access(floor, door_controller(floor, "door-ctl-1"), ACCESSES)
    return ACCESSES


@pytest.fixture(scope="module")
def camera(floor: CollectorProcess) -> tuple[str, str]:
    """A camera box that reported its camera recording and uploaded its picture."""
    camera_box(floor, "cctv-box-1", "cam-1")
    return "cctv-box-1", "cam-1"


def texts(page: Page, rows: str) -> list[list[str]]:
    """The cell texts of the table rows matching `rows`."""
    return page.eval_on_selector_all(
        rows, "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText.trim()))")


def full_values(page: Page, rows: str) -> list[list[str]]:
    """The cells' full values: the title where the cell shows a compact form (times)."""
    return page.eval_on_selector_all(
        rows, "rows => rows.map(r => Array.from(r.cells).map(c => c.title || "
              "c.innerText.trim()))")


# Cells meant to stay on one line (class nowrap) whose text takes more than one line.
WRAPPED_SHORT_CELLS = """
() => Array.from(document.querySelectorAll("td.nowrap, th")).filter(cell => {
  const range = document.createRange();
  range.selectNodeContents(cell);
  const tops = new Set(Array.from(range.getClientRects()).map(r => Math.round(r.top)));
  return tops.size > 1;
}).map(cell => cell.innerText.trim())
"""


# --- logging in ------------------------------------------------------------------------------

def test_pages_and_feeds_need_a_login(browser: Browser, floor: CollectorProcess) -> None:
    context = new_context(browser)
    try:
        page = context.new_page()
        response = page.goto(f"{floor.url}/events?kind=usb.")
        assert response is not None and response.ok
        assert "/login?next=" in page.url  # after the 303
        expect(page.locator("form#login input[name=csrf_token]")).to_have_count(1)
    finally:
        context.close()
    with pinned_client(floor.url, floor.ca, 15.0) as client:
        assert client.get("/events/stream").status_code == 401
        assert client.get("/events", params={"format": "csv"}).status_code == 401
        assert client.get("/admin/users").status_code == 303


def test_the_one_time_password_must_be_replaced_first(browser: Browser, floor: CollectorProcess,
                                                      one_time: dict[str, str]) -> None:
    context = new_context(browser)
    try:
        page = context.new_page()
        log_in(page, floor.url, "otto", "not-the-password-at-all")
        expect(page.get_by_test_id("login-error")).to_be_visible()
        log_in(page, floor.url, "otto", one_time["otto"], next_path="/events")
        assert page.url.endswith("/account/password"), page.url
        page.goto(f"{floor.url}/events")  # any other page sends the user back
        assert page.url.endswith("/account/password"), page.url
        page.fill("input[name=current]", one_time["otto"])
        page.fill("input[name=new]", PASSWORD["otto"])
        page.fill("input[name=confirm]", PASSWORD["otto"])
        with page.expect_navigation():
            page.click("form#password button[type=submit]")
        assert page.url.rstrip("/") == floor.url, page.url
        expect(page.get_by_test_id("current-user")).to_contain_text("otto (auditor)")
    finally:
        context.close()
    # and the one-time password is spent
    context = new_context(browser)
    try:
        page = context.new_page()
        log_in(page, floor.url, "otto", one_time["otto"])
        expect(page.get_by_test_id("login-error")).to_be_visible()
    finally:
        context.close()


def test_logging_out_ends_the_session_on_the_server(browser: Browser,
                                                    floor: CollectorProcess) -> None:
    context = new_context(browser)
    try:
        page = context.new_page()
        secret = create_user(floor, "walter", "viewer")
        first_login(page, floor.url, "walter", secret, "correct horse battery 4")
        client = session_client(floor, context)  # the cookie as it was before logging out
        with page.expect_navigation():
            page.click("form#logout button[type=submit]")
        assert "/login" in page.url
        with client:
            assert client.get("/events").status_code == 303  # the old cookie is worth nothing
    finally:
        context.close()


# --- live: a stick plugged into a running workstation agent ----------------------------------

def test_a_plugged_stick_is_an_alert_live_and_in_the_feed(admin: Page,
                                                          floor: CollectorProcess,
                                                          tmp_path: Path) -> None:
    """A blocked stick (usb.blocked, warning) is an alert: the overview open beside the live
    feed counts it without anyone reloading, the feed shows the event without reloading the
    page, and /alerts lists it for acknowledging."""
    with usb_workstation(floor, "ws-usb-1", tmp_path / "bus") as station:
        admin.goto(f"{floor.url}/")
        warnings = admin.locator("[data-testid=alerts-by-severity] [data-severity=warning] .n")
        before = int(warnings.inner_text())
        feed = admin.context.new_page()
        try:
            feed.goto(f"{floor.url}/events?kind=usb.")
            expect(feed.get_by_test_id("live-status")).to_have_text("live", timeout=WAIT_MS)
            feed.evaluate("window.__notReloaded = true")
            station.plug_stick()
            row = feed.locator('tr[data-testid=event-row][data-agent=ws-usb-1]'
                               '[data-kind="usb.blocked"]')
            expect(row).to_have_count(1, timeout=WAIT_MS)
            assert feed.evaluate("window.__notReloaded === true"), "the page was reloaded"
            assert row.get_attribute("data-severity") == "warning"
            expect(row).to_contain_text("SanDisk")
        finally:
            feed.close()
        expect(warnings).to_have_text(str(before + 1), timeout=WAIT_MS)
        result = station.stop()
    assert result["stick_authorized"] == "0"  # and the stick stayed off
    admin.goto(f"{floor.url}/alerts?state=open")
    alert = admin.locator("tr[data-testid=alert-row][data-state=open]", has_text="ws-usb-1")
    expect(alert).to_have_count(1)
    expect(alert).to_contain_text("usb.blocked")
    expect(alert.locator("form.ack textarea[name=comment]")).to_have_count(1)
    overview = admin.goto(f"{floor.url}/")
    assert overview is not None and overview.status == 200
    expect(admin.locator('tr[data-testid=workstation-row][data-agent=ws-usb-1]')).to_have_count(1)


# --- alerts: appear without the user reloading, acknowledged with a comment ------------------

def test_an_alert_appears_and_is_acknowledged(admin: Page, floor: CollectorProcess) -> None:
    """The overview's open-alert counts follow the live stream (the page redraws itself; the
    test does not navigate); the alert is then acknowledged on /alerts with a comment."""
    admin.goto(f"{floor.url}/")
    critical = admin.locator("[data-testid=alerts-by-severity] [data-severity=critical] .n")
    before = int(critical.inner_text())
    send_with_gap(floor, door_controller(floor, "door-ctl-gap"))
    expect(critical).to_have_text(str(before + 1), timeout=WAIT_MS)
    admin.goto(f"{floor.url}/alerts?state=open")
    row = admin.locator("tr[data-testid=alert-row][data-state=open]",
                        has_text="door-ctl-gap").first
    alert_id = row.get_attribute("data-alert-id")
    expect(row).to_contain_text("gap")
    row.locator("form.ack textarea[name=comment]").fill("spool wiped by a technician; ticket 42")
    with admin.expect_navigation():
        row.get_by_test_id("ack-button").click()
    done = admin.locator(f"tr[data-testid=alert-row][data-alert-id='{alert_id}']")
    admin.goto(f"{floor.url}/alerts?state=all")
    expect(done).to_have_attribute("data-state", "acknowledged")
    expect(done).to_contain_text("alice")
    expect(done).to_contain_text("ticket 42")
    # ... and the acknowledgement is on the collector's own audit trail, with who
    own = self_audit.agent_id(floor.config)
    admin.goto(f"{floor.url}/events?agent={own}&kind=alert.")
    acked = admin.locator('tr[data-testid=event-row][data-kind="alert.acknowledged"]')
    for _ in range(40):  # delivered by the collector's own forwarder, like any agent's events
        if acked.count():
            break
        admin.wait_for_timeout(500)
        admin.reload()
    expect(acked.first).to_contain_text("who=alice")
    expect(acked.first).to_contain_text(f"alert_id={alert_id}")
    expect(acked.first).to_contain_text("ticket 42")


def test_new_alerts_are_announced_live_on_the_alerts_page(admin: Page,
                                                           floor: CollectorProcess) -> None:
    """/alerts open: an alert raised at ingest shows a banner naming it, without anyone
    reloading; its reload link then lists the alert."""
    admin.goto(f"{floor.url}/alerts?state=open")
    expect(admin.get_by_test_id("live-status")).to_have_text("live", timeout=WAIT_MS)
    banner = admin.get_by_test_id("new-alerts")
    expect(banner).to_be_hidden()
    admin.evaluate("window.__notReloaded = true")
    send_with_gap(floor, door_controller(floor, "door-ctl-live"))
    expect(banner).to_be_visible(timeout=WAIT_MS)
    expect(banner).to_contain_text("door-ctl-live")
    assert admin.evaluate("window.__notReloaded === true"), "the page was reloaded"
    with admin.expect_navigation():
        banner.get_by_test_id("new-alerts-reload").click()
    assert "state=open" in admin.url
    expect(admin.locator("tr[data-testid=alert-row][data-state=open]",
                         has_text="door-ctl-live")).not_to_have_count(0)


def test_an_open_overview_redraws_its_tables_not_the_page(browser: Browser,
                                                          floor: CollectorProcess,
                                                          admin: Page) -> None:
    """Agents report 100 events/s (the benchmark's reporters and their real mix: blocked
    sticks, isolation checks, camera segments and motion). An open overview in 30 s: no full
    reload, and its tables refetched at most once per 5 s (plus the periodic one), at least
    once."""
    context = new_context(browser)
    try:
        context.add_cookies(admin.context.cookies())
        page = context.new_page()
        page.goto(f"{floor.url}/")
        expect(page.get_by_test_id("live-status")).to_have_text("live", timeout=WAIT_MS)
        loads: list[str] = []
        fragments: list[str] = []
        page.on("framenavigated", lambda f: loads.append(f.url) if f == page.main_frame else None)
        page.on("request", lambda r: fragments.append(r.url)
                if "/overview/state" in r.url else None)
        with reporting_agents(floor, 100.0) as agents:
            page.wait_for_timeout(30_000)
        assert loads == [], f"the overview reloaded itself {len(loads)} times"
        assert 1 <= len(fragments) <= 8, f"{len(fragments)} redraws in 30 s"
        # the redrawn tables hold the reporting workstations
        expect(page.locator(f"tr[data-testid=workstation-row][data-agent={agents[0]}]")
               ).to_have_count(1, timeout=WAIT_MS)
    finally:
        context.close()


# --- the door log: filters and CSV -----------------------------------------------------------

def test_the_door_log_links_the_people_page_for_admins(admin: Page, viewer: Page,
                                                       floor: CollectorProcess) -> None:
    admin.goto(f"{floor.url}/doors")
    with admin.expect_navigation():
        admin.locator("main a[href='/doors/people']").click()
    assert admin.url.endswith("/doors/people")
    expect(admin.get_by_test_id("people")).to_have_count(1)
    viewer.goto(f"{floor.url}/doors")
    expect(viewer.locator("main a[href='/doors/people']")).to_have_count(0)
    expect(viewer.locator("main")).not_to_contain_text("/doors/people")


def test_the_door_log_filters_by_person_and_outcome(admin: Page, floor: CollectorProcess,
                                                    doors: list[Access]) -> None:
    admin.goto(f"{floor.url}/doors")
    admin.fill("form#filters input[name=person]", "P-0002")
    with admin.expect_navigation():
        admin.click("form#filters button[type=submit]")
    rows = texts(admin, "tr[data-testid=access-row]")
    want = [a for a in reversed(doors) if a.person == "P-0002"]  # newest first
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows] == [
        (a.person, a.card, a.door, "granted" if a.granted else "denied", a.reason) for a in want]
    admin.select_option("form#filters select[name=outcome]", "denied")
    with admin.expect_navigation():
        admin.click("form#filters button[type=submit]")
    rows = texts(admin, "tr[data-testid=access-row]")
    assert [(r[0], r[2], r[3]) for r in rows] == [
        (a.person, a.door, "denied") for a in want if not a.granted]
    assert "person=P-0002" in admin.url and "outcome=denied" in admin.url


def test_csv_export_equals_the_filtered_table(admin: Page, floor: CollectorProcess,
                                              doors: list[Access]) -> None:
    admin.goto(f"{floor.url}/doors?outcome=denied")
    shown = full_values(admin, "tr[data-testid=access-row]")  # the export has full times
    assert len(shown) == sum(1 for a in doors if not a.granted)
    link = admin.get_by_test_id("export-csv")
    assert "format=csv" in (link.get_attribute("href") or "")
    assert "outcome=denied" in (link.get_attribute("href") or "")
    with admin.expect_download() as download:
        link.click()
    text = Path(download.value.path()).read_text(encoding="utf-8-sig")
    parsed = list(csv.reader(io.StringIO(text)))
    header = admin.eval_on_selector_all(
        "[data-testid=access-log] thead th", "ths => ths.map(t => t.innerText.trim())")
    assert [h.lower() for h in parsed[0]] == [h.lower() for h in header]
    # CSV injection: a value starting with = is written with a leading '
    assert parsed[1:] == [[("'" + c if c[:1] in "=+-@" else c) for c in row] for row in shown]
    assert any(row[0].startswith("'=") for row in parsed[1:])


# --- cameras: the latest picture, and who looked at it ---------------------------------------

def test_a_snapshot_view_is_logged_with_who(admin: Page, floor: CollectorProcess,
                                            camera: tuple[str, str]) -> None:
    box, cam = camera
    admin.goto(f"{floor.url}/")
    row = admin.locator(f"tr[data-testid=camera-row][data-camera={cam}]")
    expect(row.get_by_test_id("camera-state")).to_have_text("recording")
    admin.goto(f"{floor.url}/cameras/{box}/{cam}")
    shot = admin.get_by_test_id("snapshot")
    expect(shot).to_be_visible()
    assert admin.evaluate("img => img.complete && img.naturalWidth", shot.element_handle()) == 320
    views = admin.locator("tr[data-testid=footage-row]", has_text="alice")
    for _ in range(40):  # on the collector's own trail, delivered by its forwarder
        if views.count():
            break
        admin.wait_for_timeout(500)
        admin.reload()
    expect(views.first).to_contain_text("footage.viewed")
    # the box reported its camera online (offline_ms=0) at start: that is no recording gap
    expect(admin.get_by_test_id("recording-gaps").locator("tr.empty")).to_have_count(1)
    expect(admin.locator("tr[data-testid=gap-row]")).to_have_count(0)


# --- roles and CSRF --------------------------------------------------------------------------

ADMIN_ONLY = ["/admin/users", "/doors/people"]
AUDITOR_ONLY = ["/integrity", "/events?format=csv", "/doors?format=csv"]


def test_a_viewer_gets_403_on_admin_pages_not_just_a_hidden_link(
        viewer: Page, floor: CollectorProcess) -> None:
    viewer.goto(f"{floor.url}/")
    expect(viewer.locator("header nav a[href='/admin/users']")).to_have_count(0)
    for path in ADMIN_ONLY + AUDITOR_ONLY:
        response = viewer.goto(f"{floor.url}{path}")
        assert response is not None and response.status == 403, path
    with session_client(floor, viewer.context) as client:
        for path in ADMIN_ONLY + AUDITOR_ONLY:
            assert client.get(path).status_code == 403, path
        assert client.get("/events").status_code == 200  # the cookie itself is good


def test_posts_without_the_csrf_token_are_refused(admin: Page, floor: CollectorProcess) -> None:
    send_with_gap(floor, door_controller(floor, "door-ctl-csrf"))
    admin.goto(f"{floor.url}/alerts?state=open")
    row = admin.locator("tr[data-testid=alert-row][data-state=open]",
                        has_text="door-ctl-csrf").first
    alert_id = row.get_attribute("data-alert-id")
    with session_client(floor, admin.context) as client:
        for path, form in ((f"/alerts/{alert_id}/ack", {"comment": "no token"}),
                           ("/admin/users", {"username": "mallory", "role": "admin"}),
                           ("/logout", {})):
            for token in (None, "forged-token"):
                data = form if token is None else {**form, "csrf_token": token}
                answer = client.post(path, data=data)
                assert answer.status_code == 403, (path, token, answer.status_code)
                assert "csrf" in answer.text.lower(), answer.text[:300]
        # nothing happened: the alert is still open, no user was made, the session still works
        assert client.get("/alerts").status_code == 200
    admin.goto(f"{floor.url}/alerts?state=open")
    expect(admin.locator(f"tr[data-testid=alert-row][data-alert-id='{alert_id}']")
           ).to_have_attribute("data-state", "open")
    admin.goto(f"{floor.url}/admin/users")
    expect(admin.locator("main")).not_to_contain_text("mallory")


BIG = "9" * 30  # beyond any database integer


def test_malformed_and_out_of_range_input_is_a_4xx_not_a_500(admin: Page,
                                                               floor: CollectorProcess) -> None:
    """The dashboard's routes are not in the OpenAPI document (test_api_fuzz.py cannot reach
    them): the inputs a fuzzer would try first, by hand, with a valid session and token."""
    admin.goto(f"{floor.url}/alerts")
    token = admin.locator("form#logout input[name=csrf_token]").get_attribute("value")
    requests = [
        ("POST", f"/alerts/{BIG}/ack", {"comment": "x", "csrf_token": token}),
        ("POST", "/alerts/-1/ack", {"comment": "x", "csrf_token": token}),
        ("GET", f"/events/nobody/{BIG}", None), ("GET", "/events/nobody/-5", None),
        ("GET", "/events?since=2026-99-99T00:00:00Z", None),
        ("GET", "/events?severity=bogus", None), ("GET", "/events?kind=%00", None),
        ("GET", "/events?agent=" + "x" * 5000, None), ("GET", "/doors?since=yesterday", None),
        ("GET", "/alerts?state=zzz", None), ("GET", "/cameras/a/b/snapshot.jpg", None),
        ("GET", "/cameras/%00/b", None), ("GET", "/workstations/%00", None),
        ("GET", f"/workstations/{BIG}", None), ("GET", f"/?wall={BIG}", None),
        ("POST", "/admin/users", {"username": "Bad Name!", "role": "admin", "csrf_token": token}),
        ("POST", "/admin/users", {"username": "bob", "role": "god", "csrf_token": token}),
        ("POST", "/integrity/verify", {"agent": "\x00", "csrf_token": token}),
        ("POST", "/integrity/verify", {"agent": BIG, "csrf_token": token}),
    ]
    server_errors = []
    with session_client(floor, admin.context) as client:
        for method, path, form in requests:
            try:
                status = str(client.request(method, path, data=form,
                                            headers={"Connection": "close"}).status_code)
            except httpx.HTTPError as exc:  # e.g. the connection dropped without an answer
                status = f"{type(exc).__name__}: {exc}"
            if status[:1] not in "234":
                server_errors.append(f"{method} {path[:80]} -> {status}")
        assert client.get("/").status_code == 200  # and the session survived all of it
    assert not server_errors, "\n".join(server_errors)


# --- how it looks ----------------------------------------------------------------------------

PAGES = [("overview", "/"), ("events", "/events"), ("alerts", "/alerts"), ("doors", "/doors"),
         ("cameras", "/cameras"), ("integrity", "/integrity"), ("admin-users", "/admin/users"),
         ("workstations", "/workstations"), ("camera", "/cameras/cctv-box-1/cam-1")]


def test_main_pages_fit_1366_and_are_captured(admin: Page, floor: CollectorProcess,
                                              doors: list[Access], camera: tuple[str, str],
                                              tmp_path: Path) -> None:
    admin.set_viewport_size(DESKTOP)
    too_wide = {}
    wrapped: dict[str, list[str]] = {}
    elsewhere: list[str] = []  # the floor is offline: nothing may come from another origin
    console_errors: list[str] = []  # a CSP violation or a script error shows here
    admin.on("request", lambda r: None if r.url.startswith(floor.url) else elsewhere.append(r.url))
    admin.on("console", lambda m: console_errors.append(f"{admin.url}: {m.text}")
             if m.type == "error" else None)
    for name, path in PAGES:
        response = admin.goto(f"{floor.url}{path}")
        assert response is not None and response.status == 200, (path, response)
        headers = response.headers
        assert "default-src 'self'" in headers.get("content-security-policy", ""), path
        assert headers.get("x-frame-options") == "DENY", path
        assert "no-store" in headers.get("cache-control", ""), path
        screenshot(admin, name, ARTIFACTS, tmp_path)
        width = admin.evaluate("document.documentElement.scrollWidth")
        if width > DESKTOP["width"]:
            too_wide[path] = width
        broken = admin.evaluate(WRAPPED_SHORT_CELLS)
        if broken:
            wrapped[path] = broken[:5]
    assert too_wide == {}, f"horizontal scrolling at 1366 px: {too_wide}"
    assert wrapped == {}, f"short cells on more than one line at 1366 px: {wrapped}"
    assert elsewhere == [] and console_errors == [], (elsewhere, console_errors)


def test_wall_display_at_1920(browser: Browser, floor: CollectorProcess,
                              one_time: dict[str, str], admin: Page, tmp_path: Path) -> None:
    context: BrowserContext = new_context(browser, WALL)
    try:
        context.add_cookies(admin.context.cookies())
        page = context.new_page()
        response = page.goto(f"{floor.url}/?wall=1")
        assert response is not None and response.status == 200
        expect(page.locator("header nav")).to_have_count(0)  # no navigation on the wall
        expect(page.get_by_test_id("workstations")).to_be_visible()
        expect(page.get_by_test_id("live-status")).to_have_text("live", timeout=WAIT_MS)
        screenshot(page, "wall-1920", ARTIFACTS, tmp_path)
        assert page.evaluate("document.documentElement.scrollWidth") <= WALL["width"]
        # read from across the room: big counts and names, states as full-width tiles
        size = "s => parseFloat(getComputedStyle(document.querySelector(s)).fontSize)"
        assert page.evaluate(size, "[data-testid=alerts-by-severity] .n") >= 48
        assert page.evaluate(size, "[data-testid=workstation-row] .name") >= 24
        tiles = page.get_by_test_id("workstations").bounding_box()
        assert tiles is not None and tiles["width"] >= 0.9 * WALL["width"] - 100
    finally:
        context.close()
