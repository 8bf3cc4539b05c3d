"""Config layer tests: shipped files load, and every mistake names file, line, field and fix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from floor_agent.access.config import AccessConfig, AccessPolicyConfig, DoorConfig
from floor_agent.cctv.config import CctvConfig, CctvSection, OffloadConfig
from floor_agent.collector.config import CollectorConfig, CollectorSection
from floor_agent.config import ConfigError
from floor_agent.config import audit as audit_section
from floor_agent.config.audit import AGENT_ID_RE, AuditClientConfig
from floor_agent.config.base import ROLES
from floor_agent.netlock.config import NetlockConfig, NetlockWatch
from floor_agent.retention.config import CompletionMarker, RetentionSection, RetentionServer
from floor_agent.roles.config import ROLE_MODELS, WorkstationConfig, check_file, load_config
from floor_agent.usb_guard.config import UsbGuardConfig
from floor_agent.ws_policy.config import PolicyConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"


def write(tmp_path: Path, text: str, name: str = "agent.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def error_of(path: Path, expected_role: str | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, expected_role=expected_role)
    return info.value


def lines_of(path: Path, expected_role: str | None = None) -> list[str]:
    return str(error_of(path, expected_role)).splitlines()


# --------------------------------------------------------------------------- shipped files


@pytest.mark.parametrize("role", ROLES)
def test_shipped_file_loads_with_expected_role(role: str) -> None:
    config = load_config(CONFIG_DIR / f"{role}.yaml", expected_role=role)
    assert config.role == role
    assert type(config) is ROLE_MODELS[role]


@pytest.mark.parametrize("role", ROLES)
def test_shipped_file_shows_the_defaults(role: str) -> None:
    """The shipped files document the defaults; drift between them and the models is a bug."""
    assert load_config(CONFIG_DIR / f"{role}.yaml") == ROLE_MODELS[role]()


@pytest.mark.parametrize("role", ["workstation", "door", "cctv", "retention"])
def test_shipped_agent_files_list_every_option(role: str) -> None:
    data = yaml.safe_load((CONFIG_DIR / f"{role}.yaml").read_text())
    assert set(data) == set(ROLE_MODELS[role].model_fields)
    assert set(data["audit"]) == set(AuditClientConfig.model_fields)
    if role == "workstation":
        assert set(data["usb_guard"]) == set(UsbGuardConfig.model_fields)
        assert set(data["netlock"]) == set(NetlockConfig.model_fields)
        assert set(data["netlock"]["watch"]) == set(NetlockWatch.model_fields)
        assert set(data["policy"]) == set(PolicyConfig.model_fields)
    if role == "cctv":
        assert set(data["cctv"]) == set(CctvSection.model_fields)
        assert set(data["cctv"]["offload"]) == set(OffloadConfig.model_fields)
    if role == "retention":
        assert set(data["retention"]) == set(RetentionSection.model_fields)
        for server in data["retention"]["servers"]:
            assert set(server) == set(RetentionServer.model_fields)
            assert set(server["completion"]) == set(CompletionMarker.model_fields)
    if role == "door":
        assert set(data["access"]) == set(AccessConfig.model_fields)
        assert set(data["access"]["policy"]) == set(AccessPolicyConfig.model_fields)


def test_shipped_collector_file_lists_every_option() -> None:
    data = yaml.safe_load((CONFIG_DIR / "collector.yaml").read_text())
    assert set(data) == set(CollectorConfig.model_fields)
    assert set(data["collector"]) == set(CollectorSection.model_fields)


def test_check_file_summarises_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_section.socket, "gethostname", lambda: "ws-07")
    summary = check_file(CONFIG_DIR / "door.yaml")
    assert "\n" not in summary
    assert "role door" in summary
    assert "ws-07-door (from hostname)" in summary
    assert "https://127.0.0.1:8443" in summary
    assert "/var/lib/floor-agent/door/collector-ca.pem" in summary


def test_check_file_shows_the_workstation_policy(tmp_path: Path) -> None:
    assert "Central policy off: /etc/floor-agent/usb-rules.conf" in check_file(
        CONFIG_DIR / "workstation.yaml")
    path = tmp_path / "workstation.yaml"
    path.write_text((CONFIG_DIR / "workstation.yaml").read_text().replace(
        "policy:\n  # Off: the rules file and the netlock section are the policy, as before.\n"
        "  enabled: false", "policy:\n  enabled: true"))
    summary = check_file(path)
    assert ("Central policy on: signed by the collector's key pinned in "
            "/var/lib/floor-agent/workstation/policy.pub") in summary
    assert "long polls of 25 s, retry backoff 2-300 s" in summary
    assert "netlock.allow are only the bootstrap" in summary


def test_check_file_summarises_collector_and_redacts_password(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        role: collector
        collector:
          database_url: postgresql://audit:s3cret@db.floor:5432/audit
          server_names: [collector.floor, 10.0.0.5]
    """,
    )
    summary = check_file(path)
    assert "role collector" in summary
    assert "127.0.0.1:8443" in summary
    assert "collector.floor, 10.0.0.5" in summary
    assert "postgresql://audit:***@db.floor:5432/audit" in summary
    assert "s3cret" not in summary


