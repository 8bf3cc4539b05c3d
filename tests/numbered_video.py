"""Frame-numbered test cameras: every frame carries its own number as a binary barcode (16
blocks of black or white across the picture, survives H.264/H.265 at any sane bit rate), so
a test can decode recorded segments and say exactly which frames are there, in which order,
and which are missing or repeated.

The encoders here make the stream shapes real cameras send: open GOP with B-frames (leading
B-frames reference the previous GOP, as Hikvision/Dahua-class cameras encode), closed GOP
with B-frames, no B-frames, H.265, long GOPs, a resolution change, a hole in the timestamps.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import av
import numpy as np

BITS = 16
BAR_ROWS = 0.5  # the barcode fills the top half; the bottom half moves (B-frames get used)


def numbered_picture(n: int, width: int, height: int) -> np.ndarray:
    """A grey picture with `n` as a barcode (MSB first) in its top half and a moving bar."""
    img = np.full((height, width), 96, dtype=np.uint8)
    block = width // BITS
    top = int(height * BAR_ROWS)
    for bit in range(BITS):
        if (n >> (BITS - 1 - bit)) & 1:
            img[:top, bit * block:(bit + 1) * block] = 235
        else:
            img[:top, bit * block:(bit + 1) * block] = 16
    x = (n * 7) % max(1, width - 16)
    img[top + 4:height - 4, x:x + 16] = 200
    return img


def read_number(grey: np.ndarray) -> int:
    """The number in a decoded picture's barcode."""
    height, width = grey.shape[:2]
    block = width // BITS
    top = int(height * BAR_ROWS)
    n = 0
    for bit in range(BITS):
        left = bit * block
        cell = grey[top // 4: top * 3 // 4, left + block // 4: left + block - block // 4]
        n = (n << 1) | int(float(cell.mean()) > 125)
    return n


def encoder_options(shape: str, gop: int) -> tuple[str, dict[str, str]]:
    """(encoder, options) for a stream shape: "open_gop", "closed_gop_b", "plain", "hevc",
    "hevc_open_gop"."""
    base = f"keyint={gop}:min-keyint={gop}:scenecut=0"
    if shape == "open_gop":
        return "libx264", {"preset": "veryfast", "profile": "high",
                           "x264-params": f"{base}:bframes=3:b-adapt=0:open-gop=1"}
    if shape == "closed_gop_b":
        return "libx264", {"preset": "veryfast", "profile": "high",
                           "x264-params": f"{base}:bframes=3:b-adapt=0:open-gop=0"}
    if shape == "plain":
        return "libx264", {"preset": "ultrafast", "tune": "zerolatency", "x264-params": base}
    if shape == "hevc_open_gop":
        return "libx265", {"preset": "ultrafast", "x265-params":
                           f"{base}:bframes=3:b-adapt=0:open-gop=1:log-level=error"}
    if shape == "hevc":
        return "libx265", {"preset": "ultrafast",
                           "x265-params": f"{base}:bframes=2:log-level=error"}
    raise ValueError(f"no stream shape {shape!r}")


def encode_numbered(path: Path, frames: int, *, shape: str = "open_gop", fps: int = 10,
                    gop: int = 10, size: tuple[int, int] = (192, 96),
                    hole: tuple[int, float] | None = None, first: int = 0,
                    pts_from: int = 0) -> list[int]:
    """Encode `frames` numbered pictures (numbers first, first+1, ...) into `path` (MP4, or
    MPEG-TS by suffix). `hole`: (at frame, seconds) a jump in the timestamps (variable frame
    rate: the camera sent nothing for that long). `pts_from`: the first picture's timestamp,
    in frames (a file that continues another's time line). Returns the numbers written, in
    order."""
    encoder, options = encoder_options(shape, gop)
    fmt = "mpegts" if Path(path).suffix in (".ts", ".m2ts") else "mp4"
    written: list[int] = []
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(encoder, rate=fps)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = dict(options, crf="23")
        pts = pts_from
        for i in range(frames):
            n = first + i
            if hole is not None and i == hole[0]:
                pts += round(hole[1] * fps)
            vf = av.VideoFrame.from_ndarray(numbered_picture(n, *size), format="gray")
            vf = vf.reformat(format="yuv420p")
            vf.pts = pts
            pts += 1
            for pkt in stream.encode(vf):
                out.mux(pkt)
            written.append(n)
        for pkt in stream.encode(None):
            out.mux(pkt)
    return written


def encode_resolution_change(path: Path, sizes: list[tuple[int, int]], frames: int, *,
                             shape: str = "open_gop", fps: int = 10, gop: int = 10
                             ) -> list[int]:
    """One MPEG-TS stream (`path`, .ts) whose resolution changes: `frames` numbered pictures
    at each of `sizes` in turn, on one time line, each part opening with its new parameter
    sets (as a camera reconfigured while streaming sends them). Returns the numbers written."""
    numbers: list[int] = []
    with open(path, "wb") as out:
        for part, size in enumerate(sizes):
            piece = Path(path).with_name(f".{Path(path).stem}-{part}.ts")
            # every part starts a GOP later on the time line: the first part's B-frames then
            # need no negative decode timestamps, which the muxer would shift that part alone
            numbers += encode_numbered(piece, frames, shape=shape, fps=fps, gop=gop, size=size,
                                       first=len(numbers), pts_from=gop + len(numbers))
            out.write(piece.read_bytes())
            piece.unlink()
    return numbers


def numbers_in_decode_order(path: Path) -> list[int]:
    """The frame number of each packet of an encode_numbered file, in the order the packets
    are sent (decode order): the n-th smallest timestamp is the n-th picture written."""
    with av.open(str(path)) as container:
        stamps = [p.pts for p in container.demux(video=0) if p.size and p.pts is not None]
    rank = {pts: n for n, pts in enumerate(sorted(stamps))}
    return [rank[pts] for pts in stamps]


def sent_numbers(path: Path, packets: int) -> list[int]:
    """The numbers a connection that got the first `packets` packets of `path` (from its
    start, in order, none missing) can show, in display order."""
    return sorted(numbers_in_decode_order(path)[:packets])


def decode_numbers(paths: Iterable[Path], *, together: bool = True,
                   rows: int | None = None) -> list[int]:
    """The frame numbers in recorded segment files, decoded in display order. `together`:
    one decoder over all files in turn (as a player concatenating segments, or an export);
    else each file with its own decoder (as a file opened on its own). `rows`: the barcode
    picture is the top `rows` rows of each frame (a band over another scene), not all of it."""
    numbers: list[int] = []
    decoder = None
    for path in paths:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if decoder is None or not together or decoder.name != stream.codec_context.name:
                if decoder is not None:
                    numbers.extend(_flush(decoder, rows))
                decoder = av.CodecContext.create(stream.codec_context.name, "r")
                decoder.extradata = stream.codec_context.extradata
            elif stream.codec_context.extradata != decoder.extradata:
                numbers.extend(_flush(decoder, rows))
                decoder = av.CodecContext.create(stream.codec_context.name, "r")
                decoder.extradata = stream.codec_context.extradata
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                for frame in decoder.decode(packet):
                    numbers.append(read_number(frame.to_ndarray(format="gray")[:rows]))
        if not together and decoder is not None:
            numbers.extend(_flush(decoder, rows))
            decoder = None
    if decoder is not None:
        numbers.extend(_flush(decoder, rows))
    return numbers


def _flush(decoder: av.CodecContext, rows: int | None = None) -> Iterator[int]:
    for frame in decoder.decode(None):
        yield read_number(frame.to_ndarray(format="gray")[:rows])
