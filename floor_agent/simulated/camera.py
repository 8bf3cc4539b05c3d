"""Synthetic cameras: scripted scenes encoded to H.264 or H.265 with PyAV, served by a real RTSP
server.

Tests and the demo need cameras that behave like the floor's: H.264 with a key frame every
second, a stream that can drop and come back, several cameras at once. The scene here is a
simple one of our own (a moving bright box, optional light switch, covered lens, frozen image);
`camera_scenes.py` gives richer scripted scenes with ground truth, and any iterable of grey frames
can be encoded with `encode_video`.

`RtspServer` runs GStreamer's gst-rtsp-server (Debian's python3-gi, so /usr/bin/python3 as a
child process: the venv has no gi) on 127.0.0.1, one mount per camera; `stop()` and `start()`
drop and restore every connection mid-stream, as a camera losing power does.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

SYSTEM_PYTHON = "/usr/bin/python3"


@dataclass(frozen=True, slots=True)
class SimpleScript:
    """What happens in the simple scene, in seconds from its start."""

    seconds: float = 4.0
    box_speed: float = 0.25  # frame widths per second
    light_on_at: float | None = None  # the room goes from dim to bright
    covered_from: float | None = None  # lens covered (near black) until covered_until
    covered_until: float | None = None
    frozen_from: float | None = None  # the image stops changing
    noise: float = 0.0  # sensor noise, grey levels (std dev)


def simple_scene(width: int, height: int, fps: int,
                 script: SimpleScript = SimpleScript()) -> Iterator[np.ndarray]:
    """Grey frames (uint8, height x width) of a textured wall with a bright box moving across."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:height, 0:width]
    wall = (60 + 30 * np.sin(xx / 9.0) * np.cos(yy / 13.0)).astype(np.float32)
    box_w, box_h = max(4, width // 8), max(4, height // 4)
    frozen: np.ndarray | None = None
    for i in range(round(script.seconds * fps)):
        t = i / fps
        if script.frozen_from is not None and t >= script.frozen_from and frozen is not None:
            yield frozen
            continue
        frame = wall.copy()
        if script.light_on_at is not None and t >= script.light_on_at:
            frame += 70
        x = int((t * script.box_speed * width) % max(1, width - box_w))
        y = height // 3
        frame[y:y + box_h, x:x + box_w] = 230
        if (script.covered_from is not None and t >= script.covered_from
                and (script.covered_until is None or t < script.covered_until)):
            frame = np.full_like(frame, 4)
        if script.noise:
            frame += rng.normal(0, script.noise, frame.shape).astype(np.float32)
        out = np.clip(frame, 0, 255).astype(np.uint8)
        if script.frozen_from is not None and t >= script.frozen_from:
            frozen = out
        yield out


# the codecs the synthetic cameras send, and the encoder each is made with
ENCODERS = {"h264": "libx264", "hevc": "libx265"}


def _encoder_options(codec: str, gop: int, preset: str | None) -> dict[str, str]:
    """A camera's encoder settings: no B-frames, a key frame every `gop` frames. Without a
    `preset`: x264/x265's fastest (ultrafast, zerolatency: H.264 baseline without the in-loop
    deblocking filter), cheap for tests. With one: as IP cameras encode (H.264 High profile:
    CABAC, 8x8 transform, deblocking; H.265 with its deblocking and SAO), at that preset."""
    if preset is None:
        key = f"keyint={gop}:min-keyint=1:scenecut=0"
        if codec == "hevc":
            return {"preset": "ultrafast", "tune": "zerolatency",
                    "x265-params": f"{key}:log-level=error"}
        return {"profile": "baseline", "preset": "ultrafast", "tune": "zerolatency",
                "x264-params": key}
    key = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0"
    if codec == "hevc":
        return {"preset": preset, "x265-params": f"{key}:log-level=error"}
    return {"preset": preset, "profile": "high", "x264-params": key}


def encode_video(path: Path, frames: Iterable[np.ndarray], fps: int, *, codec: str = "h264",
                 gop_seconds: float = 1.0, bit_rate: int | None = None,
                 preset: str | None = None) -> int:
    """Encode grey (or BGR) frames as a camera does, H.264 or H.265 (`codec` "hevc"), a key
    frame every `gop_seconds`, into an MP4 or MPEG-TS file (by suffix): the encoder's fastest
    settings, or a camera's own at `preset` (`_encoder_options`). Returns the number of frames
    written."""
    if codec not in ENCODERS:
        raise ValueError(f"codec {codec!r}: the synthetic cameras encode {sorted(ENCODERS)}")
    path = Path(path)
    fmt = "mpegts" if path.suffix in (".ts", ".m2ts") else "mp4"
    count = 0
    with av.open(str(path), "w", format=fmt) as out:
        stream: av.VideoStream | None = None
        for frame in frames:
            if stream is None:
                height, width = frame.shape[:2]
                added = out.add_stream(ENCODERS[codec], rate=fps)
                assert isinstance(added, av.VideoStream), "a video encoder gives a video stream"
                stream = added
                stream.width, stream.height = width, height
                stream.pix_fmt = "yuv420p"
                gop = max(1, round(fps * gop_seconds))
                stream.codec_context.gop_size = gop
                options = _encoder_options(codec, gop, preset)
                if bit_rate:
                    stream.bit_rate = bit_rate
                else:
                    options["crf"] = "28"
                stream.options = dict(options)  # PyAV types options as dict[str, object]
            fmt_in = "gray" if frame.ndim == 2 else "bgr24"
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format=fmt_in)
            vf = vf.reformat(format="yuv420p")
            vf.pts = count
            for pkt in stream.encode(vf):
                out.mux(pkt)
            count += 1
        if stream is not None:
            for pkt in stream.encode(None):
                out.mux(pkt)
    return count


