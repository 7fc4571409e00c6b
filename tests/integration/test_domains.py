"""Domain policy, verified domains and joining by domain (issue 14).

DNS verification runs against a real DNS server on loopback (tests/integration/dnsserver.py);
the outcome mail of a join request goes through the real worker to the test SMTP server.
"""

from __future__ import annotations

import html
import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from nyxcore.roles import TenantRole
from tests.helpers import count, dicts, refused_page, role_of, rows, scalar
from tests.integration.dnsserver import running_dns_server, silent_dns_server
from tests.integration.mailserver import MailServer
from tests.integration.test_endings import end_in

_RECORD = re.compile(r'<code class="record">(nyxcore-verification=[0-9a-f]+)</code>')
_CHECK = re.compile(r'action="/team/domains/([0-9a-f-]{36})/check"')


def page(response: Any) -> str:
    return html.unescape(response.get_data(as_text=True))


def team_name(admin_engine: Any, team_id: uuid.UUID) -> str:
    return str(scalar(admin_engine, "SELECT name FROM tenants WHERE id = :t", t=team_id))


def new_domain() -> str:
    return f"acme-{uuid.uuid4().hex[:8]}.example.com"


@pytest.fixture
def dns(app: Any) -> Any:
    """A DNS server on loopback that the app asks (DNS_RESOLVER), checks allowed back to back."""
    with running_dns_server() as server:
        app.config.update(DNS_RESOLVER=server.address, DNS_TIMEOUT_SECONDS=2, DOMAIN_CHECK_INTERVAL_SECONDS=0)
        yield server


def claim(client: Any, domain: str, mode: str = "request", role: str = "member") -> tuple[str, str]:
    """Add `domain` on the client's team page; its id and the TXT value to publish."""
    added = client.post_form("/team/domains", {"domain": domain, "join_mode": mode, "join_role": role})
    assert added.status_code == 302, page(added)
    body = page(client.get("/team/domains"))
    section = body[body.index(f"<h3>{domain}") :]
    return _CHECK.search(section).group(1), _RECORD.search(section).group(1)


def check(client: Any, domain_id: str) -> str:
    """Press "Check now"; the page's message."""
    response = client.post_form(f"/team/domains/{domain_id}/check", follow_redirects=True)
    assert response.status_code == 200
    return page(response)


def verified_domain(client: Any, dns: Any, mode: str = "request", role: str = "member") -> str:
    domain = new_domain()
    domain_id, value = claim(client, domain, mode, role)
    dns.txt[domain] = [value]
    assert f"{domain} is verified" in check(client, domain_id)
    return domain


# --- Verification by DNS ---------------------------------------------------------------------------


def test_a_domain_is_verified_by_its_txt_record_at_the_domain_or_under_nyxcore(as_owner, dns):
    first, second = new_domain(), new_domain()
    first_id, first_value = claim(as_owner, first)
    second_id, second_value = claim(as_owner, second)
    body = page(as_owner.get("/team/domains"))
    assert f"at <code>{first}</code> or at <code>_nyxcore.{first}</code>" in body  # exactly what to publish
    dns.txt[first] = ["v=spf1 -all", first_value]
    dns.txt[f"_nyxcore.{second}"] = [second_value]
    assert f"{first} is verified" in check(as_owner, first_id)
    assert f"{second} is verified" in check(as_owner, second_id)
    body = page(as_owner.get("/team/domains"))
    assert body.count("Verified</span>") == 2 and "Check now" not in body
    assert f"{first}" in page(as_owner.get("/team/audit"))


def test_a_wrong_token_or_no_record_leaves_the_domain_unverified_and_says_which(as_owner, dns):
    domain = new_domain()
    domain_id, _ = claim(as_owner, domain)
    assert "No nyxcore-verification record was found" in check(as_owner, domain_id)
    dns.txt[domain] = ["nyxcore-verification=0123456789abcdef0123456789abcdef"]
    assert "has a nyxcore-verification record, but not this team's" in check(as_owner, domain_id)
    assert "Not verified yet" in page(as_owner.get("/team/domains"))


def test_a_dns_server_that_does_not_answer_times_out_with_a_clear_message(app, as_owner):
    domain = new_domain()
    domain_id, _ = claim(as_owner, domain)
    with silent_dns_server() as address:
        app.config.update(DNS_RESOLVER=address, DNS_TIMEOUT_SECONDS=0.3, DOMAIN_CHECK_INTERVAL_SECONDS=0)
        assert f"DNS did not answer about {domain} in time" in check(as_owner, domain_id)
    assert "Not verified yet" in page(as_owner.get("/team/domains"))


