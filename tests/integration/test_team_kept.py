"""The team you were in is kept across log out and log in (issue 17), only while you are still in it."""

from __future__ import annotations

import re
from typing import Any

from nyxcore.roles import TenantRole
from tests.helpers import scalar


def active_team(client: Any) -> str:
    """The active team's name as the team page's heading shows it."""
    match = re.search(r"<h1>([^<]*)</h1>", client.get("/team/").get_data(as_text=True))
    assert match
    return match.group(1)


def test_the_team_you_were_in_is_kept_across_log_out_and_log_in(team, make_client, make_user, admin_engine):
    member = team.accounts[TenantRole.MEMBER]
    client = make_client()
    client.login(member.email)
    own_team = active_team(client)
    assert own_team != "Olive&#39;s team"  # by default: the team joined first, their own
    assert client.post_form("/teams/switch", {"tenant_id": str(team.id)}).status_code == 302
    assert active_team(client) == "Olive&#39;s team"
    client.post_form("/auth/logout")

    client.login(member.email)
    assert active_team(client) == "Olive&#39;s team"
    client.post_form("/auth/logout")

    # Someone else on the same browser starts in their own team; what is remembered is on each account.
    stranger = make_user(name="Stranger")
    client.login(stranger.email)
    assert active_team(client) != "Olive&#39;s team"
    assert scalar(admin_engine, "SELECT last_tenant_id FROM users WHERE id = :u", u=stranger.user_id) == stranger.team_id
    client.post_form("/auth/logout")

    # No longer a member: the remembered team is not used.
    with admin_engine.begin() as conn:
        conn.exec_driver_sql(
            "DELETE FROM tenant_members WHERE tenant_id = %(t)s AND user_id = %(u)s", {"t": team.id, "u": member.user_id}
        )
    client.login(member.email)
    assert active_team(client) == own_team
    assert scalar(admin_engine, "SELECT last_tenant_id FROM users WHERE id = :u", u=member.user_id) == member.team_id
