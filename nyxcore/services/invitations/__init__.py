"""Invitations by magic link: invite, resend, revoke, look up by token, accept.

One job per module; this package re-exports what blueprints, other services and tests use:

- `tokens`: the raw token, its stored SHA-256, and finding an invitation by token;
- `addresses`: the address list of a bulk invite and what became of each address;
- `limits`: the team's hourly allowance and the daily ones;
- `message`: the invitation email, sealed into the outbox;
- `issuing`: invite, list, resend, revoke (the admin's side);
- `states`: an invitation's state from its own columns;
- `display`: what the pages say (delivery, why a link is gone, wrong account);
- `reminding`: the one reminder 48 hours before expiry (a beat task);
- `history`: invitations accepted or revoked lately;
- `accepting`: where a link's visitor stands, and the atomic accept;
- `signing_up`: a new account made through the link, joining the team in one step.
"""

from nyxcore.services.invitations.accepting import (
    Acceptance,
    Accepted,
    Standing,
    WrongAccount,
    accept,
    acceptance,
)
from nyxcore.services.invitations.addresses import (
    MAX_ADDRESSES,
    InviteOutcome,
    InviteResult,
    parse_addresses,
)
from nyxcore.services.invitations.display import (
    Delivery,
    Lifecycle,
    delivery,
    gone_message,
    lifecycle,
    utc,
    wrong_account_message,
)
from nyxcore.services.invitations.history import list_closed
from nyxcore.services.invitations.issuing import (
    MANAGE,
    PER_PAGE,
    invite_many,
    list_pending,
    renew,
    resend,
    revocable,
    revoke,
)
from nyxcore.services.invitations.pending_json import pending_from_json
from nyxcore.services.invitations.reminding import REMINDER_LEAD, DueReminder, due_reminders, remind
from nyxcore.services.invitations.signing_up import sign_up_and_accept
from nyxcore.services.invitations.states import (
    INVITER_LOST_ROLE,
    RESENT,
    REVOKED,
    InvitationState,
    is_expired,
    state_of,
)
from nyxcore.services.invitations.tokens import TOKEN_BYTES, find_by_token, hash_token

__all__ = [
    "INVITER_LOST_ROLE",
    "MANAGE",
    "MAX_ADDRESSES",
    "PER_PAGE",
    "REMINDER_LEAD",
    "RESENT",
    "REVOKED",
    "TOKEN_BYTES",
    "Acceptance",
    "Accepted",
    "Delivery",
    "DueReminder",
    "InvitationState",
    "InviteOutcome",
    "InviteResult",
    "Lifecycle",
    "Standing",
    "WrongAccount",
    "accept",
    "acceptance",
    "delivery",
    "due_reminders",
    "find_by_token",
    "gone_message",
    "hash_token",
    "invite_many",
    "is_expired",
    "lifecycle",
    "list_closed",
    "list_pending",
    "parse_addresses",
    "pending_from_json",
    "remind",
    "renew",
    "resend",
    "revocable",
    "revoke",
    "sign_up_and_accept",
    "state_of",
    "utc",
    "wrong_account_message",
]
