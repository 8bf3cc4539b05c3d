"""Notifications end to end in one process: a real store (SQLite, and PostgreSQL where the
outbox's SQL is at stake), the real senders, real receivers on loopback (SMTP with STARTTLS and
AUTH, a webhook receiver checking the HMAC, Debian's rsyslogd over TLS), the trail through a
real Spool, and the tests' own clock (escalation and digests without waiting)."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from audit_events import AuditRecorder
from notify_receivers import Certs, Rsyslog, SmtpReceiver, WebhookReceiver, free_port, wait_until
from postgres_server import PostgresServer, postgres_server  # noqa: F401  (fixture)

from floor_agent import cli
from floor_agent.collector import notify_format as fmt
from floor_agent.collector.alerts import acknowledge
from floor_agent.collector.config import CollectorConfig, CollectorSection
from floor_agent.collector.notify import Notifier
from floor_agent.collector.notify_config import NotificationSettings
from floor_agent.collector.notify_senders import SecretError, make_senders
from floor_agent.protocol.event import utc_timestamp
from floor_agent.store import open_store
from floor_agent.store.interface import Store
from floor_agent.store.records import AlertDraft, NotificationDraft

HOOK_KEY = b"hook-key-0123456789abcdef"
SMTP_PASSWORD = "s3cret-smtp-pw"


class Trail(AuditRecorder):
    """The collector's own trail (OwnAudit) over a real Spool."""

    def emit(self, kind: str, subject: str, severity: str = "info", **data: Any) -> Any:
        return self(kind, subject, severity, **data)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 7, 3, 0, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/collector.db"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.new_database()
    store = open_store(url)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = open_store(f"sqlite:///{tmp_path}/collector.db")
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def trail(tmp_path: Path) -> Iterator[Trail]:
    (tmp_path / "trail").mkdir()
    recorder = Trail(tmp_path / "trail", "collector-test")
    try:
        yield recorder
    finally:
        recorder.close()


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return Certs.make(tmp_path / "certs")


