"""cctv offload: segments reach a real sshd on loopback over SFTP, pinned and checked."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from audit_events import AuditRecorder
from sshd_server import SshdServer, make_key

from floor_agent.cctv.config import OffloadConfig
from floor_agent.cctv.index import SegmentIndex
from floor_agent.cctv.model import GENESIS_SHA256, Segment
from floor_agent.cctv.offload import Offloader, remote_path_of
from floor_agent.common.backoff import backoff_delay

T0 = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)


def add_segment(index: SegmentIndex, storage: Path, camera: str, seq: int, data: bytes,
                prev: str = GENESIS_SHA256) -> Segment:
    start = T0 + timedelta(seconds=10 * seq)
    rel = f"{camera}/{start:%Y-%m-%d}/{start:%H}/{start:%Y%m%dT%H%M%SZ}.mp4"
    (storage / rel).parent.mkdir(parents=True, exist_ok=True)
    (storage / rel).write_bytes(data)
    seg = Segment(camera, seq, rel, start, 10.0, len(data), hashlib.sha256(data).hexdigest(),
                  prev)
    index.add(seg)
    return seg


@pytest.fixture(scope="module")
def sshd() -> Iterator[SshdServer]:
    with SshdServer() as server:
        yield server


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[tuple[Path, SegmentIndex]]:
    footage = tmp_path / "footage"
    footage.mkdir()
    with SegmentIndex.in_storage(footage) as index:
        yield footage, index


def config_for(server: SshdServer, tmp_path: Path, remote_dir: str, **changes: object
               ) -> OffloadConfig:
    known = server.write_known_hosts(tmp_path / "known_hosts")
    values: dict[str, object] = dict(
        enabled=True, host="127.0.0.1", port=server.port, user=server.user,
        key_file=server.client_key, known_hosts_file=known, remote_dir=remote_dir,
        backoff_initial_seconds=0.05, backoff_max_seconds=0.2, timeout_seconds=5.0)
    values.update(changes)
    return OffloadConfig(**values)


def test_segments_arrive_hashed_and_marked(sshd: SshdServer, storage: tuple[Path, SegmentIndex],
                                           tmp_path: Path) -> None:
    footage, index = storage
    first = add_segment(index, footage, "cam-a", 1, os.urandom(300_000))
    second = add_segment(index, footage, "cam-b", 1, os.urandom(1000))
    events = AuditRecorder()
    offloader = Offloader(config_for(sshd, tmp_path, "up1"), index, footage, events)
    result = offloader.run_once()
    offloader.close()

    assert result.error is None and len(result.uploads) == 2
    for seg in (first, second):
        record = index.get(seg.camera_id, seg.seq)
        assert record is not None and record.offloaded
        assert record.remote_path == remote_path_of("up1", record)
        copy = sshd.home / record.remote_path
        assert hashlib.sha256(copy.read_bytes()).hexdigest() == seg.sha256
        assert (footage / seg.path).exists()  # only retention deletes the local copy
    assert str(first.start.strftime("%Y-%m-%d/%H")) in index.get("cam-a", 1).remote_path
    assert not list(sshd.home.rglob("*.part"))
    assert index.pending_offload(10) == []
    assert events.of("cctv.offloaded") == [
        {"count": 2, "bytes": 301_000, "cameras": {"cam-a": 1, "cam-b": 1}, "resumed": 0}]


def test_changed_or_unknown_host_key_is_refused(sshd: SshdServer,
                                                storage: tuple[Path, SegmentIndex],
                                                tmp_path: Path) -> None:
    footage, index = storage
    add_segment(index, footage, "cam-a", 1, b"footage")
    other = make_key(tmp_path / "impostor")
    kind, blob = Path(f"{other}.pub").read_text().split()[:2]
    (tmp_path / "changed").write_text(f"[127.0.0.1]:{sshd.port} {kind} {blob}\n")
    (tmp_path / "empty").write_text("")
    for known, words in ((tmp_path / "changed", "host key CHANGED"),
                         (tmp_path / "empty", "not pinned")):
        events = AuditRecorder()
        config = config_for(sshd, tmp_path, "up2").model_copy(update={"known_hosts_file": known})
        offloader = Offloader(config, index, footage, events)
        result = offloader.run_once()
        assert result.uploads == []
        assert result.error is not None and words in result.error
        assert events.kinds() == ["cctv.offload_failed"]
        assert index.get("cam-a", 1).offloaded is False
    assert not (sshd.home / "up2").exists()


def test_wrong_client_key_is_refused(sshd: SshdServer, storage: tuple[Path, SegmentIndex],
                                     tmp_path: Path) -> None:
    footage, index = storage
    add_segment(index, footage, "cam-a", 1, b"footage")
    stranger = make_key(tmp_path / "stranger")
    events = AuditRecorder()
    offloader = Offloader(config_for(sshd, tmp_path, "up3", key_file=stranger), index, footage,
                          events)
    result = offloader.run_once()
    assert result.error is not None and "refused our key" in result.error
    assert "PRIVATE" not in result.error
    assert index.pending_offload(10)[0].segment.seq == 1


def test_server_gone_mid_upload_resumes_from_the_part(storage: tuple[Path, SegmentIndex],
                                                      tmp_path: Path) -> None:
    footage, index = storage
    data = os.urandom(6 * 1024 * 1024)
    seg = add_segment(index, footage, "cam-a", 1, data)
    events = AuditRecorder()
    with SshdServer() as server:
        stopped: list[int] = []

        def pull_the_plug(record: object, sent: int) -> None:
            if sent >= 2 * 1024 * 1024 and not stopped:
                stopped.append(sent)
                server.stop()

        config = config_for(server, tmp_path, "up4")
        offloader = Offloader(config, index, footage, events, progress=pull_the_plug)
        broken = offloader.run_once()
        assert broken.uploads == [] and broken.error is not None
        assert "camera cam-a seq 1" in broken.error
        parts = list(server.home.rglob("*.part"))
        assert len(parts) == 1 and 0 < parts[0].stat().st_size < len(data)
        on_server = parts[0].stat().st_size

        again = offloader.run_once()  # still down: no second warning
        assert again.error is not None
        assert events.kinds() == ["cctv.offload_failed"]
        assert offloader.next_delay() == backoff_delay(2, 0.05, 0.2) == 0.1

        server.start()
        offloader.progress = None
        result = offloader.run_once()
        offloader.close()
        assert result.error is None
        (upload,) = result.uploads
        assert upload.resumed_from == on_server > 0
        copy = server.home / upload.remote_path
        assert hashlib.sha256(copy.read_bytes()).hexdigest() == seg.sha256
        assert not list(server.home.rglob("*.part"))
    assert events.kinds() == ["cctv.offload_failed", "cctv.offloaded", "cctv.offload_recovered"]
    assert events.of("cctv.offload_recovered")[0]["failed_attempts"] == 2
    assert index.get("cam-a", 1).offloaded


def test_altered_remote_copy_is_detected_and_sent_again(
        sshd: SshdServer, storage: tuple[Path, SegmentIndex], tmp_path: Path) -> None:
    footage, index = storage
    data = os.urandom(200_000)
    seg = add_segment(index, footage, "cam-a", 1, data)
    record = index.get("cam-a", 1)
    remote = sshd.home / remote_path_of("up5", record)
    remote.parent.mkdir(parents=True)
    # a complete-looking copy from an earlier run that was altered on the server
    remote.write_bytes(b"X" + data[1:])
    # and a garbage .part for the second segment: the resume appends to it, the check catches it
    data2 = os.urandom(150_000)
    seg2 = add_segment(index, footage, "cam-a", 2, data2, prev=seg.sha256)
    remote2 = sshd.home / remote_path_of("up5", index.get("cam-a", 2))
    remote2.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{remote2}.part").write_bytes(os.urandom(50_000))

    events = AuditRecorder()
    offloader = Offloader(config_for(sshd, tmp_path, "up5"), index, footage, events)
    result = offloader.run_once()
    offloader.close()
    assert result.error is None
    assert [(u.seq, u.retries) for u in result.uploads] == [(1, 1), (2, 1)]
    assert hashlib.sha256(remote.read_bytes()).hexdigest() == seg.sha256
    assert hashlib.sha256(remote2.read_bytes()).hexdigest() == seg2.sha256
    assert [d["seq"] for d in events.of("cctv.offload_mismatch")] == [1, 2]


def test_altered_or_missing_local_footage_is_never_sent_nor_blocks_the_queue(
        sshd: SshdServer, storage: tuple[Path, SegmentIndex], tmp_path: Path) -> None:
    footage, index = storage
    seg = add_segment(index, footage, "cam-a", 1, b"original footage")
    (footage / seg.path).write_bytes(b"doctored footage")
    gone = add_segment(index, footage, "cam-a", 2, b"removed by hand", prev=seg.sha256)
    (footage / gone.path).unlink()
    good = add_segment(index, footage, "cam-b", 1, b"fine footage")
    events = AuditRecorder()
    offloader = Offloader(config_for(sshd, tmp_path, "up6"), index, footage, events)
    result = offloader.run_once()
    offloader.run_once()  # reported once, not on every round
    offloader.close()
    assert result.error is None
    assert "seq 1" in result.refused[0] and "does not match its recorded SHA-256" in \
        result.refused[0]
    assert "seq 2" in result.refused[1] and "cannot read" in result.refused[1]
    assert [(u.camera_id, u.seq) for u in result.uploads] == [("cam-b", 1)]
    assert index.get(good.camera_id, 1).offloaded and not index.get("cam-a", 1).offloaded
    assert events.kinds() == ["cctv.offload_refused", "cctv.offload_refused", "cctv.offloaded"]
    assert {sev for _, _, sev, _ in events.items[:2]} == {"critical"}
    assert not list((sshd.home / "up6").rglob("cam-a/**/*.mp4"))
    assert "doctored" not in str(events.items)


def test_thread_uploads_what_arrives_and_stops(sshd: SshdServer,
                                               storage: tuple[Path, SegmentIndex],
                                               tmp_path: Path) -> None:
    footage, index = storage
    events = AuditRecorder()
    offloader = Offloader(config_for(sshd, tmp_path, "up7"), index, footage, events,
                          idle_seconds=30.0)
    offloader.start()
    try:
        add_segment(index, footage, "cam-t", 1, os.urandom(5000))
        offloader.wake.set()
        deadline = datetime.now(UTC) + timedelta(seconds=15)
        while index.pending_offload(10) and datetime.now(UTC) < deadline:
            offloader.shutdown.wait(0.05)
        assert index.get("cam-t", 1).offloaded
    finally:
        offloader.stop()
    assert not offloader.alive
