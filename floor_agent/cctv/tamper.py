"""Camera tampering on a small grey frame and the stream's packets: pure, a state in and a new
state plus events out.

Four kinds, each measured against what the camera saw while healthy (its reference scene, built
from the first REFERENCE_SECONDS of usable frames and refreshed slowly while all is well):
- covered: the lens covered or sprayed: the frame dark (median below dark_below) or uniform
  (robust grey spread below uniform_std) AND its structure gone: no coherent structure (what
  is left is noise: blurring the thumbnail takes most of its spread away) and nothing like the
  reference. A dark room at night keeps its structure (normalised, it is the daytime scene),
  so it is not covered; a dark view with structure of its own is turned;
- defocused: sharpness (the Laplacian's energy, divided by the thumbnail's own variance so a
  dimmer light does not read as blur) below blur_ratio of the reference's, at either of two
  scales. The energy is the mean over the thumbnail's cells less the sharpest tenth: a
  camera's burned-in text (its name, its clock) is drawn after the lens, stays sharp when the
  lens is not, and would otherwise outweigh the whole scene. The fine scale (the frame at half
  size) sees a mild defocus, but at night the sensor's noise, added after the lens, is far
  sharper than the dim scene there, and a blurred lens changes little of what it measures.
  The coarse scale (the thumbnail itself: a defocus takes its mid frequencies too, while the
  noise, averaged over a cell's pixels, keeps a quarter of its variance there) is judged
  above the noise floor: the noise's expected share of the energy and of the variance is
  taken off, its strength estimated on each frame (a second-difference filter's response over
  the half-size frame, the quieter half of its pixels, so that edges and text stay out). Each
  scale is judged only while the reference's structure there is above its noise floor: a
  bare wall at night has nothing to lose at the coarse scale, and a fine sharpness that was
  mostly noise cannot fall below blur_ratio for a blur, only when the noise goes (the lights
  coming on after a noisy night: it called that defocused, for good, since the reference is
  not refreshed while alarmed);
- turned: the scene's structure no longer matches the reference: the correlation of normalised,
  blurred thumbnails (brightness and contrast cancel out, so a light change is no turn) less
  their coarsest shading (the lens' vignetting and the light's fall-off stay with the camera
  when it turns: left in, a heavily vignetted camera panned by 45 % still correlated ~0.4)
  below scene_similarity (a pan of 45 % of the view: about 0);
- frozen: the picture stopped changing, which an empty room's picture also does: a camera's
  encoder skips a still scene's sensor noise, so its decoded frames are identical between key
  frames. So frozen needs evidence beyond a still picture, for `frozen_seconds` (tens of
  seconds):
  - "clock": the picture is still AND the small regions that used to change on their own
    schedule (the burned-in clock, learned below) stopped changing too;
  - "stream": the camera sends the same packet again and again, or its timestamps stopped
    advancing while packets arrive (`observe_packet`, fed the main stream's packet facts);
  - "picture": only if `frozen_picture_only_seconds` is set: a picture identical that long on
    its own (a warning, not critical: an empty room looks exactly like that).

The overlay: a thumbnail cell that keeps changing on its own, a short change at a time, while
the rest of the picture is quiet (OVERLAY_TICKS changes within about overlay_learn_seconds) is
a scheduled region (the clock's seconds; a blinking LED). Learned cells, and when they lie in
the top or bottom band of the frame (a camera's OSD) the text line they belong to (the date and
hours do not tick but do not move with the scene either) and the same line at the other edge
(where cameras put their name: static, never learned, and at night brighter than the whole
dim picture), are left out of every measure above;
their ticking is the "clock" evidence that the picture is alive. Frames more than
CLOCK_SAMPLE_SECONDS apart (a camera whose analysis is shed to key frames while it lags, or
one analysed at 1 fps or less) can land on the same digit every time (a key frame every 10 s
shows the same second each time): such a gap counts as a tick, so sparse frames never make a
stopped clock; the stream evidence, judged on every packet, is unaffected. A camera whose
sensor freezes while its OSD keeps ticking, without a repeated packet or a stalled timestamp,
cannot be told from an empty room and raises nothing by default.

A condition must hold `hold_seconds` (frozen: its window) before its alarm starts, and be gone
`hold_seconds` before the alarm ends (the recovery). While the lens is covered, blur and turning
cannot be judged, and a frozen judgement needs a live stream: those stay as they were.

The sharpness (the costliest measure) is taken on every other frame while no defocus is
pending; the frame between is judged later, with the next one, whenever its judgement could
have started the hold counting, so the hold counts from the frame a judgement on every frame
would count from (TamperState.deferred). The reference's sharpness is refreshed on the frames
that measure it (an average of half the frames: a ratio on the blur_ratio's edge can then
fall on the other side of it).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Literal, NamedTuple, get_args

import cv2
import numpy as np

from floor_agent.cctv.config import TamperConfig
from floor_agent.cctv.model import SmallFrame
from floor_agent.cctv.motion import checked_grey

# The alarms, as the cctv.tamper events name them.
TamperKind = Literal["covered", "defocused", "turned", "frozen"]
KINDS: tuple[TamperKind, ...] = get_args(TamperKind)
# What a frozen alarm rests on (see the module's docstring).
FrozenEvidence = Literal["clock", "stream", "picture"]
EVIDENCE: tuple[FrozenEvidence, ...] = get_args(FrozenEvidence)
Severity = Literal["warning", "critical"]
REFERENCE_SECONDS = 2.0  # healthy frames the reference scene is built from
REFRESH_SECONDS = 120.0  # time constant of the reference's slow refresh while healthy
THUMB_WIDTH = 64  # the reference thumbnail's width (height follows the aspect ratio)
SHARPEST_LEFT_OUT = 0.1  # the sharpest cells the defocus measure leaves out (OSD text)
LOW_PASS = 8  # the turned comparison leaves out what is this many times coarser than it
# Still: nothing moved between two frames: the mean absolute thumbnail difference at most
# FROZEN_JUMP and no thumbnail pixel further than FROZEN_LOCAL_MAX. A still scene's sensor noise
# (0.4-1.0 grey levels raw, 0.3-0.9 at an encoder's key frames) and a frozen image re-encoded
# (0.1-0.65) are both still; anything that moves shifts some pixel by 30+.
FROZEN_JUMP = 2.0
FROZEN_LOCAL_MAX = 8.0
# Identical (the picture-only evidence): FROZEN_TOLERANCE on at least half of the pairs, the
# rest still (the key frames that re-encode a frozen image).
FROZEN_TOLERANCE = 0.1
FROZEN_JUMP_SHARE = 1 / 2
# The overlay: a cell changed when its thumbnail pixel moved CELL_CHANGE grey levels (or four
# times the frame's noise); a change counts towards the overlay while at most
# OVERLAY_QUIET_FRACTION of the cells changed (a person crossing moves more) and the cell did
# not change on the frame before (a clock's digit changes once; someone working moves on).
CELL_CHANGE = 6.0
CLOCK_SAMPLE_SECONDS = 1.1  # frames further apart cannot tell a stopped clock (see step)
OVERLAY_QUIET_FRACTION = 0.03
OVERLAY_TICKS = 6.0  # learned at this many changes (decayed with overlay_learn_seconds)
OVERLAY_MAX_FRACTION = 0.1  # never more than this share of the cells
OSD_BAND = 0.2  # learned cells in the top or bottom fifth: their whole text line is left out
# The noise's expected energy under the Laplacian (3x3 Gaussian first), per unit of noise
# variance: the Laplacian of white noise is Gaussian, with the variance of its kernel's (the
# response to one bright pixel) squared sum. The coarse measure: squared, a chi-square with
# one degree of freedom, of which it keeps the quieter 1 - SHARPEST_LEFT_OUT: their mean is
# P(chi2_3 <= q) / (1 - SHARPEST_LEFT_OUT) of the whole mean, q the kept share's quantile
# (0.63 of it). The fine measure (its floor only a guard) takes the whole mean, which its
# kept cells' means of a few pixels lie below, and the uint8 blur's rounding (a variance of
# QUANTISATION) under the plain Laplacian.
_IMPULSE = np.zeros((9, 9), np.float64)
_IMPULSE[4, 4] = 1.0
_Q = statistics.NormalDist().inv_cdf(1 - SHARPEST_LEFT_OUT / 2) ** 2
_LOG_ENERGY = float(np.sum(cv2.Laplacian(cv2.GaussianBlur(_IMPULSE, (3, 3), 0),
                                         cv2.CV_64F) ** 2))
NOISE_ENERGY = _LOG_ENERGY * (
    math.erf(math.sqrt(_Q / 2)) - math.sqrt(2 * _Q / math.pi) * math.exp(-_Q / 2)
) / (1 - SHARPEST_LEFT_OUT)
ROUNDING_ENERGY = float(np.sum(cv2.Laplacian(_IMPULSE, cv2.CV_64F) ** 2)) / 12
# The noise's strength: the response of Immerkaer's second-difference kernel (blind to flat
# areas and gradients; std 6 sigma for white noise of std sigma): the mean of the quieter half
# of its absolute values is 4 * (phi(0) - phi(its median)) = 0.3247 of that std.
_LEVELS = np.arange(256, dtype=np.float64)
_STANDARD = statistics.NormalDist()
_HALF_NORMAL_LOWER_MEAN = 4 * (_STANDARD.pdf(0) - _STANDARD.pdf(_STANDARD.inv_cdf(0.75)))
QUANTISATION = 1 / 12  # a uint8 image's rounding, as a noise variance
# A scale of the defocus measure is judged only when the reference's structure there is above
# its noise floor by this factor (the fine scale could see a blur only from 1.9 up: a blurred
# picture keeps all of the noise, and blur_ratio is 0.35).
MIN_SIGNAL_TO_NOISE = 1.0
# No structure: a grey spread under STRUCTURE_FLOOR (no scene has so little contrast: an office
# at night has 5), or what spread there is incoherent (blurring the thumbnail takes more than
# half of it away: noise, not shapes).
STRUCTURE_FLOOR = 2.0
STRUCTURE_COHERENCE = 0.5


@dataclass(frozen=True, slots=True)
class TamperEvent:
    """An alarm starting or ending (recovery), with the measured values that decided it."""

    kind: TamperKind
    phase: Literal["start", "end"]
    t: float  # stream time of the deciding frame (stream evidence: of the last analysed one)
    detail: Mapping[str, float] = field(default_factory=dict)
    severity: Severity = "critical"
    evidence: FrozenEvidence | None = None  # frozen only: what it rests on


@dataclass(frozen=True, slots=True)
class PacketFacts:
    """What the recorder knows of one packet of the recorded stream, without its bytes:
    `arrival` (seconds, wall clock or monotonic: only differences count), `pts` (seconds from
    the stream's time base, None when the packet has none), `size` (bytes) and `digest` (a
    hash of its bytes)."""

    arrival: float
    pts: float | None
    size: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class Hold:
    """One condition's debounce: since when it is seen (or gone, while alarmed)."""

    active: bool = False
    since: float | None = None  # condition seen since (not active) / gone since (active)


