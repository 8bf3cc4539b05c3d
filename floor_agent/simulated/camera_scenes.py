"""Scripted synthetic camera scenes with ground truth, for motion/tamper tests and the simulator.

A camera on a production floor is a fixed view of a textured room: the scene here is a larger
textured world (shapes, gradients, fine texture) of which the camera sees one window, with sensor
noise on every frame. A script says what happens and when: objects crossing the view, the light
switched on (brightness jumps, structure unchanged), the lens covered, defocused, the camera
turned to another part of the world, the image frozen. Every frame comes with its truth, so a
detector's precision and recall can be measured frame by frame.

What a real camera adds is there too, for the tamper tests' realistic streams: sensor noise of
any strength (`noise`: a dark room at night is a noisy picture), the noise as a camera's encoder
delivers a still scene (`key_every`: x264 at a camera's settings skips the unchanged blocks of a
still scene, so the decoded noise changes only at key frames: 0.0-0.1 grey levels between key
frames, 0.3-0.9 at them, measured on the small frame), the lens' fall-off towards the corners
(`vignette`, which stays with the camera when it turns) and the burned-in clock every IP camera
overlays (`Clock`, drawn on the sensor's picture: it stops when the image freezes).

Numpy (and OpenCV's text for the clock) and deterministic: the same seed gives the same world, and
frame i's noise depends only on (seed, i), so any frame can be regenerated on its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

WORLD_SCALE = (3, 2)  # the world is this many views wide and high
NOISE_SIGMA = 2.0  # sensor noise, grey levels


@dataclass(frozen=True, slots=True)
class MovingObject:
    """A thing crossing the view: visible from `enter` to `leave` (seconds), moving in a straight
    line from `start` to `end` (its centre, fractions of the view; may lie outside the view so it
    walks in and out). `size` is (width, height) in fractions of the view."""

    name: str
    enter: float
    leave: float
    start: tuple[float, float]
    end: tuple[float, float]
    size: tuple[float, float] = (0.12, 0.3)
    level: int = 230  # its grey level (before lighting)


@dataclass(frozen=True, slots=True)
class Lighting:
    """The light changes from `start` to `end`: every pixel becomes grey * gain + offset, so the
    brightness jumps while the scene's structure stays the same (lights on, IR switch, night)."""

    start: float
    end: float = math.inf
    gain: float = 1.5
    offset: float = 40.0


@dataclass(frozen=True, slots=True)
class Covered:
    """The lens covered (dark, `level` low) or sprayed (uniform, `level` mid-grey)."""

    start: float
    end: float = math.inf
    level: int = 6


@dataclass(frozen=True, slots=True)
class Defocused:
    """The lens defocused: a heavy blur, `radius` in fractions of the view's width."""

    start: float
    end: float = math.inf
    radius: float = 0.03


@dataclass(frozen=True, slots=True)
class Turned:
    """The camera turned: the view moves by `shift` (fractions of the view) across the world."""

    start: float
    end: float = math.inf
    shift: tuple[float, float] = (1.3, 0.6)


@dataclass(frozen=True, slots=True)
class Frozen:
    """The image frozen: the frame shown at `start` is repeated, identical, until `end`."""

    start: float
    end: float = math.inf


@dataclass(frozen=True, slots=True)
class Clock:
    """The camera's burned-in clock (OSD): "YYYY-MM-DD HH:MM:SS" in white with a dark outline,
    `height` of the frame high, in the top left corner, showing `epoch` + stream time. Drawn by
    the camera after the lens and the sensor: covered, defocused or turned, it stays readable;
    frozen, it stops with the picture. `caption`: the camera's name as cameras show it too,
    bottom left, the same size, never changing."""

    start: float = 0.0
    end: float = math.inf
    epoch: float = 1_796_000_000.0  # 2026-11-28, seconds since 1970
    height: float = 0.045
    caption: str = ""


Happening = MovingObject | Lighting | Covered | Defocused | Turned | Frozen | Clock

CONDITION_NAMES: dict[type, str] = {
    Lighting: "light", Covered: "covered", Defocused: "defocused", Turned: "turned",
    Frozen: "frozen",
}


@dataclass(frozen=True, slots=True)
class Script:
    """What happens in a scene, for `duration` seconds."""

    duration: float
    happenings: tuple[Happening, ...] = ()


@dataclass(frozen=True, slots=True)
class ObjectTruth:
    """One object in a frame: its visible box (x, y, w, h) and area, fractions of the frame."""

    name: str
    box: tuple[float, float, float, float]
    area: float


@dataclass(frozen=True, slots=True)
class FrameTruth:
    """What a frame shows: the objects in view and the conditions on ("light", "covered",
    "defocused", "turned", "frozen"). A frozen frame shows the objects of the frozen moment."""

    index: int
    t: float
    objects: tuple[ObjectTruth, ...]
    conditions: frozenset[str]

    def moving(self, min_area: float = 0.0) -> bool:
        """Something visibly moves: an object of more than `min_area` of the frame is in view
        and the image is live (a frozen image shows no movement)."""
        if "frozen" in self.conditions or "covered" in self.conditions:
            return False
        return any(o.area > min_area for o in self.objects)


