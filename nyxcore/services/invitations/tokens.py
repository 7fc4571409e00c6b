"""Magic-link tokens: made, hashed for storage, and looked up.

The raw token (32 random bytes, URL-safe) exists only in the email and in the link the invitee
follows; the database keeps its SHA-256.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from sqlalchemy import select
from sqlalchemy.orm import joinedload

from nyxcore import tenancy
from nyxcore.errors import NotFound
from nyxcore.extensions import db
from nyxcore.models import Invitation

TOKEN_BYTES = 32
# secrets.token_urlsafe(32): 43 characters of the URL-safe base64 alphabet, no padding.
_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_UNKNOWN_LINK = "This invitation link is not valid. Check that you opened the whole link from the email."


def new_token() -> str:
    """A fresh raw token: TOKEN_BYTES random bytes, URL-safe."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    """The SHA-256 hex digest stored for `token`."""
    return hashlib.sha256(token.encode()).hexdigest()


def find_by_token(token: str) -> Invitation:
    """The invitation a magic-link token stands for, in any state, with its team and inviter.

    Run it with the token's hash in the tenant context (authz.presenting_invitation): row-level
    security shows an invitation (and its team) only to the request that presents the token.
    Raises NotFound for an unknown token.
    """
    if not _TOKEN_SHAPE.match(token):
        raise NotFound(_UNKNOWN_LINK)
    token_hash = hash_token(token)
    invitation = db.session.scalar(
        select(Invitation)
        .options(joinedload(Invitation.tenant), joinedload(Invitation.inviter))
        .where(Invitation.token_hash == token_hash)
        .execution_options(**{tenancy.ALL_TENANTS: True})
    )
    if invitation is None:
        raise NotFound(_UNKNOWN_LINK)
    return invitation
