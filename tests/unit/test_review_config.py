"""Configuration found wanting in the accounts review."""

from __future__ import annotations

from nyxcore.config import check_production, load_config
from tests.unit.test_config import GOOD_PRODUCTION


def test_production_without_smtp_host_does_not_print_mail_with_its_links_to_the_log():
    # The console backend prints each message, reset and magic links included, to the worker's
    # stdout (past the log redaction): production must never fall back to it unasked.
    config = load_config(GOOD_PRODUCTION)
    check_production(config)
    assert config["MAIL_BACKEND"] == "smtp"
    assert load_config({**GOOD_PRODUCTION, "MAIL_BACKEND": "console"})["MAIL_BACKEND"] == "console"  # said so
    assert load_config({"NYXCORE_ENV": "development"})["MAIL_BACKEND"] == "console"
