"""Switching team keeps you on the same kind of page: the other team's NyxBook for NyxBook, its
list for a page about one object, and the team page when the new role may not see that kind."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import pytest

from nyxcore.roles import TenantRole

M, V = TenantRole.MEMBER, TenantRole.VIEWER
SOME_ID = uuid.UUID("0e5b2a3c-5d7e-4f10-9a4b-6c8d2e1f3a5b")  # fixed: xdist workers collect the same ids


def switched_to(client, tenant_id: uuid.UUID, from_page: str | None) -> str:
    """Post the top bar's switcher as if sent from `from_page`; the path it redirects to."""
    form = {"tenant_id": str(tenant_id)}
    if from_page is not None:
        form["from_page"] = from_page
    response = client.post_form("/teams/switch", form)
    assert response.status_code == 302, response.get_data(as_text=True)
    return urlsplit(response.headers["Location"]).path


@pytest.mark.parametrize(
    ("from_page", "lands_on"),
    [
        ("/notes/", "/notes/"),  # a list: the same list in the other team
        ("/notes/new", "/notes/new"),
        (f"/notes/{SOME_ID}", "/notes/"),  # one object's page: its section's list
        (f"/notes/{SOME_ID}/edit", "/notes/"),
        ("/wardrobe/", "/wardrobe/"),
        (f"/wardrobe/{SOME_ID}/edit", "/wardrobe/"),
        ("/team/audit", "/team/audit"),  # a member in the old team, the owner in the new one
        (f"/team/domains/{SOME_ID}/check", "/team/domains"),  # a POST's error page: its section
        (f"/team/invitations/{SOME_ID}/resend", "/team/invitations"),
        (f"/team/members/{SOME_ID}/role", "/team/"),
        ("/account", "/team/"),  # not a team's page: the team page, as before
        ("/teams/new", "/team/"),
        ("/no/such/page", "/team/"),
        ("//evil.example/notes/", "/team/"),
        ("/notes/%00", "/notes/"),
        ("/notes/\u2603?x=1#y", "/notes/"),
        ("notes/", "/notes/"),  # routing reads it from the root
        ("/" + "a" * 5000, "/team/"),
        ("", "/team/"),
        (None, "/team/"),  # a form from before the switcher said where it was
    ],
)
def test_switching_keeps_the_kind_of_page(team, login_as, from_page, lands_on):
    member = team.accounts[M]  # a member of Olive's team, the owner of their own
    client = login_as(member, team.id)
    assert switched_to(client, member.team_id, from_page) == lands_on
    assert client.get(lands_on).status_code == 200


def test_a_page_the_new_role_may_not_see_falls_back_to_its_section_or_the_team_page(team, login_as):
    viewer = team.accounts[V]  # the owner of their own team, a viewer in Olive's
    client = login_as(viewer, viewer.team_id)
    assert switched_to(client, team.id, "/wardrobe/") == "/team/"  # the wardrobe is for members
    client = login_as(viewer, viewer.team_id)
    assert switched_to(client, team.id, f"/notes/{SOME_ID}/edit") == "/notes/"  # viewers read notes
    client = login_as(viewer, viewer.team_id)
    assert switched_to(client, team.id, "/team/settings") == "/team/"
    assert "Switched to Olive" in client.get("/team/").get_data(as_text=True)


def test_the_switcher_says_which_page_it_is_on(team, login_as):
    client = login_as(team.accounts[M], team.id)
    page = client.get("/wardrobe/?q=coat").get_data(as_text=True)
    assert '<input type="hidden" name="from_page" value="/wardrobe/">' in page
