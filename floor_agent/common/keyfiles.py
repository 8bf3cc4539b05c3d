"""Private key files (agent key, site key, reader SCBKs): readable by their owner only, and
every refusal says which file and why, never anything of the key itself."""

from __future__ import annotations

from pathlib import Path


def read_private_key_file(path: Path, what: str, error: type[Exception], *,
                          hint: str = "") -> bytes:
    """The file's bytes; `error` (the caller's own exception class) when it cannot be read or
    its group or others may read it. `hint` follows the reason when the file cannot be read."""
    try:
        mode = path.stat().st_mode & 0o777
        data = path.read_bytes()
    except OSError as e:
        raise error(f"{path}: cannot read {what} ({e.strerror}){hint and '; ' + hint}") from None
    if mode & 0o077:
        raise error(f"{path}: readable by others (mode {mode:o}); chmod 600 it")
    return data


def read_hex_key_file(path: Path, size: int, what: str, error: type[Exception]) -> bytes:
    """A key of `size` bytes written as hex (surrounding white space allowed) in a private file."""
    data = read_private_key_file(path, what, error)
    try:
        key = bytes.fromhex(data.decode("ascii").strip())
    except ValueError:  # UnicodeDecodeError is a ValueError
        key = b""
    if len(key) != size:
        raise error(f"{path}: expected {size * 2} hex characters")
    return key
