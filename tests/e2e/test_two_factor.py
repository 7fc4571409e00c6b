"""Two-factor authentication in Chromium: enrol from the account page, log out, log in with a code.

The secret is read from the page as a person who cannot scan the QR code would, and the code is
computed from it with pyotp as their authenticator app would. axe-core checks the set-up page, the
recovery codes page and the log-in code page (with and without an error).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pyotp
import pytest
from playwright.sync_api import expect

from tests.conftest import PASSWORD
from tests.e2e.ui import TEAM_PAGE, Person

pytestmark = pytest.mark.e2e


def next_code(secret: str) -> str:
    """The code of the next time step: accepted (one step of drift) and never the one enrolment used."""
    return pyotp.TOTP(secret).at(time.time() + 30)


def test_enrol_log_out_and_log_in_with_a_code(person: Callable[[str], Person]) -> None:
    problems: list[str] = []
    ada = person("ada")
    ada.sign_up("Ada Lovelace", "ada@example.com")
    ada.open_menu()
    ada.page.get_by_role("link", name="Ada Lovelace").click()  # the account page
    ada.page.get_by_role("link", name="Turn on two-factor authentication").click()
    expect(ada.heading()).to_have_text("Two-factor authentication")
    problems += ada.check_page("a11y-two-factor-off")
    ada.page.get_by_label("Password", exact=True).fill(PASSWORD)
    ada.page.get_by_role("button", name="Set up two-factor authentication").click()
    expect(ada.page.get_by_role("img", name="QR code to scan with your authenticator app")).to_be_visible()
    problems += ada.check_page("a11y-two-factor-setup")
    secret = ada.page.locator("#two-factor-secret").inner_text().strip()
    assert len(secret) == 32

    ada.page.get_by_label("6-digit code from the app").fill(pyotp.TOTP(secret).now())
    ada.page.get_by_role("button", name="Turn on").click()
    expect(ada.heading()).to_have_text("Your recovery codes")
    expect(ada.page.locator(".recovery-codes li")).to_have_count(10)
    problems += ada.check_page("a11y-two-factor-codes")
    ada.page.get_by_role("link", name="I have saved them").click()
    expect(ada.page.get_by_role("heading", name="On since", exact=False)).to_be_visible()
    problems += ada.check_page("a11y-two-factor-on")
    ada.log_out()

    ada.fill_account_form(name=None, email="ada@example.com", password=PASSWORD)
    ada.page.get_by_role("button", name="Log in").click()
    expect(ada.page).to_have_url(ada.live.url + "/auth/two-factor")
    problems += ada.check_page("a11y-two-factor-login")
    ada.page.get_by_label("Authentication code or recovery code").fill("000000")
    ada.page.get_by_role("button", name="Verify").click()
    expect(ada.page.get_by_role("alert")).to_contain_text("That code is not valid")
    problems += ada.check_page("a11y-two-factor-login-error")
    ada.page.get_by_label("Authentication code or recovery code").fill(next_code(secret))
    ada.page.get_by_role("button", name="Verify").click()
    expect(ada.page).to_have_url(TEAM_PAGE)
    ada.assert_no_console_errors()
    assert problems == []
