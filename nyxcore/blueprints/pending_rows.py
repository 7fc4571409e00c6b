"""The pending invitations' rows, filled into fixed markup once per page (issue 15), as member_rows does.

The markup is what `invite/_pending.html` rendered per row through Jinja, byte for byte (its blank
lines included): the same cells, labels, state badges and forms, each value escaped once.
"""

from __future__ import annotations

from collections.abc import Iterable

from markupsafe import Markup

from nyxcore.blueprints.member_rows import ROLE_LABELS
from nyxcore.fixed_cost import csrf_token
from nyxcore.roles import TenantRole
from nyxcore.services.invitations.issuing import PendingInvitation
from nyxcore.templating import format_time, text_of


def pending_rows(
    items: Iterable[PendingInvitation],
    *,
    manageable: frozenset[TenantRole],
    renew_url: str,
    resend_url: str,
    revoke_url: str,
) -> Markup:
    """The <tr>s of the pending invitations' table; the URLs are `url_pattern`s (`{}` for the id)."""
    csrf = f'<input type="hidden" name="csrf_token" value="{text_of(csrf_token())}">'
    urls = (text_of(renew_url), text_of(resend_url), text_of(revoke_url))
    return Markup("".join([_row(inv, manageable, urls, csrf) for inv in items]))  # noqa: S704 (escaped in _row)


def _state(inv: PendingInvitation) -> str:
    d, state = inv.delivery, inv.lifecycle
    if state == "expired":
        shown = '<span class="badge bad">Expired</span> Renew it to send a new link.\n          '
    elif state == "sent":
        shown = f'<span class="badge ok">Sent</span> {format_time(d.at)}\n          '
    elif state == "failed":
        shown = f'<span class="badge bad">Failed</span> {text_of(d.summary)}.\n          '
    elif d.state == "failed":
        shown = f'<span class="badge warn">Queued</span> Not delivered yet: {text_of(d.summary)}.\n          '
    elif d.state == "queued":
        shown = '<span class="badge warn">Queued</span>\n          '
    else:
        shown = '<span class="badge">Not queued</span>'
    reminded = f'<br><span class="muted">Reminded {format_time(inv.reminded_at)}</span>' if inv.reminded_at else ""
    return (
        f'\n        <td data-label="State" class="delivery delivery-{d.state.replace(" ", "-")} state-{state}">\n'
        f"          {shown}\n          {reminded}\n        </td>"
    )


def _row(inv: PendingInvitation, manageable: frozenset[TenantRole], urls: tuple[str, str, str], csrf: str) -> str:
    email, invitation = text_of(inv.email), str(inv.id)
    inviter = text_of(inv.inviter_name) if inv.inviter_name is not None else "someone no longer here"
    actions = ""
    if inv.role in manageable:
        if inv.lifecycle == "expired":
            url, button, label = urls[0], "button small primary", "Renew"
        else:
            url, button, label = urls[1], "button small", "Resend"
        actions = (
            '\n          <div class="actions">\n            \n'
            f'            <form method="post" action="{url.format(invitation)}" class="inline">\n'
            f"              {csrf}\n"
            f'              <button type="submit" class="{button}">{label}<span class="sr-only"> the invitation to'
            f" {email}</span></button>\n            </form>\n            \n"
            f'            <a class="button small danger" href="{urls[2].format(invitation)}">Revoke<span class="sr-only">'
            f" the invitation to {email}</span></a>\n          </div>\n          "
        )
    return (
        f'\n      \n      <tr id="invitation-{invitation}">\n'
        f'        <td data-label="Email">{email}</td>\n'
        f'        <td data-label="Role">{ROLE_LABELS[inv.role]}</td>\n'
        f'        <td data-label="Invited by">{inviter}</td>\n'
        f'        <td data-label="Expires">{format_time(inv.expires_at)}</td>\n        {_state(inv)}\n'
        f'        <td data-label="Actions">\n          {actions}\n        </td>\n      </tr>\n    '
    )
