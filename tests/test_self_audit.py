"""The collector's own audit trail: registered at init, delivered over its own listener, chained
like any agent's, and fed by other processes on the host through the same spool."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from collector_process import CollectorProcess, wait_for_kind

from floor_agent.collector import self_audit
from floor_agent.collector.config import CollectorConfig


def test_own_events_are_delivered_and_verify(tmp_path: Path) -> None:
    collector = CollectorProcess(tmp_path)
    ident = self_audit.agent_id(collector.config)
    store = collector.store()
    try:
        assert store.get_agent(ident) is not None and store.get_agent(ident).role == "collector"
        collector.start()
        started = wait_for_kind(store, ident, "agent.started")
        assert started["severity"] == "notice"
        # another process on the host (a backup, a timer) appends; the running collector delivers
        writer = self_audit.open_writer(collector.config)
        try:
            writer.emit("collector.backup", "nightly", "notice", ok=True)
        finally:
            writer.close()
        note = wait_for_kind(store, ident, "collector.backup")
        assert note["data"]["ok"] is True
        collector.stop()
        verify = subprocess.run([sys.executable, "-m", "floor_agent.cli", "collector", "verify",
                                 "--config", str(collector.config_path), "--agent", ident],
                                capture_output=True, text=True, timeout=60)
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        collector.stop()
        store.close()


def test_replaced_key_is_refused(tmp_path: Path) -> None:
    collector = CollectorProcess(tmp_path)
    key = self_audit.self_audit_config(collector.config).state_dir / "agent.key"
    key.unlink()
    store = collector.store()
    try:
        with pytest.raises(RuntimeError, match="another public key"):
            self_audit.ensure_registered(store, collector.config)
    finally:
        store.close()


def test_wildcard_listener_is_reached_on_loopback() -> None:
    config = CollectorConfig.model_validate({"collector": {"listen_host": "0.0.0.0",
                                                           "listen_port": 9443}})
    assert self_audit.self_audit_config(config).collector_url == ("https://127.0.0.1:9443",)
