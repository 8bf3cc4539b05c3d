"""SFTP sessions with trust pinned, never learned: shared by cctv offload and image retention.

The server's host key must be the one pinned (RejectPolicy: an unknown or changed key is
refused with a clear error) and we log in with our key only: no agent, no password, no keys
found lying around. Error texts name user@host:port and the files involved, never key material.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import paramiko


class SftpConnectError(Exception):
    """The session could not be opened; the text says where and why."""


def _load_pins(client: paramiko.SSHClient, where: str, known_hosts_file: Path,
               host_key_line: str | None) -> str:
    """Put the pinned key into the client; returns a description of where it came from."""
    if host_key_line is not None:
        entry = paramiko.hostkeys.HostKeyEntry.from_line(host_key_line.strip())
        if entry is None or entry.key is None:
            raise SftpConnectError(f"{where}: the pinned host_key is not a known_hosts line "
                                   "('[host]:port type base64')")
        for name in entry.hostnames:
            client.get_host_keys().add(name, entry.key.get_name(), entry.key)
        return "host_key"
    try:
        client.load_host_keys(str(known_hosts_file))
    except (OSError, paramiko.SSHException) as e:
        raise SftpConnectError(f"{where}: cannot read the pinned host key from "
                               f"{known_hosts_file} ({getattr(e, 'strerror', None) or e})"
                               ) from None
    return str(known_hosts_file)


def connect_pinned(host: str, port: int, user: str, key_file: Path, known_hosts_file: Path,
                   timeout: float, host_key_line: str | None = None
                   ) -> tuple[paramiko.SSHClient, paramiko.SFTPClient]:
    """An SFTP session to the pinned host with our key, or SftpConnectError saying why not."""
    where = f"{user}@{host}:{port}"
    client = paramiko.SSHClient()
    try:
        pinned_in = _load_pins(client, where, known_hosts_file, host_key_line)
    except SftpConnectError:
        client.close()
        raise
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(host, port=port, username=user, key_filename=str(key_file),
                       look_for_keys=False, allow_agent=False, timeout=timeout,
                       banner_timeout=timeout, auth_timeout=timeout, channel_timeout=timeout)
        sftp = client.open_sftp()
        channel = sftp.get_channel()
        assert channel is not None, "open_sftp runs on a channel it opened"
        channel.settimeout(timeout)
    except paramiko.BadHostKeyException as e:
        client.close()
        raise SftpConnectError(f"{where}: host key CHANGED: the server offered "
                               f"{e.key.get_name()} {e.key.get_fingerprint().hex()}, not the key "
                               f"pinned in {pinned_in}; refused") from None
    except paramiko.AuthenticationException:
        client.close()
        raise SftpConnectError(f"{where}: the server refused our key ({key_file})") from None
    except paramiko.SSHException as e:
        client.close()
        text = str(e)
        if "not found in known_hosts" in text:
            raise SftpConnectError(f"{where}: host key not pinned in {pinned_in}; an unknown "
                                   "host is refused") from None
        raise SftpConnectError(f"{where}: SSH failed ({text})") from None
    except (OSError, EOFError, ValueError) as e:
        client.close()
        raise SftpConnectError(f"{where}: cannot connect "
                               f"({getattr(e, 'strerror', None) or e or type(e).__name__})"
                               ) from None
    return client, sftp


def close_quietly(*things: paramiko.SFTPClient | paramiko.SSHClient | None) -> None:
    """Close what is open; a dead connection may fail to close, which is fine."""
    for thing in things:
        if thing is not None:
            with contextlib.suppress(Exception):
                thing.close()
