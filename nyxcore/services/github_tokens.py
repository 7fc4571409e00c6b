"""The team's GitHub connection: a token checked with GitHub, then kept sealed under the key ring.

The token is sealed with associated data naming its purpose and team (`seal_context`), so a
ciphertext copied into another team's row does not decrypt. It is decrypted only in memory, for
the one API call that needs it, and is never logged, put in an error, shown back or written to the
audit log: those get the GitHub login and the token's last four characters.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from nyxcore.crypto import DecryptionError, Sealed
from nyxcore.errors import Conflict, ExternalServiceError, InvalidInput, NotFound
from nyxcore.extensions import db, keyring
from nyxcore.models import GitHubToken
from nyxcore.permissions import Operation
from nyxcore.roles import TenantRole
from nyxcore.services import audit
from nyxcore.services.github_api import (
    MAX_PAGE,
    PER_PAGE,
    RepositoryPage,
    TokenRejected,
    github_client,
)
from nyxcore.tenancy import Actor

log = logging.getLogger("nyxcore.github")

VIEW = Operation("github.view", TenantRole.MEMBER)
MANAGE = Operation("github.manage", TenantRole.OWNER, needs_verified_email=True)  # connect and disconnect
UNREADABLE = "The stored token cannot be read; reconnect GitHub."
_TOKEN_SHAPE = re.compile(r"^[\x21-\x7e]{16,255}$")

@dataclass(frozen=True)
class GitHubConnection:
    """What may be shown about a team's connection: never the token, only its last four characters."""

    login: str
    last_four: str
    set_at: datetime
    set_by: str | None  # the name of who set it; None once their account is gone
    problem: str | None  # why the stored token cannot be used, when it cannot


def seal_context(tenant_id: uuid.UUID) -> str:
    """The associated data that binds a stored token to its purpose and its team."""
    return f"github-token:{tenant_id}"


def _stored(tenant_id: uuid.UUID, *, for_update: bool = False) -> GitHubToken | None:
    query = select(GitHubToken).where(GitHubToken.tenant_id == tenant_id)
    return db.session.scalar(query.with_for_update() if for_update else query)


def _open(row: GitHubToken) -> str:
    """The stored token in plain text, for one call. Raises Conflict when it cannot be decrypted."""
    try:
        return (
            keyring.get()
            .decrypt(Sealed(row.key_id, row.nonce, row.ciphertext), seal_context(row.tenant_id))
            .decode()
        )
    except (DecryptionError, UnicodeDecodeError) as exc:
        log.warning("the stored GitHub token of team %s cannot be decrypted: %s", row.tenant_id, exc)
        raise Conflict(UNREADABLE) from None


def _checked_token(token: str) -> str:
    token = (token or "").strip()
    if not _TOKEN_SHAPE.match(token):
        raise InvalidInput(
            "That does not look like a GitHub token: paste the whole token, without spaces.", field="token"
        )
    return token


def connect(actor: Actor, token: str) -> str:
    """Check `token` with GitHub, then store it sealed for the actor's team, replacing any earlier one.

    Returns the GitHub login. Raises PermissionDenied (not an owner), InvalidInput for a malformed
    or rejected token and ExternalServiceError when GitHub cannot be asked; then nothing is stored.
    """
    MANAGE.check(actor)
    tenant_id, actor_id = actor.tenant_id, actor.user_id
    token = _checked_token(token)
    try:
        login = github_client().user_login(token)
    except TokenRejected as exc:
        raise InvalidInput(
            f"{exc.message} Check that it is complete and has not expired.", field="token"
        ) from None
    sealed = keyring.get().encrypt(token.encode(), seal_context(tenant_id))
    row = _stored(tenant_id, for_update=True)
    replaced = row is not None
    if row is None:
        row = GitHubToken(tenant_id=tenant_id)
    else:
        row.set_at = func.now()
    row.key_id, row.nonce, row.ciphertext = sealed.key_id, sealed.nonce, sealed.ciphertext
    row.last_four = token[-4:]
    row.github_login = login
    row.set_by = actor_id
    try:
        with db.session.begin_nested():
            db.session.add(row)
    except IntegrityError:  # another owner connected the team between our read and our insert
        raise Conflict("GitHub was connected by someone else at the same moment. Reload the page.") from None
    audit.record(
        tenant_id,
        actor_id,
        "github.connected",
        target=login,
        login=login,
        last_four=row.last_four,
        replaced=replaced,
    )
    db.session.flush()
    return login


def status(actor: Actor) -> GitHubConnection | None:
    """The team's connection (None when not connected), with `problem` set if the token cannot be read."""
    VIEW.check(actor)
    tenant_id = actor.tenant_id
    row = db.session.scalar(
        select(GitHubToken).options(joinedload(GitHubToken.setter)).where(GitHubToken.tenant_id == tenant_id)
    )
    if row is None:
        return None
    problem = None
    try:
        _open(row)
    except Conflict as exc:
        problem = exc.message
    return GitHubConnection(
        login=row.github_login,
        last_four=row.last_four,
        set_at=row.set_at,
        set_by=row.setter.name if row.setter else None,
        problem=problem,
    )


def repositories(actor: Actor, *, page: int = 1) -> RepositoryPage:
    """A page of the repositories the team's token can see.

    Raises NotFound when GitHub is not connected, Conflict when the stored token cannot be read,
    and ExternalServiceError when GitHub refuses or cannot be reached.
    """
    VIEW.check(actor)
    tenant_id = actor.tenant_id
    page = max(1, min(page, MAX_PAGE))
    row = _stored(tenant_id)
    if row is None:
        raise NotFound("GitHub is not connected for this team. An owner can connect it on the GitHub page.")
    try:
        items, has_next = github_client().repositories(_open(row), page=page, per_page=PER_PAGE)
    except TokenRejected:
        raise ExternalServiceError(
            "GitHub rejected the token; it may have expired or been revoked. An owner can reconnect GitHub."
        ) from None
    return RepositoryPage(items=items, page=page, has_next=has_next and page < MAX_PAGE)


def disconnect(actor: Actor) -> bool:
    """Delete the team's stored token. Returns False when there was none (nothing to record)."""
    MANAGE.check(actor)
    tenant_id, actor_id = actor.tenant_id, actor.user_id
    row = _stored(tenant_id, for_update=True)
    if row is None:
        return False
    audit.record(
        tenant_id,
        actor_id,
        "github.disconnected",
        target=row.github_login,
        login=row.github_login,
        last_four=row.last_four,
    )
    db.session.delete(row)
    db.session.flush()
    return True
