"""cctv.yaml: the recorder's cameras, motion and tamper detection, storage and offload."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from floor_agent.config.audit import AgentRoleConfig
from floor_agent.config.base import (
    ConfigPath,
    StrictFloat,
    StrictInt,
    StrictModel,
    require_unique,
)

CAMERA_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
CameraId = Annotated[str, Field(strict=True, pattern=CAMERA_ID_RE.pattern)]
Fraction = Annotated[StrictFloat, Field(ge=0, le=1)]


class MotionConfig(StrictModel):
    """Motion on a small grey frame (the decoder's luma plane, scaled down)."""

    enabled: Annotated[bool, Field(strict=True)] = True
    # height of the frame motion and tamper read (width follows the aspect ratio)
    frame_height: Annotated[StrictInt, Field(ge=90, le=360)] = 144
    # frames per second analysed (the rest are demuxed and recorded, not decoded for motion
    # where the codec allows skipping them)
    analysis_fps: Annotated[StrictFloat, Field(gt=0, le=30)] = 5.0
    # the analysis decoder skips H.264/H.265's in-loop deblocking filter on frames that are
    # not intra-coded: ~16 % of a sub-stream's decode CPU, and the small frame moves by under
    # a grey level on average (bench/cctv.py, tests). Recording copies packets and is never
    # touched; dashboard snapshots, taken from these frames, can show faint block edges.
    skip_deblocking: Annotated[bool, Field(strict=True)] = True
    # a pixel differs from the background when its grey level is this far off (0-255)
    threshold: Annotated[StrictInt, Field(ge=1, le=255)] = 25
    night_threshold: Annotated[StrictInt, Field(ge=1, le=255)] = 15
    # the frame counts as night below this mean grey level
    night_below: Annotated[StrictInt, Field(ge=0, le=255)] = 50
    # smallest moving area, as a fraction of the frame
    min_area: Fraction = 0.002
    # background running-average weight per analysed frame
    background_alpha: Fraction = 0.05
    # a change of mean brightness this large (0-255) between two analysed frames, or against
    # the background when most of the frame changed (lights ramping up over a few frames), is
    # the light (lights on, IR switch): recalibrate instead of reporting motion
    lighting_jump: Annotated[StrictInt, Field(ge=1, le=255)] = 40
    # motion ends after this long without motion
    end_after_seconds: Annotated[StrictFloat, Field(gt=0, le=600)] = 5.0
    # areas never analysed: polygons in fractions of the frame, [[x, y], ...]
    masks: list[Annotated[list[Annotated[list[Fraction], Field(min_length=2, max_length=2)]],
                          Field(min_length=3)]] = Field(default_factory=list)


class TamperConfig(StrictModel):
    """Lens covered or sprayed, defocused, turned away, frozen."""

    enabled: Annotated[bool, Field(strict=True)] = True
    # a condition must last this long before the alarm (and be gone as long for recovery)
    hold_seconds: Annotated[StrictFloat, Field(gt=0, le=60)] = 1.0
    # covered: the frame dark (median grey below dark_below) or uniform (robust grey spread
    # below uniform_std) AND its structure gone: a dark room at night keeps its structure and
    # is not covered
    dark_below: Annotated[StrictInt, Field(ge=0, le=255)] = 12
    uniform_std: Annotated[StrictFloat, Field(ge=0, le=128)] = 6.0
    # defocused: sharpness (the Laplacian's energy) below this fraction of the reference's, at
    # the fine scale or at the thumbnail's, there above the sensor's noise floor (at night)
    blur_ratio: Fraction = 0.35
    # turned: similarity to the reference scene below this (0-1)
    scene_similarity: Fraction = 0.5
    # frozen: the picture stopped changing for this long AND there is evidence beyond a still
    # picture (an empty room's picture is still too): the learned clock overlay stopped, or
    # the camera repeats one packet or its timestamps stand while packets arrive
    frozen_seconds: Annotated[StrictFloat, Field(ge=2, le=3600)] = 30.0
    # small regions that change on their own schedule (the burned-in clock, a blinking LED)
    # are learned over about this long, left out of every measure, and their ticking is the
    # evidence that the picture is alive
    overlay_learn_seconds: Annotated[StrictFloat, Field(ge=5, le=3600)] = 60.0
    # a picture identical this long is frozen on its own, without a stopped clock or the
    # stream's evidence, as a warning; null (the default): never, since an empty room's
    # picture looks exactly like that. For cameras that always see movement (a road).
    frozen_picture_only_seconds: Annotated[StrictFloat, Field(ge=2, le=86400)] | None = None

    @model_validator(mode="after")
    def _picture_only_after_evidence(self) -> TamperConfig:
        if (self.frozen_picture_only_seconds is not None
                and self.frozen_picture_only_seconds < self.frozen_seconds):
            raise ValueError("frozen_picture_only_seconds: must be >= frozen_seconds (a picture "
                             "alone is weaker evidence than a stopped clock or stream)")
        return self


class CameraConfig(StrictModel):
    """One camera: where its streams are and how long its footage may be kept."""

    camera_id: CameraId
    name: Annotated[str, Field(strict=True, min_length=1)]
    # main stream, recorded without re-encoding: rtsp://, http(s):// (MPEG-TS), a file path,
    # or v4l2:///dev/videoN (USB/MJPEG through OpenCV, re-encoded: the one exception)
    url: Annotated[str, Field(strict=True, min_length=1)]
    # optional sub-stream motion and tamper read instead of the main stream (Frigate's layout)
    detect_url: Annotated[str, Field(strict=True, min_length=1)] | None = None
    enabled: Annotated[bool, Field(strict=True)] = True
    # days continuous footage is kept, and footage with motion (GDPR: as short as the purpose)
    retain_days: Annotated[StrictFloat, Field(gt=0, le=3650)] = 3.0
    retain_motion_days: Annotated[StrictFloat, Field(gt=0, le=3650)] = 14.0
    motion: MotionConfig = Field(default_factory=MotionConfig)
    tamper: TamperConfig = Field(default_factory=TamperConfig)
    # the camera's audio track. Off by default, by decision: recording the spoken word at a
    # workplace is unlawful in many EU states (e.g. Germany's StGB section 201), whatever the
    # video's purpose. Off: the audio is never demuxed into footage, and a camera that sends
    # some says so once per connection (cctv.audio_not_recorded, info). On (only with a legal
    # basis of its own, documented in the TOM report): the audio packets are copied, never
    # re-encoded, into the same segments as the video. MP4 segments store AAC (and Opus, MP3),
    # not G.711 (PCMA/PCMU) or G.726: a camera sending those records its video alone, with
    # cctv.audio_not_recorded (warning) naming the camera and the codec.
    audio: Annotated[bool, Field(strict=True)] = False

    @model_validator(mode="after")
    def _motion_kept_longer(self) -> CameraConfig:
        if self.retain_motion_days < self.retain_days:
            raise ValueError("retain_motion_days: must be >= retain_days (motion footage is "
                             "the part worth keeping longer)")
        return self


class OffloadConfig(StrictModel):
    """A second copy off the box: SFTP to central storage (paramiko)."""

    enabled: Annotated[bool, Field(strict=True)] = False
    host: Annotated[str, Field(strict=True, min_length=1)] = "127.0.0.1"
    port: Annotated[StrictInt, Field(ge=1, le=65535)] = 22
    user: Annotated[str, Field(strict=True, min_length=1)] = "floor-cctv"
    # the client key (OpenSSH private key file, mode 0600) and the server's pinned host key
    # (one known_hosts line); an unknown or changed host key is refused, never accepted
    key_file: ConfigPath = Path("/etc/floor-agent/cctv-offload.key")
    known_hosts_file: ConfigPath = Path("/etc/floor-agent/cctv-offload.known_hosts")
    remote_dir: Annotated[str, Field(strict=True, min_length=1)] = "footage"
    # retry delay after a failed upload, growing to the max
    backoff_initial_seconds: Annotated[StrictFloat, Field(gt=0)] = 2.0
    backoff_max_seconds: Annotated[StrictFloat, Field(gt=0)] = 300.0
    timeout_seconds: Annotated[StrictFloat, Field(gt=0, le=600)] = 30.0


class CctvSection(StrictModel):
    """The recorder: cameras, where footage goes, how long it stays."""

    cameras: list[CameraConfig] = Field(default_factory=list)
    # footage lives under storage_dir/CAMERA/YYYY-MM-DD/HH/ (UTC)
    storage_dir: ConfigPath = Path("/var/lib/floor-agent/cctv/footage")
    segment_seconds: Annotated[StrictFloat, Field(ge=2, le=300)] = 10.0
    # below this much free space the oldest footage goes first (with an alarm), long before
    # recording could stop
    min_free_percent: Annotated[StrictFloat, Field(ge=1, le=90)] = 10.0
    min_free_bytes: Annotated[StrictInt, Field(ge=0)] = 1 << 30
    # how often retention and disk space are checked
    sweep_interval_seconds: Annotated[StrictFloat, Field(ge=1, le=86400)] = 60.0
    # a camera without frames this long is offline (cctv.camera_offline)
    offline_after_seconds: Annotated[StrictFloat, Field(ge=1, le=3600)] = 10.0
    # reconnect delay after a lost stream, growing to the max
    reconnect_initial_seconds: Annotated[StrictFloat, Field(gt=0)] = 1.0
    reconnect_max_seconds: Annotated[StrictFloat, Field(gt=0)] = 30.0
    # a camera whose last written packet is further behind real time than this is lagging
    # (cctv.lagging, then cctv.lag_recovered once back under half of it)
    lag_alarm_seconds: Annotated[StrictFloat, Field(gt=0, le=3600)] = 5.0
    # a camera whose reader is further behind real time than this (a starved CPU) sheds
    # analysis first: motion and tamper read key frames only (cctv.analysis_shed) until it is
    # back under half of it (cctv.analysis_restored); recording is never shed. 0: never shed.
    shed_analysis_seconds: Annotated[StrictFloat, Field(ge=0, le=3600)] = 1.0
    # shed, full analysis comes back once the lag stayed under half of shed_analysis_seconds
    # this long (doubled when shed again within twice the hold, up to 600 s): no flapping
    shed_restore_seconds: Annotated[StrictFloat, Field(ge=0, le=3600)] = 10.0
    # a camera whose own clock (RTCP sender reports) is further than this from the box's
    # raises cctv.clock_drift; its footage is then timed by the box's clock (arrival anchor)
    clock_drift_seconds: Annotated[StrictFloat, Field(gt=0, le=86400)] = 2.0
    offload: OffloadConfig = Field(default_factory=OffloadConfig)

    @field_validator("cameras")
    @classmethod
    def _unique_cameras(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        require_unique((camera.camera_id for camera in cameras), "camera_id")
        return cameras


class CctvConfig(AgentRoleConfig):
    """cctv.yaml: CCTV recorder agent."""

    role: Literal["cctv"] = "cctv"
    cctv: CctvSection = Field(default_factory=CctvSection)
