"""The dashboard's pictures without a browser: the SVG drawing (hostile labels, empty and huge
counts), the shaping of counts and state changes into series and lanes, the store's counting
queries (SQLite; PostgreSQL too), and the /charts and /cameras pages with their roles."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from postgres_server import PostgresServer, postgres_server  # noqa: F401  (fixture)
from test_web_pages import jpeg, upload
from test_web_support import WebApp

from floor_agent.dashboard import charts, svg_charts
from floor_agent.dashboard.svg_charts import Lane, Series, Span
from floor_agent.dashboard.view_log import ViewThrottle
from floor_agent.protocol.event import utc_timestamp
from floor_agent.store import open_store

HOSTILE = '<script>alert("x")</script>&"\'><img src=x onerror=alert(1)>'
LONG = "a" * 200
SVG = "{http://www.w3.org/2000/svg}"


def parsed(svg: str) -> ET.Element:
    """The SVG as XML: it must be well formed, whatever the labels held."""
    return ET.fromstring(svg)


def texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]


# --- drawing ---------------------------------------------------------------------------------

def test_labels_with_markup_are_text_not_markup() -> None:
    svg = svg_charts.bar_chart([HOSTILE, "b"], [Series(HOSTILE, [3, 1])], HOSTILE, "c")
    root = parsed(svg)
    assert "<script" not in svg and "<img" not in svg
    assert not [e for e in root.iter() if e.tag in (f"{SVG}script", f"{SVG}img", "script")]
    assert any(t.startswith("<script") for t in texts(root))  # shown as text, escaped
    lanes = [Lane(HOSTILE, [Span(0, 1, "ok", HOSTILE)], link='/x?a="b"')]
    root = parsed(svg_charts.timeline(lanes, [(0.5, HOSTILE)], HOSTILE, "t"))
    assert not [e for e in root.iter() if e.tag.endswith("script")]


def test_a_200_character_label_is_cut_and_kept_whole_in_its_tooltip() -> None:
    root = parsed(svg_charts.timeline([Lane(LONG, [Span(0, 1, "bad")])], [], "t", "t"))
    label = next(t for t in root.iter(f"{SVG}text") if "a" * 10 in "".join(t.itertext()))
    assert label.find(f"{SVG}title").text == LONG  # type: ignore[union-attr]
    shown = "".join(label.itertext()).removeprefix(LONG)
    assert len(shown) == svg_charts.LABEL_CHARS and shown.endswith("\u2026")
    # the drawing's logical width is fixed: nothing can widen it
    assert parsed(svg_charts.bar_chart([LONG], [Series(LONG, [1])], LONG, "b")).get(
        "viewBox") == f"0 0 {svg_charts.WIDTH} 240"


def test_zero_events_say_so_and_one_event_is_one_bar() -> None:
    empty = parsed(svg_charts.bar_chart(["a", "b"], [Series("usb", [0, 0])], "t", "e",
                                        empty="no events in this window"))
    assert "no events in this window" in texts(empty)
    assert not list(empty.iter(f"{SVG}rect"))
    assert "nothing" in "".join(texts(parsed(svg_charts.bar_chart([], [], "t", "e"))))
    one = parsed(svg_charts.bar_chart(["a", "b"], [Series("usb", [0, 1])], "t", "o"))
    bars = [r for r in one.iter(f"{SVG}rect") if r.get("class") == "bar"]
    assert len(bars) == 1 and bars[0].get("fill") == svg_charts.COLOURS["usb"]


def test_a_million_count_bar_fits_and_small_ones_stay_visible() -> None:
    root = parsed(svg_charts.bar_chart(["a", "b", "c"], [Series("door", [1_000_000, 1, 0])],
                                       "t", "m"))
    bars = {r.get("x"): r for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"}
    heights = sorted(float(r.get("height", 0)) for r in bars.values())
    assert heights[0] >= svg_charts.MIN_BAR  # one event among a million is still drawn
    tallest = max(bars.values(), key=lambda r: float(r.get("height", 0)))
    assert float(tallest.get("y", -1)) >= 24 - 0.01  # not above the plot
    assert "1M" in texts(root)  # the axis says it compactly


def test_compact_counts() -> None:
    assert [svg_charts.compact(n) for n in (0, 999, 1000, 1500, 2_000_000, 3 * 10**9)] == [
        "0", "999", "1k", "1.5k", "2M", "3G"]


# --- shaping -----------------------------------------------------------------------------------

NOW = datetime(2026, 11, 29, 12, 5, tzinfo=UTC)


def test_buckets_labels_and_capabilities() -> None:
    w = charts.window(NOW, 24)
    labels = charts.buckets(w)
    assert len(labels) == 25 and labels[0] == "2026-11-28T12" and labels[-1] == "2026-11-29T12"
    assert charts.bucket_label(labels[-1]) == "12:00"
    assert charts.buckets(charts.window(NOW, 6))[-1] == "2026-11-29T12:0"
    assert charts.bucket_start("2026-11-29T12:3") == datetime(2026, 11, 29, 12, 30, tzinfo=UTC)
    series = charts.per_capability([("2026-11-29T12", "usb.blocked", 2),
                                    ("2026-11-29T12", "usb.allowed", 1),
                                    ("2026-11-29T11", "gap", 4),
                                    ("1999-01-01T00", "usb.blocked", 99)], labels)
    assert [(s.name, sum(s.values)) for s in series] == [("integrity", 4), ("usb", 3)]
    assert series[1].values[-1] == 3
    traffic = charts.door_traffic([("2026-11-28T07", "door.granted", 5),
                                   ("2026-11-29T07", "door.granted", 1),
                                   ("2026-11-29T23", "door.denied", 2)])
    assert traffic[0].values[7] == 6 and traffic[1].values[23] == 2


def ev(minutes_ago: int, kind: str, agent: str = "ws-1", **data: object) -> dict[str, object]:
    return {"agent_id": agent, "ts": utc_timestamp(NOW - timedelta(minutes=minutes_ago)),
            "kind": kind, "data": data, "subject": f"camera {data.get('camera_id', '')}"}


def test_workstation_lanes_follow_the_overview_and_put_problems_first() -> None:
    w = charts.window(NOW, 24)
    agents = [{"agent_id": "ws-ok", "role": "workstation"},
              {"agent_id": "ws-bad", "role": "workstation"},
              {"agent_id": "door-1", "role": "door"}]
    states = [ev(600, "net.verified", "ws-bad", checks=[]),
              ev(300, "net.breach", "ws-bad", new=["routes"]),
              ev(100, "usb.locked_down", "ws-ok")]
    devices = [ev(50, "usb.blocked", "ws-ok", name="Cruzer")]
    before = [("ws-ok", "netlock", "net.verified", utc_timestamp(NOW - timedelta(days=3)))]
    lanes, left_out = charts.workstation_lanes(agents, states, devices, before, w)
    assert left_out == 0
    assert [lane.label for lane in lanes] == ["ws-bad usb", "ws-bad isolation", "ws-ok usb",
                                              "ws-ok isolation"]
    isolation = lanes[1].spans
    assert [s.state for s in isolation] == ["ok", "bad"]
    assert isolation[1].end == 1.0 and abs(isolation[1].start - (1 - 300 / 1440)) < 1e-6
    assert [s.state for s in lanes[0].spans] == ["unknown"]
    assert [s.state for s in lanes[2].spans] == ["ok", "device"]
    assert [(s.state, s.start) for s in lanes[3].spans] == [("ok", 0.0)]  # since 3 days


def test_camera_lanes_pair_starts_and_ends() -> None:
    w = charts.window(NOW, 24)
    events = [ev(200, "cctv.motion_start", camera_id="c1"),
              ev(190, "cctv.motion_end", camera_id="c1"),
              ev(180, "cctv.motion_start", camera_id="other"),
              ev(100, "cctv.tamper", camera_id="c1", tamper="covered"),
              ev(60, "cctv.camera_offline", camera_id="c1"),
              ev(30, "cctv.camera_online", camera_id="c1", offline_ms=0),
              ev(10, "cctv.stream_gap", camera_id="c1", gap_ms=10**30)]
    segments = [("2026-11-29T11:0", "cctv.segment", 60), ("2026-11-29T11:1", "cctv.segment", 0)]
    before = [("box", "camera c1", "cctv.motion_start",
               utc_timestamp(NOW - timedelta(days=2)))]
    recording, motion, tamper, gaps = charts.camera_lanes("c1", "box", events, segments, before,
                                                          w, timedelta(minutes=10))
    assert len(recording.spans) == 1 and recording.spans[0].state == "recording"
    # open since before the window, ended at -190 min; then the start at -200 is already in
    # motion: one span from the window's start
    assert [(s.start, round(s.end, 4)) for s in motion.spans] == [(0.0, round(1 - 190 / 1440,
                                                                              4))]
    assert tamper.spans[0].note == "covered" and tamper.spans[0].end == 1.0
    assert [s.state for s in gaps.spans] == ["gap", "gap"]
    assert 0.0 <= gaps.spans[1].start <= gaps.spans[1].end  # a huge gap_ms is clamped


def test_a_refreshing_tile_is_recorded_once_per_interval() -> None:
    views = ViewThrottle(600)
    assert views.record("ann", "box", "c1", 0.0)
    assert not views.record("ann", "box", "c1", 599.0)
    assert views.record("bob", "box", "c1", 1.0) and views.record("ann", "box", "c2", 1.0)
    assert views.record("ann", "box", "c1", 600.0)


# --- the store -------------------------------------------------------------------------------

def fill(web: WebApp) -> None:
    """A workstation, a door and a camera box reporting; the dashboard's clock just after."""
    web.agent("ws-1")
    web.send("ws-1", [("usb.locked_down", "usb", "info", {"hubs": [], "changed": []}),
                      ("usb.blocked", "usb 1-2", "warning", {"name": HOSTILE, "id": "1:2"}),
                      ("net.breach", "netlock", "critical", {"new": ["routes"]})])
    web.agent("door-1", "door")
    web.send("door-1", [("door.granted", "door", "info", {"door_id": "main"}),
                        ("door.granted", "door", "info", {"door_id": "main"}),
                        ("door.denied", "door", "notice", {"door_id": HOSTILE})])
    web.agent("box-1", "cctv")
    web.send("box-1", [("cctv.segment", "camera cam1", "info", {"camera_id": "cam1", "seq": 1}),
                       ("cctv.segment", "camera cam1", "info", {"camera_id": "cam1", "seq": 2}),
                       ("cctv.tamper", "camera cam1", "critical", {"camera_id": "cam1",
                                                                   "tamper": "covered"}),
                       ("cctv.segment", "camera cam2", "info", {"camera_id": "cam2", "seq": 1})])
    web.now = datetime.now(UTC) + timedelta(seconds=1)


