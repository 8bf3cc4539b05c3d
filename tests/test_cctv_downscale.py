"""The small grey frame from the luma plane: its size, its likeness to the scaler's area
average, the video-range stretch, and the scaler's fallback for formats without 8-bit luma."""

from __future__ import annotations

import av
import numpy as np
import pytest

from floor_agent.cctv.downscale import reduction, small_grey


def yuv_frame(grey: np.ndarray, fmt: str = "yuv420p") -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(grey, format="gray").reformat(format=fmt)


def scene(width: int, height: int, seed: int = 1) -> np.ndarray:
    """A smooth gradient with a box and sensor noise: what a camera gives, roughly."""
    rng = np.random.default_rng(seed)
    x = np.linspace(30, 200, width)[None, :]
    y = np.linspace(0, 40, height)[:, None]
    image = x + y
    image[height // 3: height // 2, width // 4: width // 2] = 230
    return np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("width", "height", "expected"), [
    (1920, 1080, (135, 240)), (1280, 720, (180, 320)), (640, 360, (120, 213)),
    (640, 480, (160, 213)), (704, 576, (144, 176)),
    (2560, 1440, (144, 256)), (3840, 2160, (135, 240)), (320, 180, (180, 320)),
])
def test_size_is_about_the_frame_height(width: int, height: int,
                                        expected: tuple[int, int]) -> None:
    grey = small_grey(yuv_frame(scene(width, height)), 144)
    assert grey.shape == expected and grey.dtype == np.uint8
    assert grey.flags.c_contiguous


def test_close_to_the_scalers_area_average() -> None:
    frame = yuv_frame(scene(1920, 1080))
    ours = small_grey(frame, 144)
    scaler = frame.reformat(width=ours.shape[1], height=ours.shape[0], format="gray",
                            interpolation="AREA").to_ndarray()
    difference = np.abs(ours.astype(int) - scaler.astype(int))
    assert difference.mean() < 4.0
    assert abs(float(ours.mean()) - float(scaler.mean())) < 1.5


def test_video_range_is_stretched_like_the_scaler() -> None:
    black, white = np.zeros((360, 640), np.uint8), np.full((360, 640), 255, np.uint8)
    assert int(small_grey(yuv_frame(black), 144).max()) <= 1
    assert int(small_grey(yuv_frame(white), 144).min()) >= 254
    # full-range (JPEG) luma is taken as it is
    assert int(small_grey(av.VideoFrame.from_ndarray(black, format="gray"), 144).max()) == 0


def test_frames_without_8bit_luma_go_through_the_scaler() -> None:
    picture = scene(640, 360)
    rgb = av.VideoFrame.from_ndarray(np.dstack([picture] * 3), format="rgb24")
    deep = yuv_frame(picture, "yuv420p10le")
    for frame in (rgb, deep):
        grey = small_grey(frame, 144)
        assert grey.shape == (144, 256) and grey.dtype == np.uint8
        assert abs(float(grey.mean()) - float(picture.mean())) < 3


def test_reduction_never_upscales() -> None:
    assert reduction(100, 144) == (1, 1, 1)
    assert reduction(1080, 144) == (4, 2, 8)
    assert reduction(720, 360) == (1, 2, 2)
    # a third: the 2x average, then a bilinear step (OpenCV has no fast 3x area path)
    assert reduction(360, 144) == (1, 2, 3)
    assert reduction(1080, 360) == (1, 2, 3)


@pytest.mark.parametrize(("width", "height"), [(640, 360), (1920, 1080)])
def test_a_third_is_close_to_the_scalers_area_average(width: int, height: int) -> None:
    """The 2x average + bilinear step (a 360-row sub-stream for a 144-row frame, a 1080p
    stream for a 360-row one) stays an average: close to the scaler's true area filter, and
    its sensor noise reduced as much."""
    frame_height = height // 3 + 4
    picture = scene(width, height)
    frame = yuv_frame(picture)
    ours = small_grey(frame, frame_height)
    assert ours.shape == (height // 3, width // 3)
    scaler = frame.reformat(width=ours.shape[1], height=ours.shape[0], format="gray",
                            interpolation="AREA").to_ndarray()
    difference = np.abs(ours.astype(int) - scaler.astype(int))
    assert difference.mean() < 4.0
    assert abs(float(ours.mean()) - float(scaler.mean())) < 1.5
    flat = yuv_frame(np.clip(128 + np.random.default_rng(3).normal(0, 6, (height, width)),
                             0, 255).astype(np.uint8))
    assert float(small_grey(flat, frame_height).std()) < 6 * 255 / 219 / 2.5
