"""Signing up through a magic link, in one step: the account, verified, joins the inviting team.

The address is the invitation's (the link proves it), so the account is created verified and with
no personal team; then the invitation is accepted with every check of `accepting.accept`
(expiry, revocation, the inviter's role, single use under concurrency). An address that already
has an account is refused with Conflict: its owner logs in to accept instead.
"""

from __future__ import annotations

import uuid

from nyxcore.services import accounts
from nyxcore.services.invitations.accepting import Accepted, accept, acceptance


def sign_up_and_accept(token: str, *, user_id: uuid.UUID, name: str, password: str) -> Accepted:
    """Create account `user_id` for the invitation's address and accept the invitation with it.

    Run it as the new account presenting the link, in the invitation's team
    (authz.presenting_invitation_as_new_account). Raises NotFound or Gone for a dead link,
    Conflict when the address already has an account.
    """
    invitation = acceptance(token, None).invitation  # a dead link is refused before anything is made
    user = accounts.create_account(
        user_id=user_id, name=name, email=invitation.email, password=password, verified=True
    )
    return accept(token, user)
