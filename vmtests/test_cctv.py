"""The camera box on a real systemd: the cctv package installed and enrolled as the README says.

One guest with dist/floor-agent-cctv_*.deb (and -common) installed by apt, enrolled at the
host's collector as `floor-vm-cctv`. Its camera is a synthetic H.264 recording made on the host
by the project's own camera helpers (the guest has no network but the collector), copied in and
named in cctv.yaml as a file source. The tests run in file order: the unit under its own user
and groups, its device policy as the kernel applies it to the unit's cgroup, the segments it
records (verified by `floor-agent cctv verify`, reported to the collector), and last a segment
altered on disk, which verify must catch.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import HostCollector, timing
from image import COLLECTOR_GUEST_PORT, COLLECTOR_NAME, INSTALL, REPO, build
from vm import Guest

from floor_agent.simulated.camera import SimpleScript, make_camera_file

UNIT = "floor-cctv.service"
CONFIG = "/etc/floor-agent/cctv.yaml"
USER = "floor-cctv"
AGENT = "floor-vm-cctv"         # the config's default: <hostname>-cctv
CAMERA = "vm-cam-1"
CAMERA_FILE = "/srv/cctv/vm-cam-1.mp4"
STORAGE = "/var/lib/floor-agent/cctv/footage"
SECONDS = 24                    # of synthetic footage: segments of 10 s, the last one shorter
# Run as root by the test channel: try to open each device before and after joining the unit's
# cgroup (cgroup v2: systemd's DevicePolicy is a BPF program attached to that cgroup, which
# judges every process in it, root included), then as the unit's user and groups.
PROBE = b"""import errno, json, os, sys
cgroup, user_uid, user_gid, groups = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
devices = sys.argv[5:]
def tries():
    out = {}
    for path in devices:
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
            out[path] = "ok"
        except OSError as exc:
            out[path] = errno.errorcode.get(exc.errno, str(exc.errno))
    return out
result = {"outside": tries()}
with open(f"/sys/fs/cgroup{cgroup}/cgroup.procs", "w") as procs:
    procs.write(str(os.getpid()))
