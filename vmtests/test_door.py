"""The door controller on a real kernel under systemd: its package, its user, its device policy,
and the fingerprint module behind an emulated USB serial adapter.

One guest with dist/floor-agent-door_*.deb (and -common) installed by apt. Two QEMU `usb-serial`
devices (FTDI, the guest's `ftdi_sio` driver) carry the door's serial lines:

- /dev/ttyUSB0: the ZFM fingerprint module, the project's simulator (SimulatedModule) on a
  host pty that QEMU opens as a `tty` chardev. The test puts fingers on it from the host, so
  the guest's driver speaks ZFM across the emulated adapter.
- /dev/ttyUSB1: the OSDP bus with one reader, the project's simulated reader (a real libosdp
  peripheral, secure channel with the reader's SCBK) on a QEMU socket chardev. OSDP readers
  give the card's UID only, so this door.yaml sets `require_card_proof: false` (the config's
  documented trade-off for OSDP; the PC/SC card proof is not exercised here: a PC/SC reader in
  the guest would need vpcd and a virtual card over the network).

The lock is the `simulated` door I/O (in memory): there is no GPIO chip in the guest.

The tests run in file order on one guest: a finger enrolled with `door enroll` as floor-door
(the template reaches the host collector), the unit started under its own user, its device
policy applied to its cgroup, then card + finger decisions reported at the collector.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import yaml
from conftest import FLOOR_AGENT, HostCollector, timing
from image import COLLECTOR_GUEST_PORT, COLLECTOR_NAME, INSTALL, REPO, build
from vm import Guest

from floor_agent.access import sitekey, zfm
from floor_agent.simulated.fingerprint_module import SimulatedModule
from floor_agent.simulated.osdp_reader import SimulatedReader

UNIT = "floor-door.service"
CONFIG = "/etc/floor-agent/door.yaml"
CA = "/etc/floor-agent/collector-ca.pem"
SITE_KEY = "/etc/floor-agent/site.key"
SCBK_FILE = "/etc/floor-agent/osdp-entry.scbk"
DOOR_AGENT_ID = "floor-vm-door"
DOOR_ID = "front"
ZFM_PORT = "/dev/ttyUSB0"
OSDP_PORT = "/dev/ttyUSB1"
SCBK = bytes(range(0x30, 0x40))     # the entry reader's secure channel key (16 bytes)
ALICE = "alice"
ALICE_UID = "04A224B2C35E80"
ALICE_FINGER = b"alice, right index finger"
STRANGER_FINGER = b"somebody else's thumb"

# Opens each device named after the cgroup, as root, after moving itself into the cgroup given
# (or staying where it is: "-"): prints "<device> ok" or "<device> <errno>".
DEVICE_PROBE = b"""import os, sys
if sys.argv[1] != "-":
    with open("/sys/fs/cgroup" + sys.argv[1] + "/cgroup.procs", "w") as procs:
        procs.write(str(os.getpid()))
for device in sys.argv[2:]:
    try:
        os.close(os.open(device, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK))
        print(device, "ok")
    except OSError as e:
        print(device, e.errno)
