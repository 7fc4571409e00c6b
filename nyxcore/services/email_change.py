"""Changing one's e-mail address: proved by the current password, then by a link to the new address.

The old address is told at once. The answer is the same whether or not another account already
uses the new address (then that address gets a notice and no link). Confirming changes the
address and marks it verified, unless another account took it meanwhile (Conflict, nothing changed).
"""

from __future__ import annotations

from flask import current_app
from sqlalchemy.exc import IntegrityError

from nyxcore.errors import Conflict, InvalidInput, NotFound
from nyxcore.extensions import db
from nyxcore.models import AccountToken, User
from nyxcore.services import account_mail, account_tokens, accounts, mail_names, quotas
from nyxcore.services.account_tokens import Purpose


def request_change(user: User, *, password: str, new_email: str) -> str:
    """Send the confirmation link for `new_email` (run as `user`); returns the address, normalised.

    Raises InvalidInput (wrong password: field `password`; invalid or unchanged address: `email`).
    """
    accounts.prove_password(user, password)
    address = accounts.validated_email(new_email)
    if address == user.email:
        raise InvalidInput("That is already your address.", field="email")
    if accounts.address_in_use(address):
        if quotas.allows(quotas.ACCOUNT_NOTICES_PER_ADDRESS, address):  # a few a day at most
            account_mail.queue_account_email(address, "change_email_taken", "Someone tried to use this address")
    else:
        ttl = current_app.config["EMAIL_CHANGE_TTL"]
        token = account_tokens.issue(user.id, Purpose.CHANGE_EMAIL, ttl, new_email=address)
        account_mail.queue_account_email(
            address,
            "change_email",
            "Confirm your new NyxCore address",
            link=account_mail.link(f"/account/email/confirm/{token}"),
            expires_at=account_tokens.now() + ttl,
        )
    account_mail.queue_account_email(
        user.email,
        "change_email_notice",
        "A change of your NyxCore address was asked for",
        new_email=mail_names.for_mail(address, limit=320),  # shown, never linked
    )
    return address


def confirm_change(token: AccountToken) -> User:
    """Use a confirmation link (run as its user): the address changes and counts as verified.

    Raises Gone (used or expired), NotFound, or Conflict when another account took the address.
    """
    account_tokens.consume(token)
    user = db.session.get(User, token.user_id)
    if user is None or token.new_email is None:
        raise NotFound("This account no longer exists.")
    try:
        with db.session.begin_nested():
            user.email = token.new_email
            user.email_verified_at = account_tokens.now()
            db.session.flush()
    except IntegrityError as exc:  # uq_users_email
        raise Conflict(
            f"{token.new_email} is now used by another account, so your address was not changed."
        ) from exc
    # Links mailed to the old address (or for another new one) stop working with the change.
    account_tokens.void_unused(user.id, Purpose.CHANGE_EMAIL, Purpose.VERIFY_EMAIL, Purpose.RESET_PASSWORD)
    return user
