"""The small grey frame straight from the decoder's luma plane, at a fraction of the scaler's cost.

Motion and tamper read a frame about 100-180 px high. FFmpeg's scaler (`reformat(...,
format="gray", interpolation="AREA")`) averages every pixel of a 1080p frame for it: about
0.9 ms a frame here, as much as motion and tamper together (bench/cctv.py). The luma plane is
already the grey picture, so it is read in place (no copy), every s-th pixel of every s-th row
is taken and pairs of those are averaged (OpenCV's integer 2x area path): 0.07 ms, and the
sensor noise the analysis sees is halved by the average, as a proper area filter would. A
factor of 3 (a 640x360 sub-stream for a 144-row frame: 213x120, not 320x180) has no integer
fast path in OpenCV (its 3x area average costs 0.1 ms): the 2x average, then a bilinear step
on the small frame, 0.03 ms; motion and tamper on the 120-row frame cost ~0.11 ms less than on
180 rows (bench/cctv.py). Video range luma (16-235) is stretched to 0-255 as the scaler does,
so thresholds mean the same grey levels on every path. Anything that is not 8-bit planar luma
goes through the scaler.
"""

from __future__ import annotations

import av
import cv2
import numpy as np

# 8-bit formats whose first plane is the luma (Y) plane, one byte a pixel
LUMA_FORMATS = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p",
                          "yuv440p", "yuvj440p", "yuv411p", "yuvj411p", "nv12", "nv21", "gray"})
FULL_RANGE_FORMATS = frozenset({"yuvj420p", "yuvj422p", "yuvj444p", "yuvj440p", "yuvj411p",
                                "gray"})
VIDEO_RANGE_GAIN = 255.0 / 219.0  # luma 16..235 -> 0..255
VIDEO_RANGE_OFFSET = -16.0 * VIDEO_RANGE_GAIN


def small_size(width: int, height: int, frame_height: int) -> tuple[int, int]:
    """The scaler's analysis frame size: `frame_height` high (never upscaled), even, aspect
    kept. Used where the frame is not read from a luma plane (the fallback, OpenCV sources)."""
    h = min(frame_height, height)
    w = max(2, round(width * h / height / 2) * 2)
    return w, max(2, h - h % 2)


def reduction(height: int, frame_height: int) -> tuple[int, int, int]:
    """(stride, average, factor): rows and columns kept 1 in `stride`, then `average` x
    `average` of those averaged; when stride x average falls short of `factor`, the rest is a
    bilinear step to 1/factor of the size. The result is about `frame_height` high (the
    nearest whole factor, halves rounded up; never upscaled)."""
    factor = int(height / frame_height + 0.5)
    if factor < 2:
        return 1, 1, 1
    if factor == 3:
        return 1, 2, 3
    stride = max(1, round(factor / 2))
    return stride, 2, 2 * stride


def luma_plane(frame: av.VideoFrame) -> np.ndarray | None:
    """The frame's luma plane as a (height, width) uint8 view of the decoder's buffer, or None
    when the frame's format has no 8-bit luma plane."""
    if frame.format.name not in LUMA_FORMATS:
        return None
    plane = frame.planes[0]
    # PyAV's stubs do not declare VideoPlane's buffer protocol, which it has.
    rows = np.frombuffer(plane, np.uint8)  # type: ignore[call-overload]
    if rows.size < plane.line_size * frame.height or plane.line_size < frame.width:
        return None
    return rows[: plane.line_size * frame.height].reshape(frame.height, plane.line_size)[
        :, : frame.width]


def small_grey(frame: av.VideoFrame, frame_height: int) -> np.ndarray:
    """The analysis frame of a decoded frame: uint8, about `frame_height` high, full range.

    Raises ValueError (or av.FFmpegError from the scaler's fallback) for a frame that cannot
    be converted; the caller reports it as bad input of that camera.
    """
    if frame.width <= 0 or frame.height <= 0:
        raise ValueError(f"zero-size frame ({frame.width}x{frame.height})")
    luma = luma_plane(frame)
    if luma is None:
        w, h = small_size(frame.width, frame.height, frame_height)
        return frame.reformat(width=w, height=h, format="gray",
                              interpolation="AREA").to_ndarray()
    stride, average, factor = reduction(frame.height, frame_height)
    kept = luma[::stride, ::stride]
    if average > 1:
        rows = kept.shape[0] // average * average
        cols = kept.shape[1] // average * average
        if rows == 0 or cols == 0 or frame.height < factor or frame.width < factor:
            raise ValueError(f"frame {frame.width}x{frame.height} too small to reduce")
        kept = cv2.resize(kept[:rows, :cols], (cols // average, rows // average),
                          interpolation=cv2.INTER_AREA)
        if stride * average < factor:
            kept = cv2.resize(kept, (frame.width // factor, frame.height // factor),
                              interpolation=cv2.INTER_LINEAR)
    else:
        kept = kept.copy()  # own the pixels: the decoder reuses its buffer
    if frame.format.name in FULL_RANGE_FORMATS or _full_range(frame):
        return kept
    return cv2.convertScaleAbs(kept, alpha=VIDEO_RANGE_GAIN, beta=VIDEO_RANGE_OFFSET)


def _full_range(frame: av.VideoFrame) -> bool:
    """A stream flagged full range (JPEG range) in yuv420p: luma is already 0-255."""
    try:
        return int(frame.color_range) == 2  # AVCOL_RANGE_JPEG
    except (AttributeError, TypeError, ValueError):
        return False
