"""CCTV recorder CPU cost: CPU-seconds per camera-second through the whole pipeline, against
bare PyAV decode of the same streams, and cameras per 2-core box.

    .venv/bin/python bench/cctv.py                  # ~4 min: both stream sets, 5 rounds
    .venv/bin/python bench/cctv.py --streams camera --repeat 1   # ~40 s
    .venv/bin/python bench/cctv.py --seconds 5 --repeat 1 --streams sim   # quick look
    .venv/bin/python bench/cctv.py --live           # ~15 min: cameras recorded live over RTSP
                                                    # with 0 frames lost, idle and one core
                                                    # busy (bench/cctv_live.py)

Prints one line per figure on stdout; progress goes to stderr.

Streams: the simple scene of floor_agent.simulated.camera (textured wall, a moving bright box) with
Gaussian sensor noise, 15 fps, a key frame every second, `--seconds` long; a main stream at
1920x1080 / 4 Mbit/s and a sub-stream at 640x360 / 512 kbit/s (a camera's typical one), in
two sets (`--streams`), each described on stdout with its bitrate measured from the file:
- camera: encoded as IP cameras do, H.264 High profile with CABAC and deblocking (libx264
  preset medium, no B-frames), noise std 6 grey levels. Decodes at ~130-140 frames per
  CPU-second at 1080p here, as the issue measured real noisy-to-clean streams (90-150).
- sim: `sim.make_benchmark_file` unchanged (and `sim.encode_video` for the sub-stream):
  Baseline from libx264 ultrafast/zerolatency (no CABAC, no deblocking), noise std 3; it
  decodes ~4x cheaper than a camera's stream, so it flatters the camera counts.

Every measurement runs in its own child process (this script with `--child`); its CPU time
(`time.process_time()`: all threads, user + system, FFmpeg's decoder threads included) is
taken from just before the work starts to just after it ends, so interpreter start and
imports are not counted. Files are read as fast as they decode (not paced like a live
camera): CPU-seconds per stream-second is the figure, the wall time is only reported.

- `decode_*`: bare PyAV: demux, decode every frame, nothing else. `default` is the codec
  context as PyAV opens it (thread_type SLICE, thread_count 0 = auto); `1thread` sets
  `codec_context.thread_count = 1`, which is how the pipeline's source decodes (one decoder
  thread per stream: with many cameras on a box, FFmpeg's extra threads cost more than they
  give). Ratios are judged against the cheaper of the two (`baseline` in the lines).
  `analysis` is the source's own decoder (`source.decode_for_analysis`: one thread, and no
  deblocking filter on frames that are not intra, which the analysis does not need): not a
  baseline, since it skips work; each pipeline line also gives its ratio to it, the
  pipeline's cost over the decode it actually does.
- `copy_main`: av.open as the source opens a stream it only copies (the probe decodes
  nothing) + demux + `SegmentWriter` (packets copied into chained MP4 segments, fsync,
  SHA-256 of each segment): the recording part alone.
- `pipeline_*`: `CameraRecorder` (the agent's own: CameraSource -> SegmentWriter, small grey
  frames -> motion.step + tamper.step, SegmentIndex, events to an in-memory emitter instead of
  the audit agent) on files, from start until every stream reported its end.
  `main_afps5` / `main_afps15`: motion reads the 1080p main stream at analysis_fps 5 / 15
  (every frame is decoded either way: the source decodes all packets, converts at the rate).
  `frigate`: main 1080p copied, `detect_url` the 640x360 sub-stream for motion and tamper.
  Details split the pipeline's CPU: time inside the recorder's handler for packets (segment
  write, seal, hash, index) and for frames (motion + tamper), measured with
  `time.thread_time()` in the calling thread; the rest is demux + decode + downscale in the
  source's threads (and FFmpeg's); each reader thread's own CPU is taken when it reports
  its end. `_steady` lines subtract the stream openings (once per connection: av.open
  probes the stream motion reads by decoding its first frames, as the bare decode's opening
  measured; the Frigate layout's copied main stream is opened as copy_main opened it).
- `stages_main_afps5`: the same work as the main-stream pipeline in one thread without the
  recorder, decoding as the source does, each stage's CPU added up (demux, decode,
  downscale, motion, tamper, segments).

Each child first warms itself up (a few frames decoded, downscaled, through motion and
tamper) so one-off library costs (~0.1 CPU-s for swscale's first conversion) are not
charged to the stream, as a long-running agent pays them once.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MAIN_BITRATE = 4_000_000
SUB_BITRATE = 512_000
SIM_NOISE = 3.0  # what sim.make_benchmark_file uses
CAMERA_NOISE = 6.0
FPS = 15
BOX_CORES = 2


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the streams


def encode_camera_like(path: Path, width: int, height: int, seconds: float, bit_rate: int,
                       noise: float) -> None:
    """The simple scene encoded as IP cameras encode: H.264 High profile (CABAC, 8x8 transform,
    deblocking; libx264 preset medium), no B-frames, a key frame every second, fixed bitrate."""
    from floor_agent.simulated import camera as sim

    script = sim.SimpleScript(seconds=seconds, noise=noise)
    sim.encode_video(path, sim.simple_scene(width, height, FPS, script), FPS,
                     bit_rate=bit_rate, preset="medium")


def make_streams(directory: Path, seconds: float, kind: str) -> tuple[Path, Path]:
    """(main 1080p15, sub 640x360 15 fps) of one kind: "camera" (camera-like encoding, noise
    std CAMERA_NOISE) or "sim" (sim.make_benchmark_file: baseline, ultrafast, noise std 3)."""
    from floor_agent.simulated import camera as sim

    main = directory / f"{kind}_main_1080p15.mp4"
    sub = directory / f"{kind}_sub_360p15.mp4"
    started = time.monotonic()
    if kind == "camera":
        encode_camera_like(main, 1920, 1080, seconds, MAIN_BITRATE, CAMERA_NOISE)
        encode_camera_like(sub, 640, 360, seconds, SUB_BITRATE, CAMERA_NOISE)
    else:
        sim.make_benchmark_file(main, seconds)
        script = sim.SimpleScript(seconds=seconds, noise=SIM_NOISE)
        sim.encode_video(sub, sim.simple_scene(640, 360, FPS, script), FPS,
                         bit_rate=SUB_BITRATE)
    note(f"{kind} streams made in {time.monotonic() - started:.1f} s")
    return main, sub


def describe(path: Path) -> dict[str, Any]:
    """Resolution, fps, duration and the bitrate measured from the file's packets."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        sizes, keys, first, last = 0, 0, None, None
        frames = 0
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            frames += 1
            sizes += packet.size
            keys += packet.is_keyframe
            pts = float(packet.pts * packet.time_base)
            first = pts if first is None else min(first, pts)
            last = pts if last is None else max(last, pts)
        rate = float(stream.average_rate or FPS)
        ctx = stream.codec_context
        duration = (last - first) + 1 / rate if first is not None else 0.0
        return {"width": ctx.width, "height": ctx.height, "fps": round(rate, 2),
                "frames": frames, "seconds": round(duration, 3), "keyframes": keys,
                "profile": ctx.profile, "kbit_s": round(sizes * 8 / duration / 1000),
                "bytes": path.stat().st_size}


