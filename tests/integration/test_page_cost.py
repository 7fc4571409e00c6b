"""The team page and the NyxBook list, made cheaper (issue 15), show the same things to the same people.

The member list leaves the ORM's tenant scoping and filters by the actor's team itself: a test proves
it cannot return another team's row even where row-level security would show that team. Nothing
about who may do what is kept between requests: a role change or a removal counts on the next one.
"""

from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import joinedload

from nyxcore import tenancy
from nyxcore.extensions import db
from nyxcore.models import Invitation, Note, TenantMember
from nyxcore.roles import TenantRole
from nyxcore.services import invitations, member_list, notes
from nyxcore.tenancy import Actor
from tests.helpers import PAST_THE_END, explained_plans, insert_invitation, member_id, seed_members
from tests.integration.test_request_cost import _sent_with_parameters, _statements_sent

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
    assert {row.user_id for row in listed.items} <= {str(both.user_id)}  # the actor's own row at most (ids as text)
    assert str(other.user_id) not in {row.user_id for row in listed.items}
    assert listed.total <= 1  # the count is the actor's team's too


def test_the_member_list_shows_names_not_hashes(app, team):
    owner = team.accounts[O]
    with app.app_context(), tenancy.tenant_context(user_id=owner.user_id, tenant_id=team.id):
        actor = _actor(owner.user_id)
        page = member_list.list_members(actor)
    assert {row.email for row in page.items} == {account.email for account in team.accounts.values()}
    assert page.total == 4
    assert not any(hasattr(row, "password_hash") or hasattr(row, "user") for row in page.items)
    # The ids come as the text the page prints (cast by PostgreSQL), the memberships' own.
    with app.app_context(), tenancy.tenant_context(user_id=owner.user_id, tenant_id=team.id):
        memberships = {str(m.id): str(m.user_id) for m in db.session.scalars(select(TenantMember))}
    assert {row.id: row.user_id for row in page.items} == memberships


def test_the_team_page_marks_the_actors_own_row_and_offers_no_action_on_it(as_owner, team, admin_engine):
    """The rows compare each member with the actor's membership (as text): the owner's row says "you"
    and carries no role or remove form; the other members' rows do."""
    page = as_owner.get("/team/").get_data(as_text=True)
    own = member_id(admin_engine, team.id, team.accounts[O].user_id)
    assert page.count('<span class="badge">you</span>') == 1
    assert f"/team/members/{own}/" not in page
    for role in (TenantRole.ADMIN, TenantRole.MEMBER, TenantRole.VIEWER):
        other = member_id(admin_engine, team.id, team.accounts[role].user_id)
        assert f'action="/team/members/{other}/role"' in page and f'href="/team/members/{other}/remove"' in page


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


def test_the_member_list_reads_the_pending_invitations_of_the_actors_team_alone(app, make_user, add_member, admin_engine):
    """The team page's first open invitations ride on the member list's statement (one round trip fewer):
    the same rows as invitations.list_pending, never another team's, even where RLS would show that team."""
    both, other = make_user(name="In Both Teams"), make_user(name="Only Elsewhere")
    add_member(other.team_id, both, M)
    mine = {insert_invitation(admin_engine, both.team_id, both.user_id, f"guest{n}@example.com") for n in range(3)}
    insert_invitation(admin_engine, both.team_id, both.user_id, "closed@example.com", revoked=True)
    theirs = insert_invitation(admin_engine, other.team_id, other.user_id, "theirs@example.com")
    with app.app_context():
        with tenancy.tenant_context(user_id=both.user_id, tenant_id=both.team_id):
            actor = _actor(both.user_id)
            page = member_list.list_members(actor, pending=10)
            assert page.pending is not None
            read = invitations.pending_from_json(page.pending, 10)
            assert read == invitations.list_pending(actor, page=1, per_page=10)  # rows, delivery, order, total
            assert {item.id for item in read.items} == mine and read.total == 3
            assert member_list.list_members(actor).pending is None  # not asked for: not read
        # Row-level security now shows the other team's invitation; the list names the actor's team.
        with tenancy.tenant_context(user_id=both.user_id, tenant_id=other.team_id):
            elsewhere = member_list.list_members(actor, pending=10)
            visible = set(db.session.scalars(select(Invitation.id)))
    assert theirs in visible
    assert elsewhere.pending is None or theirs not in {row["id"] for row in elsewhere.pending}
    assert not elsewhere.items  # the actor's team is not the context's: no member row either


