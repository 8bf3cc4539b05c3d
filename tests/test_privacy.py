"""Client codes only: customer names are found in events, and only names, never codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from collector_process import CollectorProcess

from floor_agent.audit.agent import AuditAgent, enroll
from floor_agent.privacy import (
    Customer,
    CustomerListError,
    Finding,
    find_customer_names,
    parse_customers,
)

CUSTOMERS = [Customer("C0001", "Müller Fotostudio"), Customer("C0002", "Anna"),
             Customer("C0003", "O'Brien & Sons")]


def event(seq: int = 1, subject: str = "job C0001/J0001", **data: Any) -> dict[str, Any]:
    return {"agent_id": "ws-01", "seq": seq, "kind": "usb.blocked", "severity": "info",
            "subject": subject, "data": data}


def test_name_in_a_nested_data_field_is_found_by_code_only() -> None:
    events = [event(1, ok="C0001"),
              event(2, job={"files": [{"label": "proof"}, {"label": "for MÜLLER  fotostudio"}]})]
    findings = find_customer_names(events, CUSTOMERS)
    assert findings == [Finding("ws-01", 2, "data.job.files[1].label", "C0001")]
    text = str(findings[0])
    assert "C0001" in text and "ller" not in text.lower()


def test_client_code_alone_is_not_flagged() -> None:
    events = [event(seq, subject=f"client {code}", client=code, path=f"/srv/{code}/J0001/a.jpg")
              for seq, code in enumerate(["C0001", "C0002", "C0003"], start=1)]
    assert find_customer_names(events, CUSTOMERS) == []


def test_name_inside_a_longer_word_is_not_flagged() -> None:
    events = [event(1, note="Annabelle retouched Hanna's banner"), event(2, tag="xAnna")]
    assert find_customer_names(events, CUSTOMERS) == []
    assert find_customer_names([event(3, note="anna, please")], CUSTOMERS) == [
        Finding("ws-01", 3, "data.note", "C0002")]
    # in file names '_' separates words: a name joined by it is still the name
    assert find_customer_names([event(4, file="C0002/J0001/anna_01.jpg")], CUSTOMERS) == [
        Finding("ws-01", 4, "data.file", "C0002")]


def test_subject_keys_and_punctuated_names_are_scanned() -> None:
    events = [event(1, subject="O'Brien & Sons order"), event(2, by_customer={"anna": 3})]
    assert find_customer_names(events, CUSTOMERS) == [
        Finding("ws-01", 1, "subject", "C0003"), Finding("ws-01", 2, "data.by_customer.<key>",
                                                         "C0002")]


def test_customer_list_errors_name_the_line_not_the_customer() -> None:
    assert parse_customers("client_code,customer_name\nC1,Anna\n\n") == [Customer("C1", "Anna")]
    with pytest.raises(CustomerListError, match="customers.csv:1: the first line"):
        parse_customers("code,name\nC1,Anna\n", "customers.csv")
    with pytest.raises(CustomerListError, match=r"^x:3: client_code C1 already on line 2$"):
        parse_customers("client_code,customer_name\nC1,Anna\nC1,Berta\n", "x")
    with pytest.raises(CustomerListError, match="x:2: expected 2 columns") as info:
        parse_customers("client_code,customer_name\nC1,Anna,Berlin\n", "x")
    assert "Anna" not in str(info.value)


def test_scan_of_a_real_collector_store_exits_1_on_a_name(tmp_path: Path) -> None:
    collector = CollectorProcess(tmp_path)
    collector.start()
    try:
        config = collector.agent_config("ws-privacy")
        enroll(config.audit, "workstation", collector.token(), collector.ca)
        agent = AuditAgent(config.audit, "workstation")
        agent.start()
        agent.emit("usb.blocked", "job C0002/J0007", "warning", client="C0002")
        agent.stop(drain_seconds=10)
    finally:
        collector.stop()
    customers = tmp_path / "customers.csv"
    customers.write_text("client_code,customer_name\nC0001,Müller Fotostudio\nC0002,Anna\n")
    command = [sys.executable, "-m", "floor_agent.privacy", "scan", "--config",
               str(collector.config_path), "--customers", str(customers)]
    clean = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert clean.returncode == 0, clean.stderr
    assert "0 findings" in clean.stderr

    collector.start()
    try:
        agent = AuditAgent(config.audit, "workstation")
        agent.start()
        agent.emit("usb.blocked", "job for Anna", "warning", client="C0002")
        agent.stop(drain_seconds=10)
    finally:
        collector.stop()
    found = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert found.returncode == 1, found.stderr
    assert "field subject carries the name of client C0002" in found.stdout
    assert "Anna" not in found.stdout + found.stderr

    bad = subprocess.run([*command[:-1], str(tmp_path / "missing.csv")], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "missing.csv: cannot read" in bad.stderr
