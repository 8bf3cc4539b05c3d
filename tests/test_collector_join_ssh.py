"""`collector join --via-ssh` (collector/join_ssh.py): adding a collector is one command on the
new box, the first collector's sign-collector run over a real OpenSSH session with host-key
checking on, and a refusal anywhere installs nothing.

The end-to-end tests log in to a real sshd on loopback (tests/sshd_server.py) with a
known_hosts the test writes; the remote command is this worktree's Python running
`-m floor_agent.cli`, so the other side of the ssh session runs this code. A and B are two
collector configs on one real PostgreSQL (tests/test_collector_join.py's helpers).
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from collector_process import CollectorProcess, wait_for_kind
from sshd_server import SshdServer, make_key
from test_collector_join import (
    B_NAMES,
    _an_agent_enrolled_at_a_delivers_to_b,
    _cli,
    _files_under,
    _not_installed,
)

import floor_agent
from floor_agent.collector import join, join_ssh, self_audit, tls
from floor_agent.collector.join import JoinError

WORKTREE = Path(floor_agent.__file__).resolve().parents[1]
# what runs on the first collector: this checkout's code, whatever the login's environment
REMOTE = shlex.join(["env", f"PYTHONPATH={WORKTREE}", sys.executable, "-m", "floor_agent.cli"])
FINGERPRINT = "sha256:" + "ab" * 32


# --------------------------------------------------------------------------- pure parts

def test_the_ssh_command_checks_host_keys_and_passes_hostile_words_as_words() -> None:
    hostile_config = "/etc/floor agent/c.yaml; touch /tmp/pwned $(id) `id` 'q\" \\"
    plan = join_ssh.SshSigning("admin@collector-a", "runuser -u floor-collector -- floor-agent",
                               hostile_config, ("collector-b.floor", "10.0.0.12"), "/x/ssh.cfg")
    argv = join_ssh.argv(plan, FINGERPRINT)
    assert argv[:5] == ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
    assert not [a for a in argv if "=no" in a.lower() or "accept-new" in a.lower()]
    assert argv[5:9] == ["-F", "/x/ssh.cfg", "--", "admin@collector-a"]
    # the remote shell splits the one string back into exactly these words
    assert shlex.split(argv[9]) == [
        "runuser", "-u", "floor-collector", "--", "floor-agent", "collector", "sign-collector",
        "--config", hostile_config, "--fingerprint", FINGERPRINT,
        "--server-names", "collector-b.floor,10.0.0.12", "--out", "-", "-"]
    # the defaults: A's own default config, no names given, ssh's own config
    bare = join_ssh.argv(join_ssh.SshSigning("collector-a"), FINGERPRINT)
    assert bare[-2:] == ["collector-a", f"floor-agent collector sign-collector --fingerprint "
                                        f"{FINGERPRINT} --out - -"]
    assert "-F" not in bare
    # a destination that ssh would read as an option, or that is no destination
    for target in ("-oProxyCommand=touch /tmp/pwned", "", "a b", "host\n-oX=y"):
        with pytest.raises(JoinError, match="not an ssh destination"):
            join_ssh.argv(join_ssh.SshSigning(target), FINGERPRINT)
    for command in ("", "floor-agent 'unclosed"):
        with pytest.raises(JoinError, match="--remote-command"):
            join_ssh.argv(join_ssh.SshSigning("a", command), FINGERPRINT)


def test_each_failure_says_whose_words_and_that_nothing_was_installed() -> None:
    plan = join_ssh.SshSigning("collector-a")
    host = join_ssh.refusal(plan, 255, b"", b"Host key verification failed.\r\n")
    assert host is not None and "ssh to collector-a failed" in host
    assert "known_hosts" in host and "three-step" in host
    assert "nothing was signed or installed" in join_ssh.refusal(  # type: ignore[operator]
        plan, 255, b"", b"ssh: connect to host collector-a port 22: Connection refused")
    missing = join_ssh.refusal(plan, 127, b"", b"bash: floor-agent: command not found")
    assert missing is not None and "--remote-command" in missing
    said = join_ssh.refusal(plan, 2, b"", b"sign-collector: no CA key here")
    assert said == ("collector-a refused (exit status 2), nothing was installed: "
                    "sign-collector: no CA key here")
    assert "no bundle" in join_ssh.refusal(plan, 0, b"\n", b"")  # type: ignore[operator]
    big = join_ssh.refusal(plan, 0, b"{" * (join.MAX_FILE_BYTES + 1), b"")
    assert big is not None and "more than any bundle" in big
    assert join_ssh.refusal(plan, 0, b"{}", b"signed") is None
    # the other box's words reach this terminal without its escape sequences, and not all of
    # a flood
    hostile = join_ssh.shown(b"\x1b]0;owned\x07\x1b[2Jsign-collector: no\r\n" + b"x" * 10_000)
    assert "\x1b" not in hostile and "\x07" not in hostile and "\r" not in hostile
    assert len(hostile) <= join_ssh.MAX_SHOWN + 3


# --------------------------------------------------------------------------- a real sshd

@pytest.fixture
def sshd() -> Iterator[SshdServer]:
    with SshdServer() as server:
        yield server


def _ssh_config(sshd: SshdServer, tmp_path: Path, known_hosts: Path) -> Path:
    """The admin's ssh config for A: its address, a login key, and the known_hosts to check
    A's host key against (no StrictHostKeyChecking line: join --via-ssh sets it)."""
    path = tmp_path / "ssh_config"
    path.write_text("\n".join([
        "Host collector-a",
        "  HostName 127.0.0.1",
        f"  Port {sshd.port}",
        f"  User {sshd.user}",
        f"  IdentityFile {sshd.client_key}",
        "  IdentitiesOnly yes",
        f"  UserKnownHostsFile {known_hosts}",
        "  GlobalKnownHostsFile /dev/null",
        "  LogLevel ERROR",
        "",
    ]))
    return path


