"""Central workstation policy in the Store and policy_admin, on SQLite and a real PostgreSQL 15.

Every change takes the next site-wide change number and logs who, why and before/after; a
workstation's version is the highest number among the changes that shaped it, so it only grows,
across a move between groups too; an exception reaches exactly the workstations in its scope;
expiry ends it with a new version and an event; concurrent approvals from two store connections
(two collectors on one database) get distinct numbers. Plus the pure checks of collector/policy.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from audit_events import AuditRecorder
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from postgres_server import PostgresServer, postgres_server  # noqa: F401  (fixture)

from floor_agent.collector import policy, policy_admin
from floor_agent.collector.policy import PolicyInputError
from floor_agent.protocol import policy as wire
from floor_agent.protocol.event import parse_timestamp
from floor_agent.protocol.kinds.collector import CollectorKind
from floor_agent.store import open_store
from floor_agent.store.interface import EventQuery, RecordConflict, Store, UnknownRecord
from floor_agent.store.records import EventRow
from floor_agent.store.sql import INSERT_EVENT

NOW = "2026-12-07T08:00:00.000000Z"
LATER = "2026-12-07T09:00:00.000000Z"
HASH_A = "A" * 43 + "="
HASH_B = "B" * 43 + "="
RULES_OFFICE = 'allow with-interface equals { 03:*:* }\nreject with-interface 08:*:*\n'
RULES_LAB = "allow with-interface one-of { 03:*:* 08:*:* }\n"
ALLOW = [{"name": "collector", "addresses": ["10.0.0.5"], "tcp": [8443]}]
TABLET = {"id": "056a:0374", "name": "Intuos S", "serial": "8CQ00N1005512",
          "hash": HASH_A, "interfaces": ["03:00:00"], "rule": "reject with-interface 08:*:*"}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/collector.db"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.new_database(icu_locale="en-US")


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    opened = open_store(url)
    try:
        for agent, role in (("ws-1", "workstation"), ("ws-2", "workstation"),
                            ("ws-3", "workstation"), ("door-1", "door")):
            opened.add_agent(agent, role, "k" * 44, agent, NOW)
        yield opened
    finally:
        opened.close()


class OwnTrail(AuditRecorder):
    """The collector's own trail as policy_admin uses it (emit), behind a real Spool."""

    def emit(self, kind: str, subject: str, severity: str = "info", **data: object) -> None:
        self(kind, subject, severity, **data)


@pytest.fixture
def own() -> Iterator[OwnTrail]:
    recorder = OwnTrail(agent_id="collector-test")
    try:
        yield recorder
    finally:
        recorder.close()


def version(store: Store, agent: str) -> int:
    inputs = store.policy_inputs(agent, "office")
    return 0 if inputs is None else int(inputs["version"])


