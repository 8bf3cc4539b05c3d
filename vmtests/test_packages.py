"""Every role's Debian package through its life cycle, as an admin meets it: install, upgrade,
remove (the workstation), purge, with apt in a chroot made from the VM base
(image.base_rootfs(): Debian 12 minbase), no VM boot.

One copy of the base for the whole session; the roles take turns in it (each installs
-common with it and purges both at the end: a role package pins -common to its own version, so
two roles cannot sit at different revisions). Debian's policy-rc.d protocol (exit 101) keeps
every service from starting; `systemctl is-enabled` reads the unit links offline. The upgrade
goes to revision N+1 of dist/'s packages, built once per session from HEAD into a temporary
directory (`DIST=... DEB_REVISION=N+1 make packages`). apt fetches the roles' Debian
dependencies the base lacks (pcscd) from the host's own apt sources and lists. Last, every
role at once on the one host, and which tree /usr/bin/floor-agent runs.

The chroot's initramfs-tools is set to MODULES=list (an initramfs in 4 s instead of 45): the
packages' update-initramfs still runs for real, and `lsinitramfs` shows whether the boot lock
is in it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import Distribution, distributions
from pathlib import Path

import pytest
from conftest import timing
from image import REPO, base_rootfs
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROLES = ("workstation", "door", "cctv", "collector", "retention")
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
       "HOME": "/root", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
BOOT_LOCK = "/etc/modprobe.d/floor-agent-usb-lock.conf"
EDIT = "\n# an admin's edit (vmtests/test_packages.py)\n"
DATA = b"what the role recorded\n"


@dataclass(frozen=True)
class Role:
    user: str                   # the system user the units run as
    groups: tuple[str, ...]     # its supplementary groups
    state: tuple[str, ...]      # under /var/lib/floor-agent, 0700, the user's
    enabled: tuple[str, ...]    # units and timers the README says are enabled at install
    command: str                # `floor-agent <command> --help`: the role's own command


# As README.md ("Packages") says.
SPEC = {
    "workstation": Role("root", (), ("workstation",), ("floor-agent.service",), "workstation"),
    "door": Role("floor-door", ("dialout",), ("door",), ("floor-door.service",), "door"),
    "cctv": Role("floor-cctv", ("video",), ("cctv",), ("floor-cctv.service",), "cctv"),
    "collector": Role("floor-collector", (), ("collector", "backups"),
                      ("floor-collector.service", "floor-backup.timer"), "collector"),
    "retention": Role("floor-retention", (), ("retention",), ("floor-retention.timer",),
                      "retention"),
}
# The modules a role must not carry (the brief's list); the exact set is checked against
# pyproject.toml's extras below.
NOT_IN = {
    "workstation": ("cv2", "av", "weasyprint", "fastapi", "uvicorn", "psycopg"),
    "door": ("cv2", "av", "weasyprint", "fastapi"),
    "cctv": ("weasyprint", "fastapi"),
    "retention": ("cv2", "av", "weasyprint", "fastapi", "uvicorn", "psycopg"),
}


def debs(directory: Path, name: str) -> list[Path]:
    return sorted(directory.glob(f"floor-agent-{name}_*.deb"))


def revision(deb: Path) -> int:
    match = re.fullmatch(r"[^_]+_[^_]+-(\d+)_[^_]+\.deb", deb.name)
    assert match, f"{deb.name}: not <package>_<version>-<revision>_<arch>.deb"
    return int(match.group(1))


def deb_member(deb: Path, path: str) -> bytes:
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True,
                         capture_output=True).stdout
    return subprocess.run(["tar", "-xO", f".{path}"], input=tar, check=True,
                          capture_output=True).stdout


class Chroot:
    """A copy of the VM base with apt usable (the host's sources and lists) and no service
    allowed to start."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["nice", "-n", "10", "chroot", str(self.root), *argv], env=ENV,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        if check and proc.returncode:
            raise AssertionError(f"{' '.join(argv)}: exit {proc.returncode}\n{proc.stdout}")
        return proc

    def apt(self, *argv: str, label: str = "") -> str:
        t0 = time.monotonic()
        out = self.run("apt-get", "-y", "--no-install-recommends", *argv).stdout
        # e.g. packages_install_floor-agent-door_0.1.0-2 (the last argument: the role's)
        timing(f"packages_{argv[0]}_{label or Path(argv[-1]).name.rsplit('_', 1)[0]}",
               time.monotonic() - t0)
        return out

    def install(self, *packages: Path, label: str = "") -> str:
        for deb in packages:
            shutil.copy(deb, self.path("/tmp") / deb.name)
        try:
            return self.apt("install", *(f"/tmp/{deb.name}" for deb in packages), label=label)
        finally:
            for deb in packages:
                self.path("/tmp").joinpath(deb.name).unlink()

    def status(self, package: str) -> str:
        """dpkg's status ("ii", "rc"...) and version, or "" when dpkg knows nothing of it."""
        proc = self.run("dpkg-query", "-W", "-f=${db:Status-Abbrev}${Version}", package,
                        check=False)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    def conffiles(self, package: str) -> dict[str, str]:
        """dpkg's conffiles of `package`: path -> md5 of the copy the package shipped."""
        out = self.run("dpkg-query", "-W", "-f=${Conffiles}", package).stdout
        return {path: md5 for path, md5, *_ in (line.split() for line in out.splitlines()
                                                  if line.strip())}

    def helper_records(self, unit: str) -> list[Path]:
        """deb-systemd-helper's records of `unit` (enabled state, masks) under /var/lib/systemd."""
        return list(self.path("/var/lib/systemd").glob(f"deb-systemd-helper-*/**/{unit}*"))

    def enabled(self, unit: str) -> str:
        return self.run("systemctl", "is-enabled", unit, check=False).stdout.strip()

    def initramfs(self) -> list[str]:
        initrd = sorted(self.path("/boot").glob("initrd.img-*"))[-1]
        return self.run("lsinitramfs", f"/boot/{initrd.name}").stdout.split()

    def stat(self, path: str) -> tuple[int, str, str]:
        mode, user, group = self.run("stat", "-c", "%a %U %G", path).stdout.split()
        return int(mode, 8), user, group


@pytest.fixture(scope="module")
def chroot() -> Iterator[Chroot]:
    if os.geteuid() != 0:
        pytest.skip("the package tests run apt in a chroot: root only")
    if not debs(REPO / "dist", "common"):
        pytest.skip("dist/ has no packages: make packages")
    base = base_rootfs()
    t0 = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="floor-pkgtest-", dir="/var/tmp"))
    try:
        subprocess.run(["nice", "-n", "10", "cp", "-a", f"{base}/.", str(root)], check=True)
        box = Chroot(root)
        # apt: the host's Debian sources (the base was made from them) with its fresh lists,
        # its resolver for the downloads.
        shutil.copy("/etc/resolv.conf", box.path("/etc/resolv.conf"), follow_symlinks=True)
        lists = [f for f in Path("/var/lib/apt/lists").glob("*_Packages*") if f.is_file()]
        for f in [*lists, *Path("/var/lib/apt/lists").glob("*Release*")] if lists else []:
            shutil.copy(f, box.path("/var/lib/apt/lists") / f.name)
        if not lists:       # a host that never ran apt-get update
            box.run("apt-get", "update")
        policy = box.path("/usr/sbin/policy-rc.d")
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        conf = box.path("/etc/initramfs-tools/initramfs.conf")
        conf.write_text(re.sub(r"(?m)^MODULES=.*$", "MODULES=list", conf.read_text()))
        assert not box.path("/run/systemd/system").exists(), "the chroot must not look booted"
        timing("packages_chroot_copy", time.monotonic() - t0)
        yield box
    finally:
        mounted = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                   if line.split()[1].startswith(str(root))]
        if mounted:
            raise RuntimeError(f"{root}: still mounted, not removed: {mounted}")
        shutil.rmtree(root)


