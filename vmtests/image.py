"""The workstation test image: a cached Debian 12 base (build-base.sh) plus the project.

    python vmtests/image.py          # build (or reuse) the image, print its files

Caches live under /var/cache/floor-agent-vm (FLOOR_VM_CACHE), never in the repository:
`base-<hash of build-base.sh>/` (the Debian root file system), `wheels/` (the project and its
dependencies, built on the host: the guest has no route to a package index), and
`disk-<hash of base, wheels and guest files>/` (kernel, initrd, ext4 disk). QEMU boots the
disk with snapshot=on, so the cached disk is never changed by a run.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from os import environ
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CACHE = Path(environ.get("FLOOR_VM_CACHE", "/var/cache/floor-agent-vm"))
GUEST_FILES = [HERE / "guest" / "vm-agent.py", HERE / "guest" / "vm-agent.service"]
# The collector as the guest sees it: QEMU's guestfwd turns 10.0.2.100:8443 into the host's
# collector on loopback, whatever port it listens on this run.
ROLE = "workstation"    # the role's extra: only its own dependencies are installed
# How the project gets in: "auto" (dist/*.deb if built, else wheels), "deb" or "wheels".
INSTALL = environ.get("FLOOR_VM_INSTALL", "auto")
COLLECTOR_NAME = "collector.vm"
COLLECTOR_GUEST_ADDRESS = "10.0.2.100"
COLLECTOR_GUEST_PORT = 8443


@dataclass(frozen=True)
class Image:
    kernel: Path
    initrd: Path
    disk: Path


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


@contextmanager
def _locked(name: str) -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _log(msg: str) -> None:
    print(f"[vm-image] {msg}", file=sys.stderr, flush=True)


def base_rootfs() -> Path:
    """Debian 12 minbase + systemd, udev, the kernel...: rebuilt when build-base.sh changes."""
    script = HERE / "build-base.sh"
    out = CACHE / f"base-{_digest(script.read_bytes())}"
    with _locked("base"):
        if not (out / "done").exists():
            t0 = time.monotonic()
            _log(f"building {out} (mmdebstrap, about a minute)")
            subprocess.run(["bash", str(script), str(out)], check=True)
            _log(f"base built in {time.monotonic() - t0:.0f} s")
    return out / "rootfs"


def project_wheels(role: str = ROLE) -> list[Path]:
    """The project's wheel and every dependency's, built on the host from its package index."""
    wheels = CACHE / "wheels"
    with _locked("wheels"):
        wheels.mkdir(parents=True, exist_ok=True)
        for old in wheels.glob("floor_agent-*.whl"):
            old.unlink()
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(wheels),
                        "--find-links", str(wheels), f"{REPO}[{role}]"], check=True)
    return sorted(wheels.glob("*.whl"))


def _chroot(root: Path, *argv: str) -> None:
    """Run in the image, with none of the host's environment (its pip settings above all)."""
    subprocess.run(["chroot", str(root), *argv], check=True, env={
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"})


def install_project(root: Path, role: str = ROLE) -> None:
    """Install floor-agent's `role` (the workstation unless told) into the root file system
    `root`, as an admin would. The one place that says how: the role's Debian package once
    `make packages` has built it, until then (workstation only) the project's wheels into
    /opt/floor-agent/venv (the unit's path)."""
    debs = [sorted((REPO / "dist").glob(f"floor-agent-{name}_*.deb"))
            for name in ("common", role)]
    if all(debs) and INSTALL != "wheels":
        _log(f"installing {', '.join(found[-1].name for found in debs)}")
        names = [found[-1].name for found in debs]
        for found in debs:
            shutil.copy(found[-1], root / "tmp" / found[-1].name)
        # No service is started or stopped inside the chroot (Debian's policy-rc.d protocol).
        policy = root / "usr" / "sbin" / "policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        install = ("apt-get", "install", "-y", "--no-install-recommends",
                   *(f"/tmp/{name}" for name in names))
        try:
            # The base has no package index: a role whose Debian dependencies are not in it
            # (the door's pcscd) gets them from the base's own sources, as an admin's apt
            # would; the index is dropped again afterwards.
            probe = subprocess.run(["chroot", str(root), *install[:3], "--simulate",
                                    *install[3:]], capture_output=True)
            indexed = probe.returncode != 0
            if indexed:
                _log("dependencies outside the base: apt-get update in the image")
                _chroot(root, "apt-get", "update", "-q")
            _chroot(root, *install)
            if indexed:
                _chroot(root, "apt-get", "clean")
                for lists in (root / "var" / "lib" / "apt" / "lists").glob("*_*"):
                    lists.unlink()
        finally:
            policy.unlink()
            for name in names:
                (root / "tmp" / name).unlink()
    else:
        if INSTALL == "deb" or role != ROLE:
            raise RuntimeError(f"dist/ has no floor-agent-{role} package (or FLOOR_VM_INSTALL="
                               f"wheels): ROLES={role} make packages")
        _log("no packages in dist/: installing the wheels into /opt/floor-agent/venv")
        wheels = project_wheels()
        staging = root / "tmp" / "wheels"
        staging.mkdir()
        for wheel in wheels:
            shutil.copy(wheel, staging / wheel.name)
        _chroot(root, "python3", "-m", "venv", "/opt/floor-agent/venv")
        _chroot(root, "/opt/floor-agent/venv/bin/pip", "install", "-q", "--no-index",
                "--find-links", "/tmp/wheels", f"floor-agent[{ROLE}]")
        shutil.rmtree(staging)
        etc = root / "etc" / "floor-agent"
        etc.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "config" / "workstation.yaml", etc / "workstation.yaml")
        shutil.copy(REPO / "config" / "usb-rules.conf", etc / "usb-rules.conf")
        shutil.copy(REPO / "systemd" / "floor-agent.service",
                    root / "etc" / "systemd" / "system" / "floor-agent.service")
        _chroot(root, "systemctl", "enable", "floor-agent.service")
        (root / "usr" / "local" / "bin" / "floor-agent").symlink_to(
            "/opt/floor-agent/venv/bin/floor-agent")
    if role != ROLE:
        return      # a collector listens; it has no collector_url to point anywhere
    # This site's collector address: the one line an admin edits before enrolling.
    config = root / "etc" / "floor-agent" / "workstation.yaml"
    text = config.read_text()
    line = "  collector_url: https://127.0.0.1:8443\n"
    assert line in text, f"{config}: collector_url line not found"
    config.write_text(text.replace(
        line, f"  collector_url: https://{COLLECTOR_NAME}:{COLLECTOR_GUEST_PORT}\n"))


