"""Password hashing (argon2id, argon2-cffi defaults) and one-time passwords.

No default password exists: the first admin is created by `collector user create`, which prints
a random one-time password the user must change at first login.

Each argon2 call takes 64 MiB (memory_cost) for its duration, and the C code runs beside the
GIL: 40 parallel logins once held 3.3 GB. Every hash and verification in the process goes
through GATE, HASH_SLOTS (1) at a time, so hashing never holds more than HASH_SLOTS x 64 MiB
(64 MiB); a caller that gets no slot within its wait gets HashBusy (the login answers 503 with
Retry-After) instead of queueing without end.

The hashing itself runs on HASH_SLOTS threads of their own at a lower CPU priority (nice
HASH_NICE; argon2's lane threads inherit it): a flood of logins, each a deliberate 64 MiB,
~100 ms computation, then takes what the agents and the dashboard leave of the CPU, not the
other way round. A login is slower under such a flood; ingest is not.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 12
ONE_TIME_BYTES = 18  # 24 URL-safe characters
# argon2 calls at once in this process: one. Each is a deliberate ~0.1 s of CPU; on a 2-core
# collector two at once took a core from ingest under a login flood (bench/collector_attack.py
# --logins 40: ingest at 62 % of quiet).
HASH_SLOTS = 1
HASH_WAIT_SECONDS = 10.0  # how long a caller outside the login form waits for a slot
_hasher = PasswordHasher()
HASH_MEMORY_BYTES = _hasher.memory_cost * 1024  # per call: 64 MiB
# Verified against when the user does not exist, so a wrong name costs as long as a wrong
# password (no user enumeration by timing).
_DUMMY = _hasher.hash(secrets.token_urlsafe(16))


HASH_NICE = 10  # added to the process's nice value, for the hashing threads only


def _lower_priority() -> None:
    """In a hashing thread: lower this thread's CPU priority (Linux nice is per thread, and
    threads it starts, argon2's lanes, inherit it). Failing that, hash at normal priority."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + HASH_NICE)
    except OSError:
        pass


_workers = ThreadPoolExecutor(HASH_SLOTS, thread_name_prefix="argon2",
                              initializer=_lower_priority)


class HashBusy(RuntimeError):
    """No hashing slot came free within the wait: try again later (503, Retry-After)."""


class HashGate:
    """At most `slots` argon2 calls at once, across every thread of the process."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._free = threading.BoundedSemaphore(slots)

    @contextmanager
    def slot(self, wait: float) -> Iterator[None]:
        if not self._free.acquire(timeout=wait):
            raise HashBusy(f"no password hashing slot free within {wait:g} s")
        try:
            yield
        finally:
            self._free.release()


GATE = HashGate(HASH_SLOTS)


def hash_password(password: str, wait: float | None = None) -> str:
    """The argon2 hash; HashBusy when no slot is free within wait (HASH_WAIT_SECONDS)."""
    with GATE.slot(HASH_WAIT_SECONDS if wait is None else wait):
        return _workers.submit(_hasher.hash, password).result()


def verify_password(stored_hash: str | None, password: str,
                    wait: float | None = None) -> bool:
    """True when password matches; always does one argon2 verification, even without a hash.

    HashBusy when no slot is free within `wait` seconds (HASH_WAIT_SECONDS; nothing was
    checked then)."""
    with GATE.slot(HASH_WAIT_SECONDS if wait is None else wait):
        return _workers.submit(_verify, stored_hash, password).result()


def _verify(stored_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash or _DUMMY, password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def one_time_password() -> str:
    return secrets.token_urlsafe(ONE_TIME_BYTES)


def password_problem(new: str, confirm: str, current: str, username: str) -> str | None:
    """Why a new password is refused, or None (pure)."""
    if new != confirm:
        return "the new password and its confirmation differ"
    if len(new) < MIN_LENGTH:
        return f"the new password must have at least {MIN_LENGTH} characters"
    if new == current:
        return "the new password must differ from the current one"
    if username.lower() in new.lower():
        return "the new password must not contain the user name"
    return None
