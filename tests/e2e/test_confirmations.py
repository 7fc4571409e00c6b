"""Issue 17: every destructive action asks first, and the whole way can be walked with Tab and Enter only.

For each action: Tab to the control on its page, Enter, land on the confirm page (which says what
will happen and passes axe-core), Tab to its button, Enter, and see the result. No mouse.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Locator, expect

from tests.e2e.live_app import LiveApp
from tests.e2e.ui import Person

pytestmark = pytest.mark.e2e
TEAM = "Ada's team"


def press_enter_on(someone: Person, target: str | Locator, *, role: str = "link") -> None:
    """Tab to the control (or the one named `target`) and press Enter, as someone without a mouse does."""
    control = target if isinstance(target, Locator) else someone.page.get_by_role(role, name=target, exact=True)  # type: ignore[arg-type]
    someone.tab_to(control)
    someone.page.keyboard.press("Enter")


def confirm_by_keyboard(someone: Person, *, opened_by: str, title: str, says: str, button: str) -> list[str]:
    """From the page with the action's control: open its confirm page, check it, confirm. Axe's findings."""
    press_enter_on(someone, opened_by)
    expect(someone.heading()).to_have_text(title)
    expect(someone.page.get_by_text(says, exact=False)).to_be_visible()
    expect(someone.page.get_by_role("link", name="Cancel")).to_be_visible()
    slug = re.sub(r"[^a-z0-9]+", "-", button.lower()).strip("-")
    problems = someone.check_page(f"confirm-{slug}")
    press_enter_on(someone, button, role="button")
    return problems


def join_by_invitation(visitor: Person, live_app: LiveApp, name: str, email: str) -> None:
    visitor.page.goto(live_app.magic_link(email))
    visitor.page.get_by_role("link", name=f"Sign up as {email}").click()
    visitor.fill_account_form(name=name, email=None, password="a long enough passphrase")
    visitor.page.get_by_role("button", name=f"Sign up and join {TEAM}").click()
    expect(visitor.flash()).to_contain_text(f"Welcome to {TEAM}.")


def test_every_confirmation_by_keyboard_alone(person: Callable[[str], Person], live_app: LiveApp) -> None:
    problems: list[str] = []
    ada = person("ada")
    ada.sign_up("Ada Admin", "ada@example.com")

    ada.goto("/notes/new")
    ada.page.get_by_label("Title").fill("Runbook")
    ada.page.get_by_role("button", name="Save note").click()
    problems += confirm_by_keyboard(
        ada, opened_by="Delete", title="Delete the note “Runbook”?",
        says="The note and its text are deleted for everyone in Ada's team.", button="Delete the note",
    )
    expect(ada.flash()).to_contain_text("Deleted the note “Runbook”.")

    ada.goto("/wardrobe/new")
    ada.page.get_by_label("Name").fill("Blue jacket")
    ada.page.get_by_role("button", name="Save", exact=True).click()
    problems += confirm_by_keyboard(
        ada, opened_by="Remove Blue jacket", title="Remove “Blue jacket” from the wardrobe?",
        says="“Blue jacket” and its notes are removed", button="Remove the item",
    )
    expect(ada.flash()).to_contain_text("Removed “Blue jacket” from the wardrobe.")

    ada.invite("gina@example.com, leo@example.com, dora@example.com", role="Member")
    problems += confirm_by_keyboard(
        ada, opened_by="Revoke the invitation to dora@example.com",
        title="Revoke the invitation for dora@example.com?",
        says="The invitation link sent to dora@example.com stops working at once", button="Revoke the invitation",
    )
    expect(ada.flash()).to_contain_text("The invitation for dora@example.com was revoked")

    ada.goto("/team/join-links")
    ada.page.get_by_role("button", name="Make join link").click()
    ada.goto("/team/join-links")
    press_enter_on(ada, ada.page.get_by_role("link", name=re.compile("^Revoke the member link")))
    expect(ada.heading()).to_have_text("Revoke this member join link?")
    press_enter_on(ada, "Revoke the link", role="button")
    expect(ada.flash()).to_contain_text("The join link was revoked")

    ada.goto("/team/domains")
    ada.page.get_by_label("Domain", exact=True).fill("ada.example.com")
    ada.page.get_by_role("button", name="Add domain").click()
    problems += confirm_by_keyboard(
        ada, opened_by="Remove ada.example.com", title="Remove ada.example.com?",
        says="People at ada.example.com no longer see Ada's team", button="Remove ada.example.com",
    )
    expect(ada.flash()).to_contain_text("ada.example.com removed.")

    grace, linus = person("grace"), person("linus")
    join_by_invitation(grace, live_app, "Gina Lollo", "gina@example.com")
    join_by_invitation(linus, live_app, "Leo Tolstoy", "leo@example.com")
    grace_laptop = person("grace-laptop")  # a second browser of hers, to sign out from the first
    grace_laptop.log_in("gina@example.com", "a long enough passphrase")

    ada.goto("/team/")
    problems += confirm_by_keyboard(
        ada, opened_by="Remove Leo Tolstoy", title="Remove Leo Tolstoy from Ada's team?",
        says="Leo Tolstoy loses access to Ada's team's members, notes, wardrobe and GitHub", button="Remove Leo Tolstoy",
    )
    expect(ada.flash()).to_contain_text("Leo Tolstoy was removed from the team.")

    # A sole owner is told what to do instead of being offered Leave.
    expect(ada.page.get_by_text("You are the only owner: to leave, make someone else an owner first.")).to_be_visible()
    expect(ada.page.get_by_role("link", name="Leave team")).to_have_count(0)

    ada.goto("/team/settings")
    chooser = ada.page.get_by_label("New owner")
    expect(chooser).to_have_value("")  # nobody preselected
    ada.tab_to(chooser)
    ada.page.keyboard.press("ArrowDown")  # the first member after the placeholder: Grace
    expect(chooser).not_to_have_value("")
    press_enter_on(ada, "Transfer ownership…", role="button")
    expect(ada.heading()).to_have_text("Make Gina Lollo the owner of Ada's team?")
    problems += ada.check_page("confirm-transfer")
    press_enter_on(ada, "Make Gina Lollo the owner", role="button")
    expect(ada.flash()).to_contain_text("Gina Lollo is now an owner; you are an admin.")

    problems += confirm_by_keyboard(
        ada, opened_by="Leave team", title="Leave Ada's team?",
        says="You keep your account and your other teams.", button="Leave Ada's team",
    )
    expect(ada.page.get_by_text("You left Ada's team.")).to_be_visible()
    expect(ada.page.get_by_text("You are not in any team now: create one, or ask a team's admin for an invitation.")).to_be_visible()

    grace.goto("/team/settings")
    press_enter_on(grace, "Delete team…")
    expect(grace.heading()).to_have_text("Delete Ada's team?")
    problems += grace.check_page("confirm-delete-team")
    grace.tab_to(grace.page.get_by_label("Type the team's name to confirm"))
    grace.page.keyboard.type("Ada's team")
    press_enter_on(grace, "Delete Ada's team", role="button")
    expect(grace.flash()).to_contain_text("The team Ada's team was deleted.")

    grace.goto("/account")
    press_enter_on(grace, grace.page.get_by_role("link", name=re.compile(r"^Revoke ")))  # only the other browser has one
    expect(grace.heading()).to_have_text(re.compile(r"^Sign out .+\?$"))
    expect(grace.page.get_by_text("is signed out at its next request", exact=False)).to_be_visible()
    problems += grace.check_page("confirm-sign-out-one-browser")
    press_enter_on(grace, grace.page.get_by_role("button", name=re.compile(r"^Sign out ")))
    expect(grace.flash()).to_contain_text("was signed out.")
    grace_laptop.goto("/account")
    expect(grace_laptop.page).to_have_url(re.compile(r"/auth/login"))  # that browser's session has ended

    problems += confirm_by_keyboard(
        grace, opened_by="Sign out everywhere…", title="Sign out everywhere?",
        says="Every browser where you are signed in is signed out, this one too", button="Sign out everywhere",
    )
    expect(grace.flash()).to_contain_text("You were signed out everywhere")

    assert problems == [], "\n".join(problems)
    for someone in (ada, grace, linus, grace_laptop):
        someone.assert_no_console_errors()
