"""What a CCTV recorder (cctv/) records."""

from __future__ import annotations

from enum import StrEnum

from floor_agent.protocol.kinds.topic import Topic


class CctvKind(StrEnum):
    CAMERA_ONLINE = "cctv.camera_online"
    CAMERA_OFFLINE = "cctv.camera_offline"
    STREAM_LOST = "cctv.stream_lost"
    STREAM_GAP = "cctv.stream_gap"
    BAD_INPUT = "cctv.bad_input"
    PACKETS_LOST = "cctv.packets_lost"
    # the camera sends audio that is not recorded: by policy (audio: false, info) or because
    # the segments cannot store its codec (audio: true, warning); or audio: true and the
    # camera sends none (notice). Once per connection.
    AUDIO_NOT_RECORDED = "cctv.audio_not_recorded"
    LAGGING = "cctv.lagging"
    LAG_RECOVERED = "cctv.lag_recovered"
    # a lagging reader sheds analysis first (motion and tamper on key frames only, warning)
    # and restores it once caught up (notice); recording is never shed
    ANALYSIS_SHED = "cctv.analysis_shed"
    ANALYSIS_RESTORED = "cctv.analysis_restored"
    CLOCK_DRIFT = "cctv.clock_drift"
    SEGMENT = "cctv.segment"
    MOTION_START = "cctv.motion_start"
    MOTION_END = "cctv.motion_end"
    TAMPER = "cctv.tamper"
    TAMPER_CLEARED = "cctv.tamper_cleared"
    OFFLOADED = "cctv.offloaded"
    OFFLOAD_FAILED = "cctv.offload_failed"
    OFFLOAD_REFUSED = "cctv.offload_refused"
    OFFLOAD_MISMATCH = "cctv.offload_mismatch"
    OFFLOAD_RECOVERED = "cctv.offload_recovered"
    RETENTION_SWEEP = "cctv.retention_sweep"
    SWEEP_FAILED = "cctv.sweep_failed"
    DISK_LOW = "cctv.disk_low"
    EXPORT = "cctv.export"
    VIEW = "cctv.view"


CAMERA_LINK = Topic("cam:", "camera_id", ":conn")
CAMERA_TAMPER = Topic("cam:", "camera_id", ":tamper")
CAMERA_MOTION = Topic("cam:", "camera_id", ":motion")
CAMERA_LAG = Topic("cam:", "camera_id", ":lag")
CAMERA_ANALYSIS = Topic("cam:", "camera_id", ":analysis")
# the kinds that set a camera's current state, and the state they set
STATES: dict[CctvKind, Topic] = {
    CctvKind.CAMERA_ONLINE: CAMERA_LINK,
    CctvKind.CAMERA_OFFLINE: CAMERA_LINK,
    CctvKind.STREAM_LOST: CAMERA_LINK,
    CctvKind.STREAM_GAP: CAMERA_LINK,
    CctvKind.TAMPER: CAMERA_TAMPER,
    CctvKind.TAMPER_CLEARED: CAMERA_TAMPER,
    CctvKind.MOTION_START: CAMERA_MOTION,
    CctvKind.MOTION_END: CAMERA_MOTION,
    CctvKind.LAGGING: CAMERA_LAG,
    CctvKind.LAG_RECOVERED: CAMERA_LAG,
    CctvKind.ANALYSIS_SHED: CAMERA_ANALYSIS,
    CctvKind.ANALYSIS_RESTORED: CAMERA_ANALYSIS,
    CctvKind.SEGMENT: Topic("cam:", "camera_id", ":segment"),
}
