"""Motion on a small grey frame: pure, a state in and a new state plus a result out.

The frame is the decoder's luma plane scaled down (about 100-180 px high), never a full
resolution array: the whole step costs well under a millisecond. A running-average background
(float32) is compared with each frame; pixels further off than the threshold (the night one when
the frame is dark) form moving regions, and regions of at least `min_area` are motion. Pixels
that moved update the background ten times slower, so an object crossing does not leave a ghost
that reads as motion after it left, while one that stays is absorbed in the end.

A sudden global brightness change (lights on, IR switch) moves every pixel at once: instead of
firing, the background is reset to the new frame and nothing is reported for a short settle. A
light that ramps over a few frames (no single jump reaching `lighting_jump`) is compared at the
background's brightness (the frame scaled by the ratio of the means), so it does not fire either.

Events: "motion_start" on the first frame with motion, "motion_end" once `end_after_seconds`
passed without any. Masks (polygons in fractions of the frame) are rendered once per camera by
`mask_for` and hide their pixels from the analysis.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TypedDict

import cv2
import numpy as np

from floor_agent.cctv.config import MotionConfig
from floor_agent.cctv.model import SmallFrame

SETTLE_SECONDS = 1.0  # after a recalibration, the light settles (auto exposure) this long
GLOBAL_CHANGE_FRACTION = 0.5  # a light change moves at least this much of the frame
FOREGROUND_ALPHA_FACTOR = 0.1  # pixels in motion join the background this much slower
MAX_FRAME_HEIGHT = 360  # anything taller is not a small frame (MotionConfig.frame_height's top)
BLUR_KERNEL = (5, 5)  # smooths sensor noise before the comparison
DILATE_KERNEL = np.ones((3, 3), np.uint8)


def checked_grey(frame: SmallFrame, shape: tuple[int, int] | None, what: str) -> np.ndarray:
    """The frame's grey array, or a ValueError naming the camera, the time and the problem
    (never its pixels). `shape` is the size the state was built for (None: not yet)."""
    where = f"{what}: camera {frame.camera_id!r} frame at t={frame.t!r}"
    grey = frame.grey
    if not isinstance(grey, np.ndarray):
        raise ValueError(f"{where}: grey is a {type(grey).__name__}, expected a numpy array")
    if grey.dtype != np.uint8:
        raise ValueError(f"{where}: grey has dtype {grey.dtype}, expected uint8 (the luma "
                         "plane)")
    if grey.ndim != 2:
        raise ValueError(f"{where}: grey has {grey.ndim} dimensions {grey.shape}, expected 2 "
                         "(height, width)")
    if grey.size == 0:
        raise ValueError(f"{where}: grey is empty ({grey.shape[1]}x{grey.shape[0]})")
    if grey.shape[0] > MAX_FRAME_HEIGHT:
        raise ValueError(f"{where}: grey is {grey.shape[1]}x{grey.shape[0]}, taller than "
                         f"{MAX_FRAME_HEIGHT} px: scale it down in the decoder")
    if not isinstance(frame.t, numbers.Real) or not math.isfinite(frame.t):
        raise ValueError(f"{where}: stream time is not a finite number")
    if shape is not None and grey.shape != shape:
        raise ValueError(f"{where}: resolution changed from {shape[1]}x{shape[0]} to "
                         f"{grey.shape[1]}x{grey.shape[0]}; start a new state for the new "
                         "stream")
    return grey


def mask_for(polygons: Sequence[Sequence[Sequence[float]]],
             shape: tuple[int, int]) -> np.ndarray | None:
    """The analysis mask of a camera: 255 where motion is analysed, 0 inside the polygons (given
    in fractions of the frame, [[x, y], ...]). None when there are no polygons."""
    if not polygons:
        return None
    height, width = shape
    if height < 1 or width < 1:
        raise ValueError(f"mask shape {shape}: must be at least 1x1")
    mask = np.full((height, width), 255, np.uint8)
    for number, polygon in enumerate(polygons, 1):
        if len(polygon) < 3:
            raise ValueError(f"motion mask {number}: has {len(polygon)} points, a polygon needs "
                             "at least 3")
        points = np.array([[round(x * (width - 1)), round(y * (height - 1))]
                           for x, y in polygon], np.int32)
        cv2.fillPoly(mask, [points], 0)
    return mask


@dataclass(frozen=True, slots=True)
class Region:
    """A moving region: its box (x, y, w, h) and its area, fractions of the frame."""

    x: float
    y: float
    w: float
    h: float
    area: float


@dataclass(frozen=True, slots=True)
class MotionResult:
    """What one frame showed. `motion` is this frame's verdict (what precision and recall are
    measured on); `in_motion` and `event` are the debounced happening the recorder reports."""

    t: float
    motion: bool
    regions: tuple[Region, ...] = ()
    moving_fraction: float = 0.0  # of the analysed pixels, before the area filter
    brightness: float = 0.0  # mean grey level of the frame
    threshold: int = 0  # the one used: day or night
    night: bool = False
    recalibrated: bool = False  # the light changed on this frame: background reset
    settling: bool = False  # within the settle after a recalibration: nothing reported
    in_motion: bool = False
    event: str | None = None  # "motion_start" | "motion_end" | None


@dataclass(frozen=True, slots=True, eq=False)
class MotionState:
    """One camera's motion state; `MotionState()` is the start (the first frame becomes the
    background). The background stays out of reprs: it is footage."""

    camera_id: str | None = None
    shape: tuple[int, int] | None = None
    background: np.ndarray | None = field(default=None, repr=False)  # float32, blurred grey
    last_t: float | None = None
    last_brightness: float = 0.0
    settle_until: float = -math.inf  # the calibration countdown, in stream time
    in_motion: bool = False
    since: float | None = None  # when the current motion started
    last_motion_t: float | None = None


def _regions(grown: np.ndarray, min_area: float) -> tuple[Region, ...]:
    """The moving regions of the dilated moving-pixel map, largest first."""
    height, width = grown.shape
    total = float(height * width)
    contours, _ = cv2.findContours(grown, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    found: list[Region] = []
    for contour in contours:
        area = cv2.contourArea(contour) / total
        if area < min_area or area <= 0:
            continue
        x, y, w, h = cv2.boundingRect(contour)
        found.append(Region(x / width, y / height, w / width, h / height, area))
    found.sort(key=lambda r: r.area, reverse=True)
    return tuple(found)


def _moving(frame: np.ndarray, background: np.ndarray, threshold: int,
            mask: np.ndarray | None) -> np.ndarray:
    """255 where the frame is further than the threshold off the background (and analysed)."""
    # OpenCV's stubs know only compare(array, array): a scalar second operand is documented.
    binary = cv2.compare(cv2.absdiff(frame, background), float(threshold),  # type: ignore[call-overload]
                         cv2.CMP_GT)
    return binary if mask is None else cv2.bitwise_and(binary, mask)


class _FrameFacts(TypedDict):
    """The fields of a MotionResult known before the frame is compared."""

    t: float
    brightness: float
    threshold: int
    night: bool


def _happening(state: MotionState, t: float, motion: bool | None,
               config: MotionConfig) -> tuple[dict[str, object], str | None]:
    """The debounced happening as field changes: motion starts on its first frame, every frame
    with motion moves last_motion_t, and it ends once end_after_seconds passed without any.
    `motion` None: nothing can be judged (the light settles), only an end is possible."""
    if motion:
        if state.in_motion:
            return {"last_motion_t": t}, None
        return {"in_motion": True, "since": t, "last_motion_t": t}, "motion_start"
    if (state.in_motion and state.last_motion_t is not None
            and t - state.last_motion_t >= config.end_after_seconds):
        return {"in_motion": False, "since": None}, "motion_end"
    return {}, None


def step(state: MotionState, frame: SmallFrame, config: MotionConfig,
         mask: np.ndarray | None = None) -> tuple[MotionState, MotionResult]:
    """One analysed frame: the new state and what the frame showed. Raises ValueError for a
    frame that cannot be analysed (empty, wrong dtype or shape, another resolution or camera,
    time going backwards); the state is then unchanged."""
    grey = checked_grey(frame, state.shape, "motion")
    t = float(frame.t)
    where = f"motion: camera {frame.camera_id!r} frame at t={t!r}"
    if state.camera_id is not None and frame.camera_id != state.camera_id:
        raise ValueError(f"{where}: this state belongs to camera {state.camera_id!r}")
    if state.last_t is not None and t < state.last_t:
        raise ValueError(f"{where}: stream time went backwards (last frame at "
                         f"t={state.last_t!r})")
    if mask is not None and (mask.shape != grey.shape or mask.dtype != np.uint8):
        raise ValueError(f"{where}: mask is {mask.dtype} {mask.shape}, expected uint8 "
                         f"{grey.shape} (mask_for the frame's shape)")
    blurred = cv2.GaussianBlur(grey, BLUR_KERNEL, 0).astype(np.float32)
    brightness = cv2.mean(blurred)[0]
    night = brightness < config.night_below
    threshold = config.night_threshold if night else config.threshold
    common = _FrameFacts(t=t, brightness=brightness, threshold=threshold, night=night)
    if state.background is None or not config.enabled:
        fresh = replace(state, camera_id=frame.camera_id, shape=grey.shape, background=blurred,
                        last_t=t, last_brightness=brightness)
        return fresh, MotionResult(motion=False, **common)

    analysed = grey.size
    if mask is not None:
        analysed = max(1, cv2.countNonZero(mask))
    background_brightness = cv2.mean(state.background)[0]
    shift = max(abs(brightness - state.last_brightness),
                abs(brightness - background_brightness))
    light = False
    if shift >= config.lighting_jump:
        raw = _moving(blurred, state.background, threshold, mask)
        light = cv2.countNonZero(raw) / analysed >= GLOBAL_CHANGE_FRACTION
    # a light that drifts or ramps over a few frames: compare at the background's brightness
    gain = background_brightness / brightness if brightness >= 1.0 else 1.0
    compared = blurred if gain == 1.0 else blurred * np.float32(gain)
    binary = _moving(compared, state.background, threshold, mask)
    moving_fraction = cv2.countNonZero(binary) / analysed
    if light or t < state.settle_until:
        # the light changed (or is settling): the new frame is the background, nothing moves
        settle_until = t + SETTLE_SECONDS if light else state.settle_until
        changes, event = _happening(state, t, None, config)
        new = replace(state, last_t=t, last_brightness=brightness, background=blurred,
                      settle_until=settle_until, **changes)  # type: ignore[arg-type]
        return new, MotionResult(motion=False, moving_fraction=moving_fraction,
                                 recalibrated=light, settling=True, in_motion=new.in_motion,
                                 event=event, **common)

    moving = cv2.dilate(binary, DILATE_KERNEL, iterations=2)
    regions = _regions(moving, config.min_area)
    motion = bool(regions)
    background = state.background.copy()
    still = cv2.bitwise_not(moving)
    cv2.accumulateWeighted(blurred, background, config.background_alpha, still)
    cv2.accumulateWeighted(blurred, background,
                           config.background_alpha * FOREGROUND_ALPHA_FACTOR, moving)
    changes, event = _happening(state, t, motion, config)
    new = replace(state, last_t=t, last_brightness=brightness, background=background,
                  **changes)  # type: ignore[arg-type]
    return new, MotionResult(motion=motion, regions=regions, moving_fraction=moving_fraction,
                             in_motion=new.in_motion, event=event, **common)