def test_groups_assignments_and_versions_only_grow(store: Store, own: OwnTrail) -> None:
    assert store.policy_change_number() == 0 and store.policy_inputs("ws-1", "office") is None
    assert policy_admin.set_group(store, own, "alice", "office", RULES_OFFICE, ALLOW,
                                  "baseline", NOW) == 1
    assert policy_admin.set_group(store, own, "alice", "lab", RULES_LAB, [], "lab floor",
                                  NOW) == 2
    office = store.policy_inputs("ws-1", "office")
    assert office is not None and office["group"] == "office" and office["version"] == 1
    assert office["usb_rules"] == RULES_OFFICE and office["netlock_allow"][0]["tcp"] == [8443]

    # two groups, two different documents
    assert policy_admin.assign(store, own, "bob", "ws-2", "lab", "CAD station", "office") == 3
    lab = store.policy_inputs("ws-2", "office")
    assert lab is not None and (lab["group"], lab["version"]) == ("lab", 3)
    assert lab["usb_rules"] == RULES_LAB and lab["netlock_allow"] == []
    assert version(store, "ws-1") == 1  # untouched by ws-2's move

    # a change to office (4) moves ws-1 on; ws-2 moves back to office: its version is the
    # move's number (5), above anything it had, though office's content is older
    policy_admin.set_group(store, own, "alice", "office", RULES_OFFICE + "block\n", ALLOW,
                           "tighter", NOW)
    seen = [version(store, "ws-2")]
    policy_admin.assign(store, own, "bob", "ws-2", "office", "back", "office")
    seen.append(version(store, "ws-2"))
    policy_admin.set_group(store, own, "alice", "lab", RULES_LAB, [], "same again", NOW)
    seen.append(version(store, "ws-2"))  # lab's change does not reach ws-2 any more
    policy_admin.assign(store, own, "bob", "ws-2", "lab", "again", "office")
    seen.append(version(store, "ws-2"))
    assert seen == [3, 5, 5, 7] and seen == sorted(seen)

    with pytest.raises(RecordConflict):
        store.assign_policy_group("ws-2", "lab", "bob", "twice", NOW, "office")
    with pytest.raises(UnknownRecord, match="unknown group 'nowhere'"):
        policy_admin.assign(store, own, "bob", "ws-1", "nowhere", "typo", "office")
    with pytest.raises(PolicyInputError, match="door agent"):
        policy_admin.assign(store, own, "bob", "door-1", "lab", "a door", "office")
    with pytest.raises(UnknownRecord, match="no enrolled agent"):
        policy_admin.assign(store, own, "bob", "ws-99", "lab", "who", "office")

    changes = store.policy_changes()
    assert [c["change"] for c in changes] == [7, 6, 5, 4, 3, 2, 1]
    tighter = store.policy_change(4)
    assert tighter is not None and tighter["actor"] == "alice" and tighter["reason"] == "tighter"
    assert tighter["before"]["usb_rules"] == RULES_OFFICE
    assert tighter["after"]["usb_rules"] == RULES_OFFICE + "block\n"
    assert store.policy_changes(group="lab", limit=2)[0]["change"] == 7
    assert [c["change"] for c in store.policy_changes(agent_id="ws-2")] == [7, 5, 3]
    assert [c["change"] for c in store.policy_changes(before=3)] == [2, 1]
    groups = {g["group"]: g for g in store.policy_groups()}
    assert groups["lab"]["agents"] == ["ws-2"] and groups["office"]["changed"] == 4
    assert own.kinds().count(CollectorKind.POLICY_CHANGED) == 4
    moved = own.of(CollectorKind.POLICY_ASSIGNED)[-1]
    assert moved == {"agent_id": "ws-2", "group": "lab", "previous_group": "office",
                     "change": 7, "by": "bob", "reason": "again"}


