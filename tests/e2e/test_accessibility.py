"""axe-core on every main page, in the states people see them in: no serious or critical violation.

The pages hold real content (members with role controls, pending invitations, notes, audit
events, form errors), because most violations come from content, not from empty layouts. Every
page is screenshotted and its full axe report (all impacts) saved next to the screenshot.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import expect

from tests.e2e.live_app import LiveApp
from tests.e2e.ui import Person

pytestmark = pytest.mark.e2e


def test_main_pages_have_no_serious_accessibility_violations(
    person: Callable[[str], Person], live_app: LiveApp
) -> None:
    problems: list[str] = []
    visitor = person("visitor")
    # On a page with no field to focus first, the first Tab reaches the skip link, which shows itself.
    visitor.goto("/auth/no-such-page", status=404)
    visitor.page.keyboard.press("Tab")
    skip = visitor.page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()
    visitor.goto("/auth/signup")
    problems += visitor.check_page("a11y-signup")
    visitor.page.get_by_role("button", name="Sign up").click()  # empty: every field in error
    expect(visitor.page.get_by_role("alert").first).to_be_visible()
    problems += visitor.check_page("a11y-signup-errors")
    visitor.goto("/auth/login")
    problems += visitor.check_page("a11y-login")

    owner = person("owner")
    owner.sign_up("Ada Admin", "ada@example.com")
    owner.goto("/teams/new")
    problems += owner.check_page("a11y-new-team")
    owner.goto("/team/invitations")
    owner.page.get_by_role("button", name="Send invitations").click()  # nothing entered
    expect(owner.page.get_by_role("alert")).to_have_text("Enter at least one email address.")
    problems += owner.check_page("a11y-invitations-error")
    owner.invite("grace@example.com, linus@example.com", role="Member")
    problems += owner.check_page("a11y-invitations")

    link = live_app.magic_link("grace@example.com")
    visitor.page.goto(link)
    problems += visitor.check_page("a11y-invite-signed-out")
    visitor.page.get_by_role("link", name="Sign up as grace@example.com").click()
    problems += visitor.check_page("a11y-signup-invited")
    visitor.fill_account_form(name="Grace Hopper", email=None, password="a long enough passphrase")
    visitor.page.get_by_role("button", name="Sign up and join Ada's team").click()  # one step
    expect(visitor.flash()).to_contain_text("Welcome to Ada's team. You joined as member.")
    problems += visitor.check_page("a11y-team-member")  # a member's view
    visitor.goto(link)  # used, by her
    expect(visitor.page.get_by_role("status")).to_have_text("You are already a member of Ada's team.")
    problems += visitor.check_page("a11y-invite-already-member")
    owner.goto(live_app.magic_link("linus@example.com"), status=403)  # someone else's invitation
    problems += owner.check_page("a11y-invite-wrong-account")

    owner.goto("/notes/new")
    owner.page.get_by_label("Title").fill("Runbook")
    owner.page.get_by_label("Text").fill("Restart the worker first.\nThen the web processes.")
    owner.page.get_by_role("button", name="Save note").click()
    expect(owner.heading()).to_have_text("Runbook")
    problems += owner.check_page("a11y-note")
    owner.goto("/notes/")
    problems += owner.check_page("a11y-notebook")
    owner.goto("/team/")  # two members with role controls, one pending invitation
    problems += owner.check_page("a11y-team")
    owner.page.set_viewport_size({"width": 375, "height": 800})  # tables become lists on a phone
    problems += owner.check_page("a11y-team-phone")
    owner.page.set_viewport_size({"width": 1280, "height": 900})
    owner.goto("/github/")
    problems += owner.check_page("a11y-github")
    owner.goto("/team/audit")
    problems += owner.check_page("a11y-audit-log")
    owner.goto("/team/settings")
    problems += owner.check_page("a11y-team-settings")
    owner.goto("/notes/00000000-0000-0000-0000-000000000000", status=404)
    problems += owner.check_page("a11y-not-found")
    owner.goto("/team/invitations")  # linus pending, grace in the accepted list
    expect(owner.page.get_by_role("heading", name="Accepted or revoked in the last 14 days")).to_be_visible()
    problems += owner.check_page("a11y-invitations-closed")
    # Someone else's invitation: "Log out and continue" comes back to it, signed out.
    linus_link = live_app.magic_link("linus@example.com")
    owner.goto(linus_link, status=403)
    owner.page.get_by_role("button", name="Log out and continue").click()
    expect(owner.page).to_have_url(linus_link)
    expect(owner.page.get_by_role("link", name="Sign up as linus@example.com")).to_be_visible()

    assert problems == [], "\n".join(problems)
    for someone in (visitor, owner):
        someone.assert_no_console_errors()