def test_checks_are_rate_limited_per_domain(app, as_owner, dns):
    app.config["DOMAIN_CHECK_INTERVAL_SECONDS"] = 60
    domain = new_domain()
    domain_id, value = claim(as_owner, domain)
    assert "No nyxcore-verification record" in check(as_owner, domain_id)
    dns.txt[domain] = [value]
    assert f"{domain} was checked less than 60 seconds ago" in check(as_owner, domain_id)
    assert dns.zone.queries.count(domain) == 1  # the second press did not reach DNS
    assert "Not verified yet" in page(as_owner.get("/team/domains"))


@pytest.mark.parametrize("public", ["gmail.com", "Outlook.com", "ada@yahoo.com"])
def test_public_mail_domains_cannot_be_claimed(as_owner, public):
    refused = as_owner.post_form(
        "/team/domains", {"domain": public, "join_mode": "request", "join_role": "member"}
    )
    assert refused.status_code == 400
    assert "is a public mail domain" in page(refused)
    assert "No domain yet." in page(refused)


@pytest.mark.parametrize("bad", ["not a domain", "localhost", "a..b.com", ""])
def test_what_is_not_a_domain_is_refused_with_a_message(as_owner, bad):
    refused = as_owner.post_form(
        "/team/domains", {"domain": bad, "join_mode": "request", "join_role": "member"}
    )
    assert refused.status_code == 400
    assert 'role="alert"' in page(refused) and "No domain yet." in page(refused)


def test_people_join_by_domain_only_as_member_or_viewer(as_owner):
    refused = as_owner.post_form(
        "/team/domains", {"domain": new_domain(), "join_mode": "direct", "join_role": "admin"}
    )
    assert refused.status_code == 400 and "No domain yet." in page(refused)


def test_a_domain_verified_by_one_team_cannot_be_claimed_by_another(as_owner, make_user, login_as, dns):
    domain = verified_domain(as_owner, dns)
    other = make_user(name="Other Owner")
    rival = login_as(other, other.team_id)
    rival_id, rival_value = claim(rival, domain)
    dns.txt[domain].append(rival_value)  # even with its own record published
    assert f"{domain} is verified by another team already" in check(rival, rival_id)
    assert "Not verified yet" in page(rival.get("/team/domains"))


def test_only_owners_manage_domains_and_only_admins_decide_requests(as_admin, as_member, as_viewer):
    assert as_admin.get("/team/domains").status_code == 403
    assert as_member.get("/team/join-requests").status_code == 403
    assert as_viewer.get("/team/join-requests").status_code == 403
    assert as_admin.get("/team/join-requests").status_code == 200


# --- The domain policy on every way in ----------------------------------------------------------------


def set_policy(client: Any, domains: str) -> None:
    saved = client.post_form("/team/domains/allowlist", {"allowed_domains": domains})
    assert saved.status_code == 302, page(saved)


def test_invitations_outside_the_allowlist_are_refused_per_address_and_nobody_is_invited(as_owner):
    set_policy(as_owner, "Acme.example.com, @partner.example.org")
    assert "acme.example.com\npartner.example.org" in page(as_owner.get("/team/domains"))
    emails = "ada@acme.example.com\nbob@elsewhere.example.net\ncy@partner.example.org\ndee@gmail.com"
    refused = as_owner.post_form("/team/invitations", {"emails": emails, "role": "member"})
    assert refused.status_code == 400
    body = page(refused)
    assert "Not allowed: bob@elsewhere.example.net, dee@gmail.com." in body
    assert "Nobody was invited" in body and "ada@acme.example.com</td>" not in body
    single = as_owner.post_form(
        "/team/invitations", {"emails": "eve@elsewhere.example.net", "role": "viewer"}
    )
    assert single.status_code == 400 and "Not allowed: eve@elsewhere.example.net." in page(single)
    allowed = as_owner.post_form(
        "/team/invitations", {"emails": "ada@acme.example.com, cy@partner.example.org", "role": "member"}
    )
    assert allowed.status_code == 200 and "2 of 2 addresses invited" in page(allowed)


