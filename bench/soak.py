"""Soak: mixed traffic for a long while on a production-like stack; no 5xx, no memory creeping up.

    .venv/bin/python -m bench.soak                       # 10 minutes at 16 connections
    .venv/bin/python -m bench.soak --minutes 1           # a quick look
    .venv/bin/python -m bench.soak --smtp-outage 120     # the SMTP server down for two minutes meanwhile

NyxCore runs as in production (gunicorn from gunicorn.conf.py with 2 workers x 4 threads, a Celery
worker with 2 processes, beat) on a PostgreSQL cluster, Redis and SMTP server of its own, as the fault
tests start them (tests/deployment/own_services.py). Each connection is a client of its own (its own
address in X-Forwarded-For, its own account and team) that loops over: the team page, the notes list,
writing a note, the invitations page, inviting an address, and signing up a new account (a new client
each time). Every status is counted; the RSS of the Celery worker's processes and of the gunicorn
workers is sampled every few seconds. At the end the outbox must be empty (every mail sent exactly
once, counted at the SMTP server).

With --smtp-outage N the SMTP server stops N seconds after the first minute and comes back; the
outbox sweep and retries run at their production defaults (OUTBOX_SWEEP_SECONDS=60), and the run
waits for the mail held up to arrive. Results go to bench/RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench._common import child_pids, machine_description
from tests.conftest import PASSWORD
from tests.deployment.own_services import Stack, form_token, own_services, running_stack
from tests.helpers import count

# (weight, action): what one connection does next.
ACTIONS = (
    (30, "team_page"),
    (15, "notes_list"),
    (20, "write_note"),
    (10, "invitations_page"),
    (15, "invite"),
    (10, "sign_up"),
)
SAMPLE_SECONDS = 5.0


class Client:
    """One connection: a logged-in browser and its form token."""

    def __init__(self, stack: Stack, index: int) -> None:
        self.stack = stack
        self.browser = stack.browser(stack.accounts[index])
        self.token = form_token(self.browser)
        self.random = random.Random(index)

    def step(self, invited: list[str]) -> int:
        action = self.random.choices([a for _, a in ACTIONS], weights=[w for w, _ in ACTIONS])[0]
        browser = self.browser
        # A connection per request, as nginx opens to gunicorn (no keep-alive races to count as errors).
        browser.close()
        return self.act(action, invited)

    def act(self, action: str, invited: list[str]) -> int:
        browser = self.browser
        if action == "team_page":
            return browser.request("GET", "/team/")[0]
        if action == "notes_list":
            return browser.request("GET", "/notes/")[0]
        if action == "write_note":
            form = {"csrf_token": self.token, "title": f"Soak {uuid.uuid4().hex[:6]}", "body": "x" * 200}
            return browser.request("POST", "/notes/new", form)[0]
        if action == "invitations_page":
            return browser.request("GET", "/team/invitations")[0]
        if action == "invite":
            email = f"soak-{uuid.uuid4().hex[:10]}@example.com"
            form = {"csrf_token": self.token, "emails": email, "role": "member"}
            status = browser.request("POST", "/team/invitations", form)[0]
            if status == 200:
                invited.append(email)
            return status
        return self.sign_up(invited)

    def sign_up(self, invited: list[str]) -> int:
        newcomer = self.stack.browser()  # a new visitor, from an address of its own
        try:
            token = form_token(newcomer, "/auth/signup")
            email = f"newcomer-{uuid.uuid4().hex[:10]}@example.com"
            form = {"csrf_token": token, "name": "New Comer", "email": email, "password": PASSWORD}
            status = newcomer.request("POST", "/auth/signup", form)[0]
            if status == 303:
                invited.append(email)  # sign-up mails a verification link
            return status
        finally:
            newcomer.close()
            self.stack.browsers.remove(newcomer)


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return total


def memory_sample(stack: Stack) -> tuple[int, int]:
    """RSS (KiB) of the Celery worker (main process and pool) and of the gunicorn workers."""
    worker = [stack.worker.popen.pid, *child_pids(stack.worker.popen.pid)]
    return rss_kib(worker), rss_kib(child_pids(stack.web.popen.pid))


def drive(stack: Stack, connections: int, seconds: float, on_minute: Any = None) -> dict[str, Any]:
    """Run the traffic for `seconds`; returns statuses, the memory samples and the addresses mailed."""
    clients = [Client(stack, index) for index in range(connections)]
    statuses: collections.Counter[int] = collections.Counter()
    failures: collections.Counter[str] = collections.Counter()
    invited: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def loop(client: Client) -> None:
        while not stop.is_set():
            try:
                status = client.step(invited)
            except Exception as error:  # no answer at all: counted as status 0
                client.browser.close()
                status = 0
                with lock:
                    failures[repr(error)[:120]] += 1
            with lock:
                statuses[status] += 1

    threads = [threading.Thread(target=loop, args=(client,), daemon=True) for client in clients]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    samples: list[tuple[float, int, int]] = []
    minute_done = False
    while (elapsed := time.monotonic() - started) < seconds:
        samples.append((elapsed, *memory_sample(stack)))
        if on_minute is not None and not minute_done and elapsed >= 60:
            minute_done = True
            on_minute()
        stack.check_alive()
        time.sleep(SAMPLE_SECONDS)
    stop.set()
    for thread in threads:
        thread.join(timeout=120)
    samples.append((time.monotonic() - started, *memory_sample(stack)))
    return {
        "statuses": statuses,
        "failures": failures,
        "samples": samples,
        "invited": invited,
        "seconds": time.monotonic() - started,
    }


def wait_for_mail(
    stack: Stack, addresses: list[str], timeout: float
) -> tuple[float, collections.Counter[str]]:
    """Wait until every address got mail; returns the wait and the count per address."""
    wanted = set(addresses)
    started = time.monotonic()
    while True:
        got = stack.services.mail.deliveries(wanted.__contains__)
        if len(got) == len(wanted) or time.monotonic() - started > timeout:
            return time.monotonic() - started, got
        time.sleep(1.0)


def growth(samples: list[tuple[float, int, int]], column: int) -> tuple[int, int, float]:
    """RSS at the first sample past one minute, at the end, and the growth in per cent."""
    after_minute = next((s for s in samples if s[0] >= 60), samples[0])
    first, last = after_minute[column], samples[-1][column]
    return first, last, 100.0 * (last - first) / first if first else 0.0


def report(
    result: dict[str, Any], mail: tuple[float, collections.Counter[str]], stack: Stack, args: Any
) -> bool:
    statuses: collections.Counter[int] = result["statuses"]
    total = sum(statuses.values())
    errors = sum(n for status, n in statuses.items() if status >= 500 or status == 0)
    waited, got = mail
    invited = result["invited"]
    duplicates = sum(1 for n in got.values() if n > 1)
    with stack.services.admin_engine().connect() as conn:
        unsent = count(conn, "SELECT count(*) FROM outbox_emails WHERE sent_at IS NULL")
        given_up = count(conn, "SELECT count(*) FROM outbox_emails WHERE sent_at IS NULL AND attempts >= 12")
        most_attempts = count(conn, "SELECT coalesce(max(attempts), 0) FROM outbox_emails")
    worker = growth(result["samples"], 1)
    web = growth(result["samples"], 2)
    print(f"machine: {machine_description()}; load average at the end {os.getloadavg()}")
    print(
        f"{args.connections} connections, {result['seconds']:.0f} s: {total} requests ({total / result['seconds']:.1f}/s)"
    )
    print(f"statuses: {dict(sorted(statuses.items()))}; 5xx or no answer: {errors}")
    if result["failures"]:
        print(f"no answer: {dict(result['failures'])}")
    print(
        f"mail: {len(invited)} addresses mailed, {len(got)} received (waited {waited:.1f} s after the traffic), "
        f"{duplicates} duplicates, outbox unsent {unsent} (given up {given_up}; most attempts {most_attempts})"
    )
    print(
        f"celery worker RSS: {worker[0] / 1024:.1f} MiB after 1 min -> {worker[1] / 1024:.1f} MiB ({worker[2]:+.1f}%)"
    )
    print(
        f"gunicorn workers RSS: {web[0] / 1024:.1f} MiB after 1 min -> {web[1] / 1024:.1f} MiB ({web[2]:+.1f}%)"
    )
    # During an SMTP outage the worker holds the retries it scheduled (ETA tasks) in memory, hundreds of
    # them: its RSS then measures the backlog, not a leak, and is only reported.
    memory_ok = worker[2] < 10.0 or args.smtp_outage > 0
    return errors == 0 and len(got) == len(invited) and duplicates == 0 and unsent == 0 and memory_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--smtp-outage", type=float, default=0.0, help="seconds the SMTP server is down")
    args = parser.parse_args(argv)
    seconds = args.minutes * 60
    log_dir = Path(tempfile.mkdtemp(prefix="nyxcore-soak-"))
    print(f"logs in {log_dir}")
    with (
        own_services(log_dir) as services,
        running_stack(services, log_dir, accounts=args.connections) as stack,
    ):
        outage: dict[str, float] = {}

        def smtp_down_then_up() -> None:
            services.mail.stop()
            outage["stopped"] = time.monotonic()

            def back() -> None:
                services.mail.start()
                outage["back"] = time.monotonic()

            threading.Timer(args.smtp_outage, back).start()

        result = drive(stack, args.connections, seconds, smtp_down_then_up if args.smtp_outage else None)
        while args.smtp_outage and "back" not in outage:
            time.sleep(1)
        mail = wait_for_mail(stack, result["invited"], timeout=600 if args.smtp_outage else 120)
        if outage:
            print(f"SMTP server down {outage['back'] - outage['stopped']:.0f} s (from minute 1)")
        time.sleep(5)  # a duplicate would follow within a sweep's time: count again
        mail = (mail[0], wait_for_mail(stack, result["invited"], timeout=0)[1])
        ok = report(result, mail, stack, args)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
