"""Password guessing against a real collector process over HTTPS, SQLite and PostgreSQL:
parallel guesses cannot outrun the lockout, a source address is throttled before any hashing,
and however many logins arrive at once, password hashing holds 2 x 64 MiB at most.

Attack first (what was observed on the old code), then the expectation. Each attacker
connects from its own loopback address (127.0.0.x) unless the test is about one address.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from collector_process import CollectorProcess
from dashboard_clients import (
    PASSWORD,
    add_user,
    browser,
    login,
    login_form,
    own_events,
    post_login,
)
from postgres_server import PostgresServer

from floor_agent.collector.config import DashboardSettings

LOCKOUT = 5
LOCKED = "this account is locked"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def guarded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CollectorProcess]:
    """A collector locking after 5 failures, throttling an address after 8, and letting a
    login wait long for a hashing slot (these tests count every guess)."""
    database_url = None
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        database_url = server.new_database()
    proc = CollectorProcess(tmp_path, database_url, dashboard=DashboardSettings(
        lockout_failures=LOCKOUT, lockout_minutes=15, address_failures=8, address_minutes=15,
        login_wait_seconds=60.0))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def burst(collector: CollectorProcess, guesses: list[tuple[str, str]],
          first_address: int) -> list[httpx.Response]:
    """Send the (name, password) guesses at once, each from its own address and connection,
    released together by a barrier after every client has its login form."""
    clients = [browser(collector, f"127.0.0.{first_address + i}") for i in range(len(guesses))]
    with contextlib.ExitStack() as stack:
        for client in clients:
            stack.enter_context(client)
        tokens = [login_form(client) for client in clients]
        barrier = threading.Barrier(len(guesses))

        def guess(i: int) -> httpx.Response:
            barrier.wait()
            return post_login(clients[i], tokens[i], *guesses[i])

        with ThreadPoolExecutor(len(guesses)) as pool:
            return list(pool.map(guess, range(len(guesses))))


def locked_until(collector: CollectorProcess, name: str) -> str | None:
    store = collector.store()
    try:
        user = store.get_user(name)
        return user["locked_until"] if user else store.login_locked_until(name)
    finally:
        store.close()


def test_parallel_wrong_guesses_lock_exactly_at_the_limit(guarded: CollectorProcess) -> None:
    """Old code: N guesses sent together all read the same failure count, wrote back 1, and
    the account never locked; the right password then logged in."""
    add_user(guarded, "ann", "viewer")
    one_short = burst(guarded, [("ann", f"wrong-{i}") for i in range(LOCKOUT - 1)], 10)
    assert all(r.status_code == 200 and "wrong user name" in r.text for r in one_short)
    assert locked_until(guarded, "ann") is None  # 4 failures: not yet
    with browser(guarded) as owner:
        assert login(owner, "ann").status_code == 303  # and a success clears them
    at_limit = burst(guarded, [("ann", f"wrong-{i}") for i in range(LOCKOUT)], 20)
    assert [r.status_code for r in at_limit] == [200] * LOCKOUT
    assert sum(LOCKED in r.text for r in at_limit) == 1  # the 5th counted failure locks
    assert locked_until(guarded, "ann") is not None
    with browser(guarded) as owner:  # the right password, while locked: refused
        refused = login(owner, "ann")
        assert refused.status_code == 200 and LOCKED in refused.text
        assert "floor_session" not in refused.cookies
    assert len(own_events(guarded, "dashboard.locked")) == 1


def test_a_right_password_sent_among_parallel_guesses_cannot_slip_past_the_lock(
        guarded: CollectorProcess) -> None:
    """Three times the limit at once, the right password among them: either it was checked
    before the lock (and logged in) or it is refused; never more than LOCKOUT failures."""
    add_user(guarded, "ann", "viewer")
    guesses = [("ann", f"wrong-{i}") for i in range(3 * LOCKOUT)]
    guesses.insert(LOCKOUT + 2, ("ann", PASSWORD))
    answers = burst(guarded, guesses, 30)
    wrong = [r for (_, pw), r in zip(guesses, answers, strict=True) if pw != PASSWORD]
    right = answers[LOCKOUT + 2]
    failures = sum("wrong user name" in r.text for r in wrong)
    assert all(r.status_code == 200 for r in wrong)
    assert all("wrong user name" in r.text or LOCKED in r.text for r in wrong)
    if right.status_code == 303:  # checked before the lock: it cleared the failures before it
        assert failures <= 2 * (LOCKOUT - 1)
    else:
        assert LOCKED in right.text and failures <= LOCKOUT - 1
    assert locked_until(guarded, "ann") is not None  # 15 wrong guesses lock it either way
    with browser(guarded) as owner:
        assert LOCKED in login(owner, "ann").text


def test_unknown_names_lock_like_real_ones_under_parallel_guessing(
        guarded: CollectorProcess) -> None:
    """A name no user has is counted the same way, in the store: a guesser learns nothing
    from which names lock, and cannot flush the count by spraying other names."""
    answers = burst(guarded, [("ghost", f"wrong-{i}") for i in range(LOCKOUT)], 50)
    assert sum(LOCKED in r.text for r in answers) == 1
    assert locked_until(guarded, "ghost") is not None
    with browser(guarded, "127.0.0.60") as later:
        assert LOCKED in login(later, "ghost", "another").text


def test_an_address_is_throttled_before_hashing_and_recorded_once(
        guarded: CollectorProcess) -> None:
    """Old code: one address could guess without end (only each name locked). Now its 9th
    failed login within the window is answered 429 with Retry-After, even with a right
    password; other addresses are served; the trail records the throttle once."""
    add_user(guarded, "ann", "viewer")
    with browser(guarded, "127.0.0.70") as attacker:
        for i in range(8):  # distinct names: no account lock gets in the way
            assert "wrong user name" in login(attacker, f"guess{i}", "wrong").text
        for _ in range(3):
            throttled = login(attacker, "ann")  # the right password does not help
            assert throttled.status_code == 429
            assert 1 <= int(throttled.headers["retry-after"]) <= 15 * 60
            assert "from this address" in throttled.text
    with browser(guarded, "127.0.0.71") as other:
        assert login(other, "ann").status_code == 303
    assert own_events(guarded, "dashboard.login")  # delivered after the throttle event
    recorded = own_events(guarded, "dashboard.login_throttled")
    assert len(recorded) == 1 and recorded[0]["data"]["address"] == "127.0.0.70"
    assert locked_until(guarded, "ann") is None  # throttled tries were not counted on ann


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("database", ["sqlite"])
def test_forty_parallel_logins_hash_two_at_a_time(tmp_path: Path, database: str) -> None:
    """Old code: 40 parallel logins with unknown names ran 40 argon2 hashes (64 MiB each) at
    once, 3.3 GB resident. Now hashing holds at most 2 x 64 MiB: the collector's peak
    resident memory grows by far less than 40 hashes would take, every login is answered
    (wrong password, or 503 with Retry-After when it waited too long for a slot), and
    /healthz is served meanwhile."""
    collector = CollectorProcess(tmp_path, dashboard=DashboardSettings(
        login_wait_seconds=2.0, address_failures=1000))
    collector.start()
    try:
        assert collector.proc is not None
        with browser(collector) as warm:  # the first login's allocations are the baseline
            login(warm, "nobody", "wrong")
        before = peak_rss_kib(collector.proc.pid)
        health: list[int] = []

        def probe() -> None:
            with browser(collector, "127.0.0.200") as ops:
                health.append(ops.get("/healthz").status_code)

        prober = threading.Timer(0.5, probe)
        prober.start()
        answers = burst(collector, [(f"nobody{i}", "wrong") for i in range(40)], 100)
        prober.join()
        grown_mib = (peak_rss_kib(collector.proc.pid) - before) / 1024
    finally:
        collector.stop()
    assert health == [200]
    assert {r.status_code for r in answers} <= {200, 503}
    assert all(r.headers.get("retry-after") for r in answers if r.status_code == 503)
    assert any(r.status_code == 200 for r in answers)
    # 1 hashing slot: 64 MiB; 40 at once would be 2.5 GiB. Generous room for the rest.
    assert grown_mib < 512, f"peak resident memory grew {grown_mib:.0f} MiB"
