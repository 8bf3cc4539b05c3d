"""Footage's pure parts and its remux: which cameras cover an alert, which segments a clip
takes from the events (hostile event data skipped), where central storage keeps them (the
offload's own rule), and one MP4 from real H.264 segments without re-encoding."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import av
import numpy as np
import pytest
import yaml

from floor_agent.cctv.index import SegmentRecord
from floor_agent.cctv.model import GENESIS_SHA256, Segment
from floor_agent.cctv.offload import remote_path_of
from floor_agent.cctv.recorder import segment_event
from floor_agent.collector import footage
from floor_agent.collector.footage_config import FootageSettings
from floor_agent.config.loader import ConfigError
from floor_agent.dashboard import pages_footage
from floor_agent.dashboard.pages_footage import sweep_clips
from floor_agent.protocol.event import utc_timestamp
from floor_agent.roles.config import check_file
from floor_agent.store.interface import EventPage, EventQuery

T0 = datetime(2026, 12, 7, 3, 0, 0, tzinfo=UTC)
SETTINGS = FootageSettings.model_validate({
    "enabled": True, "before_seconds": 20, "after_seconds": 10,
    "cameras": [
        {"agent_id": "box-1", "camera_id": "hall", "doors": ["front"], "zones": ["ground"]},
        {"agent_id": "box-1", "camera_id": "stairs", "zones": ["ground", "stairs"]},
        {"agent_id": "box-2", "camera_id": "yard", "doors": ["front", "gate"]},
        {"agent_id": "box-2", "camera_id": "roof", "zones": ["roof"]}]})


def ids(cover: footage.Coverage | None) -> list[str]:
    assert cover is not None
    return [f"{c.agent_id}/{c.camera_id}" for c in cover.cameras]


@pytest.mark.parametrize("kind", sorted(footage.DOOR_KINDS))
def test_a_door_alert_is_covered_by_the_cameras_listing_the_door(kind: str) -> None:
    cover = footage.coverage(SETTINGS, kind, "door-ctl-1", {"door_id": "front"},
                             "2026-12-07T03:00:00.000000Z")
    assert ids(cover) == ["box-1/hall", "box-2/yard"]
    assert cover is not None and cover.place == "door front"
    assert (cover.start, cover.at, cover.end) == (
        T0 - timedelta(seconds=20), T0, T0 + timedelta(seconds=10))


def test_a_camera_alert_is_covered_by_the_camera_and_its_zone() -> None:
    cover = footage.coverage(SETTINGS, "cctv.tamper", "box-1", {"camera_id": "hall"},
                             "2026-12-07T03:00:00.000000Z")
    assert ids(cover) == ["box-1/hall", "box-1/stairs"]
    assert ids(footage.coverage(SETTINGS, "cctv.camera_offline", "box-2",
                                {"camera_id": "roof"}, "2026-12-07T03:00:00.000000Z")) == \
        ["box-2/roof"]


@pytest.mark.parametrize(("kind", "agent", "data", "ts"), [
    ("door.granted", "door-ctl-1", {"door_id": "front"}, "2026-12-07T03:00:00.000000Z"),
    ("usb.blocked", "ws-1", {"door_id": "front"}, "2026-12-07T03:00:00.000000Z"),
    ("door.forced", "door-ctl-1", {"door_id": "back"}, "2026-12-07T03:00:00.000000Z"),
    ("door.forced", "door-ctl-1", {"door_id": "../front"}, "2026-12-07T03:00:00.000000Z"),
    ("door.forced", "door-ctl-1", {"door_id": ["front"]}, "2026-12-07T03:00:00.000000Z"),
    ("door.forced", "door-ctl-1", {}, "2026-12-07T03:00:00.000000Z"),
    ("door.forced", "door-ctl-1", {"door_id": "front"}, "yesterday"),
    ("door.forced", None, {"door_id": "front"}, "2026-12-07T03:00:00.000000Z"),
    ("cctv.tamper", "box-2", {"camera_id": "hall"}, "2026-12-07T03:00:00.000000Z"),
    ("cctv.segment", "box-1", {"camera_id": "hall"}, "2026-12-07T03:00:00.000000Z"),
])
def test_no_clip_for_other_kinds_places_or_malformed_events(
        kind: str, agent: str | None, data: dict[str, Any], ts: str) -> None:
    assert footage.coverage(SETTINGS, kind, agent, data, ts) is None


def test_nothing_when_footage_is_off() -> None:
    off = SETTINGS.model_copy(update={"enabled": False})
    assert footage.coverage(off, "door.forced", "d", {"door_id": "front"},
                            "2026-12-07T03:00:00.000000Z") is None


def test_a_camera_listed_twice_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        FootageSettings.model_validate({"cameras": [
            {"agent_id": "b", "camera_id": "c"}, {"agent_id": "b", "camera_id": "c"}]})
    with pytest.raises(ValueError):
        FootageSettings.model_validate({"cameras": [{"agent_id": "b", "camera_id": "../c"}]})


def seg(seq: int, start: datetime, camera: str = "hall", prev: str = GENESIS_SHA256,
        sha: str | None = None) -> Segment:
    name = f"{start:%Y%m%dT%H%M%S}.{start.microsecond // 1000:03d}Z.mp4"
    return Segment(camera, seq, f"{camera}/{start:%Y-%m-%d}/{start:%H}/{name}", start, 10.0,
                   1000, sha or hashlib.sha256(str(seq).encode()).hexdigest(), prev, 100)


def event(segment: Segment, agent: str = "box-1", **changes: Any) -> dict[str, Any]:
    return {"agent_id": agent, "kind": "cctv.segment",
            "data": segment_event(segment) | changes}


def test_segments_of_takes_the_cameras_segments_overlapping_the_range() -> None:
    camera = SETTINGS.cameras[0]
    segs = [seg(n, T0 + timedelta(seconds=10 * (n - 1))) for n in range(1, 7)]
    events = [event(s) for s in reversed(segs)]
    events += [event(seg(9, T0, camera="stairs")), event(seg(10, T0), agent="box-2"),
               {"agent_id": "box-1", "kind": "cctv.tamper", "data": {"camera_id": "hall"}}]
    got = footage.segments_of(events, camera, T0 + timedelta(seconds=15),
                              T0 + timedelta(seconds=35))
    assert [s.seq for s in got] == [2, 3, 4]
    assert got[0] == segs[1]


@pytest.mark.parametrize("changes", [
    {"path": "../../../etc/passwd"}, {"path": "hall/2026-12-07/03/evil.sh"},
    {"sha256": "z" * 64}, {"sha256": "AB" * 32}, {"prev_sha256": "0" * 63},
    {"seq": 0}, {"seq": "1"}, {"seq": True}, {"size": -1}, {"duration_ms": 1.5},
    {"start": "not a time"}, {"start": None}, {"camera_id": "../hall"}])
def test_hostile_segment_event_data_is_skipped(changes: dict[str, Any]) -> None:
    camera = SETTINGS.cameras[0]
    bad = event(seg(1, T0), **changes)
    assert footage.segments_of([bad], camera, T0 - timedelta(hours=1),
                               T0 + timedelta(hours=1)) == []


def test_the_alerts_moment_in_the_clip() -> None:
    a = seg(1, T0)  # 10 s each
    b = seg(2, T0 + timedelta(seconds=10))
    c = seg(3, T0 + timedelta(seconds=60))  # after a 40 s gap, closed up in the clip
    at = footage.offset_in_clip
    assert at([a, b, c], T0 - timedelta(seconds=5)) == 0.0
    assert at([a, b, c], T0 + timedelta(seconds=3.5)) == 3.5
    assert at([a, b, c], T0 + timedelta(seconds=12)) == 12.0
    assert at([a, b, c], T0 + timedelta(seconds=30)) == 20.0  # in the gap: where it closes
    assert at([a, b, c], T0 + timedelta(seconds=61)) == 21.0
    assert at([a, b, c], T0 + timedelta(hours=1)) == 30.0
    assert at([], T0) == 0.0


def test_the_remote_path_is_the_offloads() -> None:
    for start in (T0, T0 + timedelta(hours=21, milliseconds=7)):
        s = seg(3, start)
        assert footage.remote_path("central", s) == remote_path_of("central", SegmentRecord(s))


def encode(path: Path, frames: int, shade: int) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        stream.codec_context.gop_size = 10
        stream.codec_context.options = {"bf": "0", "preset": "ultrafast"}
        for i in range(frames):
            img = np.full((96, 160, 3), shade, dtype=np.uint8)
            img[:, (i * 7) % 140:(i * 7) % 140 + 20] = 230
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            for pkt in stream.encode(frame):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)


def packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as src:
        return [bytes(p) for p in src.demux(video=0) if p.size]


def test_make_clip_copies_every_packet_into_one_mp4_with_its_index_first(tmp_path: Path
                                                                          ) -> None:
    files = []
    for n in (1, 2, 3):
        path = tmp_path / f"{n}.mp4"
        encode(path, 20, 40 * n)
        files.append((seg(n, T0 + timedelta(hours=n)), path))  # gaps between them: closed up
    clip = footage.make_clip(files, tmp_path / "clip.mp4")
    assert clip.codec == "h264" and clip.plays_in_browser and (clip.width, clip.height) == (
        160, 96)
    assert clip.packets == 60 and 5.5 <= clip.seconds <= 6.5
    # never re-encoded: the clip's packets are the segments' packets, byte for byte
    assert packets(clip.path) == [p for _, f in files for p in packets(f)]
    data = clip.path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # faststart: plays while it loads
    assert clip.sha256 == hashlib.sha256(data).hexdigest()
    assert os.stat(clip.path).st_mode & 0o777 == 0o600
    with av.open(str(clip.path)) as check:
        decoded = sum(1 for _ in check.decode(video=0))
    assert decoded == 60


def test_make_clip_refuses_what_is_not_video(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    with pytest.raises(footage.FootageError, match="seq 1"):
        footage.make_clip([(seg(1, T0), junk)], tmp_path / "clip.mp4")
    assert not (tmp_path / "clip.mp4").exists()


def test_old_clips_are_swept(tmp_path: Path) -> None:
    settings = FootageSettings(clip_dir=tmp_path, clip_minutes=5)
    old, new = tmp_path / "old.mp4", tmp_path / "new.mp4"
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    (tmp_path / ".work-1").mkdir()
    past = time.time() - 600
    os.utime(old, (past, past))
    os.utime(tmp_path / ".work-1", (past, past))
    assert sweep_clips(settings) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["new.mp4"]


class PagedStore:
    """query_events as the store pages it: newest first, `limit` at a time, by cursor."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = sorted(events, key=lambda e: (e["ts"], e["id"]), reverse=True)
        self.queries: list[EventQuery] = []

    def query_events(self, query: EventQuery) -> EventPage:
        self.queries.append(query)
        rows = [e for e in self.events if query.since <= e["ts"] <= query.until
                and (query.cursor is None or (e["ts"], e["id"]) < query.cursor)]
        page = EventPage(rows[:query.limit])
        if len(rows) > query.limit:
            page.next_cursor = (rows[query.limit - 1]["ts"], rows[query.limit - 1]["id"])
        return page


