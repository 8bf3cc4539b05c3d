"""The generated udev rules: read back by an independent checker, then run by real udevadm.

The checker parses udev's syntax (KEY{ATTR}OP"VALUE" pairs separated by commas) on its own, so
a rendering slip shows up here rather than as a rule udev silently ignores. The udevadm test
runs Debian's `udevadm test` (systemd 252 has no `udevadm verify`) on a umockdev bus, in a
private mount namespace where our file is the only rules file: udev parses it, matches it and
writes the attributes into the testbed, which the test then reads back.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from umockdev_bus import (
    COMPOSITE,
    EXT_HUB,
    HUB,
    KEYBOARD,
    PHONE_MTP,
    PHONE_RNDIS,
    RNDIS_MISC,
    STICK,
    WACOM,
    UsbSpec,
)
from umockdev_harness import bus_text

from floor_agent.cli import main
from floor_agent.usb_guard.udev_rules import (
    DEFAULT_FORBIDDEN,
    RULES_NAME,
    parse_pattern,
    render_udev_rules,
)

PAIR = re.compile(r'\s*([A-Z_]+)(?:\{([^}]*)\})?\s*(==|!=|\+=|-=|:=|=)\s*"([^"]*)"\s*(?:,|$)')


def parse_rules(text: str) -> list[list[tuple[str, str, str, str]]]:
    """udev rule lines as (key, attribute, operator, value) tuples; anything else fails."""
    rules = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pairs, pos = [], 0
        while pos < len(line):
            m = PAIR.match(line, pos)
            assert m, f"line {number}: not KEY{{ATTR}}OP\"VALUE\" at column {pos}: {line!r}"
            pairs.append((m.group(1), m.group(2) or "", m.group(3), m.group(4)))
            pos = m.end()
        rules.append(pairs)
    return rules


def blocked_by(rules: list[list[tuple[str, str, str, str]]]) -> dict[str, list[tuple[str, ...]]]:
    """What the rules deauthorize: interface class -> (subclass, protocol) matches, after
    checking that every write of authorized=0 is guarded by DEVTYPE usb_interface."""
    found: dict[str, list[tuple[str, ...]]] = {}
    for rule in rules:
        matches = {(k, a): v for k, a, op, v in rule if op == "=="}
        writes = {(k, a): v for k, a, op, v in rule if op == "="}
        for (_key, attr), value in matches.items():
            if attr.startswith("bInterface"):
                assert value not in ("03", "09"), f"rule touches HID or hub interfaces: {rule}"
        if writes.get(("ATTR", "authorized")) == "0":
            assert matches.get(("ENV", "DEVTYPE")) == "usb_interface", f"blanket: {rule}"
            klass = matches[("ATTR", "bInterfaceClass")]
            found.setdefault(klass, []).append(tuple(
                matches.get(("ATTR", f"bInterface{n}"), "*") for n in ("SubClass", "Protocol")))
        if ("ATTR", "authorized_default") in writes:
            assert writes[("ATTR", "authorized_default")] == "0"
            assert matches.get(("ENV", "DEVTYPE")) == "usb_device"
            assert ("TEST", "") in matches and matches[("TEST", "")] == "authorized_default"
    return found


def test_every_forbidden_class_has_a_rule_and_input_devices_none() -> None:
    text = render_udev_rules(DEFAULT_FORBIDDEN)
    rules = parse_rules(text)
    assert rules[0] == [("ACTION", "", "!=", "add"), ("GOTO", "", "=", "floor_agent_usb_end")]
    assert rules[1] == [("SUBSYSTEM", "", "!=", "usb"), ("GOTO", "", "=", "floor_agent_usb_end")]
    assert rules[-1] == [("LABEL", "", "=", "floor_agent_usb_end")]
    assert blocked_by(rules) == {"08": [("*", "*")], "06": [("*", "*")], "02": [("*", "*")],
                                 "0a": [("*", "*")], "e0": [("*", "*")], "ef": [("04", "01")]}
    assert sum(("ATTR", "authorized_default", "=", "0") in r for r in rules) == 1
    no_hubs = parse_rules(render_udev_rules(["8:6:50", "08:6:*"], lock_root_hubs=False))
    assert blocked_by(no_hubs) == {"08": [("06", "50"), ("06", "*")]}
    assert not any(k == "ATTR" and a == "authorized_default" for r in no_hubs for k, a, *_ in r)


@pytest.mark.parametrize("pattern", ["03", "09:*:*", "3", "*", "zz", "08:*:01", "08:06:50:1",
                                     "108", ""])
def test_bad_or_protected_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError):
        parse_pattern(pattern)


def test_cli_prints_and_writes_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    assert main(["usb", "udev-rules"]) == 0
    assert capsys.readouterr().out == render_udev_rules()
    out = tmp_path / RULES_NAME
    assert main(["usb", "udev-rules", "--output", str(out), "--forbid", "08",
                 "--forbid", "ef:04:01"]) == 0
    assert out.read_text() == render_udev_rules(["08", "ef:04:01"])
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    assert main(["usb", "udev-rules", "--forbid", "03"]) == 2
    assert "HID or hub" in capsys.readouterr().err


# --- real udev -------------------------------------------------------------------------------

DEVICES = (STICK, KEYBOARD, WACOM, COMPOSITE, PHONE_MTP, PHONE_RNDIS, RNDIS_MISC, EXT_HUB)
FORBIDDEN_CLASSES = {0x08, 0x06, 0x02, 0x0A, 0xE0}


def forbidden(cls: tuple[int, int, int]) -> bool:
    return cls[0] in FORBIDDEN_CLASSES or cls == (0xEF, 0x04, 0x01)


def interface_paths(spec: UsbSpec) -> list[str]:
    return [f"/sys{spec.devpath}/{spec.sysname}:1.{n}" for n in range(len(spec.interfaces))]


@pytest.mark.parametrize("with_system_rules", [False, True], ids=["alone", "with-debian-rules"])
def test_udevadm_applies_the_rules_on_a_simulated_bus(tmp_path: Path,
                                                     with_system_rules: bool) -> None:
    rules_dir = tmp_path / "rules.d"
    rules_dir.mkdir()
    if with_system_rules:  # Debian's own rules beside ours: none of them undoes what we write
        for rules in Path("/usr/lib/udev/rules.d").glob("*.rules"):
            shutil.copy(rules, rules_dir)
    (rules_dir / RULES_NAME).write_text(render_udev_rules())
    (tmp_path / "bus.umockdev").write_text(bus_text(DEVICES))
    targets = [f"/sys{HUB}"] + [p for s in DEVICES for p in [f"/sys{s.devpath}",
                                                                *interface_paths(s)]]
    change = interface_paths(STICK)[0]  # a "change" must not write anything
    script = "\n".join(
        [f"udevadm test --action=change {change} >change.log 2>&1 || echo FAILED"]
        + [f'echo "{p} $(cat {p}/authorized)"' for p in targets[1:]]
        + [f"udevadm test --action=add {p} >>add.log 2>&1 || echo FAILED {p}" for p in targets]
        + [f'echo "{p} $(cat {p}/authorized)"' for p in targets[1:]]
        + [f'echo "hub $(cat /sys{HUB}/authorized_default)"'])
    (tmp_path / "run.sh").write_text(script + "\n")
    # our file is the only rules file udev sees; /etc/udev and /run/udev are private too. A
    # fresh tmpfs on /run (inside this mount namespace only) gives /run/udev even on a machine
    # where udev never ran and so never made it.
    isolate = (f"mount --bind {rules_dir} /usr/lib/udev/rules.d && mount -t tmpfs none /etc/udev"
               " && mount -t tmpfs none /run && mkdir /run/udev && "
               f"umockdev-run --device {tmp_path}/bus.umockdev -- sh {tmp_path}/run.sh")
    done = subprocess.run(["unshare", "-m", "sh", "-c", isolate], capture_output=True,
                          text=True, timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "FAILED" not in done.stdout, done.stdout
    n = len(targets) - 1
    before = dict(line.split() for line in lines[:n])
    after = dict(line.split() for line in lines[n:2 * n])
    assert set(before.values()) == {"1"}  # the change event wrote nothing
    assert lines[-1] == "hub 0"  # root hub locked
    log = (tmp_path / "add.log").read_text()
    assert f"Reading rules file: /usr/lib/udev/rules.d/{RULES_NAME}" in log
    assert not re.search(rf"{RULES_NAME}:\d+ .*(Invalid|ignoring|[Ee]rror)", log), log
    assert "FLOOR_AGENT_USB=root hub locked" in log
    writes = re.findall(r"ATTR '([^']+)' writing '([^']*)'", log)
    assert writes.count((f"/sys{HUB}/authorized_default", "0")) == 1  # root hub only
    assert all(value == "0" for _, value in writes)  # no rule turns anything on
    for spec in DEVICES:
        assert after[f"/sys{spec.devpath}"] == "1", spec  # no device is deauthorized
        for path, cls in zip(interface_paths(spec), spec.interfaces, strict=True):
            assert after[path] == ("0" if forbidden(cls) else "1"), (path, cls)
    # what was proved: HID (keyboard, tablet, composite's keyboard half), hub and vendor
    # interfaces stay on; storage, MTP, CDC, wireless and RNDIS interfaces are turned off
    assert after[interface_paths(COMPOSITE)[0]] == "1" and after[interface_paths(COMPOSITE)[1]] \
        == "0"
    assert after[interface_paths(PHONE_MTP)[1]] == "1"  # ff:42:01 (adb) is not in the list