# --------------------------------------------------------------------------- child work


def warm_up(path: str) -> None:
    """Pay the process's one-off library costs before the clock starts, as a long-running
    agent has (swscale's first conversion alone costs ~0.1 CPU-s here, OpenCV's first calls
    a few ms): decode a few frames, downscale them, run motion and tamper on them. Every
    child does the same, baselines included."""
    import av

    from floor_agent.cctv import motion, tamper
    from floor_agent.cctv.config import MotionConfig, TamperConfig
    from floor_agent.cctv.downscale import small_grey
    from floor_agent.cctv.model import SmallFrame

    m_state, t_state = motion.MotionState(), tamper.TamperState()
    with av.open(path) as container:
        stream = container.streams.video[0]
        for i, frame in enumerate(container.decode(stream)):
            grey = small_grey(frame, 144)
            frame.reformat(width=64, height=36, format="gray")  # the scaler's first use too
            small = SmallFrame("warm", i / FPS, grey)
            m_state, _ = motion.step(m_state, small, MotionConfig(),
                                     motion.mask_for([], grey.shape))
            t_state, _ = tamper.step(t_state, small, TamperConfig())
            if i >= 4:
                break


def child_decode(path: str, threads: str) -> dict[str, Any]:
    import av

    from floor_agent.cctv.source import decode_for_analysis, open_options

    cpu0, wall0 = time.process_time(), time.monotonic()
    container = av.open(path, options=open_options(path, 5.0), timeout=5.0)  # as the source
    stream = container.streams.video[0]
    if threads == "1thread":
        stream.codec_context.thread_count = 1
    elif threads == "analysis":  # the source's own decoder (not a baseline: it skips work)
        decode_for_analysis(stream.codec_context, skip_deblocking=True)
    opened = time.process_time() - cpu0
    frames = 0
    for packet in container.demux(stream):
        for _ in packet.decode():
            frames += 1
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    container.close()
    return {"cpu": cpu, "wall": wall, "frames": frames, "open": opened,
            "thread_type": str(stream.codec_context.thread_type),
            "thread_count": stream.codec_context.thread_count}


