"""Memberships that end, and clear endings: an end date set by an admin, a warning mail a week before
(once, however many processes run the beat task), removal at the end by the system, and the person
told once why they lost a team (removed, ended, left) on their next request.
"""

from __future__ import annotations

import html
import threading
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from nyxcore import tenancy
from nyxcore.extensions import db
from nyxcore.roles import TenantRole
from nyxcore.services import endings, notices
from tests.helpers import (
    count,
    dicts,
    member_id,
    refused_page,
    role_of,
    scalar,
    scalar_or_none,
    statements_for,
)
from tests.integration.test_invitation_lifecycle import place_invitation
from tests.integration.test_join_links import make_link, set_seats

O, A, M, V = TenantRole.OWNER, TenantRole.ADMIN, TenantRole.MEMBER, TenantRole.VIEWER


def ends_at(admin_engine: Any, team_id: uuid.UUID, user_id: uuid.UUID) -> datetime | None:
    return scalar_or_none(
        admin_engine, "SELECT ends_at FROM tenant_members WHERE tenant_id = :t AND user_id = :u", t=team_id, u=user_id
    )


def end_in(admin_engine: Any, team_id: uuid.UUID, user_id: uuid.UUID, delta: timedelta) -> None:
    """Give the membership an end `delta` from now, as if set earlier (past ends cannot be set through the page)."""
    with admin_engine.begin() as conn:
        conn.execute(
            text("UPDATE tenant_members SET ends_at = now() + :d WHERE tenant_id = :t AND user_id = :u"),
            {"d": delta, "t": team_id, "u": user_id},
        )


def team_name(admin_engine: Any, team_id: uuid.UUID) -> str:
    name: str = scalar(admin_engine, "SELECT name FROM tenants WHERE id = :t", t=team_id)
    return name


def page(response: Any) -> str:
    """The page's text with HTML entities read (a team named "Olive's team" is shown as Olive&#39;s)."""
    return html.unescape(response.get_data(as_text=True))


def run_task(app: Any, name: str) -> int:
    """Run a beat task of this app now, in this thread (the shared task's proxy could pick another app's Celery)."""
    done: int = app.extensions["celery"].tasks[f"nyxcore.tasks.{name}"]()
    return done


def set_end(client: Any, member: uuid.UUID, value: str) -> Any:
    return client.post_form(f"/team/members/{member}/end", {"ends_on": value})


# --- setting and clearing an end date ------------------------------------------------------------


def test_the_last_day_is_shown_as_people_write_it():
    assert notices.last_day(endings.ends_at_for(date(2027, 1, 31))) == "31 Jan 2027"
    assert endings.ends_at_for(date(2027, 1, 31)) == datetime(2027, 2, 1, tzinfo=UTC)


def test_an_admin_sets_and_clears_an_end_date_audit_logged(team, admin_engine, as_admin):
    member = team.accounts[M]
    target = member_id(admin_engine, team.id, member.user_id)
    last_day = datetime.now(UTC).date() + timedelta(days=60)
    shown = notices.last_day(endings.ends_at_for(last_day))

    response = set_end(as_admin, target, last_day.isoformat())
    assert response.status_code == 302
    assert ends_at(admin_engine, team.id, member.user_id) == endings.ends_at_for(last_day)
    overview = page(as_admin.get("/team/"))
    assert f"{member.name} stays in the team until {shown}." in overview
    assert f"until {shown}</span>" in overview  # on the member list
    assert f'value="{last_day.isoformat()}"' in overview

    assert set_end(as_admin, target, "").status_code == 302  # the "Clear end date" form
    assert ends_at(admin_engine, team.id, member.user_id) is None
    assert "until " not in page(as_admin.get("/team/")).split("members-heading")[1]
    events = dicts(
        admin_engine,
        "SELECT action, actor_id, target, details FROM audit_events WHERE tenant_id = :t AND action LIKE 'member.end%' "
        "ORDER BY at, action DESC",
        t=team.id,
    )
    admin_id = team.accounts[A].user_id
    assert events == [
        {"action": "member.end_set", "actor_id": admin_id, "target": member.email, "details": {"ends_on": shown}},
        {"action": "member.end_cleared", "actor_id": admin_id, "target": member.email, "details": {}},
    ]


