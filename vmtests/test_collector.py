"""The collector on a real systemd: its package installed and initialised as the README says.

One guest with dist/floor-agent-collector_*.deb (and -common) installed by apt; the tests run
in file order on it: Type=notify readiness, the unit's sandbox as applied to the running
process, the backup timer firing, and last the watchdog killing a stopped collector.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from conftest import timing
from image import INSTALL, REPO, build
from vm import Guest

UNIT = "floor-collector.service"
CONFIG = "/etc/floor-agent/collector.yaml"
BACKUPS = "/var/lib/floor-agent/backups"
# One HTTPS request, no retry: https://127.0.0.1:8443/healthz with the collector's own CA.
PROBE = b"""import ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile="/var/lib/floor-agent/collector/tls/ca.pem")
try:
    with urllib.request.urlopen("https://127.0.0.1:8443/healthz", context=ctx, timeout=10) as r:
        print(r.status, r.read().decode())
except Exception as exc:
    print("no answer:", exc)
    sys.exit(1)
"""


def show(vm: Guest, unit: str, *props: str) -> dict[str, str]:
    out = vm.run(["systemctl", "show", unit, *(f"--property={p}" for p in props)]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def healthz(vm: Guest) -> bool:
    return vm.run(["python3", "/root/healthz.py"], check=False).returncode == 0


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    if not sorted(REPO.glob("dist/floor-agent-collector_*.deb")) or INSTALL == "wheels":
        pytest.skip("no dist/floor-agent-collector_*.deb (ROLES=collector make packages): "
                    "the collector is tested as its package installs it")
    image = build(role="collector")
    # No agent in this guest reaches a host collector: port 9 is a dead end on the loopback.
    vm = Guest(image, tmp_path_factory.mktemp("vm-collector"), 9)
    try:
        timing("collector_qemu_start_to_system_running", vm.boot())
        vm.write("/root/healthz.py", PROBE)
        yield vm
    finally:
        vm.close()


def test_start_returns_only_once_the_collector_answers_https(box: Guest) -> None:
    # Installed and enabled, not initialised: the unit is not running and nothing answers
    # (the probe below can fail, and does here).
    assert box.run(["systemctl", "is-enabled", UNIT]).stdout.strip() == "enabled"
    assert show(box, UNIT, "ActiveState")["ActiveState"] != "active"
    assert not healthz(box)
    box.run(["runuser", "-u", "floor-collector", "--", "floor-agent", "collector", "init",
             "--config", CONFIG], timeout=300)
    box.run(["systemctl", "reset-failed", UNIT], check=False)
    # Started and probed in one guest command: the probe runs the instant start returns.
    done = box.run(f"t0=$(date +%s.%N); systemctl start {UNIT}; rc=$?; t1=$(date +%s.%N); "
                   "python3 /root/healthz.py; echo \"start=$rc probe=$? $t0 $t1\"",
                   timeout=300)
    last = done.stdout.strip().splitlines()[-1].split()
    assert last[:2] == ["start=0", "probe=0"], done.stdout + done.stderr
    assert '"status"' in done.stdout or "200" in done.stdout, done.stdout
    timing("collector_systemctl_start_to_ready", float(last[3]) - float(last[2]))
    state = show(box, UNIT, "Type", "ActiveState", "SubState", "NotifyAccess", "WatchdogUSec")
    assert state["Type"] == "notify" and state["NotifyAccess"] == "main"
    assert (state["ActiveState"], state["SubState"]) == ("active", "running")
    assert state["WatchdogUSec"] in ("30s", "30000000")


def test_the_units_sandbox_is_applied_to_the_running_collector(box: Guest) -> None:
    for _ in range(5):      # it serves requests under the filter first
        assert healthz(box)
    props = show(box, UNIT, "MainPID", "User", "ProtectSystem", "ProtectHome",
                 "MemoryDenyWriteExecute", "NoNewPrivileges", "SystemCallFilter",
                 "SystemCallArchitectures", "SystemCallErrorNumber", "PrivateDevices",
                 "PrivateTmp", "RestrictNamespaces", "CapabilityBoundingSet",
                 "RestrictAddressFamilies", "ProtectKernelModules", "LockPersonality")
    assert props["User"] == "floor-collector"
    assert props["ProtectSystem"] == "strict" and props["ProtectHome"] == "yes"
    for flag in ("MemoryDenyWriteExecute", "NoNewPrivileges", "PrivateDevices", "PrivateTmp",
                 "RestrictNamespaces", "ProtectKernelModules", "LockPersonality"):
        assert props[flag] == "yes", (flag, props[flag])
    allowed = set(props["SystemCallFilter"].split())
    assert {"openat", "read", "sendmsg", "epoll_wait"} <= allowed
    assert not {"mount", "reboot", "setuid", "init_module", "setpriority"} & allowed
    assert props["SystemCallArchitectures"] == "native"
    assert props["SystemCallErrorNumber"] in ("1", "EPERM")
    assert props["CapabilityBoundingSet"] == ""
    assert set(props["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    # What the kernel says about the process itself.
    pid = props["MainPID"]
    status = dict(line.split(":", 1) for line in
                  box.run(["cat", f"/proc/{pid}/status"]).stdout.splitlines())
    fields = {key: value.strip() for key, value in status.items()}
    assert fields["Seccomp"] == "2" and fields["NoNewPrivs"] == "1", fields
    assert int(fields["Seccomp_filters"]) >= 1
    assert fields["CapEff"] == fields["CapBnd"] == "0000000000000000"
    uid = box.run(["id", "-u", "floor-collector"]).stdout.strip()
    assert fields["Uid"].split()[0] == uid
    # No denial logged: not by the kernel (seccomp, audit), not by the collector.
    kernel = box.run("journalctl -k -b --no-pager -o cat").stdout
    # (systemd's own banner lists "+SECCOMP" among its features: not a denial.)
    assert not [line for line in kernel.splitlines() if "type=1326" in line
                or "syscall=" in line or "denied" in line.lower()
                or ("seccomp" in line.lower() and "+SECCOMP" not in line)], kernel[-3000:]
    own = box.run(f"journalctl -b -u {UNIT} --no-pager -o cat").stdout
    for bad in ("denied", "Operation not permitted", "write+execute", "Traceback", "SECCOMP"):
        assert bad not in own, own[-3000:]


def test_the_backup_timer_fires_and_leaves_a_verified_backup(box: Guest) -> None:
    assert box.run(["systemctl", "is-active", "floor-backup.timer"]).stdout.strip() == "active"
    assert not box.run(f"ls {BACKUPS}").stdout.split()
    took = box.fire_timer_now("floor-backup.timer", "floor-backup.service", seconds=300)
    timing("collector_backup_timer_to_done", took)
    result = show(box, "floor-backup.service", "Result", "ExecMainStatus", "ActiveState")
    assert result == {"Result": "success", "ExecMainStatus": "0", "ActiveState": "inactive"}
    names = box.run(f"ls {BACKUPS}").stdout.split()
    backups = [name for name in names
               if name.startswith("floor-collector-") and name.endswith(".sqlite3")]
    assert len(backups) == 1 and f"{backups[0]}.json" in names, names
    manifest = box.run(["python3", "-c", "import json,sys; m=json.load(open(sys.argv[1])); "
                        "print(m['verified'], m['problems'])", f"{BACKUPS}/{backups[0]}.json"])
    assert manifest.stdout.strip().split(maxsplit=1) == ["True", "[]"], manifest.stdout
    assert box.run(f"stat -c %a {BACKUPS}/{backups[0]}").stdout.strip() == "600"


def test_the_watchdog_restarts_a_stopped_collector(box: Guest) -> None:
    before = show(box, UNIT, "MainPID", "NRestarts")
    box.run(["kill", "-STOP", before["MainPID"]])
    t0 = time.monotonic()
    # WatchdogSec=30, RestartSec=2, then a start under emulation: 150 s is the margin.
    box.wait_until(f"test \"$(systemctl show {UNIT} --property=MainPID --value)\" != "
                   f"{before['MainPID']} && systemctl is-active -q {UNIT}",
                   seconds=150, interval=1)
    elapsed = time.monotonic() - t0
    timing("collector_sigstop_to_restarted_ready", elapsed)
    assert elapsed > 25, "restarted before the watchdog could have fired"
    after = show(box, UNIT, "MainPID", "NRestarts")
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
    assert box.run(f"test -d /proc/{before['MainPID']}", check=False).returncode != 0
    log = box.run(f"journalctl -b -u {UNIT} --no-pager -o cat").stdout
    assert "Watchdog timeout" in log, log[-3000:]
    assert healthz(box)
