"""The forwarder's wait as a pure function (audit/backoff.py): exponential with jitter, at
least what a 503 or 429 asks with Retry-After, never past backoff_max_seconds; headers read
as hostile input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from floor_agent.audit import backoff

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def test_the_ceiling_doubles_from_the_first_wait_up_to_the_most() -> None:
    assert [backoff.ceiling(n, 0.5, 30.0) for n in range(1, 9)] == [
        0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff.ceiling(10_000, 0.5, 30.0) == 30.0  # no overflow however many failures


@pytest.mark.parametrize("status", [503, 429])
def test_a_503_or_429_asks_for_its_delay_in_seconds(status: int) -> None:
    assert backoff.retry_after(status, "5", NOW) == 5.0
    assert backoff.retry_after(status, " 120 ", NOW) == 120.0
    assert backoff.retry_after(status, "0", NOW) == 0.0


def test_an_http_date_asks_for_the_time_until_it_and_a_past_one_for_none() -> None:
    later = "Sat, 01 Mar 2025 12:00:42 GMT"
    assert backoff.retry_after(503, later, NOW) == 42.0
    assert backoff.retry_after(503, "Sat, 01 Mar 2025 11:00:00 GMT", NOW) == 0.0


@pytest.mark.parametrize("status", [200, 400, 401, 409, 413, 500, 502, 504])
def test_other_statuses_ask_nothing_whatever_the_header(status: int) -> None:
    assert backoff.retry_after(status, "5", NOW) is None


@pytest.mark.parametrize("header", [None, "", "   ", "-5", "5.5", "1e3", "five", "５", "²",
                                    "0x10", "Sat, 99 Foo 2025", "Sat, 01 Mar 99999 12:00:00 GMT",
                                    "1" * 65, "5\x00", "\u202e5"])
def test_a_header_not_understood_asks_nothing(header: str | None) -> None:
    """Not RFC 9110 (a delay is whole seconds) or not readable: the backoff alone applies."""
    assert backoff.retry_after(503, header, NOW) is None


def test_the_wait_is_the_draw_without_an_ask() -> None:
    assert backoff.wait(0.3, None, 30.0) == 0.3


def test_the_ask_raises_the_wait_and_the_most_caps_the_ask() -> None:
    assert backoff.wait(0.3, 5.0, 30.0) == 5.0
    assert backoff.wait(7.0, 5.0, 30.0) == 7.0  # the backoff already waits longer
    assert backoff.wait(0.3, 3600.0, 30.0) == 30.0  # a collector cannot park an agent
    assert backoff.wait(0.3, 0.0, 30.0) == 0.3


@given(drawn=st.floats(0, 100), asked=st.one_of(st.none(), st.floats(0, 1e9)),
       most=st.floats(0.01, 100))
def test_the_wait_keeps_its_promises(drawn: float, asked: float | None, most: float) -> None:
    waited = backoff.wait(drawn, asked, most)
    assert waited >= drawn  # never shorter than the backoff
    if asked is not None:
        assert waited >= min(asked, most)  # what was asked, up to the most
        assert waited <= max(drawn, most)  # the asking alone never goes past the most


@given(seconds=st.integers(0, 10**12))
def test_any_delay_in_whole_seconds_is_read_back(seconds: int) -> None:
    assert backoff.retry_after(503, str(seconds), NOW) == float(seconds)


@given(header=st.text(max_size=200))
def test_any_header_is_judged_without_error(header: str) -> None:
    asked = backoff.retry_after(503, header, NOW)
    assert asked is None or asked >= 0


@given(offset=st.integers(-10**6, 10**6))
def test_dates_either_side_of_now(offset: int) -> None:
    when = NOW + timedelta(seconds=offset)
    header = when.strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert backoff.retry_after(429, header, NOW) == max(0.0, float(offset))
