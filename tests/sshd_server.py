"""A real OpenSSH server on 127.0.0.1 for the SFTP offload tests, independent of pytest.

Everything lives in a temp dir: a fresh ed25519 host key, a client key whose public half is the
only authorized key, the config, the pid file and the home dir the SFTP subsystem starts in
(`internal-sftp -d`, no chroot). As root: StrictModes off (the temp dir is not root's home),
UsePAM off, only public-key login for the current user, or with `login_user` for another
local user (e.g. "nobody"), so a test meets the server's real permission errors: root reads
and deletes everything. sshd reads authorized_keys as the login user, so the temp dir then
opens for traversal (0711; the private keys stay 0600) and the SFTP home belongs to that user;
`give()` hands a test's tree to it. sshd and the session children it forks
run in their own process group, so `stop()` takes down live uploads too: a server going away
mid-transfer. `start()` again brings it back on the same port with the same keys.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
KEYGEN = "/usr/bin/ssh-keygen"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _descendants(root: int) -> list[int]:
    """The pids below `root`, read from /proc (children first found, then theirs)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found.extend(children)
        frontier.extend(children)
    return found


def make_key(path: Path) -> Path:
    """A new ed25519 key pair in OpenSSH format without a passphrase (path and path.pub)."""
    subprocess.run([KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "floor-test", "-f",
                    str(path)], check=True, capture_output=True, timeout=30)
    return path


class SshdServer:
    """A throwaway sshd; use as a context manager or start()/stop()/close()."""

    def __init__(self, start_timeout: float = 10.0, login_user: str | None = None) -> None:
        self.start_timeout = start_timeout
        self.dir = Path(tempfile.mkdtemp(prefix="floor-sshd-"))
        self.home = self.dir / "home"
        self.home.mkdir()
        account = pwd.getpwnam(login_user) if login_user else pwd.getpwuid(os.geteuid())
        self.user = account.pw_name
        self.uid, self.gid = account.pw_uid, account.pw_gid
        self.port = _free_port()
        self.host_key = make_key(self.dir / "host_ed25519")
        self.client_key = make_key(self.dir / "client_ed25519")
        authorized = self.dir / "authorized_keys"
        authorized.write_text(Path(f"{self.client_key}.pub").read_text())
        if self.uid != os.geteuid():
            self.dir.chmod(0o711)
            authorized.chmod(0o644)
            os.chown(self.home, self.uid, self.gid)
        self.config = self.dir / "sshd_config"
        self.config.write_text("\n".join([
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key}",
            f"PidFile {self.dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
            f"AllowUsers {self.user}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "StrictModes no",
            "UsePAM no",
            "UseDNS no",
            "PrintMotd no",
            "LogLevel VERBOSE",
            f"Subsystem sftp internal-sftp -d {self.home}",
            "",
        ]))
        self.log = self.dir / "sshd.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def give(self, path: Path) -> Path:
        """Make `path` and everything under it the login user's (symlinks themselves, never
        their targets), as the files of a share the SFTP account owns would be."""
        for item in [path, *path.rglob("*")]:
            os.lchown(item, self.uid, self.gid)
        return path

    @property
    def known_hosts_line(self) -> str:
        """The pinned host key as one known_hosts line ([host]:port form, as ssh writes it)."""
        kind, blob = Path(f"{self.host_key}.pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {blob}\n"

    def write_known_hosts(self, path: Path) -> Path:
        path.write_text(self.known_hosts_line)
        return path

    def start(self) -> SshdServer:
        if self._proc is not None:
            return self
        # Debian's sshd wants its privilege-separation directory; systemd normally makes it.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        log = open(self.log, "ab")  # noqa: SIM115  (handed to the child)
        try:
            self._proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.config), "-p", str(self.port)],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                raise RuntimeError(f"sshd exited at start:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    if sock.recv(4).startswith(b"SSH-"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not listen on 127.0.0.1:{self.port}:\n{self.log_tail()}")

    def stop(self) -> None:
        """The server goes away: sshd and every session it forked, at once."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # sshd's per-connection children call setsid(): find them by parentage, not group
        for pid in [proc.pid, *_descendants(proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> SshdServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
