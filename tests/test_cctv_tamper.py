"""cctv tamper: covered, sprayed, defocused and turned alarmed within about a second of stream
time and recovered; frozen after its window on a stopped clock or the stream's own evidence
(repeated packets, stalled timestamps), never on a still picture alone; light and motion are
not tampering; frozen only on a live stream; bad frames a clear error. The realistic streams
(10 minutes of still, clocked and night scenes) are in test_cctv_tamper_realistic.py."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest

from floor_agent.cctv.config import TamperConfig
from floor_agent.cctv.model import SmallFrame
from floor_agent.cctv.tamper import (
    EVIDENCE,
    KINDS,
    PacketFacts,
    TamperEvent,
    TamperState,
    observe_packet,
    overlay_cells,
    reference_ready,
    step,
)
from floor_agent.simulated.camera_scenes import (
    Clock,
    Covered,
    Defocused,
    Frozen,
    Happening,
    Lighting,
    MovingObject,
    Scene,
    SceneFrame,
    Script,
    Turned,
)

FPS = 10
# the frozen window lowered from its 30 s default to keep these scenes short
CONFIG = TamperConfig(frozen_seconds=5.0)
FRAME = 1 / FPS
WALKER = MovingObject("walker", 0.5, 14, (-0.1, 0.6), (1.1, 0.5))


def run(frames: Iterable[SceneFrame], config: TamperConfig = CONFIG,
        alive: Iterable[bool] | None = None) -> tuple[TamperState, list[TamperEvent]]:
    state = TamperState()
    events: list[TamperEvent] = []
    alive_flags = iter(alive) if alive is not None else None
    for frame in frames:
        packets_alive = True if alive_flags is None else next(alive_flags)
        state, new = step(state, SmallFrame("cam-1", frame.t, frame.grey, packets_alive), config)
        events.extend(new)
    return state, events


def scene_frames(*happenings: Happening, duration: float = 14, seed: int = 5,
                 size: tuple[int, int] = (256, 144)) -> list[SceneFrame]:
    return list(Scene(size[0], size[1], FPS, seed).frames(Script(duration, (WALKER,
                                                                            *happenings))))


@pytest.mark.parametrize(("kind", "happening", "seed", "size"), [
    ("covered", Covered(4, 9), 5, (256, 144)),
    ("covered", Covered(4, 9, level=140), 6, (160, 90)),  # sprayed: uniform mid grey
    ("defocused", Defocused(4, 9), 5, (256, 144)),
    ("defocused", Defocused(4, 9, radius=0.02), 8, (160, 90)),
    ("turned", Turned(4, 9), 5, (256, 144)),
    ("turned", Turned(4, 9, shift=(0.7, 0.0)), 9, (160, 90)),
    ("turned", Turned(4, 9, shift=(0.45, 0.0)), 5, (256, 144)),  # panned by 45 %
    ("turned", Turned(4, 9, shift=(0.0, 0.45)), 10, (160, 90)),  # tilted by 45 %
], ids=["covered", "sprayed", "defocused", "defocused-mild", "turned", "turned-sideways",
        "panned-45", "tilted-45"])
def test_each_kind_alarms_within_about_a_second_and_recovers(
        kind: str, happening: Happening, seed: int, size: tuple[int, int]) -> None:
    state, events = run(scene_frames(happening, seed=seed, size=size))
    assert [(e.kind, e.phase) for e in events] == [(kind, "start"), (kind, "end")]
    start, end = events
    alarm_after = start.t - happening.start
    recovery_after = end.t - happening.end
    print(f"tamper {kind} {size[0]}x{size[1]}: alarmed {alarm_after:.1f} s after it began, "
          f"recovered {recovery_after:.1f} s after it ended ({start.detail})")
    assert CONFIG.hold_seconds <= alarm_after <= CONFIG.hold_seconds + FRAME + 1e-9
    assert CONFIG.hold_seconds <= recovery_after <= CONFIG.hold_seconds + FRAME + 1e-9
    assert all(isinstance(v, float) for v in start.detail.values())
    assert {"mean", "level", "spread"} <= set(start.detail)
    assert start.severity == "critical" and start.evidence is None
    assert state.active == frozenset()


def test_a_still_picture_alone_is_not_frozen() -> None:
    """An empty room's picture is still too: without a clock that stops or the stream's
    evidence, a frozen image raises nothing, unless picture-only evidence is asked for."""
    frames = scene_frames(Frozen(4, 20), duration=24)
    _, events = run(frames)
    assert events == []
    config = TamperConfig(frozen_seconds=5.0, frozen_picture_only_seconds=5.0)
    _, events = run(frames, config)
    assert [(e.kind, e.phase, e.evidence, e.severity) for e in events] == [
        ("frozen", "start", "picture", "warning"), ("frozen", "end", "picture", "warning")]
    assert events[0].t - 4 == pytest.approx(5.0, abs=FRAME)


def clocked(*happenings: Happening, duration: float, seed: int = 5) -> list[SceneFrame]:
    """The scene with the camera's burned-in clock."""
    return list(Scene(256, 144, FPS, seed).frames(Script(duration, (Clock(), *happenings))))


