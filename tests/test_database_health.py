"""The database's reachability as pure transitions (collector/database_health.py): one line
when an outage begins, one when it ends, however many calls fail in between; the stale sweep
waits for agents to have had time to deliver after an outage."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from floor_agent.collector import database_health as health
from floor_agent.collector.database_watch import DatabaseWatch
from floor_agent.store.interface import StoreError, StoreRefused, StoreUnavailable
from floor_agent.store.sqlite import SqliteStore


def test_one_line_down_one_line_back_with_the_time_away() -> None:
    state = health.started(100.0)
    state, line = health.failed(state, 110.0, "connection refused", refused=True)
    assert line is not None and "database unreachable: connection refused" in line
    for moment in range(111, 140):
        state, line = health.failed(state, float(moment), "connection refused", refused=True)
        assert line is None
    assert not state.up and state.since == 110.0 and state.refused == 30
    assert health.down_seconds(state, 130.5) == 20.5
    state, line = health.answered(state, 130.5)
    assert line == "database reachable again after 20.5 s (30 requests answered 503 meanwhile)"
    state, line = health.answered(state, 131.0)
    assert line is None
    assert state.up and state.outages == 1 and health.down_seconds(state, 200.0) == 0.0


def test_report_says_up_or_down_and_since_when() -> None:
    up = health.started(0.0)
    assert health.report(up, 5.0) == {"state": "up", "since": "1970-01-01T00:00:00.000000Z"}
    down, _ = health.failed(up, 60.0, "the database went away")
    assert health.report(down, 72.25) == {
        "state": "down", "since": "1970-01-01T00:01:00.000000Z", "down_seconds": 12.2,
        "reason": "the database went away"}


def test_stale_sweep_waits_after_an_outage_not_before_any() -> None:
    state = health.started(0.0)
    assert health.stale_sweep_due(state, 1.0, 180)  # never away: as before
    state, _ = health.failed(state, 10.0, "gone")
    assert not health.stale_sweep_due(state, 500.0, 180)
    state, _ = health.answered(state, 600.0)
    assert not health.stale_sweep_due(state, 779.0, 180)
    assert health.stale_sweep_due(state, 780.0, 180)


@given(st.lists(st.tuples(st.booleans(), st.floats(0, 10, allow_nan=False)), max_size=60))
def test_lines_alternate_and_count_the_outages(calls: list[tuple[bool, float]]) -> None:
    """Whatever the order of failures and answers: the lines alternate down, up, down...,
    each outage is counted once, and the time down is never negative."""
    state = health.started(0.0)
    now = 0.0
    lines: list[str] = []
    for ok, step in calls:
        now += step
        state, line = (health.answered(state, now) if ok
                       else health.failed(state, now, "gone", refused=True))
        if line is not None:
            lines.append("up" if line.startswith("database reachable again") else "down")
        assert health.down_seconds(state, now) >= 0.0
    assert lines == ["down", "up"] * (len(lines) // 2) + ["down"] * (len(lines) % 2)
    assert state.outages == (len(lines) + 1) // 2
    assert state.up == (len(lines) % 2 == 0)


def test_a_start_that_waits_says_so_once_and_once_when_it_is_done() -> None:
    state, line = health.waiting(50.0, "connection refused")
    assert line.startswith("waiting for the database: connection refused;")
    assert not state.up and state.starting and state.outages == 1
    assert health.report(state, 53.0) == {
        "state": "down", "since": "1970-01-01T00:00:50.000000Z", "down_seconds": 3.0,
        "reason": "connection refused", "starting": True}
    assert not health.stale_sweep_due(state, 10_000.0, 180)
    for moment in range(51, 60):
        state, again = health.failed(state, float(moment), "refused", refused=True)
        assert again is None
    state, back = health.answered(state, 62.5)
    assert back == ("database reachable after 12.5 s waiting for it since start; started "
                    "(9 requests answered 503 meanwhile)")
    assert state.up and not state.starting and "starting" not in health.report(state, 63.0)
    # the agents get stale_checkpoint_seconds to deliver before any is called silent
    assert not health.stale_sweep_due(state, 62.5 + 179, 180)
    assert health.stale_sweep_due(state, 62.5 + 180, 180)
    # a later outage is an outage like any other
    state, down = health.failed(state, 70.0, "gone")
    assert down is not None and down.startswith("database unreachable")
    state, up = health.answered(state, 71.0)
    assert up is not None and up.startswith("database reachable again")
    assert state.outages == 2


# -- the watch running a start that waits (collector/database_watch.py), over a real store --

def test_the_watch_runs_the_start_until_it_returns_then_pings(tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path / 'c.db'}")
    watch = DatabaseWatch(store)
    tries: list[str] = []
    refusals: list[BaseException] = []

    def start() -> None:
        tries.append("start")
        if len(tries) < 3:  # the database away the first two times
            raise StoreUnavailable("connection refused")

    watch.wait_to_start(StoreUnavailable("connection refused"), start, refusals.append)
    assert not watch.started and watch.state.starting
    assert not watch.probe() and not watch.probe()
    assert not watch.started
    assert watch.probe()  # the database answered: the start ran to its end
    assert watch.started and watch.state.up and not watch.state.starting
    assert watch.probe() and tries == ["start"] * 3  # from now on a ping
    assert refusals == []
    store.close()


@pytest.mark.parametrize("error", [StoreRefused("password authentication failed"),
                                   StoreError("the store's schema is version 99"),
                                   RuntimeError("the store holds another public key")])
def test_a_start_refused_is_told_once_and_never_waited_for(tmp_path: Path,
                                                           error: Exception) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path / 'c.db'}")
    watch = DatabaseWatch(store)
    refusals: list[BaseException] = []

    def start() -> None:
        raise error

    watch.wait_to_start(StoreUnavailable("connection refused"), start, refusals.append)
    assert not watch.probe()
    assert refusals == [error]
    assert not watch.started  # the gate stays shut while the process stops
    store.close()
