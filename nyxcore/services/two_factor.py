"""Two-factor authentication: a TOTP secret sealed under the key ring, and single-use recovery codes.

The secret is sealed with associated data naming its purpose and user (`seal_context`), so a
ciphertext copied into another user's row does not decrypt. An enrolment is active only once a code
from the authenticator confirmed it (`enabled_at`); `users.two_factor_enabled_at` mirrors that, so
the request boundary knows it without a query. A TOTP code is accepted for the current time step
and one either side, and a step is accepted once only: the row keeps the last one used and the
UPDATE that accepts a code requires a later step, so of two concurrent uses of a code one wins.
Recovery codes are stored as SHA-256 digests and consumed by one UPDATE ... WHERE used_at IS NULL.

Callers act as the user (row-level security: own rows only). Nothing here logs the secret, and only
`pending_secret` returns it, for the set-up page.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import uuid
from datetime import UTC, datetime, timedelta

import pyotp
import segno
from sqlalchemy import case, delete, func, or_, select, update

from nyxcore.crypto import DecryptionError, Sealed
from nyxcore.errors import Conflict, InvalidInput, NotFound
from nyxcore.extensions import db, keyring
from nyxcore.models import RecoveryCode, User, UserTwoFactor
from nyxcore.permissions import Operation
from nyxcore.roles import TenantRole
from nyxcore.services import audit
from nyxcore.tenancy import Actor

REQUIRE = Operation("team.require_two_factor", TenantRole.OWNER)  # the team setting
SEE_MEMBERS = Operation("two_factor.see_members", TenantRole.ADMIN)  # who has not turned it on
ISSUER = "NyxCore"
RECOVERY_CODES = 10
MAX_FAILED_ATTEMPTS = 5
LOCKOUT = timedelta(minutes=15)  # after MAX_FAILED_ATTEMPTS wrong codes, the code step stays closed this long
_CODE_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"  # base32: 5 bits a character, 75 bits a code
WRONG_CODE = "That code is not valid. Enter the current 6-digit code from your authenticator app."


class LoginCheck(enum.Enum):
    """What a code offered at log in did: let the user in, or not, or used up the attempts."""

    ACCEPTED = "accepted"
    WRONG = "wrong"
    EXHAUSTED = "exhausted"


def seal_context(user_id: uuid.UUID) -> str:
    """The associated data that binds a stored TOTP secret to its purpose and its user."""
    return f"two-factor-secret:{user_id}"


def _now() -> datetime:
    return datetime.now(UTC)


def _hash_code(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def _normalised_recovery_code(code: str) -> str:
    return "".join(code.split()).replace("-", "").lower()


def _row(user_id: uuid.UUID) -> UserTwoFactor | None:
    return db.session.scalar(select(UserTwoFactor).where(UserTwoFactor.user_id == user_id))


def _secret(row: UserTwoFactor) -> str:
    sealed = Sealed(row.key_id, row.nonce, row.ciphertext)
    try:
        return keyring.get().decrypt(sealed, seal_context(row.user_id)).decode()
    except (DecryptionError, UnicodeDecodeError) as exc:
        raise Conflict("The stored two-factor secret cannot be read; use a recovery code.") from exc


def start_enrolment(user: User) -> None:
    """A new secret for `user`, stored sealed and not yet active (the set-up page shows `pending_secret`).

    Replaces an unconfirmed enrolment. Raises Conflict when two-factor is on already.
    """
    row = _row(user.id)
    if row is not None and row.enabled_at is not None:
        raise Conflict("Two-factor authentication is on already.")
    secret = pyotp.random_base32()
    sealed = keyring.get().encrypt(secret.encode(), seal_context(user.id))
    if row is None:
        row = UserTwoFactor(user_id=user.id, key_id="", nonce=b"", ciphertext=b"")
        db.session.add(row)
    row.key_id, row.nonce, row.ciphertext = sealed.key_id, sealed.nonce, sealed.ciphertext
    row.last_used_step, row.failed_attempts = None, 0
    db.session.flush()


def pending_secret(user: User) -> str | None:
    """The secret of the user's unconfirmed enrolment, or None (none started, or active already)."""
    row = _row(user.id)
    return _secret(row) if row is not None and row.enabled_at is None else None


def provisioning_uri(secret: str, email: str) -> str:
    """The otpauth:// address an authenticator app reads from the QR code."""
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=ISSUER)


def qr_svg(uri: str) -> str:
    """The QR code of `uri` as inline SVG, made here (no image host, nothing the CSP must allow)."""
    svg: str = segno.make(uri, error="m").svg_inline(scale=5, dark="#000", light="#fff", omitsize=False)
    return svg


def _is_totp_shaped(code: str) -> bool:
    """Six ASCII digits. `str.isdigit` alone also admits "١٢٣٤٥٦" and "¹²³⁴⁵⁶", which
    `hmac.compare_digest` refuses with a TypeError (a 500) instead of comparing."""
    return len(code) == 6 and code.isascii() and code.isdigit()