"""


def door_yaml() -> str:
    return yaml.safe_dump({
        "role": "door",
        "audit": {"agent_id": DOOR_AGENT_ID, "state_dir": "/var/lib/floor-agent/door",
                  "collector_url": f"https://{COLLECTOR_NAME}:{COLLECTOR_GUEST_PORT}",
                  "heartbeat_seconds": 5},
        "access": {
            "site_key_file": SITE_KEY,
            "sync_interval_seconds": 5.0,
            # OSDP readers give a UID, no card proof (see the module's docstring).
            "policy": {"require_card_proof": False},
            "doors": [{
                "door_id": DOOR_ID, "name": "VM front door", "zone_inside": "floor",
                "readers": [{"reader_id": "entry", "direction": "in", "kind": "osdp",
                             "osdp_port": OSDP_PORT, "osdp_address": 0,
                             "osdp_scbk_file": SCBK_FILE}],
                "fingerprint": {"port": ZFM_PORT, "baud": 57600,
                                "capture_timeout_seconds": 8.0,
                                "response_timeout_seconds": 2.0},
                "io": {"driver": "simulated", "unlock_seconds": 3.0}}]}},
        sort_keys=False)


def show(vm: Guest, unit: str, *props: str) -> dict[str, str]:
    out = vm.run(["systemctl", "show", unit, *(f"--property={p}" for p in props)]).stdout
    values: dict[str, str] = {}
    for line in out.splitlines():
        if "=" in line:     # DeviceAllow= is listed once per entry
            key, value = line.split("=", 1)
            values[key] = f"{values[key]}\n{value}" if key in values else value
    return values


@dataclass
class Door:
    vm: Guest
    collector: HostCollector
    module: SimulatedModule
    reader: SimulatedReader
    admin: httpx.Client

    def events(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        return self.collector.events(kind, **match)

    def wait_event(self, kind: str, seconds: float = 90, **match: Any) -> dict[str, Any]:
        return self.collector.wait_event(kind, seconds, **match)


def api_key(collector: HostCollector) -> str:
    out = subprocess.run([*FLOOR_AGENT, "collector", "apikey", "create", "--name", "vm-door",
                          "--scope", "credentials", "--config", str(collector.path)],
                         check=True, capture_output=True, text=True).stdout
    return out.splitlines()[0].strip()


def post(admin: httpx.Client, path: str, body: dict[str, Any]) -> None:
    response = admin.post(path, json=body)
    assert response.status_code == 201, f"POST {path}: {response.status_code} {response.text}"


@pytest.fixture(scope="module")
def door(collector: HostCollector, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    if not sorted(REPO.glob("dist/floor-agent-door_*.deb")) or INSTALL == "wheels":
        pytest.skip("no dist/floor-agent-door_*.deb (ROLES=door make packages): the door is "
                    "tested as its package installs it")
    image = build(role="door")
    collector.agent_id = DOOR_AGENT_ID
    work = tmp_path_factory.mktemp("vm-door")
    osdp_socket = work / "osdp.sock"
    module = SimulatedModule().start()
    reader: SimulatedReader | None = None
    vm: Guest | None = None
    admin: httpx.Client | None = None
    try:
        vm = Guest(image, work, collector.port, extra_args=(
            "-chardev", f"tty,id=zfm,path={module.port}",
            "-device", "usb-serial,bus=xhci.0,chardev=zfm,serial=ZFM0001",
            "-chardev", f"socket,id=osdp,path={osdp_socket},server=on,wait=off",
            "-device", "usb-serial,bus=xhci.0,chardev=osdp,serial=OSDP0001"))
        bus = socket.socket(socket.AF_UNIX)
        bus.connect(str(osdp_socket))
        reader = SimulatedReader(bus, address=0, scbk=SCBK)
        reader.start()
        timing("door_qemu_start_to_system_running", vm.boot())
        # The credentials an admin keeps on the collector: a level, a person, her card.
        context = ssl.create_default_context(cafile=str(collector.ca))
        admin = httpx.Client(base_url=f"https://127.0.0.1:{collector.port}", verify=context,
                             headers={"authorization": f"Bearer {api_key(collector)}"},
                             timeout=10)
        post(admin, "/api/v1/levels", {"level_id": "always", "doors": [DOOR_ID], "windows": [
            {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "00:00",
             "end": "00:00"}]})
        post(admin, "/api/v1/people", {"person_id": ALICE, "name": "Alice",
                                       "access_levels": ["always"], "duress_fingers": []})
        post(admin, "/api/v1/cards", {"uid": ALICE_UID, "person_id": ALICE})
        # The door controller as an admin sets it up: its door.yaml, the site key and the
        # reader's key (the agent's user's own, 0600), the collector's CA; then enrolled as
        # floor-door, whose state directory the package made.
        key_file = work / "site.key"
        sitekey.generate(key_file)
        vm.write(CONFIG, door_yaml().encode())
        vm.write(SITE_KEY, key_file.read_bytes(), mode=0o600)
        vm.write(SCBK_FILE, SCBK.hex().encode() + b"\n", mode=0o600)
        vm.run(["chown", "floor-door:floor-door", SITE_KEY, SCBK_FILE])
        vm.write(CA, collector.ca.read_bytes())
        vm.run(["runuser", "-u", "floor-door", "--", "floor-agent", "config", "check", CONFIG])
        t0 = time.monotonic()
        vm.run(["runuser", "-u", "floor-door", "--", "floor-agent", "enroll", "--config",
                CONFIG, "--token", collector.token("door"), "--ca", CA], timeout=180)
        timing("door_agent_enroll", time.monotonic() - t0)
        yield Door(vm, collector, module, reader, admin)
    finally:
        if admin is not None:
            admin.close()
        if vm is not None:
            vm.close()
        if reader is not None:
            reader.stop()
        module.close()


def test_the_fingerprint_module_is_an_ftdi_adapter_at_ttyusb0(door: Door) -> None:
    vm = door.vm
    for tty, serial in (("ttyUSB0", "ZFM0001"), ("ttyUSB1", "OSDP0001")):
        driver = vm.run(["readlink", "-f", f"/sys/class/tty/{tty}/device/driver"]).stdout
        assert driver.strip().endswith("/ftdi_sio"), (tty, driver)
        link = vm.run(f"readlink -f /dev/serial/by-id/*{serial}*").stdout.strip()
        assert link == f"/dev/{tty}", (serial, link)
    # The package's user may open it: group dialout.
    assert vm.run(["stat", "-c", "%G %a", ZFM_PORT]).stdout.split() == ["dialout", "660"]
    assert "dialout" in vm.run(["id", "-nG", "floor-door"]).stdout.split()


def test_a_finger_enrolled_at_the_door_crosses_the_usb_serial_adapter(door: Door) -> None:
    """`door enroll` as floor-door: two captures on the simulated module (GenImg, Img2Tz,
    RegModel, UpChar across ftdi_sio), the template sealed under the site key in the guest and
    uploaded to the host collector, the module wiped."""
    module = door.module
    before = len(module.commands)
    module.place(ALICE_FINGER)
    t0 = time.monotonic()
    try:
        done = door.vm.run(["runuser", "-u", "floor-door", "--", "floor-agent", "door",
                            "enroll", "--config", CONFIG, "--person", ALICE, "--finger", "1",
                            "--no-card"], timeout=180, check=False)
    finally:
        module.place(None)
    timing("door_enroll_finger_over_usb_serial", time.monotonic() - t0)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"enrolled finger 1 of {ALICE} as " in done.stdout, done.stdout
    seen = module.commands[before:]
    for code in (zfm.GEN_IMG, zfm.IMG2TZ, zfm.REG_MODEL, zfm.UP_CHAR):
        assert code in seen, (zfm.instruction_name(code), seen)
    assert seen.count(zfm.IMG2TZ) >= 2     # two captures
    assert module.problems == [], module.problems
    assert not module.holds_template(), "the driver left a template on the module"
    people = door.admin.get("/api/v1/people").json()["people"]
    alice = next(p for p in people if p["person_id"] == ALICE)
    assert [t["finger"] for t in alice["templates"]] == [1], alice


def test_the_unit_runs_as_floor_door_with_dialout(door: Door) -> None:
    vm = door.vm
    assert vm.run(["systemctl", "is-enabled", UNIT]).stdout.strip() == "enabled"
    vm.run(["systemctl", "reset-failed", UNIT], check=False)
    done = vm.run(f"t0=$(date +%s.%N); systemctl start {UNIT}; rc=$?; t1=$(date +%s.%N); "
                  "echo \"start=$rc $t0 $t1\"", timeout=300)
    last = done.stdout.strip().splitlines()[-1].split()
    assert last[0] == "start=0", done.stdout + done.stderr
    timing("door_systemctl_start_to_ready", float(last[2]) - float(last[1]))
    props = show(vm, UNIT, "MainPID", "User", "ActiveState", "SubState", "Type")
    assert (props["Type"], props["ActiveState"], props["SubState"]) == \
        ("notify", "active", "running")
    assert props["User"] == "floor-door"
    status = {key: value.strip() for key, value in (
        line.split(":", 1) for line in
        vm.run(["cat", f"/proc/{props['MainPID']}/status"]).stdout.splitlines())}
    uid = vm.run(["id", "-u", "floor-door"]).stdout.strip()
    gid = vm.run(["id", "-g", "floor-door"]).stdout.strip()
    dialout = vm.run(["getent", "group", "dialout"]).stdout.split(":")[2]
    assert status["Uid"].split() == [uid] * 4, status["Uid"]
    assert status["Gid"].split() == [gid] * 4, status["Gid"]
    assert dialout in status["Groups"].split(), status["Groups"]
    assert status["CapEff"] == "0000000000000000" and status["NoNewPrivs"] == "1", status
    # It reached the collector: started, the credentials synced, the OSDP reader online over
    # its secure channel.
    door.wait_event("agent.started")
    door.wait_event("door.credentials_updated")
    door.wait_event("door.reader_online", door_id=DOOR_ID, reader_id="entry")
    assert door.reader.secure
    # The enrolment's audit event, spooled by `door enroll`, delivered by the unit.
    door.wait_event("door.template_enrolled", person_id=ALICE, finger=1)


def test_the_units_device_policy_lets_it_open_serial_ports_only(door: Door) -> None:
    vm = door.vm
    props = show(vm, UNIT, "DevicePolicy", "DeviceAllow", "ControlGroup")
    assert props["DevicePolicy"] == "closed"
    assert "char-ttyUSB rw" in props["DeviceAllow"].splitlines(), props["DeviceAllow"]
    vm.write("/root/device-probe.py", DEVICE_PROBE)
    devices = [ZFM_PORT, "/dev/vda", "/dev/mem"]
    # As root outside the unit every one opens (what a missing policy would leave) ...
    outside = vm.run(["python3", "/root/device-probe.py", "-", *devices]).stdout.split()
    assert outside == [ZFM_PORT, "ok", "/dev/vda", "ok", "/dev/mem", "ok"], outside
    # ... in the running unit's cgroup (its BPF device program) only the serial port does:
    # EPERM (1) for the disk and the memory device, root or not.
    inside = vm.run(["python3", "/root/device-probe.py", props["ControlGroup"],
                     *devices]).stdout.split()
    assert inside == [ZFM_PORT, "ok", "/dev/vda", "1", "/dev/mem", "1"], inside
    assert vm.run(["systemctl", "is-active", UNIT]).stdout.strip() == "active"


def test_card_and_finger_open_the_door_and_a_wrong_finger_does_not(door: Door) -> None:
    """The OSDP reader presents Alice's card; the running unit asks the ZFM module (over
    ttyUSB0) for a finger: a stranger's is denied, hers is granted; both at the collector."""
    module, reader = door.module, door.reader
    before = len(module.commands)
    module.place(STRANGER_FINGER)
    t0 = time.monotonic()
    reader.present_card(ALICE_UID)
    denied = door.wait_event("door.denied", uid=ALICE_UID)
    timing("door_card_to_denied_at_collector", time.monotonic() - t0)
    assert denied["data"]["reason"] == "finger_mismatch", denied["data"]
    assert denied["data"]["reader_id"] == "entry" and denied["data"]["person_id"] == ALICE
    # The running unit asked the module: a capture, her template down, a match score.
    seen = module.commands[before:]
    for code in (zfm.GEN_IMG, zfm.IMG2TZ, zfm.DOWN_CHAR, zfm.MATCH):
        assert code in seen, (zfm.instruction_name(code), seen)
    module.place(ALICE_FINGER)
    t0 = time.monotonic()
    reader.present_card(ALICE_UID)
    granted = door.wait_event("door.granted", uid=ALICE_UID)
    timing("door_card_and_finger_to_granted_at_collector", time.monotonic() - t0)
    module.place(None)
    assert granted["data"]["person_id"] == ALICE and granted["data"]["door_id"] == DOOR_ID
    door.wait_event("door.unlocked", door_id=DOOR_ID)
    assert module.problems == [], module.problems
    assert not module.holds_template(), "the running door left a template on the module"
    journal = door.vm.run(f"journalctl -b -u {UNIT} --no-pager -o cat").stdout
    for bad in ("Traceback", "Operation not permitted", "Permission denied"):
        assert bad not in journal, journal[-3000:]
