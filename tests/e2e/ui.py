"""A person at a browser, and the steps they take in NyxCore's UI.

Steps use what a person sees: labels, button names, headings (Playwright's role and label
locators), never the markup's ids, except where a test needs to name one row of a table.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Error, Locator, Page, expect

from tests.conftest import PASSWORD
from tests.e2e.live_app import LiveApp

# axe-core impacts that fail a test; "moderate" and "minor" are reported in the JSON only.
FAILING_IMPACTS = ("serious", "critical")
_axe = Axe()
TEAM_PAGE = re.compile(r"/team/$")


@dataclass
class Person:
    name: str
    context: BrowserContext
    page: Page
    live: LiveApp
    artifacts: Path
    console_errors: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, name: str, browser: Browser, live: LiveApp, artifacts: Path, **options: Any) -> Person:
        """A new browser context; `options` for Playwright's new_context (a phone's viewport, say)."""
        context = browser.new_context(**{"base_url": live.url, "viewport": {"width": 1280, "height": 900}, **options})
        context.set_default_timeout(10_000)
        person = cls(name, context, context.new_page(), live, artifacts)
        person.page.on("console", person._on_console)
        person.page.on("pageerror", lambda exc: person.console_errors.append(f"page error: {exc}"))
        return person

    def _on_console(self, message: ConsoleMessage) -> None:
        # An error status is the app's answer, checked by the tests; anything else (a CSP refusal,
        # a script error) is a fault of the page.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.console_errors.append(f"{message.text} ({self.page.url})")

    def close(self) -> None:
        self.context.close()

    # --- looking ---------------------------------------------------------------------------------

    def goto(self, path: str, status: int = 200) -> None:
        response = self.page.goto(path)
        assert response is not None
        assert response.status == status, f"GET {path} answered {response.status}, not {status}"

    def screenshot(self, name: str) -> None:
        try:
            self.page.screenshot(path=self.artifacts / f"{name}.png", full_page=True)
        except Error as exc:  # a closed or crashed page must not hide the test's own failure
            (self.artifacts / f"{name}.txt").write_text(f"no screenshot: {exc}\n")

    def accessibility_problems(self, name: str) -> list[str]:
        """Run axe-core on the page; save its violations as JSON and return the serious/critical ones."""
        violations: list[dict[str, Any]] = _axe.run(self.page).response["violations"]
        (self.artifacts / f"{name}-axe.json").write_text(json.dumps(violations, indent=2))
        return [
            f"{name} ({self.page.url}): {v['id']} ({v['impact']}) {v['help']}: "
            + "; ".join(node["html"] for node in v["nodes"][:5])
            for v in violations
            if v["impact"] in FAILING_IMPACTS
        ]

    def check_page(self, name: str) -> list[str]:
        """Screenshot the page for the record and return what axe-core finds serious on it."""
        self.screenshot(name)
        return self.accessibility_problems(name)

    def assert_no_console_errors(self) -> None:
        assert self.console_errors == [], self.console_errors

    def heading(self) -> Locator:
        return self.page.get_by_role("heading", level=1)

    def flash(self) -> Locator:
        return self.page.get_by_role("status")

    def csrf_token(self) -> str:
        """The CSRF token of the first form on the page (every page with a form has one)."""
        return self.page.locator("input[name=csrf_token]").first.input_value()

    def member_row(self, name: str) -> Locator:
        members = self.page.get_by_role("table", name=re.compile(r"^Members of "))
        return members.get_by_role("row").filter(has=self.page.get_by_role("cell", name=name, exact=False))

    # --- the keyboard ----------------------------------------------------------------------------

    def tab_to(self, target: Locator, *, limit: int = 60) -> None:
        """Press Tab until `target` has the focus, as someone without a mouse does."""
        for _ in range(limit):
            self.page.keyboard.press("Tab")
            if target.evaluate("element => element === document.activeElement"):
                return
        raise AssertionError(f"{target} never got the focus in {limit} presses of Tab")

    # --- accounts --------------------------------------------------------------------------------

    def fill_account_form(self, *, name: str | None, email: str | None, password: str) -> None:
        if name is not None:
            self.page.get_by_label("Name", exact=True).fill(name)
        if email is not None:
            self.page.get_by_label("Email", exact=True).fill(email)
        self.page.get_by_label("Password", exact=True).fill(password)

    def sign_up(self, name: str, email: str, password: str = PASSWORD) -> None:
        """Create an account from the sign-up page and open the link mailed to finish it; lands on
        the new personal team's page, signed in."""
        self.goto("/auth/signup")
        received = len(self.live.mail.messages)  # earlier tests may have mailed this address too
        self.fill_account_form(name=name, email=email, password=password)
        self.page.get_by_role("button", name="Sign up").click()
        expect(self.page).to_have_url(re.compile(r"/auth/check-inbox$"))
        expect(self.page.get_by_role("status")).to_have_text(f"We sent a link to {email} to finish signing up.")
        self.page.goto(self.live.link_to(email, "/auth/verify/", after=received))
        self.page.get_by_role("button", name="Confirm my address").click()
        expect(self.page).to_have_url(TEAM_PAGE)
        expect(self.flash()).to_contain_text(f"Welcome, {name}.")

    def log_in(self, email: str, password: str = PASSWORD) -> None:
        self.goto("/auth/login")
        self.fill_account_form(name=None, email=email, password=password)
        self.page.get_by_role("button", name="Log in").click()
        expect(self.page).to_have_url(TEAM_PAGE)

    def open_menu(self) -> None:
        """Open the top bar's menu (team switcher, your teams, new team, account, log out) if it is closed."""
        menu = self.page.locator("header details.menu")
        if menu.get_attribute("open") is None:
            menu.locator("summary").click()
        expect(menu).to_have_attribute("open", "")

    def log_out(self) -> None:
        self.open_menu()
        self.page.get_by_role("button", name="Log out", exact=True).click()
        expect(self.flash()).to_contain_text("You are logged out.")

    # --- teams -----------------------------------------------------------------------------------

    def create_team(self, team: str) -> None:
        self.open_menu()
        self.page.get_by_role("link", name="New team").click()
        self.page.get_by_label("Team name").fill(team)
        self.page.get_by_role("button", name="Create team").click()
        expect(self.heading()).to_have_text(team)
        expect(self.flash()).to_contain_text(f"Team {team} created. You are its owner.")

    def switch_team(self, label: str) -> None:
        """Choose a team in the switcher of the top bar's menu (option text: "<team> (<role>)")."""
        self.open_menu()
        self.page.get_by_role("combobox", name="Team", exact=True).select_option(label=label)
        self.page.get_by_role("button", name="Switch", exact=True).click()

    def invite(self, emails: str, role: str) -> None:
        """Invite from the invitations page with the mouse; checks every address was invited."""
        self.goto("/team/invitations")
        self.page.get_by_label("Email addresses").fill(emails)
        self.page.get_by_label("Role", exact=True).select_option(label=role)
        self.page.get_by_role("button", name="Send invitations").click()
        count = len([a for a in re.split(r"[\s,]+", emails) if a])
        expect(
            self.page.get_by_text(re.compile(rf"^{count} of {count} address(es)? invited\.$"))
        ).to_be_visible()

    def accept_invitation(self, team: str) -> None:
        """On an invitation page, signed in as the invitee: accept, and land on the team's page."""
        self.page.get_by_role("button", name=f"Accept and join {team}").click()
        expect(self.page).to_have_url(TEAM_PAGE)
        expect(self.heading()).to_have_text(team)
