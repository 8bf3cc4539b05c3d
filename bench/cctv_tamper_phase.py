"""cctv "frozen" at every sampling phase on one starved-encoder stream (issue 22, point 5).

The stream and the feeding are tests/test_cctv_tamper_phase.py's (a still room with sensor
noise on every frame and the burned-in clock, H.264 at a starved rate; every packet to
`observe_packet`, every 5th frame to `step` at each of the 5 frame offsets), at the size, key
frame interval, rate, noise and encoder asked for: the test's streams at 1080p, or harsher
ones. Prints, per offset, the "frozen" alarms (evidence, seconds after the picture froze: none
may come before it), the longest the clock was seen stopped while live and the cells learned.

    PYTHONPATH=. nice -n 19 .venv/bin/python bench/cctv_tamper_phase.py --size 1920x1080
    PYTHONPATH=. nice -n 19 .venv/bin/python bench/cctv_tamper_phase.py --night --noise 8 \\
        --gop 20 --bits-per-pixel 0.01
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from floor_agent.simulated.camera import encode_video  # noqa: E402

# the test module's streams and feeding, loaded from its file (tests/ is no package)
_SPEC = importlib.util.spec_from_file_location("test_cctv_tamper_phase",
                                               REPO / "tests" / "test_cctv_tamper_phase.py")
assert _SPEC is not None and _SPEC.loader is not None
phase: Any = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = phase  # its dataclasses look their module up
_SPEC.loader.exec_module(phase)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default=f"{phase.WIDTH}x{phase.HEIGHT}")
    parser.add_argument("--gop", type=float, default=4.0, help="seconds between key frames")
    parser.add_argument("--bits-per-pixel", type=float, default=phase.BITS_PER_PIXEL,
                        help="the rate asked for (default: 2 Mbit/s at 1080p, 25 fps)")
    parser.add_argument("--noise", type=float, default=2.0, help="sensor noise std dev")
    parser.add_argument("--night", action="store_true")
    parser.add_argument("--preset", default="veryfast",
                        help='libx264 preset (High profile), or "none": ultrafast Baseline')
    args = parser.parse_args()
    phase.WIDTH, phase.HEIGHT = (int(v) for v in args.size.split("x"))
    stream = phase.Stream(night=args.night, noise=args.noise, gop=args.gop,
                          bits_per_pixel=args.bits_per_pixel)
    assert stream.frozen_at is not None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "starved.mp4"
        started = time.monotonic()
        encode_video(path, phase.frames(stream), phase.FPS, gop_seconds=stream.gop,
                     preset=None if args.preset == "none" else args.preset,
                     bit_rate=round(stream.bits_per_pixel * phase.WIDTH * phase.HEIGHT
                                    * phase.FPS))
        rate = path.stat().st_size * 8 / stream.duration / 1000
        print(f"{args.size} {phase.FPS} fps, GOP {stream.gop:g} s, {rate:.0f} kbit/s measured,"
              f" noise {stream.noise:g}{', night' if stream.night else ''}, preset "
              f"{args.preset}: encoded in {time.monotonic() - started:.0f} s; live "
              f"{stream.frozen_at:g} s, then the picture frozen {phase.FROZEN:g} s")
        run = phase.analyse(path, ("as-is",), stream.frozen_at)["as-is"]
    for offset in range(phase.PHASES):
        alarms = [(evidence, round(at - stream.frozen_at, 2))
                  for _, evidence, at in run.starts[offset]]
        state = run.states[offset]
        cells = 0 if state.overlay is None else int(state.overlay.cells.sum())
        print(f"offset {offset}: frozen alarms (evidence, s after the freeze) {alarms}; clock "
              f"seen stopped while live at most {run.clock_stopped[offset]:.1f} s; "
              f"{cells} clock cells learned")
    print(f"live: identical packets or standing timestamps at most {run.stream_stopped:.2f} s")


if __name__ == "__main__":
    main()
