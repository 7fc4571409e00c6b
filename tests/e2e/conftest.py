"""Fixtures of the browser tests: the live app, Chromium, and people with browsers of their own.

The live app (gunicorn, a Celery worker, the SMTP server) and Chromium start once for the e2e
package and stop after its last test. Each test starts from empty tables (tests/conftest.py) and
opens fresh browser contexts, one per person. Screenshots, axe reports and the server logs go to
tests/e2e/artifacts/<run>/; a failing test also leaves a screenshot of every page it had open.
Chromium is Debian's (/usr/bin/chromium; `.ci/run` installs it): without it these tests fail, they
never skip.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.conftest import TestDatabase
from tests.e2e.live_app import LiveApp, running_live_app
from tests.e2e.ui import Person
from tests.integration.dnsserver import running_dns_server
from tests.integration.mailserver import running_mail_server

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
KEEP_RUNS = 5
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.failed:
        item.stash[FAILED] = True
    return report


@pytest.fixture(scope="package")
def artifacts() -> Path:
    """This run's folder under tests/e2e/artifacts (git ignores it); older runs beyond a few are pruned."""
    ARTIFACTS.mkdir(exist_ok=True)
    runs = sorted(p for p in ARTIFACTS.iterdir() if p.is_dir() and p.name.startswith("run-"))
    for old in runs[: max(0, len(runs) - (KEEP_RUNS - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    folder = ARTIFACTS / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    folder.mkdir()
    return folder


@pytest.fixture(scope="package")
def live_app(database: TestDatabase, artifacts: Path) -> Iterator[LiveApp]:
    with (
        running_mail_server() as mail,
        running_dns_server() as dns,
        running_live_app(database, mail, dns, log_dir=artifacts) as live,
    ):
        yield live


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)", pytrace=False)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def person(
    request: pytest.FixtureRequest, browser: Browser, live_app: LiveApp, artifacts: Path
) -> Iterator[Callable[..., Person]]:
    """`person("owner")`: someone with a browser context of their own (cookies, one page); keywords
    go to Playwright's new_context (`person("owner-phone", viewport={"width": 390, "height": 844})`)."""
    people: list[Person] = []

    def open_browser(name: str, **options: Any) -> Person:
        people.append(Person.open(name, browser, live_app, artifacts, **options))
        return people[-1]

    yield open_browser
    failed = request.node.stash.get(FAILED, False)
    test = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)
    for someone in people:
        if failed:
            someone.screenshot(f"FAILED-{test}-{someone.name}")
        someone.close()
