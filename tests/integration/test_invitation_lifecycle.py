"""The invitation lifecycle: each state on the admin's list, renewing an expired invitation, the one
reminder before expiry (also under concurrent runs, in threads and in processes), delivery failures
in words, and why a dead link is dead.

Delivery tests use the real SMTP server and Celery worker (tests/integration/conftest.py); the
others write invitations with known tokens straight into PostgreSQL, which is faster and shows the
same pages.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from nyxcore.roles import TenantRole
from nyxcore.services.invitations import display, tokens
from tests.helpers import count, dicts, free_port, refused_page, scalar
from tests.integration.mailserver import MailServer
from tests.integration.test_invitations import (
    PUBLIC_URL,
    TEAM,
    invite,
    link_path,
    nyx_ops,  # noqa: F401  (a fixture)
    page,
)

ROOT = Path(__file__).resolve().parents[2]
REMIND_TASK = "nyxcore.tasks.remind_expiring_invitations"
EXCEPTION_WORDS = ("Error", "Errno", "Traceback", "SMTP 5", "Connection refused", "550 5.1.1")


# --- helpers -------------------------------------------------------------------------------------


def place_invitation(
    admin_engine: Engine, team: Any, email: str, *, role: str = "member", **columns: Any
) -> str:
    """An invitation from the team's admin written straight into the database; returns its link's path.

    `columns` are SQL expressions for the other columns: `expires_at="now() + interval '47 hours'"`.
    """
    token = tokens.new_token()
    values = {
        "created_at": "now()",
        "expires_at": "now() + interval '7 days'",
        **columns,
    }
    names = ", ".join(values)
    expressions = ", ".join(values.values())
    with admin_engine.begin() as conn:
        conn.execute(
            text(
                f"INSERT INTO invitations (id, tenant_id, token_hash, email, role, invited_by, {names}) "
                f"VALUES (:id, :t, :h, :e, :r, :by, {expressions})"
            ),
            {
                "id": uuid.uuid4(),
                "t": team.id,
                "h": tokens.hash_token(token),
                "e": email,
                "r": role,
                "by": team.accounts[TenantRole.ADMIN].user_id,
            },
        )
    return f"/invite/{token}"


def row_text(body: str, email: str, prefix: str = "invitation") -> str:
    """The text of the table row of `email` (tags dropped, spaces collapsed)."""
    match = re.search(rf"<tr id=\"{prefix}-[^\"]+\">\s*<td[^>]*>{re.escape(email)}</td>(.*?)</tr>", body, re.S)
    assert match, email
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(1))).strip()


def invitation_id(admin_engine: Engine, email: str) -> Any:
    return scalar(
        admin_engine, "SELECT id FROM invitations WHERE email = :e AND revoked_at IS NULL", e=email
    )


def wait_until(condition: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


# --- each state on the admin's list --------------------------------------------------------------


@pytest.mark.usefixtures("real_delivery")  # queued on Redis, and no worker: the states are set below
def test_each_state_is_shown_to_admins(nyx_ops, login_as, admin_engine, as_admin, monkeypatch):  # noqa: F811
    admin = as_admin
    invite(admin, "queued@example.com, sent@example.com, refused@example.com, retrying@example.com")
    invite(admin, "stale@example.com, accepted@example.com, revoked@example.com")
    with admin_engine.begin() as conn:
        outbox = dict(conn.execute(text("SELECT email, outbox_email_id FROM invitations")).all())
        conn.execute(
            text("UPDATE outbox_emails SET sent_at = '2026-11-20 10:30+00', attempts = 1 WHERE id = :i"),
            {"i": outbox["sent@example.com"]},
        )
        conn.execute(
            text(
                "UPDATE outbox_emails SET attempts = 1, failure = 'address_refused', body_ciphertext = NULL "
                "WHERE id = :i"
            ),
            {"i": outbox["refused@example.com"]},
        )
        conn.execute(
            text(
                "UPDATE outbox_emails SET attempts = 3, failure = 'unreachable', "
                "retry_at = date_trunc('day', now()) + interval '14 hours 5 minutes' WHERE id = :i"
            ),
            {"i": outbox["retrying@example.com"]},
        )
        conn.execute(
            text("UPDATE invitations SET expires_at = now() - interval '1 hour' WHERE email = 'stale@example.com'")
        )
        conn.execute(
            text("UPDATE invitations SET consumed_at = now() WHERE email = 'accepted@example.com'")
        )
    revoked = invitation_id(admin_engine, "revoked@example.com")
    assert admin.confirm(f"/team/invitations/{revoked}/revoke").status_code == 302

    read: list[Any] = []  # the real delivery_of(), counted: each row reads its outbox state once
    real_delivery = display.delivery_of

    def counted(outbox: Any) -> Any:
        read.append(outbox)
        return real_delivery(outbox)

    monkeypatch.setattr(display, "delivery_of", counted)
    body = page(admin.get("/team/invitations"))
    assert len(read) == 5
    assert "Pending invitations (5)" in body
    assert row_text(body, "queued@example.com").endswith("Queued Resend the invitation to queued@example.com "
                                                         "Revoke the invitation to queued@example.com")
    assert "Sent 2026-11-20 10:30 UTC" in row_text(body, "sent@example.com")
    assert (
        "Failed the mail server refused the address (1 attempt); no more tries."
        in row_text(body, "refused@example.com")
    )
    assert (
        "Queued Not delivered yet: the mail server could not be reached; next try at 14:05 UTC (3 attempts)."
        in row_text(body, "retrying@example.com")
    )
    assert "Expired Renew it to send a new link." in row_text(body, "stale@example.com")
    assert row_text(body, "stale@example.com").count("Expired") == 1  # in the State column alone
    assert "Renew the invitation" in row_text(body, "stale@example.com")
    assert "Accepted" in row_text(body, "accepted@example.com", "closed-invitation")
    assert "Revoked" in row_text(body, "revoked@example.com", "closed-invitation")
    for words in EXCEPTION_WORDS:
        assert words not in body


# --- renewing ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("real_delivery")
def test_renew_sends_a_new_link_and_the_old_one_answers_410_replaced(
    nyx_ops, login_as, make_user, mail_server, worker, admin_engine, as_admin  # noqa: F811
):
    invitee = make_user(email="late@example.com")
    invite(as_admin, "late@example.com")
    old_path = link_path(mail_server.wait_for(1)[0])
    with admin_engine.begin() as conn:
        conn.execute(text("UPDATE invitations SET expires_at = now() - interval '1 day'"))
    expired = as_admin.get(old_path)  # the admin is not the invitee: the reason, no address
    assert expired.status_code == 410 and "expired on" in page(expired)
    old_id = invitation_id(admin_engine, "late@example.com")

    renewed = as_admin.post_form(f"/team/invitations/{old_id}/renew")
    assert renewed.status_code == 302
    assert "The invitation for late@example.com was renewed" in page(as_admin.get(renewed.location))
    message = mail_server.wait_for(2)[1]
    new_path = link_path(message)
    assert new_path != old_path and message["To"] == "late@example.com"
    gone = login_as(invitee).get(old_path)
    assert gone.status_code == 410
    assert "was replaced by a newer invitation" in page(gone)
    new = dicts(admin_engine, "SELECT expires_at FROM invitations WHERE revoked_at IS NULL")
    assert len(new) == 1 and new[0]["expires_at"] > datetime.now(UTC) + timedelta(days=6)
    assert count(admin_engine, "SELECT count(*) FROM audit_events WHERE action = 'invitation.renewed'") == 1
    client = login_as(invitee)
    assert client.post_form(new_path).status_code == 302
    assert count(admin_engine, "SELECT count(*) FROM invitations WHERE consumed_at IS NOT NULL") == 1


def test_renew_is_for_admins_of_the_team_and_expired_invitations_only(
    nyx_ops, login_as, make_user, admin_engine, as_admin, as_member, as_viewer  # noqa: F811
):
    place_invitation(admin_engine, nyx_ops, "old@example.com", expires_at="now() - interval '1 hour'")
    place_invitation(admin_engine, nyx_ops, "fresh@example.com")
    old, fresh = invitation_id(admin_engine, "old@example.com"), invitation_id(admin_engine, "fresh@example.com")
    assert as_member.post_form(f"/team/invitations/{old}/renew").status_code == 403
    assert as_viewer.post_form(f"/team/invitations/{old}/renew").status_code == 403
    stranger = make_user(name="Other Owner")
    assert login_as(stranger, stranger.team_id).post_form(f"/team/invitations/{old}/renew").status_code == 404
    not_expired = as_admin.post_form(f"/team/invitations/{fresh}/renew")
    assert "has not expired; resend it" in refused_page(as_admin, not_expired, "/team/invitations")
    assert count(admin_engine, "SELECT count(*) FROM invitations") == 2  # nothing changed so far
    assert as_admin.post_form(f"/team/invitations/{old}/renew").status_code == 302
    assert count(admin_engine, "SELECT count(*) FROM invitations WHERE revoked_reason = 'resent'") == 1


# --- delivery failures, in words -----------------------------------------------------------------


@pytest.mark.usefixtures("real_delivery")
def test_a_refused_address_is_reported_in_words_and_not_retried(
    nyx_ops, mail_server, worker, admin_engine, as_admin  # noqa: F811
):
    mail_server.refuse_next(1, "550 5.1.1 <nobody@example.com>: mailbox unavailable")
    invite(as_admin, "nobody@example.com")
    wait_until(lambda: scalar(admin_engine, "SELECT failure FROM outbox_emails") == "address_refused")
    mail_server.assert_quiet(0.5)
    assert mail_server.attempts == 1  # a permanent refusal is not tried again
    stored = dicts(admin_engine, "SELECT attempts, last_error, retry_at, body_ciphertext FROM outbox_emails")[0]
    assert stored == {"attempts": 1, "last_error": None, "retry_at": None, "body_ciphertext": None}
    body = page(as_admin.get("/team/invitations"))
    assert (
        "Failed the mail server refused the address (1 attempt); no more tries."
        in row_text(body, "nobody@example.com")
    )
    for words in EXCEPTION_WORDS:
        assert words not in body


@pytest.fixture
def unreachable_smtp(app_config: dict[str, Any], real_delivery: None) -> None:
    """Mail goes to a loopback port nobody listens on (before `app` is built)."""
    app_config.update(SMTP_PORT=free_port(), SMTP_TIMEOUT=2)


def test_an_unreachable_server_is_reported_with_the_next_try(
    unreachable_smtp, nyx_ops, worker, admin_engine, as_admin  # noqa: F811
):
    invite(as_admin, "patient@example.com")
    wait_until(lambda: scalar(admin_engine, "SELECT attempts FROM outbox_emails") >= 1)
    stored = dicts(admin_engine, "SELECT failure, last_error, retry_at, sent_at FROM outbox_emails")[0]
    assert stored["failure"] == "unreachable" and stored["last_error"] is None and stored["sent_at"] is None
    assert stored["retry_at"] is not None
    row = row_text(page(as_admin.get("/team/invitations")), "patient@example.com")
    assert re.search(
        r"Queued Not delivered yet: the mail server could not be reached; next try at "
        r"(\d\d:\d\d|\d{4}-\d\d-\d\d \d\d:\d\d) UTC \(\d+ attempts?\)\.",
        row,
    ), row
    for words in (*EXCEPTION_WORDS, "ConnectionRefusedError", "111"):
        assert words not in row


# --- the reminder --------------------------------------------------------------------------------


def _remind(app: Any) -> int:
    task = app.extensions["celery"].tasks[REMIND_TASK]
    sent: int = task()
    return sent


@pytest.mark.usefixtures("real_delivery")
def test_one_reminder_48_hours_before_expiry_with_a_working_link(
    app, nyx_ops, login_as, make_user, mail_server, worker, admin_engine  # noqa: F811
):
    invitee = make_user(email="slow@example.com")
    first = place_invitation(
        admin_engine, nyx_ops, "slow@example.com",
        created_at="now() - interval '5 days'", expires_at="now() + interval '47 hours'",
    )
    place_invitation(admin_engine, nyx_ops, "early@example.com", expires_at="now() + interval '3 days'")
    place_invitation(  # issued for less than the reminder's lead: the first mail says enough
        admin_engine, nyx_ops, "short@example.com", expires_at="now() + interval '24 hours'"
    )
    assert _remind(app) == 1
    assert _remind(app) == 0  # a second run (a restart, another beat) sends nothing
    message = mail_server.wait_for(1)[0]
    mail_server.assert_quiet(0.3, expected=1)
    assert message["To"] == "slow@example.com"
    assert message["Subject"] == f"Reminder: Admin Person invited you to {TEAM} on NyxCore"
    assert "The invitation expires in two days." in MailServer.text(message)
    assert "This link replaces the one in the earlier email." in MailServer.text(message)
    reminded = link_path(message)
    client = login_as(invitee)
    replaced = client.get(first)
    assert replaced.status_code == 410 and "was replaced by a newer invitation" in page(replaced)
    assert client.get(reminded).status_code == 200
    current = dicts(
        admin_engine,
        "SELECT expires_at - created_at > interval '4 days' AS kept_expiry, reminded_at IS NOT NULL AS reminded "
        "FROM invitations WHERE email = 'slow@example.com' ORDER BY revoked_at NULLS FIRST",
    )
    assert len(current) == 2 and current[0]["reminded"] and current[1]["reminded"]
    (event,) = dicts(admin_engine, "SELECT actor_id, details FROM audit_events WHERE action = 'invitation.reminded'")
    assert event["actor_id"] is None and event["details"]["by"] == "system"  # "NyxCore (automatic)"
    assert client.post_form(reminded).status_code == 302  # and it joins
    assert count(admin_engine, "SELECT count(*) FROM invitations WHERE consumed_at IS NOT NULL") == 1


def _due_invitations(admin_engine: Engine, team: Any, n: int) -> None:
    for i in range(n):
        place_invitation(
            admin_engine, team, f"due{i}@example.com",
            created_at="now() - interval '5 days'", expires_at="now() + interval '40 hours'",
        )


def test_the_due_reminder_function_lists_ids_only_and_the_scan_is_the_owners_alone(
    nyx_ops, database, admin_engine  # noqa: F811
):
    _due_invitations(admin_engine, nyx_ops, 2)
    place_invitation(admin_engine, nyx_ops, "later@example.com")
    engine = create_engine(database.app_url)  # the app role, with no tenant context
    try:
        with engine.begin() as conn:
            conn.execute(text("SELECT set_config('app.invitation_scan', 'on', true)"))
            assert conn.execute(text("SELECT count(*) FROM invitations")).scalar_one() == 0
            due = conn.execute(text("SELECT * FROM nyxcore_invitations_due_reminder('48 hours', 100)")).all()
            assert [tuple(row._mapping) for row in due[:1]] == [("invitation_id", "tenant_id", "invited_by")]
            assert len(due) == 2 and {row.tenant_id for row in due} == {nyx_ops.id}
            assert conn.execute(text("SELECT current_setting('app.invitation_scan', true)")).scalar() == ""
            assert conn.execute(text("SELECT count(*) FROM invitations")).scalar_one() == 0
    finally:
        engine.dispose()


def _assert_each_reminded_once(admin_engine: Engine, n: int) -> None:
    assert count(admin_engine, "SELECT count(*) FROM outbox_emails WHERE subject LIKE 'Reminder:%'") == n
    assert count(admin_engine, "SELECT count(*) FROM invitations WHERE revoked_at IS NULL") == n
    assert count(admin_engine, "SELECT count(*) FROM invitations WHERE reminded_at IS NOT NULL") == 2 * n
    assert count(admin_engine, "SELECT count(DISTINCT email) FROM invitations") == n


def test_concurrent_reminder_runs_send_each_reminder_once(app, nyx_ops, admin_engine):  # noqa: F811
    n, runs = 12, 4
    _due_invitations(admin_engine, nyx_ops, n)
    start = threading.Barrier(runs)
    results: list[int] = []

    def run() -> None:
        start.wait()
        results.append(_remind(app))  # each thread: its own app context, session and connection

    threads = [threading.Thread(target=run) for _ in range(runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sum(results) == n and len(results) == runs
    _assert_each_reminded_once(admin_engine, n)


# Each process says it is ready (a file), waits for the other, then runs the task: the two runs overlap.
_RUN_REMINDERS = """
import pathlib, sys, time
from nyxcore import create_app
app = create_app()
task = app.extensions["celery"].tasks["nyxcore.tasks.remind_expiring_invitations"]
ready = pathlib.Path(sys.argv[1])
(ready / sys.argv[2]).touch()
while len(list(ready.iterdir())) < 2:
    time.sleep(0.005)
