"""The shipped systemd units must pass `systemd-analyze verify` and keep their hardening score.

Units name the production install path (/opt/floor-agent/venv/bin/floor-agent), which does not
exist on a build machine, and verify rightly reports a missing ExecStart binary. Instead of
filtering that message out (which would also hide a real typo in the path), each unit is copied
with only that install prefix rewritten to this checkout's interpreter, and the copy is verified.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD_DIR = Path(__file__).resolve().parent.parent / "systemd"
UNITS = sorted(p for pattern in ("*.service", "*.timer") for p in SYSTEMD_DIR.glob(pattern))
COLLECTOR_UNIT = SYSTEMD_DIR / "floor-collector.service"
INSTALLED_BINARY = "/opt/floor-agent/venv/bin/floor-agent"
MAX_EXPOSURE = 2.0

# ExecStart=, ExecStartPre=, ExecReload=, ... with optional special prefixes (-, @, :, +, !).
_EXEC_LINE = re.compile(
    r"^(?P<key>Exec[A-Za-z]*\s*=\s*[-@:+!]*)" + re.escape(INSTALLED_BINARY) + r"(?=\s|$)",
    re.MULTILINE,
)


def local_command() -> str:
    """This environment's stand-in for the installed console script."""
    script = Path(sys.prefix) / "bin" / "floor-agent"
    if script.is_file():
        return str(script)
    return f"{sys.executable} -m floor_agent.cli"


def localize(unit: Path, dest_dir: Path) -> Path:
    """Copy ``unit`` into ``dest_dir`` with the install-path binary pointed at this checkout."""
    text = _EXEC_LINE.sub(lambda m: m.group("key") + local_command(), unit.read_text())
    dest = dest_dir / unit.name
    dest.write_text(text)
    return dest


def verify_problems(unit: Path) -> list[str]:
    """Lines of `systemd-analyze verify` output that are about ``unit`` itself.

    Other lines concern host units pulled in as dependencies (e.g. network-online.target) and
    are not ours to fix.
    """
    proc = subprocess.run(
        ["systemd-analyze", "--no-pager", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = (proc.stdout + proc.stderr).splitlines()
    return [line for line in lines if unit.name in line]


def service_settings(unit: Path) -> dict[str, list[str]]:
    """[Service] key -> values, in order (systemd allows repeated keys)."""
    settings: dict[str, list[str]] = {}
    section = None
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        if section == "Service" and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_systemd_analyze_is_available() -> None:
    assert shutil.which("systemd-analyze"), "install the Debian package 'systemd'"


def test_units_exist() -> None:
    assert COLLECTOR_UNIT in UNITS


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_verifies(unit: Path, tmp_path: Path) -> None:
    # Copy every unit so a timer finds the service it activates next to it.
    for other in UNITS:
        localize(other, tmp_path)
    problems = verify_problems(tmp_path / unit.name)
    assert problems == [], "\n".join(problems)


def test_verify_catches_a_typo(tmp_path: Path) -> None:
    """Guard against a vacuous check: a misspelt directive in a localized copy must surface."""
    broken = tmp_path / "src" / COLLECTOR_UNIT.name
    broken.parent.mkdir()
    broken.write_text(
        COLLECTOR_UNIT.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict")
    )
    problems = verify_problems(localize(broken, tmp_path))
    assert any("ProtectSytem" in line for line in problems), problems


def test_verify_catches_a_wrong_binary(tmp_path: Path) -> None:
    """A typo in the install path is not rewritten away, so verify still reports it."""
    broken = tmp_path / "src" / COLLECTOR_UNIT.name
    broken.parent.mkdir()
    broken.write_text(COLLECTOR_UNIT.read_text().replace(INSTALLED_BINARY, INSTALLED_BINARY + "d"))
    problems = verify_problems(localize(broken, tmp_path))
    assert any("not executable" in line for line in problems), problems


def test_collector_runs_the_installed_console_script() -> None:
    settings = service_settings(COLLECTOR_UNIT)
    assert settings["ExecStart"] == [
        f"{INSTALLED_BINARY} collector run --config /etc/floor-agent/collector.yaml"
    ]


def test_collector_is_notify_type_with_watchdog() -> None:
    settings = service_settings(COLLECTOR_UNIT)
    assert settings["Type"] == ["notify"]
    assert settings["NotifyAccess"] == ["main"]
    watchdog = settings["WatchdogSec"][-1]
    assert re.fullmatch(r"\d+s?", watchdog) and int(watchdog.rstrip("s")) > 0, watchdog


def test_collector_exposure_score() -> None:
    proc = subprocess.run(
        ["systemd-analyze", "--no-pager", "security", "--offline=true", str(COLLECTOR_UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = proc.stdout + proc.stderr
    match = re.search(
        rf"Overall exposure level for {re.escape(COLLECTOR_UNIT.name)}:\s*(\d+(?:\.\d+)?)", output
    )
    assert match, output
    assert float(match.group(1)) <= MAX_EXPOSURE, output
