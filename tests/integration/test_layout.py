"""What the layout needs from the server: the favicon, and a column name on every table cell.

The browser side (phone and desktop widths, dark mode, autofocus) is tests/e2e/test_layout.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import nyxcore
from nyxcore.roles import TenantRole
from tests.helpers import member_id

TEMPLATES = Path(nyxcore.__file__).resolve().parent / "templates"


def test_favicon_ico_redirects_to_the_svg_icon_the_pages_link(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    assert response.headers["Location"] == "/static/favicon.svg"
    with client.get("/static/favicon.svg") as icon:  # a file response: closed with the block
        assert icon.status_code == 200
        assert icon.mimetype == "image/svg+xml"
        assert icon.get_data(as_text=True).startswith("<svg")
    login = client.get("/auth/login").get_data(as_text=True)
    assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in login


def test_every_table_cell_names_its_column_for_the_phone_layout():
    """On a phone a row is a card: each value shows its column's name from data-label (a
    full-width cell, such as "No notes yet.", needs none)."""
    unlabelled = [
        f"{path.relative_to(TEMPLATES)}: {cell}"
        for path in sorted(TEMPLATES.rglob("*.html"))
        if "email" not in path.parts
        for cell in re.findall(r"<td\b[^>]*>", path.read_text())
        if "data-label=" not in cell and "colspan=" not in cell
    ]
    assert unlabelled == []


def test_the_layouts_kept_urls_follow_the_script_root_of_each_request(client, as_owner):
    """The templates route a URL that names no object once per script root (nyxcore/templating.py):
    an app mounted under a prefix links under it, the same app at the root links at the root, and
    URLs with arguments (the page's own forms) are still routed per request."""
    for root, prefix in (("http://localhost/nyx", "/nyx"), ("http://localhost/", ""), ("http://localhost/nyx", "/nyx")):
        page = client.get("/auth/login", base_url=root).get_data(as_text=True)
        assert f'<link rel="stylesheet" href="{prefix}/static/nyxcore.css">' in page, root
        assert f'<a class="brand" href="{prefix}/">' in page, root
    signed_in = as_owner.get("/notes/").get_data(as_text=True)
    assert '<li><a href="/notes/" aria-current="page">NyxBook</a></li>' in signed_in
    assert '<form method="post" action="/auth/logout">' in signed_in


def test_the_rows_kept_url_patterns_follow_the_script_root_of_each_request(as_owner, team, admin_engine):
    """A table's per-row URLs come from a pattern routed once per script root (`url_pattern`): each
    row's forms post under the prefix the app is mounted at, and at the root without it."""
    member = member_id(admin_engine, team.id, team.accounts[TenantRole.MEMBER].user_id)
    for root, prefix in (("http://localhost/nyx", "/nyx"), ("http://localhost/", ""), ("http://localhost/nyx", "/nyx")):
        page = as_owner.get("/team/", base_url=root).get_data(as_text=True)
        assert f'action="{prefix}/team/members/{member}/role"' in page, root
        assert f'href="{prefix}/team/members/{member}/remove"' in page, root
