"""Camera tampering on a small grey frame: pure, a state in and a new state plus events out.

Four kinds, each measured against what the camera saw while healthy (its reference scene, built
from the first REFERENCE_SECONDS of usable frames and refreshed slowly while all is well):
- covered: the lens covered or sprayed, the frame dark (mean below dark_below) or uniform (grey
  spread below uniform_std);
- defocused: sharpness (variance of the Laplacian, divided by the frame's own variance so a
  dimmer light does not read as blur) below blur_ratio of the reference's;
- turned: the scene's structure no longer matches the reference: the correlation of normalised,
  blurred thumbnails (brightness and contrast cancel out, so a light change is no turn) below
  scene_similarity;
- frozen: near-identical frames for frozen_seconds while packets still arrive.
A condition must hold `hold_seconds` (frozen: frozen_seconds) before its alarm starts, and be
gone `hold_seconds` before the alarm ends (the recovery). While the lens is covered, blur and
turning cannot be judged, and a frozen judgement needs a live stream: those stay as they were.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Literal, get_args

import cv2
import numpy as np

from floor_agent.cctv.config import TamperConfig
from floor_agent.cctv.model import SmallFrame
from floor_agent.cctv.motion import checked_grey

# The alarms, as the cctv.tamper events name them.
TamperKind = Literal["covered", "defocused", "turned", "frozen"]
KINDS: tuple[TamperKind, ...] = get_args(TamperKind)
REFERENCE_SECONDS = 2.0  # healthy frames the reference scene is built from
REFRESH_SECONDS = 120.0  # time constant of the reference's slow refresh while healthy
THUMB_WIDTH = 64  # the reference thumbnail's width (height follows the aspect ratio)
FROZEN_TOLERANCE = 0.1  # mean absolute thumbnail difference (grey levels) still "identical"
# A frozen image through a real encoder is identical between key frames, but each key frame
# re-encodes it, and the P-frames after it refine it: small jumps (0.1-0.65 grey levels here
# at crf 28) on up to half the pairs. A run of identical frames survives such jumps while they
# stay below FROZEN_JUMP and are at most FROZEN_JUMP_SHARE of its pairs; live sensor noise
# differs on every pair (0.4-1.0 here), so it never starts a run.
FROZEN_JUMP = 2.0
FROZEN_JUMP_SHARE = 1 / 2
# ... and no thumbnail pixel may move more than this: re-encoding shifts every pixel a little
# (at most 3 grey levels here), anything that moves in the picture shifts some a lot (30+).
FROZEN_LOCAL_MAX = 8.0


@dataclass(frozen=True, slots=True)
class TamperEvent:
    """An alarm starting or ending (recovery), with the measured values that decided it."""

    kind: TamperKind
    phase: Literal["start", "end"]
    t: float  # stream time of the deciding frame
    detail: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Hold:
    """One kind's debounce: since when its condition is seen (or gone, while alarmed)."""

    active: bool = False
    since: float | None = None  # condition seen since (not active) / gone since (active)


@dataclass(frozen=True, slots=True, eq=False)
class Reference:
    """The healthy scene: a blurred thumbnail (normalised to mean 0, std 1) and its sharpness."""

    thumb: np.ndarray = field(repr=False)
    sharpness: float = 0.0


@dataclass(frozen=True, slots=True, eq=False)
class TamperState:
    """One camera's tamper state; `TamperState()` is the start. Pixel-derived arrays stay out of
    reprs: they are footage."""

    camera_id: str | None = None
    shape: tuple[int, int] | None = None
    last_t: float | None = None
    reference: Reference | None = None
    building_since: float | None = None
    building_sum: np.ndarray | None = field(default=None, repr=False)
    building_sharpness: tuple[float, ...] = ()
    holds: Mapping[TamperKind, Hold] = field(
        default_factory=lambda: MappingProxyType({kind: Hold() for kind in KINDS}))
    last_digest: np.ndarray | None = field(default=None, repr=False)
    frozen_since: float | None = None  # the first frame of the current identical run
    frozen_pairs: int = 0  # identical consecutive pairs in the run
    frozen_jumps: int = 0  # key-frame-sized jumps the run survived

    @property
    def active(self) -> frozenset[TamperKind]:
        """The kinds alarmed now."""
        return frozenset(kind for kind, hold in self.holds.items() if hold.active)


