"""CCTV recorder CPU cost: CPU-seconds per camera-second through the whole pipeline, against
bare PyAV decode of the same streams, and cameras per 2-core box.

    .venv/bin/python bench/cctv.py                  # ~2 min: 20 s streams, 3 runs of each
    .venv/bin/python bench/cctv.py --seconds 10 --repeat 1   # quick look

Prints one line per figure on stdout; progress goes to stderr.

Streams (made with floor_agent.cctv.sim, described with their measured bitrate on stdout):
- main: `sim.make_benchmark_file`: 1920x1080, 15 fps, H.264 baseline (libx264 ultrafast,
  zerolatency), a key frame every second, the simple scene (textured wall, a moving bright
  box) with Gaussian sensor noise (std dev 3 grey levels) at a 4 Mbit/s target.
- sub: the same scene at 640x360, 15 fps, same noise, 512 kbit/s target (a camera's typical
  sub-stream).

Every measurement runs in its own child process (this script with `--child`); its CPU time
(`time.process_time()`: all threads, user + system, FFmpeg's decoder threads included) is
taken from just before the work starts to just after it ends, so interpreter start and
imports are not counted. Files are read as fast as they decode (not paced like a live
camera): CPU-seconds per stream-second is the figure, the wall time is only reported.

- `decode_*`: bare PyAV: demux, decode every frame, nothing else. `default` is the codec
  context as PyAV opens it (thread_type SLICE, thread_count 0 = auto), which is what the
  pipeline's source uses; `1thread` sets `codec_context.thread_count = 1`.
- `copy_main`: demux + `SegmentWriter` only (packets copied into chained MP4 segments,
  fsync, SHA-256 of each segment): the recording part alone.
- `pipeline_*`: `CameraRecorder` (the agent's own: CameraSource -> SegmentWriter, small grey
  frames -> motion.step + tamper.step, SegmentIndex, events to an in-memory emitter instead of
  the audit agent) on files, from start until every stream reported its end.
  `main_afps5` / `main_afps15`: motion reads the 1080p main stream at analysis_fps 5 / 15
  (every frame is decoded either way: the source decodes all packets, converts at the rate).
  `frigate`: main 1080p copied, `detect_url` the 640x360 sub-stream for motion and tamper.
  Details split the pipeline's CPU: time inside the recorder's handler for packets (segment
  write, seal, hash, index) and for frames (motion + tamper), measured with
  `time.thread_time()` in the calling thread; the rest is demux + decode + downscale in the
  source's threads (and FFmpeg's).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
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
NOISE = 3.0
FPS = 15
BOX_CORES = 2


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the streams


def make_streams(directory: Path, seconds: float) -> tuple[Path, Path]:
    from floor_agent.cctv import sim

    main = directory / "main_1080p15.mp4"
    sub = directory / "sub_360p15.mp4"
    started = time.monotonic()
    sim.make_benchmark_file(main, seconds)
    script = sim.SimpleScript(seconds=seconds, noise=NOISE)
    sim.encode_h264(sub, sim.simple_scene(640, 360, FPS, script), FPS, bit_rate=SUB_BITRATE)
    note(f"streams made in {time.monotonic() - started:.1f} s")
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


def child_decode(path: str, threads: str) -> dict[str, Any]:
    import av

    container = av.open(path)
    stream = container.streams.video[0]
    if threads == "1thread":
        stream.codec_context.thread_count = 1
    elif threads == "auto":
        stream.codec_context.thread_type = "AUTO"
    frames = 0
    cpu0, wall0 = time.process_time(), time.monotonic()
    for packet in container.demux(stream):
        for _ in packet.decode():
            frames += 1
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    container.close()
    return {"cpu": cpu, "wall": wall, "frames": frames,
            "thread_type": str(stream.codec_context.thread_type),
            "thread_count": stream.codec_context.thread_count}


def child_copy(path: str, storage: str) -> dict[str, Any]:
    import av

    from floor_agent.cctv.segments import SegmentWriter

    segments: list[object] = []
    writer = SegmentWriter("bench", Path(storage), segments.append, segment_seconds=10.0)
    container = av.open(path)
    stream = container.streams.video[0]
    packets = 0
    cpu0, wall0 = time.process_time(), time.monotonic()
    for packet in container.demux(stream):
        if packet.size == 0 and packet.pts is None:
            continue
        writer.write(packet)
        packets += 1
    writer.close()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    container.close()
    return {"cpu": cpu, "wall": wall, "packets": packets, "segments": len(segments),
            "dropped": dict(writer.dropped) if hasattr(writer, "dropped") else {}}


def child_pipeline(main: str, detect: str | None, analysis_fps: float,
                   storage: str) -> dict[str, Any]:
    from floor_agent.cctv.index import SegmentIndex
    from floor_agent.cctv.recorder import CameraRecorder
    from floor_agent.cctv.source import FrameEvent, PacketEvent, SourceFinished
    from floor_agent.config import CctvSection

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
            if isinstance(event, SourceFinished):
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
            "segments": recorder.segments}


def run_child(args: list[str]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                         text=True, timeout=900, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child {args[0]} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- the parent


def median_run(name: str, args: list[str], repeat: int) -> dict[str, Any]:
    runs = [run_child(args) for _ in range(repeat)]
    cpus = [r["cpu"] for r in runs]
    best = sorted(runs, key=lambda r: r["cpu"])[len(runs) // 2]  # the median run, whole
    note(f"{name}: cpu {', '.join(f'{c:.2f}' for c in cpus)} s")
    return best | {"cpus": cpus}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="stream length (20)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure, median (3)")
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one)")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "decode":
            result = child_decode(rest[0], rest[1])
        elif kind == "copy":
            result = child_copy(rest[0], rest[1])
        else:
            result = child_pipeline(rest[0], None if rest[1] == "-" else rest[1],
                                    float(rest[2]), rest[3])
        print(json.dumps(result))
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-cctv-", dir=args.dir) as tmp:
        work = Path(tmp)
        main_file, sub_file = make_streams(work, args.seconds)
        streams = {"main": describe(main_file), "sub": describe(sub_file)}
        seconds = streams["main"]["seconds"]
        sub_seconds = streams["sub"]["seconds"]
        import av
        import cv2
        import numpy

        print(f"cctv_machine: {os.cpu_count()} CPUs, {platform.platform()}, Python "
              f"{platform.python_version()}, PyAV {av.__version__} (FFmpeg "
              f"{'.'.join(map(str, av.library_versions['libavcodec']))} libavcodec), "
              f"OpenCV {cv2.__version__}, numpy {numpy.__version__}, load "
              f"{os.getloadavg()[0]:.2f}")
        for name, s in streams.items():
            print(f"cctv_stream_{name}: {s['width']}x{s['height']} {s['fps']:g} fps H.264 "
                  f"{s['profile']}, {s['kbit_s']} kbit/s measured, {s['frames']} frames in "
                  f"{s['seconds']:g} s, {s['keyframes']} key frames, sensor noise std "
                  f"{NOISE:g}")

        def storage(name: str) -> str:
            path = work / name
            path.mkdir(exist_ok=True)
            return str(path)

        def fresh(name: str) -> str:  # each pipeline run starts a new chain
            import shutil

            shutil.rmtree(work / name, ignore_errors=True)
            return storage(name)

        r = args.repeat
        results: dict[str, dict[str, Any]] = {}
        results["decode_main_default"] = median_run(
            "decode_main_default", ["decode", str(main_file), "default"], r)
        results["decode_main_1thread"] = median_run(
            "decode_main_1thread", ["decode", str(main_file), "1thread"], r)
        results["decode_sub_default"] = median_run(
            "decode_sub_default", ["decode", str(sub_file), "default"], r)
        results["decode_sub_1thread"] = median_run(
            "decode_sub_1thread", ["decode", str(sub_file), "1thread"], r)
        results["copy_main"] = median_run("copy_main", ["copy", str(main_file),
                                                        fresh("copy")], r)
        pipelines = {"pipeline_main_afps5": (str(main_file), "-", 5.0),
                     "pipeline_main_afps15": (str(main_file), "-", 15.0),
                     "pipeline_frigate": (str(main_file), str(sub_file), 5.0)}
        for name, (m, d, fps) in pipelines.items():
            runs = []
            for _ in range(r):
                runs.append(run_child(["pipeline", m, d, str(fps), fresh(name)]))
            runs.sort(key=lambda x: x["cpu"])
            note(f"{name}: cpu " + ", ".join(f"{x['cpu']:.2f}" for x in runs) + " s")
            results[name] = runs[len(runs) // 2] | {"cpus": [x["cpu"] for x in runs]}

        def per_s(name: str, length: float = seconds) -> float:
            return results[name]["cpu"] / length

        for name in ("decode_main_default", "decode_main_1thread"):
            x = results[name]
            print(f"cctv_{name}: {per_s(name):.4f} CPU-s per stream-s ("
                  f"{x['frames'] / x['cpu']:.0f} frames per CPU-s, {x['frames']} frames, "
                  f"{x['thread_type']} thread_count {x['thread_count']}, wall "
                  f"{x['wall']:.2f} s, runs {_runs(x)})")
        for name in ("decode_sub_default", "decode_sub_1thread"):
            x = results[name]
            print(f"cctv_{name}: {per_s(name, sub_seconds):.4f} CPU-s per stream-s ("
                  f"{x['frames'] / x['cpu']:.0f} frames per CPU-s, {x['frames']} frames, "
                  f"{x['thread_type']} thread_count {x['thread_count']}, runs {_runs(x)})")
        x = results["copy_main"]
        print(f"cctv_copy_main: {per_s('copy_main'):.4f} CPU-s per stream-s (demux + "
              f"segments + hash, {x['packets']} packets, {x['segments']} segments, runs "
              f"{_runs(x)})")
        baselines = {"pipeline_main_afps5": ("decode_main_default", seconds),
                     "pipeline_main_afps15": ("decode_main_default", seconds),
                     "pipeline_frigate": ("decode_sub_default", sub_seconds)}
        for name, (base, base_len) in baselines.items():
            x = results[name]
            cost = per_s(name)
            ratio = cost / per_s(base, base_len)
            ratio_1 = cost / per_s(base.replace("default", "1thread"), base_len)
            spent = x["spent"]
            rest = x["cpu"] - spent["packets"] - spent["frames"] - spent["other"]
            print(f"cctv_{name}: {cost:.4f} CPU-s per camera-s = {100 * cost:.1f} % of a "
                  f"core, {ratio:.2f}x bare decode of the stream motion reads ({base}; "
                  f"{ratio_1:.2f}x its 1-thread decode), {BOX_CORES / cost:.1f} cameras per "
                  f"{BOX_CORES}-core box (split: source demux/decode/downscale "
                  f"{rest / seconds:.4f}, segments+hash+index {spent['packets'] / seconds:.4f}"
                  f" for {x['counts']['packets']} packets, motion+tamper "
                  f"{spent['frames'] / seconds:.4f} for {x['counts']['frames']} frames; "
                  f"{x['segments']} segments, wall {x['wall']:.2f} s, runs {_runs(x)})")
        frigate_with_sub = per_s("pipeline_frigate")
        print(f"cctv_targets: main-stream pipeline {per_s('pipeline_main_afps5') / per_s('decode_main_default'):.2f}x "  # noqa: E501
              f"bare decode (target <= 1.2x); Frigate layout "
              f"{per_s('pipeline_frigate') / per_s('decode_sub_default', sub_seconds):.2f}x "
              f"bare sub-stream decode (target <= 1.2x), "
              f"{BOX_CORES / frigate_with_sub:.1f} cameras per 2-core box (target >= 25); "
              f"main-stream only {BOX_CORES / per_s('pipeline_main_afps5'):.1f} cameras")
    return 0


def _runs(x: dict[str, Any]) -> str:
    return "/".join(f"{c:.2f}" for c in x["cpus"])


if __name__ == "__main__":
    raise SystemExit(main())