def test_check_file_raises_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "role: door\naudit:\n  heartbeat_seconds: 0\n")
    with pytest.raises(ConfigError, match=r"agent.yaml:3: audit.heartbeat_seconds: "):
        check_file(path)


# --------------------------------------------------------------------------- defaults


@pytest.mark.parametrize("model", [WorkstationConfig, DoorConfig, CctvConfig, CollectorConfig])
def test_defaults_round_trip_through_yaml(tmp_path: Path, model: type) -> None:
    original = model()
    path = write(tmp_path, yaml.safe_dump(original.model_dump(mode="json"), sort_keys=False))
    assert load_config(path, expected_role=original.role) == original


def test_round_trip_of_non_default_values(tmp_path: Path) -> None:
    original = DoorConfig(
        log_level="debug",
        audit=AuditClientConfig(
            agent_id="door-3",
            state_dir=Path("/srv/door"),
            heartbeat_seconds=5,
            ca_cert=Path("/etc/ca.pem"),
        ),
    )
    path = write(tmp_path, yaml.safe_dump(original.model_dump(mode="json")))
    assert load_config(path) == original


@pytest.mark.parametrize("role", ["workstation", "door", "cctv"])
def test_audit_state_dir_default_depends_on_role(tmp_path: Path, role: str) -> None:
    expected = Path(f"/var/lib/floor-agent/{role}")
    assert ROLE_MODELS[role]().audit.state_dir == expected
    path = write(tmp_path, f"role: {role}\naudit:\n  heartbeat_seconds: 10\n")
    loaded = load_config(path)
    assert loaded.audit.state_dir == expected
    assert loaded.audit.ca_path() == expected / "collector-ca.pem"


def test_explicit_state_dir_is_kept(tmp_path: Path) -> None:
    path = write(tmp_path, "role: door\naudit:\n  state_dir: /tmp/demo/door\n")
    assert load_config(path).audit.state_dir == Path("/tmp/demo/door")
    given = AuditClientConfig(state_dir=Path("/x"))
    assert DoorConfig(audit=given).audit.state_dir == Path("/x")
    assert DoorConfig(audit=AuditClientConfig(heartbeat_seconds=9)).audit.state_dir == Path(
        "/var/lib/floor-agent/door"
    )


def test_role_only_file_and_empty_section_mean_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "role: cctv\n")) == CctvConfig()
    assert load_config(write(tmp_path, "role: cctv\naudit:\n  # all commented\n")) == CctvConfig()
    assert load_config(write(tmp_path, "role: collector\ncollector:\n")) == CollectorConfig()


# --------------------------------------------------------------------------- resolved values


def test_resolved_agent_id_from_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_section.socket, "gethostname", lambda: "ws-01.floor.example")
    assert AuditClientConfig().resolved_agent_id("workstation") == "ws-01.floor.example-workstation"


@pytest.mark.parametrize(
    ("hostname", "expected"),
    [
        ("Bad Host!", "Bad-Host--door"),
        ("--x", "x-door"),
        ("", "host-door"),
        ("___", "host-door"),
        ("h" * 80, "h" * 59 + "-door"),
    ],
)
def test_resolved_agent_id_is_sanitised(
    monkeypatch: pytest.MonkeyPatch, hostname: str, expected: str
) -> None:
    monkeypatch.setattr(audit_section.socket, "gethostname", lambda: hostname)
    agent_id = AuditClientConfig().resolved_agent_id("door")
    assert agent_id == expected
    assert AGENT_ID_RE.match(agent_id)


def test_explicit_agent_id_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_section.socket, "gethostname", lambda: "ignored")
    assert AuditClientConfig(agent_id="cam-12").resolved_agent_id("cctv") == "cam-12"