def test_an_empty_allowlist_lets_anyone_in_again(as_owner):
    set_policy(as_owner, "acme.example.com")
    set_policy(as_owner, "")
    invited = as_owner.post_form(
        "/team/invitations", {"emails": "zed@elsewhere.example.net", "role": "member"}
    )
    assert invited.status_code == 200 and "1 of 1 address invited" in page(invited)


def test_a_bad_allowlist_entry_is_refused_and_the_policy_stays(as_owner):
    set_policy(as_owner, "acme.example.com")
    refused = as_owner.post_form(
        "/team/domains/allowlist", {"allowed_domains": "acme.example.com, not a domain!"}
    )
    assert refused.status_code == 400 and "is not a domain name" in page(refused)
    assert "acme.example.com</textarea>" in page(as_owner.get("/team/domains"))


def test_acceptance_checks_the_policy_as_it_is_when_the_invitee_accepts(
    app, as_owner, team, make_user, login_as
):
    from nyxcore.services.mail import ConsoleTransport

    invitee = make_user(name="Late Invitee")
    invited = as_owner.post_form("/team/invitations", {"emails": invitee.email, "role": "member"})
    assert invited.status_code == 200
    sent = next(m for m in ConsoleTransport.recent if m["to"] == invitee.email)
    token = re.search(r"/invite/([A-Za-z0-9_-]+)", sent["text"]).group(1)
    set_policy(as_owner, "acme.example.com")  # after the invitation was sent
    client = login_as(invitee)
    refused = client.post_form(f"/invite/{token}")
    assert refused.status_code == 403
    assert f"{invitee.email} is not at a domain" in page(refused) and "acme.example.com" in page(refused)
    assert team.id not in {
        uuid.UUID(m)
        for m in re.findall(r'name="tenant_id" value="([0-9a-f-]+)"', page(client.get("/teams/")))
    }


def test_signing_up_through_an_invitation_checks_the_policy_and_makes_no_account(as_owner, anonymous):
    from nyxcore.services.mail import ConsoleTransport

    address = f"nia-{uuid.uuid4().hex[:6]}@elsewhere.example.net"
    assert as_owner.post_form("/team/invitations", {"emails": address, "role": "member"}).status_code == 200
    token = re.search(
        r"/invite/([A-Za-z0-9_-]+)", next(m for m in ConsoleTransport.recent if m["to"] == address)["text"]
    ).group(1)
    set_policy(as_owner, "acme.example.com")
    form = {"name": "Nia Newcomer", "password": "correct horse battery staple"}
    for _ in range(2):  # the second try is refused the same way: the first made no account
        refused = anonymous.post_form(f"/invite/{token}/signup", form)
        assert refused.status_code == 403
        assert f"{address} is not at a domain" in page(refused)
    assert anonymous.get("/team/").status_code == 302  # not signed in


# --- Teams you can join ---------------------------------------------------------------------------


def test_a_verified_address_at_a_direct_domain_joins_at_once_with_the_domains_role(
    as_owner, team, make_user, login_as, dns
):
    domain = verified_domain(as_owner, dns, mode="direct", role="viewer")
    ada = login_as(make_user(name="Ada", email=f"ada@{domain}"))
    listing = page(ada.get("/teams/"))
    assert "Teams you can join" in listing and "Olive Owner" not in listing
    assert "Join at once as viewer" in listing
    joined = ada.post_form(f"/teams/{team.id}/join")
    assert joined.status_code == 302 and joined.location.endswith("/team/")
    overview = page(ada.get("/team/"))
    assert "You joined" in overview and "Ada" in overview
    assert "Join at once" not in page(ada.get("/teams/"))  # a member no longer sees it to join
    assert "Ada joined as a viewer through their e-mail domain." in page(as_owner.get("/team/audit"))


def test_someone_whose_membership_ended_may_join_again_by_domain(
    as_owner, team, make_user, add_member, login_as, dns, admin_engine
):
    domain = verified_domain(as_owner, dns, mode="direct", role="viewer")
    ada = make_user(name="Ada", email=f"ada@{domain}")
    add_member(team.id, ada, TenantRole.MEMBER)
    end_in(admin_engine, team.id, ada.user_id, timedelta(minutes=-1))  # the beat task has not removed it yet
    client = login_as(ada)
    assert "Join at once as viewer" in page(client.get("/teams/"))
    assert client.post_form(f"/teams/{team.id}/join").status_code == 302
    assert role_of(admin_engine, team.id, ada.user_id) == "viewer"  # a fresh membership, the old one ended by the system first
    assert count(admin_engine, "SELECT count(*) FROM audit_events WHERE action = 'member.ended'") == 1


