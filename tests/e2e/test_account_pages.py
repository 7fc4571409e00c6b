"""The account pages in a real browser: axe-core with sessions listed, with form errors, and on the
delete confirmation (refused, then allowed), and the whole way to a deleted account whose name
stays in its old team's audit log, without JavaScript of our own."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import expect

from tests.conftest import PASSWORD
from tests.e2e.live_app import LiveApp
from tests.e2e.ui import Person

pytestmark = pytest.mark.e2e
LOGIN_PAGE = re.compile(r"/auth/login")
# The mail server lives as long as the e2e package and other tests invite grace@example.com too:
# an address of this test's own, so that its magic link is the one found.
GRACE = "grace.hopper@example.com"


def _join_by_invitation(someone: Person, link: str, name: str, team: str) -> None:
    someone.page.goto(link)
    someone.page.get_by_role("link", name=re.compile(r"^Sign up as ")).click()
    someone.fill_account_form(name=name, email=None, password=PASSWORD)
    someone.page.get_by_role("button", name=f"Sign up and join {team}").click()  # one step: in the team
    expect(someone.heading()).to_have_text(team)


def test_account_pages_are_accessible_and_an_account_can_be_deleted(
    person: Callable[[str], Person], live_app: LiveApp
) -> None:
    problems: list[str] = []
    ada = person("ada")
    ada.sign_up("Ada Lovelace", "ada@example.com")
    ada.invite(GRACE, role="Member")
    grace = person("grace")
    _join_by_invitation(grace, live_app.magic_link(GRACE), "Grace Hopper", "Ada's team")
    laptop = person("ada-laptop")
    laptop.log_in("ada@example.com")

    ada.open_menu()
    ada.page.get_by_role("link", name="Ada Lovelace").click()  # the name in the top bar's menu
    expect(ada.heading()).to_have_text("Your account")
    sessions = ada.page.get_by_role("table", name="Your signed-in browsers, this one first")
    expect(sessions.get_by_role("row")).to_have_count(3)  # the header and two browsers
    expect(sessions.get_by_text("this browser", exact=True)).to_have_count(1)
    problems += ada.check_page("a11y-account")

    ada.page.get_by_role("button", name="Change password").click()  # nothing entered
    expect(ada.page.get_by_role("alert").first).to_be_visible()
    problems += ada.check_page("a11y-account-errors")

    ada.page.get_by_label("Name", exact=True).fill("Ada King")
    ada.page.get_by_role("button", name="Change name").click()
    expect(ada.flash()).to_have_text("Your name was changed.")
    ada.open_menu()
    expect(ada.page.get_by_role("link", name="Ada King")).to_be_visible()

    # The last owner of a team with Grace in it: told what to do, and offered no delete button.
    ada.page.get_by_role("link", name="Delete your account…").click()
    expect(ada.page.get_by_role("heading", name="First, hand over these teams")).to_be_visible()
    expect(ada.page.get_by_role("button", name="Delete my account")).to_have_count(0)
    problems += ada.check_page("a11y-account-delete-refused")

    ada.goto("/team/settings")
    ada.page.get_by_label("New owner").select_option(label="Grace Hopper (Member)")
    ada.page.get_by_role("button", name="Transfer ownership…").click()
    ada.page.get_by_role("button", name="Make Grace Hopper the owner").click()  # on the confirm page
    expect(ada.flash()).to_have_text("Grace Hopper is now an owner; you are an admin.")
    ada.create_team("Ada's lab")

    ada.goto("/account/delete")
    expect(ada.page.get_by_role("heading", name="First, hand over these teams")).to_have_count(0)
    expect(ada.page.get_by_role("listitem").filter(has_text="Ada's lab")).to_be_visible()
    problems += ada.check_page("a11y-account-delete")
    ada.page.get_by_label("Type your e-mail address to confirm").fill("ADA@example.com ")
    ada.page.get_by_label("Your password").fill(PASSWORD)
    ada.page.get_by_role("button", name="Delete my account").click()
    expect(ada.page).to_have_url(LOGIN_PAGE)
    expect(ada.flash()).to_have_text("Your account was deleted.")
    laptop.page.reload()  # the other browser's session went with the account
    expect(laptop.page).to_have_url(LOGIN_PAGE)

    grace.goto("/team/audit")
    expect(grace.page.get_by_role("cell", name="Ada King (account deleted)").first).to_be_visible()
    problems += grace.check_page("a11y-audit-deleted-actor")

    assert problems == [], "\n".join(problems)
    for someone in (ada, laptop, grace):
        someone.assert_no_console_errors()