def test_a_freeze_alarms_when_the_clock_stops_with_the_picture() -> None:
    frames = clocked(Frozen(20, 40), duration=50)
    state, events = run(frames)
    assert overlay_cells(state) > 0  # the clock's ticking cells were learned
    assert [(e.kind, e.phase, e.evidence) for e in events] == [
        ("frozen", "start", "clock"), ("frozen", "end", "clock")]
    start, end = events
    print(f"frozen on a stopped clock: alarmed {start.t - 20:.1f} s after it froze "
          f"(window {CONFIG.frozen_seconds} s), cleared {end.t - 40:.1f} s after ({start.detail})")
    assert start.t - 20 == pytest.approx(CONFIG.frozen_seconds, abs=FRAME + 1e-9)
    assert start.severity == "critical"
    assert start.detail["clock_stopped_seconds"] >= CONFIG.frozen_seconds
    # live again: the clock's next tick (at most a second) and the hold
    assert CONFIG.hold_seconds <= end.t - 40 <= 1.0 + CONFIG.hold_seconds + FRAME + 1e-9
    assert state.active == frozenset()


def packets(frames: list[SceneFrame], frozen_from: float | None = None, *,
            stall: bool = True, repeat: bool = True) -> list[PacketFacts]:
    """A packet per frame as a camera sends them; from `frozen_from` on, the frozen camera
    repeats one packet (`repeat`) and its timestamps stand (`stall`), while packets still
    arrive in real time."""
    out = []
    for i, frame in enumerate(frames):
        frozen = frozen_from is not None and frame.t >= frozen_from
        pts = frozen_from if frozen and stall else frame.t
        digest = b"frozen" if frozen and repeat else i.to_bytes(4, "big")
        out.append(PacketFacts(1000.0 + frame.t, pts, 900 if frozen and repeat else 900 + i,
                               digest))
    return out


@pytest.mark.parametrize(("stall", "repeat"), [(True, True), (True, False), (False, True)],
                         ids=["repeated-and-stalled", "stalled-timestamps", "repeated-packets"])
