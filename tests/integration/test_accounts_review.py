"""Attacks on the account features (a review): each test is a hole that was found, then closed."""

from __future__ import annotations

from tests.integration.test_two_factor import clock, enrolled, start_setup

__all__ = ["clock"]  # the fixture, shared with test_two_factor.py

# Six digits to str.isdigit(), none of them ASCII: Arabic-Indic, superscript, full-width.
NON_ASCII_DIGITS = ("\u0661\u0662\u0663\u0664\u0665\u0666", "\u00b9\u00b2\u00b3\u2074\u2075\u2076", "\uff11" * 6)


def test_a_code_of_non_ascii_digits_is_a_wrong_code_not_a_500(make_client, make_user, clock):
    account = make_user()
    enrolled(make_client, account, clock)
    browser = make_client()
    step = browser.login(account.email)
    assert step.location.startswith("/auth/two-factor")
    for code in NON_ASCII_DIGITS:
        refused = browser.post_form(step.location, {"code": code})
        assert refused.status_code == 400, (code, refused.status_code)
        assert "That code is not valid" in refused.get_data(as_text=True)


def test_a_set_up_code_of_non_ascii_digits_is_a_form_error_not_a_500(make_client, make_user, clock):
    account = make_user()
    browser = make_client()
    browser.login(account.email)
    start_setup(browser)
    for code in NON_ASCII_DIGITS:
        refused = browser.post_form("/account/two-factor/confirm", {"code": code})
        assert refused.status_code == 400, (code, refused.status_code)
        assert "That code is not valid" in refused.get_data(as_text=True)
