"""Re-encrypting stored secrets under the primary key, after the operator put a new key first.

Each row is re-sealed on its own, under a row lock and after checking again that it still needs it,
so a run can stop anywhere and simply be started again. Callers commit (in batches).

Three kinds of secret are stored, all under row-level security: GitHub tokens (one per team), the
bodies of unsent outbox emails (each reachable alone through its `outbox_id` context), and users'
two-factor TOTP secrets (each reachable alone in its user's context).
"""

from __future__ import annotations

import uuid

from sqlalchemy import func, select, text

from nyxcore import tenancy
from nyxcore.crypto import KeyRing, Sealed
from nyxcore.extensions import db
from nyxcore.models import GitHubToken, OutboxEmail, UserTwoFactor
from nyxcore.services.github_tokens import seal_context as github_seal_context
from nyxcore.services.mail import seal_context as outbox_seal_context
from nyxcore.services.two_factor import seal_context as two_factor_seal_context


def _on_postgresql() -> bool:
    return db.session.get_bind().dialect.name == "postgresql"


def stale_github_tenants(ring: KeyRing) -> list[uuid.UUID]:
    """The teams whose GitHub token is sealed under a key other than the primary one.

    Under RLS the app role sees a team's row only with that team's context set, so it cannot list
    them itself. PostgreSQL answers through `nyxcore_tenants_with_stale_github_tokens`, a
    SECURITY DEFINER function (migration 0003) that returns team ids and nothing else. SQLite has
    no RLS; there the ORM's own team scoping is lifted for this one query.
    """
    if _on_postgresql():
        rows = db.session.execute(
            text("SELECT * FROM nyxcore_tenants_with_stale_github_tokens(:primary)"),
            {"primary": ring.primary_id},
        )
        return [uuid.UUID(str(tenant_id)) for (tenant_id,) in rows]
    return list(
        db.session.scalars(
            select(GitHubToken.tenant_id)
            .where(GitHubToken.key_id != ring.primary_id)
            .order_by(GitHubToken.tenant_id)
            .execution_options(**{tenancy.ALL_TENANTS: True})
        )
    )


def github_tokens_under_primary(ring: KeyRing) -> int:
    """How many GitHub tokens (of all teams) are sealed under the primary key already."""
    if _on_postgresql():
        return int(
            db.session.execute(
                text("SELECT nyxcore_count_github_tokens_under_key(:primary)"), {"primary": ring.primary_id}
            ).scalar_one()
        )
    count = db.session.scalar(
        select(func.count())
        .select_from(GitHubToken)
        .where(GitHubToken.key_id == ring.primary_id)
        .execution_options(**{tenancy.ALL_TENANTS: True})
    )
    return count or 0


def reseal_github_token(ring: KeyRing, tenant_id: uuid.UUID) -> bool:
    """Re-seal the team's token under the primary key; False if it is gone or was current already.

    Run it in the team's context (the CLI sets it), under which RLS shows that one row. Raises
    DecryptionError, changing nothing, when the token cannot be decrypted with the ring.
    """
    row = db.session.scalar(select(GitHubToken).where(GitHubToken.tenant_id == tenant_id).with_for_update())
    return _reseal(ring, row, github_seal_context(tenant_id))


def _reseal(ring: KeyRing, row: GitHubToken | UserTwoFactor | None, context: str) -> bool:
    """Re-seal `row`'s secret under the primary key; False if there is none or it is current already."""
    if row is None or not ring.needs_rotation(Sealed(row.key_id, row.nonce, row.ciphertext)):
        return False
    sealed = ring.rotate(Sealed(row.key_id, row.nonce, row.ciphertext), context)
    row.key_id, row.nonce, row.ciphertext = sealed.key_id, sealed.nonce, sealed.ciphertext
    db.session.flush()  # while the caller's context holds: the UPDATE must carry its team's or user's id
    return True


