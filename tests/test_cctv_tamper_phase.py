"""cctv "frozen" does not depend on where the analysis samples fall relative to key frames
(issue 22, point 5): a live camera's phase is arbitrary.

Starved encoders, as cameras are on a busy floor: a still room with sensor noise on every
frame, H.264 High (libx264 veryfast, no B-frames) at 2 Mbit/s for 1080p's pixels (0.039 bits
per pixel; here 640x360 at 25 fps, 225 kbit/s, a camera's sub-stream the analysis reads) or
half that, key frames every 4 s or 10 s: between key frames the encoder keeps almost nothing
of the noise, the picture is still for minutes and the clock's tick is sometimes late. Each
stream is encoded once for the module, decoded and demuxed once, and every one of its frames
and packets is fed as the recorder does: every packet to `observe_packet` (its pts, size and
CRC-32, as recorder.py's `_packet_facts`), and every 5th frame to `step` (analysis_fps 5 of
25 fps) at each of the 5 frame offsets, one detector per offset.

Live, at every offset: no "frozen" alarm in 150 s (120 s for the scene without a clock), day,
night and without a clock. Frozen at every offset: the picture repeated (the encoder sends
the same picture, the clock stops with it) is caught on the stopped clock frozen_seconds
after its last tick; a stuck encoder (its last key frame's bytes sent again and again, or
its timestamps standing while packets arrive) on the stream, frozen_seconds after it began.
Each within frozen_seconds plus the hold.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import pytest

from floor_agent.cctv.config import TamperConfig
from floor_agent.cctv.downscale import small_grey
from floor_agent.cctv.model import SmallFrame
from floor_agent.cctv.tamper import PacketFacts, TamperState, observe_packet, step
from floor_agent.simulated.camera import encode_video
from floor_agent.simulated.camera_scenes import Clock, Lighting, Scene, Script

FPS = 25  # the camera's
ANALYSIS_FPS = 5  # MotionConfig.analysis_fps' default
PHASES = FPS // ANALYSIS_FPS  # the analysed frame's offset from each key frame, mod this
WIDTH, HEIGHT = 640, 360
BITS_PER_PIXEL = 2_000_000 / (1920 * 1080 * FPS)  # 2 Mbit/s at 1080p
DEFAULTS = TamperConfig()
WINDOW = DEFAULTS.frozen_seconds
HOLD = DEFAULTS.hold_seconds
LIVE = 150.0  # seconds of a live still room before a freeze (five frozen windows)
FROZEN = WINDOW + 8.0  # seconds frozen at the end of a stream
CLOCK = Clock(caption="CAM 03 FLOOR A NORTH")
NIGHT = Lighting(0, gain=0.12, offset=4)
ARRIVAL = 1_800_000_000.0  # the wall clock at the stream's start (packets' arrival)
NOISE_FIELDS = 23  # distinct noise fields, drawn in turn (a prime: no beat with the GOP)


@dataclass(frozen=True)
class Stream:
    """A starved camera: its scene (`noise` on every frame), key frames every `gop` seconds,
    `bits_per_pixel`, `frozen_at` (the picture repeated from then on, the clock too)."""

    clock: bool = True
    night: bool = False
    noise: float = 2.0
    gop: float = 4.0
    bits_per_pixel: float = BITS_PER_PIXEL
    duration: float = LIVE + FROZEN
    frozen_at: float | None = LIVE


STREAMS = {
    "clock-gop4": Stream(),
    "clock-gop10-half-rate": Stream(noise=4.0, gop=10.0, bits_per_pixel=BITS_PER_PIXEL / 2),
    "night-gop4": Stream(night=True, noise=6.0),
    # no clock: a repeated picture is then not caught (README), a stuck encoder is
    "still-gop4": Stream(clock=False, duration=120.0, frozen_at=None),
}
# from when the stuck encoder's packets stand in for the live ones (the still stream)
STUCK_AT = 80.0


def frames(stream: Stream) -> Iterator[np.ndarray]:
    """The camera's pictures: the scene without noise drawn once, a fresh noise field on every
    frame (one of NOISE_FIELDS, in turn), the clock burned in after the sensor; from
    `frozen_at` on, the picture of that instant again and again."""
    happenings = (NIGHT,) if stream.night else ()
    scene = Scene(WIDTH, HEIGHT, FPS, 3, noise=0.0, vignette=0.3)
    # the noiseless view, in float: the vignetted world, at night dimmed
    base = scene.render(Script(1.0, happenings), 0).grey.astype(np.float32)
    rng = np.random.default_rng(22)
    noise = [rng.normal(0.0, stream.noise, base.shape).astype(np.float32)
             for _ in range(NOISE_FIELDS)]
    last: np.ndarray | None = None
    for index in range(round(stream.duration * FPS)):
        t = index / FPS
        if stream.frozen_at is not None and t > stream.frozen_at and last is not None:
            yield last
            continue
        grey = np.clip(np.rint(base + noise[index % NOISE_FIELDS]), 0, 255).astype(np.uint8)
        if stream.clock:
            scene._clock(grey, CLOCK, t)  # the camera's OSD, burned in after the sensor
        last = grey
        yield grey


@dataclass
class Run:
    """One detector per analysis offset, fed one variant of a stream's packets and frames."""

    states: list[TamperState] = field(
        default_factory=lambda: [TamperState() for _ in range(PHASES)])
    # per offset: (kind, evidence, the stream time it started at: the frame's, or the
    # packet's arrival since the stream began)
    starts: list[list[tuple[str, str | None, float]]] = field(
        default_factory=lambda: [[] for _ in range(PHASES)])
    clock_stopped: list[float] = field(default_factory=lambda: [0.0] * PHASES)
    # while live: the longest run of identical packets or standing timestamps (seconds)
    stream_stopped: float = 0.0

    def packet(self, facts: PacketFacts, live: bool) -> None:
        for phase in range(PHASES):
            self.states[phase], events = observe_packet(self.states[phase], facts, DEFAULTS)
            since = [s for s in (self.states[phase].repeated_since,
                                 self.states[phase].stalled_since) if s is not None]
            if live and since:
                self.stream_stopped = max(self.stream_stopped, facts.arrival - min(since))
            self.starts[phase] += [(e.kind, e.evidence, facts.arrival - ARRIVAL) for e in events
                                   if e.phase == "start"]

    def frame(self, index: int, grey: np.ndarray, live: bool) -> None:
        phase, t = index % PHASES, index / FPS
        state, events = step(self.states[phase], SmallFrame("cam-1", t, grey), DEFAULTS)
        self.states[phase] = state
        self.starts[phase] += [(e.kind, e.evidence, t) for e in events if e.phase == "start"]
        if live and state.overlay is not None and state.last_tick_t is not None:
            self.clock_stopped[phase] = max(self.clock_stopped[phase], t - state.last_tick_t)


