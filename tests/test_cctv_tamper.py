"""cctv tamper: each kind alarmed within 2 s of stream time and recovered; light and motion
are not tampering; frozen only on a live stream; bad frames a clear error."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest

from floor_agent.cctv.config import TamperConfig
from floor_agent.cctv.model import SmallFrame
from floor_agent.cctv.tamper import KINDS, TamperEvent, TamperState, reference_ready, step
from floor_agent.simulated.camera_scenes import (
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
# frozen_seconds is lowered from its 3 s default so a freeze, too, alarms within 2 s
CONFIG = TamperConfig(frozen_seconds=1.5)
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
    ("frozen", Frozen(4, 9), 5, (256, 144)),
    ("frozen", Frozen(4, 9), 10, (160, 90)),
], ids=["covered", "sprayed", "defocused", "defocused-mild", "turned", "turned-sideways",
        "frozen", "frozen-small"])
def test_each_kind_alarms_within_2_s_and_recovers(kind: str, happening: Happening, seed: int,
                                                  size: tuple[int, int]) -> None:
    state, events = run(scene_frames(happening, seed=seed, size=size))
    assert [(e.kind, e.phase) for e in events] == [(kind, "start"), (kind, "end")]
    start, end = events
    alarm_after = start.t - happening.start
    recovery_after = end.t - happening.end
    print(f"tamper {kind} {size[0]}x{size[1]}: alarmed {alarm_after:.1f} s after it began, "
          f"recovered {recovery_after:.1f} s after it ended ({start.detail})")
    assert 0 < alarm_after <= 2.0
    assert 0 < recovery_after <= 2.0
    assert recovery_after >= CONFIG.hold_seconds - 1e-9  # gone as long as it had to hold
    assert all(isinstance(v, float) for v in start.detail.values())
    assert {"mean", "std"} <= set(start.detail)
    assert state.active == frozenset()


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
    frames = scene_frames(Frozen(4, 12))
    # packets stop with the picture: the stream is dead, that is "offline", not tampering
    _, dead = run(frames, alive=[f.t < 4 for f in frames])
    assert dead == []
    # the picture freezes while packets arrive until t=8, then they stop too
    state, events = run(frames, alive=[f.t < 8 for f in frames])
    assert [(e.kind, e.phase) for e in events] == [("frozen", "start")]
    assert events[0].t - 4 <= 2.0 and events[0].detail["frozen_seconds"] >= 1.5
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
    assert set(state.holds) == set(KINDS)


def test_with_the_defaults_a_freeze_alarms_after_frozen_seconds() -> None:
    defaults = TamperConfig()
    _, events = run(scene_frames(Frozen(4, 12)), defaults)
    assert [(e.kind, e.phase) for e in events] == [("frozen", "start"), ("frozen", "end")]
    assert events[0].t - 4 == pytest.approx(defaults.frozen_seconds)
