"""The permission matrix: every team-facing route against every kind of visitor.

Adding a route to the team, notes, github or invite blueprints without an entry here fails
`test_every_route_is_in_the_matrix`.
"""

from __future__ import annotations

import uuid

import pytest

from nyxcore.roles import TenantRole

O, A, M, V = TenantRole.OWNER, TenantRole.ADMIN, TenantRole.MEMBER, TenantRole.VIEWER
GUARDED_BLUEPRINTS = ("team", "notes", "github", "invite")

# endpoint -> the lowest role that may use it. PUBLIC routes are reachable without a team.
PUBLIC = None
MATRIX: dict[str, TenantRole | None] = {
    "team.overview": V,
    "team.change_role": A,
    "team.remove_member": A,
    "team.leave": V,
    "team.settings": O,
    "team.transfer": O,
    "team.delete": O,
    "team.audit": A,
    "notes.index": V,
    "notes.new": M,
    "notes.show": V,
    "notes.edit": M,
    "notes.delete": M,
    "github.status": M,
    "github.repos": M,
    "github.connect": O,
    "github.disconnect": O,
    "invite.invitations": A,
    "invite.resend": A,
    "invite.revoke": A,
    # The magic link works for anyone holding it (signed out included); /dev/outbox is development-only.
    "invite.show": PUBLIC,
    "invite.accept": PUBLIC,
    "invite.dev_outbox": PUBLIC,
}

VISITORS = ("anonymous", "no team", "viewer", "member", "admin", "owner")
VISITOR_ROLE = {"viewer": V, "member": M, "admin": A, "owner": O}


# Routes whose empty form is valid and that end the visitor's membership run last.
LAST = ("team.leave",)


def _routes(app):
    rules = [rule for rule in app.url_map.iter_rules() if rule.endpoint.split(".")[0] in GUARDED_BLUEPRINTS]
    return sorted(rules, key=lambda rule: (rule.endpoint in LAST, rule.endpoint, rule.rule))


def test_every_route_is_in_the_matrix(app):
    endpoints = {rule.endpoint for rule in _routes(app)}
    missing = sorted(endpoints - set(MATRIX))
    assert missing == [], f"add these routes to the permission matrix: {missing}"
    stale = sorted(set(MATRIX) - endpoints)
    assert stale == [], f"these matrix entries name no route: {stale}"


def test_guarded_views_declare_the_role_of_the_matrix(app):
    for rule in _routes(app):
        expected = MATRIX[rule.endpoint]
        declared = getattr(app.view_functions[rule.endpoint], "required_role", PUBLIC)
        assert declared == expected, rule.endpoint


def _url(rule) -> str:
    values = {arg: uuid.uuid4() if arg.endswith("_id") else "x" * 43 for arg in rule.arguments}
    return rule.build(values, append_unknown=False)[1]


@pytest.fixture
def visitors(team, make_client, login_as, make_user, admin_engine):
    from sqlalchemy import text

    clients = {"anonymous": make_client()}
    homeless = make_user(name="No Team")
    with admin_engine.begin() as conn:
        conn.execute(text("DELETE FROM tenants WHERE id = :t"), {"t": homeless.team_id})
    clients["no team"] = login_as(homeless)
    for name, role in VISITOR_ROLE.items():
        clients[name] = login_as(team.accounts[role], team.id)
    return clients


@pytest.mark.parametrize("visitor", VISITORS)
def test_matrix(app, visitors, visitor):
    client = visitors[visitor]
    failures = []
    for rule in _routes(app):
        minimum = MATRIX[rule.endpoint]
        url = _url(rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = client.post_form(url) if method == "POST" else client.get(url)
            status = response.status_code
            location = response.headers.get("Location", "")
            if minimum is PUBLIC:
                ok = status < 500
            elif visitor == "anonymous":
                ok = status == 302 and location.startswith("/auth/login")
            elif visitor == "no team":
                ok = status == 302 and location.startswith("/teams/new")
            elif VISITOR_ROLE[visitor].rank < minimum.rank:
                ok = status == 403
            else:
                # Allowed: the page, a redirect after a change, or a clear 400/404/409 for the
                # empty form and the random id this test sends; never 403, never a 500.
                ok = status in (200, 302, 400, 404, 409)
            if not ok:
                failures.append(f"{method} {url} ({rule.endpoint}) as {visitor}: {status} {location}")
    assert failures == []
