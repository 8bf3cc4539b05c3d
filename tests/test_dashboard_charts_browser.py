"""The dashboard's pictures in Debian's Chromium against a real collector, checked by their
pixels: the charts' bars and spans in their colours where the data puts them, the camera
tiles showing the camera's own picture and redrawing it live when a new one arrives, and no
page wider than 1366 px, with hostile names (markup, 200 characters) in the data.

Screenshots go to tests/artifacts/dashboard/ and the test's tmp dir; the checks read the
PNGs Chromium made (Pillow), so a chart that draws nothing, or draws it elsewhere, fails.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from batches import BatchMaker
from browser import DESKTOP, chromium, new_context
from collector_process import CollectorProcess
from dashboard_fixtures import (
    Access,
    camera_box,
    create_user,
    door_controller,
    first_login,
    screenshot,
    send_access,
    send_pending,
)
from PIL import Image
from playwright.sync_api import Browser, Page, expect

from floor_agent.audit.forwarder import pinned_client
from floor_agent.cctv.snapshot import SnapshotUploader, encode_jpeg
from floor_agent.config.audit import AuditClientConfig
from floor_agent.dashboard import svg_charts
from floor_agent.protocol.event import utc_timestamp

ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "dashboard"
PASSWORD = "correct horse battery 9"
WAIT_MS = 30_000
HOSTILE_CAMERA = '<b onmouseover="alert(1)">x</b>' + "c" * 170  # 200 characters with markup
LONG_AGENT = "w" * 200
GRANTED, DENIED = 4, 2


def rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def pixels_of(png: bytes, colour: str, tolerance: int = 6) -> np.ndarray:
    """(y, x) of the pixels within `tolerance` of the colour, per channel."""
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    near = np.all(np.abs(image - np.array(rgb(colour))) <= tolerance, axis=2)
    return np.argwhere(near)


def size_of(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


def enrolled(floor: CollectorProcess, name: str, role: str) -> BatchMaker:
    maker = BatchMaker(floor.root, name)
    with pinned_client(floor.url, floor.ca, 10.0) as client:
        answer = client.post("/api/v1/enroll",
                             json=maker.enroll_payload(floor.token(role), role))
    assert answer.status_code == 201, answer.text
    return maker


def send(floor: CollectorProcess, maker: BatchMaker,
         events: list[tuple[str, str, str, dict[str, object]]]) -> None:
    maker.spool.emit_many(events)
    send_pending(floor, maker)


def picture(colour_bgr: tuple[int, int, int]) -> bytes:
    image = np.full((180, 320, 3), 70, np.uint8)
    cv2.rectangle(image, (40, 40), (200, 140), colour_bgr, -1)
    return encode_jpeg(image)


def upload_picture(floor: CollectorProcess, box: str, camera: str, jpeg: bytes) -> None:
    """A new latest picture from the camera box, through its real uploader."""
    audit = AuditClientConfig(agent_id=box, state_dir=floor.root / box, collector_url=floor.url,
                              ca_cert=floor.ca)
    uploader = SnapshotUploader.from_config(audit)
    try:
        uploader.offer(camera, jpeg)
        assert uploader.send_pending() == 1
    finally:
        uploader.close()


@pytest.fixture(scope="module")
def floor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    proc = CollectorProcess(tmp_path_factory.mktemp("charts"))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def data(floor: CollectorProcess) -> dict[str, str]:
    """Doors (granted 4, denied 2), a workstation in breach and one fine, a workstation with
    a 200-character id, a camera box with its picture and one with a hostile camera name."""
    hour = utc_timestamp(datetime.now(UTC))[11:13]
    door = door_controller(floor, "door-ctl-1")
    send_access(floor, door, [Access(f"P-{i}", f"04A{i}", "front", True, "granted")
                              for i in range(GRANTED)]
                + [Access(f"P-{i}", f"04B{i}", "front", False, "unknown_card")
                   for i in range(DENIED)])
    bad, good = enrolled(floor, "ws-bad", "workstation"), enrolled(floor, "ws-good", "workstation")
    send(floor, bad, [("usb.locked_down", "usb", "info", {"hubs": [], "changed": []}),
                      ("net.verified", "netlock", "info", {"checks": []}),
                      ("usb.blocked", "usb 1-2", "warning", {"name": "<i>stick</i>"}),
                      ("net.breach", "netlock", "critical", {"new": ["routes"]})])
    send(floor, good, [("usb.locked_down", "usb", "info", {"hubs": [], "changed": []}),
                       ("net.verified", "netlock", "info", {"checks": []})])
    store = floor.store()
    try:  # stored by other means than enrollment, which allows 64 characters
        assert store.add_agent(LONG_AGENT, "workstation", "k", "h", utc_timestamp())
    finally:
        store.close()
    camera_box(floor, "cctv-box-1", "cam-1")  # online, one segment, its picture
    box2 = enrolled(floor, "cctv-box-2", "cctv")
    send(floor, box2, [
        ("cctv.segment", f"camera {HOSTILE_CAMERA}", "info", {"camera_id": HOSTILE_CAMERA,
                                                               "seq": 1}),
        ("cctv.tamper", f"camera {HOSTILE_CAMERA}", "critical", {"camera_id": HOSTILE_CAMERA,
                                                                  "tamper": "covered"})])
    return {"hour": hour}


@pytest.fixture(scope="module")
def browser(floor: CollectorProcess) -> Iterator[Browser]:
    with chromium(floor.files.server_cert) as launched:
        yield launched


@pytest.fixture(scope="module")
def viewer(browser: Browser, floor: CollectorProcess) -> Iterator[Page]:
    """A viewer: the charts and tiles need no more than the pages listing the same data."""
    context = new_context(browser)
    page = context.new_page()
    first_login(page, floor.url, "vera", create_user(floor, "vera", "viewer"), PASSWORD)
    try:
        yield page
    finally:
        context.close()


def open_fitting(page: Page, url: str, name: str, tmp_path: Path) -> list[str]:
    """Open a page at 1366 px: no horizontal scroll, nothing from elsewhere; its screenshot.
    Returns the console errors (a CSP violation shows there)."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.set_viewport_size(DESKTOP)
    response = page.goto(url)
    assert response is not None and response.status == 200, url
    screenshot(page, name, ARTIFACTS, tmp_path)
    scroll = page.evaluate("[document.scrollingElement.scrollWidth, "
                           "document.scrollingElement.clientWidth]")
    assert scroll[0] <= DESKTOP["width"] and scroll[0] <= scroll[1], (url, scroll)
    return errors


