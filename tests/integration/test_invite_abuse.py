"""Abuse of invitations: access planted by a departing inviter, mass invitation, hostile names in mail.

Mail goes to the console transport with tasks run in-process (the test defaults), so a link is
read from `ConsoleTransport.recent` as soon as the request that queued it has committed.
"""

from __future__ import annotations

import html
import re
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from markupsafe import escape
from sqlalchemy import text
from sqlalchemy.engine import Engine

from nyxcore import create_app
from nyxcore.errors import RateLimited
from nyxcore.extensions import db
from nyxcore.roles import TenantRole
from nyxcore.services import mail, quotas
from nyxcore.services.mail import ConsoleTransport
from tests.conftest import Client
from tests.helpers import count, dicts, member_id, refused_page, role_of, scalar
from tests.integration import worker as celery_worker

LINK = re.compile(r"http://nyxcore\.test(/invite/[A-Za-z0-9_-]{43})")
TEAM = "Acme"


# --- helpers -------------------------------------------------------------------------------------


@pytest.fixture
def acme(team: Any, admin_engine: Engine) -> Any:
    """The `team` fixture, named "Acme"."""
    with admin_engine.begin() as conn:
        conn.execute(text("UPDATE tenants SET name = :n WHERE id = :t"), {"n": TEAM, "t": team.id})
    return team


def page(response: Any) -> str:
    return html.unescape(response.get_data(as_text=True))


def invite(client: Any, emails: str, role: TenantRole = TenantRole.MEMBER) -> Any:
    return client.post_form("/team/invitations", {"emails": emails, "role": role.value})


def unique_address(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}@example.com"


def sent_to(address: str) -> dict[str, Any]:
    """The newest console message to `address`."""
    return next(m for m in ConsoleTransport.recent if m["to"] == address)


def link_to(address: str) -> str:
    """The path of the magic link in the newest message to `address`."""
    match = LINK.search(sent_to(address)["text"])
    assert match, sent_to(address)["text"]
    return match.group(1)


# --- finding 9: a departing inviter cannot plant access ------------------------------------------


@pytest.fixture
def departing(acme: Any, make_user: Any, add_member: Any) -> Any:
    """A second owner of Acme, about to leave it."""
    account = make_user(name="Dora Departing")
    add_member(acme.id, account, TenantRole.OWNER)
    return account


LOST_OWNER = (
    f"This invitation was sent by someone who can no longer invite people as owner to {TEAM}. "
    f"Ask an owner of {TEAM} for a new invitation."
)


def test_owner_invitation_from_an_owner_no_longer_in_the_team_answers_410_and_grants_nothing(
    acme, departing, make_user, login_as, make_client, admin_engine
):
    heir = make_user(email=unique_address("heir"))
    assert invite(login_as(departing, acme.id), heir.email, TenantRole.OWNER).status_code == 200
    path = link_to(heir.email)
    # Gone behind the services' back (a membership deleted before revocation existed): acceptance
    # itself must check that the inviter may still grant the role.
    with admin_engine.begin() as conn:
        conn.execute(
            text("DELETE FROM tenant_members WHERE tenant_id = :t AND user_id = :u"),
            {"t": acme.id, "u": departing.user_id},
        )

    invitee = login_as(heir)
    for visitor in (make_client(), invitee):
        shown = visitor.get(path)
        assert shown.status_code == 410
        assert LOST_OWNER in page(shown)
    refused = invitee.post_form(path)
    assert refused.status_code == 410
    assert LOST_OWNER in page(refused)
    assert role_of(admin_engine, acme.id, heir.user_id) is None
    assert count(admin_engine, "SELECT count(*) FROM invitations WHERE consumed_at IS NOT NULL") == 0


@pytest.fixture
def held_mail(app_config: dict[str, Any]) -> Iterator[None]:
    """Queue mail on this run's own Redis queue with no worker, so it stays unsent."""
    app_config["CELERY"] = {**app_config["CELERY"], **celery_worker.celery_config()}
    yield
    celery_worker.purge_queue()


