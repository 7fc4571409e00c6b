"""The AES-256-GCM key ring: sealing, refusing anything altered or moved, parsing, rotation."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest

from nyxcore import create_app
from nyxcore.config import ConfigError, load_config
from nyxcore.crypto import (
    KEY_BYTES,
    NONCE_BYTES,
    DecryptionError,
    KeyRing,
    KeyRingError,
    Sealed,
    generate_key_setting,
)

SECRET = b"ghp_0123456789abcdefghijklmnopqrstuvwxyz"
CONTEXT = "github-token:7b0f5c4e-1d2a-4c3b-9e8f-000000000001"
OTHER_CONTEXT = "github-token:7b0f5c4e-1d2a-4c3b-9e8f-000000000002"


def ring(*ids: str) -> KeyRing:
    return KeyRing.parse(",".join(generate_key_setting(key_id) for key_id in ids))


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def test_round_trip_under_the_primary_key():
    keys = ring("k2", "k1")
    sealed = keys.encrypt(SECRET, CONTEXT)
    assert sealed.key_id == "k2"
    assert len(sealed.nonce) == NONCE_BYTES
    assert SECRET not in sealed.ciphertext
    assert keys.decrypt(sealed, CONTEXT) == SECRET


def test_every_encryption_uses_a_fresh_nonce():
    keys = ring("k1")
    sealed = [keys.encrypt(SECRET, CONTEXT) for _ in range(200)]
    assert len({s.nonce for s in sealed}) == 200
    assert len({s.ciphertext for s in sealed}) == 200


def test_a_ciphertext_does_not_open_in_another_context():
    keys = ring("k1")
    sealed = keys.encrypt(SECRET, CONTEXT)
    with pytest.raises(DecryptionError):
        keys.decrypt(sealed, OTHER_CONTEXT)


def test_the_key_id_is_bound_too():
    # Two ids naming the same key bytes: relabelling a ciphertext still fails.
    key = base64.b64encode(b"\x07" * KEY_BYTES).decode()
    keys = KeyRing.parse(f"a:{key},b:{key}")
    sealed = keys.encrypt(SECRET, CONTEXT)
    with pytest.raises(DecryptionError):
        keys.decrypt(replace(sealed, key_id="b"), CONTEXT)


@pytest.mark.parametrize("index", [0, 15, -1])
def test_tampered_ciphertext_fails(index):
    keys = ring("k1")
    sealed = keys.encrypt(SECRET, CONTEXT)
    position = index % len(sealed.ciphertext)
    with pytest.raises(DecryptionError):
        keys.decrypt(replace(sealed, ciphertext=flip(sealed.ciphertext, position)), CONTEXT)


def test_tampered_nonce_fails():
    keys = ring("k1")
    sealed = keys.encrypt(SECRET, CONTEXT)
    with pytest.raises(DecryptionError):
        keys.decrypt(replace(sealed, nonce=flip(sealed.nonce, 3)), CONTEXT)


@pytest.mark.parametrize("nonce", [b"", b"\x00" * 11, b"\x00" * 13])
def test_nonce_of_the_wrong_length_fails(nonce):
    keys = ring("k1")
    sealed = keys.encrypt(SECRET, CONTEXT)
    with pytest.raises(DecryptionError, match="nonce"):
        keys.decrypt(replace(sealed, nonce=nonce), CONTEXT)


@pytest.mark.parametrize("keep", [0, 1, 15, 16, len(SECRET) + 15])
def test_truncated_ciphertext_fails(keep):
    keys = ring("k1")
    sealed = keys.encrypt(SECRET, CONTEXT)
    with pytest.raises(DecryptionError):
        keys.decrypt(replace(sealed, ciphertext=sealed.ciphertext[:keep]), CONTEXT)


def test_unknown_key_id_fails_and_names_the_id():
    sealed = ring("old").encrypt(SECRET, CONTEXT)
    with pytest.raises(DecryptionError, match="'old'"):
        ring("new").decrypt(sealed, CONTEXT)


def test_same_id_with_other_key_bytes_fails():
    sealed = ring("k1").encrypt(SECRET, CONTEXT)
    with pytest.raises(DecryptionError):
        ring("k1").decrypt(sealed, CONTEXT)


def test_errors_never_carry_the_plaintext():
    keys = ring("k1")
    sealed = keys.encrypt(SECRET, CONTEXT)
    with pytest.raises(DecryptionError) as caught:
        keys.decrypt(sealed, OTHER_CONTEXT)
    assert SECRET.decode() not in str(caught.value)


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("", "no keys given"),
        (" , ,", "entry 1 must be <id>:<base64 key>"),
        (" k1:" + base64.b64encode(b"x" * 32).decode(), "entry 1 must be <id>:<base64 key>"),
        ("k1:" + base64.b64encode(b"x" * 32).decode() + ",", "entry 2 must be <id>:<base64 key>"),
        ("k1:" + base64.b64encode(b"x" * 32).decode() + " ", "not valid base64"),
        ("k1\n:" + base64.b64encode(b"x" * 32).decode(), "entry 1 must be <id>:<base64 key>"),
        ("k1:" + base64.b64encode(b"x" * 32).decode()[:-2] + "x=", "standard padded base64"),
        ("k1", "<id>:<base64 key>"),
        (":" + base64.b64encode(b"x" * 32).decode(), "<id>:<base64 key>"),
        ("bad id:" + base64.b64encode(b"x" * 32).decode(), "<id>:<base64 key>"),
        ("k" * 33 + ":" + base64.b64encode(b"x" * 32).decode(), "<id>:<base64 key>"),
        ("k1:not base64!", "not valid base64"),
        ("k1:" + base64.b64encode(b"x" * 16).decode(), "must be 32 bytes, not 16"),
        ("k1:" + base64.b64encode(b"x" * 33).decode(), "must be 32 bytes, not 33"),
        (
            "k1:" + base64.b64encode(b"x" * 32).decode() + ",k1:" + base64.b64encode(b"y" * 32).decode(),
            "appears twice",
        ),
    ],
)
def test_malformed_settings_are_refused(setting, complaint):
    with pytest.raises(KeyRingError, match=complaint.replace("<", ".").replace(">", ".")):
        KeyRing.parse(setting)


def test_parse_keeps_order_first_is_primary():
    first, second = generate_key_setting("k2"), generate_key_setting("k1")
    keys = KeyRing.parse(f"{first},{second}")
    assert keys.primary_id == "k2"
    assert set(keys.keys) == {"k1", "k2"}
    assert all(len(key) == KEY_BYTES for key in keys.keys.values())


def test_generated_settings_parse_and_differ():
    entries = {generate_key_setting("k1").partition(":")[2] for _ in range(20)}
    assert len(entries) == 20
    with pytest.raises(KeyRingError):
        generate_key_setting("no spaces allowed")


def test_rotation_moves_a_secret_to_the_new_primary_key():
    old_setting, new_setting = generate_key_setting("k1"), generate_key_setting("k2")
    old = KeyRing.parse(old_setting)
    both = KeyRing.parse(f"{new_setting},{old_setting}")
    new_only = KeyRing.parse(new_setting)
    sealed = old.encrypt(SECRET, CONTEXT)

    assert both.needs_rotation(sealed)
    rotated = both.rotate(sealed, CONTEXT)
    assert rotated.key_id == "k2"
    assert rotated.nonce != sealed.nonce
    assert not both.needs_rotation(rotated)
    assert new_only.decrypt(rotated, CONTEXT) == SECRET
    assert both.rotate(rotated, CONTEXT) is rotated  # already current: unchanged


def test_rotation_keeps_the_context_binding():
    old_setting = generate_key_setting("k1")
    both = KeyRing.parse(f"{generate_key_setting('k2')},{old_setting}")
    sealed = KeyRing.parse(old_setting).encrypt(SECRET, CONTEXT)
    with pytest.raises(DecryptionError):
        both.rotate(sealed, OTHER_CONTEXT)
    rotated = both.rotate(sealed, CONTEXT)
    with pytest.raises(DecryptionError):
        both.decrypt(rotated, OTHER_CONTEXT)


def test_rotation_without_the_old_key_fails_cleanly():
    sealed = ring("k1").encrypt(SECRET, CONTEXT)
    with pytest.raises(DecryptionError):
        ring("k2").rotate(Sealed(sealed.key_id, sealed.nonce, sealed.ciphertext), CONTEXT)


# Starting the app: test_config.py covers check_production's messages; these pin that create_app
# itself stops on them before touching anything, and that the key setting is named outside production.
PRODUCTION = {
    "NYXCORE_ENV": "production",
    "SECRET_KEY": "s" * 48,
    "DATABASE_URL": "postgresql://app@db.invalid/nyxcore",
    "REDIS_URL": "redis://redis.invalid:6379/0",
}


@pytest.mark.parametrize(
    ("keys", "complaint"),
    [
        (None, "NYXCORE_ENCRYPTION_KEYS must be set"),
        ("k1:short", "NYXCORE_ENCRYPTION_KEYS is malformed"),
        ("k1", "NYXCORE_ENCRYPTION_KEYS is malformed"),
    ],
)
def test_production_app_does_not_start_without_a_valid_key_ring(keys, complaint):
    environ = dict(PRODUCTION, **({"NYXCORE_ENCRYPTION_KEYS": keys} if keys is not None else {}))
    with pytest.raises(ConfigError, match=complaint):
        create_app(load_config(environ))


def test_a_malformed_key_ring_names_the_setting_outside_production(tmp_path):
    config = load_config(
        {"NYXCORE_ENV": "development", "NYXCORE_ENCRYPTION_KEYS": "k1:c2hvcnQ="},
        instance_path=str(tmp_path),
    )
    with pytest.raises(ConfigError, match=r"NYXCORE_ENCRYPTION_KEYS is malformed: key 'k1' must be 32 bytes"):
        create_app(config)