@dataclass(frozen=True, slots=True)
class _Measures:
    mean: float
    std: float
    sharpness: float
    digest: np.ndarray
    thumb: np.ndarray  # blurred and normalised


def _normalised(image: np.ndarray) -> np.ndarray:
    mean, std = (float(v[0][0]) for v in cv2.meanStdDev(image))
    return (image - np.float32(mean)) / np.float32(std if std > 1e-6 else 1.0)


def _variance(image: np.ndarray) -> float:
    """The population variance of a one-channel image (OpenCV's vectorised sums: meanStdDev
    has no fast path for 16-bit images)."""
    count = image.size
    mean = cv2.sumElems(image)[0] / count
    return max(0.0, cv2.norm(image, cv2.NORM_L2SQR) / count - mean * mean)


def _thumbnail(grey: np.ndarray) -> np.ndarray:
    """About THUMB_WIDTH wide, each pixel the mean of a whole number of the frame's pixels
    (OpenCV's integer area path: a fraction of the cost of a fractional one)."""
    height, width = grey.shape
    factor = max(1, min(round(width / THUMB_WIDTH), height))
    rows, cols = height // factor, width // factor
    return cv2.resize(grey[: rows * factor, : cols * factor], (cols, rows),
                      interpolation=cv2.INTER_AREA)


def _measure(grey: np.ndarray) -> _Measures:
    mean, std = (float(v[0][0]) for v in cv2.meanStdDev(grey))
    smooth = cv2.GaussianBlur(grey, (3, 3), 0)
    laplacian_var = _variance(cv2.Laplacian(smooth, cv2.CV_16S))
    sharpness = laplacian_var / max(_variance(smooth), 1.0)
    digest = _thumbnail(grey).astype(np.float32)
    thumb = _normalised(cv2.GaussianBlur(digest, (5, 5), 0))
    return _Measures(mean, std, sharpness, digest, thumb)


