"""The join-link story in Chromium: an admin makes a join link, a second verified person opens it,
joins, and sees the team. axe-core checks the new pages (the admin's list, the link's page, the
seat limit) for serious or critical violations."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import expect

from tests.e2e.live_app import LiveApp
from tests.e2e.ui import Person

pytestmark = pytest.mark.e2e

TEAM = "Link Crew"


def test_a_verified_person_joins_through_a_join_link_and_sees_the_team(
    person: Callable[[str], Person], live_app: LiveApp
) -> None:
    problems: list[str] = []
    owner = person("link-owner")
    owner.sign_up("Lena Links", "lena@example.com")
    owner.create_team(TEAM)
    owner.page.get_by_role("link", name="Join links").click()
    expect(owner.heading()).to_have_text("Join links")
    problems += owner.check_page("join-links-empty")
    owner.page.get_by_label("Works for (days)").fill("45")  # too long: refused on its field
    owner.page.get_by_role("button", name="Make join link").click()
    expect(owner.page.get_by_role("alert")).to_have_text("A join link works for 1 to 30 days.")
    problems += owner.check_page("join-links-error")
    owner.page.get_by_label("Role", exact=True).select_option(label="Viewer")
    owner.page.get_by_label("Works for (days)").fill("7")
    owner.page.get_by_label("Number of uses").fill("3")
    owner.page.get_by_role("button", name="Make join link").click()
    expect(owner.page.get_by_role("status")).to_contain_text("shown only this once")
    link = owner.page.get_by_label("Join link", exact=True).input_value()
    assert link.startswith(f"{live_app.url}/join/")  # from PUBLIC_URL, as mailed links are
    problems += owner.check_page("join-links-created")
    expect(owner.page.get_by_role("table", name="Join links, newest first").get_by_role("row")).to_have_count(2)
    expect(owner.page.get_by_role("cell", name="3 of 3")).to_be_visible()

    joiner = person("link-joiner")
    joiner.sign_up("Jules Joiner", "jules@example.com")
    joiner.page.goto(link)
    expect(joiner.heading()).to_have_text(f"Join {TEAM}")
    expect(joiner.page.get_by_text("as viewer")).to_be_visible()
    problems += joiner.check_page("join-link-page")
    joiner.page.get_by_role("button", name=f"Join {TEAM}").click()
    expect(joiner.flash()).to_contain_text(f"Welcome to {TEAM}. You joined as viewer.")
    expect(joiner.heading()).to_have_text(TEAM)
    expect(joiner.page.get_by_role("cell", name="lena@example.com")).to_be_visible()  # the team's members
    joiner.page.goto(link)
    expect(joiner.page.get_by_role("status")).to_have_text(f"You are already a member of {TEAM}.")
    problems += joiner.check_page("join-link-member")

    owner.goto("/team/join-links")
    expect(owner.page.get_by_role("cell", name="2 of 3")).to_be_visible()
    owner.goto("/team/settings")
    owner.page.get_by_label("Seats (empty for no limit)").fill("1")  # fewer than the two members
    owner.page.get_by_role("button", name="Save seat limit").click()
    expect(owner.page.get_by_role("alert")).to_contain_text("The team has 2 members")
    problems += owner.check_page("seat-limit-error")
    owner.page.get_by_label("Seats (empty for no limit)").fill("5")
    owner.page.get_by_role("button", name="Save seat limit").click()
    expect(owner.flash()).to_contain_text("This team has 5 seats now.")
    owner.goto("/team/")
    expect(owner.page.get_by_text("Seats: 2 of 5 used")).to_be_visible()
    for someone in (owner, joiner):
        someone.assert_no_console_errors()
    assert problems == []