@pytest.mark.parametrize(
    ("value", "target_role", "status", "message"),
    [
        # 303: post/redirect/get back to the team page, which says why; a missing role keeps its 403 page.
        ("past", M, 303, "The end date is in the past."),
        ("not-a-date", M, 303, "Give the last day as a date"),
        ("far", M, 303, "within the next ten years"),
        ("soon", O, 403, "Your role cannot set an end date for someone with the Owner role."),
        ("soon", A, 303, "You cannot give your own membership an end date."),  # the acting admin
    ],
)
def test_bad_end_dates_are_refused_and_change_nothing(team, admin_engine, as_admin, value, target_role, status, message):
    today = datetime.now(UTC).date()
    values = {"past": today - timedelta(days=1), "far": today + timedelta(days=3700), "soon": today}
    account = team.accounts[target_role]
    response = set_end(as_admin, member_id(admin_engine, team.id, account.user_id), str(values.get(value, value)))
    shown = refused_page(as_admin, response, "/team/") if status == 303 else page(response)
    assert response.status_code == status
    assert message in shown
    assert ends_at(admin_engine, team.id, account.user_id) is None
    assert count(admin_engine, "SELECT count(*) FROM audit_events WHERE action LIKE 'member.end%'") == 0


def test_an_owners_membership_does_not_end_and_nobody_ends_their_own(team, admin_engine, as_owner, make_user, add_member):
    second_owner = make_user(name="Second Owner")
    add_member(team.id, second_owner, O)
    today = datetime.now(UTC).date().isoformat()
    refused = set_end(as_owner, member_id(admin_engine, team.id, second_owner.user_id), today)
    assert "An owner's membership does not end." in refused_page(as_owner, refused, "/team/")
    mine = set_end(as_owner, member_id(admin_engine, team.id, team.accounts[O].user_id), today)
    assert "To go, leave the team." in refused_page(as_owner, mine, "/team/")
    assert count(admin_engine, "SELECT count(*) FROM tenant_members WHERE ends_at IS NOT NULL") == 0


def test_members_and_viewers_may_not_set_end_dates_nor_see_the_control(team, admin_engine, as_member, as_viewer):
    target = member_id(admin_engine, team.id, team.accounts[V].user_id)
    for client in (as_member, as_viewer):
        assert set_end(client, target, datetime.now(UTC).date().isoformat()).status_code == 403
        assert "/end" not in page(client.get("/team/"))
    assert ends_at(admin_engine, team.id, team.accounts[V].user_id) is None


def test_making_someone_owner_clears_their_end_date(team, admin_engine, as_owner):
    end_in(admin_engine, team.id, team.accounts[A].user_id, timedelta(days=3))
    target = member_id(admin_engine, team.id, team.accounts[A].user_id)
    assert as_owner.post_form(f"/team/members/{target}/role", {"role": "owner"}).status_code == 302
    assert ends_at(admin_engine, team.id, team.accounts[A].user_id) is None


def test_end_dates_do_not_cost_the_team_page_a_statement(app, team, admin_engine, login_as):
    client = login_as(team.accounts[A], team.id)
    client.get("/team/")
    before = statements_for(app, client, "/team/")
    end_in(admin_engine, team.id, team.accounts[M].user_id, timedelta(days=30))
    end_in(admin_engine, team.id, team.accounts[V].user_id, timedelta(days=3))
    assert "until " in page(client.get("/team/"))
    assert statements_for(app, client, "/team/") == before == 2  # the session load and the member list (with the invitations)


# --- the end: gone at once for the request, removed by the beat task --------------------------------