def make_camera_file(path: Path, *, width: int = 320, height: int = 180, fps: int = 10,
                     script: SimpleScript = SimpleScript(), codec: str = "h264") -> Path:
    """A small synthetic camera recording (the simple scene), for tests."""
    encode_video(path, simple_scene(width, height, fps, script), fps, codec=codec)
    return Path(path)


def make_scene_file(path: Path, scene: object, script: object, *,
                    codec: str = "h264", preset: str | None = None) -> list[object]:
    """Encode a `scenes.Scene(...).frames(script)` (scripted, with ground truth) to H.264 (or
    H.265; as a camera encodes at `preset`, see `encode_video`); returns each frame's truth
    (`scenes.FrameTruth`), in order."""
    truths: list[object] = []

    def greys() -> Iterator[np.ndarray]:
        for frame in scene.frames(script):  # type: ignore[attr-defined]
            truths.append(frame.truth)
            yield frame.grey

    encode_video(path, greys(), round(scene.fps), codec=codec,  # type: ignore[attr-defined]
                 preset=preset)
    return truths


def repeat_frame_from(source: Path, path: Path, from_seconds: float) -> int:
    """A camera whose image pipeline hangs: `source` (an MP4 file) copied packet for packet
    into `path` until `from_seconds`, then its last key frame before that sent again, the same
    bytes, in every frame's slot to the end (timestamps still advancing: the stream itself is
    alive). Returns the number of repeated packets."""
    repeated = 0
    with av.open(str(source)) as inp, av.open(str(path), "w", format="mp4") as out:
        video = inp.streams.video[0]
        stream = out.add_stream_from_template(video)
        key: bytes | None = None
        for packet in inp.demux(video):
            if packet.dts is None:
                continue  # the demuxer's flush packet
            if packet.pts is not None and video.time_base is not None and \
                    packet.pts * video.time_base >= from_seconds and key is not None:
                again = av.Packet(key)
                again.pts, again.dts, again.time_base = packet.pts, packet.dts, packet.time_base
                again.duration = packet.duration
                again.is_keyframe = True
                again.stream = stream
                out.mux(again)
                repeated += 1
                continue
            if packet.is_keyframe:
                key = bytes(packet)
            packet.stream = stream
            out.mux(packet)
    return repeated


def make_benchmark_file(path: Path, seconds: float = 20.0) -> Path:
    """A realistic 1080p15 stream with sensor noise at about 4 Mbit/s, for bench/."""
    script = SimpleScript(seconds=seconds, noise=3.0)
    encode_video(path, simple_scene(1920, 1080, 15, script), 15, bit_rate=4_000_000)
    return Path(path)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_SERVER_SCRIPT = r"""
import sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer, GLib
Gst.init(None)
port, mounts = sys.argv[1], sys.argv[2:]
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
table = server.get_mount_points()
for spec in mounts:
    name, launch = spec.split("=", 1)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)
    table.add_factory("/" + name, factory)
if server.attach(None) == 0:
    print("FAILED to bind", flush=True)
    sys.exit(1)
print("READY", flush=True)
GLib.MainLoop().run()
"""


def file_launch(path: Path) -> str:
    """The gst-rtsp-server pipeline that serves an MP4 H.264 or H.265 file without
    re-encoding (the codec read from the file)."""
    with av.open(str(path)) as container:
        codec = container.streams.video[0].codec_context.name
    if codec not in ENCODERS:
        raise ValueError(f"{path}: {codec} video; the RTSP server sends {sorted(ENCODERS)}")
    h = "h265" if codec == "hevc" else "h264"
    return (f"( filesrc location={Path(path).resolve()} ! qtdemux ! {h}parse ! "
            f"rtp{h}pay name=pay0 pt=96 config-interval=1 )")


def live_launch(width: int = 320, height: int = 180, fps: int = 10) -> str:
    """A live test-pattern camera (never ends): videotestsrc encoded by x264."""
    return (f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},"
            f"height={height},framerate={fps}/1 ! videoconvert ! x264enc tune=zerolatency "
            f"key-int-max={fps} speed-preset=ultrafast ! video/x-h264,profile=baseline ! "
            "rtph264pay name=pay0 pt=96 config-interval=1 )")


@dataclass
class RtspServer:
    """A real RTSP server on 127.0.0.1 serving `mounts` (path -> Path of an MP4 file, or a
    gst launch string starting with "("), e.g. {"cam1": file} at rtsp://127.0.0.1:PORT/cam1.

    A file plays once from its start for each new session (make it long enough for the test);
    `stop()` kills the server (connections drop), `start()` brings it back on the same port."""

    mounts: Mapping[str, Path | str]
    port: int = field(default_factory=free_port)
    _proc: subprocess.Popen[str] | None = None

    def url(self, mount: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{mount}"

    def start(self, timeout: float = 10.0) -> None:
        if self._proc is not None:
            return
        specs = [f"{name}={m if isinstance(m, str) else file_launch(m)}"
                 for name, m in self.mounts.items()]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        self._proc = subprocess.Popen(
            [SYSTEM_PYTHON, "-c", _SERVER_SCRIPT, str(self.port), *specs],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
            start_new_session=True)
        deadline = time.monotonic() + timeout
        assert self._proc.stdout is not None
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self._proc.stdout], [], [], 0.2)
            if ready:
                line = self._proc.stdout.readline()
                if line.startswith("READY"):
                    return
                self.stop()
                raise RuntimeError(f"RTSP server on port {self.port} did not start: "
                                   f"{line.strip() or 'exited'}")
        self.stop()
        raise RuntimeError(f"RTSP server on port {self.port} not ready after {timeout} s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> RtspServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