class Sharpness(NamedTuple):
    """The defocus measure, each divided by the thumbnail's variance: `fine` (the half-size
    frame's Laplacian energy, its noise in) and the noise's share of it, `fine_floor`;
    `coarse` (the thumbnail's, above the noise floor: the noise's share taken off, of the
    variance too) and the share taken off, `coarse_floor`."""

    fine: float = 0.0
    fine_floor: float = 0.0
    coarse: float = 0.0
    coarse_floor: float = 0.0

    def judged(self) -> tuple[bool, bool]:
        """As a reference: whether its fine and its coarse scale have structure above their
        noise floor (MIN_SIGNAL_TO_NOISE)."""
        return (self.fine - self.fine_floor > MIN_SIGNAL_TO_NOISE * self.fine_floor,
                self.coarse > MIN_SIGNAL_TO_NOISE * self.coarse_floor)


@dataclass(frozen=True, slots=True, eq=False)
class Reference:
    """The healthy scene: a blurred thumbnail (normalised to mean 0, std 1 over the analysed
    cells, 0 on the overlay) and its sharpness."""

    thumb: np.ndarray = field(repr=False)
    sharpness: Sharpness = Sharpness()


@dataclass(frozen=True, slots=True, eq=False)
class Overlay:
    """The learned scheduled regions. `cells`: bool per thumbnail pixel that ticks; `analysed`:
    bool per thumbnail pixel the measures read (not the cells, not their OSD lines)."""

    cells: np.ndarray = field(repr=False)
    analysed: np.ndarray = field(repr=False)
    # `analysed` as OpenCV's masks are: uint8, 255 analysed (made once: read on every frame)
    mask: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mask", self.analysed.view(np.uint8) * np.uint8(255))