def test_an_exception_reaches_exactly_its_scope_and_expires(store: Store,
                                                            own: OwnTrail) -> None:
    policy_admin.set_group(store, own, "alice", "office", RULES_OFFICE, ALLOW, "base", NOW)
    policy_admin.set_group(store, own, "alice", "lab", RULES_LAB, [], "lab", NOW)
    policy_admin.assign(store, own, "alice", "ws-3", "lab", "lab bench", "office")
    before = {agent: version(store, agent) for agent in ("ws-1", "ws-2", "ws-3")}

    item = policy_admin.approve(store, own, "alice", "agent:ws-1", "new tablet, ticket 42",
                                device=TABLET, expires_at="2026-12-07T08:30:00Z", now=NOW)
    assert item["exception_id"] == "x-4" and item["approved_change"] == 4
    assert item["rule"] == 'allow id 056a:0374 serial "8CQ00N1005512" hash "' + HASH_A + '"'
    assert item["expires_at"] == "2026-12-07T08:30:00.000000Z" and item["active"]
    ws1 = store.policy_inputs("ws-1", "office")
    assert ws1 is not None and ws1["version"] == 4
    assert [e["exception_id"] for e in ws1["exceptions"]] == ["x-4"]
    for agent in ("ws-2", "ws-3"):  # in scope for exactly one workstation
        inputs = store.policy_inputs(agent, "office")
        assert inputs is not None and inputs["exceptions"] == []
        assert inputs["version"] == before[agent]

    # a group exception reaches the lab only; "all" everyone
    policy_admin.approve(store, own, "alice", "group:lab", "scanner",
                         device={"id": "04a9:1234", "hash": HASH_B}, now=NOW)
    ws3 = store.policy_inputs("ws-3", "office")
    assert ws3 is not None and [e["rule"] for e in ws3["exceptions"]] == [
        f'allow id 04a9:1234 hash "{HASH_B}"']  # no serial: none in the rule
    assert version(store, "ws-1") == 4
    with pytest.raises(UnknownRecord, match="unknown group"):
        policy_admin.approve(store, own, "alice", "group:nowhere", "x", device=TABLET, now=NOW)
    with pytest.raises(PolicyInputError, match="not in the future"):
        policy_admin.approve(store, own, "alice", "all", "x", device=TABLET,
                             expires_at="2026-12-07T07:00:00Z", now=NOW)
    with pytest.raises(PolicyInputError, match="device.hash"):
        policy_admin.approve(store, own, "alice", "all", "x", device=TABLET | {"hash": "x"},
                             now=NOW)

    # the document, signed and verified as the workstation does
    key = Ed25519PrivateKey.generate()
    envelope = policy_admin.signed_for(store, key, "ws-1", "office", "collector-test")
    assert envelope is not None
    document = wire.verify(envelope, key.public_key(), agent_id="ws-1", enforced_version=None)
    assert document.version == 4 and document.exceptions[0].exception_id == "x-4"
    assert "056a:0374" in wire.effective_usb_rules(document, parse_timestamp(NOW))

    # nothing due before its time; at it, a new version without it, and an event
    assert policy_admin.expire_due(store, own, NOW) == []
    ended = policy_admin.expire_due(store, own, LATER)
    assert [(e["exception_id"], e["ended_change"], e["end_reason"]) for e in ended] == [
        ("x-4", 6, "expired")]
    ws1 = store.policy_inputs("ws-1", "office")
    assert ws1 is not None and ws1["version"] == 6 and ws1["exceptions"] == []
    assert policy_admin.expire_due(store, own, LATER) == []  # once
    expired = own.of(CollectorKind.POLICY_EXCEPTION_EXPIRED)
    assert expired == [{"exception_id": "x-4", "change": 6, "scope": "agent:ws-1",
                        "rule": item["rule"], "expires_at": item["expires_at"],
                        "approved_by": "alice"}]
    after = wire.verify(policy_admin.signed_for(store, key, "ws-1", "office", "c"),
                        key.public_key(), agent_id="ws-1", enforced_version=document.version)
    assert after.version == 6 and after.exceptions == ()

    # withdrawal: the group exception ends early, a new version for the lab
    assert policy_admin.withdraw(store, own, "bob", "x-5", "scanner returned", LATER) == 7
    assert version(store, "ws-3") == 7 and version(store, "ws-1") == 6
    with pytest.raises(policy_admin.UnknownException):
        policy_admin.withdraw(store, own, "bob", "x-5", "again", LATER)
    with pytest.raises(policy_admin.UnknownException):
        policy_admin.withdraw(store, own, "bob", "../x", "bad id", LATER)
    listed = {e["exception_id"]: e for e in store.policy_exceptions()}
    assert listed["x-5"]["end_reason"] == "withdrawn" and listed["x-5"]["ended_by"] == "bob"
    assert store.policy_exceptions(active_only=True) == []
    change = store.policy_change(7)
    assert change is not None and change["kind"] == "exception_withdrawn"
    assert change["before"]["active"] and not change["after"]["active"]
    assert own.kinds().count(CollectorKind.POLICY_EXCEPTION_APPROVED) == 2
    assert own.of(CollectorKind.POLICY_EXCEPTION_WITHDRAWN)[0]["reason"] == "scanner returned"


def test_an_exception_from_a_stored_blocked_event(store: Store, own: OwnTrail) -> None:
    """The event's data is the device (usb_guard/guard.device_data); another kind is refused."""
    data = ('{"id":"056a:0374","name":"Intuos S","serial":"8CQ00N1005512","hash":"'
            + HASH_A + '","interfaces":["03:00:00"],"rule":"(implicit)","port":"1-2"}')
    with store._write() as cur:  # type: ignore[attr-defined]  (rows as ingest leaves them)
        for seq, kind in ((1, "usb.blocked"), (2, "usb.allowed")):
            row = EventRow("ws-1", seq, "boot", NOW, kind, "warning", 3, "/dev/x", data,
                           bytes(32), NOW)
            cur.execute(store._q(INSERT_EVENT), tuple(row))  # type: ignore[attr-defined]
    blocked = store.query_events(EventQuery(kind="usb.blocked")).events[0]
    item = policy_admin.approve(store, own, "alice", "all", "approved from the event",
                                event_id=blocked["id"], now=NOW)
    assert item["device"]["port"] == "1-2" and "8CQ00N1005512" in item["rule"]
    assert own.of(CollectorKind.POLICY_EXCEPTION_APPROVED)[0]["from_event"] == "ws-1#1"
    with pytest.raises(PolicyInputError, match="a usb.allowed event"):
        policy_admin.approve(store, own, "alice", "all", "x", event_id=blocked["id"] + 1,
                             now=NOW)
    with pytest.raises(UnknownRecord, match="no stored event"):
        policy_admin.approve(store, own, "alice", "all", "x", event_id=10**9, now=NOW)
    with pytest.raises(PolicyInputError, match="either"):
        policy_admin.approve(store, own, "alice", "all", "x", now=NOW)