result["cgroup"] = open(f"/proc/{os.getpid()}/cgroup").read().strip()
result["inside_root"] = tries()
os.setgroups([int(g) for g in groups.split(",")])
os.setgid(user_gid)
os.setuid(user_uid)
result["inside_user"] = tries()
print(json.dumps(result))
"""


def show(vm: Guest, unit: str, *props: str) -> dict[str, str]:
    out = vm.run(["systemctl", "show", unit, *(f"--property={p}" for p in props)]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def proc_status(vm: Guest, pid: str) -> dict[str, str]:
    text = vm.run(["cat", f"/proc/{pid}/status"]).stdout
    return {key: value.strip() for key, value in
            (line.split(":", 1) for line in text.splitlines() if ":" in line)}


def camera_config(text: str) -> str:
    """The shipped cctv.yaml with this site's collector address and one camera: the two
    edits an admin makes (yaml round trip: the comments go, the shipped values stay)."""
    config = yaml.safe_load(text)
    assert config["audit"]["collector_url"] == "https://127.0.0.1:8443"
    config["audit"]["collector_url"] = f"https://{COLLECTOR_NAME}:{COLLECTOR_GUEST_PORT}"
    assert config["cctv"]["cameras"] == []
    config["cctv"]["cameras"] = [{"camera_id": CAMERA, "name": "VM camera, a file",
                                  "url": CAMERA_FILE}]
    return yaml.safe_dump(config, sort_keys=False)


@pytest.fixture(scope="module")
def box(collector: HostCollector, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    if not sorted(REPO.glob("dist/floor-agent-cctv_*.deb")) or INSTALL == "wheels":
        pytest.skip("no dist/floor-agent-cctv_*.deb (ROLES=cctv make packages): "
                    "the camera box is tested as its package installs it")
    t0 = time.monotonic()
    image = build(role="cctv")
    timing("cctv_image_build_or_cache", time.monotonic() - t0)
    work = tmp_path_factory.mktemp("vm-cctv")
    footage = make_camera_file(work / "camera.mp4", script=SimpleScript(seconds=SECONDS))
    collector.agent_id = AGENT
    vm = Guest(image, work, collector.port)
    try:
        timing("cctv_qemu_start_to_system_running", vm.boot())
        vm.run("install -d -m 0755 /srv/cctv")
        vm.write(CAMERA_FILE, footage.read_bytes(), mode=0o644)
        vm.write(CONFIG, camera_config(vm.read(CONFIG).decode()).encode(), mode=0o644)
        vm.write("/tmp/collector-ca.pem", collector.ca.read_bytes(), mode=0o644)
        yield vm
    finally:
        vm.close()


def test_the_unit_starts_under_its_own_user_with_group_video(
        box: Guest, collector: HostCollector) -> None:
    # Installed and enabled; not enrolled, it refused to start at boot (exit 2, no restart).
    assert box.run(["systemctl", "is-enabled", UNIT]).stdout.strip() == "enabled"
    before = show(box, UNIT, "ActiveState", "ExecMainStatus")
    assert before["ActiveState"] != "active", before
    t0 = time.monotonic()
    box.run(["runuser", "-u", USER, "--", "floor-agent", "enroll", "--config", CONFIG,
             "--token", collector.token("cctv"), "--ca", "/tmp/collector-ca.pem"], timeout=300)
    timing("cctv_enroll", time.monotonic() - t0)
    box.run(["systemctl", "reset-failed", UNIT], check=False)
    t0 = time.monotonic()
    box.run(["systemctl", "start", UNIT], timeout=400)    # Type=notify: returns when ready
    timing("cctv_systemctl_start_to_ready", time.monotonic() - t0)
    props = show(box, UNIT, "MainPID", "ActiveState", "SubState", "Type", "User",
                 "SupplementaryGroups")
    assert (props["ActiveState"], props["SubState"], props["Type"]) == (
        "active", "running", "notify"), props
    assert props["User"] == USER and props["SupplementaryGroups"] == "video"
    status = proc_status(box, props["MainPID"])
    uid = box.run(["id", "-u", USER]).stdout.strip()
    gid = box.run(["id", "-g", USER]).stdout.strip()
    video = box.run(["getent", "group", "video"]).stdout.split(":")[2]
    assert status["Uid"].split() == [uid] * 4, status["Uid"]
    assert status["Gid"].split() == [gid] * 4, status["Gid"]
    assert video in status["Groups"].split(), status["Groups"]
    assert uid != "0" and status["CapEff"] == "0000000000000000"
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"
    collector.wait_event("agent.started", seconds=120)


def test_the_device_policy_is_applied_to_the_units_cgroup(box: Guest) -> None:
    props = show(box, UNIT, "DevicePolicy", "DeviceAllow", "ControlGroup", "MainPID")
    assert props["DevicePolicy"] == "closed"
    assert props["DeviceAllow"] == "char-video4linux rw", props["DeviceAllow"]
    # systemd resolves char-video4linux from /proc/devices when the unit starts: the class is
    # there only with videodev loaded, which the package has done at boot (modules-load.d).
    assert box.run(["cat", "/usr/lib/modules-load.d/floor-agent-cctv.conf"]).stdout.split(
        "\n")[-2] == "videodev"
    assert "video4linux" in box.run(["cat", "/proc/devices"]).stdout
    # A camera whose driver loads after the recorder started (a USB camera plugged later):
    # the kernel's virtual test camera, of the policy's own class.
    box.run("modprobe vivid n_devs=1 node_types=0x1 && udevadm settle", timeout=120)
    video = box.wait_until("ls /dev/video* | head -1", seconds=30).strip()
    assert video.startswith("/dev/video"), video
    box.write("/root/device-probe.py", PROBE)
    uid = box.run(["id", "-u", USER]).stdout.strip()
    gid = box.run(["id", "-g", USER]).stdout.strip()
    groups = ",".join(box.run(["id", "-G", USER]).stdout.split())
    probe = json.loads(box.run(["python3", "/root/device-probe.py", props["ControlGroup"],
                                uid, gid, groups, "/dev/vda", video, "/dev/null"]).stdout)
    # Outside the unit root opens the disk; in the unit's cgroup the kernel refuses it (EPERM
    # from the device filter, not EACCES from the file mode: the prober is still root),
    # while the camera and the pseudo devices systemd always allows open.
    assert probe["cgroup"] == f"0::{props['ControlGroup']}", probe
    assert probe["outside"] == {"/dev/vda": "ok", video: "ok", "/dev/null": "ok"}, probe
    assert probe["inside_root"] == {"/dev/vda": "EPERM", video: "ok", "/dev/null": "ok"}, probe
    # As the unit's user: the camera through group video (its node is root:video 0660).
    assert probe["inside_user"][video] == "ok", probe
    assert probe["inside_user"]["/dev/vda"] in ("EPERM", "EACCES"), probe
    assert box.run(["stat", "-c", "%G %a", video]).stdout.split() == ["video", "660"]
    # The service itself was not disturbed by the prober joining its cgroup and leaving.
    assert show(box, UNIT, "MainPID")["MainPID"] == props["MainPID"]


def test_the_camera_is_recorded_into_segments_that_verify(
        box: Guest, collector: HostCollector) -> None:
    t0 = time.monotonic()
    # 24 s of footage in 10 s segments: 3 segments, the last one closed at the end of file
    # (a file is not reopened; a restarted service would record it again from seq 4).
    deadline = time.monotonic() + 600
    while len(segments := collector.events("cctv.segment", camera_id=CAMERA)) < 3:
        assert time.monotonic() < deadline, f"{len(segments)} segments at the collector"
        time.sleep(1)
    timing("cctv_start_to_3_segments_at_collector", time.monotonic() - t0)
    by_seq = {event["data"]["seq"]: event["data"] for event in segments}
    assert sorted(by_seq) == [1, 2, 3], sorted(by_seq)
    # The chain as the collector has it, against the files in the guest.
    previous = by_seq[1]["prev_sha256"]
    for seq in (1, 2, 3):
        data = by_seq[seq]
        assert data["prev_sha256"] == previous
        stored = box.read(f"{STORAGE}/{data['path']}")
        assert hashlib.sha256(stored).hexdigest() == data["sha256"]
        assert len(stored) == data["size"] and data["keyframe_start"] is True
        previous = data["sha256"]
    total_ms = sum(by_seq[seq]["duration_ms"] for seq in (1, 2, 3))
    assert abs(total_ms - SECONDS * 1000) <= 200, total_ms
    listing = box.run(f"stat -c '%U %a %n' {STORAGE} {STORAGE}/{CAMERA}").stdout.split("\n")
    assert all(line.startswith(f"{USER} 700 ") for line in listing if line), listing
    done = box.run(["runuser", "-u", USER, "--", "floor-agent", "cctv", "verify",
                    "--config", CONFIG], timeout=300)
    assert f"{CAMERA}: intact: 3 segments checked" in done.stdout, done.stdout


def test_verify_catches_a_segment_altered_on_disk(box: Guest,
                                                  collector: HostCollector) -> None:
    second = next(event["data"] for event in collector.events("cctv.segment", camera_id=CAMERA)
                  if event["data"]["seq"] == 2)
    box.run(f"printf x >> {STORAGE}/{second['path']}")
    done = box.run(["runuser", "-u", USER, "--", "floor-agent", "cctv", "verify",
                    "--config", CONFIG], timeout=300, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{CAMERA}: BROKEN" in done.stdout and Path(second["path"]).name in done.stdout, \
        done.stdout
    own = box.run(f"journalctl -b -u {UNIT} --no-pager -o cat").stdout
    for bad in ("Traceback", "Operation not permitted", "denied"):
        assert bad not in own, own[-3000:]
