"""The notifications' decisions (notify_rules), their formats (notify_format) and their config
(notify_config through the project's loader): pure, no receiver, no clock but the tests'."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from floor_agent.collector import notify_format as fmt
from floor_agent.collector import notify_rules as rules
from floor_agent.collector.config import CollectorConfig
from floor_agent.collector.notify_config import NotificationSettings
from floor_agent.config import load_role
from floor_agent.config.loader import ConfigError
from floor_agent.protocol.event import utc_timestamp
from floor_agent.roles.config import check_file

CHANNELS: dict[str, Any] = {
    "mail": {"type": "email", "host": "mail.example", "username": "fa",
             "password": {"env": "SMTP_PASSWORD"}, "from_address": "fa@example",
             "to": ["security@example"]},
    "hook": {"type": "webhook", "url": "https://hooks.example/fa",
             "hmac_key": {"file": "/etc/floor-agent/hook.key"}},
    "siem": {"type": "syslog", "host": "siem.example", "format": "cef"},
}


def settings(**extra: Any) -> NotificationSettings:
    return NotificationSettings.model_validate({"channels": CHANNELS, **extra})


def alert(id_: int = 1, kind: str = "door.forced", severity: str = "critical",
          agent: str | None = "door-a-1", created: datetime | None = None,
          detail: str = "door front forced open") -> rules.AlertFacts:
    return rules.AlertFacts(id_, kind, severity, agent, detail,
                            utc_timestamp(created or datetime(2026, 12, 7, 3, tzinfo=UTC)))


# a Monday, 03:00 in Berlin (02:00 UTC)
NIGHT = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
DAY = datetime(2026, 12, 7, 11, 0, tzinfo=UTC)


def test_routes_by_kind_severity_agent_site_and_time_of_day() -> None:
    s = settings(timezone="Europe/Berlin",
                 sites={"hall-a": ["door-a-*", "cam-a-*"], "hall-b": ["door-b-*"]},
                 routes=[
                     {"name": "doors at night", "kinds": ["door.*"], "min_severity": "warning",
                      "hours": "22:00-06:00", "to": ["mail", "hook"]},
                     {"name": "hall b", "sites": ["hall-b"], "to": ["hook"]},
                     {"name": "ws-7", "agents": ["ws-7"], "min_severity": "error",
                      "days": ["sat", "sun"], "to": ["mail"]},
                     {"name": "everything to the SIEM", "to": ["siem"]},
                 ])
    assert rules.channels_for(alert(), s, NIGHT) == ["mail", "hook", "siem"]
    assert rules.channels_for(alert(), s, DAY) == ["siem"]  # not at night: only the SIEM
    assert rules.channels_for(alert(severity="notice"), s, NIGHT) == ["siem"]  # too mild
    assert rules.channels_for(alert(kind="usb.blocked"), s, NIGHT) == ["siem"]  # not a door
    assert rules.channels_for(alert(agent="door-b-2"), s, DAY) == ["hook", "siem"]  # site
    ws7 = alert(agent="ws-7", kind="usb.blocked", severity="error")
    assert rules.channels_for(ws7, s, DAY) == ["siem"]  # a Monday
    assert rules.channels_for(ws7, s, DAY + timedelta(days=5)) == ["mail", "siem"]  # Saturday
    assert rules.channels_for(alert(agent=None), s, DAY) == ["siem"]  # noise: no agent, no site


def test_time_of_day_is_the_alerts_not_the_planners() -> None:
    """Planned at 11:00 (after a restart), an alert raised at 03:00 still goes the night way."""
    s = settings(timezone="Europe/Berlin", routes=[
        {"name": "night", "hours": "22:00-06:00", "to": ["mail"]},
        {"name": "day", "hours": "06:00-22:00", "to": ["hook"]}])
    plan = rules.plan_alerts([alert(created=NIGHT)], s, DAY, {}, "w")
    assert [d.channel for d in plan.drafts] == ["mail"]


def test_a_stop_route_ends_the_walk_and_hour_ranges_hold_at_their_edges() -> None:
    s = settings(routes=[{"name": "critical", "min_severity": "critical", "to": ["hook"],
                          "stop": True},
                         {"name": "rest", "to": ["siem"]}])
    assert rules.channels_for(alert(), s, DAY) == ["hook"]
    assert rules.channels_for(alert(severity="warning"), s, DAY) == ["siem"]
    h = "22:00-06:00"
    assert [rules.within_hours(h, t) for t in (
        datetime(1, 1, 1, 22).time(), datetime(1, 1, 1, 5, 59).time(),
        datetime(1, 1, 1, 6).time(), datetime(1, 1, 1, 12).time())] == [True, True, False, False]
    assert rules.within_hours("08:00-24:00", datetime(1, 1, 1, 23, 59, 59).time())
    assert not rules.within_hours("08:00-17:00", datetime(1, 1, 1, 17).time())


def test_a_flood_is_folded_past_max_per_window_and_becomes_one_digest() -> None:
    s = settings(routes=[{"name": "all", "to": ["hook", "mail"]}],
                 digest={"window_seconds": 300, "max_per_window": 3})
    now = datetime(2026, 12, 7, 3, 1, 10, tzinfo=UTC)
    window = rules.window_of(now, 300)
    assert window == datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    flood = [alert(i, kind="cctv.tamper", agent="cam-1") for i in range(1, 74)]
    plan = rules.plan_alerts(flood, s, now, {"mail": 2}, utc_timestamp(window))
    hook = [d for d in plan.drafts if d.channel == "hook"]
    mail = [d for d in plan.drafts if d.channel == "mail"]
    assert [d.state for d in hook[:4]] == ["pending"] * 3 + ["folded"]
    assert [d.state for d in mail[:2]] == ["pending", "folded"]  # 2 already this window
    assert sum(d.state == "folded" for d in hook) == 70
    assert {d.digest_window for d in hook if d.state == "folded"} == {utc_timestamp(window)}
    assert plan.routed == 73
    assert len({d.dedupe for d in plan.drafts}) == len(plan.drafts) == 146

    assert not rules.window_closed(window, now, 300)
    assert rules.window_closed(window, window + timedelta(seconds=300), 300)
    digest = rules.plan_digest("hook", utc_timestamp(window),
                               [d.payload for d in hook if d.state == "folded"])
    assert digest.dedupe == f"digest:hook:{utc_timestamp(window)}"
    assert digest.payload["digest"]["count"] == 70
    assert digest.payload["digest"]["kinds"] == {"cctv.tamper": 70}
    assert digest.payload["digest"]["severity"] == "critical"
    doc = fmt.document(9, "digest", digest.payload, utc_timestamp(now))
    assert fmt.headline(doc) == "70 alerts folded (cctv.tamper x70)"


def test_an_unacknowledged_critical_alert_escalates_once_after_n_minutes() -> None:
    s = settings(escalation={"after_minutes": 15, "to": ["mail", "hook"]})
    raised = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    open_ = [alert(1, created=raised), alert(2, created=raised + timedelta(minutes=10))]
    assert rules.escalations_due(open_, set(), raised + timedelta(minutes=14, seconds=59),
                                 15) == []
    due = rules.escalations_due(open_, set(), raised + timedelta(minutes=15), 15)
    assert [a.id for a in due] == [1]
    assert rules.escalations_due(open_, {1}, raised + timedelta(minutes=30), 15) == [open_[1]]
    drafts = rules.plan_escalations(due, s, raised + timedelta(minutes=16))
    assert [(d.dedupe, d.kind) for d in drafts] == [("escalation:1:mail", "escalation"),
                                                    ("escalation:1:hook", "escalation")]
    doc = fmt.document(5, "escalation", drafts[0].payload, "t")
    assert fmt.headline(doc).startswith("ESCALATED, unacknowledged for 16 min: CRITICAL "
                                        "door.forced on door-a-1")


def test_rfc5424_and_cef_escape_what_their_grammars_reserve() -> None:
    a = alert(detail='a "quoted" ] \\ | = detail\nsecond line', agent="door-a-1")
    doc = fmt.document(42, "alert", {"alert": a.document("hall-a")}, "t")
    message = fmt.rfc5424(doc, 10, "collector 1", "2026-12-07T03:00:00.000000Z").decode()
    assert message.startswith("<82>1 2026-12-07T03:00:00.000000Z collector1 floor-agent - "
                              'alert [floor@32473 notification="42" type="alert" id="1" '
                              'kind="door.forced" severity="critical" agent_id="door-a-1" '
                              'site="hall-a" created_at="')  # 10 * 8 + 2 (critical)
    line = fmt.cef(doc)
    assert line.startswith("CEF:0|floor-agent|floor-agent|0.1.0|door.forced|CRITICAL "
                           "door.forced on door-a-1 at hall-a|10|")
    assert 'msg=a "quoted" ] \\\\ | \\= detail\\nsecond line' in line
    assert "dvchost=door-a-1" in line and "cs1=1" in line and "cs2=42" in line
    assert fmt.octet_counted(b"abc") == b"3 abc"


def test_the_hmac_signature_binds_the_time_and_the_body() -> None:
    body = fmt.body({"id": 1})
    sig = fmt.signature(b"k", 1700000000, body)
    assert fmt.verify_signature(b"k", "1700000000", body, sig)
    assert not fmt.verify_signature(b"k", "1700000001", body, sig)
    assert not fmt.verify_signature(b"k", "1700000000", body + b" ", sig)
    assert not fmt.verify_signature(b"other", "1700000000", body, sig)


BAD_CONFIGS = [
    ("""        - name: night
          to: [pagr]