def test_ca_path() -> None:
    assert AuditClientConfig(state_dir=Path("/s")).ca_path() == Path("/s/collector-ca.pem")
    assert AuditClientConfig(ca_cert=Path("/etc/ca.pem")).ca_path() == Path("/etc/ca.pem")


def test_resolved_database_url() -> None:
    section = CollectorSection(state_dir=Path("/srv/c"))
    assert section.resolved_database_url() == "sqlite:////srv/c/collector.db"
    assert CollectorSection().resolved_database_url() == (
        "sqlite:////var/lib/floor-agent/collector/collector.db"
    )
    url = "postgresql://u@db/audit"
    assert CollectorSection(database_url=url).resolved_database_url() == url
    assert CollectorSection(database_url="postgres://db/a").database_url == "postgres://db/a"
    assert CollectorSection(database_url="sqlite:///rel.db").database_url == "sqlite:///rel.db"


def test_collector_url_is_normalised() -> None:
    assert AuditClientConfig(collector_url="https://c.floor:8443/").collector_url == (
        "https://c.floor:8443",
    )


def test_collector_url_list_keeps_the_order(tmp_path: Path) -> None:
    """One URL is a list of one; a list is the failover order (audit/failover.py)."""
    path = write(tmp_path, """
        role: door
        audit:
          collector_url: ["https://b.floor:8443/", "https://a.floor:8443", "https://[::1]:9"]
          collector_return_after_seconds: 60
    """)
    config = load_config(path)
    assert config.audit.collector_url == (
        "https://b.floor:8443", "https://a.floor:8443", "https://[::1]:9")
    assert config.audit.collector_return_after_seconds == 60
    reloaded = write(tmp_path, yaml.safe_dump(config.model_dump(mode="json")), "again.yaml")
    assert load_config(reloaded) == config


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("[]", "must be an https:// URL or a non-empty list of them"),
        ("[https://a:1, http://b:1]", "entry 2 must be an https:// URL with a host"),
        ("[https://a:1, https://a:1/]", "entry 2 'https://a:1' appears twice"),
        ("[https://a:1, 8443]", "entry 2 must be an https:// URL, not 8443"),
        ("[https://a:1, 'https://u:p@b']", "entry 2 must not contain credentials"),
        ("{a: https://a:1}", "must be an https:// URL or a non-empty list of them"),
    ],
)
def test_collector_url_list_errors_point_at_the_key(tmp_path: Path, value: str,
                                                    expected: str) -> None:
    path = write(tmp_path, f"role: workstation\naudit:\n  collector_url: {value}\n")
    (only,) = lines_of(path)
    assert only.startswith(f"{path}:3: audit.collector_url: {expected}"), only


def test_check_file_shows_the_collectors_in_order(tmp_path: Path) -> None:
    path = write(tmp_path, """
        role: cctv
        audit:
          collector_url:
            - https://collector-b.floor:8443
            - https://collector-a.floor:8443
          collector_return_after_seconds: 120
    """)
    summary = check_file(path)
    assert ("reports to 2 collectors in order (1. https://collector-b.floor:8443, "
            "2. https://collector-a.floor:8443; the next on no answer, back to the first "
            "after 120 s) pinned to CA") in summary


# --------------------------------------------------------------------------- file errors


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert str(error_of(path)) == f"{path}: config file not found"