def outbox_counts(ring: KeyRing) -> tuple[int, int]:
    """Unsent outbox emails of every team: (sealed under the primary key, sealed under an older one).

    Under RLS nobody sees every team's mail; PostgreSQL counts through the SECURITY DEFINER function
    `nyxcore_count_unsent_outbox` (migration 0004), which returns two numbers and nothing else.
    """
    if _on_postgresql():
        row = db.session.execute(
            text("SELECT * FROM nyxcore_count_unsent_outbox(:primary)"), {"primary": ring.primary_id}
        ).one()
        return int(row.under_primary), int(row.stale)
    unsent = (OutboxEmail.sent_at.is_(None), OutboxEmail.body_ciphertext.is_not(None))
    under = select(func.count()).select_from(OutboxEmail).where(*unsent, OutboxEmail.key_id == ring.primary_id)
    stale = select(func.count()).select_from(OutboxEmail).where(*unsent, OutboxEmail.key_id != ring.primary_id)
    return db.session.scalar(under) or 0, db.session.scalar(stale) or 0


def stale_outbox_ids(ring: KeyRing, *, after: uuid.UUID | None, limit: int) -> list[uuid.UUID]:
    """The ids of the next `limit` unsent outbox emails under an older key, by id after `after`."""
    if _on_postgresql():
        rows = db.session.execute(
            text("SELECT * FROM nyxcore_stale_outbox(:primary, :after, :limit)"),
            {"primary": ring.primary_id, "after": after, "limit": limit},
        )
        return [uuid.UUID(str(outbox_id)) for (outbox_id,) in rows]
    query = select(OutboxEmail.id).where(
        OutboxEmail.sent_at.is_(None),
        OutboxEmail.body_ciphertext.is_not(None),
        OutboxEmail.key_id != ring.primary_id,
    )
    if after is not None:
        query = query.where(OutboxEmail.id > after)
    return list(db.session.scalars(query.order_by(OutboxEmail.id).limit(limit)))


def reseal_outbox_email(ring: KeyRing, outbox_id: uuid.UUID) -> bool:
    """Re-seal one unsent outbox body under the primary key; False if sent, wiped or current already.

    Run it in the message's own context (`outbox_id`; the CLI sets it), under which RLS shows that
    row alone. A worker sending it holds its lock; we wait, and it no longer needs re-sealing once
    sent. Raises DecryptionError, changing nothing, when the body cannot be decrypted with the ring.
    """
    outbox = db.session.scalar(
        select(OutboxEmail).where(OutboxEmail.id == outbox_id, OutboxEmail.sent_at.is_(None)).with_for_update()
    )
    if outbox is None or outbox.key_id is None or outbox.nonce is None or outbox.body_ciphertext is None:
        return False
    current = Sealed(outbox.key_id, outbox.nonce, outbox.body_ciphertext)
    if not ring.needs_rotation(current):
        return False
    sealed = ring.rotate(current, outbox_seal_context(outbox.id))
    outbox.key_id, outbox.nonce, outbox.body_ciphertext = sealed.key_id, sealed.nonce, sealed.ciphertext
    db.session.flush()  # while the caller's context holds: the UPDATE must carry the outbox id
    return True


def stale_two_factor_users(ring: KeyRing) -> list[uuid.UUID]:
    """The users whose TOTP secret is sealed under a key other than the primary one.

    PostgreSQL answers through the SECURITY DEFINER function `nyxcore_users_with_stale_two_factor`
    (migration 0006), which returns user ids and nothing else; SQLite has no RLS.
    """
    if _on_postgresql():
        rows = db.session.execute(
            text("SELECT * FROM nyxcore_users_with_stale_two_factor(:primary)"), {"primary": ring.primary_id}
        )
        return [uuid.UUID(str(user_id)) for (user_id,) in rows]
    query = select(UserTwoFactor.user_id).where(UserTwoFactor.key_id != ring.primary_id)
    return list(db.session.scalars(query.order_by(UserTwoFactor.user_id)))


def reseal_two_factor_secret(ring: KeyRing, user_id: uuid.UUID) -> bool:
    """Re-seal the user's TOTP secret under the primary key; False if it is gone or was current already.

    Run it in the user's context (the CLI sets it), under which RLS shows that one row. Raises
    DecryptionError, changing nothing, when the secret cannot be decrypted with the ring.
    """
    row = db.session.scalar(select(UserTwoFactor).where(UserTwoFactor.user_id == user_id).with_for_update())
    return _reseal(ring, row, two_factor_seal_context(user_id))
