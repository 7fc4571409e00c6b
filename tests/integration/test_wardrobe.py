"""Wardrobe, the feature built by the README's recipe: members use all of it, viewers none of it."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text

from nyxcore.roles import TenantRole
from tests.helpers import count, scalar


def add(client: Any, name: str, **fields: str) -> Any:
    return client.post_form("/wardrobe/new", {"name": name, "category": "", "size": "", "notes": "", **fields})


def item_id(admin_engine: Any, name: str) -> uuid.UUID:
    return uuid.UUID(str(scalar(admin_engine, "SELECT id FROM wardrobe_items WHERE name = :n", n=name)))


def test_members_add_find_edit_and_remove_items(team, login_as, admin_engine):
    member = login_as(team.accounts[TenantRole.MEMBER], team.id)
    assert add(member, "Rain jacket", category="Outerwear", size="L").status_code == 302
    assert add(member, "Wool hat", category="Accessories").status_code == 302
    listing = member.get("/wardrobe/?q=outer").get_data(as_text=True)
    assert ">Rain jacket</td>" in listing and ">Wool hat</td>" not in listing
    jacket = item_id(admin_engine, "Rain jacket")
    edited = member.post_form(f"/wardrobe/{jacket}/edit", {"name": "Rain coat", "category": "Outerwear", "size": "XL", "notes": "blue"})
    assert edited.status_code == 302
    assert count(admin_engine, "SELECT count(*) FROM wardrobe_items WHERE name = 'Rain coat' AND size = 'XL'") == 1
    assert member.confirm(f"/wardrobe/{jacket}/delete").status_code == 302
    assert count(admin_engine, "SELECT count(*) FROM wardrobe_items") == 1


def test_the_list_pages_through_many_items(team, login_as, admin_engine):
    member = login_as(team.accounts[TenantRole.MEMBER], team.id)
    with admin_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO wardrobe_items (id, tenant_id, name, category, size, notes) "
                "SELECT gen_random_uuid(), :t, 'Sock ' || lpad(n::text, 2, '0'), '', '', '' FROM generate_series(1, 30) AS n"
            ),
            {"t": team.id},
        )
    first, second = (member.get(f"/wardrobe/?page={n}").get_data(as_text=True) for n in (1, 2))
    assert "Sock 01" in first and "Sock 25" in first and "Sock 26" not in first
    assert "Sock 26" in second and "Page 2 of 2" in second


def test_viewers_get_403_everywhere_and_see_no_wardrobe_link(team, login_as, admin_engine):
    member = login_as(team.accounts[TenantRole.MEMBER], team.id)
    add(member, "Boots")
    boots = item_id(admin_engine, "Boots")
    viewer = login_as(team.accounts[TenantRole.VIEWER], team.id)
    assert "/wardrobe/" not in viewer.get("/team/").get_data(as_text=True)
    assert "/wardrobe/" in member.get("/team/").get_data(as_text=True)
    for method, url in (("GET", "/wardrobe/"), ("GET", "/wardrobe/new"), ("GET", f"/wardrobe/{boots}/edit")):
        assert viewer.open(url, method=method).status_code == 403, url
    for url in ("/wardrobe/new", f"/wardrobe/{boots}/edit", f"/wardrobe/{boots}/delete"):
        assert viewer.post_form(url, {"name": "Mine now"}).status_code == 403, url
    assert count(admin_engine, "SELECT count(*) FROM wardrobe_items WHERE name = 'Boots'") == 1


def test_another_teams_items_answer_404(team, make_user, login_as, admin_engine):
    member = login_as(team.accounts[TenantRole.MEMBER], team.id)
    add(member, "Scarf")
    scarf = item_id(admin_engine, "Scarf")
    outsider = make_user(name="Otto Outsider")
    other = login_as(outsider, outsider.team_id)
    assert other.get(f"/wardrobe/{scarf}/edit").status_code == 404
    assert other.confirm(f"/wardrobe/{scarf}/delete").status_code == 404
    assert other.post_form(f"/wardrobe/{scarf}/edit", {"name": "Stolen"}).status_code == 404
    assert "Scarf" not in other.get("/wardrobe/").get_data(as_text=True)
    assert count(admin_engine, "SELECT count(*) FROM wardrobe_items WHERE name = 'Scarf'") == 1


def test_an_item_needs_a_name_and_a_refused_form_changes_nothing(team, login_as, admin_engine):
    member = login_as(team.accounts[TenantRole.MEMBER], team.id)
    refused = add(member, "   ")
    assert refused.status_code == 400
    assert "This field is required." in refused.get_data(as_text=True)  # a blank name is no name
    assert count(admin_engine, "SELECT count(*) FROM wardrobe_items") == 0