def test_directory(tmp_path: Path) -> None:
    assert str(error_of(tmp_path)) == f"{tmp_path}: is a directory, expected a YAML config file"


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "role: door\n")

    def deny(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    # Simulated, because the tests may run as root where chmod 000 does not stop reads.
    monkeypatch.setattr(Path, "read_bytes", deny)
    assert str(error_of(path)) == f"{path}: cannot read config file: permission denied"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_bytes(b"role: door\naudit:\n  agent_id: caf\xe9\n")
    assert str(error_of(path)) == (
        f"{path}:3: not valid UTF-8 (byte 0xe9 at offset 33); save it as UTF-8"
    )


def test_invalid_yaml_syntax_has_line_and_column(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        role: door
        audit:
          heartbeat_seconds: 30: 40
    """,
    )
    assert str(error_of(path)) == (
        f"{path}:3:24: invalid YAML: mapping values are not allowed here"
    )


def test_invalid_yaml_unclosed_flow_names_start(tmp_path: Path) -> None:
    path = write(tmp_path, "role: collector\ncollector:\n  server_names: [a, b\n")
    message = str(error_of(path))
    assert message.startswith(f"{path}:4:1: invalid YAML: expected ',' or ']'")
    assert "while parsing a flow sequence started on line 3" in message


def test_tab_indentation_hint(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("role: door\naudit:\n\theartbeat_seconds: 5\n")
    message = str(error_of(path))
    assert message.startswith(f"{path}:3:1: invalid YAML: found character '\\t'")
    assert "indent with spaces" in message


def test_control_character(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("role: door\nlog_level: in\x07fo\n")
    assert str(error_of(path)) == (f"{path}:2:14: invalid YAML: character #x0007 is not allowed")


def test_several_documents(tmp_path: Path) -> None:
    path = write(tmp_path, "role: door\n---\nrole: cctv\n")
    message = str(error_of(path))
    assert message.startswith(f"{path}:2:1: invalid YAML: but found another document")


def test_python_tags_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "role: !!python/object/apply:os.system [true]\n")
    message = str(error_of(path))
    assert message.startswith(f"{path}:1:7: invalid YAML: could not determine a constructor")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n", "~\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    assert str(error_of(path)) == (
        f"{path}: file is empty; expected at least "
        "'role: <collector | workstation | door | cctv | retention>'"
    )


@pytest.mark.parametrize(
    ("text", "got"), [("- role: door\n", "a list"), ("door\n", "'door'"), ("42\n", "42")]
)
def test_top_level_not_a_mapping(tmp_path: Path, text: str, got: str) -> None:
    path = write(tmp_path, text)
    assert str(error_of(path)) == (
        f"{path}:1: top level must be a mapping of settings starting with 'role:', got {got}"
    )


# --------------------------------------------------------------------------- role errors


def test_missing_role(tmp_path: Path) -> None:
    path = write(tmp_path, "log_level: info\naudit: {}\n")
    assert str(error_of(path)) == (
        f"{path}:1: role: missing required key; expected one of: collector, workstation, door, "
        "cctv, retention"
    )


def test_unknown_role_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, "# header\nrole: workstaton\n")
    assert str(error_of(path)) == (
        f"{path}:2: role: unknown role 'workstaton'; expected one of: collector, workstation, "
        "door, cctv, retention; did you mean 'workstation'?"
    )


def test_role_of_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, "role: [door]\n")
    assert str(error_of(path)) == (
        f"{path}:1: role: unknown role a list; expected one of: collector, workstation, door, "
        "cctv, retention"
    )


def test_wrong_expected_role(tmp_path: Path) -> None:
    path = write(tmp_path, "log_level: info\nrole: door\n")
    error = error_of(path, expected_role="workstation")
    assert str(error) == (
        f"{path}:2: role: this file configures the 'door' role, but the 'workstation' role "
        "was asked to load it; pass the matching file"
    )
    assert load_config(path, expected_role="door").role == "door"


def test_invalid_expected_role_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected_role"):
        load_config(write(tmp_path, "role: door\n"), expected_role="doors")


# --------------------------------------------------------------------------- field errors


def test_out_of_range_matches_documented_format(tmp_path: Path) -> None:
    path = tmp_path / "config" / "workstation.yaml"
    path.parent.mkdir()
    lines = (CONFIG_DIR / "workstation.yaml").read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if "heartbeat_seconds:" in line)
    lines[index] = "  heartbeat_seconds: 300"
    path.write_text("\n".join(lines) + "\n")
    error = error_of(path)
    assert str(error) == (
        f"{path}:{index + 1}: audit.heartbeat_seconds: "
        "Input should be less than or equal to 60 (got 300)"
    )
    (issue,) = error.issues
    assert (issue.file, issue.line, issue.column) == (str(path), index + 1, None)
    assert issue.field == "audit.heartbeat_seconds"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("listen_port: 0", "listen_port: Input should be greater than or equal to 1 (got 0)"),
        ("listen_port: 70000", "listen_port: Input should be less than or equal to 65535"),
        ("max_batch_events: 100001", "max_batch_events: Input should be less than or"),
        (
            "stale_checkpoint_seconds: 59",
            "stale_checkpoint_seconds: Input should be greater than or equal to 60 (got 59)",
        ),
        ("token_ttl_seconds: 10", "token_ttl_seconds: Input should be greater than"),
        ("server_names: []", "server_names: List should have at least 1 item"),
        ("database_url: mysql://db/a", "database_url: must start with sqlite:/// or postgresql://"),
        ("database_url: 'sqlite:///'", "database_url: must start with"),
        ("listen_port: '8443'", "listen_port: Input should be a whole number (got '8443')"),
        ("listen_port: 8443.5", "listen_port: Input should be a whole number (got 8443.5)"),
        ("listen_host: ''", "listen_host: String should have at least 1 character"),
        ("state_dir: 5", "state_dir: Input should be a file system path (got 5)"),
    ],
)
def test_collector_field_errors(tmp_path: Path, line: str, expected: str) -> None:
    path = write(tmp_path, f"role: collector\ncollector:\n  {line}\n")
    assert lines_of(path) == [lines_of(path)[0]]
    assert lines_of(path)[0].startswith(f"{path}:3: collector.{expected}")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "heartbeat_seconds: 0.5",
            "heartbeat_seconds: Input should be greater than or equal to 1 (got 0.5)",
        ),
        ("heartbeat_seconds: .inf", "heartbeat_seconds: Input should be a finite number"),
        ("heartbeat_seconds: thirty", "heartbeat_seconds: Input should be a number (got 'thirty')"),
        (
            "heartbeat_seconds: yes",
            "heartbeat_seconds: Input should be a number (got yes, which YAML reads as true)",
        ),
        (
            "batch_max_events: 5001",
            "batch_max_events: Input should be less than or equal to 5000 (got 5001)",
        ),
        (
            "spool_max_events: 99",
            "spool_max_events: Input should be greater than or equal to 100 (got 99)",
        ),
        (
            "spool_alarm_ratio: 1",
            "spool_alarm_ratio: Input should be less than or equal to 0.99 (got 1)",
        ),
        (
            "backoff_initial_seconds: 0",
            "backoff_initial_seconds: Input should be greater than 0 (got 0)",
        ),
        (
            "request_timeout_seconds: -1",
            "request_timeout_seconds: Input should be greater than 0 (got -1)",
        ),
        (
            "collector_url: http://c:8443",
            "collector_url: must be an https:// URL with a "
            "host, e.g. https://collector:8443 (got 'http://c:8443')",
        ),
        ("collector_url: 'https://'", "collector_url: must be an https:// URL with a host"),
        (
            "collector_url: 'https://c:99999'",
            "collector_url: must be an https:// URL with a host (Port out of range",
        ),
        ("collector_url: 'https://u:p@c'", "collector_url: must not contain credentials"),
        ("collector_return_after_seconds: 0",
         "collector_return_after_seconds: Input should be greater than 0 (got 0)"),
        (
            "agent_id: '-lead'",
            "agent_id: must be 1-64 characters of letters, digits, "
            "'.', '_' or '-', starting with a letter or digit (got '-lead')",
        ),
        ("agent_id: has space", "agent_id: must be 1-64 characters"),
        (f"agent_id: {'a' * 65}", "agent_id: must be 1-64 characters"),
        ("agent_id: 1234", "agent_id: Input should be a valid string (got 1234)"),
        ("state_dir: ''", "state_dir: must not be empty (got '')"),
        ("ca_cert: [a]", "ca_cert: Input should be a file system path (got a list)"),
    ],
)
def test_audit_field_errors(tmp_path: Path, line: str, expected: str) -> None:
    path = write(tmp_path, f"role: workstation\nlog_level: info\naudit:\n  {line}\n")
    (only,) = lines_of(path)
    assert only.startswith(f"{path}:4: audit.{expected}")


def test_backoff_max_below_initial_points_at_max(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        role: door
        audit:
          backoff_initial_seconds: 5
          backoff_max_seconds: 2
    """,
    )
    assert lines_of(path) == [
        f"{path}:4: audit.backoff_max_seconds: must be >= backoff_initial_seconds (5) (got 2)"
    ]


def test_literal_error_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, "role: door\nlog_level: warn\n")
    assert lines_of(path) == [
        f"{path}:2: log_level: Input should be 'debug', 'info', 'warning' or 'error' "
        "(got 'warn'); did you mean 'warning'?"
    ]


