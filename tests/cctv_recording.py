"""Recording a camera in-process through the agent's own CameraRecorder, for the cctv tests:
a CctvSection for test cameras, a recorder that also keeps its small frames and says when a
file ended, a scripted scene encoded and recorded to its end, and waiting on a condition."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from audit_events import AuditRecorder

from floor_agent.cctv.config import CctvSection
from floor_agent.cctv.index import SegmentIndex
from floor_agent.cctv.model import SmallFrame
from floor_agent.cctv.recorder import CameraRecorder
from floor_agent.cctv.runner import verify_storage
from floor_agent.cctv.source import FrameEvent, SourceFinished
from floor_agent.simulated.camera import make_scene_file
from floor_agent.simulated.camera_scenes import FrameTruth, Scene, Script

FPS = 10
Event = tuple[str, str, dict[str, Any]]  # kind, severity, data


def section(storage: Path, *cameras: tuple[str, str],
            tamper: dict[str, Any] | None = None, **camera: Any) -> CctvSection:
    """The cctv section the recorder tests use; `camera`: more fields for every camera (e.g.
    audio=True)."""
    config = CctvSection.model_validate({
        "storage_dir": str(storage), "segment_seconds": 2.0, "offline_after_seconds": 2.0,
        "reconnect_initial_seconds": 0.2, "reconnect_max_seconds": 0.5,
        "cameras": [{"camera_id": camera_id, "name": f"Floor {camera_id}", "url": url,
                     "motion": {"analysis_fps": float(FPS)}, "tamper": tamper or {}} | camera
                    for camera_id, url in cameras]})
    config.storage_dir.mkdir(parents=True, exist_ok=True)
    return config


class WatchedRecorder(CameraRecorder):
    """The real recorder; it also keeps the small frames the source hands it and says when a
    file has played to its end. Its events go through a real audit Spool (next to the
    storage) before they reach `events`: what the chain would refuse fails the test."""

    def __init__(self, config: CctvSection, camera: int, index: SegmentIndex,
                 events: list[Event]) -> None:
        spool_dir = config.storage_dir.parent / f"audit-{config.cameras[camera].camera_id}"
        spool_dir.mkdir(parents=True, exist_ok=True)
        self.audit = AuditRecorder(spool_dir, then=lambda kind, subject, severity="info",
                                   **data: events.append((kind, severity, data)))
        self._audit_closed = False
        super().__init__(config.cameras[camera], config, index, self.audit)
        self.frames: list[SmallFrame] = []
        self.finished = threading.Event()

    def stop(self) -> None:
        super().stop()
        if not self._audit_closed:  # stop() may be called again; the spool closes once
            self._audit_closed = True
            self.audit.close()

    def on_event(self, event: object) -> None:
        if isinstance(event, FrameEvent):
            self.frames.append(event.frame)
        super().on_event(event)
        if isinstance(event, SourceFinished) and event.stream == "main":
            self.finished.set()


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.1)


def of_kind(events: list[Event], kind: str, camera_id: str | None = None
            ) -> list[dict[str, Any]]:
    return [data for k, _, data in list(events)
            if k == kind and (camera_id is None or data["camera_id"] == camera_id)]


def record_scene(tmp_path: Path, script: Script, seed: int, size: tuple[int, int] = (256, 144),
                 preset: str | None = None, codec: str = "h264",
                 tamper: dict[str, Any] | None = None, **traits: Any
                 ) -> tuple[WatchedRecorder, list[Event], list[FrameTruth]]:
    """Encode the scripted scene (`tmp_path`/scene.mp4: H.264 or H.265, at `preset`: see
    sim.encode_video) and record it as a camera into `tmp_path`/footage, to the file's end;
    the recorder, its events and each encoded frame's truth. `traits`: the camera's
    (camera_scenes.Scene: noise, key_every, vignette); `tamper`: the camera's tamper config."""
    video = tmp_path / "scene.mp4"
    truths = make_scene_file(video, Scene(size[0], size[1], FPS, seed=seed, **traits), script,
                             codec=codec, preset=preset)
    recorder, events = record_file(video, tmp_path / "footage", tamper)
    return recorder, events, truths  # type: ignore[return-value]


def record_file(video: Path, footage: Path, tamper: dict[str, Any] | None = None,
                **camera: Any) -> tuple[WatchedRecorder, list[Event]]:
    """Record a video file as camera cam1 into `footage`, to the file's end; the recorder and
    its events. The stored chain must verify whatever the file held."""
    events: list[Event] = []
    config = section(footage, ("cam1", str(video)), tamper=tamper, **camera)
    with SegmentIndex.in_storage(config.storage_dir) as index:
        recorder = WatchedRecorder(config, 0, index, events)
        recorder.start()
        try:
            assert recorder.finished.wait(60), f"{video.name} never played to its end"
        finally:
            recorder.stop()
    assert verify_storage(config).report.ok
    return recorder, events
