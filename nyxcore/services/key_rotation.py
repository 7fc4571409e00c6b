"""Re-encrypting stored secrets under the primary key, after the operator put a new key first.

Each row is re-sealed on its own, under a row lock and after checking again that it still needs it,
so a run can stop anywhere and simply be started again. Callers commit (in batches).

Two kinds of secret are stored: GitHub tokens (one per team, under row-level security) and the
bodies of unsent outbox emails (no team, no RLS).
"""

from __future__ import annotations

import uuid

from sqlalchemy import ColumnElement, func, select, text

from nyxcore import tenancy
from nyxcore.crypto import KeyRing, Sealed
from nyxcore.extensions import db
from nyxcore.models import GitHubToken, OutboxEmail
from nyxcore.services.github_tokens import seal_context as github_seal_context
from nyxcore.services.mail import seal_context as outbox_seal_context


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

    Sets the team's context itself, so RLS lets it see and change that one row. Raises
    DecryptionError, changing nothing, when the token cannot be decrypted with the ring.
    """
    with tenancy.tenant_context(tenant_id=tenant_id):
        row = db.session.scalar(
            select(GitHubToken).where(GitHubToken.tenant_id == tenant_id).with_for_update()
        )
        if row is None or not ring.needs_rotation(Sealed(row.key_id, row.nonce, row.ciphertext)):
            return False
        sealed = ring.rotate(Sealed(row.key_id, row.nonce, row.ciphertext), github_seal_context(tenant_id))
        row.key_id, row.nonce, row.ciphertext = sealed.key_id, sealed.nonce, sealed.ciphertext
        # Flush inside the context: the UPDATE must carry this team's id for RLS to allow it.
        db.session.flush()
    return True


def _stale_outbox_filter(ring: KeyRing) -> list[ColumnElement[bool]]:
    return [
        OutboxEmail.sent_at.is_(None),
        OutboxEmail.body_ciphertext.is_not(None),
        OutboxEmail.key_id != ring.primary_id,
    ]


def count_stale_outbox(ring: KeyRing) -> int:
    """Unsent outbox emails whose body is sealed under an older key."""
    return (
        db.session.scalar(select(func.count()).select_from(OutboxEmail).where(*_stale_outbox_filter(ring)))
        or 0
    )


def outbox_under_primary(ring: KeyRing) -> int:
    """Unsent outbox emails whose body is sealed under the primary key already."""
    count = db.session.scalar(
        select(func.count())
        .select_from(OutboxEmail)
        .where(
            OutboxEmail.sent_at.is_(None),
            OutboxEmail.body_ciphertext.is_not(None),
            OutboxEmail.key_id == ring.primary_id,
        )
    )
    return count or 0


def stale_outbox_batch(ring: KeyRing, *, after: uuid.UUID | None, limit: int) -> list[OutboxEmail]:
    """The next `limit` stale unsent outbox emails by id after `after`, locked for this transaction.

    A worker sending one of them holds its lock; we wait, and the row no longer matches once sent.
    """
    query = select(OutboxEmail).where(*_stale_outbox_filter(ring))
    if after is not None:
        query = query.where(OutboxEmail.id > after)
    return list(db.session.scalars(query.order_by(OutboxEmail.id).limit(limit).with_for_update()))


def reseal_outbox_email(ring: KeyRing, outbox: OutboxEmail) -> bool:
    """Re-seal one outbox body under the primary key. Raises DecryptionError, changing nothing."""
    if outbox.key_id is None or outbox.nonce is None or outbox.body_ciphertext is None:
        return False
    current = Sealed(outbox.key_id, outbox.nonce, outbox.body_ciphertext)
    if not ring.needs_rotation(current):
        return False
    sealed = ring.rotate(current, outbox_seal_context(outbox.id))
    outbox.key_id, outbox.nonce, outbox.body_ciphertext = sealed.key_id, sealed.nonce, sealed.ciphertext
    return True