def child_copy(path: str, storage: str) -> dict[str, Any]:
    import av

    from floor_agent.cctv.segments import SegmentWriter
    from floor_agent.cctv.source import PROBE_UNDECODED, open_options

    segments: list[object] = []
    writer = SegmentWriter("bench", Path(storage), segments.append, segment_seconds=10.0)
    cpu0, wall0 = time.process_time(), time.monotonic()
    # opened as the source opens a stream it only copies: the probe decodes nothing
    container = av.open(path, options=open_options(path, 5.0), stream_options=PROBE_UNDECODED,
                        timeout=5.0)
    stream = container.streams.video[0]
    opened = time.process_time() - cpu0
    packets = 0
    for packet in container.demux(stream):
        if packet.size == 0 and packet.pts is None:
            continue
        writer.write(packet)
        packets += 1
    writer.close()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    container.close()
    return {"cpu": cpu, "wall": wall, "packets": packets, "segments": len(segments),
            "open": opened,
            "dropped": dict(writer.dropped) if hasattr(writer, "dropped") else {}}


def child_pipeline(main: str, detect: str | None, analysis_fps: float,
                   storage: str) -> dict[str, Any]:
    from floor_agent.cctv.config import CctvSection
    from floor_agent.cctv.index import SegmentIndex
    from floor_agent.cctv.recorder import CameraRecorder
    from floor_agent.cctv.source import FrameEvent, PacketEvent, SourceFinished

    camera: dict[str, Any] = {"camera_id": "cam1", "name": "bench", "url": main,
                              "motion": {"analysis_fps": analysis_fps}}
    if detect is not None:
        camera["detect_url"] = detect
    section = CctvSection.model_validate({"storage_dir": storage, "cameras": [camera]})
    expected = {"main"} | ({"detect"} if detect is not None else set())
    done = threading.Event()
    finished: set[str] = set()
    spent = {"packets": 0.0, "frames": 0.0, "other": 0.0}
    counts = {"packets": 0, "frames": 0}
    readers: dict[str, float] = {}  # each reader thread's own CPU (FFmpeg's threads apart)

    class TimedRecorder(CameraRecorder):
        """The agent's recorder, with the CPU of each handled event added up per kind."""

        def _handle(self, event: object) -> None:
            kind = ("packets" if isinstance(event, PacketEvent) else
                    "frames" if isinstance(event, FrameEvent) else "other")
            t0 = time.thread_time()
            super()._handle(event)
            spent[kind] += time.thread_time() - t0
            if kind in counts:
                counts[kind] += 1
            if isinstance(event, SourceFinished):  # called in that stream's reader thread
                readers[event.stream] = time.thread_time()
                finished.add(event.stream)
                if finished >= expected:
                    done.set()

    events: list[str] = []
    index = SegmentIndex.in_storage(section.storage_dir)
    recorder = TimedRecorder(section.cameras[0], section, index,
                             lambda kind, subject, severity="info", **data: events.append(kind))
    cpu0, wall0 = time.process_time(), time.monotonic()
    recorder.start()
    if not done.wait(600):
        raise RuntimeError(f"pipeline did not finish: {finished} of {expected}")
    recorder.stop()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    index.close()
    kinds = {k: events.count(k) for k in sorted(set(events))}
    return {"cpu": cpu, "wall": wall, "spent": spent, "counts": counts, "events": kinds,
            "readers": readers,
            "segments": recorder.segments}


