"""cctv motion: found frame by frame on scripted scenes, quiet for the light, masked, day/night."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest

from floor_agent.cctv import tamper
from floor_agent.cctv.config import MotionConfig, TamperConfig
from floor_agent.cctv.model import SmallFrame
from floor_agent.cctv.motion import MotionResult, MotionState, mask_for, step
from floor_agent.simulated.camera_scenes import (
    Clock,
    Lighting,
    MovingObject,
    Scene,
    SceneFrame,
    Script,
)

FPS = 10
CONFIG = MotionConfig(end_after_seconds=2.0)

CROSSINGS = (
    MovingObject("walker", 1, 6, (-0.1, 0.6), (1.1, 0.55)),
    MovingObject("dark-cart", 8, 14, (1.15, 0.4), (-0.15, 0.45), size=(0.2, 0.2), level=30),
    MovingObject("slow-one", 16, 26, (0.2, -0.2), (0.7, 1.2), size=(0.08, 0.2), level=200),
    MovingObject("first-of-two", 28, 33, (-0.1, 0.3), (1.1, 0.3)),
    MovingObject("second-of-two", 29, 35, (1.1, 0.8), (-0.1, 0.7), level=20),
)


def run(frames: Iterable[SceneFrame], config: MotionConfig = CONFIG,
        mask: np.ndarray | None = None) -> list[tuple[SceneFrame, MotionResult]]:
    state = MotionState()
    out = []
    for frame in frames:
        state, result = step(state, SmallFrame("cam-1", frame.t, frame.grey), config, mask)
        out.append((frame, result))
    return out


def precision_recall(results: list[tuple[SceneFrame, MotionResult]],
                     min_area: float) -> tuple[float, float]:
    tp = sum(1 for f, r in results if r.motion and f.truth.moving(min_area))
    fp = sum(1 for f, r in results if r.motion and not f.truth.moving(min_area))
    fn = sum(1 for f, r in results if not r.motion and f.truth.moving(min_area))
    assert tp > 0, "the script has no motion to find"
    return tp / (tp + fp), tp / (tp + fn)


@pytest.mark.parametrize(("width", "height", "seed"), [(256, 144, 7), (160, 90, 11)])
def test_motion_found_with_frame_level_precision_and_recall(width: int, height: int,
                                                            seed: int) -> None:
    results = run(Scene(width, height, FPS, seed).frames(Script(40, CROSSINGS)))
    precision, recall = precision_recall(results, CONFIG.min_area)
    print(f"motion {width}x{height}: precision {precision:.3f} recall {recall:.3f} "
          f"over {len(results)} frames")
    assert precision >= 0.95
    assert recall >= 0.95
    events = [r.event for _, r in results if r.event]
    assert events.count("motion_start") == events.count("motion_end") >= 3


@pytest.mark.parametrize(("name", "lights"), [
    ("lights-on", Lighting(0, 5, gain=0.6, offset=0)),
    ("lights-off", Lighting(5, gain=0.6, offset=0)),
    ("ir-switch", Lighting(5, gain=1.3, offset=30)),
])
def test_a_light_change_recalibrates_instead_of_firing(name: str, lights: Lighting) -> None:
    after = MovingObject("after", 7.5, 11, (-0.1, 0.5), (1.1, 0.5))
    results = run(Scene(256, 144, FPS, 3).frames(Script(12, (lights, after))))
    before_object = [r for f, r in results if f.t < 7.5]
    assert not any(r.motion for r in before_object), name
    assert not any(r.event == "motion_start" for r in before_object), name
    recalibrated = [r.t for _, r in results if r.recalibrated]
    assert recalibrated == [pytest.approx(5.0)], name
    settling = [r.t for _, r in results if r.settling]
    assert min(settling) == pytest.approx(5.0) and max(settling) < 6.1
    # after the settle, motion is found on the new background
    _, recall = precision_recall(results, CONFIG.min_area)
    assert recall >= 0.95, name


def test_a_light_ramping_up_over_frames_is_no_motion() -> None:
    steps = 8  # from half the light to full over 0.8 s: no single jump reaches lighting_jump
    ramp = tuple(Lighting(5 + i / FPS, 5 + (i + 1) / FPS, gain=0.5 + 0.5 * (i + 1) / (steps + 1),
                          offset=0) for i in range(steps))
    after = MovingObject("after", 8, 11, (-0.1, 0.5), (1.1, 0.5))
    script = Script(12, (Lighting(0, 5, gain=0.5, offset=0), *ramp, after))
    results = run(Scene(256, 144, FPS, 3).frames(script))
    assert not any(r.motion or r.event for f, r in results if f.t < 8)
    _, recall = precision_recall(results, CONFIG.min_area)
    assert recall >= 0.95


def test_masks_hide_motion_inside_them() -> None:
    inside = MovingObject("behind-the-mask", 1, 5, (0.1, 0.25), (0.4, 0.25), size=(0.1, 0.2))
    outside = MovingObject("in-the-open", 6, 10, (0.2, 0.75), (0.8, 0.75), size=(0.1, 0.2))
    frames = list(Scene(256, 144, FPS, 5).frames(Script(11, (inside, outside))))
    masked_area = [[[0.0, 0.0], [0.6, 0.0], [0.6, 0.5], [0.0, 0.5]]]
    mask = mask_for(masked_area, (144, 256))
    assert mask is not None and mask.shape == (144, 256)
    unmasked = run(frames)
    masked = run(frames, MotionConfig(end_after_seconds=2.0, masks=masked_area), mask)
    in_mask = [(u, m) for (f, u), (_, m) in zip(unmasked, masked, strict=True) if 1.2 < f.t < 5]
    assert all(u.motion for u, _ in in_mask)  # the object is there to be found...
    assert not any(m.motion for _, m in in_mask)  # ...and the mask hides it
    open_frames = [m for f, m in masked if f.truth.moving(CONFIG.min_area) and f.t >= 6]
    assert sum(m.motion for m in open_frames) >= 0.95 * len(open_frames)
    assert [m.event for _, m in masked if m.event][:1] == ["motion_start"]
    assert mask_for([], (144, 256)) is None


def test_the_night_threshold_is_used_in_the_dark() -> None:
    script = Script(8, (Lighting(0, gain=0.3, offset=0),
                        MovingObject("dim", 1, 6, (-0.1, 0.5), (1.1, 0.5), level=90)))
    frames = list(Scene(256, 144, FPS, 3).frames(script))
    night = run(frames)
    assert all(r.night and r.threshold == CONFIG.night_threshold for _, r in night)
    precision, recall = precision_recall(night, CONFIG.min_area)
    # the day threshold in the same dark scene misses most of it: the night one is what finds it
    # (a grey object on a dark, varied floor: where it matches the floor nothing can see it)
    day_only = run(frames, MotionConfig(end_after_seconds=2.0, night_threshold=25))
    _, day_recall = precision_recall(day_only, CONFIG.min_area)
    print(f"motion at night: precision {precision:.3f} recall {recall:.3f} (with the day "
          f"threshold: recall {day_recall:.3f})")
    assert precision >= 0.95 and recall >= 0.75
    assert day_recall < 0.5
    # in daylight the day threshold applies
    lit = run(Scene(256, 144, FPS, 3).frames(Script(1)))
    assert all(not r.night and r.threshold == CONFIG.threshold for _, r in lit)


def test_motion_start_and_end_timing() -> None:
    walker = MovingObject("walker", 2, 5, (0.1, 0.5), (0.9, 0.5))
    results = run(Scene(256, 144, FPS, 9).frames(Script(10, (walker,))))
    events = [(r.t, r.event) for _, r in results if r.event]
    assert [e for _, e in events] == ["motion_start", "motion_end"]
    start, end = events[0][0], events[1][0]
    assert start == pytest.approx(2.0)  # the object appears on this frame: motion at once
    last_motion = max(r.t for _, r in results if r.motion)
    assert last_motion == pytest.approx(4.9)
    assert end == pytest.approx(last_motion + CONFIG.end_after_seconds)
    assert all(r.in_motion for _, r in results if start <= r.t < end)
    assert not any(r.in_motion for _, r in results if r.t >= end or r.t < start)


def test_results_say_where_and_how_much() -> None:
    walker = MovingObject("walker", 0.5, 3, (0.25, 0.5), (0.75, 0.5), size=(0.1, 0.3))
    results = run(Scene(256, 144, FPS, 2).frames(Script(3, (walker,))))
    frame, result = next((f, r) for f, r in results if f.t == pytest.approx(1.5))
    (obj,) = frame.truth.objects
    region = result.regions[0]
    assert abs(region.x + region.w / 2 - (obj.box[0] + obj.box[2] / 2)) < 0.1
    assert abs(region.y + region.h / 2 - (obj.box[1] + obj.box[3] / 2)) < 0.1
    assert 0.5 * obj.area < region.area < 3 * obj.area
    assert 0 < result.moving_fraction < 0.2


def frame_of(grey: object, t: float = 0.0, camera: str = "cam-1") -> SmallFrame:
    return SmallFrame(camera, t, grey)


@pytest.mark.parametrize(("grey", "words"), [
    (np.zeros((0, 0), np.uint8), "empty"),
    (np.zeros((90, 0), np.uint8), "empty"),
    (np.zeros((90, 160), np.float32), "dtype float32"),
    (np.zeros((90, 160), np.uint16), "dtype uint16"),
    (np.zeros((90, 160, 3), np.uint8), "3 dimensions"),
    (b"\x00" * 100, "grey is a bytes"),
    (None, "grey is a NoneType"),
    (np.zeros((1080, 1920), np.uint8), "taller than 360"),
])
def test_bad_frames_are_a_clear_value_error(grey: object, words: str) -> None:
    with pytest.raises(ValueError, match=words) as caught:
        step(MotionState(), frame_of(grey, 1.5), CONFIG)
    assert "camera 'cam-1'" in str(caught.value) and "t=1.5" in str(caught.value)


def test_a_resolution_change_needs_an_explicit_new_state() -> None:
    state, _ = step(MotionState(), frame_of(np.full((90, 160), 100, np.uint8), 0.0), CONFIG)
    bigger = frame_of(np.full((144, 256), 100, np.uint8), 0.1)
    with pytest.raises(ValueError, match="resolution changed from 160x90 to 256x144"):
        step(state, bigger, CONFIG)
    fresh, result = step(MotionState(), bigger, CONFIG)  # the reset: a new state
    assert fresh.shape == (144, 256) and not result.motion


def test_time_backwards_other_camera_bad_time_and_bad_mask() -> None:
    grey = np.full((90, 160), 100, np.uint8)
    state, _ = step(MotionState(), frame_of(grey, 5.0), CONFIG)
    with pytest.raises(ValueError, match="stream time went backwards"):
        step(state, frame_of(grey, 4.0), CONFIG)
    with pytest.raises(ValueError, match="belongs to camera 'cam-1'"):
        step(state, frame_of(grey, 6.0, camera="cam-2"), CONFIG)
    with pytest.raises(ValueError, match="not a finite number"):
        step(state, frame_of(grey, float("nan")), CONFIG)
    with pytest.raises(ValueError, match="mask is uint8 \\(144, 256\\)"):
        step(state, frame_of(grey, 6.0), CONFIG, np.zeros((144, 256), np.uint8))
    with pytest.raises(ValueError, match="motion mask 1: has 2 points"):
        mask_for([[[0.0, 0.0], [1.0, 1.0]]], (90, 160))


def test_step_is_pure_and_keeps_pixels_out_of_reprs() -> None:
    frames = list(Scene(160, 90, FPS, 4).frames(Script(1.5, (
        MovingObject("walker", 0.2, 1.5, (0.1, 0.5), (0.9, 0.5)),))))
    state, _ = step(MotionState(), frame_of(frames[0].grey), CONFIG)
    background = state.background.copy()
    grey = frames[10].grey.copy()
    again = []
    for _ in range(2):
        new, result = step(state, frame_of(frames[10].grey, 1.0), CONFIG)
        again.append(result)
    assert np.array_equal(state.background, background)
    assert np.array_equal(frames[10].grey, grey)
    assert again[0] == again[1] and again[0].motion
    assert not np.array_equal(new.background, background)
    assert "array" not in repr(new) and "background" not in repr(new)


def _clock_scene_motion(with_overlay_mask: bool, *happenings: MovingObject,
                        duration: float = 600.0) -> list[tuple[float, str]]:
    """Motion and tamper side by side as the recorder runs them, on an empty room with the
    camera's burned-in clock (and its name); the motion events, with their times."""
    scene = Scene(256, 144, 5, 3, key_every=5, vignette=0.3)
    script = Script(duration, (Clock(caption="CAM 03 FLOOR A NORTH"), *happenings))
    config, tamper_config = MotionConfig(), TamperConfig()
    state, tamper_state = MotionState(), tamper.TamperState()
    events: list[tuple[float, str]] = []
    for frame in scene.frames(script):
        small = SmallFrame("cam-1", frame.t, frame.grey)
        mask = (tamper.overlay_motion_mask(tamper_state, frame.grey.shape, None)
                if with_overlay_mask else None)
        state, result = step(state, small, config, mask)
        tamper_state, _ = tamper.step(tamper_state, small, tamper_config)
        if result.event is not None:
            events.append((round(frame.t, 1), result.event))
    return events


def test_a_burned_in_clock_is_not_motion_once_the_tamper_detector_learned_it() -> None:
    """Every IP camera ticks its clock into the picture: without the learned overlay taken out,
    10 minutes of an empty room raised motion again and again; with it, only while the clock
    was still being learned (the first seconds)."""
    unmasked = [e for e in _clock_scene_motion(False) if e[1] == "motion_start"]
    assert len(unmasked) >= 5, unmasked  # the problem, shown
    masked = [e for e in _clock_scene_motion(True) if e[1] == "motion_start"]
    assert all(t < 60.0 for t, _ in masked), masked


def test_a_walker_is_still_motion_with_the_clock_taken_out() -> None:
    walker = MovingObject("editor", 120.0, 126.0, (-0.1, 0.5), (1.1, 0.6))
    events = _clock_scene_motion(True, walker, duration=150.0)
    starts = [t for t, kind in events if kind == "motion_start" and t >= 60.0]
    assert starts and 120.0 <= starts[0] <= 121.5, events