def analyse(path: Path, variants: tuple[str, ...], frozen_at: float | None) -> dict[str, Run]:
    """Demux and decode `path` (its picture frozen from `frozen_at`) once, feeding each
    variant's detectors as the recorder would:
    "as-is"; "repeated" (from STUCK_AT, the last key frame's packet again in every slot,
    timestamps advancing: its picture is that key frame's); "stalled" (from STUCK_AT, the
    packets' timestamps standing at the last one's)."""
    runs = {name: Run() for name in variants}
    key: tuple[bytes, np.ndarray | None] | None = None
    stalled_pts: float | None = None
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        video.thread_type = "SLICE"  # as the source decodes: a frame out for each packet in
        for packet in container.demux(video):
            if packet.dts is None or packet.pts is None or packet.time_base is None:
                continue
            pts = float(packet.pts * packet.time_base)
            arrival = ARRIVAL + pts  # a live camera: it arrives when it is taken
            stuck = pts >= STUCK_AT  # the stuck encoder's variants: from here on
            frozen = frozen_at is not None and pts >= frozen_at
            facts = PacketFacts(arrival, pts, packet.size,
                                zlib.crc32(packet).to_bytes(4, "big"))
            if packet.is_keyframe and not stuck:
                key = (bytes(packet), None)
            if not stuck:
                stalled_pts = pts
            greys = [small_grey(frame, 144) for frame in packet.decode()]
            if key is not None and key[1] is None and packet.is_keyframe and greys:
                key = (key[0], greys[0])
            assert len(greys) <= 1, "no B-frames, no frame threads: one frame a packet"
            index = round(pts * FPS)
            for name, run in runs.items():
                if name == "repeated" and stuck:
                    assert key is not None and key[1] is not None
                    run.packet(PacketFacts(arrival, pts, len(key[0]),
                                           zlib.crc32(key[0]).to_bytes(4, "big")), False)
                    run.frame(index, key[1], False)
                    continue
                if name == "stalled" and stuck:
                    run.packet(PacketFacts(arrival, stalled_pts, facts.size, facts.digest),
                               False)
                else:
                    run.packet(facts, not frozen and not (stuck and name != "as-is"))
                for grey in greys:
                    run.frame(index, grey, not frozen and not (stuck and name != "as-is"))
    return runs


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Run]]:
    folder = tmp_path_factory.mktemp("starved")
    out: dict[str, dict[str, Run]] = {}
    for name, stream in STREAMS.items():
        path = folder / f"{name}.mp4"
        encode_video(path, frames(stream), FPS, gop_seconds=stream.gop, preset="veryfast",
                     bit_rate=round(stream.bits_per_pixel * WIDTH * HEIGHT * FPS))
        variants = ("as-is",) if stream.clock else ("as-is", "repeated", "stalled")
        out[name] = analyse(path, variants, stream.frozen_at)
        runs = out[name]
        for variant, run in runs.items():
            since = stream.frozen_at if stream.frozen_at is not None else STUCK_AT
            after = [[(e, round(at - since, 2)) for _, e, at in s] for s in run.starts]
            print(f"{name} {variant}: alarms per offset (evidence, s after the freeze) "
                  f"{after}; clock stopped while live at most "
                  f"{[round(c, 1) for c in run.clock_stopped]} s, packets repeated or "
                  f"timestamps standing at most {run.stream_stopped:.2f} s")
    return out