def check_queries(web: WebApp) -> None:
    store = web.store
    now = datetime.now(UTC)
    since, until = utc_timestamp(now - timedelta(hours=1)), utc_timestamp(now + timedelta(1))
    hour = utc_timestamp(now)[:13]
    counts = store.count_events(since, until)
    assert {(k, n) for b, k, n in counts if b >= hour[:10]} >= {
        ("door.granted", 2), ("door.denied", 1), ("cctv.segment", 3)}
    assert {k for _, k, _ in counts} >= {"usb.blocked", "net.breach", "cctv.tamper"}
    store.MAX_KINDS = 1  # type: ignore[misc]  # more kinds than that: rows read, same counts
    assert store.count_events(since, until) == counts
    cam1 = store.count_events(since, until, 15, ("cctv.segment",), "box-1", "camera cam1")
    assert sum(n for _, _, n in cam1) == 2 and all(len(b) == 15 for b, _, _ in cam1)
    assert store.count_events(until, utc_timestamp(now + timedelta(2))) == []
    alerts = store.count_alerts(since, until)
    assert {k for _, k, _ in alerts} >= {"usb.blocked", "net.breach", "cctv.tamper"}
    rows = store.timeline_events(("cctv.tamper", "cctv.segment"), since, until, "box-1",
                                 "camera cam1", limit=2)
    assert [r["kind"] for r in rows] == ["cctv.segment", "cctv.tamper"]  # newest 2, oldest first
    assert rows[1]["data"]["tamper"] == "covered"
    assert store.timeline_events((), since, until) == []
    before = store.last_kinds_before(("usb.locked_down", "net.breach"), until)
    assert {(a, k) for a, _, k, _ in before} == {("ws-1", "usb.locked_down"),
                                                ("ws-1", "net.breach")}
    assert store.last_kinds_before(("usb.locked_down",), since) == []
    with pytest.raises(ValueError, match="bucket"):
        store.count_events(since, until, 7)


