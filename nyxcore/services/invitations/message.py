"""The invitation email: its subject and bodies, sealed into the outbox in the caller's transaction."""

from __future__ import annotations

from datetime import datetime

from flask import current_app, render_template

from nyxcore.extensions import keyring
from nyxcore.models import OutboxEmail, Tenant, User
from nyxcore.roles import TenantRole
from nyxcore.services import mail, mail_names
from nyxcore.services.invitations.display import article


def queue_invitation_email(
    inviter: User,
    tenant: Tenant,
    token: str,
    email: str,
    role: TenantRole,
    expires_at: datetime,
    *,
    reminder: bool = False,
) -> OutboxEmail:
    """Render the email carrying `token`'s link (or the reminder before expiry) and add it to the
    outbox; enqueued after commit."""
    # Both names are anyone's choice and the mail goes out from the operator's address: shown, never linked.
    inviter_name, team_name = mail_names.for_mail(inviter.name), mail_names.for_mail(tenant.name)
    context = {
        "inviter_name": inviter_name,
        "team_name": team_name,
        "role": role,
        "article": article(role),
        "link": f"{current_app.config['PUBLIC_URL']}/invite/{token}",
        "expires_at": expires_at,
        "email": email,
        "reminder": reminder,
    }
    subject = f"{inviter_name} invited you to {team_name} on NyxCore"
    if reminder:
        subject = f"Reminder: {subject}"
    return mail.queue_email(
        keyring.get(),
        tenant_id=tenant.id,
        to=email,
        subject=subject[:255],
        text_body=render_template("email/invitation.txt", **context),
        html_body=render_template("email/invitation.html", **context),
    )
