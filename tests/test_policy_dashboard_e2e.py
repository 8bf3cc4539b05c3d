"""An exception approved in the dashboard, end to end: an admin logged in through the login
page in Debian's Chromium (Playwright, tests/browser.py) clicks Approve on the blocked-devices
page of the real collector, and the real `floor-agent workstation` on its umockdev bus
(tests/policy_floor.py) authorizes exactly that stick: not another stick of the same model
with another serial on the same bus, not the same stick on another workstation."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import chromium, new_context
from collector_process import CollectorProcess
from dashboard_clients import PASSWORD, add_user
from dashboard_fixtures import log_in, screenshot
from playwright.sync_api import expect
from policy_floor import BOOTSTRAP_RULES, Events, PolicyAdmin, Workstation
from umockdev_bus import KEYBOARD, STICK

ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "dashboard"
# the same model (0781:5567 SanDisk Cruzer Blade) with another serial, on another port
OTHER = dataclasses.replace(STICK, port=5, devnum=6, serial=b"4C530009999999999999")
WAIT_MS = 20_000


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    proc = CollectorProcess(tmp_path, policy={"expiry_check_seconds": 1})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def stations(collector: CollectorProcess) -> Iterator[list[Workstation]]:
    made: list[Workstation] = []
    try:
        yield made
    finally:
        for station in made:
            station.stop()


def test_a_click_on_approve_unblocks_that_stick_on_that_workstation_only(
        collector: CollectorProcess, stations: list[Workstation], tmp_path: Path) -> None:
    admin, events = PolicyAdmin(collector), Events(collector)
    a = Workstation(collector, "ws-a", (STICK, OTHER, KEYBOARD))
    b = Workstation(collector, "ws-b", (STICK, KEYBOARD))  # the very same stick (serial) on B
    stations += [a, b]
    admin.set_group("retouch", BOOTSTRAP_RULES)
    admin.assign("ws-a", "retouch")
    version = admin.assign("ws-b", "retouch")
    a.start()
    b.start()
    events.applied("ws-b", version)
    for station, specs in ((a, (STICK, OTHER)), (b, (STICK,))):
        for spec in specs:
            station.wait_authorized(spec, "0")
    stick = events.blocked("ws-a", STICK.serial.decode())["data"]["hash"]
    other = events.blocked("ws-a", OTHER.serial.decode())["data"]["hash"]
    on_b = events.blocked("ws-b", STICK.serial.decode())["data"]["hash"]
    assert stick != other and stick == on_b  # the serial is in the hash, the machine is not

    add_user(collector, "pam", "admin")
    with chromium(collector.files.server_cert) as browser:
        context = new_context(browser)
        page = context.new_page()
        log_in(page, collector.url, "pam", PASSWORD)
        page.goto(f"{collector.url}/policy/blocked")
        devices = page.locator("[data-testid=blocked-device]")
        for agent, digest in (("ws-a", stick), ("ws-a", other), ("ws-b", stick)):
            expect(devices.and_(page.locator(
                f"[data-agent={agent}][data-hash='{digest}']"))).to_have_count(1)
        device = page.locator(f"[data-testid=blocked-device][data-agent=ws-a]"
                              f"[data-hash='{stick}']")
        expect(device.get_by_test_id("device-serial")).to_have_text(STICK.serial.decode())
        device.locator("select[name=scope]").select_option(label="this workstation (ws-a)")
        device.locator("input[name=reason]").fill("ticket 57: the colourist's own stick")
        with page.expect_navigation():
            device.get_by_role("button", name="Approve").click()
        expect(page.get_by_test_id("approved-message")).to_contain_text("ws-a now gets version")
        approved = int(page.get_by_test_id("approved-version").inner_text())
        assert approved > version

        a.wait_authorized(STICK, "1", 10)
        applied = events.applied("ws-a", approved)
        [in_force] = applied["data"]["exceptions"]
        assert in_force["rule"] == (f'allow id 0781:5567 serial "{STICK.serial.decode()}" '
                                    f'hash "{stick}"')
        # the other stick of the model on A and the same stick on B stay off, and stay listed
        assert a.authorized(OTHER) == "0" and a.authorized(KEYBOARD) == "1"
        assert b.authorized(STICK) == "0"
        assert [e["data"]["version"] for e in events.of("ws-b", "policy.applied")
                if e["data"]["source"] == "collector"] == [version]
        expect(page.locator(f"[data-testid=blocked-device][data-agent=ws-a]"
                            f"[data-hash='{stick}']")).to_have_count(0)
        for agent, digest in (("ws-a", other), ("ws-b", stick)):
            expect(devices.and_(page.locator(
                f"[data-agent={agent}][data-hash='{digest}']"))).to_have_count(1)
        screenshot(page, "policy-e2e-approved", ARTIFACTS, tmp_path)

        page.click("nav.policy-tabs >> text=Exceptions")
        row = page.locator("[data-testid=exception-row]")
        expect(row).to_have_count(1, timeout=WAIT_MS)
        expect(row).to_have_attribute("data-scope", "agent:ws-a")
        expect(row).to_contain_text("colourist's own stick")
        expect(row).to_contain_text(stick)
        context.close()
    # a while later, still only that stick on that machine
    time.sleep(2)
    assert (a.authorized(STICK), a.authorized(OTHER), b.authorized(STICK)) == ("1", "0", "0")