class SceneFrame(NamedTuple):
    """One generated frame: stream time, the grey image (uint8, height x width), its truth."""

    t: float
    grey: np.ndarray
    truth: FrameTruth


def _active(h: Happening, t: float) -> bool:
    if isinstance(h, MovingObject):
        return h.enter <= t < h.leave
    return h.start <= t < h.end


def _box_blur(image: np.ndarray, radius: int, passes: int = 3) -> np.ndarray:
    """A Gaussian-like blur of a 2-D image from repeated box filters (cumulative sums), edges
    clamped."""
    out = image.astype(np.float32)
    if radius < 1:
        return out
    width = 2 * radius + 1
    for _ in range(passes):
        padded = np.pad(out, [(radius + 1, radius), (0, 0)], mode="edge")
        sums = np.cumsum(padded, axis=0, dtype=np.float64)
        out = ((sums[width:] - sums[:-width]) / width).astype(np.float32)
        padded = np.pad(out, [(0, 0), (radius + 1, radius)], mode="edge")
        sums = np.cumsum(padded, axis=1, dtype=np.float64)
        out = ((sums[:, width:] - sums[:, :-width]) / width).astype(np.float32)
    return out


class Scene:
    """A fixed camera's view of a textured world. `frames(script)` yields SceneFrame(t, grey,
    truth) at `fps`, grey frames of `height` x `width`."""

    def __init__(self, width: int, height: int, fps: float, seed: int = 0, *,
                 noise: float = NOISE_SIGMA, key_every: int | None = None,
                 vignette: float = 0.0) -> None:
        """`noise`: the sensor noise's std dev (grey levels); `key_every`: the noise is new only
        every this many frames, as a camera's encoder delivers a still scene (None: every
        frame); `vignette`: the corners this much darker than the centre (0-1), fixed to the
        frame."""
        if width < 16 or height < 16:
            raise ValueError(f"scene size {width}x{height}: at least 16x16 pixels")
        if not fps > 0:
            raise ValueError(f"scene fps {fps}: must be positive")
        self.width = width
        self.height = height
        self.fps = float(fps)
        self.seed = seed
        if noise < 0 or not 0 <= vignette < 1 or (key_every is not None and key_every < 1):
            raise ValueError(f"scene noise {noise}, vignette {vignette}, key_every {key_every}: "
                             "noise >= 0, 0 <= vignette < 1, key_every >= 1")
        self.noise = float(noise)
        self.key_every = key_every
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        r2 = ((xx - (width - 1) / 2) / (width / 2)) ** 2 + ((yy - (height - 1) / 2)
                                                             / (height / 2)) ** 2
        self.falloff = (1.0 - vignette * r2 / 2.0).astype(np.float32)  # corners: r2 == 2
        self.world = self._world()

    def __repr__(self) -> str:
        return f"Scene({self.width}x{self.height} @ {self.fps:g} fps, seed {self.seed})"

    def _world(self) -> np.ndarray:
        """Shapes of many sizes and greys over a gentle gradient, with a fine texture."""
        rng = np.random.default_rng([self.seed, 0x5CE1E])
        wh, ww = self.height * WORLD_SCALE[1], self.width * WORLD_SCALE[0]
        yy, xx = np.mgrid[0:wh, 0:ww].astype(np.float32)
        angle = rng.uniform(0, 2 * math.pi)
        gradient = (np.cos(angle) * xx / ww + np.sin(angle) * yy / wh) * 30.0
        world = 110.0 + gradient
        unit = min(self.width, self.height)
        for _ in range(int(60 * WORLD_SCALE[0] * WORLD_SCALE[1])):
            cx, cy = rng.uniform(0, ww), rng.uniform(0, wh)
            rx, ry = rng.uniform(0.03, 0.25, size=2) * unit
            level = rng.uniform(25, 215)
            if rng.random() < 0.5:
                inside = (np.abs(xx - cx) < rx) & (np.abs(yy - cy) < ry)
            else:
                inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1.0
            world[inside] = level
        texture = _box_blur(rng.normal(0.0, 1.0, size=(wh, ww)), 1, passes=1)
        world = world + texture * 12.0
        return np.clip(world, 0, 255).astype(np.float32)

    def _view(self, shift: tuple[float, float]) -> np.ndarray:
        wh, ww = self.world.shape
        x = int(round(shift[0] * self.width)) % (ww - self.width + 1)
        y = int(round(shift[1] * self.height)) % (wh - self.height + 1)
        return self.world[y:y + self.height, x:x + self.width].copy()

    def _objects(self, happenings: Sequence[Happening], t: float,
                 image: np.ndarray | None) -> tuple[ObjectTruth, ...]:
        """The objects in view at t (drawn into `image` when given), with their visible box."""
        found: list[ObjectTruth] = []
        for h in happenings:
            if not isinstance(h, MovingObject) or not _active(h, t):
                continue
            span = h.leave - h.enter
            f = 0.0 if span <= 0 else (t - h.enter) / span
            cx = (h.start[0] + (h.end[0] - h.start[0]) * f) * self.width
            cy = (h.start[1] + (h.end[1] - h.start[1]) * f) * self.height
            half_w, half_h = h.size[0] * self.width / 2, h.size[1] * self.height / 2
            x0, x1 = max(0, int(round(cx - half_w))), min(self.width, int(round(cx + half_w)))
            y0, y1 = max(0, int(round(cy - half_h))), min(self.height, int(round(cy + half_h)))
            if x1 <= x0 or y1 <= y0:
                continue
            if image is not None:
                patch = np.full((y1 - y0, x1 - x0), float(h.level), np.float32)
                patch[::4, :] -= 40.0  # stripes: a textured object, not a flat card
                image[y0:y1, x0:x1] = patch
            area = (x1 - x0) * (y1 - y0) / (self.width * self.height)
            found.append(ObjectTruth(h.name, (x0 / self.width, y0 / self.height,
                                              (x1 - x0) / self.width, (y1 - y0) / self.height),
                                     area))
        return tuple(found)

    def render(self, script: Script, index: int) -> SceneFrame:
        """Frame `index` of the script, computed on its own (frozen frames repeat their start)."""
        t = index / self.fps
        on = [h for h in script.happenings if not isinstance(h, MovingObject) and _active(h, t)]
        conditions = frozenset(CONDITION_NAMES[type(h)] for h in on if type(h) in CONDITION_NAMES)
        frozen = next((h for h in on if isinstance(h, Frozen)), None)
        if frozen is not None:
            source = min(index, int(math.ceil(frozen.start * self.fps - 1e-9)))
            if source < index:
                shown = self.render(Script(script.duration, tuple(
                    h for h in script.happenings if h is not frozen)), source)
                return SceneFrame(t, shown.grey, FrameTruth(
                    index, t, shown.truth.objects, conditions | {"frozen"}))
        shift = (0.0, 0.0)
        for h in on:
            if isinstance(h, Turned):
                shift = h.shift
        image = self._view(shift)
        objects = self._objects(script.happenings, t, image)
        for h in on:
            if isinstance(h, Lighting):
                image = image * h.gain + h.offset
        for h in on:
            if isinstance(h, Defocused):
                image = _box_blur(image, max(1, int(round(h.radius * self.width))))
        image = image * self.falloff
        noise_index = index if self.key_every is None else index - index % self.key_every
        rng = np.random.default_rng([self.seed, noise_index])
        image = image + rng.normal(0.0, self.noise, size=image.shape)
        for h in on:
            if isinstance(h, Covered):
                image = h.level + rng.normal(0.0, min(1.0, self.noise), size=image.shape)
                objects = ()
        grey = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        for h in on:
            if isinstance(h, Clock):
                self._clock(grey, h, t)
        return SceneFrame(t, grey, FrameTruth(index, t, objects, conditions))

    def _clock(self, grey: np.ndarray, clock: Clock, t: float) -> None:
        """Burn the clock (and its caption) in."""
        text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(clock.epoch + t)))
        self._osd(grey, text, clock.height, bottom=False)
        if clock.caption:
            self._osd(grey, clock.caption, clock.height, bottom=True)

    def _osd(self, grey: np.ndarray, text: str, height: float, *, bottom: bool) -> None:
        """Burn a line of text in: drawn four times larger, then scaled down by area as a
        camera's 1080p OSD reaches the small frame (soft strokes, not single bright pixels)."""
        scale = 4
        text_h = max(4, round(height * self.height))
        font_scale = text_h * scale / 22.0  # FONT_HERSHEY_SIMPLEX is ~22 px high at 1.0
        thick = max(1, round(text_h * scale / 9))
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thick + 2)
        box_h, box_w = th + base + 4 * scale, tw + 4 * scale
        box_h += -box_h % scale
        box_w += -box_w % scale
        box_w = min(box_w, self.width * scale - 2 * scale)
        value = np.zeros((box_h, box_w), np.uint8)
        alpha = np.zeros((box_h, box_w), np.uint8)
        origin = (2 * scale, th + 2 * scale)
        cv2.putText(alpha, text, origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 255, thick + 2 *
                    scale, cv2.LINE_AA)
        cv2.putText(value, text, origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 235, thick,
                    cv2.LINE_AA)
        size = (box_w // scale, box_h // scale)
        a = cv2.resize(alpha, size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255
        v = cv2.resize(value, size, interpolation=cv2.INTER_AREA).astype(np.float32)
        x0, y0 = max(1, self.width // 40), max(1, self.height // 40)
        if bottom:
            y0 = max(0, self.height - y0 - size[1])
        region = grey[y0:y0 + size[1], x0:x0 + size[0]]
        h, w = region.shape
        mixed = region * (1 - a[:h, :w]) + v[:h, :w]
        region[...] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)

    def frames(self, script: Script) -> Iterator[SceneFrame]:
        """Every frame of the script, in order."""
        count = int(math.floor(script.duration * self.fps + 1e-9))
        for index in range(count):
            yield self.render(script, index)