def test_the_next_request_loses_the_team_before_the_task_ran_and_says_so(team, admin_engine, as_member):
    member = team.accounts[M]
    name = team_name(admin_engine, team.id)
    assert f"<h1>{name}</h1>" in page(as_member.get("/team/"))
    end_in(admin_engine, team.id, member.user_id, timedelta(minutes=-1))
    moved = page(as_member.get("/team/"))
    assert f"<h1>{name}</h1>" not in moved  # in their personal team now
    ended = ends_at(admin_engine, team.id, member.user_id)
    assert ended is not None
    assert f"Your membership of {name} ended on {notices.last_day(ended)}." in moved
    assert str(team.id) not in moved  # nor offered in the team switcher
    assert as_member.post_form("/notes/new", {"title": "x", "body": "y"}).status_code == 302
    assert count(admin_engine, "SELECT count(*) FROM notes WHERE tenant_id = :t", t=team.id) == 0
    assert member_id(admin_engine, team.id, member.user_id)  # the row waits for the beat task


def test_the_beat_task_removes_ended_memberships_once_by_the_system(app, team, admin_engine):
    member, viewer, owner = team.accounts[M], team.accounts[V], team.accounts[O]
    end_in(admin_engine, team.id, member.user_id, timedelta(minutes=-1))
    end_in(admin_engine, team.id, viewer.user_id, timedelta(days=2))  # not yet
    end_in(admin_engine, team.id, owner.user_id, timedelta(minutes=-1))  # cannot be set; never removed
    assert run_task(app, "end_memberships") == 1
    assert run_task(app, "end_memberships") == 0
    remaining = {row for (row,) in admin_engine.connect().execute(
        text("SELECT user_id FROM tenant_members WHERE tenant_id = :t"), {"t": team.id}
    )}
    assert remaining == {owner.user_id, viewer.user_id, team.accounts[A].user_id}
    event = dicts(
        admin_engine,
        "SELECT actor_id, actor_name, target, details FROM audit_events WHERE action = 'member.ended'",
    )
    assert len(event) == 1
    assert event[0]["actor_id"] is None and event[0]["actor_name"] is None
    assert event[0]["target"] == member.email
    assert event[0]["details"]["by"] == "system" and event[0]["details"]["role"] == "member"
    notice = dicts(admin_engine, "SELECT tenant_id, user_id, reason FROM membership_notices")
    assert notice == [{"tenant_id": team.id, "user_id": member.user_id, "reason": "ended"}]


def test_the_audit_log_names_the_system_for_an_ending(app, team, admin_engine, as_owner):
    end_in(admin_engine, team.id, team.accounts[M].user_id, timedelta(minutes=-1))
    run_task(app, "end_memberships")
    audit = page(as_owner.get("/team/audit"))
    assert "ended " in audit and "membership (member) after their last day" in audit
    assert "NyxCore <span class=\"muted\">(automatic)</span>" in audit


# --- the warning mail ----------------------------------------------------------------------------------


def test_a_warning_is_claimed_once_while_another_claim_waits_on_the_row(app, team, admin_engine):
    """Two processes at once: the second blocks on the first's claim and then finds nothing to claim."""
    member = team.accounts[M]
    end_in(admin_engine, team.id, member.user_id, timedelta(days=3))
    target = member_id(admin_engine, team.id, member.user_id)
    results: dict[str, bool] = {}
    claimed, trying = threading.Event(), threading.Event()

    def first() -> None:
        with app.app_context(), tenancy.tenant_context(tenant_id=team.id):
            results["first"] = endings.warn(team.id, target)
            claimed.set()
            trying.wait(5)
            time.sleep(0.3)  # the second claim is waiting on the row now
            db.session.commit()

    def second() -> None:
        claimed.wait(5)
        with app.app_context(), tenancy.tenant_context(tenant_id=team.id):
            trying.set()
            results["second"] = endings.warn(team.id, target)
            db.session.commit()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == {"first": True, "second": False}
    assert count(admin_engine, "SELECT count(*) FROM outbox_emails WHERE to_address = :a", a=member.email) == 1
    assert scalar(admin_engine, "SELECT end_warned_at IS NOT NULL FROM tenant_members WHERE id = :i", i=target)