def _join(b: CollectorProcess, ssh_config: Path, *extra: str | Path) -> Any:
    return _cli("join", "--config", b.config_path, "--via-ssh", "collector-a",
                "--remote-command", REMOTE, "--ssh-config", ssh_config, *extra, timeout=180)


def _sessions(sshd: SshdServer) -> int:
    """Logins sshd accepted (its VERBOSE log says each)."""
    return sshd.log.read_text(errors="replace").count("Accepted publickey")


@pytest.mark.postgres
def test_one_command_joins_b_which_then_serves_an_agent_enrolled_at_a(
        postgres_server: Any, sshd: SshdServer, tmp_path: Path) -> None:
    url = postgres_server.new_database()
    a = CollectorProcess(tmp_path / "a", url)
    b = CollectorProcess(tmp_path / "b", url, init=False, server_names=B_NAMES)
    ssh_config = _ssh_config(sshd, tmp_path, sshd.write_known_hosts(tmp_path / "known_hosts"))
    a.start()
    try:
        cwd_before = set(os.listdir(Path.cwd()))
        joined = _join(b, ssh_config, "--remote-config", a.config_path,
                       "--server-names", ",".join(B_NAMES))
        assert joined.returncode == 0, joined.stderr
        assert "joined the site of" in joined.stdout
        assert "collector-a: signed collector" in joined.stdout  # A's words, passed on
        assert _sessions(sshd) == 1
        assert "ca.key" not in _files_under(b.root)  # the CA key never left A
        assert not (b.config.collector.state_dir / "join").exists()  # the join key is gone
        assert set(os.listdir(Path.cwd())) == cwd_before  # no request or bundle files left
        b.start()
        _an_agent_enrolled_at_a_delivers_to_b(a, b)
        store = a.store()
        try:  # A's record names the request it was sent over ssh; B's says how it came
            b_id = self_audit.agent_id(b.config)
            signed = wait_for_kind(store, self_audit.agent_id(a.config), "collector.joined")
            assert signed["data"]["step"] == "signed"
            assert signed["data"]["request"].startswith("sha256:")
            installed = wait_for_kind(store, b_id, "collector.joined")
            assert installed["data"]["step"] == "installed"
            assert installed["data"]["via"] == "ssh collector-a"
            assert installed["data"]["ca"] == tls.fingerprint(a.ca)
        finally:
            store.close()
        # once joined, the one command is refused on B like join-request (no --renew)
        again = _join(b, ssh_config, "--remote-config", a.config_path)
        assert again.returncode == 2 and "--renew" in again.stderr
        assert _sessions(sshd) == 1
    finally:
        b.stop()
        a.stop()


