"""The retention plan over plain listings: due jobs only, never outside the root, guarded."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import hypothesis.strategies as st
from hypothesis import given, settings

from floor_agent.retention.config import CompletionMarker, RetentionServer
from floor_agent.retention.plan import (
    Entry,
    Listing,
    absolute,
    event_ref,
    file_list_sha256,
    is_plain_relative,
    link_leaves_root,
    parse_manifest_time,
    plan,
    policy_of,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ROOT = "/srv/images/online"
DAY = 86400


def server(**changes: object) -> RetentionServer:
    values: dict[str, object] = {"name": "online", "root": ROOT, "retention_days": 15,
                                 "max_share": 1.0}
    return RetentionServer(**(values | changes))


def ago(days: float) -> int:
    return int((NOW - timedelta(days=days)).timestamp())


def job(client: str, code: str, done_days_ago: float | None, *files: str) -> list[Entry]:
    base = f"{client}/{code}"
    entries = [Entry(base, "dir")]
    if done_days_ago is not None:
        entries.append(Entry(f"{base}/.done", "file", 0, ago(done_days_ago)))
    entries += [Entry(f"{base}/{name}", "file", 100 + i, ago(40)) for i, name in enumerate(files)]
    return entries


def listing(*jobs: list[Entry], extra: tuple[Entry, ...] = ()) -> Listing:
    clients = sorted({e.path.split("/")[0] for j in jobs for e in j})
    entries = [Entry(c, "dir") for c in clients] + [e for j in jobs for e in j]
    return Listing(ROOT, tuple(entries) + extra)


def test_only_images_of_jobs_past_their_retention_go() -> None:
    tree = listing(job("C0001", "J0001", 16, "a.JPG", "b.psd", "notes.txt"),
                   job("C0001", "J0002", 14, "c.jpg"),
                   job("C0002", "J0003", None, "d.tif"))
    p = plan(tree, policy_of(server()), NOW)
    assert [d.path for d in p.deletions] == ["C0001/J0001/a.JPG", "C0001/J0001/b.psd"]
    assert {j.job: j.state for j in p.jobs} == {
        "C0001/J0001": "due", "C0001/J0002": "kept", "C0002/J0003": "incomplete"}
    assert p.job_codes == ["C0001/J0001"] and p.total_bytes == 201 and p.blocked is None
    assert p.total_files == 7  # markers and notes count: the share is of all files


def test_manifest_timestamp_marks_completion() -> None:
    entries = [Entry("C0001", "dir"), Entry("C0001/J0001", "dir"),
               Entry("C0001/J0001/job.json", "file", 10), Entry("C0001/J0001/x.png", "file", 5),
               Entry("C0001/J0002", "dir"), Entry("C0001/J0002/job.json", "file", 10),
               Entry("C0001/J0002/y.png", "file", 5)]
    texts = {"C0001/J0001/job.json": json.dumps({"completed_at": "2026-01-30T12:00:00Z"}),
             "C0001/J0002/job.json": json.dumps({"completed_at": "2026-01-30T12:00:00"})}
    policy = policy_of(server(retention_days=30, completion=CompletionMarker(manifest="job.json")))
    p = plan(Listing(ROOT, tuple(entries), texts), policy, NOW)
    assert [d.path for d in p.deletions] == ["C0001/J0001/x.png"]
    assert p.jobs[1].state == "refused" and "no UTC offset" in p.jobs[1].reason
    assert p.refusals[0].path == "C0001/J0002"


def test_symlinks_are_never_planned_and_say_where_they_point() -> None:
    links = (Entry("C0001/J0001/out.jpg", "symlink", link_target="/etc/passwd"),
             Entry("C0001/J0001/up.jpg", "symlink", link_target="../../../../outside"),
             Entry("C0001/J0001/in.jpg", "symlink", link_target="a.jpg"))
    p = plan(listing(job("C0001", "J0001", 20, "a.jpg"), extra=links), policy_of(server()), NOW)
    assert [d.path for d in p.deletions] == ["C0001/J0001/a.jpg"]
    reasons = {r.path: r.reason for r in p.refusals}
    assert "resolves outside the root" in reasons["C0001/J0001/out.jpg"]
    assert "resolves outside the root" in reasons["C0001/J0001/up.jpg"]
    assert "(inside the root)" in reasons["C0001/J0001/in.jpg"]


def test_unreadable_entries_and_unexpected_folders_are_reported_not_touched() -> None:
    extra = (Entry("C0001/J0001/locked", "dir", error="cannot list: Permission denied"),
             Entry("Mueller", "dir"), Entry("Mueller/J0009", "dir"),
             Entry("Mueller/J0009/x.jpg", "file", 3), Entry("C0001/loose.jpg", "file", 3))
    p = plan(listing(job("C0001", "J0001", 20, "a.jpg"), extra=extra), policy_of(server()), NOW)
    assert [d.path for d in p.deletions] == ["C0001/J0001/a.jpg"]
    assert p.unexpected == ("C0001/loose.jpg", "Mueller")
    assert any(r.path == "C0001/J0001/locked" and "Permission denied" in r.reason
               for r in p.refusals)


def test_share_guard_empty_root_and_force() -> None:
    tree = listing(job("C0001", "J0001", 20, "a.jpg", "b.jpg", "c.jpg"),
                   job("C0001", "J0002", 1, "d.jpg"))
    guarded = plan(tree, policy_of(server(max_share=0.4)), NOW)
    assert guarded.blocked is not None and "3 of 6 files (50%)" in guarded.blocked
    assert "more than max_share 40%" in guarded.blocked and "--force" in guarded.blocked
    assert plan(tree, policy_of(server(max_share=0.4)), NOW, force=True).blocked is None
    assert plan(tree, policy_of(server(max_share=0.5)), NOW).blocked is None
    empty = plan(Listing(ROOT, ()), policy_of(server()), NOW, force=True)
    assert empty.blocked is not None and "is empty" in empty.blocked
    dirs_only = plan(Listing(ROOT, (Entry("C0001", "dir"),)), policy_of(server()), NOW)
    assert dirs_only.blocked is not None and "no files" in dirs_only.blocked


def test_file_list_hash_is_the_documented_canonical_form() -> None:
    files = [("b/x.jpg", 2), ("a/y.jpg", 10)]
    expected = hashlib.sha256(b"a/y.jpg\t10\nb/x.jpg\t2\n").hexdigest()
    assert file_list_sha256(files) == expected == file_list_sha256(reversed(files))
    p = plan(listing(job("C0001", "J0001", 20, "a.jpg")), policy_of(server()), NOW)
    assert p.file_list_sha256 == file_list_sha256([("C0001/J0001/a.jpg", 100)])


def test_events_name_codes_only() -> None:
    policy = policy_of(server())
    assert event_ref("C0001/J0001", policy) == "C0001/J0001"
    ref = event_ref("C0001/J0001/Mueller wedding.jpg", policy)
    digest = hashlib.sha256(b"C0001/J0001/Mueller wedding.jpg").hexdigest()[:12]
    assert ref == f"C0001/J0001/#{digest}"
    assert event_ref("Mueller/J0001/a.jpg", policy).startswith("#")
    assert event_ref("C0001/Mueller/a.jpg", policy).startswith("C0001/#")


def test_paths_and_manifests_are_checked() -> None:
    assert is_plain_relative("a/b.jpg")
    for bad in ("", "/etc/passwd", "a/../b", "./a", "a//b", "a/\x00"):
        assert not is_plain_relative(bad)
    assert absolute(ROOT, "C1/J1/a.jpg") == f"{ROOT}/C1/J1/a.jpg"
    assert link_leaves_root(ROOT, "C1/J1/a.jpg", "../../../online2/x")
    assert not link_leaves_root(ROOT, "C1/J1/a.jpg", "../J2/x.jpg")
    assert parse_manifest_time('{"completed_at": "2026-01-01T00:00:00+01:00"}',
                               "completed_at") == datetime(2025, 12, 31, 23, tzinfo=UTC)
    for text, message in [("{", "not JSON"), ("[]", "no 'completed_at'"),
                          ('{"completed_at": 5}', "not a time string"),
                          ('{"completed_at": "soon"}', "not an ISO 8601")]:
        try:
            parse_manifest_time(text, "completed_at")
        except ValueError as e:
            assert message in str(e)
        else:
            raise AssertionError(f"{text!r} was accepted")


names = st.sampled_from(["C0001", "C0002", "J0001", "J0002", "..", ".", "", "a.jpg", "b.tif",
                         ".done", "x", "/", "Mueller"])
kinds = st.sampled_from(["file", "dir", "symlink", "other"])
targets = st.one_of(st.none(), st.sampled_from(["/etc/passwd", "../..", "a.jpg", "../../../x"]))
ages = st.floats(0, 60, allow_nan=False)
noise = st.builds(
    lambda parts, kind, size, age, target: Entry("/".join(parts), kind, size, ago(age), target),
    st.lists(names, min_size=1, max_size=4), kinds, st.integers(0, 10**9), ages, targets)
# Mostly well-formed jobs (so deletions happen), with random kinds at every level.
layouts = st.builds(
    lambda client, code, levels, marker, marker_age, files: [
        Entry(client, levels[0]), Entry(f"{client}/{code}", levels[1]),
        Entry(f"{client}/{code}/.done", marker, 0, ago(marker_age)),
        *[Entry(f"{client}/{code}/{name}", kind, 7, ago(1), target)
          for name, kind, target in files]],
    st.sampled_from(["C0001", "C0002", "C0003", "C9", "Mueller"]),
    st.sampled_from(["J0001", "J0002", "J0003"]),
    st.lists(st.sampled_from(["dir"] * 8 + ["symlink", "file"]), min_size=2, max_size=2),
    st.sampled_from(["file"] * 6 + ["symlink", "dir"]), ages,
    st.lists(st.tuples(st.sampled_from(["a.jpg", "b.TIF", "sub/c.psd", "n.txt", "../d.jpg"]),
                       st.sampled_from(["file", "file", "file", "symlink", "other", "dir"]),
                       targets), max_size=5))


@settings(max_examples=400, deadline=None)
@given(st.lists(layouts, max_size=6), st.lists(noise, max_size=10), st.integers(1, 40),
       st.booleans())
def test_property_nothing_outside_the_root_or_not_yet_due_is_planned(
        jobs: list[list[Entry]], extra: list[Entry], days: int, force: bool) -> None:
    found = [e for j in jobs for e in j] + extra
    policy = policy_of(server(retention_days=days))
    p = plan(Listing(ROOT, tuple(found)), policy, NOW, force=force)
    by_path = {e.path: e for e in found}
    for d in p.deletions:
        assert is_plain_relative(d.path) and d.path.count("/") >= 2
        assert absolute(ROOT, d.path).startswith(ROOT + "/")
        entry = by_path[d.path]
        assert entry.kind == "file" and entry.error is None
        marker = by_path[f"{d.job}/.done"]  # a path listed twice: the last one counts
        assert marker.kind == "file"
        assert datetime.fromtimestamp(marker.mtime, UTC) + timedelta(days=days) <= NOW
        for depth in range(1, d.path.count("/") + 1):  # no symlink on the way down
            assert by_path["/".join(d.path.split("/")[:depth])].kind == "dir"
    if p.deletions:
        PLANNED.append(len(p.deletions))
    if p.blocked is None and not force:
        assert len(p.deletions) <= policy.max_share * max(p.total_files, 1)


PLANNED: list[int] = []  # deletions per example that planned any


def test_property_run_planned_deletions() -> None:
    """Guard against a vacuous property: the generated trees did plan deletions."""
    if not PLANNED:
        test_property_nothing_outside_the_root_or_not_yet_due_is_planned()
    assert len(PLANNED) >= 5, PLANNED