def child_stages(path: str, analysis_fps: float, storage: str) -> dict[str, Any]:
    """The main-stream pipeline's work in one thread without the recorder around it, each
    stage's CPU added up: demux, decode (all frames), downscale to the small grey frame at the
    analysis rate (the source's own call), motion.step + tamper.step, SegmentWriter.write."""
    import av

    from floor_agent.cctv import motion, tamper
    from floor_agent.cctv.config import MotionConfig, TamperConfig
    from floor_agent.cctv.downscale import small_grey
    from floor_agent.cctv.model import SmallFrame
    from floor_agent.cctv.segments import SegmentWriter
    from floor_agent.cctv.source import decode_for_analysis

    motion_config, tamper_config = MotionConfig(analysis_fps=analysis_fps), TamperConfig()
    writer = SegmentWriter("bench", Path(storage), lambda segment: None, segment_seconds=10.0)
    m_state, t_state = motion.MotionState(), tamper.TamperState()
    mask = None
    container = av.open(path)
    stream = container.streams.video[0]
    decode_for_analysis(stream.codec_context, skip_deblocking=motion_config.skip_deblocking)
    spent = dict.fromkeys(("demux", "decode", "downscale", "motion", "tamper", "segments"), 0.0)
    clock = time.process_time
    next_t, frames = 0.0, 0
    cpu0 = last = clock()

    def lap(stage: str) -> None:
        nonlocal last
        now = clock()
        spent[stage] += now - last
        last = now

    for packet in container.demux(stream):
        lap("demux")
        if packet.size == 0 and packet.pts is None:
            continue
        t = float(packet.pts * packet.time_base)
        decoded = packet.decode()
        lap("decode")
        for frame in decoded:
            if t < next_t:
                continue
            grey = small_grey(frame, motion_config.frame_height)
            small = SmallFrame("bench", t, grey)
            next_t = t + 1.0 / analysis_fps - 1e-6
            frames += 1
            lap("downscale")
            if mask is None:
                mask = motion.mask_for(motion_config.masks, grey.shape)
            m_state, _ = motion.step(m_state, small, motion_config, mask)
            lap("motion")
            t_state, _ = tamper.step(t_state, small, tamper_config)
            lap("tamper")
        writer.write(packet)
        lap("segments")
    writer.close()
    lap("segments")
    cpu = clock() - cpu0
    container.close()
    return {"cpu": cpu, "spent": spent, "frames": frames}


def run_child(args: list[str]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                         text=True, timeout=900, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child {args[0]} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- the parent


def main() -> int:
    if "--live" in sys.argv[1:]:  # issue 22's live figure: bench/cctv_live.py
        sys.argv.remove("--live")
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import cctv_live

        return cctv_live.main()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="stream length (20)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="rounds (every figure once per round), medians (5)")
    parser.add_argument("--streams", default="camera,sim",
                        help="stream sets, comma-separated: camera, sim (both)")
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one)")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        warm_up(rest[0])
        if kind == "decode":
            result = child_decode(rest[0], rest[1])
        elif kind == "copy":
            result = child_copy(rest[0], rest[1])
        elif kind == "stages":
            result = child_stages(rest[0], float(rest[1]), rest[2])
        else:
            result = child_pipeline(rest[0], None if rest[1] == "-" else rest[1],
                                    float(rest[2]), rest[3])
        print(json.dumps(result))
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-cctv-", dir=args.dir) as tmp:
        work = Path(tmp)
        import av
        import cv2
        import numpy

        print(f"cctv_machine: {os.cpu_count()} CPUs, {platform.platform()}, Python "
              f"{platform.python_version()}, PyAV {av.__version__} (libavcodec "
              f"{'.'.join(map(str, av.library_versions['libavcodec']))}), OpenCV "
              f"{cv2.__version__}, numpy {numpy.__version__}, load {os.getloadavg()[0]:.2f}",
              flush=True)
        for kind in args.streams.split(","):
            bench_streams(work, kind, args.seconds, args.repeat)
    return 0