@pytest.mark.usefixtures("real_delivery")
def test_the_warning_mail_arrives_once_when_the_task_runs_twice_at_once(app, team, admin_engine, mail_server, worker):
    member, viewer = team.accounts[M], team.accounts[V]
    end_in(admin_engine, team.id, member.user_id, timedelta(days=6, hours=12))
    end_in(admin_engine, team.id, viewer.user_id, timedelta(days=20))  # too early to warn
    warn = app.extensions["celery"].tasks["nyxcore.tasks.warn_ending_memberships"]
    warn.delay()
    warn.delay()  # the worker's two threads take both at once
    message = mail_server.wait_for(1)[0]
    ends = ends_at(admin_engine, team.id, member.user_id)
    assert ends is not None
    name = team_name(admin_engine, team.id)
    assert message["To"] == member.email
    assert message["Subject"] == f"Your membership of {name} ends on {notices.last_day(ends)}"
    assert "ask one of the team's admins" in mail_server.text(message)
    warn.delay()  # a later run (a restart, another beat) finds it claimed
    mail_server.assert_quiet(1.0, expected=1)
    assert count(admin_engine, "SELECT count(*) FROM outbox_emails") == 1
    assert count(admin_engine, "SELECT count(*) FROM tenant_members WHERE end_warned_at IS NOT NULL") == 1


def test_a_new_end_date_is_warned_about_again(app, team, admin_engine, as_admin):
    member = team.accounts[M]
    target = member_id(admin_engine, team.id, member.user_id)
    soon = datetime.now(UTC).date() + timedelta(days=2)
    assert set_end(as_admin, target, soon.isoformat()).status_code == 302
    assert run_task(app, "warn_ending_memberships") == 1
    assert run_task(app, "warn_ending_memberships") == 0
    assert set_end(as_admin, target, (soon + timedelta(days=1)).isoformat()).status_code == 302
    assert run_task(app, "warn_ending_memberships") == 1
    subjects = [s for (s,) in admin_engine.connect().execute(text("SELECT subject FROM outbox_emails ORDER BY created_at"))]
    assert [s.rsplit(" ", 3)[1:] for s in subjects] == [
        notices.last_day(endings.ends_at_for(soon)).split(),
        notices.last_day(endings.ends_at_for(soon + timedelta(days=1))).split(),
    ]


# --- clear endings: told once why ------------------------------------------------------------------------


def test_a_removed_member_is_told_once_on_their_next_request(team, admin_engine, as_owner, as_member):
    name = team_name(admin_engine, team.id)
    target = member_id(admin_engine, team.id, team.accounts[M].user_id)
    assert as_owner.confirm(f"/team/members/{target}/remove").status_code == 302
    first = page(as_member.get("/team/"))
    assert f"You were removed from {name}." in first
    assert f"<h1>{name}</h1>" not in first
    assert f"You were removed from {name}." not in page(as_member.get("/team/"))
    assert count(admin_engine, "SELECT count(*) FROM membership_notices") == 0


def test_an_ended_member_is_told_once_after_the_task_removed_them(app, team, admin_engine, as_member):
    name = team_name(admin_engine, team.id)
    end_in(admin_engine, team.id, team.accounts[M].user_id, timedelta(minutes=-1))
    run_task(app, "end_memberships")
    first = page(as_member.get("/team/"))
    assert f"Your membership of {name} ended on " in first
    assert "ended on" not in page(as_member.get("/team/"))
    assert count(admin_engine, "SELECT count(*) FROM membership_notices") == 0


def test_someone_who_left_is_told_so_once(team, admin_engine, as_member):
    name = team_name(admin_engine, team.id)
    left = as_member.confirm("/team/leave", follow_redirects=True)
    assert left.status_code == 200
    assert page(left).count(f"You left {name}.") == 1
    assert f"You left {name}." not in page(as_member.get("/team/"))