@pytest.fixture
def hook_key_file(tmp_path: Path) -> Path:
    path = tmp_path / "hook.key"
    path.write_bytes(HOOK_KEY + b"\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(HOOK_KEY)
    try:
        yield receiver
    finally:
        receiver.stop()


def webhook_channel(receiver: WebhookReceiver, key_file: Path) -> dict[str, Any]:
    return {"type": "webhook", "url": receiver.url, "hmac_key": {"file": str(key_file)},
            "timeout_seconds": 2.0}


def notifier(store: Store, trail: Trail, clock: Clock, **config: Any) -> Notifier:
    config.setdefault("retry", {"initial_seconds": 5.0, "max_seconds": 60.0})
    settings = NotificationSettings.model_validate(config)
    return Notifier(store, settings, trail, make_senders(settings), clock)


def raise_alerts(store: Store, clock: Clock, n: int = 1, kind: str = "door.forced",
                 severity: str = "critical", agent: str = "door-a-1") -> list[int]:
    before = {a["id"] for a in store.list_alerts(limit=10_000)}
    store.add_alerts([AlertDraft(kind, severity, agent, f"{kind}: door {i}", subject=f"door {i}")
                      for i in range(n)], utc_timestamp(clock.now))
    return sorted(a["id"] for a in store.list_alerts(limit=10_000) if a["id"] not in before)


def test_email_goes_through_starttls_and_auth(store: Store, trail: Trail, certs: Certs,
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    smtp = SmtpReceiver(certs, "floor-agent", SMTP_PASSWORD)
    smtp.start()
    try:
        password = tmp_path / "smtp.pass"
        password.write_text(SMTP_PASSWORD + "\n")
        password.chmod(0o600)
        channel = {"type": "email", "host": "127.0.0.1", "port": smtp.port,
                   "username": "floor-agent", "password": {"file": str(password)},
                   "from_address": "floor-agent@floor.example", "to": ["security@floor.example"],
                   "ca_file": str(certs.files.ca_cert), "timeout_seconds": 5.0}
        clock = Clock()
        n = notifier(store, trail, clock, channels={"mail": channel},
                     routes=[{"name": "all", "to": ["mail"]}])
        (alert_id,) = raise_alerts(store, clock)
        n.tick()
        (mail,) = smtp.mails
        assert mail.tls and mail.login == "floor-agent"
        assert mail.rcpt_tos == ["security@floor.example"]
        assert mail.message["Subject"] == "[floor-agent] CRITICAL door.forced on door-a-1"
        (row,) = store.list_notifications()
        assert mail.message["X-Floor-Notification"] == str(row["id"])
        assert mail.message["Message-ID"] == f"<notification-{row['id']}@floor.example>"
        text = mail.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert f"alert #{alert_id}: critical door.forced" in text
        assert row["state"] == "sent" and row["attempts"] == 1
        (sent,) = trail.of("collector.notification_sent")
        assert sent["channel"] == "mail" and sent["alert_id"] == alert_id

        # a wrong password (from the environment this time): refused, kept, on the trail
        monkeypatch.setenv("FLOOR_TEST_SMTP", "not-the-password")
        channel["password"] = {"env": "FLOOR_TEST_SMTP"}
        wrong = notifier(store, trail, clock, channels={"mail": channel},
                         routes=[{"name": "all", "to": ["mail"]}])
        raise_alerts(store, clock, kind="usb.blocked", agent="ws-1")
        wrong.tick()
        assert len(smtp.mails) == 1 and smtp.refused_logins >= 1  # smtplib tries PLAIN, LOGIN
        (failed,) = trail.of("collector.notification_failed")
        assert failed["attempts"] == 1 and "535" in failed["error"]
        assert "not-the-password" not in repr(trail.items)
        assert SMTP_PASSWORD not in repr(trail.items)
        assert [r["state"] for r in store.list_notifications()] == ["sent", "pending"]
    finally:
        smtp.stop()


def test_a_server_without_starttls_gets_no_password(store: Store, trail: Trail,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The password never crosses in clear: a plain SMTP server is a failed delivery."""
    seen: list[bytes] = []

    class Plain(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            self.wfile.write(b"220 plain ESMTP\r\n")
            while line := self.rfile.readline():
                seen.append(line)
                if line.upper().startswith(b"EHLO"):
                    self.wfile.write(b"250-plain\r\n250 AUTH PLAIN LOGIN\r\n")
                elif line.upper().startswith(b"QUIT"):
                    self.wfile.write(b"221 bye\r\n")
                    return
                else:
                    self.wfile.write(b"502 no\r\n")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Plain)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("FLOOR_TEST_SMTP_PLAIN", SMTP_PASSWORD)
        clock = Clock()
        n = notifier(store, trail, clock, channels={"mail": {
            "type": "email", "host": "127.0.0.1", "port": server.server_address[1],
            "username": "u", "password": {"env": "FLOOR_TEST_SMTP_PLAIN"},
            "from_address": "a@b.example", "to": ["c@d.example"]}},
            routes=[{"name": "all", "to": ["mail"]}])
        raise_alerts(store, clock)
        n.tick()
        (failed,) = trail.of("collector.notification_failed")
        assert "STARTTLS" in failed["error"]
        assert not any(b"AUTH" in line for line in seen)
    finally:
        server.shutdown()
        server.server_close()


def test_webhook_receiver_down_then_up_loses_nothing(store: Store, trail: Trail,
                                                    webhook: WebhookReceiver,
                                                    hook_key_file: Path) -> None:
    clock = Clock()
    n = notifier(store, trail, clock, channels={"hook": webhook_channel(webhook, hook_key_file)},
                 routes=[{"name": "all", "to": ["hook"]}])
    ids = raise_alerts(store, clock, 5)
    n.tick()  # down: the first attempt fails, the channel waits its backoff
    assert webhook.hooks == []
    (failed,) = trail.of("collector.notification_failed")
    assert failed["attempts"] == 1 and failed["channel"] == "hook"
    assert [r["state"] for r in store.list_notifications()] == ["pending"] * 5

    webhook.start()
    clock.advance(seconds=4)
    n.tick()  # still within the backoff (5 s): nothing tried
    assert webhook.hooks == []
    clock.advance(seconds=1)
    n.tick()
    assert sorted(h.doc["alert"]["id"] for h in webhook.hooks) == ids
    assert all(h.verified for h in webhook.hooks)
    assert len(set(webhook.ids())) == 5
    assert [r["state"] for r in store.list_notifications()] == ["sent"] * 5
    assert len(trail.of("collector.notification_sent")) == 5
    n.tick()
    assert len(webhook.hooks) == 5  # nothing twice

    # a receiver that answers 500 is a failure too; the backoff doubles per failure in a row
    webhook.status = 500
    raise_alerts(store, clock, 1, kind="usb.blocked", agent="ws-2")
    n.tick()
    clock.advance(seconds=5)
    n.tick()
    (row,) = store.list_notifications(state="pending")
    assert row["attempts"] == 2 and row["last_error"] == "webhook: HTTP 500"
    assert datetime.fromisoformat(row["next_at"]) == clock.now + timedelta(seconds=10)
    assert [f["attempts"] for f in trail.of("collector.notification_failed")] == [1, 1, 2]


def test_the_receiver_rejects_a_forged_signature(webhook: WebhookReceiver) -> None:
    webhook.start()
    body = fmt.body({"id": 1})
    good = fmt.signature(HOOK_KEY, 1700000000, body)
    assert httpx.post(webhook.url, content=body, headers={
        "X-Floor-Timestamp": "1700000000", "X-Floor-Signature": good}).status_code == 200
    assert httpx.post(webhook.url, content=body + b" ", headers={
        "X-Floor-Timestamp": "1700000000", "X-Floor-Signature": good}).status_code == 401
    assert httpx.post(webhook.url, content=body, headers={
        "X-Floor-Timestamp": "1700000000",
        "X-Floor-Signature": fmt.signature(b"guessed", 1700000000, body)}).status_code == 401


def test_syslog_rfc5424_and_cef_reach_rsyslog_over_tls(store: Store, trail: Trail,
                                                      certs: Certs, tmp_path: Path) -> None:
    rsyslog = Rsyslog(tmp_path / "rsyslog", certs)
    rsyslog.start()
    try:
        base = {"type": "syslog", "host": "127.0.0.1", "port": rsyslog.port,
                "ca_file": str(certs.files.ca_cert), "timeout_seconds": 5.0}
        clock = Clock()
        n = notifier(store, trail, clock,
                     channels={"plain": base | {"format": "rfc5424"},
                               "siem": base | {"format": "cef", "facility": 16}},
                     routes=[{"name": "all", "to": ["plain", "siem"]}])
        (alert_id,) = raise_alerts(store, clock)
        n.tick()
        lines = wait_until(lambda: len(rsyslog.lines()) >= 2 and rsyslog.lines())
        by_facility = {line.split("|")[2]: line for line in lines}
        plain, cef = by_facility["10"], by_facility["16"]  # authpriv, local0
        _, severity, _, app, msgid, sd, msg = plain.split("|", 6)
        assert (severity, app, msgid) == ("crit", "floor-agent", "alert")
        assert f'id="{alert_id}"' in sd and 'kind="door.forced"' in sd
        assert 'agent_id="door-a-1"' in sd
        assert msg.strip() == "CRITICAL door.forced on door-a-1"
        assert cef.split("|", 6)[6].strip().startswith(
            "CEF:0|floor-agent|floor-agent|0.1.0|door.forced|CRITICAL door.forced on "
            "door-a-1|10|")
        assert f"cs1={alert_id}" in cef
        assert len(trail.of("collector.notification_sent")) == 2
    finally:
        rsyslog.stop()

    # rsyslog down: a failure, kept for later
    raise_alerts(store, clock, kind="usb.blocked", agent="ws-1")
    n.tick()
    assert {f["channel"] for f in trail.of("collector.notification_failed")} == {"plain", "siem"}


def test_syslog_refuses_a_receiver_of_another_ca_and_speaks_plain_tcp_when_told(
        store: Store, trail: Trail, certs: Certs, tmp_path: Path) -> None:
    tls_syslog = Rsyslog(tmp_path / "tls", certs)
    plain_syslog = Rsyslog(tmp_path / "plain", certs, tls=False)
    tls_syslog.start()
    plain_syslog.start()
    try:
        other = Certs.make(tmp_path / "other-ca")
        clock = Clock()
        n = notifier(store, trail, clock, channels={
            "impostor": {"type": "syslog", "host": "127.0.0.1", "port": tls_syslog.port,
                         "ca_file": str(other.files.ca_cert)},
            "lan": {"type": "syslog", "host": "127.0.0.1", "port": plain_syslog.port,
                    "tls": False}},
            routes=[{"name": "all", "to": ["impostor", "lan"]}])
        raise_alerts(store, clock)
        n.tick()
        (line,) = wait_until(plain_syslog.lines)
        assert line.split("|")[4] == "alert"
        (failed,) = trail.of("collector.notification_failed")
        assert failed["channel"] == "impostor"
        assert "CERTIFICATE_VERIFY_FAILED" in failed["error"]
        assert tls_syslog.lines() == []
    finally:
        tls_syslog.stop()
        plain_syslog.stop()


def test_a_flood_is_folded_into_one_digest(any_store: Store, trail: Trail,
                                           webhook: WebhookReceiver, hook_key_file: Path
                                           ) -> None:
    webhook.start()
    clock = Clock()
    n = notifier(any_store, trail, clock,
                 channels={"hook": webhook_channel(webhook, hook_key_file)},
                 routes=[{"name": "all", "to": ["hook"]}],
                 digest={"window_seconds": 60, "max_per_window": 3})
    ids = raise_alerts(any_store, clock, 40, kind="cctv.tamper", agent="cam-1")
    n.tick()
    assert [h.doc["type"] for h in webhook.hooks] == ["alert"] * 3
    clock.advance(seconds=30)
    n.tick()
    assert len(webhook.hooks) == 3  # the window is still open
    clock.advance(seconds=30)
    n.tick()
    digest = webhook.hooks[3].doc
    assert digest["type"] == "digest" and digest["digest"]["count"] == 37
    assert digest["digest"]["kinds"] == {"cctv.tamper": 37}
    assert sorted(a["id"] for a in digest["digest"]["alerts"]) == ids[3:]
    states = [r["state"] for r in any_store.list_notifications()]
    assert states.count("digested") == 37 and states.count("sent") == 4
    n.tick()
    assert len(webhook.hooks) == 4


def test_an_unacknowledged_critical_alert_escalates(any_store: Store, trail: Trail,
                                                    webhook: WebhookReceiver,
                                                    hook_key_file: Path) -> None:
    webhook.start()
    clock = Clock()
    n = notifier(any_store, trail, clock,
                 channels={"pager": webhook_channel(webhook, hook_key_file)},
                 escalation={"after_minutes": 15, "to": ["pager"]})
    forgotten, handled = raise_alerts(any_store, clock, 2)
    raise_alerts(any_store, clock, 1, severity="warning", agent="ws-3")  # never escalates
    clock.advance(minutes=5)
    assert acknowledge(any_store, trail, handled, "alice", "checked, door closed",
                       utc_timestamp(clock.now), "test")
    clock.advance(minutes=9, seconds=59)  # 14:59 after the alerts were raised
    n.tick()
    assert webhook.hooks == []
    clock.advance(seconds=1)
    n.tick()
    (hook,) = webhook.hooks
    assert hook.doc["type"] == "escalation" and hook.doc["alert"]["id"] == forgotten
    assert hook.doc["unacknowledged_minutes"] == 15
    (escalated,) = trail.of("alert.escalated")
    assert escalated["alert_id"] == forgotten and escalated["to"] == ["pager"]
    clock.advance(minutes=30)
    n.tick()
    assert len(webhook.hooks) == 1  # once


def test_planning_is_exactly_once_whoever_plans(any_store: Store, trail: Trail,
                                                webhook: WebhookReceiver,
                                                hook_key_file: Path) -> None:
    """Two notifiers over one store (a restart, a second process): one row per alert."""
    clock = Clock()
    config = {"channels": {"hook": webhook_channel(webhook, hook_key_file)},
              "routes": [{"name": "all", "to": ["hook"]}]}
    first, second = (notifier(any_store, trail, clock, **config) for _ in range(2))
    ids = raise_alerts(any_store, clock, 3)
    first.plan(clock.now)
    second.plan(clock.now)
    assert [r["alert_id"] for r in any_store.list_notifications()] == ids
    assert any_store.unplanned_alerts() == []
    # a plan of alerts another notifier marked first is refused whole: nothing added
    late = NotificationDraft("late", "hook", "alert", {}, ids[0])
    assert not any_store.enqueue_notifications([late], utc_timestamp(clock.now), ids)
    assert [r["alert_id"] for r in any_store.list_notifications()] == ids


def test_a_secret_that_cannot_be_read_is_named_not_shown(tmp_path: Path) -> None:
    key = tmp_path / "hook.key"
    key.write_bytes(HOOK_KEY)
    key.chmod(0o644)
    settings = NotificationSettings.model_validate({"channels": {"hook": {
        "type": "webhook", "url": f"http://127.0.0.1:{free_port()}/",
        "hmac_key": {"file": str(key)}}}})
    with pytest.raises(SecretError, match=r"hook.key: readable by others \(mode 644\)") as e:
        make_senders(settings)
    assert HOOK_KEY.decode() not in str(e.value)


def test_a_receiver_that_hangs_delays_only_its_own_channel(
        store: Store, trail: Trail, webhook: WebhookReceiver, hook_key_file: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The notifier's own threads, the real clock: an SMTP server that takes the connection and
    never answers holds its channel until the timeout; the webhook goes out meanwhile."""
    webhook.start()
    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(8)  # the kernel completes the handshake; nobody ever answers
    monkeypatch.setenv("FLOOR_TEST_SMTP_HANG", "pw")
    settings = NotificationSettings.model_validate({
        "channels": {"mail": {"type": "email", "host": "127.0.0.1",
                              "port": hanging.getsockname()[1], "username": "u",
                              "password": {"env": "FLOOR_TEST_SMTP_HANG"},
                              "from_address": "a@b.example", "to": ["c@d.example"],
                              "timeout_seconds": 3.0},
                     "hook": webhook_channel(webhook, hook_key_file)},
        "routes": [{"name": "all", "to": ["mail", "hook"]}], "poll_seconds": 0.5})
    n = Notifier(store, settings, trail, make_senders(settings))
    n.start()
    try:
        real = Clock()
        real.now = datetime.now(UTC)
        started = time.monotonic()
        raise_alerts(store, real)
        n.alert_listener([], "")
        wait_until(lambda: webhook.hooks, 3.0, 0.01)
        assert time.monotonic() - started < 1.5
        (failed,) = wait_until(lambda: trail.of("collector.notification_failed"), 10.0)
        assert failed["channel"] == "mail" and "timed out" in failed["error"]
        assert time.monotonic() - started >= 3.0
    finally:
        n.stop()
        hanging.close()


def test_an_https_webhook_is_sent_only_to_the_pinned_ca(store: Store, trail: Trail,
                                                         certs: Certs, hook_key_file: Path,
                                                         tmp_path: Path) -> None:
    receiver = WebhookReceiver(HOOK_KEY, certs=certs)
    receiver.start()
    try:
        other = Certs.make(tmp_path / "other-ca")
        clock = Clock()
        channel = webhook_channel(receiver, hook_key_file)
        n = notifier(store, trail, clock,
                     channels={"good": channel | {"ca_file": str(certs.files.ca_cert)},
                               "bad": channel | {"ca_file": str(other.files.ca_cert)}},
                     routes=[{"name": "all", "to": ["good", "bad"]}])
        raise_alerts(store, clock)
        n.tick()
        (hook,) = receiver.hooks
        assert hook.verified and hook.doc["alert"]["kind"] == "door.forced"
        (failed,) = trail.of("collector.notification_failed")
        assert failed["channel"] == "bad" and "CERTIFICATE_VERIFY_FAILED" in failed["error"]
    finally:
        receiver.stop()


def test_killed_between_hand_off_and_commit_the_same_id_goes_again(
        store: Store, trail: Trail, webhook: WebhookReceiver, hook_key_file: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The outbox's guarantee, at its edge: the receiver took the notification, the process
    died before the store said sent. The restarted notifier sends it again with the same id
    (X-Floor-Notification), which is how a receiver tells a repeat from a new notification."""
    webhook.start()
    clock = Clock()
    config = {"channels": {"hook": webhook_channel(webhook, hook_key_file)},
              "routes": [{"name": "all", "to": ["hook"]}]}
    dying = notifier(store, trail, clock, **config)

    def die(notification_id: int, now: str) -> None:
        raise SystemExit("killed between the hand-off and the commit")

    monkeypatch.setattr(store, "notification_sent", die)
    raise_alerts(store, clock)
    with pytest.raises(SystemExit):
        dying.tick()
    monkeypatch.undo()
    restarted = notifier(store, trail, clock, **config)
    restarted.tick()
    assert len(webhook.hooks) == 1  # still claimed by the hand-off that died: its timeouts
    clock.advance(seconds=10 + 3 * 2.0)
    restarted.tick()
    restarted.tick()
    assert len(webhook.hooks) == 2 and len(set(webhook.ids())) == 1
    assert [r["state"] for r in store.list_notifications()] == ["sent"]


def test_sent_notifications_are_pruned_after_keep_days(any_store: Store, trail: Trail,
                                                       webhook: WebhookReceiver,
                                                       hook_key_file: Path) -> None:
    webhook.start()
    clock = Clock()
    n = notifier(any_store, trail, clock, keep_days=30,
                 channels={"hook": webhook_channel(webhook, hook_key_file),
                           "down": webhook_channel(WebhookReceiver(HOOK_KEY), hook_key_file)},
                 routes=[{"name": "all", "to": ["hook", "down"]}])
    raise_alerts(any_store, clock, 2)
    n.tick()
    assert any_store.notification_counts() == {("hook", "sent"): 2, ("down", "pending"): 2}
    clock.advance(days=30)
    assert n.prune(clock.now) == 0  # 30 days to the microsecond: kept
    clock.advance(seconds=1)
    assert n.prune(clock.now) == 2
    assert any_store.notification_counts() == {("down", "pending"): 2}  # never lost


def test_a_long_queue_is_delivered_in_one_pass_and_a_huge_digest_lists_a_part(
        store: Store, trail: Trail, webhook: WebhookReceiver, hook_key_file: Path) -> None:
    webhook.start()
    clock = Clock()
    n = notifier(store, trail, clock, channels={"hook": webhook_channel(webhook, hook_key_file)},
                 routes=[{"name": "all", "to": ["hook"]}],
                 digest={"window_seconds": 60, "max_per_window": 250})
    raise_alerts(store, clock, 500, kind="usb.blocked", agent="ws-9", severity="warning")
    n.tick()
    assert len(webhook.hooks) == 250  # more than one batch of 100, in one pass
    clock.advance(seconds=60)
    n.tick()
    digest = webhook.hooks[-1].doc["digest"]
    assert digest["count"] == 250 and len(digest["alerts"]) == 200


def test_notify_test_and_list_from_the_command_line(tmp_path: Path, webhook: WebhookReceiver,
                                                    hook_key_file: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config = CollectorConfig(collector=CollectorSection(
        state_dir=tmp_path / "state", notifications=NotificationSettings.model_validate({
            "channels": {"hook": webhook_channel(webhook, hook_key_file),
                         "down": webhook_channel(WebhookReceiver(HOOK_KEY), hook_key_file)},
            "routes": [{"name": "all", "to": ["hook", "down"]}]})))
    path = tmp_path / "collector.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    webhook.start()
    assert cli.main(["collector", "notify", "test", "--config", str(path)]) == 1
    out = capsys.readouterr().out
    assert "hook: taken by the receiver" in out
    assert "down: FAILED: webhook: " in out
    (hook,) = webhook.hooks
    assert hook.verified and hook.doc["type"] == "test" and hook.doc["id"] == 0
    assert cli.main(["collector", "notify", "test", "--channel", "hook",
                     "--config", str(path)]) == 0
    assert cli.main(["collector", "notify", "test", "--channel", "nope",
                     "--config", str(path)]) == 2
    assert "no channel 'nope'" in capsys.readouterr().err

    store = open_store(config.collector.resolved_database_url())
    try:
        store.add_alerts([AlertDraft("door.forced", "critical", "door-1", "forced")],
                         utc_timestamp())
        Notifier(store, config.collector.notifications, Trail(tmp_path / "state"),
                 clock=Clock()).tick()
    finally:
        store.close()
    assert cli.main(["collector", "notify", "list", "--config", str(path)]) == 0
    captured = capsys.readouterr()
    assert "down  alert  alert 1  pending" in captured.out and "  hook  " not in captured.out
    assert "# 1 waiting, 1 sent or digested in the outbox" in captured.err


def test_two_collectors_on_one_database_send_each_notification_once(
        any_store: Store, trail: Trail, webhook: WebhookReceiver, hook_key_file: Path) -> None:
    """Each hand-off claims its notification first: two deliverers racing over one outbox
    (threads here, two collectors on one PostgreSQL in a plant) never both send one."""
    webhook.start()
    clock = Clock()
    config = {"channels": {"hook": webhook_channel(webhook, hook_key_file)},
              "routes": [{"name": "all", "to": ["hook"]}],
              "digest": {"max_per_window": 1000}}
    first, second = (notifier(any_store, trail, clock, **config) for _ in range(2))
    raise_alerts(any_store, clock, 60)
    first.plan(clock.now)
    racers = [threading.Thread(target=n.deliver, args=(clock.now,)) for n in (first, second)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(60)
    assert len(webhook.hooks) == 60 and len(set(webhook.ids())) == 60
    assert {r["state"] for r in any_store.list_notifications()} == {"sent"}