@pytest.mark.postgres
def test_a_host_key_ssh_does_not_know_as_a_s_refuses_and_installs_nothing(
        postgres_server: Any, sshd: SshdServer, tmp_path: Path) -> None:
    """Someone answering on A's address with another host key (or a first contact) gets no
    login: nothing is signed on A, nothing installed on B, the request stays pending."""
    url = postgres_server.new_database()
    a = CollectorProcess(tmp_path / "a", url)
    b = CollectorProcess(tmp_path / "b", url, init=False, server_names=B_NAMES)
    stranger = make_key(tmp_path / "stranger")
    kind, blob = Path(f"{stranger}.pub").read_text().split()[:2]
    changed = tmp_path / "changed_known_hosts"
    changed.write_text(f"[127.0.0.1]:{sshd.port} {kind} {blob}\n")
    unknown = tmp_path / "empty_known_hosts"
    unknown.write_text("")
    for known in (changed, unknown):
        refused = _join(b, _ssh_config(sshd, tmp_path, known), "--remote-config", a.config_path)
        assert refused.returncode == 2, refused.stdout
        assert "join: ssh to collector-a failed" in refused.stderr
        assert "Host key verification failed" in refused.stderr
        assert "nothing was signed or installed" in refused.stderr
        _not_installed(b.config)
    assert _sessions(sshd) == 0  # A's command never ran


@pytest.mark.postgres
def test_a_refusing_installs_nothing_and_b_says_a_s_words(
        postgres_server: Any, sshd: SshdServer, tmp_path: Path) -> None:
    url = postgres_server.new_database()
    a = CollectorProcess(tmp_path / "a", url)
    b = CollectorProcess(tmp_path / "b", url, init=False, server_names=B_NAMES)
    ssh_config = _ssh_config(sshd, tmp_path, sshd.write_known_hosts(tmp_path / "known_hosts"))
    # names the admin did not allow: A checks the request against them and signs nothing
    names = _join(b, ssh_config, "--remote-config", a.config_path,
                  "--server-names", "collector-b.floor,10.9.9.9")
    assert names.returncode == 2
    assert "join: collector-a refused (exit status 2), nothing was installed: sign-collector: " \
           "join request: the new collector asks for names" in names.stderr
    assert "you allowed ['collector-b.floor', '10.9.9.9']" in names.stderr
    _not_installed(b.config)
    # a config on A whose state_dir holds no CA key (here: B's own, on this one test box)
    no_ca = _join(b, ssh_config, "--remote-config", b.config_path)
    assert no_ca.returncode == 2
    assert "sign-collector: " in no_ca.stderr and "no CA key here" in no_ca.stderr
    _not_installed(b.config)
    # A's CLI not where the admin said
    missing = _join(b, ssh_config, "--remote-command", "/nonexistent/floor-agent",
                    "--remote-config", a.config_path)
    assert missing.returncode == 2 and "--remote-command" in missing.stderr, missing.stderr
    _not_installed(b.config)
    # A signs, but the admin gave a CA fingerprint that is not A's: still checked, refused
    wrong_ca = _join(b, ssh_config, "--remote-config", a.config_path,
                     "--ca-fingerprint", "sha256:" + "1" * 64)
    assert wrong_ca.returncode == 2 and "you expected sha256:111" in wrong_ca.stderr
    _not_installed(b.config)
    # the three-step form's file still installs after all that: the pending request B holds
    # is the last one made, signed on A from the file
    assert _sessions(sshd) == 4
    request = b.config.collector.state_dir / "join" / "request.json"
    signed = _cli("sign-collector", "--config", a.config_path, request, "--fingerprint",
                  join.digest(request.read_bytes()), "--out", tmp_path / "b.bundle")
    assert signed.returncode == 0, signed.stderr
    installed = _cli("join", "--config", b.config_path, tmp_path / "b.bundle")
    assert installed.returncode == 0, installed.stderr