def test_every_page_of_segment_events_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pages_footage, "PAGE", 7)
    camera = SETTINGS.cameras[0]
    events = []
    for n in range(1, 61):  # 60 segments of 1 s of four cameras of one box: 240 events
        for other, name in enumerate(("hall", "stairs", "lobby", "dock")):
            start = T0 - timedelta(seconds=30) + timedelta(seconds=n)
            e = event(seg(n, start, camera=name))
            e |= {"id": n * 4 + other, "ts": utc_timestamp(start + timedelta(seconds=1))}
            events.append(e)
    store = PagedStore(events)
    cover = footage.coverage(SETTINGS, "door.forced", "d", {"door_id": "front"},
                             utc_timestamp(T0))
    assert cover is not None
    found = pages_footage._segment_events(SimpleNamespace(store=store),  # type: ignore[arg-type]
                                          camera, cover)
    assert len(found) == 240 and len(store.queries) == 35
    got = footage.segments_of(found, camera, cover.start, cover.end)
    assert [s.seq for s in got] == list(range(1, 41))  # 10 s segments up to T0 + 10 s


def test_config_check_names_the_footage_settings(tmp_path: Path) -> None:
    path = tmp_path / "collector.yaml"
    path.write_text("role: collector\n")
    assert "footage behind alerts off" in check_file(path)
    path.write_text(yaml.safe_dump({"role": "collector", "collector": {"dashboard": {"footage": {
        "enabled": True, "sftp": {"host": "store.floor", "user": "reader"},
        "cameras": [{"agent_id": "box-1", "camera_id": "cam1", "doors": ["front"]}]}}}}))
    said = check_file(path)
    assert "footage behind alerts from 1 camera(s), 30 s before to 30 s after, read from " \
        "reader@store.floor:22 'footage'" in said
    path.write_text(yaml.safe_dump({"role": "collector", "collector": {"dashboard": {
        "footage": {"enabled": True}}}}))
    with pytest.raises(ConfigError, match="at least one camera"):
        check_file(path)


def test_the_footage_example_in_collector_yaml_is_valid() -> None:
    lines = (Path(__file__).parent.parent / "config" / "collector.yaml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "# --- footage example" in line)
    end = next(i for i, line in enumerate(lines) if "# --- end of the footage example" in line)
    example = yaml.safe_load("\n".join(line.replace("# ", "", 1)[6:]
                                       for line in lines[start + 1:end]))
    settings = FootageSettings.model_validate({"enabled": True, **example})
    assert [(c.camera_id, c.doors, c.zones) for c in settings.cameras] == [
        ("cam1", ["front"], ["hall-a"]), ("cam2", [], ["hall-a"])]
    cover = footage.coverage(settings, "door.forced", "door-1", {"door_id": "front"},
                             "2026-12-07T03:00:00.000000Z")
    assert cover is not None and [c.camera_id for c in cover.cameras] == ["cam1"]