def test_a_freeze_alarms_on_the_stream_s_own_evidence(stall: bool, repeat: bool) -> None:
    """No clock in the picture: the stream says it (the frames stop reaching the analysis
    when the timestamps stand: packets alone decide)."""
    frames = scene_frames(duration=30)
    facts = packets(frames, 8.0, stall=stall, repeat=repeat)
    state, events = TamperState(), []
    for frame, fact in zip(frames, facts, strict=True):
        state, new = observe_packet(state, fact, CONFIG)
        events += new
        if frame.t < 8.0:  # the picture stops reaching the analysis with the freeze
            state, new = step(state, SmallFrame("cam-1", frame.t, frame.grey), CONFIG)
            events += new
    assert [(e.kind, e.phase, e.evidence) for e in events] == [("frozen", "start", "stream")]
    frozen_at = next(f.arrival for f in facts if f.arrival - 1000.0 >= 8.0)
    detail = events[0].detail
    seconds = detail.get("stalled_seconds", detail.get("repeated_seconds"))
    assert seconds is not None and seconds >= CONFIG.frozen_seconds
    assert seconds - CONFIG.frozen_seconds <= FRAME + 1e-9
    assert frozen_at - 1000.0 == pytest.approx(8.0)
    assert state.active == {"frozen"}
    # the camera comes back: new packets, timestamps advancing again
    for i in range(20):
        t = 30.0 + i * FRAME
        state, new = observe_packet(state, PacketFacts(1000.0 + t, t, 800 + i,
                                                       b"live%d" % i), CONFIG)
        events += new
    assert [(e.kind, e.phase) for e in events] == [("frozen", "start"), ("frozen", "end")]
    assert state.active == frozenset()


def test_live_packets_are_no_evidence() -> None:
    """B-frames (timestamps out of order one packet at a time), equal sizes, a wall clock
    stepped back: none of it is a frozen stream."""
    state, events = TamperState(), []
    for i in range(600):
        pts = i / 10 - (0.15 if i % 3 == 2 else 0.0)  # a B-frame shown before its P
        arrival = 1000.0 + i / 10 - (5.0 if i >= 300 else 0.0)  # NTP stepped back once
        state, new = observe_packet(state, PacketFacts(arrival, pts, 1000, b"%d" % i),
                                    CONFIG)
        events += new
    assert events == [] and state.active == frozenset()


def test_the_alarm_waits_for_hold_seconds() -> None:
    _, brief = run(scene_frames(Covered(4, 4.6), duration=8))
    assert brief == []  # covered for 0.6 s: under the 1 s hold
    _, longer = run(scene_frames(Covered(4, 8)), TamperConfig(hold_seconds=3.0))
    assert longer[0].kind == "covered" and longer[0].t == pytest.approx(7.0)


@pytest.mark.parametrize(("name", "happenings"), [
    ("lights-on", (Lighting(0, 6, gain=0.6, offset=0),)),
    ("lights-off", (Lighting(6, gain=0.5, offset=0),)),
    ("ir-switch", (Lighting(6, gain=1.3, offset=30),)),
    ("people-crossing", (
        MovingObject("cart", 3, 9, (1.15, 0.4), (-0.15, 0.45), size=(0.2, 0.2), level=30),
        MovingObject("slow-one", 5, 13, (0.2, -0.2), (0.7, 1.2), size=(0.08, 0.2)),
        MovingObject("another", 8, 12, (-0.1, 0.3), (1.1, 0.3), level=20))),
])
def test_no_alarm_for_light_changes_or_ordinary_motion(name: str,
                                                       happenings: tuple[Happening, ...]) -> None:
    state, events = run(scene_frames(*happenings))
    assert reference_ready(state)
    assert events == [], name


def test_frozen_only_while_packets_alive() -> None:
    frames = clocked(Frozen(20, 40), duration=40)
    # packets stop with the picture: the stream is dead, that is "offline", not tampering
    _, dead = run(frames, alive=[f.t < 20 for f in frames])
    assert dead == []
    # the picture freezes while packets arrive until t=30, then they stop too
    state, events = run(frames, alive=[f.t < 30 for f in frames])
    assert [(e.kind, e.phase) for e in events] == [("frozen", "start")]
    assert events[0].t - 20 <= CONFIG.frozen_seconds + FRAME
    assert events[0].detail["still_seconds"] >= CONFIG.frozen_seconds
    assert state.active == {"frozen"}  # no recovery claimed while the stream is dead


