"""The TOM report's central policy section over a real store: groups with their current
versions, the version each workstation enforces (behind, bootstrap), exceptions in force; and
in the rendered HTML, escaped, outside the measures (no verdict of its own)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from test_web_support import WebApp

from floor_agent.collector import policy_admin
from floor_agent.report.render import render_html
from floor_agent.report.tom import NONE, OK, WARN, collect_evidence

OFFICE = "allow with-interface match-all { 09:*:* }\n"
HASH = "B" * 42 + "E="


def test_policy_section_lists_groups_versions_and_exceptions(tmp_path: Path) -> None:
    web = WebApp(tmp_path)
    web.now = datetime.now(UTC)
    try:
        for ident in ("ws-1", "ws-2", "ws-3"):
            web.agent(ident)
        store, own = web.store, web.own
        policy_admin.set_group(store, own, "ada", "default", OFFICE, [], "ticket 1")
        policy_admin.set_group(store, own, "ada", "lab", OFFICE + "allow id 1d6b:0002\n", [],
                               "ticket 2")
        policy_admin.assign(store, own, "ada", "ws-2", "lab", "moved", "default")
        item = policy_admin.approve(store, own, "ada", "agent:ws-1", "<b>calibration</b>",
                                    device={"id": "0781:5567", "serial": "4C53",
                                            "hash": HASH},
                                    expires_at="2099-01-01T00:00:00Z")
        served = store.policy_inputs("ws-1", "default")["version"]
        web.send("ws-1", [("policy.applied", "policy", "info", {
            "source": "sync", "version": served - 1, "group": "default", "exceptions": []})])
        web.send("ws-2", [("policy.applied", "policy", "notice", {
            "source": "bootstrap", "version": None, "group": None, "exceptions": []})])
        evidence = collect_evidence(store, web.now, 30)
    finally:
        web.close()
    policy = evidence.policy
    assert policy is not None and policy.change_number == item["approved_change"]
    groups = {g[0]: g for g in policy.groups}
    assert groups["default"][1] == "1" and groups["lab"][1] == "2"
    assert groups["default"][3] == "ws-1, ws-3" and groups["lab"][3] == "ws-2"
    rows = {r.cells[0]: r for r in policy.workstations}
    assert rows["ws-1"].cells[2] == f"{served - 1} (behind)" and rows["ws-1"].status == WARN
    assert rows["ws-1"].cells[4] == str(served)
    assert rows["ws-2"].cells[1] == "lab" and rows["ws-2"].cells[2].startswith("bootstrap")
    assert rows["ws-3"].status == NONE and rows["ws-3"].cells[2] == "not reported"
    assert OK not in {r.status for r in policy.workstations}
    (exception,) = policy.exceptions
    assert HASH in exception[0] and exception[1] == "agent:ws-1"
    assert exception[2] == "<b>calibration</b>" and exception[3].startswith("ada ")
    assert exception[4].startswith("2099-01-01")
    html = render_html(evidence)
    assert 'id="policy-groups"' in html and "&lt;b&gt;calibration&lt;/b&gt;" in html
    assert "<b>calibration</b>" not in html
    assert "policy" not in evidence.verdicts
