"""cctv chain: verify finds a deleted, altered or inserted segment, and retention is no break."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta

from floor_agent.cctv.chain import (
    ALTERED,
    BROKEN_LINK,
    DELETED,
    DUPLICATE_SEQ,
    INSERTED,
    MISSING_RECORD,
    verify,
)
from floor_agent.cctv.model import GENESIS_SHA256, Segment

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def _hash(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _chain(camera: str, n: int, disk: dict[str, bytes]) -> list[Segment]:
    """n segments of `camera` whose files are in `disk` (path -> content)."""
    records, prev = [], GENESIS_SHA256
    for seq in range(1, n + 1):
        start = T0 + timedelta(seconds=10 * seq)
        path = f"{camera}/{start:%Y-%m-%d}/{start:%H}/{start:%Y%m%dT%H%M%S}.000Z.mp4"
        content = f"{camera} footage {seq}".encode()
        disk[path] = content
        records.append(Segment(camera, seq, path, start, 10.0, len(content), _hash(content),
                               prev, packets=150))
        prev = _hash(content)
    return records


def _hasher(disk: dict[str, bytes]):
    return lambda path: _hash(disk[path]) if path in disk else None


def test_an_intact_chain_verifies_for_every_camera() -> None:
    disk: dict[str, bytes] = {}
    records = _chain("cam1", 5, disk) + _chain("cam2", 3, disk)
    report = verify(records, _hasher(disk), files_on_disk=disk)
    assert report.ok, report.problems
    assert report.checked == {"cam1": 5, "cam2": 3}


def test_an_altered_segment_is_named_with_camera_seq_and_path() -> None:
    disk: dict[str, bytes] = {}
    records = _chain("cam1", 4, disk) + _chain("cam2", 2, disk)
    disk[records[2].path] = b"cam1 footage 3, edited"
    report = verify(records, _hasher(disk), files_on_disk=disk)
    assert [(p.camera_id, p.seq, p.path, p.kind) for p in report.problems] == [
        ("cam1", 3, records[2].path, ALTERED)]
    assert report.for_camera("cam2") == ()


def test_a_deleted_segment_is_found_unless_retention_retired_it() -> None:
    disk: dict[str, bytes] = {}
    records = _chain("cam1", 4, disk)
    del disk[records[1].path]
    report = verify(records, _hasher(disk), files_on_disk=disk)
    assert [(p.seq, p.kind) for p in report.problems] == [(2, DELETED)]
    retired = {("cam1", 2): "retain_days 3.0 passed"}
    report = verify(records, _hasher(disk), retired, files_on_disk=disk)
    assert report.ok, report.problems
    assert report.retired == {"cam1": 1}


def test_the_chain_links_through_retired_segments_at_its_start() -> None:
    disk: dict[str, bytes] = {}
    records = _chain("cam1", 5, disk)
    for record in records[:3]:
        del disk[record.path]
    retired = {("cam1", 1), ("cam1", 2), ("cam1", 3)}
    assert verify(records, _hasher(disk), retired, files_on_disk=disk).ok
    # a retired record that was rewritten still breaks the link of its successor
    forged = [dataclasses.replace(records[2], sha256=_hash(b"other"))] + records[3:]
    report = verify(records[:2] + forged, _hasher(disk), retired, files_on_disk=disk)
    assert [(p.seq, p.kind) for p in report.problems] == [(4, BROKEN_LINK)]


def test_a_file_no_record_names_is_an_inserted_segment() -> None:
    disk: dict[str, bytes] = {}
    records = _chain("cam1", 3, disk)
    planted = "cam1/2026-03-01/08/20260301T080015.000Z.mp4"
    disk[planted] = b"someone else's footage"
    report = verify(records, _hasher(disk), files_on_disk=disk)
    assert [(p.camera_id, p.seq, p.path, p.kind) for p in report.problems] == [
        ("cam1", 0, planted, INSERTED)]


def test_an_inserted_record_breaks_the_link_after_it() -> None:
    """Someone slips a segment in between seq 2 and 3 and renumbers the rest."""
    disk: dict[str, bytes] = {}
    records = _chain("cam1", 4, disk)
    content = b"staged footage"
    path = "cam1/2026-03-01/08/20260301T080025.000Z.mp4"
    disk[path] = content
    inserted = Segment("cam1", 3, path, T0, 10.0, len(content), _hash(content),
                       records[1].sha256)
    renumbered = [dataclasses.replace(r, seq=r.seq + 1) for r in records[2:]]
    report = verify(records[:2] + [inserted] + renumbered, _hasher(disk), files_on_disk=disk)
    assert [(p.seq, p.kind) for p in report.problems] == [(4, BROKEN_LINK)]
    assert "seq 3" in report.problems[0].detail


def test_missing_and_duplicate_records_are_reported() -> None:
    disk: dict[str, bytes] = {}
    records = _chain("cam1", 5, disk)
    report = verify(records[:2] + records[3:], _hasher(disk), files_on_disk=disk)
    kinds = [(p.seq, p.kind) for p in report.problems]
    assert (4, MISSING_RECORD) in kinds
    assert (0, INSERTED) in kinds  # seq 3's file is on disk with no record
    report = verify(records + [records[2]], _hasher(disk), files_on_disk=disk)
    assert [(p.seq, p.kind) for p in report.problems] == [(3, DUPLICATE_SEQ)]


def test_a_first_record_not_linked_to_genesis_is_a_break() -> None:
    disk: dict[str, bytes] = {}
    records = _chain("cam1", 2, disk)
    forged = dataclasses.replace(records[0], prev_sha256="ab" * 32)
    report = verify([forged, records[1]], _hasher(disk), files_on_disk=disk)
    assert [(p.seq, p.kind) for p in report.problems] == [(1, BROKEN_LINK)]
    assert "genesis" in report.problems[0].detail