""", "routes.0.to.0: unknown channel 'pagr'; did you mean 'pager'? (got 'pagr')", "pagr"),
    ("""        - name: night
          hours: "22:00-6:00"
          to: [pager]
""", 'expected a local time range "HH:MM-HH:MM"', "hours:"),
    ("""        - name: night
          min_severty: critical
          to: [pager]
""", "unknown key 'min_severty'; did you mean 'min_severity'?", "min_severty"),
    ("""        - name: night
          min_severity: critcal
          to: [pager]
""", "(got 'critcal'); did you mean 'critical'?", "min_severity"),
]


@pytest.mark.parametrize(("routes", "message", "line_of"), BAD_CONFIGS)
def test_a_malformed_routing_config_is_named_by_file_and_line(
        tmp_path: Path, routes: str, message: str, line_of: str) -> None:
    text = f"""role: collector
collector:
  notifications:
    timezone: Europe/Berlin
    channels:
      pager:
        type: webhook
        url: https://hooks.example/pager
        hmac_key: {{env: PAGER_KEY}}
    routes:
{routes}"""
    path = tmp_path / "collector.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_role(path, CollectorConfig)
    line = next(n for n, content in enumerate(text.splitlines(), 1) if line_of in content)
    assert str(caught.value).startswith(f"{path}:{line}: collector.notifications"), \
        str(caught.value)
    assert message in str(caught.value)


def test_channel_and_secret_mistakes_are_named(tmp_path: Path) -> None:
    path = tmp_path / "collector.yaml"
    path.write_text("""role: collector
