"""Password hashing with Argon2id at OWASP's recommended minimum (m=19 MiB, t=2, p=1). No Flask."""

from __future__ import annotations

import base64
import binascii
import os
import re

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from argon2.low_level import hash_secret

# OWASP Password Storage Cheat Sheet: Argon2id, 19 MiB, 2 iterations, 1 degree of parallelism.
_hasher = PasswordHasher(
    time_cost=2, memory_cost=19 * 1024, parallelism=1, hash_len=32, salt_len=16, type=Type.ID
)
# Verified against when the email is unknown, so both failures take the same time.
_DUMMY_HASH = _hasher.hash("nyxcore-timing-equaliser")
# A stored hash less its digest, as the database hands it out (nyxcore_password_setting).
_SETTING = re.compile(r"\$argon2id\$v=(?P<v>\d+)\$m=(?P<m>\d+),t=(?P<t>\d+),p=(?P<p>\d+)\$(?P<salt>[A-Za-z0-9+/]+)")
_MAX_COST = 1 << 22  # KiB; refuse absurd parameters from a tampered row rather than exhaust memory


def hash_password(password: str) -> str:
    """A self-describing Argon2id hash of `password`."""
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when `password` matches; with no stored hash, spend the same time and say no."""
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    """True when the hash was made with other parameters and should be replaced at this login."""
    try:
        return _hasher.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True


def unknown_setting() -> str:
    """A setting with today's parameters and a random salt, for an address with no account."""
    salt = base64.b64encode(os.urandom(_hasher.salt_len)).decode().rstrip("=")
    return f"$argon2id$v=19$m={_hasher.memory_cost},t={_hasher.time_cost},p={_hasher.parallelism}${salt}"


def candidate_hash(setting: str, password: str) -> str | None:
    """The full hash `password` would have under `setting` (a hash less its digest); None if malformed.

    The database compares it with the stored hash (nyxcore_login), so the app never reads a hash.
    """
    match = _SETTING.fullmatch(setting)
    if match is None:
        return None
    memory, time, lanes = int(match["m"]), int(match["t"]), int(match["p"])
    if not (0 < memory <= _MAX_COST and 0 < time <= 64 and 0 < lanes <= 64):
        return None
    try:
        salt = base64.b64decode(match["salt"] + "=" * (-len(match["salt"]) % 4))
    except (binascii.Error, ValueError):
        return None
    encoded = hash_secret(
        password.encode(), salt, time_cost=time, memory_cost=memory, parallelism=lanes,
        hash_len=_hasher.hash_len, type=Type.ID, version=int(match["v"]),
    )
    return encoded.decode()


def setting_needs_rehash(setting: str) -> bool:
    """True when a hash with this setting was made with other parameters than today's."""
    return needs_rehash(setting + "$" + "A" * 43)  # the digest plays no part in the parameters
