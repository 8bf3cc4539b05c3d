"""CCTV recording live (issue 22, point 7): the largest number of 1080p15 cameras served over
RTSP that one box records with 0 frames lost and lag under 2 s, on an idle box and with one
core held busy by another process, in the same run.

    .venv/bin/python bench/cctv.py --live                      # ~15 min: both conditions
    .venv/bin/python bench/cctv_live.py --counts 8,16 --seconds 20 --busy no   # quick look

Prints one line per trial and one summary line per condition on stdout; progress on stderr.

The source: one frame-numbered 1080p15 stream (the noisy simple scene of bench/cctv.py's
"camera" set: H.264 High profile, CABAC, deblocking, libx264 preset medium, 4 Mbit/s, a key
frame every second, sensor noise std 6) with each picture's number as a barcode in a top band
(tests/numbered_video.py's barcode), `--seconds` long. The real GStreamer RTSP server
(floor_agent.simulated.camera.RtspServer, its own process) serves it on one mount per camera;
each session plays the file once, in real time, from its start.

The barcode band flips large black and white blocks with every picture, which no real scene
does: the tamper detector reads it as the view changing and raises a "turned" alarm in each
trial's first seconds (listed in the trial's events). The trials count frames and lag, not
alarms; the tamper figures are bench/cctv_tamper.py's.

A trial: N cameras, all in one recorder process as the cctv agent runs them (a
`CameraRecorder` per camera on one `SegmentIndex`, the agent's defaults: motion and tamper at
5 fps on the main stream), recording until every camera's stream has ended (the file played
out) or `--seconds` + 30 s, then stopped as the runner stops them. Lag is each recorder's own
figure (`CameraRecorder.lag_seconds`: how far behind its stream's clock the last written packet
arrived), sampled every 0.1 s; the trial's lag is the largest over cameras and time. Then every
camera's segments are decoded back in index order and the barcodes read: lost = numbers the
server sent that no segment holds, plus any repeated. Clean: 0 lost, 0 repeated and lag < 2 s.

"busy": a separate process spinning in pure Python (one core, nice 0, its own session so the
scheduler's autogroups give it a core as another service would take) for the whole trial,
started before the RTSP server and the recorder. Counts are tried in ascending order per
condition; the first count that is not clean ends that condition's ladder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the frame-numbered cameras' barcode

FPS = 15
MAIN_BITRATE = 4_000_000
CAMERA_NOISE = 6.0
WIDTH, HEIGHT = 1920, 1080
BAND = 120  # barcode rows at the top of each picture
LAG_BOUND = 2.0


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the source


def numbered_scene(seconds: float) -> Iterator[Any]:
    """The noisy simple scene with each picture's number in a barcode band at the top."""
    from numbered_video import numbered_picture

    from floor_agent.simulated import camera as sim

    script = sim.SimpleScript(seconds=seconds, noise=CAMERA_NOISE)
    for n, frame in enumerate(sim.simple_scene(WIDTH, HEIGHT, FPS, script)):
        frame[:BAND] = numbered_picture(n, WIDTH, 2 * BAND)[:BAND]
        yield frame


def make_source(path: Path, seconds: float) -> int:
    from floor_agent.simulated import camera as sim

    started = time.monotonic()
    frames = sim.encode_video(path, numbered_scene(seconds), FPS, bit_rate=MAIN_BITRATE,
                              preset="medium")
    note(f"source: {frames} frames of 1080p15 made in {time.monotonic() - started:.0f} s, "
         f"{path.stat().st_size * 8 / (frames / FPS) / 1e6:.2f} Mbit/s")
    return frames


def read_numbers(paths: list[str]) -> list[int]:
    """The barcodes of every picture in `paths` (the band at the top), decoded as one
    stream in order (tests/numbered_video.decode_numbers)."""
    from numbered_video import decode_numbers

    return decode_numbers([Path(p) for p in paths], rows=2 * BAND)


# --------------------------------------------------------------------------- the recorder


