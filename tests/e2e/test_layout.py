"""The layout in Chromium: every main page at desktop (1280x800) and phone (390x844) width, and dark.

Each page is screenshotted to <run>/layout/<width>-<page>.png (desktop-team.png, phone-note-long.png,
dark-audit.png, ...); the folder is printed in the run's summary. At 390 px no page scrolls sideways
(the failure names the widest element), the header stays one row, and the main navigation's and the
table rows' controls are at least 44 px each way. Dark mode passes axe-core as the light pages do.

One browser context per width; the team is seeded through the in-process app (members, a pending
invitation, notes, one titled with the longest word the form takes, wardrobe items, a join link, a
domain, a second team, and a team where the owner is only a viewer), and its owner logs in once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from nyxcore.roles import TenantRole
from tests.conftest import Account, TeamFixture
from tests.e2e.ui import Person

pytestmark = pytest.mark.e2e

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
HEADER_MAX_PX = 72  # one row of 44 px targets and its padding; it was 175 px in three rows
TARGET_PX = 44
# A word with no place to break: as long as each field takes (a note's title 200, a name 120).
WORD = "Pneumonoultramicroscopicsilicovolcanoconiosis" * 7
SIGNED_OUT = [("login", "/auth/login"), ("signup", "/auth/signup"), ("forgot", "/auth/forgot")]
NO_SUCH_NOTE = "/notes/00000000-0000-0000-0000-000000000000"

# What makes a page scroll sideways: of the elements whose box or content (a word that does not
# wrap overflows its box) reaches past the window, the deepest, and of those the one reaching furthest.
OVERFLOW = """() => {
  const root = document.documentElement;
  if (root.scrollWidth <= root.clientWidth) return null;
  const reach = el => {  // content spills out of a box only where its overflow is visible
    const box = el.getBoundingClientRect();
    return box.left + (getComputedStyle(el).overflowX === 'visible' ? Math.max(box.width, el.scrollWidth) : box.width);
  };
  const depth = el => { let n = 0; for (let e = el; e; e = e.parentElement) n++; return n; };
  const past = [...document.body.querySelectorAll('*')]
    .filter(el => el.getClientRects().length > 0 && reach(el) > root.clientWidth + 1)
    .map(el => [depth(el), reach(el), el])
    .sort((a, b) => b[0] - a[0] || b[1] - a[1]);
  if (!past.length) return `${root.scrollWidth} px wide in ${root.clientWidth}`;
  const [, right, widest] = past[0];
  const name = widest.tagName.toLowerCase() + (widest.id ? '#' + widest.id : '')
    + (typeof widest.className === 'string' && widest.className.trim() ? '.' + widest.className.trim().split(/\\s+/).join('.') : '');
  return `${root.scrollWidth} px wide in ${root.clientWidth}: widest ${name} (reaching ${Math.round(right)} px) `
    + JSON.stringify((widest.textContent || '').trim().slice(0, 60));
}"""
# Controls smaller than `min` px either way among `selector`'s matches that are shown.
SMALL_TARGETS = """([selector, min]) => [...document.querySelectorAll(selector)]
  .filter(el => el.getClientRects().length > 0)
  .map(el => [el, el.getBoundingClientRect()])
  .filter(([el, box]) => box.width < min || box.height < min)
  .map(([el, box]) => `${el.tagName.toLowerCase()} "${(el.innerText || el.value || '').trim().slice(0, 40)}" ${Math.round(box.width)}x${Math.round(box.height)}`)"""
ROW_ACTIONS = "main td button, main td a.button, main td select, main td input:not([type=hidden])"
MENU_TARGETS = "header details.menu > summary, header .menu-panel a, header .menu-panel button, header .menu-panel select"


@dataclass
class SeededTeam:
    owner: Account
    pages: list[tuple[str, str]] = field(default_factory=list)  # (name, path), each answering 200


@pytest.fixture
def seeded_team(team: TeamFixture, login_as: Any, make_user: Any, add_member: Any) -> SeededTeam:
    """Olive's team with content on every page, made through the in-process app's own forms."""
    owner = team.accounts[TenantRole.OWNER]
    client = login_as(owner, team.id)

    def post(path: str, form: dict[str, str]) -> str:
        response = client.post_form(path, form)
        assert response.status_code in (200, 302), (path, response.status_code, response.get_data(as_text=True)[:500])
        return str(response.headers.get("Location", ""))

    note = post("/notes/new", {"title": "Runbook", "body": "Restart the worker first.\nThen the web processes."})
    long_note = post("/notes/new", {"title": WORD[:200], "body": f"Before it: {WORD}. After it."})
    post("/wardrobe/new", {"name": "Raincoat", "category": "Outerwear", "size": "M", "notes": "Yellow, by the door."})
    post("/wardrobe/new", {"name": WORD[:120], "category": WORD[:60], "size": "XL", "notes": WORD})
    post("/team/invitations", {"emails": "grace@example.com", "role": "member"})
    post("/team/join-links", {"role": "member", "days": "7", "max_uses": "5", "domains": ""})
    post("/team/domains", {"domain": "acme.example.com"})
    long_named = make_user(name=WORD[:120], email=f"{'x' * 60}@{'y' * 60}.example.com")
    add_member(team.id, long_named, TenantRole.MEMBER)
    add_member(team.accounts[TenantRole.ADMIN].team_id, owner, TenantRole.VIEWER)  # Admin's team
    post("/teams/new", {"name": WORD[:80]})  # a second team of hers, with a name that does not wrap
    post("/teams/switch", {"tenant_id": str(team.id)})  # back in Olive's team, where her next log in lands
    pages = [
        ("team", "/team/"),
        ("invitations", "/team/invitations"),
        ("join-links", "/team/join-links"),
        ("domains", "/team/domains"),
        ("join-requests", "/team/join-requests"),
        ("settings", "/team/settings"),
        ("seats", "/team/settings/seats"),
        ("audit", "/team/audit"),
        ("notebook", "/notes/"),
        ("note", note),
        ("note-long", long_note),
        ("note-form", "/notes/new"),
        ("note-edit", f"{long_note}/edit"),
        ("wardrobe", "/wardrobe/"),
        ("wardrobe-form", "/wardrobe/new"),
        ("github", "/github/"),
        ("account", "/account"),
        ("account-email", "/account/email"),
        ("two-factor", "/account/two-factor"),
        ("two-factor-setup", "/account/two-factor/setup"),
        ("your-teams", "/teams/"),
        ("new-team", "/teams/new"),
    ]
    return SeededTeam(owner, pages)


@pytest.fixture
def layout_dir(artifacts: Path, record_property: Callable[[str, object], None]) -> Path:
    folder = artifacts / "layout"
    folder.mkdir(exist_ok=True)
    record_property("figures", {"screenshots": str(folder)})  # printed in the run's summary
    print(f"layout screenshots: {folder}")
    return folder


def shoot(someone: Person, width: str, page: str) -> str | None:
    """Screenshot the page as layout/<width>-<page>.png; at phone width, what makes it scroll sideways."""
    someone.screenshot(f"layout/{width}-{page}")
    return someone.page.evaluate(OVERFLOW)


def small_targets(someone: Person, selector: str) -> list[str]:
    found: list[str] = someone.page.evaluate(SMALL_TARGETS, [selector, TARGET_PX])
    return found


def header_height(someone: Person) -> float:
    box = someone.page.locator("header.topbar").bounding_box()
    assert box is not None
    return float(box["height"])


def tour(someone: Person, width: str, seeded: SeededTeam) -> list[str]:
    """Every main page as the owner, then the 404 and 403 pages; what is wrong with each at this width."""
    problems: list[str] = []
    phone = width == "phone"

    def check(page: str) -> None:
        overflow = shoot(someone, width, page)
        if phone:
            if overflow:
                problems.append(f"{page} ({someone.page.url}) scrolls sideways at 390 px: {overflow}")
            if (height := header_height(someone)) > HEADER_MAX_PX:
                problems.append(f"{page}: the header is {height:.0f} px high at 390 px")
            problems.extend(f"{page}: row action {t}" for t in small_targets(someone, ROW_ACTIONS))

    for page, path in seeded.pages:
        someone.goto(path)
        check(page)
    someone.goto(NO_SUCH_NOTE, status=404)
    check("not-found")
    someone.goto("/notes/")
    someone.switch_team("Admin's team (Viewer)")  # from NyxBook: the other team's NyxBook
    expect(someone.page).to_have_url(re.compile(r"/notes/$"))
    expect(someone.flash()).to_contain_text("Switched to Admin's team.")
    someone.goto("/team/settings", status=403)
    check("forbidden")
    someone.switch_team("Olive's team (Owner)")  # from the settings: her own team's settings
    expect(someone.page).to_have_url(re.compile(r"/team/settings$"))
    return problems


def test_every_page_fits_a_phone_and_a_desktop(
    person: Callable[..., Person], seeded_team: SeededTeam, layout_dir: Path
) -> None:
    problems: list[str] = []
    desktop = person("desktop", viewport=DESKTOP)
    phone = person("phone", viewport=PHONE, is_mobile=True, has_touch=True)
    for width, someone in (("desktop", desktop), ("phone", phone)):
        for page, path in SIGNED_OUT:
            someone.goto(path)
            overflow = shoot(someone, width, page)
            if width == "phone" and overflow:
                problems.append(f"{page} scrolls sideways at 390 px: {overflow}")
        someone.log_in(seeded_team.owner.email)
        problems += tour(someone, width, seeded_team)

    # The phone's menu: the main navigation and the team switcher, every control 44 px or more.
    phone.goto("/team/")
    expect(phone.page.get_by_role("navigation", name="Main")).to_be_hidden()
    phone.open_menu()
    shoot(phone, "phone", "menu-open")
    menu_nav = phone.page.get_by_role("navigation", name="Main")
    expect(menu_nav.get_by_role("link", name="NyxBook")).to_be_visible()
    expect(phone.page.get_by_role("combobox", name="Team", exact=True)).to_be_visible()
    problems.extend(f"menu: {t}" for t in small_targets(phone, MENU_TARGETS))
    if overflow := phone.page.evaluate(OVERFLOW):
        problems.append(f"the open menu scrolls sideways at 390 px: {overflow}")
    menu_nav.get_by_role("link", name="Wardrobe").click()
    expect(phone.heading()).to_have_text("Wardrobe")
    # The rows are labelled cards: each value shows its column's name.
    row = phone.page.locator("td", has_text="Raincoat").first
    label = row.evaluate("cell => getComputedStyle(cell, '::before').content")
    assert label == '"Name"', label
    # On a desktop the navigation stays in the bar, the menu holds the rest.
    expect(desktop.page.get_by_role("navigation", name="Main").get_by_role("link", name="NyxBook")).to_be_visible()
    expect(desktop.page.get_by_role("button", name="Log out", exact=True)).to_be_hidden()

    assert problems == [], "\n".join(problems)
    for someone in (desktop, phone):
        someone.assert_no_console_errors()


def test_dark_mode_pages_pass_axe(person: Callable[..., Person], seeded_team: SeededTeam, layout_dir: Path) -> None:
    problems: list[str] = []
    dark = person("dark", viewport=DESKTOP, color_scheme="dark")
    background = "() => getComputedStyle(document.body).backgroundColor"
    for page, path in SIGNED_OUT:
        dark.goto(path)
        problems += dark.check_page(f"layout/dark-{page}")
    assert dark.page.evaluate(background) == "rgb(15, 20, 28)", "the dark scheme's background"
    dark.log_in(seeded_team.owner.email)
    for page, path in seeded_team.pages:
        dark.goto(path)
        problems += dark.check_page(f"layout/dark-{page}")
    dark.goto(NO_SUCH_NOTE, status=404)
    problems += dark.check_page("layout/dark-not-found")
    dark.open_menu()
    problems += dark.check_page("layout/dark-menu-open")
    dark.page.emulate_media(color_scheme="light")
    assert dark.page.evaluate(background) == "rgb(246, 247, 249)", "the light scheme's background"
    assert problems == [], "\n".join(problems)
    dark.assert_no_console_errors()


def test_single_form_pages_focus_their_first_field_and_others_do_not(
    person: Callable[..., Person], seeded_team: SeededTeam
) -> None:
    visitor = person("autofocus")

    def focuses(path: str, label: str) -> None:
        visitor.goto(path)
        expect(visitor.page.get_by_label(label, exact=True)).to_be_focused()

    def focuses_nothing(why: str) -> None:
        # Chromium applies autofocus after the load: the attribute, not the focus, is what can be awaited.
        expect(visitor.page.locator("[autofocus]"), why).to_have_count(0)
        assert visitor.page.evaluate("() => document.activeElement === document.body"), why

    focuses("/auth/login", "Email")
    focuses("/auth/signup", "Name")
    focuses("/auth/forgot", "Email")
    visitor.page.get_by_label("Email").fill("nobody@example.com")
    visitor.page.get_by_role("button", name="Send the link").click()
    expect(visitor.page.get_by_role("status")).to_contain_text("If an account uses nobody@example.com")
    focuses_nothing("once the link is sent, the page's news comes first, not the form to ask again")
    visitor.log_in(seeded_team.owner.email)
    focuses_nothing("the team page must not jump past its content to the search field")
    focuses("/teams/new", "Team name")
    visitor.goto("/notes/new")
    focuses_nothing("a note's form is not the page's only purpose (its links, the menu)")


def test_the_favicon_is_linked_and_answers(person: Callable[..., Person]) -> None:
    visitor = person("favicon")
    visitor.goto("/auth/login")
    icon = visitor.page.locator("link[rel=icon]").get_attribute("href")
    assert icon == "/static/favicon.svg"
    for path in (icon, "/favicon.ico"):  # browsers ask for /favicon.ico on their own
        response = visitor.page.request.get(path)
        assert response.status == 200, (path, response.status)
        assert response.headers["content-type"].startswith("image/svg+xml"), response.headers
        assert response.url.endswith("/static/favicon.svg")