def test_yaml_boolean_in_text_field_hints_quoting(tmp_path: Path) -> None:
    path = write(tmp_path, "role: door\nlog_level: off\n")
    assert lines_of(path) == [
        f"{path}:2: log_level: Input should be 'debug', 'info', 'warning' or 'error' "
        "(got off, which YAML reads as false; quote it to mean text)"
    ]


def test_section_of_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, "role: cctv\naudit:\n  - heartbeat_seconds: 5\n")
    assert lines_of(path) == [
        f"{path}:3: audit: expected a mapping of settings (indented 'key: value' lines) "
        "(got a list)"
    ]


def test_bad_server_name_points_at_list_item(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        role: collector
        collector:
          server_names:
            - localhost
            - bad_name!
            - 10.0.0.300
            - ::1
            - collector.floor.
    """,
    )
    assert lines_of(path) == [
        f"{path}:5: collector.server_names.1: must be a DNS name (letters, digits, '-', dots) "
        "or an IP address (got 'bad_name!')",
        f"{path}:6: collector.server_names.2: must be a DNS name (letters, digits, '-', dots) "
        "or an IP address (got '10.0.0.300')",
    ]


def test_server_names_are_normalised() -> None:
    names = CollectorSection(server_names=["Collector.Floor.", "::1"]).server_names
    assert names == ["Collector.Floor", "::1"]


# --------------------------------------------------------------------------- unknown keys


def test_unknown_key_suggests_closest(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        role: workstation
        audit:
          collector_url: https://c:8443
          heartbeat_second: 30
    """,
    )
    assert lines_of(path) == [
        f"{path}:4: audit.heartbeat_second: unknown key 'heartbeat_second'; "
        "did you mean 'heartbeat_seconds'?"
    ]


