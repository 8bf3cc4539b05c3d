"""The CCTV recorder as the cctv agent's capability: the index, a recorder per camera, the
retention sweep and the SFTP offload (started, watched and stopped by
floor_agent/roles/run.py). Also `floor-agent cctv verify` and `export`.

A camera that cannot be reached is an alarm and keeps being retried; the agent runs on with
the others. The sweep runs first at start (footage past retention goes even if the box was
off for a week), then every `sweep_interval_seconds`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

from floor_agent.audit.agent import AuditAgent
from floor_agent.audit.capability import CapabilityRunner
from floor_agent.cctv import chain, retention_sweep
from floor_agent.cctv.config import CctvConfig, CctvSection
from floor_agent.cctv.index import SegmentIndex
from floor_agent.cctv.recorder import CameraRecorder
from floor_agent.cctv.snapshot import SnapshotUploader
from floor_agent.common.files import file_sha256
from floor_agent.protocol.emit import Emit
from floor_agent.protocol.kinds.cctv import CctvKind
from floor_agent.service import guarded_thread

log = logging.getLogger(__name__)


@dataclass
class RunningCctv:
    index: SegmentIndex
    recorders: dict[str, CameraRecorder]
    offloader: object | None = None
    snapshots: SnapshotUploader | None = None
    threads: list[threading.Thread] = field(default_factory=list)

    def healthy(self) -> bool:
        offload_ok = self.offloader is None or bool(getattr(self.offloader, "alive", True))
        snapshots_ok = self.snapshots is None or self.snapshots.alive
        return offload_ok and snapshots_ok and all(t.is_alive() for t in self.threads)

    def stop(self) -> None:
        for recorder in self.recorders.values():  # all drain at once (stop_drain_seconds)
            recorder.begin_stop()
        for recorder in self.recorders.values():
            recorder.stop()
        if self.offloader is not None:
            self.offloader.stop()  # type: ignore[attr-defined]
        if self.snapshots is not None:
            self.snapshots.close()
        self.index.close()


def sweep_once(section: CctvSection, index: SegmentIndex, emit: Emit) -> None:
    retention_sweep.sweep(index, section.storage_dir, {c.camera_id: c for c in section.cameras},
                    emit, datetime.now(UTC), min_free_percent=section.min_free_percent,
                    min_free_bytes=section.min_free_bytes)


class CctvRunner(CapabilityRunner[CctvConfig, RunningCctv]):
    """The recorder built from the cctv role's file; started, watched and stopped by the
    agent. A camera that cannot be reached is an alarm, never a refusal to start."""

    def launch(self, agent: AuditAgent, shutdown: threading.Event) -> RunningCctv:
        return _start(self.config, agent, shutdown)


def _start(config: CctvConfig, agent: AuditAgent, shutdown: threading.Event) -> RunningCctv:
    section = config.cctv
    section.storage_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    index = SegmentIndex.in_storage(section.storage_dir)
    running = RunningCctv(index, {})
    wake = threading.Event()
    if section.offload.enabled:
        from floor_agent.cctv.offload import Offloader

        offloader = Offloader(section.offload, index, section.storage_dir, agent.emit)
        offloader.start()
        running.offloader = offloader
        wake = offloader.wake
    # each camera's latest picture for the dashboard, sent as agent-signed requests
    running.snapshots = SnapshotUploader.from_config(config.audit)
    running.snapshots.start(shutdown)
    for camera in section.cameras:
        if camera.enabled:
            running.recorders[camera.camera_id] = CameraRecorder(
                camera, section, index, agent.emit, segment_done=wake.set,
                snapshot_sink=running.snapshots.offer)
    sweep_once(section, index, agent.emit)

    def sweeper(stop: threading.Event) -> None:
        while not stop.wait(section.sweep_interval_seconds):
            sweep_once(section, index, agent.emit)

    sweep = guarded_thread("cctv-sweep", sweeper, shutdown, lambda e: agent.emit(
        CctvKind.SWEEP_FAILED, "cctv storage", "critical", error=f"{type(e).__name__}: {e}"))
    sweep.start()
    running.threads.append(sweep)
    for recorder in running.recorders.values():
        recorder.start()
    log.info("cctv recording %d camera(s) into %s", len(running.recorders), section.storage_dir)
    return running


@dataclass(frozen=True)
class VerifyResult:
    report: chain.ChainReport
    lines: list[str]


def verify_storage(section: CctvSection) -> VerifyResult:
    """Every camera's chain against the files in storage: deleted, altered, inserted."""
    storage = section.storage_dir
    with SegmentIndex.in_storage(storage) as index:
        records = index.segments(include_retired=True)
    retired = {(r.segment.camera_id, r.segment.seq): r.retired_reason or "retired"
               for r in records if r.retired}

    def read_hash(path: str) -> str | None:
        target = storage / path
        return file_sha256(target) if target.is_file() else None

    on_disk = [str(p.relative_to(storage)) for p in storage.glob("*/*/*/*.mp4")]
    report = chain.verify([r.segment for r in records], read_hash, retired, on_disk)
    lines = []
    cameras = sorted({r.segment.camera_id for r in records} | set(report.checked))
    for camera in cameras:
        problems = report.for_camera(camera)
        state = "BROKEN" if problems else "intact"
        lines.append(f"{camera}: {state}: {report.checked.get(camera, 0)} segments checked, "
                     f"{report.retired.get(camera, 0)} retired by retention")
        lines += [f"  {p.kind} seq {p.seq} {p.path}: {p.detail}" for p in problems]
    for problem in report.problems:
        if problem.camera_id not in cameras:
            lines.append(f"  {problem.kind} {problem.path}: {problem.detail}")
    return VerifyResult(report, lines)
