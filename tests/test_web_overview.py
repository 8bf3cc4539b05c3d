"""The overview's state derivation (pure) and the state topics ingest keeps, on plain data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from floor_agent.dashboard import camera_gaps, live, overview, timefmt
from floor_agent.protocol import topics
from floor_agent.protocol.event import utc_timestamp
from floor_agent.store.records import EventRow
from floor_agent.store.sql import latest_rows

NOW = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)


def ago(seconds: float) -> str:
    return utc_timestamp(NOW - timedelta(seconds=seconds))


def agent(agent_id: str, role: str = "workstation", checkpoint_age: float | None = 10,
          checkpoint_seq: int | None = 5) -> dict[str, Any]:
    return {"agent_id": agent_id, "role": role, "hostname": f"{agent_id}.floor",
            "checkpoint_received_at": None if checkpoint_age is None else ago(checkpoint_age),
            "checkpoint_seq": checkpoint_seq}


def latest(agent_id: str, kind: str, data: dict[str, Any], age: float = 5,
           seq: int = 1) -> dict[str, Any]:
    topic = topics.topic_of(kind, data)
    assert topic is not None, kind
    return {"agent_id": agent_id, "topic": topic, "seq": seq, "ts": ago(age), "kind": kind,
            "severity": "info", "data": data}


def check(verdict: str, severity: str, ident: str = "firewall.output") -> dict[str, Any]:
    return {"id": ident, "verdict": verdict, "severity": severity, "summary": "", "evidence": []}


def workstation(events: list[dict[str, Any]], alerts: tuple[dict[str, Any], ...] = (),
                **agent_fields: Any) -> overview.Workstation:
    view = overview.build([agent("ws-1", **agent_fields)], events, list(alerts), NOW, 180)
    assert len(view.workstations) == 1
    return view.workstations[0]


def test_a_healthy_workstation_is_ok_everywhere() -> None:
    ws = workstation([latest("ws-1", "usb.locked_down", {"hubs": ["usb1"]}),
                      latest("ws-1", "net.verified", {"pass": 9, "fail": 0, "unknown": 0,
                                                      "checks": [check("pass", "critical")]})])
    assert [c.state for c in (ws.usb, ws.isolation, ws.heartbeat, ws.chain)] == ["ok"] * 4


def test_nothing_known_is_unknown_never_ok() -> None:
    ws = workstation([], checkpoint_age=None, checkpoint_seq=None)
    assert [c.state for c in (ws.usb, ws.isolation, ws.heartbeat, ws.chain)] == ["unknown"] * 4


@pytest.mark.parametrize(("kind", "data", "state"), [
    ("usb.lockdown_failed", {"hubs": []}, "bad"),
    ("usb.rules_invalid", {"error": "line 3"}, "bad"),
    ("usb.locked_down", {"hubs": ["usb1"]}, "ok"),
])
def test_usb_lock(kind: str, data: dict[str, Any], state: str) -> None:
    assert workstation([latest("ws-1", kind, data)]).usb.state == state


@pytest.mark.parametrize(("kind", "data", "state"), [
    ("net.breach", {"new": ["interfaces.forbidden"]}, "bad"),
    ("net.recovered", {"recovered": ["dns"], "still_failing": []}, "ok"),
    ("net.recovered", {"recovered": ["dns"], "still_failing": ["firewall.output"]}, "bad"),
    ("net.verified", {"fail": 1, "unknown": 0, "checks": [check("fail", "critical")]}, "bad"),
    ("net.verified", {"fail": 1, "unknown": 0, "checks": [check("fail", "warning")]}, "ok"),
    ("net.verified", {"fail": 0, "unknown": 2, "checks": [check("unknown", "critical")]},
     "unknown"),
    ("net.enforce_failed", {"error": "nft"}, "bad"),
    ("net.enforced", {"table": "inet floor"}, "unknown"),
])
def test_isolation(kind: str, data: dict[str, Any], state: str) -> None:
    assert workstation([latest("ws-1", kind, data)]).isolation.state == state


def test_heartbeat_goes_bad_once_the_checkpoint_is_stale() -> None:
    assert workstation([], checkpoint_age=179).heartbeat.state == "ok"
    assert workstation([], checkpoint_age=181).heartbeat.state == "bad"


def test_chain_is_bad_with_an_open_chain_break() -> None:
    alert = {"agent_id": "ws-1", "kind": "fork", "severity": "critical"}
    assert workstation([], (alert,)).chain == overview.Cell("bad", "fork")
    other = {"agent_id": "ws-2", "kind": "gap", "severity": "critical"}
    assert workstation([], (other,)).chain.state == "ok"


def test_alerts_by_severity_counts_every_severity() -> None:
    alerts = [{"agent_id": None, "kind": "gap", "severity": s}
              for s in ("critical", "critical", "warning")]
    counts = overview.alerts_by_severity(alerts)
    assert counts["critical"] == 2 and counts["warning"] == 1 and counts["info"] == 0
    assert list(counts)[0] == "critical"


def test_doors_take_their_newest_state_and_access() -> None:
    events = [latest("door-ctl", "door.forced", {"door_id": "lab"}, seq=3),
              latest("door-ctl", "door.relocked", {"door_id": "main"}, seq=4),
              latest("door-ctl", "door.granted", {"door_id": "main", "person_id": "p-7",
                                                  "uid": "04aa"}, seq=5)]
    view = overview.build([agent("door-ctl", "door")], events, [], NOW, 180)
    doors = {d.door: d for d in view.doors}
    assert (doors["lab"].state, doors["lab"].cls) == ("forced", "bad")
    assert (doors["main"].state, doors["main"].cls) == ("locked", "ok")
    assert "p-7" in doors["main"].last_access


def camera(events: list[dict[str, Any]], checkpoint_age: float = 10) -> overview.Camera:
    view = overview.build([agent("box", "cctv", checkpoint_age)], events, [], NOW, 180)
    assert len(view.cameras) == 1
    return view.cameras[0]


def cam(kind: str, age: float = 5, **data: Any) -> dict[str, Any]:
    return latest("box", kind, {"camera_id": "cam1", **data}, age)


def test_camera_states_by_priority() -> None:
    segment = cam("cctv.segment", seq=4)
    assert camera([segment]).state == "recording"
    assert camera([cam("cctv.segment", age=600, seq=4)]).state == "unknown"
    assert camera([segment, cam("cctv.motion_start")]).state == "motion"
    assert camera([segment, cam("cctv.motion_end")]).state == "recording"
    assert camera([segment, cam("cctv.motion_start"), cam("cctv.tamper", tamper="covered")]
                  ).state == "tamper"
    assert camera([segment, cam("cctv.tamper_cleared", tamper="covered")]).state == "recording"
    offline = camera([segment, cam("cctv.tamper", tamper="covered"),
                      cam("cctv.camera_offline", reason="timeout")])
    assert (offline.state, offline.cls, offline.detail) == ("offline", "bad", "timeout")
    assert camera([segment, cam("cctv.camera_online", offline_ms=0)]).state == "recording"
    assert camera([segment], checkpoint_age=600).state == "offline"  # the box went silent


def test_topics_of_state_events_only() -> None:
    assert topics.topic_of("usb.blocked", "{}") is None
    assert topics.topic_of("usb.locked_down", "{}") == "usb.lock"
    assert topics.topic_of("door.opened", '{"door_id": "main"}') == "door:main"
    assert topics.topic_of("door.opened", "{}") is None
    assert topics.topic_of("cctv.tamper", {"camera_id": "c"}) == "cam:c:tamper"


def test_latest_rows_keep_the_newest_per_topic_of_a_batch() -> None:
    def row(seq: int, kind: str, data: dict[str, Any]) -> EventRow:
        return EventRow("box", seq, "boot", ago(100 - seq), kind, "info", 1, "s",
                        orjson.dumps(data).decode(), b"h" * 32, ago(0))

    rows = [row(1, "cctv.motion_start", {"camera_id": "a"}),
            row(2, "cctv.segment", {"camera_id": "a"}),
            row(3, "cctv.motion_end", {"camera_id": "a"}),
            row(4, "test.other", {})]
    kept = {r[1]: (r[2], r[4]) for r in latest_rows(rows)}
    assert kept == {"cam:a:motion": (3, "cctv.motion_end"), "cam:a:segment": (2, "cctv.segment")}


def test_workstations_with_problems_come_first() -> None:
    agents = [agent("ws-a"), agent("ws-b", checkpoint_age=None), agent("ws-c")]
    events = [latest(a, "usb.locked_down", {}) for a in ("ws-a", "ws-b", "ws-c")]
    events += [latest(a, "net.verified", {"fail": 0, "unknown": 0, "checks": []})
               for a in ("ws-a", "ws-b", "ws-c")]
    events.append(latest("ws-c", "usb.lockdown_failed", {}, seq=2))
    events = [e for e in events if not (e["agent_id"] == "ws-c" and e["seq"] == 1
                                        and e["kind"] == "usb.locked_down")]
    view = overview.build(agents, events, [], NOW, 180)
    assert [w.agent_id for w in view.workstations] == ["ws-c", "ws-b", "ws-a"]


def test_times_show_compactly_and_other_text_unchanged() -> None:
    assert timefmt.short_time("2026-11-29T14:03:05.123456Z") == "11-29 14:03:05"
    assert timefmt.short_time("yesterday") == "yesterday"
    assert timefmt.short_time(None) == ""


def test_doors_keep_the_full_stamps_for_the_title() -> None:
    events = [latest("door-ctl", "door.relocked", {"door_id": "main"}, age=30, seq=4),
              latest("door-ctl", "door.granted", {"door_id": "main", "person_id": "p-7"},
                     age=10, seq=5)]
    (door,) = overview.build([agent("door-ctl", "door")], events, [], NOW, 180).doors
    assert (door.since, door.last_ts) == (ago(30), ago(10))
    assert door.last_access == "granted p-7"


def test_only_state_topics_count_as_overview_changes() -> None:
    def row(kind: str, data: dict[str, Any]) -> EventRow:
        return EventRow("ws-1", 1, "boot", ago(1), kind, "info", 1, "s",
                        orjson.dumps(data).decode(), b"h", ago(0))

    quiet = [row("usb.allowed", {"id": "k"}), row("agent.started", {}),
             row("door.state", {"door_id": "front"})]
    assert live.state_changes(quiet) == 0
    moving = [*quiet, row("usb.locked_down", {}), row("door.forced", {"door_id": "lab"})]
    assert live.state_changes(moving) == 2


def cctv(kind: str, age: float, seq: int, **data: Any) -> dict[str, Any]:
    return {"kind": kind, "ts": ago(age), "seq": seq, "data": {"camera_id": "cam1", **data}}


def test_recording_gaps_are_only_real_gaps_with_how_long() -> None:
    newest_first = [
        cctv("cctv.camera_online", 10, 6, offline_ms=0),       # after the offline: 50 s
        cctv("cctv.camera_offline", 60, 5, reason="timeout"),
        cctv("cctv.stream_gap", 100, 4, gap_ms=900),
        cctv("cctv.camera_online", 200, 3, offline_ms=125_000),
        cctv("cctv.segment", 300, 2, path="seg-1.mp4"),
        cctv("cctv.camera_online", 400, 1, offline_ms=0),      # the first start: no gap
    ]
    gaps = [(e["seq"], lasted) for e, lasted in camera_gaps.recording_gaps(newest_first)]
    assert gaps == [(6, "50 s"), (5, ""), (4, "900 ms"), (3, "2 min 5 s")]
