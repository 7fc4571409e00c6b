"""Account mail (reset, verification, notices): for one person, sent for no team.

Rendered from templates/email/account/<name>.txt and .html and sealed into the outbox with no
`tenant_id` (migration 0008 lets the app role add such a row, never read one back).
"""

from __future__ import annotations

from typing import Any

from flask import current_app, render_template

from nyxcore.extensions import keyring
from nyxcore.models import OutboxEmail
from nyxcore.services import mail


def link(path: str) -> str:
    """An absolute link for a mail: always from PUBLIC_URL, never from the request."""
    return f"{current_app.config['PUBLIC_URL']}{path}"


def queue_account_email(to: str, template: str, subject: str, **context: Any) -> OutboxEmail:
    """Render `template` and add it to the outbox for `to`, in this transaction; enqueued after commit."""
    context = {
        "subject": subject,
        "login_link": link("/auth/login"),
        "forgot_link": link("/auth/forgot"),
        **context,
    }
    return mail.queue_email(
        keyring.get(),
        tenant_id=None,
        to=to,
        subject=subject,
        text_body=render_template(f"email/account/{template}.txt", **context),
        html_body=render_template(f"email/account/{template}.html", **context),
    )