def _similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two normalised thumbnails: 1 the same structure, 0 unrelated."""
    return float(np.dot(a.ravel(), b.ravel())) / a.size


def _hold(hold: Hold, present: bool | None, t: float, needed: float, recover: float) -> Hold:
    """Debounce one condition: None means it cannot be judged now (no change)."""
    if present is None:
        return hold
    if not hold.active:
        if not present:
            return Hold()
        since = t if hold.since is None else hold.since
        return Hold(True, None) if t - since >= needed else Hold(False, since)
    if present:
        return Hold(True, None)
    since = t if hold.since is None else hold.since
    return Hold() if t - since >= recover else Hold(True, since)


def step(state: TamperState, frame: SmallFrame,
         config: TamperConfig) -> tuple[TamperState, list[TamperEvent]]:
    """One analysed frame: the new state and the alarms that started or ended on it. Raises
    ValueError for a frame that cannot be analysed (empty, wrong dtype or shape, another
    resolution or camera, time going backwards); the state is then unchanged."""
    grey = checked_grey(frame, state.shape, "tamper")
    t = float(frame.t)
    where = f"tamper: camera {frame.camera_id!r} frame at t={t!r}"
    if state.camera_id is not None and frame.camera_id != state.camera_id:
        raise ValueError(f"{where}: this state belongs to camera {state.camera_id!r}")
    if state.last_t is not None and t < state.last_t:
        raise ValueError(f"{where}: stream time went backwards (last frame at "
                         f"t={state.last_t!r})")
    if not config.enabled:
        return replace(state, camera_id=frame.camera_id, shape=grey.shape, last_t=t), []

    m = _measure(grey)
    covered = m.mean < config.dark_below or m.std < config.uniform_std
    detail: dict[str, float] = {"mean": round(m.mean, 2), "std": round(m.std, 2)}

    defocused: bool | None = None
    turned: bool | None = None
    reference = state.reference
    if reference is not None and not covered:
        ratio = m.sharpness / max(reference.sharpness, 1e-9)
        similarity = _similarity(m.thumb, reference.thumb)
        detail["sharpness_ratio"] = round(ratio, 3)
        detail["similarity"] = round(similarity, 3)
        defocused = ratio < config.blur_ratio
        turned = similarity < config.scene_similarity

    change: float | None = None
    local = False  # nothing moved anywhere in the picture
    if state.last_digest is not None:
        difference = cv2.absdiff(m.digest, state.last_digest)
        change = cv2.mean(difference)[0]
        local = cv2.minMaxLoc(difference)[1] <= FROZEN_LOCAL_MAX
    frozen_since, pairs, jumps = state.frozen_since, state.frozen_pairs, state.frozen_jumps
    identical = change is not None and local and change <= FROZEN_TOLERANCE
    survivable = (change is not None and local and frozen_since is not None
                  and change <= FROZEN_JUMP
                  and jumps + 1 <= FROZEN_JUMP_SHARE * (pairs + jumps + 1))
    frozen: bool | None
    if not frame.packets_alive:
        frozen, frozen_since = None, None  # a dead stream is the recorder's "offline"
        pairs = jumps = 0
    elif (identical or survivable) and not covered:  # a uniform frame: covered says it
        if frozen_since is None:
            assert state.last_t is not None, "a digest to compare means a frame came before"
            frozen_since, pairs, jumps = state.last_t, 0, 0
        pairs, jumps = (pairs + 1, jumps) if identical else (pairs, jumps + 1)
        frozen = t - frozen_since >= config.frozen_seconds
    else:
        frozen, frozen_since = False, None
        pairs = jumps = 0
    if frozen_since is not None:
        detail["frozen_seconds"] = round(t - frozen_since, 3)

    present: dict[TamperKind, bool | None] = {
        "covered": covered, "defocused": defocused, "turned": turned, "frozen": frozen}
    holds: dict[TamperKind, Hold] = {}
    events: list[TamperEvent] = []
    for kind in KINDS:
        before = state.holds[kind]
        # frozen's own duration is its hold: it is present only once frozen_seconds passed
        needed = 0.0 if kind == "frozen" else config.hold_seconds
        after = _hold(before, present[kind], t, needed, config.hold_seconds)
        holds[kind] = after
        if after.active != before.active:
            events.append(TamperEvent(kind, "start" if after.active else "end", t,
                                      MappingProxyType(dict(detail))))

    new = replace(state, camera_id=frame.camera_id, shape=grey.shape, last_t=t,
                  holds=MappingProxyType(holds), last_digest=m.digest,
                  frozen_since=frozen_since, frozen_pairs=pairs, frozen_jumps=jumps)
    healthy = not covered and not any(h.active or h.since is not None for h in holds.values())
    if reference is None and not covered:
        new = _build(new, m, t)
    elif reference is not None and healthy and not identical and state.last_t is not None:
        weight = min(1.0, max(0.0, t - state.last_t) / REFRESH_SECONDS)
        new = replace(new, reference=Reference(
            _normalised((1 - weight) * reference.thumb + weight * m.thumb),
            (1 - weight) * reference.sharpness + weight * m.sharpness))
    return new, events


def _build(state: TamperState, m: _Measures, t: float) -> TamperState:
    """Gather healthy frames until REFERENCE_SECONDS have passed, then fix the reference."""
    since = t if state.building_since is None else state.building_since
    total = m.thumb.copy() if state.building_sum is None else state.building_sum + m.thumb
    sharpness = (*state.building_sharpness, m.sharpness)
    if t - since >= REFERENCE_SECONDS and len(sharpness) >= 3:
        reference = Reference(_normalised(total), float(np.median(sharpness)))
        return replace(state, reference=reference, building_since=None, building_sum=None,
                       building_sharpness=())
    return replace(state, building_since=since, building_sum=total,
                   building_sharpness=sharpness)


def reference_ready(state: TamperState) -> bool:
    """Defocus and turning can be judged (the healthy scene is known)."""
    return state.reference is not None
