"""The edge's decisions as pure functions (collector/edge.py, the snapshot's JPEG header): who
is admitted, who makes room, which body limit a route has, when a slow body is given up."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from floor_agent.collector.api_snapshots import MAX_BYTES, jpeg_problem, jpeg_size
from floor_agent.collector.config import CollectorSection
from floor_agent.collector.edge import (
    BodyBudget,
    Connection,
    EdgeLimits,
    Offences,
    admission,
    body_deadline,
    body_limit,
    declared_length,
    eviction_victim,
    offender,
)

LIMITS = EdgeLimits.of(CollectorSection(), MAX_BYTES)
MiB = 1024 * 1024


def test_admission_per_address_then_in_all() -> None:
    small = EdgeLimits.of(CollectorSection(edge={"max_connections": 16,
                                                 "max_connections_per_address": 4}), MAX_BYTES)
    assert admission({"a": 3}, 3, "a", small) == "admit"
    assert admission({"a": 4}, 4, "a", small) == "address_full"
    assert admission({"a": 4, "b": 4, "c": 4, "d": 4}, 16, "e", small) == "full"


def test_the_victim_is_the_oldest_idle_connection_of_the_address_holding_most() -> None:
    conns = [Connection("a", 1.0), Connection("a", 2.0), Connection("a", 3.0),
             Connection("b", 0.5), Connection("b", 0.7)]
    by_address = {"a": conns[:3], "b": conns[3:]}
    counts = {"a": 3, "b": 2}
    assert eviction_victim(by_address, counts, "new") is conns[0]
    conns[0].busy = True  # a connection in a request is never taken
    assert eviction_victim(by_address, counts, "new") is conns[1]
    # an address is not evicted in favour of one that would then hold as many
    assert eviction_victim(by_address, counts, "b") is None
    # equal holdings: the oldest idle one of either
    assert eviction_victim(by_address, {"a": 3, "b": 3}, "c") is conns[3]
    # the address holding most has nothing idle: the next one gives way
    for conn in conns[:3]:
        conn.busy = True
    assert eviction_victim(by_address, {"a": 3, "b": 2}, "new") is conns[3]


def test_body_limits_per_route() -> None:
    assert body_limit("POST", "/api/v1/enroll", LIMITS) == 4096
    assert body_limit("POST", "/login", LIMITS) == 4096
    assert body_limit("POST", "/api/v1/ingest", LIMITS) == 16 * 1024 * 1024
    assert body_limit("POST", "/api/v1/snapshots/cam1", LIMITS) == MAX_BYTES
    assert body_limit("POST", "/admin/users", LIMITS) == 64 * 1024
    assert body_limit("GET", "/api/v1/ingest", LIMITS) == 4096
    assert declared_length([(b"content-length", b"12")]) == 12
    assert declared_length([(b"content-length", b"-1")]) == -1
    assert declared_length([(b"host", b"x")]) is None


def test_a_body_keeping_the_minimum_rate_keeps_going() -> None:
    assert body_deadline(100.0, 0, LIMITS) == 100.0 + LIMITS.body_timeout
    assert body_deadline(100.0, 10 * LIMITS.body_min_rate, LIMITS) == (
        100.0 + LIMITS.body_timeout + 10)


def test_the_budget_holds_per_address_and_in_all() -> None:
    budget = BodyBudget(total=10, per_address=6)
    assert budget.take("a", 6) and not budget.take("a", 1)
    assert budget.take("b", 4) and not budget.take("c", 1)
    budget.give("a", 6)
    assert budget.take("c", 5) and budget.by_address == {"b": 4, "c": 5}


@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_size_from_the_frame_header(progressive: bool) -> None:
    ok, data = cv2.imencode(".jpg", np.zeros((360, 640, 3), np.uint8),
                            [cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)])
    assert ok
    body = data.tobytes()
    assert jpeg_size(body) == (640, 360)
    assert jpeg_problem(body) == (None, 640, 360)
    # fill bytes before a marker are allowed
    assert jpeg_size(body[:2] + b"\xff\xff" + body[2:]) == (640, 360)
    # no frame header before the scan, or cut short
    sof = body.index(b"\xff\xc0" if not progressive else b"\xff\xc2")
    assert jpeg_size(body[:sof]) is None
    assert jpeg_size(body[:sof + 6]) is None
    huge = bytearray(body)
    huge[sof + 5:sof + 9] = (11500).to_bytes(2, "big") * 2
    problem, _, _ = jpeg_problem(bytes(huge))
    assert problem is not None and "11500x11500" in problem


def test_a_stalled_body_is_given_up_soon_after_its_last_byte() -> None:
    # most of a large body at once earns minutes of rate credit; a stall still ends it
    received = 16 * 1024 * 1024
    assert body_deadline(100.0, received, LIMITS, last_byte=101.0) == (
        101.0 + LIMITS.body_timeout)
    # a body that keeps coming is judged by its rate alone
    assert body_deadline(100.0, 0, LIMITS, last_byte=100.0) == 100.0 + LIMITS.body_timeout


def test_an_address_is_shut_out_after_its_offences_and_longer_each_time() -> None:
    offences = Offences(limit=3, window=10.0, base=60.0, most=200.0,
                        trusted=frozenset({"127.0.0.1"}))
    assert offences.offend("10.0.0.9", "http_401", 0.0) is None
    assert offences.offend("10.0.0.9", "http_401", 1.0) is None
    assert offences.offend("10.0.0.9", "http_413", 2.0) == 60.0
    assert offences.shut_out("10.0.0.9", 61.0) and not offences.shut_out("10.0.0.9", 62.1)
    assert offences.reasons_of("10.0.0.9") == {"http_401": 2, "http_413": 1}
    # offences spread wider than the window never add up
    for moment in (100.0, 111.0, 122.0, 133.0):
        assert offences.offend("10.0.0.9", "http_401", moment) is None
    # a repeat offender is shut out twice as long, up to the most
    for moment in (150.0, 151.0):
        offences.offend("10.0.0.9", "http_401", moment)
    assert offences.offend("10.0.0.9", "http_401", 152.0) == 120.0
    for moment in (300.0, 301.0):
        offences.offend("10.0.0.9", "http_401", moment)
    assert offences.offend("10.0.0.9", "http_401", 302.0) == 200.0
    # the collector's own host never is; other addresses are counted apart
    for moment in range(10):
        assert offences.offend("127.0.0.1", "http_401", float(moment)) is None
        assert not offences.shut_out("10.0.0.10", float(moment))


def test_an_ipv6_host_is_one_offender_per_prefix_and_memory_is_bounded() -> None:
    assert offender("2001:db8:1:2::5") == offender("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert offender("::ffff:10.0.0.9") == "10.0.0.9"
    offences = Offences(limit=2, window=10.0, base=60.0, most=60.0, tracked=100)
    for n in range(1000):  # one offence each from many addresses: none remembered past 100
        offences.offend(f"10.1.{n // 250}.{n % 250}", "http_401", 1.0)
    assert len(offences.seen) == 100 and len(offences.reasons) == 100
    assert offences.offend("10.1.3.249", "http_401", 2.0) == 60.0  # the newest still counted
    off = Offences(limit=0, window=10.0, base=60.0, most=60.0)  # 0: never shut out
    assert all(off.offend("10.0.0.1", "x", float(t)) is None for t in range(100))


def test_large_bodies_leave_a_quarter_of_the_budget_to_small_ones() -> None:
    budget = BodyBudget(total=16 * MiB, per_address=8 * MiB)
    # stalling clients' large bodies fill what they may: three quarters
    assert budget.take("a", 6 * MiB, 6 * MiB) and budget.take("b", 6 * MiB, 6 * MiB)
    assert not budget.take("c", 2 * MiB, 2 * MiB)  # 12 MiB held: large ones stop here
    # ... a genuine agent's small batch still gets in
    assert budget.take("agent", 100 * 1024, 100 * 1024)
    # a request growing past the small size chunk by chunk counts as large from there
    assert budget.take("d", 512 * 1024, 512 * 1024)
    assert not budget.take("d", 600 * 1024, 1112 * 1024)


def test_an_offence_that_cost_much_weighs_more() -> None:
    offences = Offences(limit=30, window=60.0, base=60.0, most=60.0)
    assert offences.offend("10.0.0.7", "body_budget", 1.0, weight=16) is None
    assert offences.offend("10.0.0.7", "body_budget", 2.0, weight=16) == 60.0
    assert offences.reasons_of("10.0.0.7") == {"body_budget": 32}
