"""Several instances, one database: two gunicorn servers, two Celery workers and a beat on one
PostgreSQL and one Redis, in production mode (tests/deployment/cluster.py), as an operator scales
NyxCore out. What one process keeps must not be what the installation relies on:

- the log-in limit counts every server's attempts (Flask-Limiter's counters live in Redis);
- each invitation is mailed once, whichever worker takes it, with the outbox sweep running too, and
  the daily invitation quota counts across servers;
- a team switch, a removal or a log-out through one server holds on the other at the next request
  (the signed cookie and the server-side session and memberships are shared, nothing is cached).
"""

from __future__ import annotations

import re
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from markupsafe import escape

from nyxcore.roles import TenantRole
from tests.conftest import team_name
from tests.deployment.cluster import Cluster, cluster_environment, log_in, post_from, running_cluster
from tests.helpers import count, member_id
from tests.integration.mailserver import MailServer
from tests.live import Browser, failed_logins

if TYPE_CHECKING:  # imported by name, pytest would try to collect it as a test class
    from tests.conftest import TestDatabase

pytestmark = pytest.mark.committed  # other processes read what the fixtures create

LOGIN_LIMIT = 5
INVITATIONS = 200
BATCH = 50  # the invite form's most addresses at once (services/invitations/addresses.py)


