"""The dashboard's policy pages in Debian's Chromium (Playwright, as the other browser tests)
against a real collector process: an admin sets the default group's rules through the form,
a workstation reports a blocked stick, the admin approves it on the blocked-devices page by
clicking, and the exception appears; every policy page fits 1366 px without horizontal
scrolling, with no script error and nothing fetched from elsewhere."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from batches import BatchMaker
from browser import DESKTOP, chromium, new_context
from collector_process import CollectorProcess
from dashboard_clients import PASSWORD, add_user
from dashboard_fixtures import log_in, screenshot, send_pending
from playwright.sync_api import Page, expect

from floor_agent.audit.forwarder import pinned_client

ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "dashboard"
HASH = "C" * 42 + "E="
STICK = {"id": "0781:5567", "name": "Cruzer Blade", "manufacturer": "SanDisk",
         "serial": "4C530001234567891234", "port": "1-2", "interfaces": ["08:06:50"],
         "hash": HASH, "parent_hash": HASH, "connect_type": "hotplug", "problems": [],
         "rule": "block (implicit)", "reason": "no rule allows it", "allowed_interfaces": [],
         "blocked_interfaces": ["08:06:50"], "action": "deauthorized"}
RULES = "allow with-interface match-all { 09:*:* }\nallow with-interface match-all { 03:*:* }\n"
WAIT_MS = 20_000


@pytest.fixture(scope="module")
def floor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    proc = CollectorProcess(tmp_path_factory.mktemp("policy-dashboard"))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def admin(floor: CollectorProcess) -> Iterator[Page]:
    add_user(floor, "pam", "admin")
    with chromium(floor.files.server_cert) as browser:
        context = new_context(browser)
        page = context.new_page()
        log_in(page, floor.url, "pam", PASSWORD)
        try:
            yield page
        finally:
            context.close()


def default_group(admin: Page, floor: CollectorProcess) -> None:
    """The default group's rules, set through the groups page's form (once)."""
    admin.goto(f"{floor.url}/policy")
    if admin.locator("[data-testid=policy-group-row][data-group=default]").count():
        return
    admin.fill("form#group-form input[name=group]", "default")
    admin.fill("form#group-form textarea[name=usb_rules]", RULES)
    admin.fill("form#group-form textarea[name=netlock_allow]",
               "- name: collector\n  addresses: [10.0.0.5]\n  tcp: [8443]\n")
    admin.fill("form#group-form input[name=reason]", "ticket 41: the floor's rules")
    with admin.expect_navigation():
        admin.click("form#group-form button[type=submit]")
    expect(admin.get_by_test_id("policy-message")).to_contain_text("group default saved")


def workstation(floor: CollectorProcess, name: str) -> BatchMaker:
    maker = BatchMaker(floor.root, name)
    with pinned_client(floor.url, floor.ca, 10.0) as client:
        answer = client.post("/api/v1/enroll", json=maker.enroll_payload(floor.token()))
    assert answer.status_code == 201, answer.text
    return maker


def test_admin_approves_a_blocked_device_by_clicking(admin: Page, floor: CollectorProcess,
                                                     tmp_path: Path) -> None:
    station = workstation(floor, "ws-floor-7")
    default_group(admin, floor)

    station.spool.emit_many([("usb.blocked", "usb 1-2", "warning", STICK)])
    send_pending(floor, station)
    admin.goto(f"{floor.url}/policy/blocked")
    device = admin.locator("[data-testid=blocked-device][data-agent=ws-floor-7]")
    expect(device).to_have_count(1)
    expect(device.get_by_test_id("device-serial")).to_have_text(STICK["serial"])
    device.locator("select[name=scope]").select_option("agent")
    device.locator("input[name=reason]").fill("ticket 42: calibration stick for line 3")
    device.locator("input[name=expires_at]").fill("2099-06-30T18:00")
    with admin.expect_navigation():
        device.get_by_role("button", name="Approve").click()
    expect(admin.get_by_test_id("approved-message")).to_contain_text("ws-floor-7 now gets "
                                                                      "version")
    version = int(admin.get_by_test_id("approved-version").inner_text())
    assert version >= 2
    expect(admin.locator("[data-testid=blocked-device]")).to_have_count(0)
    screenshot(admin, "policy-approved", ARTIFACTS, tmp_path)

    admin.click("nav.policy-tabs >> text=Exceptions")
    row = admin.locator("[data-testid=exception-row]")
    expect(row).to_have_count(1, timeout=WAIT_MS)
    expect(row).to_have_attribute("data-scope", "agent:ws-floor-7")
    expect(row).to_contain_text("calibration stick")
    expect(row).to_contain_text(HASH)
    store = floor.store()
    try:
        (item,) = store.policy_exceptions()
        assert item["approved_by"] == "pam" and item["expires_at"].startswith("2099-06-30T18")
        assert store.policy_inputs("ws-floor-7", "default")["version"] == version
    finally:
        store.close()
    admin.click("nav.policy-tabs >> text=Change log")
    expect(admin.locator("[data-testid=policy-change]").first).to_contain_text("ticket 42")


PAGES = ("/policy", "/policy/groups/default", "/policy/assignments", "/policy/changes",
         "/policy/exceptions", "/policy/blocked", "/workstations")


def test_policy_pages_fit_1366(admin: Page, floor: CollectorProcess, tmp_path: Path) -> None:
    admin.set_viewport_size(DESKTOP)
    default_group(admin, floor)
    elsewhere: list[str] = []
    errors: list[str] = []
    admin.on("request", lambda r: None if r.url.startswith(floor.url) else elsewhere.append(r.url))
    admin.on("console", lambda m: errors.append(f"{admin.url}: {m.text}")
             if m.type == "error" else None)
    too_wide = {}
    for path in PAGES:
        response = admin.goto(f"{floor.url}{path}")
        assert response is not None and response.status == 200, path
        screenshot(admin, "policy" + path.replace("/", "-"), ARTIFACTS, tmp_path)
        width = admin.evaluate("document.documentElement.scrollWidth")
        if width > DESKTOP["width"]:
            too_wide[path] = width
    assert too_wide == {}, f"horizontal scrolling at 1366 px: {too_wide}"
    assert elsewhere == [] and errors == [], (elsewhere, errors)
