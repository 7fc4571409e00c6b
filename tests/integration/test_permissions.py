"""Who may use what, discovered from the app: every route against every kind of visitor.

Each team route's view carries the Operation it is guarded by (`role_required(op)`), declared once
in its service; the matrix reads it from there. A route without one must be listed in
NOT_TEAM_ROUTES with the reason, so a new team route cannot go unguarded unnoticed. The crawl then
checks what people see: every link and form a role is shown works for that role (never a 403).
"""

from __future__ import annotations

import re
import uuid
from html.parser import HTMLParser
from typing import Any

import pytest

from nyxcore.permissions import Operation
from nyxcore.roles import TenantRole

# Routes that need no role in a team, and why.
NOT_TEAM_ROUTES = {
    "static": "files",
    "api.health": "the health check",
    "main.index": "the front door redirects",
    "main.favicon": "the icon redirects to a static file",
    "auth.signup": "before any team",
    "auth.login": "before any team",
    "auth.logout": "any signed-in user",
    "teams.new": "any signed-in user (also one in no team)",
    "teams.switch": "any signed-in user; the service checks the membership",
    "joining.index": "any signed-in user: their teams, and those their verified address's domain may join",
    "joining.join": "any signed-in user; the service finds the team joinable by their domain, else 404",
    "invite.show": "the magic link works for whoever holds it",
    "invite.accept": "the magic link works for whoever holds it",
    "invite.dev_outbox": "development only, any signed-in user's own mail",
    "two_factor.settings": "any signed-in user's own account (also while a team requires two-factor)",
    "two_factor.setup": "any signed-in user's own account; the password is asked again",
    "two_factor.confirm": "any signed-in user's own account",
    "two_factor.regenerate": "any signed-in user's own account; the password is asked again",
    "two_factor.disable": "any signed-in user's own account; the password is asked again",
    "two_factor.login": "before the session: the password was proved, the code is awaited",
    "account.index": "any signed-in user's own account (also one in no team)",
    "account.rename": "any signed-in user's own account",
    "account.set_time_zone": "any signed-in user's own account",
    "account.change_password": "any signed-in user's own account; the current password is proved",
    "account.revoke_session": "any signed-in user's own sessions; another id is a 404",
    "account.sign_out_everywhere": "any signed-in user's own sessions",
    "account.delete": "any signed-in user's own account; the password is proved",
    "invite_signup.signup": "the magic link works for whoever holds it (no account yet)",
    "auth.check_inbox": "where sign-up lands, before any account is signed in",
    "recovery.forgot": "anyone may ask; the answer is the same for every address",
    "recovery.reset": "the reset link works for whoever holds it",
    "verification.verify": "the verification link works for whoever holds it",
    "verification.resend": "any signed-in user, for their own address",
    "account_email.change": "any signed-in user, for their own address",
    "account_email.confirm": "the confirmation link works for whoever holds it",
    "join_links.show": "a join link works for whoever holds it (the team and role, changes nothing)",
    "join_links.join": "a join link works for any signed-in, verified holder; the service checks the link",
}
# Routes that end the visitor's session: posted last, so that the forms before them are tried signed in.
SIGNS_OUT = ("auth.logout", "account.sign_out_everywhere")
SIGNS_OUT_ACTIONS = re.compile(r"^/auth/logout$|^/account/sessions/end-all$")
VISITORS = ("anonymous", "no team", "viewer", "member", "admin", "owner", "unverified owner")
VISITOR_ROLE = {"viewer": TenantRole.VIEWER, "member": TenantRole.MEMBER, "admin": TenantRole.ADMIN, "owner": TenantRole.OWNER}
# Routes that end the visitor's membership run last.
LAST = ("team.leave", "team.delete")


def _operation(app: Any, endpoint: str) -> Operation | None:
    found: Operation | None = getattr(app.view_functions[endpoint], "operation", None)
    return found


def _team_routes(app: Any) -> list[Any]:
    rules = [rule for rule in app.url_map.iter_rules() if _operation(app, rule.endpoint) is not None]
    return sorted(rules, key=lambda rule: (rule.endpoint in LAST, rule.endpoint, rule.rule))


def test_every_route_is_guarded_by_an_operation_or_says_why_not(app):
    unguarded = {
        rule.endpoint for rule in app.url_map.iter_rules() if _operation(app, rule.endpoint) is None
    }
    assert sorted(unguarded - set(NOT_TEAM_ROUTES)) == [], "guard these with role_required(op)"
    assert sorted(set(NOT_TEAM_ROUTES) - unguarded) == [], "these are guarded now: drop them here"


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
    unverified = make_user(name="Una Verified", verified=False)
    clients["unverified owner"] = login_as(unverified, unverified.team_id)
    return clients


