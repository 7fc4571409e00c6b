"""Faults survived with nothing lost: a worker killed mid-delivery, Redis restarted while invitations
are made, PostgreSQL restarted under load, the SMTP server down for a while.

NyxCore runs as in production (gunicorn from gunicorn.conf.py, a Celery worker and beat, as
tests/deployment/cluster.py starts them) on a PostgreSQL cluster, a Redis server and an SMTP server
of this module's own (tests/deployment/own_services.py), so stopping them disturbs no other test. Beat sweeps the outbox every
SWEEP_SECONDS for mail unsent after SWEEP_AGE_SECONDS: that, not a retry by the web process, is
what brings back mail a fault held up. Each test leaves every service running as it found it.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.deployment.own_services import (
    Load,
    Outcome,
    OwnServices,
    Stack,
    form_token,
    own_services,
    running_stack,
    timed_request,
)
from tests.helpers import count, scalar
from tests.live import wait_until

SWEEP_SECONDS = 1
SWEEP_AGE_SECONDS = 4
DELIVERY_TIMEOUT = 40.0


# Session-scoped, and the file is one xdist group ("faults", tests/conftest.py SHARED_SERVER_GROUPS,
# which `_suffix_group` makes --dist loadgroup honour): one worker starts the cluster once and runs
# these tests in turn, whatever else it runs in between.
@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnServices]:
    with own_services(tmp_path_factory.mktemp("faults")) as own:
        yield own


@pytest.fixture(scope="session")
def stack(services: OwnServices, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        services,
        tmp_path_factory.mktemp("faults-stack"),
        OUTBOX_SWEEP_SECONDS=str(SWEEP_SECONDS),
        OUTBOX_SWEEP_AGE_SECONDS=str(SWEEP_AGE_SECONDS),
    ) as running:
        yield running


@pytest.fixture
def healthy_stack(stack: Stack, services: OwnServices) -> Iterator[Stack]:
    """The stack, checked alive before and after the test, with the SMTP server answering again."""
    stack.check_alive()
    yield stack
    stack.close_browsers()
    services.mail.release()
    services.mail.start()
    stack.check_alive()


def addresses(how_many: int, tag: str) -> list[str]:
    run = uuid.uuid4().hex[:6]
    return [f"{tag}{n}-{run}@example.com" for n in range(how_many)]


def invite(stack: Stack, browser: object, token: str, emails: list[str]) -> Outcome:
    return timed_request(
        browser,  # type: ignore[arg-type]
        "POST",
        "/team/invitations",
        {"csrf_token": token, "emails": "\n".join(emails), "role": "member"},
    )


def deliveries(services: OwnServices, emails: list[str]) -> collections.Counter[str]:
    """How many messages the SMTP server accepted for each of `emails`."""
    wanted = set(emails)
    return services.mail.deliveries(wanted.__contains__)


def wait_delivered(
    services: OwnServices, stack: Stack, emails: list[str], timeout: float = DELIVERY_TIMEOUT
) -> float:
    """Wait until every address got its mail; returns how long that took."""
    started = time.monotonic()
    while len(deliveries(services, emails)) < len(emails):
        stack.check_alive()
        if time.monotonic() - started > timeout:
            missing = set(emails) - set(deliveries(services, emails))
            raise AssertionError(
                f"{len(missing)} of {len(emails)} never delivered:\n{stack.worker.log_tail()}"
            )
        time.sleep(0.1)
    return time.monotonic() - started


def assert_sent_once(services: OwnServices, emails: list[str]) -> None:
    """Every address got exactly one message, and its outbox row says sent (none given up on)."""
    time.sleep(SWEEP_SECONDS + 1)  # a duplicate would come from the next sweep: give it the time
    got = deliveries(services, emails)
    assert {email: got[email] for email in emails if got[email] != 1} == {}
    with services.admin_engine().connect() as conn:
        unsent = count(
            conn,
            "SELECT count(*) FROM outbox_emails WHERE to_address = ANY(:a) AND sent_at IS NULL",
            a=emails,
        )
    assert unsent == 0


def assert_clean_failures(outcomes: list[Outcome], allowed: tuple[int, ...] = ()) -> None:
    """No 5xx (except `allowed`, whose page must be the clean one), no dropped connection, no traceback."""
    for outcome in outcomes:
        assert outcome.status != 0, f"no answer: {outcome.body[:200]!r}"
        assert b"Traceback" not in outcome.body
        if outcome.status >= 500:
            assert outcome.status in allowed, (outcome.status, outcome.body[:300])
            assert b"Briefly unavailable" in outcome.body, outcome.body[:300]


# ---------------------------------------------------------------------------------------------------


def test_a_worker_killed_mid_delivery_is_replaced_and_the_mail_arrives_at_most_twice(
    healthy_stack: Stack, services: OwnServices
) -> None:
    stack, mail = healthy_stack, services.mail
    browser = stack.browser(stack.accounts[0])
    (email,) = addresses(1, "killed")
    seen = mail.handler.data_received
    mail.hold()  # the SMTP server takes the message and does not answer its DATA yet
    assert invite(stack, browser, form_token(browser), [email]).status == 200
    mail.wait_for_data(seen + 1, timeout=20)

    stack.kill_worker()  # mid-delivery: the row's claim is rolled back, the task never acknowledged
    mail.release()  # the server had the whole message: it may keep it although nobody heard "250"
    killed_at = time.monotonic()
    stack.start_worker()

    wait_delivered(services, stack, [email])  # the released message may be the one that arrived

    def marked_sent() -> bool:  # the killed worker never heard "250": the sweep's new attempt marks it
        with services.admin_engine().connect() as conn:
            sent = "SELECT count(*) FROM outbox_emails WHERE to_address = :a AND sent_at IS NOT NULL"
            return count(conn, sent, a=email) == 1

    wait_until(marked_sent, "the outbox row marked sent", timeout=DELIVERY_TIMEOUT, log=stack.worker.log_tail)
    redelivered_after = time.monotonic() - killed_at
    time.sleep(SWEEP_SECONDS + 1)
    copies = deliveries(services, [email])[email]
    assert 1 <= copies <= 2, copies  # the README's promise: at most one duplicate
    print(f"\nkilled worker: delivered {redelivered_after:.1f} s after the kill, {copies} copies")


def test_redis_restarted_while_100_invitations_are_made_loses_none_and_sends_each_once(
    healthy_stack: Stack, services: OwnServices
) -> None:
    stack = healthy_stack
    emails = addresses(100, "redis")
    pending = collections.deque(emails)
    lock = threading.Lock()
    browsers = [stack.browser(account) for account in stack.accounts]
    tokens = [form_token(browser) for browser in browsers]
    anonymous = stack.browser()
    login_token = form_token(anonymous, "/auth/login")
    made: list[Outcome] = []
    limited: list[Outcome] = []

    def make_invitations(index: int) -> None:
        while True:
            with lock:
                if not pending:
                    return
                email = pending.popleft()
            made.append(invite(stack, browsers[index], tokens[index], [email]))
            time.sleep(0.02)

    def rate_limited_pages() -> None:  # log in (rate limited per client) keeps answering
        while pending:
            limited.append(
                timed_request(
                    anonymous,
                    "POST",
                    "/auth/login",
                    {"csrf_token": login_token, "email": "x@example.com", "password": "wrong"},
                )
            )
            time.sleep(0.05)

    threads = [threading.Thread(target=make_invitations, args=(i,)) for i in range(len(browsers))]
    threads.append(threading.Thread(target=rate_limited_pages))
    for thread in threads:
        thread.start()
    while len(made) < 20:
        time.sleep(0.02)
    seen = services.mail.handler.data_received
    services.mail.hold()  # a delivery in flight when Redis goes (kombu 5.7's worker died of that)
    services.mail.wait_for_data(seen + 1, timeout=20)
    services.redis.restart(down_for=2.0)  # queued tasks and rate-limit counters are lost with it
    services.mail.release()
    restarted_at = time.monotonic()
    for thread in threads:
        thread.join(timeout=120)

    assert_clean_failures(made + limited)
    assert [o.status for o in made] == [200] * 100
    assert {o.status for o in limited} <= {200, 400, 429}, collections.Counter(o.status for o in limited)
    with services.admin_engine().connect() as conn:
        assert count(conn, "SELECT count(*) FROM invitations WHERE email = ANY(:a)", a=emails) == 100
    last_made = max(o.ended for o in made)
    wait_delivered(services, stack, emails)
    print(
        f"\nredis restart: all 100 delivered {time.monotonic() - restarted_at:.1f} s after Redis returned, "
        f"{time.monotonic() - last_made:.1f} s after the last invitation was made"
    )
    assert_sent_once(services, emails)


def test_postgres_restarted_under_load_fails_only_requests_in_flight_then_recovers_within_5_s(
    healthy_stack: Stack, services: OwnServices
) -> None:
    stack = healthy_stack
    browsers = [stack.browser(account) for account in stack.accounts * 2]  # one per thread
    tokens = [form_token(browser) for browser in browsers]

    def step(index: int) -> Outcome:
        if index % 2:
            return timed_request(browsers[index], "GET", "/team/")
        form = {"csrf_token": tokens[index], "title": "Under load", "body": "while restarting"}
        return timed_request(browsers[index], "POST", "/notes/new", form)

    load = Load()
    load.run(step, len(browsers))
    time.sleep(1.5)
    restart_started = time.monotonic()
    services.postgres.restart()
    back_at = time.monotonic()  # pg_ctl -w returned: the server accepts connections
    time.sleep(6.0)
    outcomes = load.stop()

    assert_clean_failures(outcomes, allowed=(503,))
    failures = [o for o in outcomes if o.status >= 500]
    assert failures, "the restart went unnoticed: the test did not test anything"
    before = [o for o in outcomes if o.ended < restart_started]
    assert before and all(o.status < 500 for o in before)
    recovery = max(o.ended for o in failures) - back_at
    after = [o for o in outcomes if o.started > back_at + max(recovery, 0)]
    assert len(after) > 20 and all(o.status < 500 for o in after)
    assert recovery < 5.0, f"full service only {recovery:.2f} s after PostgreSQL was back"
    print(
        f"\npostgres restart: down {back_at - restart_started:.2f} s, {len(failures)} of {len(outcomes)} "
        f"requests answered 503, full service {max(recovery, 0):.2f} s after it was back"
    )
    # The worker and beat were not restarted either: mail made now is delivered.
    emails = addresses(1, "after-pg")
    assert invite(stack, browsers[0], tokens[0], emails).status == 200
    wait_delivered(services, stack, emails)


def test_smtp_server_down_delays_mail_and_delivers_each_once_when_it_returns(
    healthy_stack: Stack, services: OwnServices
) -> None:
    stack, mail = healthy_stack, services.mail
    browser = stack.browser(stack.accounts[1])
    emails = addresses(10, "smtp")
    mail.stop()
    assert invite(stack, browser, form_token(browser), emails).status == 200
    time.sleep(10.0)  # the worker's tries and the sweeps all find the server gone
    with services.admin_engine().connect() as conn:
        tried = count(
            conn,
            "SELECT count(*) FROM outbox_emails WHERE to_address = ANY(:a) AND sent_at IS NULL AND attempts > 0",
            a=emails,
        )
    assert tried == len(emails)
    assert deliveries(services, emails) == {}
    with services.admin_engine().connect() as conn:  # the backoff (jittered, doubling) the tries left scheduled
        waits = scalar(
            conn,
            "SELECT coalesce(extract(epoch FROM max(retry_at) - now()), 0) FROM outbox_emails WHERE to_address = ANY(:a)",
            a=emails,
        )
    mail.start()
    back_at = time.monotonic()
    # A retry the outage pushed past its end is kept, not hurried: give the latest one its time too.
    wait_delivered(services, stack, emails, timeout=DELIVERY_TIMEOUT + max(float(waits), 0.0))
    print(f"\nsmtp outage (10 s): all delivered {time.monotonic() - back_at:.1f} s after it returned")
    assert_sent_once(services, emails)