def _install_test_channel(root: Path) -> None:
    lib = root / "usr" / "local" / "lib" / "floor-vm"
    lib.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "guest" / "vm-agent.py", lib / "vm-agent.py")
    shutil.copy(HERE / "guest" / "vm-agent.service",
                root / "etc" / "systemd" / "system" / "vm-agent.service")
    _chroot(root, "systemctl", "enable", "vm-agent.service")
    with (root / "etc" / "hosts").open("a") as hosts:
        hosts.write(f"{COLLECTOR_GUEST_ADDRESS} {COLLECTOR_NAME}\n")
    # The project, read-only over 9p (mounted when a test wants it).
    (root / "mnt" / "proj").mkdir(parents=True, exist_ok=True)
    with (root / "etc" / "fstab").open("a") as fstab:
        fstab.write("proj /mnt/proj 9p trans=virtio,version=9p2000.L,ro,nofail,noauto 0 0\n")


def _project_inputs(role: str = ROLE) -> list[bytes]:
    """What the installed project is made of: the tracked sources and packaging files."""
    listed = subprocess.run(["git", "ls-files", "floor_agent", "pyproject.toml", "systemd",
                             "config"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.split()
    parts = [name.encode() + (REPO / name).read_bytes()
             for name in listed if (REPO / name).is_file()]
    parts += [p.name.encode() + p.read_bytes() for name in ("common", role)
              for p in sorted(REPO.glob(f"dist/floor-agent-{name}_*.deb"))]
    return parts


# A candidate for the zero window at boot (vmtests/test_boot_lock.py proves it): usbcore is a
# module of Debian's kernel, loaded from the initramfs, and takes its options from
# /etc/modprobe.d there, so every root hub starts with authorized_default=0 before the first
# device is enumerated. Not installed by the package yet: the image adds it only when asked.
BOOT_LOCK_FILE = "etc/modprobe.d/floor-agent-usb-lock.conf"
BOOT_LOCK = (REPO / "packaging" / "floor-agent-usb-lock.conf").read_text()  # as shipped


def _add_boot_lock(root: Path) -> None:
    (root / BOOT_LOCK_FILE).write_text(BOOT_LOCK)
    _chroot(root, "update-initramfs", "-u")


def build(boot_lock: bool = False, role: str = ROLE) -> Image:
    """The image (cached); `boot_lock` adds BOOT_LOCK to it, another `role` (e.g. "collector")
    installs that role's package instead of the workstation's, each in its own cache entry."""
    base = base_rootfs()
    variant = "bootlock" if boot_lock else "plain"
    if role != ROLE:
        variant = f"{role}-{variant}"
    key = _digest(base.parent.name.encode(), INSTALL.encode(), variant.encode(),
                  *(p.read_bytes() for p in GUEST_FILES), *_project_inputs(role),
                  Path(__file__).read_bytes())
    out = CACHE / f"disk-{variant}-{key}"
    image = Image(out / "vmlinuz", out / "initrd.img", out / "disk.img")
    with _locked("disk"):
        if (out / "done").exists():
            return image
        t0 = time.monotonic()
        work = CACHE / "work-rootfs"
        if work.exists():
            shutil.rmtree(work)
        _log("copying the base root file system")
        subprocess.run(["cp", "-a", str(base), str(work)], check=True)
        _install_test_channel(work)
        _log("installing the project")
        install_project(work, role)
        if boot_lock:
            _log("adding the boot lock and rebuilding the initramfs")
            _add_boot_lock(work)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(sorted((work / "boot").glob("vmlinuz-*"))[-1], image.kernel)
        shutil.copy(sorted((work / "boot").glob("initrd.img-*"))[-1], image.initrd)
        _log("making the ext4 disk")
        with image.disk.open("wb") as disk:
            disk.truncate(4 << 30)
        subprocess.run(["nice", "-n", "10", "mkfs.ext4", "-q", "-F", "-L", "root", "-d",
                        str(work), str(image.disk)], check=True)
        shutil.rmtree(work)
        (out / "done").touch()
        # Older disks of this cache are stale: keep the newest only.
        for stale in CACHE.glob(f"disk-{variant}-*"):
            if stale != out:
                shutil.rmtree(stale, ignore_errors=True)
        _log(f"image built in {time.monotonic() - t0:.0f} s")
    return image


if __name__ == "__main__":
    built = build()
    print(built.kernel, built.initrd, built.disk)