@pytest.fixture(scope="module")
def cluster(
    database: TestDatabase, mail: MailServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    environment = cluster_environment(
        database,
        mail,
        RATELIMIT_ENABLED="true",
        RATELIMIT_LOGIN=f"{LOGIN_LIMIT} per minute",
        # Exactly this test's invitations a day for the inviter (a quota in Redis), and room for
        # them in the team's hourly limit (counted in the database).
        INVITATIONS_PER_USER_PER_DAY=str(INVITATIONS),
        INVITATIONS_PER_TEAM_PER_HOUR=str(2 * INVITATIONS),
        # The beat sends the outbox sweep every second, alongside the workers' deliveries.
        OUTBOX_SWEEP_SECONDS="1",
    )
    with running_cluster(environment, tmp_path_factory.mktemp("instances"), web=2, workers=2) as running:
        yield running


def ports(cluster: Cluster) -> list[int]:
    return [int(url.rsplit(":", 1)[1]) for url in cluster.urls]


def test_the_login_limit_counts_the_attempts_of_both_servers(cluster: Cluster) -> None:
    # Alternated between the servers, each sees at most four: only a shared count reaches five. From
    # 127.0.0.2, a peer of its own, so that the other tests' log-ins from 127.0.0.1 are not limited.
    statuses = failed_logins(ports(cluster), source="127.0.0.2", attempts=LOGIN_LIMIT + 2)
    assert statuses == [400] * LOGIN_LIMIT + [429] * 2


def invite(browser: Browser, addresses: list[str], *, expected: int = 200) -> str:
    """Post the invite form (many addresses at once) and return the page it answers with."""
    reply = post_from(
        browser, "/team/invitations", "/team/invitations", {"emails": "\n".join(addresses), "role": "member"}
    )
    assert reply.status == expected, (reply.status, reply.body[-2000:])
    return reply.body


def test_each_of_200_invitations_is_delivered_exactly_once(
    cluster: Cluster, mail: MailServer, make_user: Any, admin_engine: Any
) -> None:
    owner = make_user(name="Iris Inviter")
    first = Browser(cluster.urls[0], timeout=60)
    log_in(first, owner.email)
    browsers = [first, Browser(cluster.urls[1], cookies=first.cookies, timeout=60)]
    tag = uuid.uuid4().hex[:8]
    addresses = [f"guest{n}-{tag}@example.com" for n in range(INVITATIONS)]
    batches = [addresses[start : start + BATCH] for start in range(0, INVITATIONS, BATCH)]
    pages: list[str] = []

    def send(browser: Browser, mine: list[list[str]]) -> None:
        pages.extend(invite(browser, batch) for batch in mine)

    # Both servers at once, two forms of 50 each: the team's row lock and the quota's counter in Redis
    # are what keep them from both passing a count.
    threads = [threading.Thread(target=send, args=(b, batches[n::2])) for n, b in enumerate(browsers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(pages) == len(batches)
    assert (
        count(admin_engine, "SELECT count(*) FROM invitations WHERE email LIKE :t", t=f"%-{tag}@%")
        == INVITATIONS
    )

    # Each server sent 100: the 201st is over the inviter's daily 200 wherever it is asked for.
    refused = invite(browsers[1], [f"one-too-many-{tag}@example.com"], expected=429)
    assert f"You may send {INVITATIONS} invitations a day across all your teams and have 0 left" in refused
    assert (
        count(admin_engine, "SELECT count(*) FROM invitations WHERE email LIKE :t", t=f"%-{tag}@%")
        == INVITATIONS
    )

    def received() -> Counter[str]:
        return mail.deliveries(lambda to: f"-{tag}@" in to)

    cluster.wait_until(lambda: sum(received().values()) >= INVITATIONS, "200 invitations delivered")
    mail.assert_quiet(1.5, expected=len(mail.messages))  # nothing more on its way: no late duplicate
    delivered = received()
    assert set(delivered) == set(addresses)
    assert max(delivered.values()) == 1, [address for address, n in delivered.items() if n > 1]
    assert count(admin_engine, "SELECT count(*) FROM outbox_emails WHERE sent_at IS NULL") == 0

    # Both workers took their share, and the beat kept sending the sweep meanwhile.
    # Each batch task logs how many messages it sent; a single message's task (a retry), True.
    sent_by = [
        sum(int(n) for n in re.findall(r"deliver_outbox_emails\[[^\]]+\] succeeded in [\d.e-]+s: (\d+)", w.log()))
        + len(re.findall(r"deliver_outbox_email\[[^\]]+\] succeeded in [\d.e-]+s: True", w.log()))
        for w in cluster.workers
    ]
    assert sum(sent_by) == INVITATIONS and min(sent_by) > 0, sent_by
    assert cluster.beat is not None and "Sending due task sweep-outbox" in cluster.beat.log()


def heading(app: Any, team_id: uuid.UUID) -> str:
    return f"<h1>{escape(team_name(app, team_id))}</h1>"


def test_a_switch_a_removal_and_a_log_out_through_one_server_hold_on_the_other(
    cluster: Cluster, app: Any, make_user: Any, add_member: Any, admin_engine: Any
) -> None:
    owner = make_user(name="Opal Owner")
    member = make_user(name="Milo Member")
    add_member(owner.team_id, member, TenantRole.MEMBER)
    shared, personal = heading(app, owner.team_id), heading(app, member.team_id)
    on_a = Browser(cluster.urls[0])
    log_in(on_a, member.email)
    on_b = Browser(cluster.urls[1], cookies=on_a.cookies)

    for switch_on, seen_on, team_id, expected in (
        (on_a, on_b, owner.team_id, shared),
        (on_b, on_a, member.team_id, personal),
        (on_a, on_b, owner.team_id, shared),
    ):
        assert post_from(switch_on, "/team/", "/teams/switch", {"tenant_id": str(team_id)}).status == 302
        assert expected in seen_on.get("/team/").body

    owner_on_b = Browser(cluster.urls[1])
    log_in(owner_on_b, owner.email)
    removed = member_id(admin_engine, owner.team_id, member.user_id)
    removal = f"/team/members/{removed}/remove"
    assert post_from(owner_on_b, removal, removal, {"confirmed": "yes"}).status == 302  # from its confirm page
    page = on_a.get("/team/").body  # the member's next request, on the other server
    assert personal in page and shared not in page and "Opal Owner" not in page
    assert on_a.get("/notes/").status == 200

    # Logged out through A, the same cookie replayed to B signs in no one.
    cookie = next(c for c in on_a.cookies if c.name == "session")
    stale = f"session={cookie.value}"
    assert post_from(on_a, "/team/", "/auth/logout", {}).status == 302
    replayed = Browser(cluster.urls[1]).get("/team/", headers={"Cookie": stale})
    assert replayed.status == 302 and "/auth/login" in replayed.headers["Location"]