def test_removing_an_owner_revokes_their_invitations_cancels_the_mail_and_logs_it(
    held_mail, acme, departing, make_user, login_as, admin_engine, as_owner
):
    heir = unique_address("heir")
    assert invite(login_as(departing, acme.id), heir, TenantRole.OWNER).status_code == 200
    owner = as_owner
    removed = owner.confirm(f"/team/members/{member_id(admin_engine, acme.id, departing.user_id)}/remove")
    assert removed.status_code == 302

    invitation = dicts(
        admin_engine, "SELECT id, revoked_at, revoked_reason, outbox_email_id FROM invitations"
    )[0]
    assert invitation["revoked_at"] is not None
    assert invitation["revoked_reason"] == "inviter_lost_role"
    outbox = dicts(
        admin_engine,
        "SELECT body_ciphertext, last_error FROM outbox_emails WHERE id = :i",
        i=invitation["outbox_email_id"],
    )[0]
    assert outbox["body_ciphertext"] is None
    assert outbox["last_error"] == "Not sent: the inviter can no longer grant its role before delivery."
    events = dicts(
        admin_engine,
        "SELECT actor_id, action, target, details FROM audit_events WHERE action = 'invitation.revoked'",
    )
    assert events == [
        {
            "actor_id": acme.accounts[TenantRole.OWNER].user_id,
            "action": "invitation.revoked",
            "target": heir,
            "details": {"role": "owner", "reason": "inviter_lost_role"},
        }
    ]


def test_demoting_an_owner_revokes_only_the_invitations_the_new_role_cannot_grant(
    acme, departing, make_user, login_as, admin_engine, as_owner
):
    invitees = {role: make_user(email=unique_address(role.value)) for role in TenantRole}
    inviter = login_as(departing, acme.id)
    for role, account in invitees.items():
        assert invite(inviter, account.email, role).status_code == 200
    paths = {role: link_to(account.email) for role, account in invitees.items()}
    owner = as_owner
    demoted = owner.post_form(
        f"/team/members/{member_id(admin_engine, acme.id, departing.user_id)}/role", {"role": "admin"}
    )
    assert demoted.status_code == 302

    revoked = {
        r["email"]: r["revoked_reason"]
        for r in dicts(
            admin_engine, "SELECT email, revoked_reason FROM invitations WHERE revoked_at IS NOT NULL"
        )
    }
    assert revoked == {
        invitees[TenantRole.OWNER].email: "inviter_lost_role",
        invitees[TenantRole.ADMIN].email: "inviter_lost_role",
    }
    for role in (TenantRole.OWNER, TenantRole.ADMIN):
        gone = login_as(invitees[role]).get(paths[role])
        assert gone.status_code == 410
        assert f"can no longer invite people as {role.value} to {TEAM}" in page(gone)
    # An admin may still invite members and viewers: those invitations keep working.
    for role in (TenantRole.MEMBER, TenantRole.VIEWER):
        assert login_as(invitees[role]).post_form(paths[role]).location == "/team/"
        assert role_of(admin_engine, acme.id, invitees[role].user_id) == role.value


def test_leaving_and_handing_over_ownership_revoke_what_the_inviter_can_no_longer_grant(
    acme, departing, make_user, login_as, admin_engine
):
    olive = acme.accounts[TenantRole.OWNER]
    from_olive = unique_address("from-olive")
    from_dora = unique_address("from-dora")
    olive_client = login_as(olive, acme.id)
    assert invite(olive_client, from_olive, TenantRole.ADMIN).status_code == 200
    dora = login_as(departing, acme.id)
    assert invite(dora, from_dora, TenantRole.VIEWER).status_code == 200
    transferred = olive_client.confirm(
        "/team/transfer",
        {
            "transfer-member_id": str(
                member_id(admin_engine, acme.id, acme.accounts[TenantRole.ADMIN].user_id)
            )
        },
    )
    assert transferred.status_code == 302  # Olive is an admin now: her admin invitation goes
    assert dora.confirm("/team/leave").status_code == 303  # Dora leaves: all of hers go
    revoked = dicts(admin_engine, "SELECT email, revoked_reason FROM invitations ORDER BY created_at")
    assert revoked == [
        {"email": from_olive, "revoked_reason": "inviter_lost_role"},
        {"email": from_dora, "revoked_reason": "inviter_lost_role"},
    ]


def test_invitation_whose_inviter_deleted_their_account_answers_410(
    acme, make_user, login_as, admin_engine, as_admin
):
    invitee = make_user(email=unique_address("orphan"))
    assert invite(as_admin, invitee.email).status_code == 200
    path = link_to(invitee.email)
    with admin_engine.begin() as conn:  # what ON DELETE SET NULL leaves when the account is deleted
        conn.execute(text("UPDATE invitations SET invited_by = NULL"))
    client = login_as(invitee)
    for response in (client.get(path), client.post_form(path)):
        assert response.status_code == 410
        assert (
            f"sent by someone who can no longer invite people as member to {TEAM}. "
            f"Ask an admin of {TEAM} for a new invitation."
        ) in page(response)
    assert role_of(admin_engine, acme.id, invitee.user_id) is None