print("reminded", task())
"""


def test_reminder_runs_in_two_processes_send_each_reminder_once(
    nyx_ops, database, admin_engine, tmp_path  # noqa: F811
):
    n = 12
    _due_invitations(admin_engine, nyx_ops, n)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "NYXCORE_ENV": "testing",
        "DATABASE_URL": database.app_url,
        "NYXCORE_APP_ROLE": database.app_role,
        "PUBLIC_URL": PUBLIC_URL,
        "CELERY_TASK_ALWAYS_EAGER": "true",
        "MAIL_BACKEND": "console",
    }
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _RUN_REMINDERS, str(tmp_path), str(i)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]
    outputs = [process.communicate(timeout=60) for process in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
    counts = [int(re.findall(r"^reminded (\d+)$", out, re.M)[0]) for out, _ in outputs]
    assert sum(counts) == n, counts
    _assert_each_reminded_once(admin_engine, n)


# --- why a link is dead, and log out and continue -----------------------------------------------


def test_each_dead_link_says_why_without_the_invited_address(
    nyx_ops, login_as, make_user, admin_engine, anonymous  # noqa: F811
):
    expired = place_invitation(admin_engine, nyx_ops, "a@example.com", expires_at="now() - interval '1 day'")
    revoked = place_invitation(
        admin_engine, nyx_ops, "b@example.com", revoked_at="now()", revoked_reason="'revoked'"
    )
    replaced = place_invitation(
        admin_engine, nyx_ops, "c@example.com", revoked_at="now()", revoked_reason="'resent'"
    )
    used = place_invitation(admin_engine, nyx_ops, "d@example.com", consumed_at="now()")
    elsewhere = place_invitation(admin_engine, nyx_ops, "eve@example.com")
    reasons = {
        expired: "expired on",
        revoked: "was revoked",
        replaced: "was replaced by a newer invitation",
        used: "has already been used",
    }
    someone_else = login_as(make_user(email="someone@example.com"))
    for path, reason in reasons.items():
        for visitor in (anonymous, someone_else):
            response = visitor.get(path)
            assert response.status_code == 410, (path, response.status_code)
            assert reason in page(response) and TEAM in page(response)
            assert not re.search(r"\b[a-d]@example\.com", page(response))
    wrong = someone_else.get(elsewhere)
    assert wrong.status_code == 403
    assert "is not for this account" in page(wrong) and "eve@example.com" not in page(wrong)
    assert "Log out and continue" in page(wrong)


def test_log_out_and_continue_returns_to_the_same_invitation(
    nyx_ops, login_as, make_user, admin_engine  # noqa: F811
):
    path = place_invitation(admin_engine, nyx_ops, "right@example.com")
    client = login_as(make_user(email="wrong@example.com"))
    shown = page(client.get(path))
    assert re.search(rf'<input type="hidden" name="next" value="{re.escape(path)}">', shown)
    out = client.post_form("/auth/logout", {"next": path})
    assert out.status_code == 302 and out.location == path
    back = client.get(out.location)
    assert back.status_code == 200
    assert "You are logged out." in page(back) and "Sign up as right@example.com" in page(back)
    # Only a path on this site: anything else is refused, and the session goes on.
    again = login_as(make_user())
    assert again.post_form("/auth/logout", {"next": "//evil.example/x"}).status_code == 400
    assert again.get("/account").status_code == 200
    assert again.post_form("/auth/logout").location == "/auth/login"  # no next: as before


def test_given_up_reads_from_the_row_alone_attempts_used_up(as_admin, admin_engine):
    invite(as_admin, "waiting@example.com, done@example.com, old@example.com")
    with admin_engine.begin() as conn:  # testing mode sent them at once: make them unsent, body kept
        conn.execute(text("UPDATE outbox_emails SET sent_at = NULL, body_ciphertext = decode('00', 'hex')"))
        outbox = dict(conn.execute(text("SELECT email, outbox_email_id FROM invitations")).all())
        conn.execute(  # the eleventh attempt failed, and the worker scheduled the last one
            text(
                "UPDATE outbox_emails SET attempts = 11, failure = 'unreachable', "
                "retry_at = date_trunc('day', now()) + interval '14 hours 5 minutes' WHERE id = :i"
            ),
            {"i": outbox["waiting@example.com"]},
        )
        conn.execute(  # the twelfth failed too: given up (services/mail.deliver)
            text("UPDATE outbox_emails SET attempts = 12, failure = 'unreachable', retry_at = NULL WHERE id = :i"),
            {"i": outbox["done@example.com"]},
        )
        conn.execute(  # left so by a retry scheduled before the row counted the attempts itself
            text(
                "UPDATE outbox_emails SET attempts = 13, failure = 'unreachable', "
                "retry_at = now() + interval '5 minutes' WHERE id = :i"
            ),
            {"i": outbox["old@example.com"]},
        )
    body = page(as_admin.get("/team/invitations"))
    assert "next try at 14:05 UTC (11 attempts)" in row_text(body, "waiting@example.com")
    for address, attempts in (("done@example.com", 12), ("old@example.com", 13)):
        assert f"({attempts} attempts); no more tries" in row_text(body, address)
        assert "Failed" in row_text(body, address)