def test_the_store_counts_by_bucket_on_sqlite(web: WebApp) -> None:
    fill(web)
    check_queries(web)


@pytest.mark.postgres
def test_the_store_counts_by_bucket_on_postgresql(tmp_path: Path,
                                                  postgres_server: PostgresServer  # noqa: F811
                                                  ) -> None:
    web = WebApp(tmp_path, postgres_server.new_database())
    web.now = datetime.now(UTC)
    try:
        fill(web)
        check_queries(web)
        html = web.logged_in("ann", "viewer").get("/charts").text
        assert 'data-testid="chart-doors"' in html and 'class="bar"' in html
    finally:
        web.close()


# --- the pages -------------------------------------------------------------------------------

def bars(html: str, testid: str) -> list[str]:
    svg = html[html.index(f'data-testid="{testid}"'):]
    return re.findall(r'class="bar"[^>]*data-series="([^"]*)"', svg[:svg.index("</svg>")])


def test_the_charts_page_draws_what_the_store_counted(web: WebApp) -> None:
    fill(web)
    # a workstation with a 200-character id, stored by other means than enrollment
    assert web.store.add_agent(LONG, "workstation", "k", "h", utc_timestamp(web.now))
    viewer = web.logged_in("ann", "viewer")
    html = viewer.get("/charts").text
    assert "<script>" not in html and " style=" not in html and "<img" not in html
    assert set(bars(html, "chart-events")) == {"usb", "net", "door", "cctv"}
    assert set(bars(html, "chart-doors")) == {"granted", "denied"}
    assert set(bars(html, "chart-alerts")) >= {"usb", "net", "cctv"}
    stations = html[html.index('data-testid="chart-workstations"'):]
    assert 'data-state="bad"' in stations and 'data-state="device"' in stations
    assert f"<title>{LONG} usb</title>{LONG[:21]}\u2026</text>" in stations  # cut, whole in the tip
    for hours in ("6", "168"):
        assert viewer.get(f"/charts?hours={hours}").status_code == 200
    assert viewer.get("/charts?hours=5").status_code == 422
    assert 'href="/charts"' in viewer.get("/").text  # in the navigation
    assert web.client().get("/charts", follow_redirects=False).status_code == 303