def test_only_a_verified_address_at_a_verified_domain_sees_the_team(as_owner, team, make_user, login_as, dns):
    domain = verified_domain(as_owner, dns, mode="direct")
    pending = new_domain()
    claim(as_owner, pending, mode="direct")  # claimed, never verified
    unverified = login_as(make_user(email=f"una@{domain}", verified=False))
    elsewhere = login_as(make_user(email=f"bo@{pending}"))
    for client in (unverified, elsewhere):
        assert "Join at once" not in page(client.get("/teams/"))
        assert client.post_form(f"/teams/{team.id}/join").status_code == 404
    assert "Verify your e-mail address first" in page(unverified.get("/teams/"))


def test_joining_by_domain_obeys_the_domain_policy(as_owner, team, make_user, login_as, dns):
    domain = verified_domain(as_owner, dns, mode="direct")
    set_policy(as_owner, "other.example.org")
    ada = login_as(make_user(email=f"ada@{domain}"))
    refused = ada.post_form(f"/teams/{team.id}/join")
    assert refused.status_code == 403 and "is not at a domain" in page(refused)
    assert "Join at once" in page(ada.get("/teams/"))  # nothing changed


def test_a_request_is_listed_for_admins_once_and_the_requester_sees_it_waiting(
    as_owner, as_admin, team, make_user, login_as, dns
):
    domain = verified_domain(as_owner, dns)
    ada = login_as(make_user(name="Ada Asker", email=f"ada@{domain}"))
    assert "Ask to join; an admin decides" in page(ada.get("/teams/"))
    asked = ada.post_form(f"/teams/{team.id}/join", follow_redirects=True)
    assert "You asked to join" in page(asked) and "Asked; waiting for an admin" in page(asked)
    again = ada.post_form(f"/teams/{team.id}/join")
    assert "asked to join" in refused_page(ada, again, "/teams/")
    requests = page(as_admin.get("/team/join-requests"))
    assert "Ada Asker" in requests and f"ada@{domain}" in requests
    assert "No open requests." in page(ada.get("/team/join-requests"))  # her own team's page: nothing of ours


@pytest.mark.usefixtures("real_delivery")
def test_admins_approve_and_decline_requests_audit_logged_and_mailed(
    as_owner, team, make_user, login_as, dns, mail_server, worker, admin_engine
):
    domain = verified_domain(as_owner, dns, role="viewer")
    ada, bo = make_user(name="Ada", email=f"ada@{domain}"), make_user(name="Bo", email=f"bo@{domain}")
    for account in (ada, bo):
        assert login_as(account).post_form(f"/teams/{team.id}/join").status_code == 302
    admin = login_as(team.accounts[TenantRole.ADMIN], team.id)
    ids = {
        r["email"]: r["id"]
        for r in dicts(admin_engine, "SELECT id, email FROM join_requests WHERE tenant_id = :t", t=team.id)
    }
    approved = admin.post_form(f"/team/join-requests/{ids[ada.email]}/approve", follow_redirects=True)
    assert f"Ada ({ada.email}) joined as viewer" in page(approved)
    declined = admin.post_form(f"/team/join-requests/{ids[bo.email]}/decline", follow_redirects=True)
    assert f"The request from {bo.email} was declined" in page(declined)
    assert "No open requests." in page(declined)
    assert role_of(admin_engine, team.id, ada.user_id) == "viewer"
    assert role_of(admin_engine, team.id, bo.user_id) is None
    again = admin.post_form(f"/team/join-requests/{ids[ada.email]}/approve")
    assert "was approved already" in refused_page(admin, again, "/team/join-requests")  # decided already
    actions = {
        r.action
        for r in rows(admin_engine, "SELECT action FROM audit_events WHERE tenant_id = :t", t=team.id)
    }
    assert {"join_request.created", "join_request.approved", "join_request.declined"} <= actions
    mails = {m["To"]: m for m in mail_server.wait_for(2)}
    assert "was approved" in MailServer.text(
        mails[ada.email]
    ) and "http://nyxcore.test/teams/" in MailServer.text(mails[ada.email])
    assert "was declined" in MailServer.text(mails[bo.email])
    assert mails[ada.email]["Subject"] == f"You joined {team_name(admin_engine, team.id)}"