# --- /charts ---------------------------------------------------------------------------------

PLOT_LEFT, PLOT_BOTTOM = 60, 196  # svg_charts.bar_chart: the plot's left edge and baseline


def drawn(page: Page, testid: str, png: bytes) -> tuple[float, float]:
    """(pixels per logical unit, the logical width) of a chart's screenshot, from its viewBox;
    the scale must be the same both ways (drawn at its own aspect, not stretched)."""
    box = page.get_by_test_id(testid).get_attribute("viewBox") or ""
    _, _, logical_w, logical_h = (float(v) for v in box.split())
    width, height = size_of(png)
    scale = width / logical_w
    assert abs(height / scale - logical_h) < 3, (testid, width, height, box)
    return scale, logical_w


def test_door_traffic_bars_stand_at_this_hour_in_proportion(viewer: Page, floor: CollectorProcess,
                                                             data: dict[str, str],
                                                             tmp_path: Path) -> None:
    errors = open_fitting(viewer, f"{floor.url}/charts", "charts", tmp_path)
    chart = viewer.get_by_test_id("chart-doors")
    png = chart.screenshot(path=str(tmp_path / "chart-doors.png"))
    scale, logical = drawn(viewer, "chart-doors", png)
    plot_right = logical - 10
    plot = PLOT_BOTTOM * scale
    granted = [p for p in pixels_of(png, svg_charts.COLOURS["granted"]) if p[0] < plot]
    denied = [p for p in pixels_of(png, svg_charts.COLOURS["denied"]) if p[0] < plot]
    assert len(granted) > 50 and len(denied) > 20, (len(granted), len(denied))
    # both in the slot of the hour the doors were used (the clock may have turned meanwhile)
    slot = (plot_right - PLOT_LEFT) / 24 * scale
    hours = {int(data["hour"]), (int(data["hour"]) + 1) % 24}
    for _y, x in granted + denied:
        assert int((x - PLOT_LEFT * scale) // slot) in hours, (x, hours)
    # denied stacked on granted, and the heights in proportion 4:2
    g_rows = {int(y) for y, _ in granted}
    d_rows = {int(y) for y, _ in denied}
    assert max(d_rows) <= min(g_rows) + 1
    ratio = len(g_rows) / len(d_rows)
    assert GRANTED / DENIED * 0.75 <= ratio <= GRANTED / DENIED * 1.25, ratio
    assert errors == []


def test_events_per_capability_are_in_the_newest_bucket(viewer: Page, floor: CollectorProcess,
                                                        data: dict[str, str]) -> None:
    viewer.goto(f"{floor.url}/charts")
    png = viewer.get_by_test_id("chart-events").screenshot()
    scale, logical = drawn(viewer, "chart-events", png)
    plot_right = logical - 10
    for capability in ("door", "usb", "net", "cctv"):
        found = [p for p in pixels_of(png, svg_charts.COLOURS[capability])
                 if p[0] < PLOT_BOTTOM * scale]
        assert len(found) > 10, capability
        # 25 hour buckets: this hour's is the last (or the one before it, at the turn)
        assert min(x for _, x in found) > (plot_right - 2 * (plot_right - PLOT_LEFT) / 25) * scale
    alerts = viewer.get_by_test_id("chart-alerts").screenshot()
    assert len(pixels_of(alerts, svg_charts.COLOURS["usb"])) > 10  # the blocked stick


LANE_TOP, LANE_STEP, LANE_HEIGHT, LANE_LEFT = 8, 24, 18, 190


def test_workstation_lanes_show_the_breach_in_red(viewer: Page, floor: CollectorProcess,
                                                  data: dict[str, str]) -> None:
    viewer.goto(f"{floor.url}/charts")
    chart = viewer.get_by_test_id("chart-workstations")
    png = chart.screenshot()
    width, _ = size_of(png)
    scale, _ = drawn(viewer, "chart-workstations", png)
    labels = viewer.evaluate("""() => Array.from(document.querySelectorAll(
        '[data-testid=chart-workstations] text title')).map(t => t.textContent)""")
    # problems first; the 200-character id is cut on screen, whole in the tooltip
    assert labels[:2] == ["ws-bad usb", "ws-bad isolation"], labels
    assert f"{LONG_AGENT} usb" in labels

    def lane(index: int, colour: str) -> list[tuple[int, int]]:
        top = (LANE_TOP + LANE_STEP * index) * scale
        return [(int(y), int(x)) for y, x in pixels_of(png, colour)
                if top + 2 <= y <= top + LANE_HEIGHT * scale - 2 and x > LANE_LEFT * scale]

    red, green = svg_charts.STATE_COLOURS["bad"], svg_charts.STATE_COLOURS["ok"]
    breach = lane(1, red)
    assert breach and max(x for _, x in breach) >= width - 12 * scale  # breached until now
    assert lane(0, red) == []  # its USB lane is not red
    good = labels.index("ws-good isolation")
    assert lane(good, green) and lane(good, red) == []
    long_usb = labels.index(f"{LONG_AGENT} usb")
    assert lane(long_usb, svg_charts.STATE_COLOURS["unknown"])  # nothing reported: grey


# --- /cameras --------------------------------------------------------------------------------

def test_camera_tiles_show_the_picture_and_redraw_it_live(viewer: Page, floor: CollectorProcess,
                                                          data: dict[str, str],
                                                          tmp_path: Path) -> None:
    errors = open_fitting(viewer, f"{floor.url}/cameras", "cameras", tmp_path)
    cam = viewer.locator("[data-testid=camera-tile][data-camera='cam-1']")
    expect(cam.get_by_test_id("tile-state")).to_have_text("recording")
    shot = cam.get_by_test_id("tile-snapshot")
    expect(shot).to_be_visible()
    assert viewer.evaluate("img => img.complete && img.naturalWidth", shot.element_handle()) == 320
    png = cam.screenshot(path=str(tmp_path / "tile-cam-1.png"))
    # the camera's own picture: its yellow block (BGR 20,200,240), JPEG within tolerance
    assert len(pixels_of(png, "#f0c814", 40)) > 500
    # its timeline: recording in green
    assert len(pixels_of(png, svg_charts.STATE_COLOURS["recording"])) > 5
    # the hostile camera: its name is text, cut by the tile, and it is in tamper
    hostile = viewer.locator("[data-testid=camera-tile][data-agent='cctv-box-2']")
    expect(hostile.get_by_test_id("tile-state")).to_have_text("tamper")
    expect(hostile.locator(".name")).to_have_text(HOSTILE_CAMERA)
    assert viewer.locator("main b[onmouseover]").count() == 0
    assert len(pixels_of(hostile.screenshot(), svg_charts.STATE_COLOURS["tamper"])) > 20
    # a new picture arrives: the open page shows it without reloading
    viewer.evaluate("window.__notReloaded = true")
    before = shot.get_attribute("src")
    upload_picture(floor, "cctv-box-1", "cam-1", picture((240, 60, 20)))  # a blue block
    expect(cam.get_by_test_id("tile-snapshot")).not_to_have_attribute("src", before or "",
                                                                      timeout=WAIT_MS)
    viewer.wait_for_function(
        "() => { const i = document.querySelector(\"[data-camera='cam-1'] img\");"
        " return i && i.complete && i.naturalWidth === 320; }", timeout=WAIT_MS)
    assert viewer.evaluate("window.__notReloaded === true"), "the page was reloaded"
    png = cam.screenshot(path=str(tmp_path / "tile-cam-1-new.png"))
    assert len(pixels_of(png, "#143cf0", 40)) > 500 and len(pixels_of(png, "#f0c814", 40)) < 50
    screenshot(viewer, "cameras-live", ARTIFACTS, tmp_path)
    assert errors == []


def test_the_camera_page_has_its_day_and_fits(viewer: Page, floor: CollectorProcess,
                                              data: dict[str, str], tmp_path: Path) -> None:
    errors = open_fitting(viewer, f"{floor.url}/cameras/cctv-box-1/cam-1", "camera-day",
                          tmp_path)
    png = viewer.get_by_test_id("camera-day").screenshot()
    assert len(pixels_of(png, svg_charts.STATE_COLOURS["recording"])) > 5
    assert errors == []


def test_charts_need_a_login(browser: Browser, floor: CollectorProcess) -> None:
    context = new_context(browser)
    try:
        page = context.new_page()
        page.goto(f"{floor.url}/charts")
        assert "/login?next=" in page.url
    finally:
        context.close()
    with pinned_client(floor.url, floor.ca, 10.0) as client:
        assert client.get("/cameras/tiles").status_code == 303


# --- hostile and extreme data, drawn by the same code, in the same browser --------------------

INJECT = '<img src=x onerror="window.__injected=1"><script>window.__injected=2</script>'


def test_hostile_and_extreme_charts_keep_their_layout(browser: Browser, floor: CollectorProcess,
                                                      tmp_path: Path) -> None:
    """A million-count bar beside a one-event bar, labels with markup, a 200-character lane,
    a chart with nothing: drawn by svg_charts into a page with the dashboard's stylesheet at
    1366 px. Nothing runs, nothing overflows, the small bar is still on screen."""
    labels = [INJECT, "b", "c", "d"]
    huge = svg_charts.bar_chart(labels, [svg_charts.Series(INJECT, [1_000_000, 0, 1, 0],
                                                           svg_charts.COLOURS["usb"])],
                                INJECT, "huge", width=640)
    lanes = [svg_charts.Lane(LONG_AGENT + INJECT, [svg_charts.Span(0.2, 0.9, "bad", INJECT)])]
    lane = svg_charts.timeline(lanes, [(0.0, INJECT), (1.0, "now")], INJECT, "lane")
    nothing = svg_charts.bar_chart(labels, [], "empty", "nothing", width=640)
    css = (Path(svg_charts.__file__).parent / "static" / "dashboard.css").read_text()
    html = (f"<!doctype html><html><head><style>{css}</style></head><body><main>"
            f"<div class='charts'><section>{huge}</section><section>{nothing}</section>"
            f"<section class='wide'>{lane}</section></div></main></body></html>")
    context = new_context(browser)
    try:
        page = context.new_page()
        page.set_content(html)
        page.wait_for_timeout(300)  # an onerror would have fired by now
        assert page.evaluate("window.__injected") is None
        assert page.locator("main img, main script").count() == 0
        scroll = page.evaluate("[document.scrollingElement.scrollWidth, "
                               "document.scrollingElement.clientWidth]")
        assert scroll[0] <= DESKTOP["width"] and scroll[0] <= scroll[1], scroll
        screenshot(page, "charts-hostile", ARTIFACTS, tmp_path)
        png = page.get_by_test_id("huge").screenshot()
        scale, logical = drawn(page, "huge", png)
        blue = pixels_of(png, svg_charts.COLOURS["usb"])
        plot = [(int(y), int(x)) for y, x in blue if y < PLOT_BOTTOM * scale]
        slot = (logical - 10 - PLOT_LEFT) / 4 * scale
        columns = {int((x - PLOT_LEFT * scale) // slot) for _, x in plot}
        assert columns == {0, 2}, columns  # the million and the one, nothing else
        tallest = min(y for y, _ in plot)
        assert tallest >= 24 * scale - 2  # the million stays inside the plot
        assert any(x >= PLOT_LEFT * scale + 2 * slot for _, x in plot)  # the one is visible
        lane_png = page.get_by_test_id("lane").screenshot()
        assert len(pixels_of(lane_png, svg_charts.STATE_COLOURS["bad"])) > 100
        box = page.get_by_test_id("lane").bounding_box()
        assert box is not None and box["x"] + box["width"] <= DESKTOP["width"]
        assert "nothing in this window" in (page.get_by_test_id("nothing").text_content() or "")
    finally:
        context.close()