def test_no_events_at_all_still_draws_every_chart(web: WebApp) -> None:
    html = web.logged_in("ann", "viewer").get("/charts").text
    for text in ("no events in this window", "no alerts in this window",
                 "no door decisions in this window", "no workstations"):
        assert text in html


def test_camera_tiles_show_picture_state_and_timeline(web: WebApp) -> None:
    fill(web)
    web.send("box-1", [("cctv.motion_start", f"camera {HOSTILE}", "info",
                        {"camera_id": HOSTILE})])
    web.now = datetime.now(UTC) + timedelta(seconds=1)
    assert upload(web, web.client(), web.makers["box-1"], "cam1", jpeg()).status_code == 201
    viewer = web.logged_in("ann", "viewer")
    html = viewer.get("/cameras").text
    assert "<script>" not in html and "<img src=x" not in html
    tiles = html.split('data-testid="camera-tile"')[1:]
    assert len(tiles) == 3  # cam1, cam2 and the one named with markup
    cam1 = next(t for t in tiles if 'data-camera="cam1"' in t)
    assert 'data-testid="tile-snapshot" src="/cameras/box-1/cam1/snapshot.jpg?at=' in cam1
    assert ">tamper<" in cam1 and 'data-state="tamper"' in cam1
    assert 'data-state="recording"' in cam1
    fragment = viewer.get("/cameras/tiles").text
    assert fragment.count('data-testid="camera-tile"') == 3 and "<html" not in fragment
    detail = viewer.get("/cameras/box-1/cam1").text
    assert 'data-testid="camera-day"' in detail and 'data-state="tamper"' in detail
    # a tile refreshing its picture is one view on the trail, not one per refresh
    for _ in range(3):
        assert viewer.get("/cameras/box-1/cam1/snapshot.jpg?at=x").status_code == 200
    assert len(web.own_events("footage.viewed")) == 1
    assert web.client().get("/cameras/tiles", follow_redirects=False).status_code == 303


def test_the_store_opens_with_chart_queries(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    try:
        assert store.count_events("2026", "2027") == []
        assert store.count_alerts("2026", "2027", 10) == []
    finally:
        store.close()