def test_concurrent_approvals_get_distinct_change_numbers(url: str, store: Store) -> None:
    """Two store connections (two collectors on one database) approving at once."""
    store.put_policy_group("office", RULES_OFFICE, [], "alice", "base", NOW)
    others = [open_store(url) for _ in range(2)]
    made: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(others))

    def approve(s: Store, n: int) -> None:
        try:
            barrier.wait()
            for i in range(10):
                item = s.add_policy_exception(
                    f'allow id 0001:{n:02d}{i:02d} hash "{HASH_A}"', "all", {"n": n}, "r",
                    f"admin-{n}", NOW, None)
                made.append(item["approved_change"])
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=approve, args=(s, n)) for n, s in enumerate(others)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for s in others:
            s.close()
    assert not errors, errors
    assert sorted(made) == list(range(2, 22))  # distinct, none lost
    assert len({e["exception_id"] for e in store.policy_exceptions()}) == 20
    assert [c["change"] for c in store.policy_changes(limit=1000)] == list(range(21, 0, -1))


def test_checks_name_where_the_input_is_wrong() -> None:
    with pytest.raises(PolicyInputError, match=r"^usb_rules line 3: column \d+: .*"):
        policy.check_usb_rules("allow id 1d6b:0002\n# fine\nallow bogus-attribute 1\n")
    with pytest.raises(PolicyInputError, match="usb_rules line 1"):
        policy.check_usb_rules(" allow\n")  # leading whitespace: USBGuard refuses it
    assert policy.check_usb_rules("block") == "block\n"
    assert policy.check_usb_rules("") == ""
    with pytest.raises(PolicyInputError, match=r"netlock_allow\[1\]\.addresses"):
        policy.check_netlock_allow([ALLOW[0], {"name": "x", "addresses": []}])
    with pytest.raises(PolicyInputError, match=r"netlock_allow\[0\]\.tcp\[0\]"):
        policy.check_netlock_allow([{"name": "x", "addresses": ["10.0.0.1"], "tcp": [70000]}])
    with pytest.raises(PolicyInputError, match=r"netlock_allow\[0\]\.ports"):
        policy.check_netlock_allow([{"name": "x", "addresses": ["10.0.0.1"], "ports": [1]}])
    with pytest.raises(PolicyInputError, match="appears twice"):
        policy.check_netlock_allow([ALLOW[0], ALLOW[0]])
    assert policy.check_netlock_allow([{"name": "s", "addresses": ["s.lan"],
                                        "udp": [53, 53]}])[0]["udp"] == [53]
    with pytest.raises(PolicyInputError, match="group"):
        policy.check_group("../etc")
    with pytest.raises(PolicyInputError, match="scope"):
        policy.check_scope("agent:")
    with pytest.raises(PolicyInputError, match="reason"):
        policy.check_reason("  ")
    with pytest.raises(PolicyInputError, match="time zone"):
        policy.check_expiry("2027-01-01T00:00:00", NOW)
    # a serial with quotes and non-ASCII is escaped as USBGuard prints it, and parses
    rule = policy.exception_rule(policy.check_device(
        {"id": "056A:0374", "serial": 'a"b\\c\u00e9', "hash": HASH_A}))
    assert rule == ('allow id 056a:0374 serial "a\\"b\\\\c\\xc3\\xa9" hash "' + HASH_A + '"')
    with pytest.raises(PolicyInputError, match="device.id"):
        policy.check_device({"id": "*:*", "hash": HASH_A})


def test_no_document_while_the_group_has_no_rules(store: Store, own: OwnTrail) -> None:
    """An exception for all does not make a document of no rules (the workstation keeps its
    own until its group has rules); once it has, the document carries both."""
    policy_admin.approve(store, own, "alice", "all", "site-wide tablet", device=TABLET, now=NOW)
    assert store.policy_inputs("ws-1", "office") is None
    policy_admin.set_group(store, own, "alice", "office", RULES_OFFICE, ALLOW, "base", NOW)
    inputs = store.policy_inputs("ws-1", "office")
    assert inputs is not None and inputs["version"] == 2
    assert [e["exception_id"] for e in inputs["exceptions"]] == ["x-1"]
    assert own.of(CollectorKind.POLICY_CHANGED)[0]["created"] is True
