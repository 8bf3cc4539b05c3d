"""`floor-agent collector user ...` through the parsers the lead wires into the CLI."""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson
import pytest
import yaml

from floor_agent.collector import self_audit
from floor_agent.collector.config import CollectorConfig, CollectorSection
from floor_agent.dashboard import passwords, users_cli
from floor_agent.store import open_store


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="floor-agent")
    collector = parser.add_subparsers(dest="command").add_parser("collector")
    users_cli.add_parsers(collector.add_subparsers(dest="action"))
    return parser


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    config = CollectorConfig(collector=CollectorSection(state_dir=tmp_path / "state"))
    path = tmp_path / "collector.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return path


def run(config_path: Path, *argv: str) -> int:
    args = make_parser().parse_args(["collector", "user", *argv, "--config", str(config_path)])
    return int(args.func(args))


def own_kinds(config_path: Path) -> list[tuple[str, dict]]:
    config = CollectorConfig(collector=CollectorSection(state_dir=config_path.parent / "state"))
    spool = self_audit.open_writer(config)
    try:
        _, pending = spool.batch(1000)
    finally:
        spool.close()
    events = [orjson.loads(p.body) for p in pending]
    return [(e["kind"], e["data"]) for e in events if e["kind"].startswith("dashboard.")]


def stored_user(config_path: Path, name: str) -> dict:
    config = CollectorConfig(collector=CollectorSection(state_dir=config_path.parent / "state"))
    store = open_store(config.collector.resolved_database_url())
    try:
        user = store.get_user(name)
    finally:
        store.close()
    assert user is not None
    return user


def test_create_prints_a_one_time_password_once(config_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert run(config_path, "create", "--username", "root", "--role", "admin") == 0
    secret = capsys.readouterr().out.strip().splitlines()[-1]
    assert len(secret) >= 16
    user = stored_user(config_path, "root")
    assert user["role"] == "admin" and user["must_change"] is True
    assert user["password_hash"].startswith("$argon2id$")
    assert passwords.verify_password(user["password_hash"], secret)
    assert own_kinds(config_path) == [("dashboard.user_created",
                                       {"username": "root", "role": "admin", "by": "cli"})]
    assert secret not in str(own_kinds(config_path))


def test_refusals_name_the_problem(config_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert run(config_path, "create", "--username", "root", "--role", "admin") == 0
    assert run(config_path, "create", "--username", "root", "--role", "viewer") == 2
    assert "exists already" in capsys.readouterr().err
    assert run(config_path, "create", "--username", "Bad Name", "--role", "viewer") == 2
    assert "username:" in capsys.readouterr().err
    assert run(config_path, "disable", "--username", "nobody") == 2
    assert "no user 'nobody'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(config_path, "create", "--username", "x", "--role", "superuser")


def test_list_disable_enable_reset(config_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    run(config_path, "create", "--username", "ann", "--role", "viewer")
    first = capsys.readouterr().out.strip().splitlines()[-1]
    assert run(config_path, "list") == 0
    listing = capsys.readouterr().out
    assert "ann" in listing and "must-change" in listing and first not in listing
    assert run(config_path, "disable", "--username", "ann") == 0
    assert stored_user(config_path, "ann")["disabled"] is True
    run(config_path, "list")
    assert "disabled" in capsys.readouterr().out
    assert run(config_path, "enable", "--username", "ann") == 0
    assert stored_user(config_path, "ann")["disabled"] is False
    capsys.readouterr()
    assert run(config_path, "reset", "--username", "ann") == 0
    second = capsys.readouterr().out.strip().splitlines()[-1]
    user = stored_user(config_path, "ann")
    assert second != first and passwords.verify_password(user["password_hash"], second)
    assert not passwords.verify_password(user["password_hash"], first)
    assert [k for k, _ in own_kinds(config_path)] == [
        "dashboard.user_created", "dashboard.user_disabled", "dashboard.user_enabled",
        "dashboard.user_reset"]