def test_a_removed_member_with_no_team_left_is_told_and_sent_to_make_one(team, admin_engine, as_owner, as_member):
    member = team.accounts[M]
    with admin_engine.begin() as conn:
        conn.execute(text("DELETE FROM tenants WHERE id = :t"), {"t": member.team_id})  # no personal team
    target = member_id(admin_engine, team.id, member.user_id)
    assert as_owner.confirm(f"/team/members/{target}/remove").status_code == 302
    response = as_member.get("/team/", follow_redirects=True)
    assert response.request.path == "/teams/new"
    assert f"You were removed from {team_name(admin_engine, team.id)}." in page(response)


def test_switching_to_a_team_one_was_removed_from_says_why(team, admin_engine, login_as, as_owner):
    member = team.accounts[M]
    client = login_as(member, member.team_id)  # active in their personal team, the team in the switcher
    assert str(team.id) in page(client.get("/team/"))
    target = member_id(admin_engine, team.id, member.user_id)
    assert as_owner.confirm(f"/team/members/{target}/remove").status_code == 302
    switched = client.post_form("/teams/switch", {"tenant_id": str(team.id)}, follow_redirects=True)
    assert switched.status_code == 200
    assert f"You were removed from {team_name(admin_engine, team.id)}." in page(switched)
    assert client.post_form("/teams/switch", {"tenant_id": str(team.id)}).status_code == 404  # told once


def test_an_ordinary_page_never_reads_notices(app, team, admin_engine, login_as, as_owner):
    """Someone else's notice in the team changes nothing for a member still in it: no statement is spent."""
    client = login_as(team.accounts[V], team.id)
    client.get("/team/")
    before = statements_for(app, client, "/team/")
    target = member_id(admin_engine, team.id, team.accounts[M].user_id)
    assert as_owner.confirm(f"/team/members/{target}/remove").status_code == 302
    assert statements_for(app, client, "/team/") == before


def test_the_due_functions_give_ids_only_and_leave_the_scan_closed(app, team, admin_engine, database):
    """Beat reaches every team through two SECURITY DEFINER functions: pairs of ids, nothing else."""
    from sqlalchemy import create_engine

    end_in(admin_engine, team.id, team.accounts[M].user_id, timedelta(days=3))
    end_in(admin_engine, team.id, team.accounts[V].user_id, timedelta(minutes=-1))
    member, viewer = (member_id(admin_engine, team.id, team.accounts[r].user_id) for r in (M, V))
    engine = create_engine(database.app_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("SELECT set_config('app.membership_end_scan', 'on', true)"))
            assert conn.execute(text("SELECT count(*) FROM tenant_members")).scalar_one() == 0  # the owner's alone
        with engine.begin() as conn:
            warn = conn.execute(text("SELECT * FROM nyxcore_memberships_to_warn('7 days', 10)")).all()
            end = conn.execute(text("SELECT * FROM nyxcore_memberships_to_end(10)")).all()
            assert [tuple(row) for row in warn] == [(team.id, member)]
            assert [tuple(row) for row in end] == [(team.id, viewer)]
            assert conn.execute(text("SELECT current_setting('app.membership_end_scan', true)")).scalar() == ""
            assert conn.execute(text("SELECT count(*) FROM tenant_members")).scalar_one() == 0
    finally:
        engine.dispose()


def test_a_stale_notice_from_an_earlier_removal_does_not_speak_for_a_new_ending(
    team, admin_engine, as_owner, as_member, add_member
):
    member = team.accounts[M]
    name = team_name(admin_engine, team.id)
    assert as_owner.confirm(f"/team/members/{member_id(admin_engine, team.id, member.user_id)}/remove").status_code == 302
    add_member(team.id, member, M)  # let in again before their next request
    end_in(admin_engine, team.id, member.user_id, timedelta(minutes=-1))
    first = page(as_member.get("/team/"))
    assert f"Your membership of {name} ended on " in first
    assert "You were removed" not in first
    assert count(admin_engine, "SELECT count(*) FROM membership_notices") == 0


# --- an ended membership is gone everywhere: seats, "already a member", joining again ----------------


