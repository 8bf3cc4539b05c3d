"""Verify each camera's segment hash chain: pure, over the records and a file hasher passed in.

Each `Segment` record carries its file's SHA-256 and the previous segment's, reported as a
`cctv.segment` audit event when it was written (so the records live outside the box too). Here
we recompute what is on disk against them: a deleted segment (its file gone, not by retention),
an altered one (the hash differs), an inserted one (a file no record knows, or a record whose
link to its predecessor breaks) are each named with the camera, seq and path. Segments retired
by retention keep their place in the chain: the chain links through their recorded hash.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from floor_agent.cctv.model import GENESIS_SHA256, Segment

ProblemKind = Literal["deleted", "altered", "inserted", "broken_link", "missing_record",
                      "duplicate_seq"]
DELETED: Final = "deleted"
ALTERED: Final = "altered"
INSERTED: Final = "inserted"
BROKEN_LINK: Final = "broken_link"
MISSING_RECORD: Final = "missing_record"
DUPLICATE_SEQ: Final = "duplicate_seq"


@dataclass(frozen=True, slots=True)
class ChainProblem:
    """One break in a camera's chain, in words an investigator can act on."""

    camera_id: str
    seq: int  # 0 for a file that no record names
    path: str
    kind: ProblemKind
    detail: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What verify found: per camera, how many segments were checked, and every problem."""

    checked: Mapping[str, int]  # camera -> records checked (retired ones included)
    retired: Mapping[str, int]  # camera -> records retired by retention
    problems: tuple[ChainProblem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def for_camera(self, camera_id: str) -> tuple[ChainProblem, ...]:
        return tuple(p for p in self.problems if p.camera_id == camera_id)


def verify(records: Iterable[Segment], read_file_hash: Callable[[str], str | None],
           retired: Mapping[tuple[str, int], str] | Collection[tuple[str, int]] = (),
           files_on_disk: Iterable[str] = ()) -> ChainReport:
    """Check every camera's chain. `read_file_hash(path)` gives the hex SHA-256 of the file at
    the record's path (relative to the storage dir), or None when there is no such file;
    `retired` holds the (camera, seq) deleted by retention (a mapping to the reason, or a set);
    `files_on_disk` the segment paths found in storage, so a file no record names is caught."""
    by_camera: dict[str, list[Segment]] = defaultdict(list)
    for record in records:
        by_camera[record.camera_id].append(record)
    problems: list[ChainProblem] = []
    checked: dict[str, int] = {}
    retired_count: dict[str, int] = {}
    known_paths: set[str] = set()
    for camera_id in sorted(by_camera):
        chain = sorted(by_camera[camera_id], key=lambda r: r.seq)
        checked[camera_id] = len(chain)
        retired_count[camera_id] = sum(1 for r in chain if (camera_id, r.seq) in retired)
        known_paths.update(r.path for r in chain)
        problems.extend(_verify_camera(camera_id, chain, read_file_hash, retired))
    for path in sorted(set(files_on_disk) - known_paths):
        problems.append(ChainProblem(_camera_of(path), 0, path, INSERTED,
                                     "a segment file that no record names"))
    return ChainReport(checked, retired_count, tuple(problems))


def _verify_camera(camera_id: str, chain: list[Segment],
                   read_file_hash: Callable[[str], str | None],
                   retired: Mapping[tuple[str, int], str] | Collection[tuple[str, int]],
                   ) -> Iterable[ChainProblem]:
    previous: Segment | None = None
    for record in chain:
        if previous is not None and record.seq == previous.seq:
            yield ChainProblem(camera_id, record.seq, record.path, DUPLICATE_SEQ,
                               f"a second record with seq {record.seq} "
                               f"(the other is {previous.path})")
            continue
        expected_prev = _expected_prev(record, previous)
        if expected_prev is None and previous is not None:
            yield ChainProblem(camera_id, record.seq, record.path, MISSING_RECORD,
                               f"records {previous.seq + 1}..{record.seq - 1} are missing")
        elif expected_prev is not None and record.prev_sha256 != expected_prev:
            yield ChainProblem(camera_id, record.seq, record.path, BROKEN_LINK,
                               f"prev_sha256 {record.prev_sha256[:16]}... does not link to "
                               f"{'genesis' if previous is None else f'seq {previous.seq}'} "
                               f"({expected_prev[:16]}...): inserted or rewritten")
        if (camera_id, record.seq) not in retired:
            actual = read_file_hash(record.path)
            if actual is None:
                yield ChainProblem(camera_id, record.seq, record.path, DELETED,
                                   "the segment file is gone and retention did not retire it")
            elif actual != record.sha256:
                yield ChainProblem(camera_id, record.seq, record.path, ALTERED,
                                   f"file hash {actual[:16]}... differs from the recorded "
                                   f"{record.sha256[:16]}...")
        previous = record


def _expected_prev(record: Segment, previous: Segment | None) -> str | None:
    """The prev_sha256 this record must carry, or None when it cannot be known (a gap in seq,
    or the first record kept after older records were pruned from the index)."""
    if previous is None:
        return GENESIS_SHA256 if record.seq == 1 else None
    if record.seq != previous.seq + 1:
        return None
    return previous.sha256


def _camera_of(path: str) -> str:
    return path.split("/", 1)[0]