@pytest.mark.parametrize("visitor", VISITORS)
def test_matrix(app, visitors, visitor):
    client = visitors[visitor]
    failures = []
    for rule in _team_routes(app):
        minimum = _operation(app, rule.endpoint).minimum
        url = _url(rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = client.post_form(url) if method == "POST" else client.get(url)
            status = response.status_code
            location = response.headers.get("Location", "")
            if visitor == "anonymous":
                ok = status == 302 and location.startswith("/auth/login")
            elif visitor == "no team":
                ok = status == 302 and location.startswith("/teams/new")
            elif visitor == "unverified owner" and _operation(app, rule.endpoint).needs_verified_email:
                # The role would do; the address is not proved yet, and the page says what to do.
                ok = status == 403 and "Verify your e-mail address first" in response.get_data(as_text=True)
            elif visitor == "unverified owner":
                ok = status in (200, 302, 303, 400, 404, 409)
            elif VISITOR_ROLE[visitor].rank < minimum.rank:
                ok = status == 403
            else:
                # Allowed: the page, a redirect after a change (303: to a confirm page, or back with
                # the reason for a refusal), or a clear 400/404/409 for the
                # empty form and the random id this test sends; never 403, never a 500.
                ok = status in (200, 302, 303, 400, 404, 409)
            if not ok:
                failures.append(f"{method} {url} ({rule.endpoint}) as {visitor}: {status} {location}")
    assert failures == []


def test_public_routes_answer_everyone_without_a_500(app, visitors):
    for rule in app.url_map.iter_rules():
        if rule.endpoint in ("static", *SIGNS_OUT) or _operation(app, rule.endpoint) is not None:
            continue
        for visitor in VISITORS:
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                client = visitors[visitor]
                url = _url(rule)
                response = client.post_form(url) if method == "POST" else client.get(url)
                assert response.status_code < 500, f"{method} {url} as {visitor}"


# --- what each role is shown works for that role ------------------------------------------------


class _Page(HTMLParser):
    """The same-site links and the forms (action, method) of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: set[str] = set()
        self.forms: set[tuple[str, str]] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "a" and (found.get("href") or "").startswith("/"):
            self.links.add(str(found["href"]).split("#")[0])
        elif tag == "form":
            self.forms.add((str(found.get("action") or ""), (found.get("method") or "get").lower()))


def _crawl(client: Any, start: str, limit: int = 80) -> tuple[dict[str, int], set[tuple[str, str]]]:
    """Visit every same-site link reachable from `start`; the status of each, and every form seen."""
    seen: dict[str, int] = {}
    forms: set[tuple[str, str]] = set()
    queue = [start]
    while queue and len(seen) < limit:
        url = queue.pop(0)
        if url in seen or url.startswith("/static/"):
            continue
        response = client.get(url)
        seen[url] = response.status_code
        if response.status_code == 200 and response.mimetype == "text/html":
            page = _Page()
            page.feed(response.get_data(as_text=True))
            queue.extend(sorted(page.links - set(seen)))
            forms |= page.forms
    return seen, forms


@pytest.fixture
def furnished_team(team, login_as):
    """The team with a note and an open invitation, so their pages and buttons exist."""
    owner = login_as(team.accounts[TenantRole.OWNER], team.id)
    assert owner.post_form("/notes/new", {"title": "Plans", "body": "text"}).status_code == 302
    invited = owner.post_form("/team/invitations", {"emails": "guest@example.com", "role": "member"})
    assert invited.status_code == 200
    return team


@pytest.mark.parametrize("role", [*VISITOR_ROLE.values(), None], ids=lambda role: role.value if role else "unverified-owner")
def test_every_link_and_form_a_role_is_shown_works_for_it(furnished_team, login_as, make_user, role):
    if role is None:  # an owner whose address is not verified: shown no invitation or GitHub controls
        unverified = make_user(name="Una Verified", verified=False)
        client = login_as(unverified, unverified.team_id)
        page = client.get("/team/").get_data(as_text=True)
        assert "Verify your e-mail address first to invite people." in page
        assert "/team/invitations" not in page
        assert "Verify your e-mail address first to connect GitHub" in client.get("/github/").get_data(as_text=True)
    else:
        client = login_as(furnished_team.accounts[role], furnished_team.id)
    statuses, forms = _crawl(client, "/team/")
    assert len(statuses) >= 3, statuses
    broken = {url: status for url, status in statuses.items() if status not in (200, 302)}
    assert broken == {}, f"links shown to a {role.value if role else 'unverified owner'} that do not work for them"
    # Post every form the role was shown, empty but for the CSRF token; the ones that end the
    # membership near the end, the ones that sign out last. An empty form may be refused (400/404/409); a 403 means it was shown wrongly.
    posts = sorted(
        (action for action, method in forms if method == "post" and action.startswith("/")),
        key=lambda action: (
            bool(SIGNS_OUT_ACTIONS.match(action)),
            bool(re.search(r"/(leave|delete)$", action)) and action.startswith("/team/"),
            action,
        ),
    )
    refused = {}
    for action in posts:
        status = client.post_form(action).status_code
        if status == 403 or status >= 500:
            refused[action] = status
    assert refused == {}, f"forms shown to a {role.value if role else 'unverified owner'} that refuse them"
