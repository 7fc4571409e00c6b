"""Signing up without telling anyone whether an address has an account.

A new address gets an account, its personal team and a verification link; an address that
already has an account gets the same answer, the same Argon2 work, nothing created, and a mail
to its owner ("someone tried to sign up with your address"), a few a day at most
(quotas.ACCOUNT_NOTICES_PER_ADDRESS). Nobody is signed in by signing up: the verification link
does that (or logging in with the password).
"""

from __future__ import annotations

import uuid

from nyxcore.errors import Conflict
from nyxcore.services import account_mail, accounts, quotas, verification


def sign_up(*, user_id: uuid.UUID, team_id: uuid.UUID, name: str, email: str, password: str) -> str:
    """Create the account and mail the link, or mail the existing account's owner; the address, normalised.

    Run it as the new account (authz.acting_for_a_new_account). Raises InvalidInput for an invalid address.
    """
    address = accounts.validated_email(email)
    try:
        user = accounts.create_account(
            user_id=user_id, name=name, email=address, password=password, verified=False
        )
    except Conflict:  # the address is taken (the password was hashed all the same)
        if quotas.allows(quotas.ACCOUNT_NOTICES_PER_ADDRESS, address):  # not an inbox to bomb
            account_mail.queue_account_email(
                address, "signup_attempt", "Someone tried to sign up for NyxCore with your address"
            )
        return address
    accounts.add_personal_team(user, team_id)
    verification.send_verification(user)
    return address
