"""Each camera's latest picture on the security staff's dashboard.

The collector keeps no footage; the dashboard's camera page shows the newest snapshot of each
camera: a JPEG about 640 px wide, taken every SNAPSHOT_SECONDS of stream time from a frame the
analysis decodes anyway (the sub-stream where there is one), and sent to the collector as an
agent-signed request. Only the latest per camera is kept and sent; a collector outage costs
snapshots, never recording, and is logged once per episode. Viewing it on the dashboard is a
logged footage view there.
"""

from __future__ import annotations

import logging
import threading
from urllib.parse import quote

import av
import cv2
import httpx
import numpy as np

from floor_agent.audit.signed_client import AgentClient
from floor_agent.config.audit import AuditClientConfig

log = logging.getLogger(__name__)

SNAPSHOT_SECONDS = 10.0  # stream time between two snapshots of a camera
SNAPSHOT_WIDTH = 640
JPEG_QUALITY = 80
MAX_SNAPSHOT_BYTES = 512 * 1024  # the collector refuses larger ones


def snapshot_jpeg(frame: av.VideoFrame, width: int = SNAPSHOT_WIDTH,
                  quality: int = JPEG_QUALITY) -> bytes:
    """A decoded frame as a JPEG about `width` wide (never upscaled); ValueError if it cannot
    be converted or encoded."""
    if frame.width <= 0 or frame.height <= 0:
        raise ValueError(f"zero-size frame ({frame.width}x{frame.height})")
    w = min(width, frame.width) // 2 * 2
    h = max(2, round(frame.height * w / frame.width) // 2 * 2)
    bgr = frame.reformat(width=w, height=h, format="bgr24").to_ndarray()
    return encode_jpeg(bgr, quality)


def bgr_snapshot_jpeg(bgr: np.ndarray, width: int = SNAPSHOT_WIDTH) -> bytes:
    """The same for a BGR array (the OpenCV sources: USB and MJPEG cameras)."""
    h, w = bgr.shape[:2]
    width = min(w, width)
    small = cv2.resize(bgr, (width, max(2, round(h * width / w))), interpolation=cv2.INTER_AREA)
    return encode_jpeg(small)


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


class SnapshotUploader:
    """Sends each camera's newest snapshot to the collector, at most one per camera per
    interval, from one thread. `offer` is called from the recorders' threads."""

    def __init__(self, client: AgentClient, interval: float = SNAPSHOT_SECONDS) -> None:
        self.client = client
        self.interval = interval
        self._latest: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.wake = threading.Event()
        self.sent = 0
        self.failing = False
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, audit: AuditClientConfig) -> SnapshotUploader:
        return cls(AgentClient.from_config(audit, "cctv"))

    def offer(self, camera_id: str, jpeg: bytes) -> None:
        if len(jpeg) > MAX_SNAPSHOT_BYTES:
            log.warning("camera %s: snapshot of %d bytes is over the collector's limit; "
                        "not sent", camera_id, len(jpeg))
            return
        with self._lock:
            self._latest[camera_id] = jpeg
        self.wake.set()

    def send_pending(self) -> int:
        """Send what is waiting; returns how many were accepted."""
        with self._lock:
            pending, self._latest = self._latest, {}
        accepted = 0
        for camera_id, jpeg in pending.items():
            try:
                response = self.client.request(
                    "POST", f"/api/v1/snapshots/{quote(camera_id, safe='')}", content=jpeg,
                    content_type="image/jpeg")
            except httpx.HTTPError as exc:
                self._failed(f"collector unreachable ({type(exc).__name__})")
                with self._lock:  # keep it unless a newer one came meanwhile
                    self._latest.setdefault(camera_id, jpeg)
                continue
            if response.status_code // 100 != 2:
                self._failed(f"collector refused a snapshot of camera {camera_id}: "
                             f"HTTP {response.status_code} {response.text[:200]}")
                continue
            accepted += 1
            self.sent += 1
            if self.failing:
                self.failing = False
                log.info("snapshots reach the collector again")
        return accepted

    def _failed(self, reason: str) -> None:
        if not self.failing:
            self.failing = True
            log.warning("snapshots not sent: %s", reason)

    def start(self, stop: threading.Event) -> None:
        def run() -> None:
            while not stop.is_set():
                self.wake.wait(self.interval)
                self.wake.clear()
                if stop.is_set():
                    break
                self.send_pending()
                stop.wait(1.0)  # at most one round a second, whatever the cameras offer

        self._thread = threading.Thread(target=run, name="cctv-snapshots", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is None or self._thread.is_alive()

    def close(self) -> None:
        self.client.close()
