"""The dashboard's workstation policy pages over a real store, collector and own trail: only
admins see or change anything, every change needs its CSRF token and goes through
policy_admin (who and why on the collector's trail), refusals name the line and keep the form,
hostile text is escaped, the change log shows diffs, a blocked device becomes exactly one
exception, and the workstations page shows the version each machine enforces."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from postgres_server import PostgresServer, postgres_server  # noqa: F401  (fixture)
from test_web_support import WebApp, csrf_of

from floor_agent.collector.api_policy import PolicyServing

HASH = "A" * 42 + "E="
OFFICE = "allow with-interface match-all { 09:*:* }\nallow with-interface match-all { 03:*:* }\n"
STICK = {"id": "0781:5567", "name": "Cruzer", "manufacturer": "SanDisk", "serial": "4C53",
         "port": "1-2", "interfaces": ["08:06:50"], "hash": HASH, "parent_hash": HASH,
         "connect_type": "hotplug", "problems": [], "rule": "block (implicit)",
         "reason": "no rule allows it", "allowed_interfaces": [],
         "blocked_interfaces": ["08:06:50"], "action": "deauthorized"}
PAGES = ("/policy", "/policy/groups/office", "/policy/assignments", "/policy/changes",
         "/policy/exceptions", "/policy/blocked")
POSTS = {"/policy/groups": {"group": "office", "usb_rules": OFFICE, "netlock_allow": "",
                            "reason": "r"},
         "/policy/assignments": {"agent_id": "ws-1", "group": "office", "reason": "r"},
         "/policy/exceptions/x-1/withdraw": {"reason": "r"},
         "/policy/blocked/approve": {"event_id": "1", "scope": "agent", "reason": "r"}}


def _web(tmp_path: Path, database_url: str | None = None) -> WebApp:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    app = WebApp(tmp_path, database_url)
    app.now = datetime.now(UTC)
    app.app.state.policy = PolicyServing(Ed25519PrivateKey.generate(), "default", "collector")
    return app


@pytest.fixture
def web(tmp_path: Path) -> Iterator[WebApp]:
    app = _web(tmp_path)
    try:
        yield app
    finally:
        app.close()


def _token(client: TestClient, path: str = "/policy") -> str:
    return csrf_of(client.get(path).text)


def _post(client: TestClient, path: str, data: dict[str, str]) -> str:
    answer = client.post(path, data={"csrf_token": _token(client), **data})
    assert answer.status_code == 200, answer.text
    return answer.text


def _set_group(client: TestClient, group: str, rules: str = OFFICE, allow: str = "",
               reason: str = "ticket 1") -> str:
    return _post(client, "/policy/groups", {"group": group, "usb_rules": rules,
                                            "netlock_allow": allow, "reason": reason})


def _blocked(web: WebApp, agent: str = "ws-1", device: dict[str, object] | None = None) -> int:
    web.send(agent, [("usb.blocked", "usb 1-2", "warning", device or STICK)])
    return int(re.findall(r'name="event_id" value="(\d+)"',
                          web.logged_in_admin.get("/policy/blocked").text)[0])


def test_non_admins_get_403_on_every_policy_page_and_form(web: WebApp) -> None:
    web.agent("ws-1")
    for role in ("viewer", "auditor"):
        client = web.logged_in(f"{role[:3]}", role)
        assert 'href="/policy"' not in client.get("/").text
        token = _token(client, "/")
        for path in PAGES:
            assert client.get(path).status_code == 403, (role, path)
        for path, data in POSTS.items():
            assert client.post(path, data={"csrf_token": token, **data}).status_code == 403
    assert web.store.policy_change_number() == 0
    anonymous = web.client()
    assert anonymous.get("/policy", follow_redirects=False).status_code == 303
    admin = web.logged_in("ada", "admin")
    assert 'href="/policy"' in admin.get("/").text
    for path in PAGES[:1] + PAGES[2:]:
        answer = admin.get(path)
        assert answer.status_code == 200, path
        assert "<script>" not in answer.text and " style=" not in answer.text


def test_every_change_needs_the_csrf_token(web: WebApp) -> None:
    web.agent("ws-1")
    admin = web.logged_in("ada", "admin")
    for path, data in POSTS.items():
        assert admin.post(path, data=data).status_code == 403, path
        assert admin.post(path, data={"csrf_token": "forged", **data}).status_code == 403
    assert web.store.policy_change_number() == 0


def test_set_group_records_who_and_why_and_the_diff_shows_what_changed(web: WebApp) -> None:
    web.agent("ws-1")
    admin = web.logged_in("ada", "admin")
    page = _set_group(admin, "default", OFFICE, "- name: collector\n  addresses: [10.0.0.5]\n"
                                                "  tcp: [8443]\n", "ticket 7: the floor")
    assert "group default saved: change 1" in page
    assert web.store.policy_group("default")["netlock_allow"][0]["tcp"] == [8443]
    changed = web.own_events("policy.changed")
    assert changed[-1]["data"]["by"] == "ada" and changed[-1]["data"]["reason"] == \
        "ticket 7: the floor"
    newer = OFFICE.replace("09:*:*", "0e:*:*")
    _set_group(admin, "default", newer, '[{"name": "collector", "addresses": ["10.0.0.5"], '
                                         '"tcp": [8443, 9000]}]', "ticket 8")
    log = admin.get("/policy/changes").text
    first = log.index('data-change="2"')
    assert first < log.index('data-change="1"')
    section = log[first:log.index('data-change="1"')]
    assert '<span class="del">- allow with-interface match-all { 09:*:* }</span>' in section
    assert '<span class="add">+ allow with-interface match-all { 0e:*:* }</span>' in section
    assert re.search(r'<span class="add">\+ +- 9000</span>', section)
    assert "ticket 8" in section and "ada" in section


def test_bad_rules_show_the_parsers_line_error_and_change_nothing(web: WebApp) -> None:
    web.agent("ws-1")
    admin = web.logged_in("ada", "admin")
    bad = "allow id 1d6b:0002\nallow frobnicate\n"
    answer = admin.post("/policy/groups", data={
        "csrf_token": _token(admin), "group": "lab", "usb_rules": bad, "netlock_allow": "",
        "reason": "keep this reason"})
    assert answer.status_code == 422
    assert "usb_rules line 2" in answer.text
    assert "allow frobnicate" in answer.text and "keep this reason" in answer.text
    answer = admin.post("/policy/groups", data={
        "csrf_token": _token(admin), "group": "lab", "usb_rules": OFFICE,
        "netlock_allow": "- name: x\n  addresses: []\n  tcp: [1]\n", "reason": "r"})
    assert answer.status_code == 422 and "netlock_allow[0].addresses" in answer.text
    answer = admin.post("/policy/groups", data={
        "csrf_token": _token(admin), "group": "lab", "usb_rules": OFFICE,
        "netlock_allow": "- name: [unclosed\n", "reason": "r"})
    assert answer.status_code == 422 and "netlock_allow line" in answer.text
    answer = admin.post("/policy/groups", data={
        "csrf_token": _token(admin), "group": "lab", "usb_rules": OFFICE,
        "netlock_allow": "", "reason": "  "})
    assert answer.status_code == 422 and "reason: say why" in answer.text
    assert web.store.policy_change_number() == 0 and web.store.policy_groups() == []


def test_hostile_names_rules_and_reasons_are_escaped(web: WebApp) -> None:
    web.agent("ws-1")
    admin = web.logged_in("ada", "admin")
    evil = "<script>alert(1)</script>"
    answer = admin.post("/policy/groups", data={
        "csrf_token": _token(admin), "group": evil, "usb_rules": OFFICE, "netlock_allow": "",
        "reason": "r"})
    assert answer.status_code == 422 and evil not in answer.text
    assert html.escape(evil, quote=False) in answer.text or "&lt;script&gt;" in answer.text
    _set_group(admin, "office", f"# {evil}\n{OFFICE}", "", f"ticket {evil}")
    for path in ("/policy", "/policy/groups/office", "/policy/changes"):
        text = admin.get(path).text
        assert evil not in text and "&lt;script&gt;" in text, path
    web.send("ws-1", [("usb.blocked", "usb 1-2", "warning", {**STICK, "name": evil,
                                                             "serial": f'"{evil}'})])
    text = admin.get("/policy/blocked").text
    assert evil not in text and "&lt;script&gt;" in text
    odd = {**STICK, "hash": "D" * 42 + "E=", "interfaces": 5, "rule": None, "id": ["x"]}
    web.send("ws-1", [("usb.rejected", "usb 1-3", "warning", odd)])
    assert admin.get("/policy/blocked").text.count('data-testid="blocked-device"') == 2


def test_approve_from_a_blocked_event_makes_one_exception_and_a_new_version(
        web: WebApp) -> None:
    web.agent("ws-1")
    web.agent("ws-2")
    admin = web.logged_in("ada", "admin")
    web.logged_in_admin = admin  # type: ignore[attr-defined]
    _set_group(admin, "default")
    before = web.store.policy_inputs("ws-1", "default")["version"]
    event_id = _blocked(web)
    page = admin.get("/policy/blocked").text
    assert 'data-testid="blocked-device"' in page and "4C53" in page and HASH in page
    assert "08:06:50" in page and "block (implicit)" in page and "ws-1" in page
    answer = admin.post("/policy/blocked/approve", data={
        "csrf_token": _token(admin), "event_id": str(event_id), "scope": "agent",
        "reason": "ticket 9: the line's calibration stick", "expires_at": "2099-01-01T10:00"})
    assert answer.status_code == 200
    items = web.store.policy_exceptions()
    assert len(items) == 1
    item = items[0]
    assert item["scope"] == "agent:ws-1" and item["device"]["hash"] == HASH
    assert item["approved_by"] == "ada" and item["expires_at"].startswith("2099-01-01T10:00:00")
    after = web.store.policy_inputs("ws-1", "default")["version"]
    assert after > before
    assert f'data-testid="approved-version">{after}<' in answer.text
    assert 'data-testid="blocked-device"' not in answer.text  # covered now
    assert web.own_events("policy.exception_approved")[-1]["data"]["by"] == "ada"
    # the other workstation's attempt with the same stick is not covered by agent:ws-1
    web.send("ws-2", [("usb.blocked", "usb 1-2", "warning", STICK)])
    assert admin.get("/policy/blocked").text.count('data-testid="blocked-device"') == 1
    # withdrawn: it shows as ended, with how
    answer = admin.post(f"/policy/exceptions/{item['exception_id']}/withdraw", data={
        "csrf_token": _token(admin), "reason": "stick returned"})
    assert answer.status_code == 200 and "withdrawn" in answer.text
    assert not web.store.policy_exceptions(active_only=True)
    assert 'data-testid="ended-row"' in answer.text


def test_approve_refusals_keep_the_form_and_change_nothing(web: WebApp) -> None:
    web.agent("ws-1")
    admin = web.logged_in("ada", "admin")
    web.logged_in_admin = admin  # type: ignore[attr-defined]
    _set_group(admin, "default")
    event_id = _blocked(web)
    number = web.store.policy_change_number()
    for data, said in (({"scope": "agent", "reason": ""}, "reason: say why"),
                       ({"scope": "agent", "reason": "r", "expires_at": "soon"},
                        "not an ISO 8601 time"),
                       ({"scope": "agent", "reason": "r", "expires_at": "2001-01-01T00:00"},
                        "not in the future"),
                       ({"scope": "moon", "reason": "r"}, "scope: expected")):
        answer = admin.post("/policy/blocked/approve", data={
            "csrf_token": _token(admin), "event_id": str(event_id), **data})
        assert answer.status_code == 422 and said in answer.text, (data, answer.text[-500:])
    answer = admin.post("/policy/blocked/approve", data={
        "csrf_token": _token(admin), "event_id": "999999", "scope": "agent", "reason": "r"})
    assert answer.status_code == 422 and "event_id" in answer.text
    assert web.store.policy_change_number() == number and not web.store.policy_exceptions()


def test_assignment_moves_a_workstation_and_the_workstations_page_shows_versions(
        web: WebApp) -> None:
    web.agent("ws-1")
    web.agent("ws-2")
    admin = web.logged_in("ada", "admin")
    rows = admin.get("/workstations").text
    assert "not reported" in rows
    _set_group(admin, "default")
    _set_group(admin, "lab", OFFICE + "allow id 1d6b:0002\n")
    page = _post(admin, "/policy/assignments", {"agent_id": "ws-2", "group": "lab",
                                                "reason": "moved to the lab"})
    assert "ws-2 is now in group lab" in page
    assert web.own_events("policy.assigned")[-1]["data"]["reason"] == "moved to the lab"
    served = web.store.policy_inputs("ws-1", "default")["version"]
    web.send("ws-1", [("policy.applied", "policy", "info", {
        "source": "sync", "version": served - 1, "policy_hash": "x", "content_hash": "y",
        "group": "default", "exceptions": []})])
    web.send("ws-2", [("policy.applied", "policy", "notice", {
        "source": "bootstrap", "reason": "no policy cached yet", "version": None,
        "policy_hash": None, "content_hash": None, "group": None, "exceptions": []})])
    text = admin.get("/workstations").text
    one = text[text.index('data-agent="ws-1"'):text.index('data-agent="ws-2"')]
    assert f'data-testid="policy-enforced">{served - 1}<' in one
    assert f'data-testid="policy-served">{served}<' in one and ">behind<" in one
    two = text[text.index('data-agent="ws-2"'):]
    assert ">bootstrap<" in two
    group = admin.get("/policy/groups/lab").text
    assert 'data-agent="ws-2"' in group and 'data-agent="ws-1"' not in group
    viewer = web.logged_in("vic", "viewer")
    assert ">behind<" in viewer.get("/workstations").text


def test_change_log_pages_newest_first(web: WebApp) -> None:
    web.agent("ws-1")
    admin = web.logged_in("ada", "admin")
    for n in range(30):
        _set_group(admin, "default", OFFICE + f"allow id 1d6b:{n:04x}\n", "", f"step {n}")
    first = admin.get("/policy/changes").text
    numbers = [int(n) for n in re.findall(r'data-change="(\d+)"', first)]
    assert numbers == list(range(30, 5, -1))
    older = re.search(r'href="(/policy/changes\?before=\d+)" data-testid="older-changes"', first)
    assert older is not None
    second = admin.get(html.unescape(older[1])).text
    assert [int(n) for n in re.findall(r'data-change="(\d+)"', second)] == [5, 4, 3, 2, 1]
    assert 'data-testid="older-changes"' not in second
    assert admin.get("/policy/changes?before=0").status_code == 422


def test_blocked_list_keeps_the_newest_per_workstation_and_device() -> None:
    from floor_agent.dashboard.policy_view import blocked_devices

    def event(row: int, agent: str, digest: str, ts: str) -> dict[str, object]:
        return {"id": row, "agent_id": agent, "seq": row, "ts": ts, "kind": "usb.blocked",
                "data": {"hash": digest}}

    events = [event(1, "ws-1", "h1", "2026-11-29T08:00:00.000000Z"),
              event(2, "ws-1", "h1", "2026-11-29T09:00:00.000000Z"),
              event(3, "ws-2", "h1", "2026-11-29T07:00:00.000000Z"),
              event(4, "ws-2", "h2", "2026-11-29T10:00:00.000000Z"),
              event(5, "ws-3", "h1", "2026-11-29T10:00:00.000000Z")]
    exceptions = [{"active": True, "scope": "group:lab", "device": {"hash": "h1"}},
                  {"active": False, "scope": "all", "device": {"hash": "h2"}}]
    out = blocked_devices(events, exceptions, {"ws-3": "lab"}, "default")
    assert [(e["agent_id"], e["id"]) for e in out] == [("ws-2", 4), ("ws-1", 2), ("ws-2", 3)]
    everywhere = [{"active": True, "scope": "all", "device": {"hash": "h1"}}]
    assert [e["id"] for e in blocked_devices(events, everywhere, {}, "default")] == [4]


def test_policy_pages_on_postgresql(tmp_path: Path,
                                    postgres_server: PostgresServer) -> None:  # noqa: F811
    for n, test in enumerate((
            test_approve_from_a_blocked_event_makes_one_exception_and_a_new_version,
            test_assignment_moves_a_workstation_and_the_workstations_page_shows_versions)):
        web = _web(tmp_path / str(n), postgres_server.new_database())
        try:
            test(web)
            admin = web.logged_in("pg", "admin")
            log = admin.get("/policy/changes").text
            assert log.count('data-testid="policy-change"') == web.store.policy_change_number()
        finally:
            web.close()
