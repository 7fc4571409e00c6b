"""Joining by domain in Chromium: an owner proves a domain by DNS, someone at it asks to join, an admin approves.

The owner adds acme.example.com, publishes the TXT record the page shows (in the test's DNS server,
which the live app asks) and presses "Check now"; Ada, who signed up with a verified address there,
finds the team under "Teams you can join" and asks; the owner approves on the join requests page;
Ada is told by mail and sees the team among hers. axe-core checks every new page.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import expect

from tests.e2e.live_app import LiveApp
from tests.e2e.ui import Person
from tests.integration.mailserver import MailServer

pytestmark = pytest.mark.e2e

TEAM = "Acme Research"
DOMAIN = "acme.example.com"


def test_someone_at_a_verified_domain_asks_to_join_and_an_admin_approves(
    person: Callable[[str], Person], live_app: LiveApp
) -> None:
    problems: list[str] = []
    owner = person("domain-owner")
    owner.sign_up("Olga Owner", f"olga@{DOMAIN}")
    owner.create_team(TEAM)

    owner.page.get_by_role("link", name="Domains").click()
    expect(owner.heading()).to_have_text("Domains")
    owner.page.get_by_label("Domain", exact=True).fill("gmail.com")  # anyone has an address there
    owner.page.get_by_role("button", name="Add domain").click()
    expect(owner.page.get_by_role("alert")).to_contain_text("gmail.com is a public mail domain")
    problems += owner.check_page("a11y-domains-errors")
    owner.page.get_by_label("Domain", exact=True).fill(DOMAIN)
    owner.page.get_by_role("button", name="Add domain").click()
    expect(owner.flash()).to_contain_text(f"{DOMAIN} added.")
    record = owner.page.locator("code.record").inner_text()
    assert re.fullmatch(r"nyxcore-verification=[0-9a-f]{32}", record), record
    problems += owner.check_page("a11y-domains")
    assert live_app.dns is not None, "the e2e live app answers DNS from a server of its own"
    live_app.dns.txt[f"_nyxcore.{DOMAIN}"] = [record]  # what the owner publishes
    owner.page.get_by_role("button", name=f"Check now for {DOMAIN}").click()
    expect(owner.flash()).to_contain_text(f"{DOMAIN} is verified.")

    ada = person("domain-asker")
    ada.sign_up("Ada Asker", f"ada@{DOMAIN}")
    ada.open_menu()
    ada.page.get_by_role("link", name="Your teams").click()
    joinable = ada.page.get_by_role("table", name="Teams at your address's domain")
    expect(joinable.get_by_role("row").filter(has_text=TEAM)).to_be_visible()
    problems += ada.check_page("a11y-teams-you-can-join")
    ada.page.get_by_role("button", name=f"Ask to join {TEAM}").click()
    expect(ada.flash()).to_contain_text(f"You asked to join {TEAM}.")
    expect(ada.page.get_by_text("Asked; waiting for an admin")).to_be_visible()

    owner.page.get_by_role("link", name="Join requests").click()
    expect(owner.heading()).to_have_text("Join requests")
    problems += owner.check_page("a11y-join-requests")
    received = len(live_app.mail.messages)
    owner.page.get_by_role("button", name=f"Approve ada@{DOMAIN}").click()
    expect(owner.flash()).to_contain_text(f"Ada Asker (ada@{DOMAIN}) joined as member")
    expect(owner.page.get_by_text("No open requests.")).to_be_visible()

    mail = live_app.mail_to(f"ada@{DOMAIN}", after=received)
    assert mail["Subject"] == f"You joined {TEAM}"
    assert "was approved" in MailServer.text(mail)
    ada.goto("/teams/")
    mine = ada.page.get_by_role("table", name="Your teams and your role in each")
    expect(mine.get_by_role("row").filter(has_text=TEAM)).to_contain_text("Member")
    ada.page.get_by_role("button", name=f"Switch to {TEAM}").click()
    expect(ada.heading()).to_have_text(TEAM)
    assert problems == []
    ada.assert_no_console_errors()
    owner.assert_no_console_errors()
