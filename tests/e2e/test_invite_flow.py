"""The invitation story in Chromium: gunicorn, a Celery worker, Redis, PostgreSQL and SMTP, all real.

An owner signs up, creates a team and invites a new person and someone who already has an account;
both open the link from their email in a browser of their own, one signs up through it (and is in
the team at once) and the other logs in through it; the owner changes a role (keyboard only) and removes a member; the viewer
sees no admin controls and is refused when posting anyway; the team switcher moves between teams.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import expect
from sqlalchemy.engine import Engine

from tests.e2e.live_app import LiveApp
from tests.e2e.ui import Person
from tests.helpers import scalar

pytestmark = pytest.mark.e2e

TEAM = "Nyx Ops"
OWNER = ("Olive Owner", "olive@example.com")
EXISTING = ("Erin Existing", "erin@example.com")
NEWCOMER = ("Nia Newcomer", "nia@example.com")


def member_id(admin_engine: Engine, email: str, team: str) -> str:
    return str(
        scalar(
            admin_engine,
            "SELECT m.id FROM tenant_members m JOIN users u ON u.id = m.user_id "
            "JOIN tenants t ON t.id = m.tenant_id WHERE u.email = :e AND t.name = :t",
            e=email,
            t=team,
        )
    )


def test_invited_people_join_through_their_emails_and_the_owner_manages_them(
    person: Callable[[str], Person], live_app: LiveApp, admin_engine: Engine
) -> None:
    # Someone who already has an account, from an earlier visit.
    erin = person("existing-user")
    erin.goto("/auth/signup")
    erin.screenshot("story-signup")
    erin.sign_up(*EXISTING)
    erin.log_out()
    erin.screenshot("story-login")

    owner = person("owner")
    owner.sign_up(*OWNER)
    owner.create_team(TEAM)

    # Keyboard only: from the team page to the invitations, and the form filled in and sent.
    owner.tab_to(owner.page.get_by_role("link", name="Invite people"))
    owner.page.keyboard.press("Enter")
    expect(owner.heading()).to_have_text("Invitations")
    owner.tab_to(owner.page.get_by_label("Email addresses"))
    owner.page.keyboard.type(NEWCOMER[1])
    owner.page.keyboard.press("Tab")
    expect(owner.page.get_by_label("Role", exact=True)).to_be_focused()
    expect(owner.page.get_by_label("Role", exact=True)).to_have_value("member")
    owner.page.keyboard.press("Tab")
    expect(owner.page.get_by_role("button", name="Send invitations")).to_be_focused()
    owner.page.keyboard.press("Enter")
    expect(owner.page.get_by_text("1 of 1 address invited.")).to_be_visible()

    owner.invite(EXISTING[1], role="Admin")
    pending = owner.page.get_by_role("table", name="Invitations not yet accepted, newest first")
    expect(pending.get_by_role("row")).to_have_count(3)  # the header and two invitations
    owner.screenshot("story-invitations")

    # Both emails arrive at the SMTP server, each with its own link.
    for _, address in (NEWCOMER, EXISTING):
        message = live_app.mail_to(address, link_prefix=live_app.invite_prefix)
        assert message["Subject"] == f"{OWNER[0]} invited you to {TEAM} on NyxCore"
    newcomer_link = live_app.magic_link(NEWCOMER[1])
    erin_link = live_app.magic_link(EXISTING[1])
    assert newcomer_link != erin_link

    # The new person opens the link in a browser of their own and signs up through it.
    nia = person("new-person")
    nia.goto(newcomer_link)
    expect(nia.heading()).to_have_text(f"Join {TEAM}")
    nia.screenshot("story-invite-signed-out")
    nia.page.get_by_role("link", name=f"Sign up as {NEWCOMER[1]}").click()
    email = nia.page.get_by_label("Email", exact=True)
    expect(email).to_have_value(NEWCOMER[1])
    expect(email).to_have_attribute("readonly", "")
    nia.fill_account_form(name=NEWCOMER[0], email=None, password="another long passphrase")
    nia.screenshot("story-invite-signup")
    nia.page.get_by_role("button", name=f"Sign up and join {TEAM}").click()  # one step: in the team
    expect(nia.page).to_have_url(re.compile(r"/team/$"))
    expect(nia.flash()).to_contain_text(f"Welcome to {TEAM}. You joined as member.")
    expect(nia.page.get_by_text("your role: Member")).to_be_visible()

    # The existing user opens theirs, logs in through it and accepts.
    erin.goto(erin_link)
    erin.page.get_by_role("main").get_by_role("link", name="Log in", exact=True).click()
    expect(erin.page.get_by_label("Email", exact=True)).to_have_value(EXISTING[1])
    erin.page.get_by_label("Password", exact=True).fill("correct horse battery staple")
    erin.page.get_by_role("button", name="Log in").click()
    expect(erin.page).to_have_url(erin_link)
    erin.accept_invitation(TEAM)
    expect(erin.flash()).to_contain_text(f"Welcome to {TEAM}. You joined as admin.")

    # The owner sees both; makes the new person a viewer, with the keyboard only.
    owner.goto("/team/")
    expect(owner.member_row(NEWCOMER[0])).to_contain_text("Member")
    expect(owner.member_row(EXISTING[0])).to_contain_text("Admin")
    role = owner.page.get_by_label(f"Role for {NEWCOMER[0]}")
    owner.tab_to(role)
    owner.page.keyboard.press("ArrowDown")  # Owner, Admin, Member, Viewer: from Member to Viewer
    expect(role).to_have_value("viewer")
    owner.page.keyboard.press("Tab")
    expect(owner.page.get_by_role("button", name=f"Change role of {NEWCOMER[0]}")).to_be_focused()
    owner.page.keyboard.press("Enter")
    expect(owner.flash()).to_contain_text(f"{NEWCOMER[0]} is now a viewer.")
    expect(owner.member_row(NEWCOMER[0])).to_contain_text("Viewer")

    # ... and removes the admin.
    owner.page.get_by_role("link", name=f"Remove {EXISTING[0]}").click()
    owner.page.get_by_role("button", name=f"Remove {EXISTING[0]}").click()  # on the confirm page
    expect(owner.flash()).to_contain_text(f"{EXISTING[0]} was removed from the team.")
    expect(owner.member_row(EXISTING[0])).to_have_count(0)
    expect(owner.page.get_by_role("heading", name="Members (2)")).to_be_visible()
    owner.screenshot("story-team-owner")

    # The removed admin is back in their own team at the next click.
    erin.goto("/team/")
    expect(erin.heading()).to_have_text("Erin's team")

    # The viewer sees the team but no controls to invite, change roles or remove.
    nia.goto("/team/")
    expect(nia.heading()).to_have_text(TEAM)
    expect(nia.page.get_by_text("your role: Viewer")).to_be_visible()
    expect(nia.page.get_by_role("link", name="Invite people")).to_have_count(0)
    expect(nia.page.get_by_role("button", name=re.compile(r"^(Remove|Change role)"))).to_have_count(0)
    expect(nia.page.get_by_role("link", name=re.compile(r"^Remove"))).to_have_count(0)
    expect(nia.page.get_by_role("combobox", name=re.compile(r"^Role for"))).to_have_count(0)
    nia.screenshot("story-team-viewer")

    # Posting anyway, with a valid CSRF token from the page, is refused.
    token = nia.csrf_token()
    owner_membership = member_id(admin_engine, OWNER[1], TEAM)
    removal = nia.page.request.post(f"/team/members/{owner_membership}/remove", form={"csrf_token": token, "confirmed": "yes"})
    assert removal.status == 403, removal.text()
    promotion = nia.page.request.post(
        f"/team/members/{member_id(admin_engine, NEWCOMER[1], TEAM)}/role",
        form={"csrf_token": token, "role": "owner"},
    )
    assert promotion.status == 403, promotion.text()
    invitation = nia.page.request.post(
        "/team/invitations", form={"csrf_token": token, "emails": "mallory@example.com", "role": "admin"}
    )
    assert invitation.status == 403, invitation.text()
    nia.goto("/team/invitations", status=403)
    expect(nia.heading()).to_have_text("Not allowed")
    nia.screenshot("story-viewer-refused")
    owner.goto("/team/")
    expect(owner.page.get_by_role("heading", name="Members (2)")).to_be_visible()
    expect(owner.member_row(NEWCOMER[0])).to_contain_text("Viewer")
    expect(owner.page.get_by_role("heading", name="Pending invitations (0)")).to_be_visible()

    # Signed up through the link, the viewer has that one team (no personal team, no switcher).
    expect(nia.page.get_by_role("combobox", name="Team", exact=True)).to_have_count(0)
    # The team switcher moves between the owner's two teams: her own and the one she created.
    owner.switch_team(f"{TEAM} (Owner)")  # already active: stays
    expect(owner.heading()).to_have_text(TEAM)
    owner.switch_team("Olive's team (Owner)")
    expect(owner.heading()).to_have_text("Olive's team")
    expect(owner.flash()).to_contain_text("Switched to Olive's team.")
    expect(owner.page.get_by_role("heading", name="Members (1)")).to_be_visible()
    owner.switch_team(f"{TEAM} (Owner)")
    expect(owner.heading()).to_have_text(TEAM)

    # What happened is in the audit log, and the other main pages render.
    owner.page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit log").click()
    expect(owner.heading()).to_have_text("Audit log")
    log = owner.page.get_by_role("table", name="Changes in this team, newest first")
    for action, count in (  # in words (services/audit_words.py)
        (re.compile(r" invited \S+ as an? "), 2),
        ("accepted an invitation and joined as", 2),
        (re.compile(r"changed .+'s role from "), 1),
        (re.compile(r"removed .+ from the team"), 1),
    ):
        expect(log.get_by_role("row").filter(has_text=action)).to_have_count(count)
    owner.screenshot("story-audit-log")
    owner.page.get_by_role("link", name="NyxBook").click()
    expect(owner.heading()).to_have_text("NyxBook")
    owner.screenshot("story-notebook")
    owner.page.get_by_role("link", name="GitHub").click()
    expect(owner.heading()).to_have_text("GitHub")
    owner.screenshot("story-github")

    assert "mallory@example.com" not in [m["To"] for m in live_app.mail.messages]  # the refused invitation
    for someone in (owner, erin, nia):
        someone.assert_no_console_errors()
