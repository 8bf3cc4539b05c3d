"""Camera snapshots from the cctv agent's side to a real collector: signed, stored latest-only,
refused from other roles, and an outage costs snapshots but never raises into recording."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
from collector_process import CollectorProcess

from floor_agent.audit.agent import enroll
from floor_agent.cctv.snapshot import SnapshotUploader, encode_jpeg, snapshot_jpeg
from floor_agent.config.audit import AuditClientConfig


def enrolled(collector: CollectorProcess, name: str, role: str) -> AuditClientConfig:
    audit = AuditClientConfig(agent_id=name, state_dir=collector.root / name,
                              collector_url=collector.url, ca_cert=collector.ca,
                              request_timeout_seconds=3)
    enroll(audit, role, collector.token(role), collector.ca)
    return audit


def picture(width: int = 320, height: int = 180, shade: int = 90) -> np.ndarray:
    image = np.full((height, width, 3), shade, np.uint8)
    cv2.rectangle(image, (40, 40), (120, 120), (20, 200, 240), -1)
    return image


def test_snapshot_of_a_decoded_frame_is_a_jpeg_never_upscaled() -> None:
    frame = av.VideoFrame.from_ndarray(picture(1920, 1080), format="bgr24").reformat(
        format="yuv420p")
    jpeg = snapshot_jpeg(frame)
    decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (360, 640, 3)
    small = av.VideoFrame.from_ndarray(picture(320, 180), format="bgr24")
    assert cv2.imdecode(np.frombuffer(snapshot_jpeg(small), np.uint8),
                        cv2.IMREAD_COLOR).shape == (180, 320, 3)


def test_latest_snapshot_reaches_the_collector_and_outages_are_survived(
        tmp_path: Path) -> None:
    collector = CollectorProcess(tmp_path)
    collector.start()
    try:
        camera_box = SnapshotUploader.from_config(enrolled(collector, "cctv-1", "cctv"))
        camera_box.offer("cam1", encode_jpeg(picture(shade=10)))
        camera_box.offer("cam1", encode_jpeg(picture(shade=200)))  # only the newest goes
        camera_box.offer("cam2", encode_jpeg(picture()))
        assert camera_box.send_pending() == 2 and not camera_box.failing
        store = collector.store()
        try:
            stored = {(s["agent_id"], s["camera_id"]): s for s in store.list_snapshots()}
        finally:
            store.close()
        assert set(stored) == {("cctv-1", "cam1"), ("cctv-1", "cam2")}
        assert stored[("cctv-1", "cam1")]["width"] == 320

        # a workstation may not post camera pictures
        workstation = SnapshotUploader.from_config(enrolled(collector, "ws-1", "workstation"))
        workstation.offer("cam1", encode_jpeg(picture()))
        assert workstation.send_pending() == 0 and workstation.failing

        collector.stop()  # the collector goes away: the snapshot waits, nothing raises
        camera_box.offer("cam1", encode_jpeg(picture(shade=120)))
        assert camera_box.send_pending() == 0 and camera_box.failing
        collector.start()
        assert camera_box.send_pending() == 1 and not camera_box.failing
        camera_box.close()
        workstation.close()
    finally:
        collector.stop()