def test_an_ended_membership_holds_no_seat_before_the_task_ran(team, admin_engine, as_owner):
    end_in(admin_engine, team.id, team.accounts[M].user_id, timedelta(minutes=-1))
    assert set_seats(as_owner, "3").status_code == 302  # 4 rows, 3 memberships that count
    assert "Seats: 3 of 3 used" in page(as_owner.get("/team/"))
    assert team.accounts[M].email not in page(as_owner.get("/team/"))


def test_joining_again_by_link_after_the_end_is_a_fresh_join(app, team, admin_engine, as_admin, as_member):
    member = team.accounts[M]
    end_in(admin_engine, team.id, member.user_id, timedelta(minutes=-1))
    _, token = make_link(as_admin, role="viewer")
    assert "already a member" not in page(as_member.get(f"/join/{token}"))
    assert as_member.post_form(f"/join/{token}").status_code == 303
    assert "You joined as viewer" in page(as_member.get("/team/"))
    assert f"<h1>{team_name(admin_engine, team.id)}</h1>" in page(as_member.get("/team/"))  # not bounced
    assert ends_at(admin_engine, team.id, member.user_id) is None
    assert role_of(admin_engine, team.id, member.user_id) == "viewer"
    assert scalar(admin_engine, "SELECT uses FROM join_links") == 1
    events = dicts(admin_engine, "SELECT action, actor_id FROM audit_events WHERE action IN ('member.ended', 'join_link.joined')")
    assert sorted((e["action"], e["actor_id"]) for e in events) == [  # the old membership ended, by the system
        ("join_link.joined", member.user_id),
        ("member.ended", None),
    ]
    assert run_task(app, "end_memberships") == 0


def test_an_ended_member_may_be_invited_and_accept_again(team, admin_engine, as_admin, as_member):
    member, viewer = team.accounts[M], team.accounts[V]
    for account in (member, viewer):
        end_in(admin_engine, team.id, account.user_id, timedelta(minutes=-1))
    invited = as_admin.post_form("/team/invitations", {"emails": viewer.email, "role": "member"})
    assert "Invited as member." in page(invited)  # not "Already a member of this team."
    link = place_invitation(admin_engine, team, member.email)  # a link this test can follow
    assert as_member.post_form(link).status_code == 302
    assert ends_at(admin_engine, team.id, member.user_id) is None
    assert f"<h1>{team_name(admin_engine, team.id)}</h1>" in page(as_member.get("/team/"))


def test_an_ending_revokes_the_members_invitations_in_the_systems_name(app, team, admin_engine):
    admin = team.accounts[A]
    place_invitation(admin_engine, team, "guest@example.com")  # sent by the admin
    end_in(admin_engine, team.id, admin.user_id, timedelta(minutes=-1))
    assert run_task(app, "end_memberships") == 1
    (revoked,) = dicts(admin_engine, "SELECT actor_id, target, details FROM audit_events WHERE action = 'invitation.revoked'")
    assert revoked["actor_id"] is None and revoked["details"]["by"] == "system"
    assert revoked["target"] == "guest@example.com"
    assert count(admin_engine, "SELECT count(*) FROM invitations WHERE revoked_at IS NULL") == 0


def test_a_removal_and_a_departure_name_the_person_who_acted(team, admin_engine, as_owner, as_admin):
    place_invitation(admin_engine, team, "guest@example.com")  # sent by the admin, who then leaves
    assert as_admin.confirm("/team/leave").status_code == 303
    target = member_id(admin_engine, team.id, team.accounts[M].user_id)
    assert as_owner.confirm(f"/team/members/{target}/remove").status_code == 302
    events = dicts(admin_engine, "SELECT action, actor_id FROM audit_events WHERE action NOT LIKE 'team.%'")
    assert sorted((e["action"], e["actor_id"]) for e in events) == [
        ("invitation.revoked", team.accounts[A].user_id),
        ("member.left", team.accounts[A].user_id),
        ("member.removed", team.accounts[O].user_id),
    ]
