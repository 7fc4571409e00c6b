"""The two small scripts of issue 17 in Chromium, under the app's CSP: static/zone.js tells the server
the browser's time zone (the audit log is then shown in it), and static/refresh.js updates the
invitations' delivery state by itself while a mail is queued, then stops. Axe checks both pages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect
from sqlalchemy import create_engine

from tests import conftest
from tests.e2e.live_app import LiveApp
from tests.e2e.ui import Person

pytestmark = pytest.mark.e2e


def test_the_audit_log_is_shown_in_the_browser_time_zone(
    browser: Browser, live_app: LiveApp, artifacts: Path
) -> None:
    context = browser.new_context(base_url=live_app.url, viewport={"width": 1280, "height": 900}, timezone_id="Asia/Tokyo")
    context.set_default_timeout(10_000)
    tomo = Person("tomo", context, context.new_page(), live_app, artifacts)
    tomo.page.on("console", tomo._on_console)
    try:
        tomo.sign_up("Tomo Tanaka", "tomo@example.com")
        tomo.goto("/team/audit")  # first UTC, then the script's cookie and one reload
        expect(tomo.page.locator("#zone-note")).to_contain_text("Times in Asia/Tokyo (reported by your browser")
        expect(tomo.page.get_by_role("cell", name="Tomo Tanaka created the team “Tomo's team”.")).to_be_visible()
        assert any(c["name"] == "nyxcore_tz" and c["value"] == "Asia/Tokyo" for c in tomo.context.cookies())
        assert tomo.check_page("audit-log-browser-zone") == []
        tomo.assert_no_console_errors()  # no CSP refusal, no script error
    finally:
        tomo.close()


def test_queued_delivery_updates_by_itself_and_then_stops(
    person: Callable[[str], Person], live_app: LiveApp, database: conftest.TestDatabase
) -> None:
    ines = person("ines")
    ines.sign_up("Ines Invite", "ines@example.com")
    ines.invite("slowpoke@example.com", role="Member")
    live_app.magic_link("slowpoke@example.com")  # the worker sent it
    engine = create_engine(database.admin_url)
    try:
        with engine.begin() as conn:  # as if the mail were still waiting for the worker
            conn.exec_driver_sql("UPDATE outbox_emails SET sent_at = NULL WHERE to_address = 'slowpoke@example.com'")
        ines.goto("/team/invitations")
        row = ines.page.locator("tr", has_text="slowpoke@example.com")
        expect(row).to_contain_text("Queued")
        expect(ines.page.get_by_role("link", name="Check again")).to_be_visible()
        ines.page.evaluate("window.stillThisPage = true")
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE outbox_emails SET sent_at = now() WHERE to_address = 'slowpoke@example.com'")
        expect(row).to_contain_text("Sent", timeout=15_000)
        assert ines.page.evaluate("window.stillThisPage") is True  # swapped in place, not reloaded
        expect(ines.page.locator("#pending-live")).to_have_attribute("data-refresh", "")  # and it stopped
        assert ines.check_page("invitations-delivery-refreshed") == []
        ines.assert_no_console_errors()
    finally:
        engine.dispose()