def test_unknown_key_that_duplicates_a_set_key(tmp_path: Path) -> None:
    path = write(tmp_path, "role: door\naudit:\n  heartbeat_seconds: 5\n  heartbeat_secs: 3\n")
    assert lines_of(path) == [
        f"{path}:4: audit.heartbeat_secs: unknown key 'heartbeat_secs'; "
        "did you mean 'heartbeat_seconds'? (it is also set in this section)"
    ]


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, "role: door\nloglevel: debug\n")
    assert lines_of(path) == [
        f"{path}:2: loglevel: unknown key 'loglevel'; did you mean 'log_level'?"
    ]


def test_key_in_wrong_section(tmp_path: Path) -> None:
    path = write(tmp_path, "role: door\nheartbeat_seconds: 5\n")
    assert lines_of(path) == [
        f"{path}:2: heartbeat_seconds: unknown key 'heartbeat_seconds'; it belongs under 'audit:'"
    ]


def test_unknown_key_without_close_match_lists_known(tmp_path: Path) -> None:
    path = write(tmp_path, "role: collector\ncollector:\n  zzz: 1\n")
    (only,) = lines_of(path)
    assert only.startswith(f"{path}:3: collector.zzz: unknown key 'zzz'; expected one of: ")
    assert "listen_host, listen_port, state_dir" in only


def test_collector_section_in_agent_file(tmp_path: Path) -> None:
    path = write(tmp_path, "role: door\ncollector:\n  listen_port: 1\n")
    (only,) = lines_of(path)
    assert only == (
        f"{path}:2: collector: unknown key 'collector'; expected one of: role, log_level, "
        "audit, access"
    )


# --------------------------------------------------------------------------- duplicates


def test_duplicate_key_nested(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        role: door
        audit:
          heartbeat_seconds: 10
          batch_max_events: 100
          heartbeat_seconds: 50
    """,
    )
    error = error_of(path)
    assert str(error) == (
        f"{path}:5: audit.heartbeat_seconds: duplicate key (first set on line 3); "
        "remove one, YAML would silently keep only the last"
    )


def test_duplicate_sections_and_role(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        role: door
        audit:
          agent_id: a
        role: cctv
        audit:
          agent_id: b
    """,
    )
    assert lines_of(path) == [
        f"{path}:4: role: duplicate key (first set on line 1); "
        "remove one, YAML would silently keep only the last",
        f"{path}:5: audit: duplicate key (first set on line 2); "
        "remove one, YAML would silently keep only the last",
    ]


def test_same_key_in_different_sections_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path, "role: door\naudit:\n  state_dir: /tmp/x\n")
    assert load_config(path).audit.state_dir == Path("/tmp/x")


# --------------------------------------------------------------------------- several errors


def test_several_errors_listed_one_per_line_in_file_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        role: cctv
        log_level: loud
        audit:
          collector_url: http://collector
          heartbeat_seconds: 300
          spool_alarm_ratio: 0.05
          batch_max: 10
    """,
    )
    error = error_of(path)
    assert [issue.line for issue in error.issues] == [2, 4, 5, 6, 7]
    assert [issue.field for issue in error.issues] == [
        "log_level",
        "audit.collector_url",
        "audit.heartbeat_seconds",
        "audit.spool_alarm_ratio",
        "audit.batch_max",
    ]
    text = str(error).splitlines()
    assert len(text) == 5
    assert all(line.startswith(f"{path}:") for line in text)
    assert text[4].endswith("did you mean 'batch_max_events'?")