collector:
  notifications:
    timezone: Mars/Olympus
    channels:
      mail:
        type: email
        host: mail.example
        username: fa
        password: {file: /etc/fa/smtp.pass, env: SMTP_PASSWORD}
        from_address: fa@example
        to: [security@example]
""")
    with pytest.raises(ConfigError) as caught:
        load_role(path, CollectorConfig)
    text = str(caught.value)
    assert f"{path}:4: collector.notifications.timezone: unknown time zone" in text
    assert "give exactly one of file: or env:" in text
    assert "smtp.pass" not in text.split("give exactly")[1]  # nothing of a secret echoed


def test_the_documented_collector_yaml_loads_with_its_notifications() -> None:
    config = load_role(Path(__file__).parent.parent / "config" / "collector.yaml",
                       CollectorConfig)
    assert config.collector.notifications.channels == {}  # off until an admin adds one


def test_the_example_in_collector_yaml_is_a_valid_routing_config(tmp_path: Path) -> None:
    lines = (Path(__file__).parent.parent / "config" / "collector.yaml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "# --- example" in line)
    end = next(i for i, line in enumerate(lines) if "# --- end of example" in line)
    example = "\n".join(line.replace("# ", "", 1)[4:] for line in lines[start + 1:end])
    path = tmp_path / "collector.yaml"
    path.write_text("role: collector\ncollector:\n  notifications:\n"
                    + "\n".join("    " + line for line in example.splitlines()) + "\n")
    notifications = load_role(path, CollectorConfig).collector.notifications
    assert list(notifications.channels) == ["security-mail", "pager", "siem"]
    summary = check_file(path)
    assert ("notifications to security-mail (email), pager (webhook), siem (syslog) by 3 "
            "route(s), times in UTC, more than 10 per 300 s folded into a digest;") in summary
    assert "notifications off (no channels)" in check_file(
        Path(__file__).parent.parent / "config" / "collector.yaml")
    assert [r.name for r in notifications.routes] == ["doors at night", "hall A critical",
                                                      "everything to the SIEM"]