def test_a_camera_that_starts_covered_builds_its_reference_once_uncovered() -> None:
    frames = scene_frames(Covered(0, 3), Defocused(8, 12))
    _, events = run(frames)
    assert [(e.kind, e.phase) for e in events] == [
        ("covered", "start"), ("covered", "end"), ("defocused", "start"), ("defocused", "end")]
    assert events[0].t == pytest.approx(1.0)
    assert events[2].t - 8 <= 2.0


def frame_of(grey: object, t: float = 0.0, camera: str = "cam-1") -> SmallFrame:
    return SmallFrame(camera, t, grey)


@pytest.mark.parametrize(("grey", "words"), [
    (np.zeros((0, 0), np.uint8), "empty"),
    (np.zeros((90, 160), np.float64), "dtype float64"),
    (np.zeros((90, 160, 3), np.uint8), "3 dimensions"),
    ("not a frame", "grey is a str"),
    (np.zeros((720, 1280), np.uint8), "taller than 360"),
])
def test_bad_frames_are_a_clear_value_error(grey: object, words: str) -> None:
    with pytest.raises(ValueError, match=words) as caught:
        step(TamperState(), frame_of(grey, 2.5), CONFIG)
    assert str(caught.value).startswith("tamper: camera 'cam-1' frame at t=2.5")


def test_a_resolution_change_needs_an_explicit_new_state() -> None:
    frames = scene_frames(duration=3, size=(160, 90))
    state, _ = run(frames)
    assert reference_ready(state)
    bigger = frame_of(np.full((144, 256), 100, np.uint8), 3.0)
    with pytest.raises(ValueError, match="resolution changed from 160x90 to 256x144"):
        step(state, bigger, CONFIG)
    with pytest.raises(ValueError, match="stream time went backwards"):
        step(state, frame_of(frames[0].grey, 0.0), CONFIG)
    with pytest.raises(ValueError, match="belongs to camera 'cam-1'"):
        step(state, frame_of(frames[0].grey, 3.0, camera="cam-9"), CONFIG)
    fresh, events = step(TamperState(), bigger, CONFIG)  # the reset: a new state
    assert fresh.shape == (144, 256) and events == [] and not reference_ready(fresh)


def test_step_is_pure_and_keeps_pixels_out_of_reprs() -> None:
    frames = scene_frames(duration=3)
    state, _ = run(frames[:25])
    holds = dict(state.holds)
    grey = frames[25].grey.copy()
    first = step(state, frame_of(frames[25].grey, frames[25].t), CONFIG)
    second = step(state, frame_of(frames[25].grey, frames[25].t), CONFIG)
    assert np.array_equal(frames[25].grey, grey)
    assert dict(state.holds) == holds
    assert first[1] == second[1]
    assert np.array_equal(first[0].reference.thumb, second[0].reference.thumb)
    assert "array" not in repr(first[0]) and "thumb" not in repr(first[0])
    assert set(state.holds) == set(KINDS[:3]) | set(EVIDENCE)


def test_with_the_defaults_a_freeze_alarms_after_frozen_seconds() -> None:
    defaults = TamperConfig()
    assert defaults.frozen_seconds == 30.0  # tens of seconds: "the picture stopped changing"
    _, events = run(clocked(Frozen(20, 60), duration=64), defaults)
    assert [(e.kind, e.phase) for e in events] == [("frozen", "start"), ("frozen", "end")]
    assert events[0].t - 20 == pytest.approx(defaults.frozen_seconds, abs=FRAME + 1e-9)


@pytest.mark.parametrize(("settings", "words"), [
    ({"frozen_seconds": 1.5}, "frozen_seconds"),
    ({"overlay_learn_seconds": 1}, "overlay_learn_seconds"),
    ({"frozen_seconds": 30.0, "frozen_picture_only_seconds": 10.0},
     "frozen_picture_only_seconds: must be >= frozen_seconds"),
    ({"frozen_second": 30.0}, "frozen_second"),  # a typo never leaves a default in place
])
def test_the_frozen_knobs_are_validated(settings: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        TamperConfig.model_validate(settings)
