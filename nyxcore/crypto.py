"""The AES-256-GCM key ring: operator-supplied keys with ids, the first one primary. No Flask here.

Every ciphertext is bound by associated data to its purpose and owner (for GitHub tokens, the
tenant id), so a ciphertext copied into another row fails to decrypt instead of leaking.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT_VERSION = b"nyxcore/v1"
NONCE_BYTES = 12
KEY_BYTES = 32
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")


class KeyRingError(ValueError):
    """The key ring setting is missing or malformed."""


class DecryptionError(Exception):
    """A stored secret cannot be read: unknown key id, or data truncated, tampered or moved."""


@dataclass(frozen=True)
class Sealed:
    """A stored secret: which key sealed it, its nonce, and the ciphertext with its GCM tag."""

    key_id: str
    nonce: bytes
    ciphertext: bytes


@dataclass(frozen=True)
class KeyRing:
    """Named 256-bit keys; `primary_id` encrypts, every key decrypts."""

    keys: dict[str, bytes]
    primary_id: str

    @classmethod
    def parse(cls, setting: str) -> KeyRing:
        """Parse `"k2:<base64 32 bytes>,k1:<...>"` (first is primary), strictly. Raises KeyRingError.

        Nothing is trimmed or skipped: a stray space, an empty entry or a trailing comma is an error,
        so what the operator wrote is exactly what is used.
        """
        if not setting:
            raise KeyRingError("no keys given")
        keys: dict[str, bytes] = {}
        order: list[str] = []
        for number, part in enumerate(setting.split(","), start=1):
            key_id, sep, encoded = part.partition(":")
            if not sep or not _KEY_ID.fullmatch(key_id):
                raise KeyRingError(
                    f"entry {number} must be <id>:<base64 key>, ids of letters, digits, - and _ "
                    "(no spaces, no empty entries)"
                )
            try:
                raw = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise KeyRingError(f"key {key_id!r} is not valid base64") from exc
            if len(raw) != KEY_BYTES:
                raise KeyRingError(f"key {key_id!r} must be {KEY_BYTES} bytes, not {len(raw)}")
            if base64.b64encode(raw).decode() != encoded:
                raise KeyRingError(f"key {key_id!r} is not written as standard padded base64")
            if key_id in keys:
                raise KeyRingError(f"key id {key_id!r} appears twice")
            keys[key_id] = raw
            order.append(key_id)
        return cls(keys=keys, primary_id=order[0])

    def encrypt(self, plaintext: bytes, context: str) -> Sealed:
        """Seal `plaintext` under the primary key with a fresh 96-bit nonce, bound to `context`."""
        nonce = os.urandom(NONCE_BYTES)
        aad = _associated_data(self.primary_id, context)
        ciphertext = AESGCM(self.keys[self.primary_id]).encrypt(nonce, plaintext, aad)
        return Sealed(key_id=self.primary_id, nonce=nonce, ciphertext=ciphertext)

    def decrypt(self, sealed: Sealed, context: str) -> bytes:
        """Open `sealed`; raises DecryptionError if the key is unknown or anything does not match."""
        key = self.keys.get(sealed.key_id)
        if key is None:
            raise DecryptionError(f"no key with id {sealed.key_id!r} in the key ring")
        if len(sealed.nonce) != NONCE_BYTES:
            raise DecryptionError("stored nonce has the wrong length")
        try:
            return AESGCM(key).decrypt(
                sealed.nonce, sealed.ciphertext, _associated_data(sealed.key_id, context)
            )
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError("stored data failed authentication (tampered, truncated or moved)") from exc

    def needs_rotation(self, sealed: Sealed) -> bool:
        """True when `sealed` is not under the primary key."""
        return sealed.key_id != self.primary_id

    def rotate(self, sealed: Sealed, context: str) -> Sealed:
        """Re-seal under the primary key (a no-op when it already is)."""
        if not self.needs_rotation(sealed):
            return sealed
        return self.encrypt(self.decrypt(sealed, context), context)


def _associated_data(key_id: str, context: str) -> bytes:
    return b"|".join((FORMAT_VERSION, key_id.encode(), context.encode()))


def generate_key_setting(key_id: str) -> str:
    """A new random key as one `<id>:<base64>` entry for NYXCORE_ENCRYPTION_KEYS."""
    if not _KEY_ID.fullmatch(key_id):
        raise KeyRingError("key ids are 1-32 letters, digits, - and _")
    return f"{key_id}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}"
