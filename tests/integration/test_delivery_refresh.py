"""Delivery state on the invitations page is never stuck on "Queued" (issue 17): while a mail is queued the
page names a fragment for static/refresh.js to fetch again, and a "Check again" link with the time of the
check works without JavaScript; once nothing is queued the page stops asking."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest

from tests.helpers import scalar


def refresh_url(body: str) -> str:
    match = re.search(r'<div id="pending-live" data-refresh="([^"]*)">', body)
    assert match, body
    return html.unescape(match.group(1))


@pytest.mark.usefixtures("real_delivery")  # queued on Redis, no worker: the mail stays queued until marked sent
def test_the_page_refreshes_while_a_mail_is_queued_and_stops_once_it_is_sent(admin_engine, as_admin, as_member):
    as_admin.post_form("/team/invitations", {"emails": "slow@example.com", "role": "member"})
    body = as_admin.get("/team/invitations").get_data(as_text=True)
    assert refresh_url(body) == "/team/invitations/delivery"
    assert 'src="/static/refresh.js"' in body and "<script>" not in body  # a file under the CSP
    checked = re.search(r"Delivery state as of (\d\d:\d\d:\d\d) \(UTC\); a mail is still queued", body)
    assert checked, body
    assert '<a href="/team/invitations#pending-heading">Check again</a>' in body  # works without JavaScript

    fragment = as_admin.get("/team/invitations/delivery")
    assert fragment.status_code == 200
    text = fragment.get_data(as_text=True)
    assert "<html" not in text and refresh_url(text) == "/team/invitations/delivery" and "Queued" in text
    assert as_member.get("/team/invitations/delivery").status_code == 403

    with admin_engine.begin() as conn:
        conn.exec_driver_sql("UPDATE outbox_emails SET sent_at = now(), attempts = 1")
    text = as_admin.get("/team/invitations/delivery?page=1").get_data(as_text=True)
    assert refresh_url(text) == "" and "Sent" in text and "still queued" not in text
    assert scalar(admin_engine, "SELECT count(*) FROM invitations") == 1


def test_the_check_time_is_in_the_viewer_zone(as_admin: Any) -> None:
    as_admin.set_cookie("nyxcore_tz", "Pacific/Auckland")
    body = as_admin.get("/team/invitations").get_data(as_text=True)
    assert re.search(r"Delivery state as of \d\d:\d\d:\d\d \(Pacific/Auckland\)\.", body)
    assert refresh_url(body) == ""  # nothing queued: nothing to refresh
