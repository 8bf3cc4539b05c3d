"""The plain data of the recorder, shared by every part of `cctv/`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

GENESIS_SHA256 = "0" * 64  # the "previous hash" of a camera's first segment


@dataclass(frozen=True, slots=True)
class Segment:
    """One recorded segment file: packets copied from the camera, never re-encoded.

    `path` is relative to the storage directory: CAMERA/YYYY-MM-DD/HH/<start>.mp4 in UTC.
    `sha256` is the file's hash; `prev_sha256` the camera's previous segment's (GENESIS_SHA256
    for the first): together a per-camera chain, reported as `cctv.segment` audit events."""

    camera_id: str
    seq: int  # 1, 2, ... per camera, never reused
    path: str
    start: datetime  # aware, UTC: the first packet's wall-clock time
    duration: float  # seconds, from the packets' timestamps
    size: int  # bytes
    sha256: str  # hex
    prev_sha256: str  # hex
    packets: int = 0
    keyframe_start: bool = True  # begins on a key frame (every segment but a forced one)
    motion: bool = False  # motion was seen during it (kept for retain_motion_days)
    # open GOP: pictures after the key frame in decode order but shown before it; they
    # reference the previous segment's pictures too, so they decode with it (played or
    # exported in sequence), not from this file alone
    leading: int = 0
    # packets the camera sent since the previous segment that no segment has (a corrupt
    # packet, packets before the first key frame of a connection), and why
    lost: int = 0
    lost_reasons: str = ""
    # packets in it the demuxer flagged corrupt (data lost on the way): kept as they came
    damaged: int = 0
    # the camera's audio packets in it (CameraConfig.audio; 0 when audio is not recorded);
    # `packets` counts the video's
    audio_packets: int = 0


@dataclass(frozen=True, slots=True)
class SmallFrame:
    """What motion and tamper read: a small grey frame (from the decoder's luma plane).

    `grey` is a 2-D uint8 numpy array (height about 100-180 px); `t` the stream time in seconds
    (monotonic per camera); `packets_alive` says packets still arrive (a frozen image is only
    tampering while the stream itself is alive)."""

    camera_id: str
    t: float
    grey: object = field(repr=False)  # numpy.ndarray[uint8], 2-D
    packets_alive: bool = True


@dataclass(frozen=True, slots=True)
class CameraHealth:
    """A camera's state for the dashboard and the watchdog."""

    camera_id: str
    online: bool
    fps: float = 0.0
    last_frame_at: datetime | None = None
    stalls: int = 0
    reason: str = ""  # why it is offline or marked bad, in words
