"""Account links in Chromium: sign up and verify, change the address, forget the password and reset it.

gunicorn, a Celery worker, Redis, PostgreSQL and SMTP, all real; the links are read from the mail
the SMTP server received and opened in the browser. axe-core checks every page of these flows (no
serious or critical violation).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import expect

from tests.e2e.live_app import LiveApp
from tests.e2e.ui import TEAM_PAGE, Person

pytestmark = pytest.mark.e2e

NAME, EMAIL, PASSWORD = "Fay Forgetful", "fay@example.com", "correct horse battery staple"
NEW_PASSWORD = "a passphrase she will remember"


def test_forgot_mail_reset_and_log_in_with_accessible_pages(person: Callable[[str], Person], live_app: LiveApp) -> None:
    problems: list[str] = []
    fay = person("forgetful")

    # Sign up: the check-inbox page, then the link from the mail signs her in.
    fay.goto("/auth/signup")
    received = len(live_app.mail.messages)  # the mail server outlives each test
    fay.fill_account_form(name=NAME, email=EMAIL, password=PASSWORD)
    fay.page.get_by_role("button", name="Sign up").click()
    expect(fay.page.get_by_role("status")).to_have_text(f"We sent a link to {EMAIL} to finish signing up.")
    problems += fay.check_page("a11y-check-inbox")
    fay.page.goto(live_app.link_to(EMAIL, "/auth/verify/", after=received))
    problems += fay.check_page("a11y-verify")
    fay.page.get_by_role("button", name="Confirm my address").click()
    expect(fay.page).to_have_url(TEAM_PAGE)

    # The e-mail change page, empty and with its errors.
    fay.open_menu()
    fay.page.get_by_role("link", name=NAME).click()  # the name in the top bar's menu: the account page
    fay.page.get_by_role("link", name="Change your e-mail address").click()
    problems += fay.check_page("a11y-email-change")
    fay.page.get_by_role("button", name="Send the confirmation link").click()
    expect(fay.page.get_by_role("alert").first).to_be_visible()
    problems += fay.check_page("a11y-email-change-errors")
    fay.log_out()

    # Forgot: from the log-in page's link.
    fay.goto("/auth/login")
    fay.page.get_by_role("link", name="Forgot your password?").click()
    expect(fay.heading()).to_have_text("Forgot your password?")
    problems += fay.check_page("a11y-forgot")
    fay.page.get_by_label("Email", exact=True).fill(EMAIL)
    fay.page.get_by_role("button", name="Send the link").click()
    expect(fay.page.get_by_role("status")).to_contain_text(f"If an account uses {EMAIL}, we sent a link")
    problems += fay.check_page("a11y-forgot-sent")

    # The mail's link: choose a new password, then log in with it.
    link = live_app.link_to(EMAIL, "/auth/reset/")
    fay.page.goto(link)
    expect(fay.heading()).to_have_text("Choose a new password")
    problems += fay.check_page("a11y-reset")
    fay.page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    fay.page.get_by_role("button", name="Set the new password").click()
    expect(fay.page).to_have_url(re.compile(r"/auth/login$"))
    expect(fay.flash()).to_contain_text("Your password was changed")
    fay.log_in(EMAIL, NEW_PASSWORD)
    expect(fay.heading()).to_have_text("Fay's team")
    notice = live_app.mail_to(EMAIL, link_prefix=f"{live_app.url}/auth/forgot")  # the only one with that link
    assert notice["Subject"] == "Your NyxCore password was changed"

    # The used link says so, and offers a new one.
    fay.log_out()
    fay.goto(link, status=410)
    expect(fay.page.get_by_role("alert")).to_have_text("This link was already used. Each link works once.")
    expect(fay.page.get_by_role("link", name="Ask for a new link")).to_be_visible()
    problems += fay.check_page("a11y-reset-used")

    assert problems == [], "\n".join(problems)
    fay.assert_no_console_errors()