@pytest.mark.committed  # the page's own transaction: its statements as they leave for the server
def test_the_team_page_reads_its_pending_invitations_without_a_round_trip_of_their_own(app, team, login_as):
    admin = login_as(team.accounts[A], team.id)
    admin.post_form("/team/invitations", {"emails": "newcomer@example.com", "role": "member"})
    admin.get("/team/")
    sent = _statements_sent(app, admin, "/team/")
    assert len(sent) + 1 == 3  # the session load, the member list with the invitations, COMMIT
    (reading,) = [statement for statement in sent if "nyxcore_pending_invitations(" in statement]
    assert "nyxcore_member_page(" in reading  # one statement: the members, the seats and the invitations
    assert "newcomer@example.com" in admin.get("/team/").get_data(as_text=True)


def test_the_pending_rows_escape_addresses_and_keep_their_forms(team, admin_engine, as_owner):
    """The invitations' rows are filled in outside Jinja's autoescape too (blueprints/pending_rows.py)."""
    owner = team.accounts[O]
    insert_invitation(admin_engine, team.id, owner.user_id, '<b>"x"&y@example.com')
    expired = insert_invitation(admin_engine, team.id, owner.user_id, "late@example.com")
    with admin_engine.begin() as conn:
        conn.execute(text("UPDATE invitations SET expires_at = now() - interval '1 hour' WHERE id = :i"), {"i": expired})
    page = as_owner.get("/team/").get_data(as_text=True)
    assert "<b>" not in page and page.count("&lt;b&gt;&#34;x&#34;&amp;y@example.com") == 3  # its cell and two labels
    row = re.search(rf'<tr id="invitation-{expired}">.*?</tr>', page, re.S)
    assert row is not None and '<span class="badge bad">Expired</span>' in row.group(0)
    assert f'action="/team/invitations/{expired}/renew"' in row.group(0) and row.group(0).count('name="csrf_token"') == 1
    assert len(re.findall(r"<td[^>]*>", row.group(0))) == 6


def _seat_count_ran(admin_engine, database, account, app, client) -> bool:
    """Whether the team page's member statement ran nyxcore_seat_counts' statement (auto_explain sees the
    statements a function runs, and only those it runs)."""
    sent = _sent_with_parameters(app, client, "/team/")
    ((statement, parameters),) = [each for each in sent if "nyxcore_member_page(" in each[0]]
    documents = explained_plans(
        admin_engine, database.app_role, statement, parameters,
        context={"app.tenant_id": str(account.team_id), "app.user_id": str(account.user_id)}, analyze=True,
    )  # fmt: skip
    texts = [document.get("Query Text", "") for document in documents]
    assert any("LIMIT max_rows" in each for each in texts), texts  # the member page's own: nested ones are seen
    return any("LIMIT cap" in each for each in texts)


@pytest.mark.committed  # auto_explain's connection reads the team the test made
def test_a_team_without_a_seat_limit_on_one_page_is_not_counted_again(app, team, login_as, admin_engine, database):
    owner = team.accounts[O]
    client = login_as(owner, team.id)
    members = len(team.accounts)
    assert not _seat_count_ran(admin_engine, database, owner, app, client)  # the page's rows are the count
    for url in ("/team/", "/team/?last=1"):  # the last page is the first read backwards: the same
        assert f'id="seat-usage">{members} members<' in client.get(url).get_data(as_text=True)
    # With a seat limit the open invitations are shown too: counted, as before.
    insert_invitation(admin_engine, team.id, owner.user_id, "guest@example.com")
    with admin_engine.begin() as conn:
        conn.execute(text("UPDATE tenants SET seat_limit = 10 WHERE id = :t"), {"t": team.id})
    assert _seat_count_ran(admin_engine, database, owner, app, client)
    assert f'id="seat-usage">Seats: {members + 1} of 10 used<' in client.get("/team/").get_data(as_text=True)


@pytest.mark.committed
def test_a_team_longer_than_a_page_is_counted_by_the_function(app, make_user, login_as, admin_engine, database):
    owner = make_user(name="Long Team Owner")
    seed_members(admin_engine, owner.team_id, 60)
    client = login_as(owner, owner.team_id)
    assert _seat_count_ran(admin_engine, database, owner, app, client)
    page = client.get("/team/").get_data(as_text=True)
    assert 'id="seat-usage">61 members<' in page and "Members (61)" in page
    last = client.get("/team/?last=1").get_data(as_text=True)  # read backwards: 51 rows, so counted too
    assert 'id="seat-usage">61 members<' in last and "Members (61)" in last