def _no_holds() -> Mapping[str, Hold]:
    return MappingProxyType({name: Hold() for name in (*KINDS[:3], *EVIDENCE)})


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
    building_sharpness: tuple[Sharpness, ...] = ()
    # covered, defocused, turned, and frozen's three evidences (frozen: any of them)
    holds: Mapping[str, Hold] = field(default_factory=_no_holds)
    last_digest: np.ndarray | None = field(default=None, repr=False)
    still_since: float | None = None  # the first frame of the current still run
    frozen_since: float | None = None  # the first frame of the current identical run
    frozen_pairs: int = 0  # identical consecutive pairs in the run
    frozen_jumps: int = 0  # key-frame-sized jumps the run survived
    # the overlay being learned: each cell's decayed count of changes, which changed last
    overlay_score: np.ndarray | None = field(default=None, repr=False)
    overlay_score_t: float = 0.0  # the stream time the scores are decayed to
    last_changed: np.ndarray | None = field(default=None, repr=False)
    last_changed_count: int = 0
    overlay: Overlay | None = None
    last_tick_t: float | None = None  # the overlay last changed
    # the stream's packets
    last_arrival: float | None = None
    last_pts: float | None = None
    last_packet: tuple[int, bytes] | None = field(default=None, repr=False)
    stalled_since: float | None = None  # arrival before the first packet whose pts stood
    repeated_since: float | None = None  # arrival of the first of identical packets
    # the sharpness is measured on every other frame while no defocus is pending (the hold not
    # counting): the frame between, not measured, is kept as (t, its dt, grey) and judged with
    # the next only when the next one's judgement differs from the hold's state, i.e. only
    # when it could have started counting the hold. As a hold_seconds above 0 can start or
    # end no alarm on the frame it starts counting, the alarms and their times are those of a
    # judgement on every frame.
    deferred: tuple[float, float, np.ndarray] | None = field(default=None, repr=False)

    @property
    def active(self) -> frozenset[TamperKind]:
        """The kinds alarmed now."""
        kinds: set[TamperKind] = {kind for kind in KINDS[:3] if self.holds[kind].active}
        if any(self.holds[e].active for e in EVIDENCE):
            kinds.add("frozen")
        return frozenset(kinds)