@pytest.mark.parametrize("name", list(STREAMS))
def test_a_live_starved_stream_raises_nothing_at_any_offset(
        analysed: dict[str, dict[str, Run]], name: str) -> None:
    stream = STREAMS[name]
    end = stream.frozen_at if stream.frozen_at is not None else stream.duration
    run = analysed[name]["as-is"]
    assert run.stream_stopped == 0.0, name  # no two packets alike, timestamps advancing
    for phase in range(PHASES):
        assert [s for s in run.starts[phase] if s[2] < end] == [], (name, phase)
        if stream.clock:  # learned, and ticking: far from a stopped clock's window
            assert run.states[phase].overlay is not None, (name, phase)
            assert run.clock_stopped[phase] < WINDOW / 4, (name, phase)


@pytest.mark.parametrize("name", [n for n, s in STREAMS.items() if s.frozen_at is not None])
def test_a_repeated_picture_is_frozen_on_its_clock_at_every_offset(
        analysed: dict[str, dict[str, Run]], name: str) -> None:
    frozen_at = STREAMS[name].frozen_at
    assert frozen_at is not None
    run = analysed[name]["as-is"]
    for phase in range(PHASES):
        starts = run.starts[phase]
        assert [(kind, evidence) for kind, evidence, _ in starts] == [("frozen", "clock")], \
            (name, phase, starts)
        # the clock's last tick is at the freeze (a whole second): the window after it
        assert WINDOW <= starts[0][2] - frozen_at <= WINDOW + HOLD, (name, phase, starts)


@pytest.mark.parametrize("variant", ["repeated", "stalled"])
def test_a_stuck_encoder_is_frozen_on_its_stream_at_every_offset(
        analysed: dict[str, dict[str, Run]], variant: str) -> None:
    run = analysed["still-gop4"][variant]
    for phase in range(PHASES):
        starts = run.starts[phase]
        assert [(kind, evidence) for kind, evidence, _ in starts] == [("frozen", "stream")], \
            (variant, phase, starts)
        assert WINDOW - 1 / FPS <= starts[0][2] - STUCK_AT <= WINDOW + HOLD, \
            (variant, phase, starts)