def test_a_removal_in_flight_holds_the_accept_back_and_wins(
    acme, departing, make_user, login_as, admin_engine
):
    heir = make_user(email=unique_address("heir"))
    assert invite(login_as(departing, acme.id), heir.email, TenantRole.OWNER).status_code == 200
    path = link_to(heir.email)
    client = login_as(heir)
    assert client.get(path).status_code == 200
    result: dict[str, Any] = {}
    with admin_engine.connect() as removal:
        transaction = removal.begin()
        removal.execute(  # the inviter's removal, not yet committed
            text("DELETE FROM tenant_members WHERE tenant_id = :t AND user_id = :u"),
            {"t": acme.id, "u": departing.user_id},
        )
        accepting = threading.Thread(target=lambda: result.update(response=client.post_form(path)))
        accepting.start()
        accepting.join(1.5)
        assert accepting.is_alive(), "the accept did not wait for the inviter's membership row"
        transaction.commit()
        accepting.join(10)
    assert result["response"].status_code == 410
    assert LOST_OWNER in page(result["response"])
    assert role_of(admin_engine, acme.id, heir.user_id) is None


# --- finding 10: daily allowances that creating teams cannot multiply ----------------------------


@pytest.fixture
def quotas_on(app_config: dict[str, Any]) -> dict[str, Any]:
    """Rate limits on, with counters of this test's own in the shared Redis. List it before `app`."""
    app_config.update(
        RATELIMIT_ENABLED=True,
        RATELIMIT_KEY_PREFIX=f"test-{uuid.uuid4().hex}",
        RATELIMIT_LOGIN="1000 per minute",
        INVITATIONS_PER_TEAM_PER_HOUR=1000,
    )
    assert app_config["RATELIMIT_STORAGE_URI"].startswith("redis://")
    return app_config


RESETS = r"the count starts again at (\d{4}-\d\d-\d\d \d\d:\d\d) UTC"


def assert_resets_in_a_day(message: str) -> None:
    match = re.search(RESETS, message)
    assert match, message
    reset = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    assert timedelta(hours=23) < reset - datetime.now(UTC) <= timedelta(days=1)


def test_team_creation_stops_at_the_daily_allowance_and_the_personal_team_is_free(
    quotas_on, app, make_user, login_as, admin_engine
):
    app.config["TEAMS_PER_USER_PER_DAY"] = 3
    spammer = make_user(name="Sam Spammer")  # signing up made their personal team
    client = login_as(spammer)
    for n in range(3):
        assert client.post_form("/teams/new", {"name": f"Relay {n}"}).status_code == 302
    refused = client.post_form("/teams/new", {"name": "Relay 3"})
    assert refused.status_code == 429
    assert "You may create 3 teams a day and have 0 left;" in page(refused)
    assert_resets_in_a_day(page(refused))
    assert count(admin_engine, "SELECT count(*) FROM tenants WHERE created_by = :u", u=spammer.user_id) == 4
    # The allowance is the user's: someone else still creates teams.
    assert login_as(make_user()).post_form("/teams/new", {"name": "Honest"}).status_code == 302


def test_invitations_per_user_count_across_all_their_teams_and_every_web_process(
    quotas_on, app, make_user, login_as, admin_engine
):
    quotas_on["INVITATIONS_PER_USER_PER_DAY"] = app.config["INVITATIONS_PER_USER_PER_DAY"] = 5
    inviter = make_user()
    first_team = login_as(inviter)  # their personal team
    assert first_team.post_form("/teams/new", {"name": "Second"}).status_code == 302
    second_team = first_team  # now active: the new team
    other_process = create_app(quotas_on)  # another web process, sharing only Redis and PostgreSQL
    try:
        other_process.test_client_class = Client
        elsewhere: Any = other_process.test_client()
        assert elsewhere.login(inviter.email).status_code == 302
        addresses = [unique_address(f"target{n}") for n in range(8)]
        assert invite(elsewhere, ", ".join(addresses[:3])).status_code == 200  # personal team
        refused = invite(second_team, ", ".join(addresses[3:6]))  # one request of 3 costs 3
        assert refused.status_code == 429
        message = page(refused)
        assert "You may send 5 invitations a day across all your teams and have 2 left;" in message
        assert_resets_in_a_day(message)
        assert count(admin_engine, "SELECT count(*) FROM invitations") == 3  # none of the refused batch
        assert invite(second_team, ", ".join(addresses[3:5])).status_code == 200
        assert invite(elsewhere, addresses[5]).status_code == 429
        assert count(admin_engine, "SELECT count(*) FROM invitations") == 5
    finally:
        with other_process.app_context():
            db.engine.dispose()


