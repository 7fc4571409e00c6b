"""Join links: a shareable link that lets signed-in, verified people join a team with a role.

An admin makes one with a role (member or viewer, never more: a link can be forwarded), an expiry
(at most LINK_MAX_DAYS days), a number of uses and optionally the e-mail domains that may use it.
The raw token is shown once, to its maker, on the page right after; only its SHA-256 is kept.

- `links`: make, list and revoke a team's links (the admin's side), and a link's state;
- `joining`: where a link's visitor stands, and the atomic join.
"""

from nyxcore.services.join_links.joining import (
    JOIN,
    Joined,
    Standing,
    Visit,
    find_by_token,
    gone_message,
    join,
    visit,
    with_team,
)
from nyxcore.services.join_links.links import (
    LINK_MAX_DAYS,
    MANAGE,
    MAX_USES,
    ROLES,
    CreatedLink,
    LinkRow,
    LinkState,
    create,
    list_links,
    revocable,
    revoke,
    state_of,
)

__all__ = [
    "JOIN",
    "LINK_MAX_DAYS",
    "MANAGE",
    "MAX_USES",
    "ROLES",
    "CreatedLink",
    "Joined",
    "LinkRow",
    "LinkState",
    "Standing",
    "Visit",
    "create",
    "find_by_token",
    "gone_message",
    "join",
    "list_links",
    "revocable",
    "revoke",
    "state_of",
    "visit",
    "with_team",
]
