"""CCTV tamper on realistic streams: false alarms per empty scene per 10 minutes, and the
detection latency of each tamper kind, for this tree's detector and an older one.

    .venv/bin/python bench/cctv_tamper.py                   # ~4 min: 3 seeds, old = 4d02c66
    .venv/bin/python bench/cctv_tamper.py --seeds 1 --minutes 2   # quick look

The streams are floor_agent.simulated.camera_scenes' scenes, fed to the detector as the small
frames the analysis reads (256x144, 5 a second), as tests/test_cctv_tamper_realistic.py does:
- empty scenes, `--minutes` (10) each: `still` (sensor noise as a camera's encoder delivers a
  still scene: new only at key frames, every second), `still-raw-noise` (new noise on every
  frame), `clock` (the burned-in clock, vignetting), `night` (low light, noise std 6, clock),
  `lights-off` (the office lights go off after a minute), `vignetted` (corners 45 % darker,
  clock);
- tampers starting at 40 s on the `clock` (day) and `night` scenes: covered, sprayed,
  defocused, panned 45 %, tilted 45 %, knocked down, frozen (the picture and its clock stop);
  and `frozen-stream` (no clock; the camera repeats one packet with its timestamp standing,
  fed as packet facts, which the old detector cannot read); and a 45 % pan on the `vignetted`
  scene over 8 worlds.

A false alarm is an alarm start (`cctv.tamper`) on an empty scene, of any kind and severity;
the latency is the first alarm of the right kind after the tamper began, in stream time.
The old detector is `floor_agent/cctv/tamper.py` at `--old` (git show), run with its own
defaults (frozen after 1.5 s of identical frames). Prints one line per figure on stdout.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from floor_agent.cctv import tamper  # noqa: E402
from floor_agent.cctv.config import TamperConfig  # noqa: E402
from floor_agent.cctv.model import SmallFrame  # noqa: E402
from floor_agent.simulated.camera_scenes import (  # noqa: E402
    Clock,
    Covered,
    Defocused,
    Frozen,
    Happening,
    Lighting,
    Scene,
    Script,
    Turned,
)

# the camera's burned-in clock, and its name as cameras show it too (static)
CLOCK = Clock(caption="CAM 03 FLOOR A NORTH")
FPS = 5
START = 40.0
NIGHT = Lighting(0, gain=0.12, offset=4)
SCENES: dict[str, tuple[dict[str, Any], tuple[Happening, ...]]] = {
    "still": ({"key_every": FPS}, ()),
    "still-raw-noise": ({}, ()),
    "clock": ({"key_every": FPS, "vignette": 0.3}, (CLOCK,)),
    "night": ({"key_every": FPS, "noise": 6.0, "vignette": 0.3}, (CLOCK, NIGHT)),
    "lights-off": ({"key_every": FPS, "noise": 6.0, "vignette": 0.3},
                   (CLOCK, Lighting(60, gain=0.12, offset=4))),
    "vignetted": ({"key_every": FPS, "vignette": 0.9}, (CLOCK,)),  # corners 45 % darker
}
VIGNETTED_SEEDS = 8  # the pan on the heavily vignetted camera, over more worlds
TAMPERS: dict[str, tuple[str, Happening]] = {
    "covered": ("covered", Covered(START, START + 40)),
    "sprayed": ("covered", Covered(START, START + 40, level=140)),
    "defocused": ("defocused", Defocused(START, START + 40)),
    "panned-45": ("turned", Turned(START, START + 40, shift=(0.45, 0.0))),
    "tilted-45": ("turned", Turned(START, START + 40, shift=(0.0, 0.45))),
    "knocked-down": ("turned", Turned(START, START + 40, shift=(0.3, 1.0))),
    "frozen": ("frozen", Frozen(START, START + 40)),
}


def old_detector(commit: str) -> ModuleType:
    source = subprocess.run(["git", "-C", str(REPO), "show",
                             f"{commit}:floor_agent/cctv/tamper.py"],
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp(prefix="bench-tamper-")) / "tamper_old.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("tamper_old", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["tamper_old"] = module
    spec.loader.exec_module(module)
    return module


class Run:
    """One detector over one stream: its state, alarm starts and CPU in step()."""

    def __init__(self, module: ModuleType, config: TamperConfig) -> None:
        self.module, self.config = module, config
        self.state = module.TamperState()
        self.starts: list[tuple[str, float, str]] = []  # kind, t, severity
        self.cpu = 0.0
        self.frames = 0

    def frame(self, t: float, grey: Any) -> None:
        began = time.thread_time()
        self.state, events = self.module.step(self.state, SmallFrame("cam", t, grey),
                                              self.config)
        self.cpu += time.thread_time() - began
        self.frames += 1
        self.starts += [(e.kind, e.t, getattr(e, "severity", "critical")) for e in events
                        if e.phase == "start"]

    def packet(self, facts: tamper.PacketFacts) -> None:
        if not hasattr(self.module, "observe_packet"):
            return  # the old detector reads frames only
        self.state, events = self.module.observe_packet(self.state, facts, self.config)
        self.starts += [(e.kind, facts.arrival, e.severity) for e in events
                        if e.phase == "start"]


def detectors(old: ModuleType | None) -> dict[str, Run]:
    runs = {"new": Run(tamper, TamperConfig())}
    if old is not None:  # the old defaults: frozen after 1.5 s of identical frames
        runs["old"] = Run(old, TamperConfig.model_construct(frozen_seconds=1.5))
    return runs


def play(scene_name: str, seed: int, seconds: float, extra: tuple[Happening, ...],
         old: ModuleType | None) -> dict[str, Run]:
    traits, always = SCENES[scene_name]
    scene = Scene(256, 144, FPS, seed, **traits)
    runs = detectors(old)
    for frame in scene.frames(Script(seconds, (*always, *extra))):
        for run in runs.values():
            run.frame(frame.t, frame.grey)
    return runs


def frozen_stream(seed: int, old: ModuleType | None) -> dict[str, Run]:
    """No clock; from START the camera repeats one packet, its timestamp standing, and its
    frames stop reaching the analysis (the old detector then sees nothing more)."""
    scene = Scene(256, 144, FPS, seed, key_every=FPS)
    runs = detectors(old)
    for i, frame in enumerate(scene.frames(Script(START + 40))):
        frozen = frame.t >= START
        facts = tamper.PacketFacts(frame.t, START if frozen else frame.t, 4000,
                                   b"one" if frozen else i.to_bytes(4, "big"))
        for run in runs.values():
            run.packet(facts)
            if not frozen:
                run.frame(frame.t, frame.grey)
    return runs


def fmt(values: list[float | None]) -> str:
    shown = ["missed" if v is None else f"{v:.1f}" for v in values]
    return "/".join(shown)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="length of each empty scene (10)")
    parser.add_argument("--seeds", type=int, default=3, help="worlds per scene (3)")
    parser.add_argument("--old", default="4d02c66",
                        help="commit of the old detector ('' for none)")
    args = parser.parse_args()
    old = old_detector(args.old) if args.old else None
    seeds = range(1, args.seeds + 1)
    print(f"cctv_tamper_setup: 256x144 at {FPS} fps, seeds {list(seeds)}, new = this tree's "
          f"defaults (frozen_seconds {TamperConfig().frozen_seconds:g}, hold_seconds "
          f"{TamperConfig().hold_seconds:g}), old = {args.old or '-'} (frozen after 1.5 s)",
          flush=True)
    cpu: dict[str, list[float]] = {}
    for name in SCENES:
        counts: dict[str, list[int]] = {}
        kinds: dict[str, set[str]] = {}
        for seed in seeds:
            for who, run in play(name, seed, args.minutes * 60, (), old).items():
                counts.setdefault(who, []).append(len(run.starts))
                kinds.setdefault(who, set()).update(k for k, _, _ in run.starts)
                cpu.setdefault(who, []).append(run.cpu / max(1, run.frames))
        per_10 = {who: [c * 10 / args.minutes for c in cs] for who, cs in counts.items()}
        line = f"cctv_tamper_false_alarms_{name}: new {fmt(per_10['new'])} per 10 min"
        if "old" in per_10:
            line += (f", old {fmt(per_10['old'])} per 10 min "
                     f"({', '.join(sorted(kinds['old'])) or 'none'})")
        print(line + f" (seeds {list(seeds)}, {args.minutes:g} min each)", flush=True)
    for setting in ("clock", "night"):
        for label, (kind, happening) in TAMPERS.items():
            found: dict[str, list[float | None]] = {}
            for seed in seeds:
                for who, run in play(setting, seed, START + 45, (happening,), old).items():
                    hits = [t - START for k, t, _ in run.starts if k == kind and t >= START]
                    found.setdefault(who, []).append(hits[0] if hits else None)
            line = (f"cctv_tamper_latency_{label}_{'day' if setting == 'clock' else setting}: "
                    f"new {fmt(found['new'])} s")
            if "old" in found:
                line += f", old {fmt(found['old'])} s"
            print(line + " after it began (per seed)", flush=True)
    found = {}
    pan = TAMPERS["panned-45"][1]
    for seed in range(1, max(args.seeds, VIGNETTED_SEEDS) + 1):
        for who, run in play("vignetted", seed, START + 5, (pan,), old).items():
            hits = [t - START for k, t, _ in run.starts if k == "turned" and t >= START]
            found.setdefault(who, []).append(hits[0] if hits else None)
    line = f"cctv_tamper_latency_panned-45_vignetted: new {fmt(found['new'])} s"
    if "old" in found:
        line += f", old {fmt(found['old'])} s"
    print(line + " after it began (per seed; corners 45 % darker, clock)", flush=True)
    found = {}
    for seed in seeds:
        for who, run in frozen_stream(seed, old).items():
            hits = [t - START for k, t, _ in run.starts if k == "frozen" and t >= START]
            found.setdefault(who, []).append(hits[0] if hits else None)
    line = f"cctv_tamper_latency_frozen-stream: new {fmt(found['new'])} s"
    if "old" in found:
        line += f", old {fmt(found['old'])} s"
    print(line + " after the camera froze (arrival time; per seed)", flush=True)
    for who, values in cpu.items():
        print(f"cctv_tamper_step_cpu_{who}: {statistics.median(values) * 1e3:.3f} ms per "
              "256x144 frame (median over the empty scenes, thread CPU)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