def test_invitations_per_instance_per_day_bound_every_inviter_together(
    quotas_on, app, acme, make_user, login_as, admin_engine, as_admin
):
    app.config["INVITATIONS_PER_INSTANCE_PER_DAY"] = 4
    admin = as_admin
    stranger = login_as(make_user())  # in a team of their own
    assert invite(admin, ", ".join(unique_address("a") for _ in range(3))).status_code == 200
    refused = invite(stranger, ", ".join(unique_address("b") for _ in range(2)))
    assert refused.status_code == 429
    assert "This NyxCore installation sends at most 4 invitations a day and has 1 left;" in page(refused)
    invitation_id = scalar(admin_engine, "SELECT id FROM invitations ORDER BY created_at LIMIT 1")
    assert admin.post_form(f"/team/invitations/{invitation_id}/resend").status_code == 302  # the last one
    assert invite(stranger, unique_address("c")).status_code == 429
    open_id = scalar(
        admin_engine, "SELECT id FROM invitations WHERE revoked_at IS NULL ORDER BY created_at LIMIT 1"
    )
    refused_resend = admin.post_form(f"/team/invitations/{open_id}/resend")
    assert "sends at most 4 invitations a day and has 0 left;" in refused_page(admin, refused_resend, "/team/invitations")


def test_quota_storage_outage_counts_in_memory_instead_of_failing(database, app_config):
    app_config.update(
        RATELIMIT_ENABLED=True,
        RATELIMIT_STORAGE_URI="redis://127.0.0.1:1/0",  # nothing listens there
        RATELIMIT_KEY_PREFIX=f"test-{uuid.uuid4().hex}",
        INVITATIONS_PER_USER_PER_DAY=3,
    )
    app = create_app(app_config)
    try:
        with app.app_context():
            charge = [(quotas.INVITATIONS_PER_USER, "someone")]
            quotas.spend(charge, 2, field_name="emails")
            with pytest.raises(RateLimited, match="have 1 left"):
                quotas.spend(charge, 2, field_name="emails")
            quotas.spend(charge, 1, field_name="emails")
    finally:
        with app.app_context():
            db.engine.dispose()


# --- finding 10: hostile team and inviter names in the invitation mail ---------------------------

HOSTILE_INVITER = "Support https://evil.example/login\u200b\r\nBcc: victim@example.org " + "please " * 6
HOSTILE_TEAM = 'evil.example <a href="https://evil.example">a@b.example</a>\u202e'


@pytest.fixture
def queued_mail(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every message the services hand to the outbox (subject, text and HTML as rendered)."""
    captured: list[dict[str, Any]] = []
    real_queue_email = mail.queue_email

    def capture(ring: Any, **message: Any) -> Any:
        captured.append(message)
        return real_queue_email(ring, **message)

    monkeypatch.setattr(mail, "queue_email", capture)
    return captured


def test_hostile_names_are_shown_in_the_mail_never_linked(acme, queued_mail, login_as, admin_engine):
    admin = acme.accounts[TenantRole.ADMIN]
    with admin_engine.begin() as conn:
        conn.execute(
            text("UPDATE users SET name = :n WHERE id = :u"), {"n": HOSTILE_INVITER, "u": admin.user_id}
        )
        conn.execute(text("UPDATE tenants SET name = :n WHERE id = :t"), {"n": HOSTILE_TEAM, "t": acme.id})
    invitee = unique_address("target")
    assert invite(login_as(admin, acme.id), invitee).status_code == 200
    (message,) = queued_mail
    link = "http://nyxcore.test" + link_to(invitee)
    inviter = "Support https[:][/][/]evil[.]example[/]login Bcc: victim[@]example[.]org\u2026"
    team = 'evil[.]example <a href="https[:][/][/]evil[.]example">a[@]b[.]example<[/]a>'
    assert len(inviter.replace("[", "").replace("]", "")) <= 60  # truncated before defanging

    assert message["subject"] == f"{inviter} invited you to {team} on NyxCore"
    assert sent_to(invitee)["subject"] == message["subject"]  # the header as sent: one line
    assert f"{inviter} invited you to join {team} on NyxCore as a member." in message["text_body"]
    assert f"<strong>{escape(inviter)}</strong>" in message["html_body"]
    assert f"<strong>{escape(team)}</strong>" in message["html_body"]
    # The HTML's only links are the magic link (the button and the copyable one).
    assert re.findall(r"<a\b[^>]*>", message["html_body"]) == [
        f'<a href="{link}" style="display: inline-block; padding: .5rem 1rem; background: #2f4fb5; '
        'color: #fff; border-radius: 6px; text-decoration: none;">',
        f'<a href="{link}">',
    ]
    for part in (message["subject"], message["text_body"], message["html_body"]):
        for linkable in ("evil.example", "https://", "a@b.example", "victim@", "\r", "\u200b", "\u202e"):
            assert linkable not in part, (linkable, part)