@pytest.fixture(scope="module")
def next_revision(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """dist/'s roles at revision N+1, built once from HEAD (`make packages` with DIST=)."""
    built = [role for role in ROLES if debs(REPO / "dist", role)]
    if not built or not debs(REPO / "dist", "common"):
        pytest.skip("dist/ has no packages: make packages")
    rev = max(revision(deb) for name in ("common", *built) for deb in debs(REPO / "dist", name))
    out = tmp_path_factory.mktemp("debs-next")
    t0 = time.monotonic()
    subprocess.run(["nice", "-n", "10", "bash", str(REPO / "packaging" / "build-debs.sh")],
                   check=True, stdout=subprocess.DEVNULL, env={
                       **os.environ, "DIST": str(out), "DEB_WORK": str(out / "work"),
                       "DEB_REVISION": str(rev + 1), "ROLES": " ".join(built),
                       "DEB_COMPRESS": "none"})
    timing(f"packages_build_revision_{rev + 1}_{len(built)}_roles", time.monotonic() - t0)
    shutil.rmtree(out / "work")
    yield out
    shutil.rmtree(out)      # uncompressed: about 0.8 GB


def own_dependencies(lib: Path, role: str) -> tuple[set[str], dict[str, Distribution]]:
    """The distributions `floor-agent[role]` needs (its closure, from the installed metadata,
    extras followed) and the ones that are in `lib`."""
    present = {canonicalize_name(d.metadata["Name"]): d for d in distributions(path=[str(lib)])}
    need: set[tuple[str, str]] = set()
    todo = [("floor-agent", role)]
    while todo:
        name, extra = todo.pop()
        if (name, extra) in need:
            continue
        need.add((name, extra))
        assert name in present, f"{lib}: {name} (needed by floor-agent[{role}]) is missing"
        for spec in present[name].requires or []:
            req = Requirement(spec)
            if req.marker and not req.marker.evaluate({"extra": extra}):
                continue
            dep = canonicalize_name(req.name)
            todo += [(dep, "")] + [(dep, e) for e in req.extras]
    return {name for name, _ in need}, present


def pyproject_extras() -> dict[str, set[str]]:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    return {role: {canonicalize_name(Requirement(r).name) for r in extras[role]}
            for role in ROLES}


# How far each role's life cycle got: a step runs only after the one before it passed.
REACHED: dict[str, str] = {}


def after(role: str, *steps: str) -> None:
    if not debs(REPO / "dist", role) or not debs(REPO / "dist", "common"):
        pytest.skip(f"dist/ has no floor-agent-{role} package: ROLES={role} make packages")
    if steps and REACHED.get(role) not in steps:
        pytest.skip(f"{role}: the {' or '.join(steps)} step did not pass")


@pytest.mark.parametrize("role", ROLES, scope="class")
class TestLifeCycle:
    """Per role, in this order: install, upgrade, remove (the workstation), purge."""

    def test_install(self, chroot: Chroot, role: str) -> None:
        after(role)
        spec = SPEC[role]
        package = f"floor-agent-{role}"
        common, deb = debs(REPO / "dist", "common")[-1], debs(REPO / "dist", role)[-1]
        # A role before this one that failed half-way leaves its packages: purge them first.
        leftover = [p for p in ("floor-agent-common", *(f"floor-agent-{r}" for r in ROLES))
                    if chroot.status(p)]
        if leftover:
            chroot.apt("purge", *leftover)
        out = chroot.install(common, deb)
        version = deb.name.split("_")[1]
        assert chroot.status(package) == f"ii {version}"
        assert chroot.status("floor-agent-common") == f"ii {version}"

        # The system user, its groups; the state directories 0700, the user's.
        if spec.user != "root":
            entry = chroot.run("getent", "passwd", spec.user).stdout.strip().split(":")
            assert int(entry[2]) < 1000, entry              # a system user
            assert entry[5] == f"/var/lib/floor-agent/{role}" and entry[6] == "/usr/sbin/nologin"
            groups = chroot.run("id", "-nG", spec.user).stdout.split()
            assert set(spec.groups) <= set(groups), groups
        for name in spec.state:
            assert chroot.stat(f"/var/lib/floor-agent/{name}") == (0o700, spec.user, spec.user)

        # The config a conffile; the units enabled.
        conffiles = chroot.conffiles(package)
        assert f"/etc/floor-agent/{role}.yaml" in conffiles, conffiles
        for unit in spec.enabled:
            assert chroot.enabled(unit) == "enabled", unit
            assert chroot.helper_records(unit), f"{unit}: deb-systemd-helper keeps no record"
        shipped = [line for line in chroot.run("dpkg", "-L", package).stdout.splitlines()
                   if line.startswith("/lib/systemd/system/")]
        assert {Path(u).name for u in shipped} >= set(spec.enabled), shipped

        # Only the role's Python dependencies: exactly the closure of floor-agent[role].
        lib = chroot.path(f"/usr/lib/floor-agent/{role}/lib")
        need, present = own_dependencies(lib, role)
        extras = pyproject_extras()
        foreign = set().union(*(extras[r] for r in ROLES if r != role)) - need
        assert not foreign & set(present), f"{role} carries {sorted(foreign & set(present))}"
        assert set(present) == need, f"not needed by floor-agent[{role}]: {set(present) - need}"
        for module in NOT_IN.get(role, ()):
            assert not (lib / module).exists(), module
        assert list(lib.rglob("*.pyc")), "postinst compiles the bytecode"

        # The commands run with the role's tree (the only one installed).
        assert "usage: floor-agent" in chroot.run("floor-agent", "--help").stdout
        assert "usage: floor-agent" in chroot.run("floor-agent", spec.command, "--help").stdout
        check = chroot.run("floor-agent", "config", "check", f"/etc/floor-agent/{role}.yaml")
        assert check.returncode == 0
        chroot.run(f"/usr/lib/floor-agent/{role}/bin/floor-agent", "--help")

        if role == "workstation":
            # One USB authority: Debian's usbguard goes (Conflicts), in the output for all to see.
            assert re.search(r"will be REMOVED:\n\s+usbguard\n", out), out
            assert not chroot.status("usbguard").startswith("ii")
            assert chroot.path(BOOT_LOCK).read_text().strip().endswith(
                "options usbcore authorized_default=0")
            assert BOOT_LOCK in conffiles, conffiles
            assert BOOT_LOCK.lstrip("/") in chroot.initramfs(), "postinst rebuilt the initramfs"
        REACHED[role] = "install"

    def test_upgrade_keeps_config_and_data(self, chroot: Chroot, next_revision: Path,
                                           role: str) -> None:
        after(role, "install")
        spec = SPEC[role]
        package = f"floor-agent-{role}"
        config = chroot.path(f"/etc/floor-agent/{role}.yaml")
        edited = config.read_text() + EDIT
        config.write_text(edited)                   # the admin's change
        # What the role recorded (the collector's backups stay empty: purge removes that one).
        kept = f"/var/lib/floor-agent/{role}/kept.dat"
        chroot.path(kept).write_bytes(DATA)
        chroot.run("chown", f"{spec.user}:{spec.user}", kept)
        old = debs(REPO / "dist", role)[-1]
        new = debs(next_revision, role)[-1]
        common = debs(next_revision, "common")[-1]
        assert revision(new) == revision(old) + 1
        # The package's copy unchanged between the revisions: dpkg keeps the admin's file
        # without a question (stdin is /dev/null: a prompt would fail the run).
        path = f"/etc/floor-agent/{role}.yaml"
        shipped = chroot.conffiles(package)[path]       # dpkg's record of the -N copy
        assert hashlib.md5(edited.encode()).hexdigest() != shipped
        assert hashlib.md5(deb_member(new, path)).hexdigest() == shipped, \
            f"{path} differs between {old.name} and {new.name}: rebuild dist/ (make packages)"
        out = chroot.install(common, new)
        assert "Configuration file" not in out, out
        version = new.name.split("_")[1]
        assert chroot.status(package) == f"ii {version}"
        assert config.read_text() == edited
        assert chroot.conffiles(package)[path] == shipped
        assert chroot.path(kept).read_bytes() == DATA
        assert chroot.stat(kept)[1] == spec.user
        for name in spec.state:
            assert chroot.stat(f"/var/lib/floor-agent/{name}") == (0o700, spec.user, spec.user)
        for unit in spec.enabled:
            assert chroot.enabled(unit) == "enabled", unit
        assert "usage: floor-agent" in chroot.run("floor-agent", spec.command, "--help").stdout
        REACHED[role] = "upgrade"

    def test_remove_keeps_the_boot_lock(self, chroot: Chroot, role: str) -> None:
        after(role, "upgrade")
        if role != "workstation":
            pytest.skip("remove, then purge: the workstation's (the others purge at once)")
        out = chroot.apt("remove", "floor-agent-workstation")
        assert chroot.status("floor-agent-workstation").startswith("rc ")
        assert not chroot.path("/usr/lib/floor-agent/workstation").exists()
        assert chroot.enabled("floor-agent.service") == "masked"
        assert f"({BOOT_LOCK}) stays until purge" in out, out
        assert chroot.path(BOOT_LOCK).exists()
        assert BOOT_LOCK.lstrip("/") in chroot.initramfs()
        assert chroot.path("/etc/floor-agent/workstation.yaml").read_text().endswith(EDIT)
        REACHED[role] = "remove"

    def test_purge_says_what_it_keeps(self, chroot: Chroot, role: str) -> None:
        after(role, "upgrade", "remove")
        spec = SPEC[role]
        package = f"floor-agent-{role}"
        units = [line for line in chroot.run("dpkg", "-L", package, check=False).stdout.split()
                 if line.startswith("/lib/systemd/system/")] or [
            f"/lib/systemd/system/{unit}" for unit in spec.enabled]
        out = chroot.apt("purge", package)
        assert not chroot.status(package), chroot.status(package)

        # Gone: the tree, the units (files, links, deb-systemd-helper's records), the config.
        assert not chroot.path(f"/usr/lib/floor-agent/{role}").exists()
        for unit in units:
            name = Path(unit).name
            assert not chroot.path(unit).exists(), unit
            assert not list(chroot.path("/etc/systemd/system").rglob(name)), name
            assert not chroot.helper_records(name), name
        assert not chroot.path(f"/etc/floor-agent/{role}.yaml").exists()

        # Kept, and said: the state directory with data (an empty one goes), the system user.
        for name in spec.state:
            state = f"/var/lib/floor-agent/{name}"
            said = f"purge keeps {state} " in out
            if name == role:
                assert said, out
                assert chroot.path(f"{state}/kept.dat").read_bytes() == DATA
                assert chroot.stat(state) == (0o700, spec.user, spec.user)
            else:
                assert not said and not chroot.path(state).exists(), out
        said = f"purge keeps the system user {spec.user} " in out
        if spec.user == "root":
            assert "system user" not in out, out
        else:
            assert said, out
            assert chroot.run("getent", "passwd", spec.user, check=False).returncode == 0

        if role == "workstation":
            assert not chroot.path(BOOT_LOCK).exists()
            assert not chroot.path("/etc/floor-agent/usb-rules.conf").exists()
            assert BOOT_LOCK.lstrip("/") not in chroot.initramfs(), "postrm rebuilt it"

        # No role left: the command says what to install; -common goes last, with
        # /usr/bin/floor-agent and /etc/floor-agent.
        gone = chroot.run("floor-agent", "--help", check=False)
        assert gone.returncode == 1 and "apt install floor-agent-<role>" in gone.stdout, gone
        chroot.apt("purge", "floor-agent-common")
        assert not chroot.status("floor-agent-common")
        assert not chroot.path("/usr/bin/floor-agent").exists()
        assert not chroot.path("/etc/floor-agent").exists()


def test_every_role_on_one_host(chroot: Chroot, next_revision: Path) -> None:
    """The README's "a host may carry several roles": every role's package at once (no file
    of one is another's), and /usr/bin/floor-agent runs the tree of the role the command
    names, else of its --config file, else the first installed."""
    built = [role for role in ROLES if debs(next_revision, role)]
    if len(built) < 2:
        pytest.skip("fewer than two roles in dist/: make packages")
    installed = ["floor-agent-common", *(f"floor-agent-{role}" for role in built)]
    leftover = [p for p in installed if chroot.status(p)]
    if leftover:
        chroot.apt("purge", *leftover)
    chroot.install(*(debs(next_revision, name)[-1] for name in ("common", *built)),
                   label="every_role")
    for package in installed:
        assert chroot.status(package).startswith("ii "), package

    def runs(*argv: str) -> str:
        """The tree /usr/bin/floor-agent hands `argv` to (which must then succeed)."""
        trace = chroot.run("sh", "-x", "/usr/bin/floor-agent", *argv).stdout
        execs = re.findall(r"^\+ exec /usr/lib/floor-agent/(\w+)/bin/floor-agent ", trace,
                           re.MULTILINE)
        assert len(execs) == 1, trace
        return execs[0]

    cases = {("usb", "--help"): "workstation", ("netlock", "--help"): "workstation",
             ("door", "--help"): "door", ("cctv", "--help"): "cctv",
             ("report", "--help"): "collector", ("privacy", "--help"): "collector",
             ("collector", "--help"): "collector", ("retention", "--help"): "retention",
             ("enroll", "--config", "/etc/floor-agent/door.yaml", "--help"): "door",
             ("enroll", "--config=/etc/floor-agent/retention.yaml", "--help"): "retention",
             ("--help",): built[0]}
    for argv, role in cases.items():
        if role in built:
            assert runs(*argv) == role, argv
    chroot.apt("purge", *installed, label="every_role")
    for package in installed:
        assert not chroot.status(package), package
