"""Live feeds end with their session, against a real collector process (SQLite and
PostgreSQL): logout, a user disabled from the CLI or from another admin's session, and a
role that loses the permission each end an open /events/stream, /alerts/stream and
/overview/stream within seconds. Old code: the feeds kept streaming after all of these.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
from collector_process import CollectorProcess
from dashboard_clients import add_user, browser, csrf_of, login
from test_web_support import WebApp

from floor_agent.dashboard import auth, live, sessions
from floor_agent.protocol.event import utc_timestamp

STREAMS = ("/events/stream", "/alerts/stream", "/overview/stream")
# live.RECHECK_SECONDS is 2 s; the rest is room for a loaded machine. Old code: a feed only
# ever ended with its connection, so none of them ends within this.
ENDS_WITHIN = 12 * live.RECHECK_SECONDS


class OpenFeed:
    """One stream read to its end in a thread; `ended` is set when the server closes it."""

    def __init__(self, client: httpx.Client, path: str) -> None:
        self.ended = threading.Event()
        self.opened = threading.Event()
        self.status: int | None = None
        self.thread = threading.Thread(target=self._read, args=(client, path), daemon=True)
        self.thread.start()
        assert self.opened.wait(30), f"{path} did not open"
        assert self.status == 200, f"{path}: {self.status}"

    def _read(self, client: httpx.Client, path: str) -> None:
        try:
            with client.stream("GET", path, timeout=httpx.Timeout(10, read=120)) as response:
                self.status = response.status_code
                lines: Iterator[str] = response.iter_lines()
                next(lines)  # "retry: ..." : subscribed
                self.opened.set()
                for _ in lines:
                    pass
        except httpx.HTTPError:
            pass
        finally:
            self.opened.set()
            self.ended.set()


def ann_session(collector: CollectorProcess) -> tuple[httpx.Client, list[OpenFeed]]:
    """ann (a viewer) logged in, and her three feeds open, each on its own connection."""
    add_user(collector, "ann", "viewer")
    client = browser(collector)
    assert login(client, "ann").status_code == 303
    feeds = []
    for path in STREAMS:
        feed_client = browser(collector)
        feed_client.cookies = client.cookies
        feeds.append(OpenFeed(feed_client, path))
    return client, feeds


def assert_all_end(feeds: list[OpenFeed]) -> None:
    for path, feed in zip(STREAMS, feeds, strict=True):
        assert feed.ended.wait(ENDS_WITHIN), f"{path} still streaming"


def assert_still_open(feeds: list[OpenFeed]) -> None:
    """A control: with the session intact, the feeds stay open past the re-check period."""
    time.sleep(1.5 * live.RECHECK_SECONDS)
    assert not any(feed.ended.is_set() for feed in feeds)


def test_logout_ends_the_open_feeds(collector: CollectorProcess) -> None:
    client, feeds = ann_session(collector)
    assert_still_open(feeds)
    page = client.get("/")
    assert client.post("/logout", data={"csrf_token": csrf_of(page.text)},
                       follow_redirects=False).status_code == 303
    assert_all_end(feeds)
    with browser(collector) as stranger:
        stranger.cookies = client.cookies
        assert stranger.get("/events/stream").status_code == 401


def test_a_user_disabled_from_the_cli_loses_the_open_feeds(collector: CollectorProcess) -> None:
    _, feeds = ann_session(collector)
    assert_still_open(feeds)
    subprocess.run([sys.executable, "-m", "floor_agent.cli", "collector", "user", "disable",
                    "--username", "ann", "--config", str(collector.config_path)],
                   check=True, capture_output=True, timeout=60)
    assert_all_end(feeds)


def test_a_user_disabled_from_another_admin_session_loses_the_open_feeds(
        collector: CollectorProcess) -> None:
    _, feeds = ann_session(collector)
    add_user(collector, "root", "admin")
    with browser(collector) as admin:
        assert login(admin, "root").status_code == 303
        page = admin.get("/admin/users")
        answer = admin.post("/admin/users/ann/disable", data={"csrf_token": csrf_of(page.text)})
        assert answer.status_code == 200 and "ann disabled" in answer.text
    assert_all_end(feeds)


def test_a_session_stops_allowing_what_its_role_lost(tmp_path: Path) -> None:
    """What the feeds re-check: a role changed under an open session takes effect at once
    (every role reads today, so a demotion is seen on `ack`)."""
    web = WebApp(tmp_path)
    try:
        client = web.logged_in("ann", "viewer")
        session = sessions.id_hash(client.cookies["floor_session"])
        dash = web.app.state.dashboard
        assert auth.session_allows(dash, session, "ack")
        assert not auth.session_allows(dash, session, "users")
        web.store.update_user("ann", utc_timestamp(web.now), role="auditor")
        assert not auth.session_allows(dash, session, "ack")
        assert auth.session_allows(dash, session, "read")
        web.now += timedelta(minutes=31)  # idle: an open feed is no activity
        assert not auth.session_allows(dash, session, "read")
    finally:
        web.close()
