"""The choice of collector URL (audit/failover.py): sticky, ordered, back to the first in time,
and a switch said once per real change of collector, whatever the order of failures."""

from __future__ import annotations

import logging

import httpx
import pytest
from collector_process import free_port
from hypothesis import given, settings
from hypothesis import strategies as st

from floor_agent.audit.collector_link import FAILOVER_ERRORS, CollectorLink
from floor_agent.audit.failover import Route, Switch, after_answer, after_failure, before_request

A, B, C = "https://a:8443", "https://b:8443", "https://c:8443"
RETURN = 300.0


def test_sticks_to_the_first_while_it_answers() -> None:
    route = Route((A, B))
    for now in (0.0, 1.0, 10_000.0):
        route, returning = before_request(route, now, RETURN)
        route, switch = after_answer(route)
        assert (route.url, returning, switch) == (A, False, None)


def test_no_answer_moves_on_and_the_answer_there_is_one_switch() -> None:
    route = after_failure(Route((A, B, C)), now=5.0)
    assert route.url == B
    route, switch = after_answer(route)
    assert switch == Switch(A, B, "failover")
    for now in (6.0, 7.0, 8.0):  # B keeps answering: it sticks, nothing more to say
        route, _ = before_request(route, now, RETURN)
        route, switch = after_answer(route)
        assert (route.url, switch) == (B, None)


def test_every_collector_down_cycles_in_order_and_says_nothing_until_one_answers() -> None:
    route = Route((A, B, C))
    seen = []
    for now in range(7):
        route, _ = before_request(route, float(now), RETURN)
        seen.append(route.url)
        route = after_failure(route, float(now))
    assert seen == [A, B, C, A, B, C, A]
    route, switch = after_answer(route)  # B answers first (route is at B now)
    assert switch == Switch(A, B, "failover")


def test_back_where_it_was_is_no_switch() -> None:
    """A answered, then A and B gave no answer, then A answered again: same collector."""
    route, _ = after_answer(Route((A, B)))
    route = after_failure(route, 1.0)
    route = after_failure(route, 2.0)
    assert route.url == A
    assert after_answer(route)[1] is None


def test_returns_to_the_first_after_the_configured_time_only() -> None:
    route, _ = after_answer(after_failure(Route((A, B)), now=100.0))
    route, returning = before_request(route, 100.0 + RETURN - 0.001, RETURN)
    assert (route.url, returning) == (B, False)
    route, returning = before_request(route, 100.0 + RETURN, RETURN)
    assert (route.url, returning) == (A, True)
    route, switch = after_answer(route)
    assert switch == Switch(B, A, "return")


def test_a_first_still_down_sends_it_on_and_the_clock_starts_anew() -> None:
    route, _ = after_answer(after_failure(Route((A, B)), now=0.0))
    route, _ = before_request(route, RETURN, RETURN)
    route = after_failure(route, RETURN + 2.0)  # the probe of A got no answer
    assert route.url == B
    route, switch = after_answer(route)
    assert switch is None  # still B, as before the probe
    assert before_request(route, 2 * RETURN + 1.0, RETURN)[0].url == B
    assert before_request(route, 2 * RETURN + 2.0, RETURN)[0].url == A


def test_the_clock_counts_from_leaving_the_first_not_from_each_move() -> None:
    route = after_failure(Route((A, B, C)), now=10.0)  # A -> B
    route = after_failure(route, now=200.0)  # B -> C: A was left at 10
    route, _ = after_answer(route)
    assert before_request(route, 10.0 + RETURN, RETURN)[0].url == A


def test_wrapping_back_to_the_first_after_a_failure_is_a_failover() -> None:
    route, _ = after_answer(after_failure(Route((A, B)), now=0.0))  # on B
    route = after_failure(route, now=1.0)  # B gave no answer: back to A by order, not by time
    route, switch = after_answer(route)
    assert switch == Switch(B, A, "failover")


def test_one_url_stays_put() -> None:
    route = Route((A,))
    for now in (0.0, 1.0, 1e9):
        route = after_failure(route, now)
        route, returning = before_request(route, now, RETURN)
        assert (route, returning) == (Route((A,)), False)
    assert after_answer(route)[1] is None


OPS = st.lists(st.tuples(st.sampled_from(["fail", "answer", "send"]),
                         st.floats(min_value=0, max_value=2 * RETURN)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=4), OPS)
def test_any_order_of_failures_and_answers_keeps_the_promises(n: int, ops: list) -> None:
    """Whatever the network does: the URL is one of the list, the first is left only by a
    failure and regained by order or by time, never before the time when it is by time, and a
    switch is said exactly when another collector than the last to answer answers."""
    urls = tuple(f"https://c{i}:8443" for i in range(n))
    route = Route(urls)
    now = 0.0
    for op, step in ops:
        now += step
        before = route
        if op == "fail":
            route = after_failure(route, now)
            assert route.index == (before.index + 1) % n
        elif op == "answer":
            route, switch = after_answer(route)
            if before.index == before.answered:
                assert switch is None
            else:
                assert switch is not None
                assert (switch.from_url, switch.to_url) == (urls[before.answered], before.url)
            assert route.answered == route.index
        else:
            route, returning = before_request(route, now, RETURN)
            if returning:
                assert before.left_first_at is not None
                assert now - before.left_first_at >= RETURN
                assert route.index == 0
            else:
                assert route == before
        assert 0 <= route.index < n and 0 <= route.answered < n
        assert (route.left_first_at is None) == (route.index == 0)


def test_link_says_a_lost_collector_once_while_every_one_refuses(
        caplog: pytest.LogCaptureFixture) -> None:
    """The shell over real refused connections: attempts cycle through the list, the loss is
    one warning however long all stay down, and a failed return probe says nothing new."""
    ports = [free_port(), free_port()]  # nothing listens: every connect is refused
    clients = [httpx.Client(base_url=f"https://127.0.0.1:{port}", timeout=2) for port in ports]
    link = CollectorLink(clients, return_after=RETURN, clock=lambda: 0.0)
    tried = []
    said = []
    with caplog.at_level(logging.DEBUG, logger="floor_agent.audit.collector_link"):
        for _ in range(6):
            client = link.pick()
            tried.append(client)
            with pytest.raises(FAILOVER_ERRORS) as refused:
                client.get("/healthz")
            said.append(link.failed(client, refused.value))
    link.close()
    assert tried == clients * 3
    assert said == [True] + [False] * 5
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage().split(" (")[0] for r in warnings] == [
        f"collector https://127.0.0.1:{ports[0]} unreachable"]