@dataclass(frozen=True, slots=True)
class _Measures:
    level: float  # median grey (thumbnail, analysed cells)
    spread: float  # robust std dev: (84th - 16th percentile) / 2
    mean: float
    sharpness: Sharpness | None  # None: not measured on this frame (deferred)
    digest: np.ndarray
    thumb: np.ndarray  # blurred and normalised (0 off the analysed cells)
    coherence: float  # std of the blurred thumbnail / std of the thumbnail: 1 smooth shapes


def _normalised(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Mean 0, std 1 over `mask` (uint8, 255 analysed; None: all), 0 off it."""
    mean, std = (float(v[0][0]) for v in cv2.meanStdDev(image, mask=mask))
    out = (image - np.float32(mean)) / np.float32(std if std > 1e-6 else 1.0)
    if mask is None:
        return out
    return cv2.bitwise_and(out, out, mask=mask)  # zero where not analysed


def _percentiles(image: np.ndarray, mask: np.ndarray | None,
                 fractions: tuple[float, ...]) -> list[float]:
    """Percentiles of a uint8 image over `mask` from its histogram (np.percentile sorts)."""
    histogram = cv2.calcHist([image], [0], mask, [256], [0, 256]).ravel()
    cumulative = np.cumsum(histogram)
    total = cumulative[-1] if cumulative[-1] > 0 else 1.0
    return [float(np.searchsorted(cumulative, f * total)) for f in fractions]


def _thumbnail(grey: np.ndarray) -> np.ndarray:
    """About THUMB_WIDTH wide, each pixel the mean of a whole number of the frame's pixels
    (OpenCV's integer area path: a fraction of the cost of a fractional one)."""
    factor = _factor(grey.shape)
    height, width = grey.shape
    rows, cols = height // factor, width // factor
    return cv2.resize(grey[: rows * factor, : cols * factor], (cols, rows),
                      interpolation=cv2.INTER_AREA)


def _factor(shape: tuple[int, ...]) -> int:
    height, width = shape[:2]
    return max(1, min(round(width / THUMB_WIDTH), height))


def _trimmed_mean(energy: np.ndarray, overlay: Overlay | None) -> float:
    """The mean energy over the analysed cells less the sharpest SHARPEST_LEFT_OUT."""
    cells = energy.ravel() if overlay is None else energy[overlay.analysed]
    keep = max(1, int(cells.size * (1 - SHARPEST_LEFT_OUT)))
    return cv2.sumElems(np.partition(cells, keep - 1)[:keep])[0] / keep


def _noise_sigma(region: np.ndarray) -> float:
    """The std dev of `region`'s (uint8) white noise, from Immerkaer's kernel: its absolute
    response as uint8 (an integer), the mean of the quieter half from its histogram."""
    if min(region.shape) < 3:
        return 0.0
    # the kernel is Sobel's second difference across and down ([1, -2, 1] each way)
    response = cv2.convertScaleAbs(cv2.Sobel(region, cv2.CV_16S, 2, 2, ksize=3)[1:-1, 1:-1])
    histogram = cv2.calcHist([response], [0], None, [256], [0, 256]).ravel()
    cumulative = np.cumsum(histogram)
    half = float(cumulative[-1]) / 2
    median = int(np.searchsorted(cumulative, half))
    below = float(cumulative[median - 1]) if median else 0.0
    total = float(histogram[:median] @ _LEVELS[:median]) + (half - below) * median
    return total / half / (6 * _HALF_NORMAL_LOWER_MEAN)


def _sharpness(grey: np.ndarray, digest: np.ndarray, raw_std: float,
               overlay: Overlay | None) -> Sharpness:
    """The defocus measure of a frame whose thumbnail is `digest` (its std dev over the
    analysed cells `raw_std`)."""
    # the Laplacian's energy per thumbnail cell, on the frame at half size where the cells
    # are whole pixels there (a quarter of the work; a defocus blurs far more than a pixel)
    factor = _factor(grey.shape)
    rows, cols = digest.shape
    region = grey[: rows * factor, : cols * factor]
    region_factor = 1  # the region's pixels per frame pixel, across
    if factor % 2 == 0:
        region = cv2.resize(region, (cols * factor // 2, rows * factor // 2),
                            interpolation=cv2.INTER_AREA)
        region_factor = 2
    # in integers (exact, and cheaper than float), squared into float32 (still exact)
    laplacian = cv2.Laplacian(cv2.GaussianBlur(region, (3, 3), 0), cv2.CV_16S)
    energy = cv2.resize(cv2.multiply(laplacian, laplacian, dtype=cv2.CV_32F), (cols, rows),
                        interpolation=cv2.INTER_AREA)
    # against the picture's own contrast (the thumbnail's: a dimmer light is no blur)
    variance = max(raw_std * raw_std, 1.0)
    region_noise = _noise_sigma(region) ** 2
    fine = _trimmed_mean(energy, overlay) / variance
    fine_floor = (_LOG_ENERGY * region_noise + ROUNDING_ENERGY) / variance
    # the coarse scale, above the noise floor: the region's noise averaged over a cell's
    # (factor / region_factor)^2 of its pixels (white noise: the variance falls with their
    # count; a real sensor's, correlated a little, falls less, and is then under-counted)
    noise = region_noise * (region_factor / factor) ** 2 + QUANTISATION
    coarse_laplacian = cv2.Laplacian(cv2.GaussianBlur(digest.astype(np.float32), (3, 3), 0),
                                     cv2.CV_32F)  # in float: the digest's rounding is counted
    noise_energy = NOISE_ENERGY * noise
    signal_variance = max(raw_std * raw_std - noise, 1.0)
    coarse_energy = _trimmed_mean(cv2.multiply(coarse_laplacian, coarse_laplacian), overlay)
    return Sharpness(fine, fine_floor, max(coarse_energy - noise_energy, 0.0) / signal_variance,
                     noise_energy / signal_variance)


def _measure(grey: np.ndarray, overlay: Overlay | None, sharp: bool = True) -> _Measures:
    """The frame's measures; its sharpness (the costliest) only if `sharp`."""
    mask = None if overlay is None else overlay.mask
    digest = _thumbnail(grey)
    p16, p50, p84 = _percentiles(digest, mask, (0.16, 0.5, 0.84))
    mean, raw_std = (float(v[0][0]) for v in cv2.meanStdDev(digest, mask=mask))
    sharpness = _sharpness(grey, digest, raw_std, overlay) if sharp else None
    # the overlay's cells filled with the picture's level first: blurred, they would bleed
    # into the analysed cells around them
    filled = digest.astype(np.float32)
    if overlay is not None:
        filled[~overlay.analysed] = p50
    blurred = cv2.GaussianBlur(filled, (5, 5), 0)
    blurred_std = float(cv2.meanStdDev(blurred, mask=mask)[1][0][0])
    # the scene's shapes without what stays with the camera when it turns (the lens'
    # vignetting, the light's fall-off): the blurred thumbnail less an eighth-size version
    rows, cols = filled.shape
    low = cv2.resize(cv2.resize(filled, (max(1, cols // LOW_PASS), max(1, rows // LOW_PASS)),
                                interpolation=cv2.INTER_AREA), (cols, rows),
                     interpolation=cv2.INTER_LINEAR)
    thumb = _normalised(blurred - low, mask)
    coherence = blurred_std / raw_std if raw_std > 1e-6 else 0.0
    return _Measures(p50, (p84 - p16) / 2, mean, sharpness, digest, thumb, coherence)


def _similarity(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Correlation of two normalised thumbnails: 1 the same structure, 0 unrelated."""
    count = a.size if mask is None else max(1, cv2.countNonZero(mask))
    return float(np.dot(a.ravel(), b.ravel())) / count


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


def _frozen_active(holds: Mapping[str, Hold]) -> bool:
    return any(holds[e].active for e in EVIDENCE)


def _transitions(before: Mapping[str, Hold], after: Mapping[str, Hold], t: float,
                 detail: Mapping[str, float], config: TamperConfig) -> list[TamperEvent]:
    """The alarms that started or ended between two sets of holds."""
    frozen_detail = MappingProxyType(dict(detail))
    events: list[TamperEvent] = []
    for kind in KINDS[:3]:
        if after[kind].active != before[kind].active:
            events.append(TamperEvent(kind, "start" if after[kind].active else "end", t,
                                      frozen_detail))
    was, now = _frozen_active(before), _frozen_active(after)
    if was != now:
        evidence = next((e for e in EVIDENCE if (after if now else before)[e].active), None)
        severity: Severity = "warning" if evidence == "picture" else "critical"
        events.append(TamperEvent("frozen", "start" if now else "end", t, frozen_detail,
                                  severity, evidence))
    return events


def _rounded(detail: Mapping[str, float]) -> dict[str, float]:
    """An event's detail as reported: grey levels to 2 places, the rest to 3."""
    return {key: round(value, 2 if key in ("mean", "level", "spread") else 3)
            for key, value in detail.items()}


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
        return replace(state, camera_id=frame.camera_id, shape=grey.shape, last_t=t,
                       deferred=None), []

    overlay = state.overlay
    reference = state.reference
    hold = state.holds["defocused"]
    # the sharpness (the costliest measure) every other frame while no defocus is pending
    # (see TamperState.deferred); a pending one is judged on every frame
    defer = (reference is not None and state.deferred is None and hold.since is None
             and config.hold_seconds > 0)
    m = _measure(grey, overlay, sharp=not defer)
    mask = None if overlay is None else overlay.mask
    dark_or_uniform = m.level < config.dark_below or m.spread < config.uniform_std
    structureless = m.spread < STRUCTURE_FLOOR or m.coherence < STRUCTURE_COHERENCE
    # rounded only for an event (_rounded)
    detail: dict[str, float] = {"mean": m.mean, "level": m.level, "spread": m.spread,
                                "coherence": m.coherence}

    defocused: bool | None = None
    turned: bool | None = None
    deferred: tuple[float, float, np.ndarray] | None = None
    if reference is not None:
        similarity = _similarity(m.thumb, reference.thumb, mask)
        detail["similarity"] = similarity
        # no structure left, and not the reference's (a dark view with structure of its own,
        # e.g. the floor of a camera knocked down at night, is turned)
        covered = (dark_or_uniform and structureless
                   and similarity < config.scene_similarity)
        if not covered:
            if m.sharpness is None:  # judged with the next frame's, if that one needs it
                deferred = (t, 0.0 if state.last_t is None else t - state.last_t, grey.copy())
            else:
                defocused, ratios = _defocused(m.sharpness, reference, config)
                detail.update(ratios)
            turned = similarity < config.scene_similarity
    else:
        covered = dark_or_uniform and structureless

    # what changed since the last frame: the picture (off the overlay) and the overlay's cells
    still = identical = False
    changed: np.ndarray | None = None
    ticked = False
    dt = 0.0 if state.last_t is None else t - state.last_t
    if state.last_digest is not None:
        difference = cv2.absdiff(m.digest, state.last_digest)
        change = cv2.mean(difference, mask=mask)[0]
        local = cv2.minMaxLoc(difference, mask=mask)[1]
        still = change <= FROZEN_JUMP and local <= FROZEN_LOCAL_MAX
        identical = still and change <= FROZEN_TOLERANCE
        # the noise's std dev from the mean absolute difference (a Gaussian's: 0.8 sigma)
        noise = cv2.mean(difference)[0] * 1.2533
        changed = difference > max(CELL_CHANGE, 4.0 * noise)
        if overlay is not None:
            # frames further apart than a clock's second (analysis shed to key frames, or
            # set to 1 fps or less) may fall on the same digit or LED phase each time: such a
            # gap counts as a tick, never as a stopped clock (the clock evidence rests on
            # frames close enough to see it tick)
            ticked = bool(np.any(changed & overlay.cells)) or dt > CLOCK_SAMPLE_SECONDS
        detail["change"] = change
    live = frame.packets_alive
    still_since = (state.still_since if state.still_since is not None else state.last_t) \
        if still and live else None
    last_tick_t = t if ticked else state.last_tick_t

    frozen_since, pairs, jumps = state.frozen_since, state.frozen_pairs, state.frozen_jumps
    survivable = (still and not identical and frozen_since is not None
                  and jumps + 1 <= FROZEN_JUMP_SHARE * (pairs + jumps + 1))
    if live and (identical or survivable) and not covered:
        if frozen_since is None:
            assert state.last_t is not None, "a digest to compare means a frame came before"
            frozen_since, pairs, jumps = state.last_t, 0, 0
        pairs, jumps = (pairs + 1, jumps) if identical else (pairs, jumps + 1)
    else:
        frozen_since, pairs, jumps = None, 0, 0

    window = config.frozen_seconds
    clock: bool | None = None
    picture: bool | None = None
    if live:
        clock = (overlay is not None and still_since is not None and last_tick_t is not None
                 and not covered and t - still_since >= window and t - last_tick_t >= window)
        if config.frozen_picture_only_seconds is not None:
            picture = (frozen_since is not None
                       and t - frozen_since >= config.frozen_picture_only_seconds)
    if still_since is not None:
        detail["still_seconds"] = t - still_since
    if overlay is not None and last_tick_t is not None:
        detail["clock_stopped_seconds"] = t - last_tick_t

    present: dict[str, bool | None] = {
        "covered": covered, "defocused": defocused, "turned": turned,
        "clock": clock, "picture": picture, "stream": None}
    holds: dict[str, Hold] = {}
    for name, before in state.holds.items():
        needed = 0.0 if name in EVIDENCE else config.hold_seconds  # frozen: its window
        if name == "defocused" and state.deferred is not None and reference is not None \
                and defocused != hold.active:
            # the deferred frame's judgement can change the hold: judged now, in its place
            deferred_t, _, deferred_grey = state.deferred
            before = _hold(before, _defocused(_sharpness_of(deferred_grey, overlay), reference,
                                              config)[0], deferred_t, needed,
                           config.hold_seconds)
        holds[name] = _hold(before, present[name], t, needed, config.hold_seconds)
    events = (_transitions(state.holds, holds, t, _rounded(detail), config)
              if any(holds[name].active != state.holds[name].active for name in holds)
              else [])

    new = replace(state, camera_id=frame.camera_id, shape=grey.shape, last_t=t,
                  holds=MappingProxyType(holds), last_digest=m.digest, still_since=still_since,
                  frozen_since=frozen_since, frozen_pairs=pairs, frozen_jumps=jumps,
                  last_tick_t=last_tick_t, deferred=deferred)
    healthy = not covered and not any(h.active or h.since is not None for h in holds.values())
    if changed is not None:
        new = _learn_overlay(new, changed, t, healthy, config)
        if new.overlay is not overlay:  # the measures read other cells: a new reference
            return replace(new, reference=None, building_since=None, building_sum=None,
                           building_sharpness=(), deferred=None), events
    if reference is None and not covered:
        new = _build(new, m, t)
    elif reference is not None and healthy and not identical and state.last_t is not None:
        weight = min(1.0, max(0.0, dt) / REFRESH_SECONDS)
        sharpness = reference.sharpness
        if m.sharpness is not None:  # for this frame's time and a deferred one's before it
            since = dt + (state.deferred[1] if state.deferred is not None else 0.0)
            both = min(1.0, max(0.0, since) / REFRESH_SECONDS)
            sharpness = Sharpness(*((1 - both) * old + both * now
                                    for old, now in zip(sharpness, m.sharpness, strict=True)))
        new = replace(new, reference=Reference(
            _normalised((1 - weight) * reference.thumb + weight * m.thumb, mask), sharpness))
    return new, events


def _defocused(sharpness: Sharpness, reference: Reference,
               config: TamperConfig) -> tuple[bool | None, dict[str, float]]:
    """Whether a frame's `sharpness` is a defocus against the reference's (None: neither scale
    judged), and the ratios that say so."""
    # at either scale judged (its structure above its noise floor); neither: unknown
    fine_judged, coarse_judged = reference.sharpness.judged()
    ratios: dict[str, float] = {}
    if fine_judged:
        ratios["sharpness_ratio"] = sharpness.fine / reference.sharpness.fine
    if coarse_judged:
        ratios["coarse_sharpness_ratio"] = sharpness.coarse / reference.sharpness.coarse
    if not ratios:
        return None, ratios
    return min(ratios.values()) < config.blur_ratio, ratios


def _sharpness_of(grey: np.ndarray, overlay: Overlay | None) -> Sharpness:
    """The defocus measure of a frame on its own (a deferred one)."""
    digest = _thumbnail(grey)
    mask = None if overlay is None else overlay.mask
    raw_std = float(cv2.meanStdDev(digest, mask=mask)[1][0][0])
    return _sharpness(grey, digest, raw_std, overlay)


def _learn_overlay(state: TamperState, changed: np.ndarray, t: float, healthy: bool,
                   config: TamperConfig) -> TamperState:
    """Count each cell's short changes while the rest is quiet; latch the cells that reach
    OVERLAY_TICKS (only while all is well: a new overlay means a new reference). The scores
    decay with overlay_learn_seconds, applied when they next change (a still frame after a
    still frame costs nothing)."""
    count = cv2.countNonZero(changed.view(np.uint8))
    previous = state.last_changed
    if count == 0 and state.last_changed_count == 0 and previous is not None \
            and previous.shape == changed.shape:
        return state
    score = state.overlay_score
    if score is None or score.shape != changed.shape:
        score = np.zeros(changed.shape, np.float32)
    if previous is None or previous.shape != changed.shape:
        previous = np.zeros(changed.shape, bool)
    overlay = state.overlay
    if count and count <= OVERLAY_QUIET_FRACTION * changed.size:
        decay = math.exp(-max(0.0, t - state.overlay_score_t) / config.overlay_learn_seconds)
        score = score * np.float32(decay) + (changed & ~previous).astype(np.float32)
        cells = np.zeros(changed.shape, bool) if overlay is None else overlay.cells
        learned = (score >= OVERLAY_TICKS) & ~cells
        if healthy and learned.any() and \
                int(np.count_nonzero(cells | learned)) <= OVERLAY_MAX_FRACTION * cells.size:
            overlay = _overlay(cells | learned)
        return replace(state, overlay_score=score, overlay_score_t=t, last_changed=changed,
                       last_changed_count=count, overlay=overlay)
    return replace(state, overlay_score=score, last_changed=changed, last_changed_count=count)


def _overlay(cells: np.ndarray) -> Overlay:
    """The analysed cells for learned overlay `cells`: the cells and, for those in the top or
    bottom band, their whole text line and the other edge's (one cell row more above and
    below each)."""
    rows, _ = cells.shape
    hidden = cells.copy()
    band = max(1, round(OSD_BAND * rows))
    for row in np.flatnonzero(cells.any(axis=1)):
        if row < band or row >= rows - band:
            mirrored = rows - 1 - row  # the other edge's line: a camera's name, its caption
            for line in (row, mirrored):
                hidden[max(0, line - 1): line + 2, :] = True
    return Overlay(cells, ~hidden)


def _build(state: TamperState, m: _Measures, t: float) -> TamperState:
    """Gather healthy frames until REFERENCE_SECONDS have passed, then fix the reference."""
    since = t if state.building_since is None else state.building_since
    total = m.thumb.copy() if state.building_sum is None else state.building_sum + m.thumb
    assert m.sharpness is not None, "measured on every frame until the reference is known"
    sharpness = (*state.building_sharpness, m.sharpness)
    if t - since >= REFERENCE_SECONDS and len(sharpness) >= 3:
        mask = None if state.overlay is None else state.overlay.mask
        median = Sharpness(*(float(v) for v in np.median(np.array(sharpness), axis=0)))
        reference = Reference(_normalised(total, mask), median)
        return replace(state, reference=reference, building_since=None, building_sum=None,
                       building_sharpness=())
    return replace(state, building_since=since, building_sum=total,
                   building_sharpness=sharpness)


def observe_packet(state: TamperState, packet: PacketFacts,
                   config: TamperConfig) -> tuple[TamperState, list[TamperEvent]]:
    """One packet of the recorded stream: the "stream" evidence of a freeze (the same packet
    again and again, or timestamps that stopped while packets arrive), judged on arrival time
    (a stalled camera's frames never reach the analysis, its stream time stands still)."""
    if not config.enabled:
        return state, []
    arrival = float(packet.arrival)
    stalled, repeated = state.stalled_since, state.repeated_since
    previous = state.last_arrival
    if previous is None or arrival < previous:  # the first, or the wall clock went back
        stalled = repeated = None
    else:
        advancing = packet.pts is None or state.last_pts is None or packet.pts > state.last_pts
        stalled = None if advancing else (previous if stalled is None else stalled)
        same = state.last_packet == (packet.size, packet.digest)
        repeated = None if not same else (previous if repeated is None else repeated)
    since = min((s for s in (stalled, repeated) if s is not None), default=None)
    present = since is not None and arrival - since >= config.frozen_seconds
    holds = dict(state.holds)
    holds["stream"] = _hold(state.holds["stream"], present, arrival, 0.0, config.hold_seconds)
    detail: dict[str, float] = {}
    if stalled is not None:
        detail["stalled_seconds"] = round(arrival - stalled, 3)
    if repeated is not None:
        detail["repeated_seconds"] = round(arrival - repeated, 3)
    t = state.last_t if state.last_t is not None else 0.0
    events = _transitions(state.holds, holds, t, detail, config)
    pts = packet.pts if packet.pts is not None else state.last_pts
    return replace(state, holds=MappingProxyType(holds), last_arrival=arrival, last_pts=pts,
                   last_packet=(packet.size, packet.digest), stalled_since=stalled,
                   repeated_since=repeated), events


def reference_ready(state: TamperState) -> bool:
    """Defocus and turning can be judged (the healthy scene is known)."""
    return state.reference is not None


def overlay_motion_mask(state: TamperState, shape: tuple[int, int],
                        mask: np.ndarray | None) -> np.ndarray | None:
    """`mask` (motion's analysis mask at the frame's `shape`: 255 analysed, or None for all)
    with the learned overlay taken out too: the clock's ticking cells and their OSD lines at
    the frame's resolution. A burned-in clock is not motion (10 minutes of an empty room
    with one raised 17 motion starts); the tamper detector learns where it is, motion reuses
    that. Unchanged while nothing is learned."""
    overlay = state.overlay
    if overlay is None or bool(overlay.analysed.all()):
        return mask
    height, width = shape
    frame_mask = cv2.resize(overlay.mask, (width, height), interpolation=cv2.INTER_NEAREST)
    return frame_mask if mask is None else cv2.bitwise_and(mask, frame_mask)


def overlay_cells(state: TamperState) -> int:
    """How many thumbnail cells were learned as a scheduled overlay (the clock)."""
    return 0 if state.overlay is None else int(np.count_nonzero(state.overlay.cells))