def test_another_teams_request_is_a_404(as_owner, team, make_user, login_as, dns, admin_engine):
    domain = verified_domain(as_owner, dns)
    assert login_as(make_user(email=f"ada@{domain}")).post_form(f"/teams/{team.id}/join").status_code == 302
    request_id = rows(admin_engine, "SELECT id FROM join_requests WHERE tenant_id = :t", t=team.id)[0].id
    stranger = make_user(name="Stranger Admin")
    outsider = login_as(stranger, stranger.team_id)
    assert outsider.post_form(f"/team/join-requests/{request_id}/approve").status_code == 404
    assert (
        count(
            admin_engine,
            "SELECT count(*) FROM join_requests WHERE decided_at IS NULL AND tenant_id = :t",
            t=team.id,
        )
        == 1
    )


# --- Isolation of the discovery path -----------------------------------------------------------------


def test_the_discovery_function_gives_an_outsider_the_teams_id_and_name_and_nothing_else(
    as_owner, team, make_user, dns, app_engine, admin_engine
):
    domain = verified_domain(as_owner, dns)
    ada, bo = make_user(email=f"ada@{domain}"), make_user(email="bo@elsewhere.example.net")
    with app_engine.begin() as conn:  # the app role, as Ada, in no team
        conn.execute(text("SELECT set_config('app.user_id', :u, true)"), {"u": str(ada.user_id)})
        found = conn.execute(text("SELECT * FROM nyxcore_joinable_teams()")).mappings().all()
        assert [dict(r) for r in found] == [
            {
                "team_id": team.id,
                "team_name": team_name(admin_engine, team.id),
                "join_mode": "request",
                "join_role": "member",
            }
        ]
        # Nothing else of the team is readable to her, not even after the function turned its switch on.
        conn.execute(text("SELECT set_config('app.domain_discovery', 'on', true)"))
        for table in (
            "tenants",
            "team_domains",
            "tenant_members",
            "join_requests",
            "invitations",
            "audit_events",
        ):
            column = "id" if table == "tenants" else "tenant_id"
            assert (
                conn.execute(
                    text(f"SELECT count(*) FROM {table} WHERE {column} = :t"), {"t": team.id}
                ).scalar_one()
                == 0
            ), table
    with app_engine.begin() as conn:
        conn.execute(text("SELECT set_config('app.user_id', :u, true)"), {"u": str(bo.user_id)})
        assert conn.execute(text("SELECT count(*) FROM nyxcore_joinable_teams()")).scalar_one() == 0


def test_joining_and_approvals_by_domain_take_seats_like_every_other_way_in(
    as_owner, team, make_user, login_as, dns, admin_engine
):
    # The team fixture has four members: a limit of four leaves no seat.
    assert as_owner.post_form("/team/settings/seats", {"seats-seat_limit": "4"}).status_code == 302
    domain = verified_domain(as_owner, dns, mode="direct")
    ada = make_user(name="Ada", email=f"ada@{domain}")
    ada_client = login_as(ada)
    refused = ada_client.post_form(f"/teams/{team.id}/join")
    assert "4 seats and 4 are taken" in refused_page(ada_client, refused, "/teams/")
    assert role_of(admin_engine, team.id, ada.user_id) is None

    bo = make_user(name="Bo", email=f"bo@{domain}")
    with admin_engine.begin() as conn:  # the domain now asks: Bo's request waits for an admin
        conn.execute(text("UPDATE team_domains SET join_mode = 'request' WHERE tenant_id = :t"), {"t": team.id})
    assert login_as(bo).post_form(f"/teams/{team.id}/join").status_code == 302
    request_id = scalar(admin_engine, "SELECT id FROM join_requests WHERE user_id = :u", u=bo.user_id)
    admin = login_as(team.accounts[TenantRole.ADMIN], team.id)
    approving = admin.post_form(f"/team/join-requests/{request_id}/approve")
    assert "4 seats and 4 are taken" in refused_page(admin, approving, "/team/join-requests")
    assert role_of(admin_engine, team.id, bo.user_id) is None
    assert scalar(admin_engine, "SELECT decided_at FROM join_requests WHERE id = :r", r=request_id) is None
