"""The team page and the NyxBook list, made cheaper (issue 15), show the same things to the same people.

The member list leaves the ORM's tenant scoping and filters by the actor's team itself: a test proves
it cannot return another team's row even where row-level security would show that team. Nothing
about who may do what is kept between requests: a role change or a removal counts on the next one.
"""

from __future__ import annotations

import re
import uuid

from sqlalchemy import select, text
from sqlalchemy.orm import joinedload

from nyxcore import tenancy
from nyxcore.extensions import db
from nyxcore.models import Note, TenantMember
from nyxcore.roles import TenantRole
from nyxcore.services import member_list, notes
from nyxcore.tenancy import Actor
from tests.helpers import PAST_THE_END, member_id

O, A, M, V = TenantRole.OWNER, TenantRole.ADMIN, TenantRole.MEMBER, TenantRole.VIEWER


def _actor(user_id: uuid.UUID) -> Actor:
    """The user's Actor in the team of the tenant context in force (as the request hook makes it)."""
    membership = db.session.scalars(
        select(TenantMember)
        .options(joinedload(TenantMember.user), joinedload(TenantMember.tenant))
        .where(TenantMember.user_id == user_id)
    ).one()
    return Actor(user=membership.user, membership=membership)


def test_the_member_list_filters_by_the_actors_team_itself(app, make_user, add_member):
    both, other = make_user(name="In Both Teams"), make_user(name="Only Elsewhere")
    add_member(other.team_id, both, M)
    with app.app_context():
        with tenancy.tenant_context(user_id=both.user_id, tenant_id=both.team_id):
            actor = _actor(both.user_id)
        # Row-level security now shows the other team; the list must still be the actor's team's.
        with tenancy.tenant_context(user_id=both.user_id, tenant_id=other.team_id):
            listed = member_list.list_members(actor)
            visible = set(db.session.scalars(select(TenantMember.user_id)))
    assert visible == {both.user_id, other.user_id}  # the other team's members are visible here
    assert {row.user_id for row in listed.items} <= {both.user_id}  # the actor's own row at most
    assert other.user_id not in {row.user_id for row in listed.items}
    assert listed.total <= 1  # the count is the actor's team's too


def test_the_member_list_shows_names_not_hashes(app, team):
    owner = team.accounts[O]
    with app.app_context(), tenancy.tenant_context(user_id=owner.user_id, tenant_id=team.id):
        actor = _actor(owner.user_id)
        page = member_list.list_members(actor)
    assert {row.email for row in page.items} == {account.email for account in team.accounts.values()}
    assert page.total == 4
    assert not any(hasattr(row, "password_hash") or hasattr(row, "user") for row in page.items)


def test_a_page_past_the_end_still_counts_the_members(as_viewer):
    page = as_viewer.get(f"/team/?after={PAST_THE_END}").get_data(as_text=True)
    assert "Members (4)" in page
    assert "No members on this page." in page


def test_the_notes_list_loads_titles_not_bodies(app, team):
    owner = team.accounts[O]
    with app.app_context(), tenancy.tenant_context(user_id=owner.user_id, tenant_id=team.id):
        db.session.add(Note(tenant_id=team.id, author_id=owner.user_id, title="Runbook", body="secret steps"))
        db.session.flush()
        page = notes.list_notes(_actor(owner.user_id), page=1)
    assert [(line.title, line.author_name) for line in page.items] == [("Runbook", owner.name)]
    assert page.total == 1
    assert not hasattr(page.items[0], "body")


def test_a_role_change_counts_on_the_next_request(team, admin_engine, as_owner, as_admin):
    target = member_id(admin_engine, team.id, team.accounts[V].user_id)
    assert f"/team/members/{target}/role" in as_admin.get("/team/").get_data(as_text=True)
    admin = member_id(admin_engine, team.id, team.accounts[A].user_id)
    assert as_owner.post_form(f"/team/members/{admin}/role", {"role": "member"}).status_code == 302
    page = as_admin.get("/team/").get_data(as_text=True)
    assert f"/team/members/{target}/role" not in page
    assert as_admin.post_form(f"/team/members/{target}/role", {"role": "member"}).status_code == 403


def test_a_removal_counts_on_the_next_request(team, admin_engine, as_owner, as_member):
    assert team.accounts[O].email in as_member.get("/team/").get_data(as_text=True)
    member = member_id(admin_engine, team.id, team.accounts[M].user_id)
    assert as_owner.confirm(f"/team/members/{member}/remove").status_code == 302
    page = as_member.get("/team/").get_data(as_text=True)  # back in their own personal team
    assert team.accounts[O].email not in page
    assert "Members (1)" in page


def test_the_member_rows_escape_names_and_keep_their_labels(team, admin_engine, as_owner):
    """The rows are filled into markup outside Jinja's autoescape (blueprints/member_rows.py): a name is
    still escaped everywhere it shows, and each row keeps its cell labels, control labels and forms."""
    viewer = team.accounts[V]
    with admin_engine.begin() as conn:
        conn.execute(text("UPDATE users SET name = :n WHERE id = :u"), {"n": '<b>"Vi" & co</b>', "u": viewer.user_id})
        conn.execute(
            text("UPDATE tenant_members SET ends_at = '2031-02-01' WHERE user_id = :u AND tenant_id = :t"),
            {"u": viewer.user_id, "t": team.id},
        )
    page = as_owner.get("/team/").get_data(as_text=True)
    assert "<b>" not in page and page.count("&lt;b&gt;&#34;Vi&#34; &amp; co&lt;/b&gt;") == 7  # its cell and six control labels
    row = re.search(r"<tr>\s*<td data-label=\"Name\">&lt;b&gt;.*?</tr>", page, re.S)
    assert row is not None
    cells = re.findall(r"<td[^>]*>", row.group(0))
    assert len(cells) == 7 and all("data-label=" in cell for cell in cells)
    ends = re.search(r'id="ends-[0-9a-f-]+" type="date" name="ends_on" value="2031-01-31"', row.group(0))
    assert ends and "until 31 Jan 2031" in row.group(0) and "Clear end date" in row.group(0)
    assert row.group(0).count('name="csrf_token"') == 3 and '<option value="viewer" selected>' in row.group(0)
