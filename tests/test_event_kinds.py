"""Every event kind the code can emit is declared, and built at least once by a test through a
real Spool.

The kinds are read from the source (a string constant that looks like `<capability>.<name>`),
so a new `emit("door.something", ...)` joins the list by itself; topic names and file names
that look alike are not kinds. Every one of them must be declared as a typed constant in
floor_agent/protocol/kinds/ (the dashboard's state topics are derived from there). The
coverage check needs the whole suite in one session: run alone, or with a selection, it skips
and says why.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest
from audit_events import EMITTED, AuditRecorder, collected_modules, note_files_under

from floor_agent.protocol.event import EventError
from floor_agent.protocol.kinds import KINDS
from floor_agent.protocol.topics import FIXED_TOPICS

ROOT = Path(__file__).resolve().parent.parent
# the prefixes of event kinds: the agents' capabilities and the collector's own agent
CAPABILITIES = ("agent", "audit", "usb", "net", "door", "cctv", "retention", "dashboard",
                "collector", "apikey", "alert", "footage", "integrity", "report", "policy")
KIND = re.compile(rf"^(?:{'|'.join(CAPABILITIES)})\.[a-z][a-z0-9_]*$")
FILE_SUFFIXES = (".yaml", ".sock", ".db", ".log", ".key", ".pem", ".html", ".conf", ".pub",
                 ".json")


def emittable_kinds(root: Path = ROOT / "floor_agent") -> set[str]:
    """String constants under `root` shaped like an event kind, less topics and files."""
    topics = set(FIXED_TOPICS.values())
    kinds: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and KIND.match(node.value) and node.value not in topics \
                    and not node.value.endswith(FILE_SUFFIXES):
                kinds.add(node.value)
    return kinds


def test_the_source_scan_finds_kinds_and_leaves_topics_and_files() -> None:
    kinds = emittable_kinds()
    assert {"door.sync_recovered", "cctv.offload_recovered", "net.breach", "usb.blocked",
            "agent.started", "dashboard.login"} <= kinds
    assert not {"door.sync", "net.state", "usb.lock", "door.yaml", "collector.yaml"} & kinds


def test_every_kind_in_the_source_is_declared() -> None:
    undeclared = sorted(emittable_kinds() - KINDS)
    assert not undeclared, (
        f"event kind(s) not declared in floor_agent/protocol/kinds/: {undeclared}")


def test_an_undeclared_kind_is_found(tmp_path: Path) -> None:
    (tmp_path / "capability.py").write_text(
        'emit("door.granted", "door d")\nemit("door.not_declared", "door d")\n')
    assert emittable_kinds(tmp_path) - KINDS == {"door.not_declared"}


def test_the_recorder_refuses_what_the_chain_refuses(tmp_path: Path) -> None:
    recorder = AuditRecorder(tmp_path)
    try:
        with pytest.raises(EventError, match="floats are not allowed"):
            recorder("door.sync_recovered", "door-1", "notice", outage_seconds=1.5)
        assert recorder.kinds() == []  # nothing kept that the chain would not hold
        recorder("door.sync_recovered", "door-1", "notice", outage_seconds=2)
        assert recorder.of("door.sync_recovered") == [{"outage_seconds": 2}]
        assert recorder.spool.head().seq == 1
    finally:
        recorder.close()


@pytest.mark.after_all_tests
def test_every_event_kind_was_emitted_through_a_spool(request: pytest.FixtureRequest,
                                                      tmp_path_factory: pytest.TempPathFactory
                                                      ) -> None:
    """EVENT_KINDS_ONLY=usb. (a prefix) checks that capability's kinds after a selection of
    tests (its own test files), for working on one capability without the whole suite."""
    only = os.environ.get("EVENT_KINDS_ONLY")
    modules = {path.name for path in (ROOT / "tests").glob("test_*.py")}
    option = request.config.option
    if not only and (collected_modules(request.config) != modules or option.keyword
                     or option.markexpr or getattr(option, "lf", False) or option.deselect):
        pytest.skip("the event-kind coverage needs the whole suite in one session")
    note_files_under(tmp_path_factory.getbasetemp())
    missing = sorted(k for k in emittable_kinds() - EMITTED if k.startswith(only or ""))
    assert not missing, (
        f"{len(missing)} event kind(s) never went through a real Spool in any test (a test "
        f"double that only appends to a list accepts data the audit chain refuses): {missing}")