def _matching_step(secret: str, code: str, at: datetime) -> int | None:
    """The time step (now, or one either side) whose code is `code`, or None."""
    if not _is_totp_shaped(code):
        return None
    totp = pyotp.TOTP(secret)
    now = totp.timecode(at)
    for step in (now, now - 1, now + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def _use_step(user_id: uuid.UUID, step: int) -> bool:
    """Record `step` as used, only if it is later than the last used one: one atomic UPDATE."""
    result = db.session.execute(
        update(UserTwoFactor)
        .where(
            UserTwoFactor.user_id == user_id,
            or_(UserTwoFactor.last_used_step.is_(None), UserTwoFactor.last_used_step < step),
        )
        .values(last_used_step=step, failed_attempts=0)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0) == 1


def _new_recovery_codes(user_id: uuid.UUID) -> list[str]:
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    codes = [
        "-".join("".join(secrets.choice(_CODE_ALPHABET) for _ in range(5)) for _ in range(3))
        for _ in range(RECOVERY_CODES)
    ]
    db.session.add_all(
        RecoveryCode(user_id=user_id, code_hash=_hash_code(_normalised_recovery_code(c))) for c in codes
    )
    db.session.flush()
    return codes


def confirm_enrolment(user: User, code: str) -> list[str]:
    """Turn two-factor on with a code from the new secret; returns the 10 recovery codes (shown once).

    Raises InvalidInput (on `code`) for a wrong code, Conflict when no enrolment awaits confirmation.
    """
    row = _row(user.id)
    if row is None or row.enabled_at is not None:
        raise Conflict("There is no two-factor set-up waiting for a code. Start again.")
    step = _matching_step(_secret(row), (code or "").strip(), _now())
    if step is None or not _use_step(user.id, step):
        raise InvalidInput(WRONG_CODE, field="code")
    now = _now()
    db.session.execute(update(UserTwoFactor).where(UserTwoFactor.user_id == user.id).values(enabled_at=now))
    user.two_factor_enabled_at = now
    return _new_recovery_codes(user.id)


def disable(user: User) -> None:
    """Turn two-factor off: the secret and the recovery codes are deleted."""
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    db.session.execute(delete(UserTwoFactor).where(UserTwoFactor.user_id == user.id))
    user.two_factor_enabled_at = None
    db.session.flush()


def regenerate_recovery_codes(user: User) -> list[str]:
    """Replace the user's recovery codes with 10 new ones (shown once). Raises Conflict when 2FA is off."""
    if user.two_factor_enabled_at is None:
        raise Conflict("Turn two-factor authentication on first.")
    return _new_recovery_codes(user.id)


def recovery_codes_left(user: User) -> int:
    """How many of the user's recovery codes are unused."""
    left = db.session.scalar(
        select(func.count()).select_from(RecoveryCode).where(
            RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None)
        )
    )
    return left or 0


def user_for_login(user_id: uuid.UUID) -> User:
    """The user of a pending log in (act as them). Raises NotFound when the account is gone."""
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound("This account no longer exists.")
    return user


def check_login_code(user: User, code: str) -> LoginCheck:
    """Check a TOTP code or a recovery code offered at log in, consuming it when it is right.

    Each code offered first takes one of the MAX_FAILED_ATTEMPTS attempts (`_take_attempt`), and a
    right one gives them all back. The caller keeps the count: it must commit although the code was
    refused. At the limit the pending log in is over.
    """
    taken = _take_attempt(user.id)
    if taken is None:
        return LoginCheck.EXHAUSTED
    row = _row(user.id)
    if row is None:
        return LoginCheck.EXHAUSTED
    code = (code or "").strip()
    if _is_totp_shaped(code):  # a recovery code is 15 characters
        step = _matching_step(_secret(row), code, _now())
        accepted = step is not None and _use_step(user.id, step)
    else:
        accepted = _use_recovery_code(user.id, code)
    if accepted:
        return LoginCheck.ACCEPTED
    return LoginCheck.EXHAUSTED if taken >= MAX_FAILED_ATTEMPTS else LoginCheck.WRONG


def _take_attempt(user_id: uuid.UUID) -> int | None:
    """Count one more attempt, if any is left; how many are used now, or None (none left, or 2FA off).

    One UPDATE, whose row lock makes concurrent attempts wait for each other: of requests sent
    together, only as many as attempts are left get to check a code (reading the count first and
    adding to it after the check let all of them through).
    """
    now = _now()
    stale = or_(UserTwoFactor.last_failed_at.is_(None), UserTwoFactor.last_failed_at < now - LOCKOUT)
    taken = db.session.scalar(
        update(UserTwoFactor)
        .where(
            UserTwoFactor.user_id == user_id,
            UserTwoFactor.enabled_at.is_not(None),
            or_(UserTwoFactor.failed_attempts < MAX_FAILED_ATTEMPTS, stale),
        )
        .values(
            failed_attempts=case((stale, 1), else_=UserTwoFactor.failed_attempts + 1),
            last_failed_at=now,
        )
        .returning(UserTwoFactor.failed_attempts)
        .execution_options(synchronize_session=False)
    )
    return taken


def _use_recovery_code(user_id: uuid.UUID, code: str) -> bool:
    normalised = _normalised_recovery_code(code)
    if not normalised or len(normalised) > 64:
        return False
    used = db.session.scalar(
        update(RecoveryCode)
        .where(
            RecoveryCode.user_id == user_id,
            RecoveryCode.code_hash == _hash_code(normalised),
            RecoveryCode.used_at.is_(None),
        )
        .values(used_at=_now())
        .returning(RecoveryCode.id)
    )
    if used is not None:
        db.session.execute(update(UserTwoFactor).where(UserTwoFactor.user_id == user_id).values(failed_attempts=0))
    return used is not None


def set_team_requirement(actor: Actor, *, required: bool) -> None:
    """Require two-factor of the team's members, or stop requiring it (owners).

    Raises Conflict when an owner without two-factor would turn it on: they would lock themselves
    out of the team's pages until they enrol.
    """
    REQUIRE.check(actor)
    if required and actor.user.two_factor_enabled_at is None:
        raise Conflict("Turn on two-factor authentication for your own account first.", field="require")
    tenant = actor.tenant
    if tenant.require_two_factor == required:
        return
    tenant.require_two_factor = required
    db.session.flush()
    audit.record(actor.tenant_id, actor.user_id, "team.two_factor_required", target=tenant.name, required=required)
