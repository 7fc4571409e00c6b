"""NyxBook notes under RBAC and isolation: viewers read, members and up write, other teams see 404."""

from __future__ import annotations

import re

import pytest

from nyxcore.roles import TenantRole
from tests.helpers import rows, scalar

O, A, M, V = TenantRole.OWNER, TenantRole.ADMIN, TenantRole.MEMBER, TenantRole.VIEWER


def note_ids(admin_engine) -> list[str]:
    return [str(row.id) for row in rows(admin_engine, "SELECT id FROM notes ORDER BY created_at")]


def create_note(client, title="Runbook", body="Restart the thing.") -> str:
    response = client.post_form("/notes/new", {"title": title, "body": body})
    assert response.status_code == 302
    match = re.search(r"/notes/([0-9a-f-]{36})", response.location)
    assert match
    return match.group(1)


def test_member_writes_and_viewer_reads(as_member, as_viewer):
    member = as_member
    note_id = create_note(member, body="<script>alert(1)</script>")
    viewer = as_viewer
    listing = viewer.get("/notes/").get_data(as_text=True)
    assert "Runbook" in listing
    page = viewer.get(f"/notes/{note_id}").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert" not in page
    assert "Edit" not in page
    assert "New note" not in listing


def test_the_list_escapes_titles_and_links_each_note(as_member, as_viewer):
    """The list's rows are filled in Python (blueprints/notes.py `note_rows`): a title is escaped with
    the five entities Jinja's autoescape writes, and each row links to its own note."""
    title = """<b onclick='x()'>"Ops" & Dev</b>"""
    note_id = create_note(as_member, title=title)
    listing = as_viewer.get("/notes/").get_data(as_text=True)
    assert (
        f'<a href="/notes/{note_id}">&lt;b onclick=&#39;x()&#39;&gt;&#34;Ops&#34; &amp; Dev&lt;/b&gt;</a>' in listing
    )
    assert "<b onclick" not in listing


def test_viewer_cannot_write(admin_engine, as_owner, as_viewer):
    owner_note = create_note(as_owner)
    viewer = as_viewer
    assert viewer.post_form("/notes/new", {"title": "sneaky"}).status_code == 403
    assert viewer.post_form(f"/notes/{owner_note}/edit", {"title": "changed"}).status_code == 403
    assert viewer.confirm(f"/notes/{owner_note}/delete").status_code == 403
    assert note_ids(admin_engine) == [owner_note]


def test_edit_and_delete(admin_engine, as_admin):
    client = as_admin
    note_id = create_note(client)
    assert (
        client.post_form(f"/notes/{note_id}/edit", {"title": "Runbook v2", "body": "new"}).status_code == 302
    )
    assert "Runbook v2" in client.get(f"/notes/{note_id}").get_data(as_text=True)
    assert client.confirm(f"/notes/{note_id}/delete").status_code == 302
    assert note_ids(admin_engine) == []


@pytest.mark.parametrize(
    "data", [{"title": ""}, {"title": "   "}, {"title": "x" * 201}, {"title": "ok", "body": "x" * 100_001}]
)
def test_bad_note_input_is_a_form_error(admin_engine, data, as_member):
    client = as_member
    response = client.post_form("/notes/new", data)
    assert response.status_code == 400
    assert 'class="error"' in response.get_data(as_text=True)
    assert note_ids(admin_engine) == []


def test_another_teams_note_is_404_for_every_operation(login_as, make_user, admin_engine, as_owner):
    outsider = make_user(name="Outsider")
    foreign = create_note(login_as(outsider), title="Their secret")
    client = as_owner
    assert client.get(f"/notes/{foreign}").status_code == 404
    assert client.get(f"/notes/{foreign}/edit").status_code == 404
    assert client.post_form(f"/notes/{foreign}/edit", {"title": "mine now"}).status_code == 404
    assert client.confirm(f"/notes/{foreign}/delete").status_code == 404
    assert "Their secret" not in client.get("/notes/").get_data(as_text=True)
    assert scalar(admin_engine, "SELECT title FROM notes") == "Their secret"


def test_notes_are_scoped_in_sqlite_development_mode_too(tmp_path, monkeypatch):
    """Without RLS (SQLite), the ORM's tenant filter alone keeps teams apart."""
    from flask_migrate import upgrade

    from nyxcore import create_app
    from nyxcore.config import load_config
    from tests.conftest import Client

    config = load_config({"NYXCORE_ENV": "testing", "DATABASE_URL": f"sqlite:///{tmp_path}/dev.db"})
    app = create_app(config)
    with app.app_context():
        upgrade()
    app.test_client_class = Client
    alice, bob = app.test_client(), app.test_client()
    for client, name in ((alice, "alice"), (bob, "bob")):
        client.post_form(
            "/auth/signup",
            {"name": name, "email": f"{name}@example.com", "password": "correct horse battery"},
        )
        # Sign-up mails a link; logging in with the password works before it is opened.
        assert client.login(f"{name}@example.com", "correct horse battery").status_code == 302
    alice_note = create_note(alice, title="Alice only")
    assert bob.get(f"/notes/{alice_note}").status_code == 404
    assert "Alice only" not in bob.get("/notes/").get_data(as_text=True)
    assert "Alice only" in alice.get("/notes/").get_data(as_text=True)