def child_record(urls: list[str], storage: str, seconds: float) -> dict[str, Any]:
    """N cameras in this one process as the cctv agent runs them; lag sampled; stopped once
    every stream ended."""
    from floor_agent.cctv.config import CctvSection
    from floor_agent.cctv.index import SegmentIndex
    from floor_agent.cctv.recorder import CameraRecorder

    section = CctvSection.model_validate({
        "storage_dir": storage, "segment_seconds": 4.0,
        # one session per camera: the file is not played again before the trial ends
        "reconnect_initial_seconds": 120.0, "reconnect_max_seconds": 120.0,
        "cameras": [{"camera_id": f"cam{i + 1:02d}", "name": f"bench {i + 1}", "url": url}
                    for i, url in enumerate(urls)]})
    Path(storage).mkdir(parents=True, exist_ok=True)
    events: list[tuple[str, str]] = []
    lock = threading.Lock()
    ended: set[str] = set()

    def emit(kind: str, subject: str, severity: str = "info", **data: object) -> None:
        with lock:
            events.append((str(kind), str(data.get("camera_id", subject))))
            if str(kind) == "cctv.stream_lost":
                ended.add(str(data.get("camera_id", subject)))

    index = SegmentIndex.in_storage(section.storage_dir)
    recorders = [CameraRecorder(camera, section, index, emit) for camera in section.cameras]
    cpu0, wall0 = time.process_time(), time.monotonic()
    for recorder in recorders:
        recorder.start()
    lag = {r.camera.camera_id: 0.0 for r in recorders}
    deadline = wall0 + seconds + 30
    while time.monotonic() < deadline:
        time.sleep(0.1)
        for recorder in recorders:
            lag[recorder.camera.camera_id] = max(lag[recorder.camera.camera_id],
                                                 recorder.lag_seconds)
        with lock:
            if len(ended) == len(recorders):
                break
    wall = time.monotonic() - wall0
    for recorder in recorders:
        recorder.begin_stop()
    for recorder in recorders:
        recorder.stop()
    cpu = time.process_time() - cpu0
    segments = {r.camera.camera_id: [str(Path(storage) / s.segment.path) for s in
                                     sorted(index.segments(r.camera.camera_id),
                                            key=lambda s: s.segment.seq)] for r in recorders}
    index.close()
    kinds: dict[str, int] = {}
    for kind, _ in events:
        kinds[kind] = kinds.get(kind, 0) + 1
    return {"cpu": cpu, "wall": wall, "lag": lag, "segments": segments, "events": kinds,
            "ended": sorted(ended),
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# --------------------------------------------------------------------------- the parent


def busy_core() -> subprocess.Popen[bytes]:
    """One core's worth of another service: a pure-Python spin in its own session, so the
    kernel's autogroup scheduling weighs it as one process against the recorder's many
    threads (in the recorder's session it would get one thread's share of the two cores)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)


def trial(source: Path, frames: int, count: int, busy: bool, seconds: float,
          work: Path) -> dict[str, Any]:
    from floor_agent.simulated.camera import RtspServer

    storage = work / f"footage-{'busy' if busy else 'idle'}-{count}"
    spinner = busy_core() if busy else None
    try:
        with RtspServer({f"cam{i + 1:02d}": source for i in range(count)}) as server:
            urls = [server.url(f"cam{i + 1:02d}") for i in range(count)]
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(storage), str(seconds), *urls],
                capture_output=True, text=True, timeout=seconds + 300, check=False)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    if out.returncode != 0:
        raise RuntimeError(f"recorder child failed: {out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    expected = set(range(frames))
    lost: dict[str, int] = {}
    repeated: dict[str, int] = {}
    with ProcessPoolExecutor(max_workers=2) as pool:
        decoded = dict(zip(result["segments"], pool.map(read_numbers,
                                                        result["segments"].values()),
                           strict=True))
    for camera, numbers in decoded.items():
        lost[camera] = len(expected - set(numbers)) + len(set(numbers) - expected)
        repeated[camera] = len(numbers) - len(set(numbers))
    max_lag = max(result["lag"].values(), default=0.0)
    clean = not any(lost.values()) and not any(repeated.values()) and max_lag < LAG_BOUND
    return {"count": count, "busy": busy, "clean": clean, "lost": sum(lost.values()),
            "lost_max_camera": max(lost.values(), default=0),
            "repeated": sum(repeated.values()), "max_lag_s": round(max_lag, 2),
            "cpu_percent": round(100 * result["cpu"] / result["wall"]),
            "max_rss_mb": round(result["max_rss_mb"]), "ended": len(result["ended"]),
            "events": result["events"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="stream length per camera (30)")
    parser.add_argument("--counts", default="8,16,24,32",
                        help="camera counts to try, ascending (8,16,24,32)")
    parser.add_argument("--busy", choices=("both", "no", "yes"), default="both",
                        help="idle box, one core busy, or both (both)")
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one)")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        storage, seconds, *urls = args.child
        print(json.dumps(child_record(urls, storage, float(seconds))))
        return 0
    import av

    print(f"cctv_live_machine: {os.cpu_count()} CPUs, {platform.platform()}, Python "
          f"{platform.python_version()}, PyAV {av.__version__}, load "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    counts = [int(c) for c in args.counts.split(",")]
    conditions = {"both": [False, True], "no": [False], "yes": [True]}[args.busy]
    with tempfile.TemporaryDirectory(prefix="bench-cctv-live-", dir=args.dir) as tmp:
        work = Path(tmp)
        source = work / "numbered_1080p15.mp4"
        frames = make_source(source, args.seconds)
        for busy in conditions:
            name = "one_core_busy" if busy else "idle"
            best = 0
            for count in counts:
                note(f"{name}: {count} cameras ...")
                result = trial(source, frames, count, busy, args.seconds, work)
                print(f"cctv_live_{name}_{count}: {json.dumps(result)}", flush=True)
                if not result["clean"]:
                    break
                best = count
            print(f"cctv_live_{name}: largest clean camera count {best} of {counts} "
                  f"(0 frames lost, lag < {LAG_BOUND:g} s; {frames} frames per camera)",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