def bench_streams(work: Path, kind: str, seconds_wanted: float, r: int) -> None:
    main_file, sub_file = make_streams(work, seconds_wanted, kind)
    streams = {"main": describe(main_file), "sub": describe(sub_file)}
    seconds = streams["main"]["seconds"]
    sub_seconds = streams["sub"]["seconds"]
    noise = CAMERA_NOISE if kind == "camera" else SIM_NOISE
    how = ("libx264 preset medium, no B-frames" if kind == "camera" else
           "sim.make_benchmark_file / sim.encode_video: libx264 ultrafast zerolatency")
    for name, s in streams.items():
        print(f"cctv_{kind}_stream_{name}: {s['width']}x{s['height']} {s['fps']:g} fps H.264 "
              f"{s['profile']} ({how}), {s['kbit_s']} kbit/s measured, {s['frames']} frames "
              f"in {s['seconds']:g} s, {s['keyframes']} key frames, sensor noise std "
              f"{noise:g} grey levels", flush=True)

    def fresh(name: str) -> str:  # each run starts a new chain in an empty directory
        path = work / f"{kind}_{name}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir()
        return str(path)

    results: dict[str, dict[str, Any]] = {}
    plan: dict[str, list[str]] = {
        "decode_main_default": ["decode", str(main_file), "default"],
        "decode_main_1thread": ["decode", str(main_file), "1thread"],
        "decode_sub_default": ["decode", str(sub_file), "default"],
        "decode_sub_1thread": ["decode", str(sub_file), "1thread"],
        "decode_main_analysis": ["decode", str(main_file), "analysis"],
        "decode_sub_analysis": ["decode", str(sub_file), "analysis"],
        "copy_main": ["copy", str(main_file), "@"],
        "stages_main_afps5": ["stages", str(main_file), "5", "@"],
        "pipeline_main_afps5": ["pipeline", str(main_file), "-", "5", "@"],
        "pipeline_main_afps15": ["pipeline", str(main_file), "-", "15", "@"],
        "pipeline_frigate": ["pipeline", str(main_file), str(sub_file), "5", "@"],
    }
    # rounds: every figure once per round, so a slow spell of the machine (a neighbour on the
    # host, seen here as 1.5x on everything for a minute) lands on all figures alike, not on
    # one figure's runs in a row
    all_runs: dict[str, list[dict[str, Any]]] = {name: [] for name in plan}
    for round_ in range(r):
        for name, child_args in plan.items():
            run = run_child([fresh(name) if a == "@" else a for a in child_args])
            all_runs[name].append(run)
            note(f"{kind} round {round_ + 1}/{r} {name}: cpu {run['cpu']:.2f} s")
    for name, runs in all_runs.items():
        runs.sort(key=lambda x: x["cpu"])
        results[name] = runs[len(runs) // 2] | {"cpus": [x["cpu"] for x in runs]}

    def per_s(name: str) -> float:
        return results[name]["cpu"] / (sub_seconds if "_sub_" in name else seconds)

    p = f"cctv_{kind}_"
    for name in ("decode_main_default", "decode_main_1thread", "decode_main_analysis",
                 "decode_sub_default", "decode_sub_1thread", "decode_sub_analysis"):
        x = results[name]
        print(f"{p}{name}: {per_s(name):.4f} CPU-s per stream-s ({x['frames'] / x['cpu']:.0f} "
              f"frames per CPU-s, {x['frames']} frames, of which av.open {x['open']:.3f} CPU-s, "
              f"{x['thread_type']} thread_count {x['thread_count']}, wall {x['wall']:.2f} s, "
              f"runs {_runs(x)})")
    x = results["copy_main"]
    print(f"{p}copy_main: {per_s('copy_main'):.4f} CPU-s per stream-s (demux + SegmentWriter: "
          f"{x['packets']} packets copied into {x['segments']} segments, fsync, SHA-256; "
          f"av.open {x['open']:.4f} CPU-s, its probe decoding nothing; runs {_runs(x)})")
    x = results["stages_main_afps5"]
    split = ", ".join(f"{k} {v / seconds:.4f}" for k, v in x["spent"].items())
    print(f"{p}stages_main_afps5: {per_s('stages_main_afps5'):.4f} CPU-s per stream-s, one "
          f"thread, no recorder, opening not counted ({split}; {x['frames']} small frames; "
          f"runs {_runs(x)})")
    def baseline(stream: str) -> str:
        """The cheaper bare decode of a stream (`main` or `sub`): the ratios are judged
        against it, so neither thread setting flatters the pipeline."""
        return min((f"decode_{stream}_default", f"decode_{stream}_1thread"), key=per_s)

    def opens(name: str) -> float:
        """CPU of a pipeline's stream openings: the stream motion reads as the bare decode
        opened it, and in the Frigate layout the main stream as copy_main opened it (copied
        only: its probe decodes nothing)."""
        if "frigate" in name:
            return results[baseline("sub")]["open"] + results["copy_main"]["open"]
        return results[baseline("main")]["open"]

    def steady_per_s(name: str) -> float:
        """Per camera-second without the stream openings (once per connection: a camera is
        connected for hours, the bench's stream for `seconds`)."""
        if name.startswith("decode_"):
            length = sub_seconds if "_sub_" in name else seconds
            return (results[name]["cpu"] - results[name]["open"]) / length
        return (results[name]["cpu"] - opens(name)) / seconds

    motion_reads = {"pipeline_main_afps5": "main", "pipeline_main_afps15": "main",
                    "pipeline_frigate": "sub"}
    for name, stream in motion_reads.items():
        base = baseline(stream)
        x = results[name]
        cost = per_s(name)
        spent = x["spent"]
        rest = x["cpu"] - spent["packets"] - spent["frames"] - spent["other"]
        readers = ", ".join(f"{k} {v / seconds:.4f}" for k, v in sorted(x["readers"].items()))
        others = x["cpu"] - sum(x["readers"].values())
        steady = steady_per_s(name)
        print(f"{p}{name}_steady: {steady:.4f} CPU-s per camera-s without the stream "
              f"opening(s) ({opens(name):.3f} CPU-s, once per connection: av.open probes by "
              f"decoding), {steady / steady_per_s(base):.2f}x bare decode without its opening "
              f"(baseline {base}), {BOX_CORES / steady:.1f} cameras per {BOX_CORES}-core box")
        others_base = next(n for n in (f"decode_{stream}_default", f"decode_{stream}_1thread")
                           if n != base)
        own = f"decode_{stream}_analysis"
        print(f"{p}{name}: {cost:.4f} CPU-s per camera-s = {100 * cost:.1f} % of a core, "
              f"{cost / per_s(base):.2f}x bare decode of the stream motion reads (baseline "
              f"{base}; {cost / per_s(others_base):.2f}x {others_base}; "
              f"{cost / per_s(own):.2f}x {own}, the source's own decoder settings, which skip "
              f"deblocking: the pipeline's cost over the decode it does), "
              f"{BOX_CORES / cost:.1f} cameras per {BOX_CORES}-core box (split per camera-s: "
              f"source demux + decode + downscale {rest / seconds:.4f}, recorder on packets "
              f"(segments, hash, index) {spent['packets'] / seconds:.4f} for "
              f"{x['counts']['packets']} packets, on frames (motion + tamper) "
              f"{spent['frames'] / seconds:.4f} for {x['counts']['frames']} frames; "
              f"{x['segments']} segments, wall {x['wall']:.2f} s, runs {_runs(x)}; reader "
              f"threads' own CPU {readers}, other threads (FFmpeg's decoder threads, "
              f"watchdog, main) {others / seconds:.4f})")

    def verdict(ratio: float) -> str:
        return "met" if ratio <= 1.2 else "NOT met"

    main_ratio = per_s("pipeline_main_afps5") / per_s(baseline("main"))
    main_steady = steady_per_s("pipeline_main_afps5") / steady_per_s(baseline("main"))
    frigate_ratio = per_s("pipeline_frigate") / per_s(baseline("sub"))
    frigate_steady = steady_per_s("pipeline_frigate") / steady_per_s(baseline("sub"))
    frigate_cams = BOX_CORES / per_s("pipeline_frigate")
    print(f"{p}targets: main-stream pipeline (analysis_fps 5) {main_ratio:.2f}x bare decode "
          f"(steady {main_steady:.2f}x; target <= 1.2x: {verdict(main_ratio)}); Frigate layout "
          f"{frigate_ratio:.2f}x bare sub-stream decode (steady {frigate_steady:.2f}x; target "
          f"<= 1.2x: {verdict(frigate_ratio)}, steady {verdict(frigate_steady)}), "
          f"{frigate_cams:.1f} cameras per 2-core box (target >= 25: "
          f"{'met' if frigate_cams >= 25 else 'NOT met'}); main-stream only "
          f"{BOX_CORES / per_s('pipeline_main_afps5'):.1f} cameras (analysis_fps 15: "
          f"{BOX_CORES / per_s('pipeline_main_afps15'):.1f})", flush=True)


def _runs(x: dict[str, Any]) -> str:
    return "/".join(f"{c:.2f}" for c in x["cpus"])


if __name__ == "__main__":
    raise SystemExit(main())
