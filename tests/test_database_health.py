"""The database's reachability as pure transitions (collector/database_health.py): one line
when an outage begins, one when it ends, however many calls fail in between; the stale sweep
waits for agents to have had time to deliver after an outage."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from floor_agent.collector import database_health as health


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
