"""`collector join --via-ssh`: the first collector's `sign-collector` run over OpenSSH, so
adding a collector is one command on the new box (join_cli.join_via_ssh drives it).

Why ssh and not a new protocol: the admin who adds a collector can already log in to the first
one, and that login is the channel the three-step form lacks. ssh checks the first collector's
host key against known_hosts (StrictHostKeyChecking=yes is passed, never weaker: an unknown or
changed key ends the command, BatchMode=yes so nothing is asked), so the bundle comes from the
box the admin named; the request's fingerprint rides on the same channel, so the first
collector checks the bytes it got are the ones made here. The request goes on ssh's stdin, the
bundle comes back on its stdout; the CA key stays where it is.

The argv and the words for a failure are pure functions (tested against hostile input); run()
is the subprocess.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass

from floor_agent.collector.join import MAX_FILE_BYTES, JoinError

SSH = "ssh"
TIMEOUT_SECONDS = 300.0  # a login, a store opened and a certificate signed on the other box
DEFAULT_REMOTE_COMMAND = "floor-agent"
SSH_FAILED = 255  # ssh's own exit status (connection, host key, login); else the remote's
NOT_FOUND = 127  # the remote shell's for a command it cannot find
MAX_SHOWN = 2000  # characters of the other box's words shown to the admin


@dataclass(frozen=True)
class SshSigning:
    """Where and how to run sign-collector on the first collector."""

    target: str  # [user@]host, or ssh://[user@]host[:port], as ssh takes it
    remote_command: str = DEFAULT_REMOTE_COMMAND  # shell words, e.g. runuser -u x -- floor-agent
    remote_config: str | None = None  # the first collector's collector.yaml; None: its default
    server_names: tuple[str, ...] | None = None  # passed on as sign-collector --server-names
    ssh_config: str | None = None  # ssh -F


def argv(plan: SshSigning, fingerprint: str) -> list[str]:
    """The ssh command line: host-key checking on whatever the ssh config says, nothing
    asked, the remote command quoted word by word for the remote shell."""
    if not plan.target or plan.target.startswith("-") or any(c.isspace() for c in plan.target):
        raise JoinError(f"--via-ssh {plan.target!r}: not an ssh destination ([user@]host)")
    try:
        words = shlex.split(plan.remote_command)
    except ValueError as exc:
        raise JoinError(f"--remote-command {plan.remote_command!r}: {exc}") from None
    if not words:
        raise JoinError("--remote-command is empty")
    remote = [*words, "collector", "sign-collector"]
    if plan.remote_config is not None:
        remote += ["--config", plan.remote_config]
    remote += ["--fingerprint", fingerprint]
    if plan.server_names is not None:
        remote += ["--server-names", ",".join(plan.server_names)]
    remote += ["--out", "-", "-"]
    local = [SSH, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
    if plan.ssh_config is not None:
        local += ["-F", plan.ssh_config]
    return [*local, "--", plan.target, shlex.join(remote)]


def shown(raw: bytes) -> str:
    """The other box's words as they may be printed here: no control characters (a terminal's
    escape sequences), the end of a long text."""
    text = raw.decode("utf-8", errors="replace")
    clean = "".join(c if c.isprintable() or c == "\n" else "?" for c in text).strip()
    return clean if len(clean) <= MAX_SHOWN else "..." + clean[-MAX_SHOWN:]


def refusal(plan: SshSigning, status: int, stdout: bytes, stderr: bytes) -> str | None:
    """Why the answer is no bundle (None: stdout is the bundle to check)."""
    words = shown(stderr) or "(nothing said)"
    nothing = "nothing was signed or installed"
    if status == SSH_FAILED:
        hint = ""
        if "host key verification failed" in words.lower():
            hint = (f"; {plan.target}'s host key is not the one known_hosts holds for it (or "
                    f"none is there): check it out of band and add it (ssh {plan.target} once, "
                    f"comparing the fingerprint), or join with the three-step form")
        return f"ssh to {plan.target} failed, {nothing}: {words}{hint}"
    if status == NOT_FOUND:
        return (f"{plan.target} has no command {plan.remote_command!r} (--remote-command), "
                f"{nothing}: {words}")
    if status != 0:
        return f"{plan.target} refused (exit status {status}), nothing was installed: {words}"
    if not stdout.strip():
        return f"{plan.target} answered no bundle, nothing was installed: {words}"
    if len(stdout) > MAX_FILE_BYTES:
        return f"{plan.target} answered {len(stdout)} bytes, more than any bundle"
    return None


def run(plan: SshSigning, request: bytes, fingerprint: str) -> tuple[bytes, str]:
    """Send the request, get the bundle: (bundle bytes, what the first collector said)."""
    command = argv(plan, fingerprint)
    try:
        done = subprocess.run(command, input=request, capture_output=True,
                              timeout=TIMEOUT_SECONDS, check=False)
    except FileNotFoundError:
        raise JoinError(f"no '{SSH}' client here (Debian: openssh-client)") from None
    except subprocess.TimeoutExpired:
        raise JoinError(f"{plan.target} did not answer within {TIMEOUT_SECONDS:.0f} s, nothing "
                        f"was installed") from None
    why = refusal(plan, done.returncode, done.stdout, done.stderr)
    if why is not None:
        raise JoinError(why)
    return done.stdout, shown(done.stderr)
