"""The per-process login limits (dashboard/login_limits.py) and the hashing gate (passwords.GATE):
windows per address, IPv6 counted per /64, a bounded table, refunds; a saturated gate answers
'busy' (503, Retry-After) and counts nothing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_web_support import WebApp

from floor_agent.dashboard import login_limits, passwords, user_admin
from floor_agent.dashboard.login_limits import AddressThrottle, Window, address_key, admit
from floor_agent.protocol.event import utc_timestamp


def test_a_window_admits_limit_attempts_then_says_how_long_to_wait() -> None:
    window = None
    for _ in range(3):
        window, retry = admit(window, 100.0, 3, 60)
        assert retry == 0
    window, retry = admit(window, 130.0, 3, 60)
    assert retry == 30 and window.refused and window.attempts == 3
    fresh, retry = admit(window, 160.0, 3, 60)  # the window is over: a new one
    assert retry == 0 and fresh == Window(160.0, 1)


def test_ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:10.0.0.7") == "10.0.0.7" == address_key("10.0.0.7")
    assert address_key(None) == "unknown"


def test_refusals_are_recorded_once_per_window_and_refunds_give_attempts_back() -> None:
    throttle = AddressThrottle(2, 60)
    first = throttle.begin("127.0.0.9", 0.0)
    throttle.begin("127.0.0.9", 1.0)
    throttle.refund(first)  # a success: not a failure
    assert throttle.begin("127.0.0.9", 2.0).retry_after == 0
    refusals = [throttle.begin("127.0.0.9", 3.0 + i) for i in range(3)]
    assert [v.first_refusal for v in refusals] == [True, False, False]
    assert all(v.retry_after > 0 for v in refusals)
    assert throttle.begin("127.0.0.10", 3.0).retry_after == 0  # another address


def test_past_the_table_size_new_addresses_share_one_window(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """Spraying from many addresses cannot grow memory or reset anyone's count."""
    monkeypatch.setattr(login_limits, "MAX_ADDRESSES", 3)
    throttle = AddressThrottle(2, 60)
    for i in range(3):
        throttle.begin(f"127.0.1.{i}", 0.0)
    verdicts = [throttle.begin(f"127.0.2.{i}", 1.0) for i in range(3)]
    assert {v.key for v in verdicts} == {login_limits.OVERFLOW}
    assert [v.retry_after == 0 for v in verdicts] == [True, True, False]
    assert throttle.begin("127.0.3.1", 61.0).key == "127.0.3.1"  # expired windows swept


@contextlib.contextmanager
def gate_taken() -> Iterator[None]:
    """Every hashing slot of the process held, as by logins in flight."""
    with contextlib.ExitStack() as stack:
        for _ in range(passwords.HASH_SLOTS):
            stack.enter_context(passwords.GATE.slot(1))
        yield


def test_a_saturated_gate_is_busy_not_a_queue_and_not_a_500(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "HASH_WAIT_SECONDS", 0.1)
    web = WebApp(tmp_path, login_wait_seconds=0.2, address_failures=1)
    try:
        web.add_user("ann", "viewer")
        client = web.client()
        with gate_taken():
            with pytest.raises(passwords.HashBusy):
                passwords.verify_password(None, "x", wait=0.05)
            busy = web.login(client, "ann")
            assert busy.status_code == 503 and int(busy.headers["retry-after"]) > 0
            with pytest.raises(user_admin.UserError, match="try again"):
                user_admin.create(web.store, web.own, "bob", "viewer", "cli",
                                  utc_timestamp(web.now))
        assert web.store.get_user("ann")["failures"] == 0  # nothing was counted
        # the address was refunded: its single allowed failure is still there
        assert "wrong user name" in web.login(client, "ann", "wrong").text
        assert web.login(client, "ann").status_code == 429
    finally:
        web.close()


def test_password_hashing_runs_at_a_lower_cpu_priority() -> None:
    """A flood of logins takes what ingest leaves of the CPU: the hashing threads are niced."""
    import os
    import threading

    from floor_agent.dashboard import passwords

    assert not passwords.verify_password(None, "not the password")
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    hashing = [t for t in threading.enumerate() if t.name.startswith("argon2")]
    assert hashing
    for thread in hashing:
        assert thread.native_id is not None
        assert os.getpriority(os.PRIO_PROCESS, thread.native_id) == min(
            19, mine + passwords.HASH_NICE)
