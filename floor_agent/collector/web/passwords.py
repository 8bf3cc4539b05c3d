"""Password hashing (argon2id, argon2-cffi defaults) and one-time passwords.

No default password exists: the first admin is created by `collector user create`, which prints
a random one-time password the user must change at first login.
"""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 12
ONE_TIME_BYTES = 18  # 24 URL-safe characters
_hasher = PasswordHasher()
# Verified against when the user does not exist, so a wrong name costs as long as a wrong
# password (no user enumeration by timing).
_DUMMY = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when password matches; always does one argon2 verification, even without a hash."""
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
