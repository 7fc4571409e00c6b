"""The audit log in words (issue 17): sentences, the viewer's zone, filters in the URL, keyset pages,
and NyxBook and Wardrobe changes recorded by title or name, never by body."""

from __future__ import annotations

import html
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from nyxcore.roles import TenantRole
from tests.helpers import rows, scalar, statements_for
from tests.integration.test_notes import create_note

O, A, M, V = TenantRole.OWNER, TenantRole.ADMIN, TenantRole.MEMBER, TenantRole.VIEWER


def text_of(response: Any) -> str:
    """The page as text, runs of white space as one space."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", response.get_data(as_text=True))).split())


def sentences(response: Any) -> list[str]:
    """The "What happened" cells, tags stripped: what a reader sees."""
    cells = re.findall(r"<tr>\s*<td[^>]*><time[^>]*>[^<]*</time></td>\s*<td[^>]*>(.*?)</td>", response.get_data(as_text=True), re.S)
    return [html.unescape(re.sub(r"<[^>]+>", "", cell)).strip() for cell in cells]


def add_event(admin_engine: Any, team_id: uuid.UUID, at: datetime, *, action: str = "domain.added",
              target: str = "example.org", actor_id: uuid.UUID | None = None, actor_name: str | None = None,
              details: dict[str, Any] | None = None) -> uuid.UUID:
    event_id = uuid.uuid4()
    with admin_engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO audit_events (id, tenant_id, actor_id, actor_name, action, target, details, at) "
            "VALUES (%(id)s, %(t)s, %(a)s, %(n)s, %(action)s, %(target)s, %(d)s, %(at)s)",
            {"id": event_id, "t": team_id, "a": actor_id, "n": actor_name, "action": action, "target": target,
             "d": json.dumps(details or {}), "at": at},
        )
    return event_id


def test_note_and_wardrobe_changes_are_recorded_by_title_never_by_body(team, admin_engine, as_member, as_owner):
    note = create_note(as_member, title="Q3 plan", body="secret numbers 4711")
    as_member.post_form(f"/notes/{note}/edit", {"title": "Q4 plan", "body": "more secret numbers 4712"})
    as_member.post_form(f"/notes/{note}/edit", {"title": "Q4 plan", "body": "changed again 4713"})
    assert as_member.confirm(f"/notes/{note}/delete").status_code == 302
    as_member.post_form("/wardrobe/new", {"name": "Rain coat", "category": "", "size": "", "notes": "torn 4714"})
    item = scalar(admin_engine, "SELECT id FROM wardrobe_items WHERE name = 'Rain coat'")
    as_member.post_form(f"/wardrobe/{item}/edit", {"name": "Red coat", "category": "", "size": "", "notes": ""})
    as_member.confirm(f"/wardrobe/{item}/delete")

    stored = rows(admin_engine, "SELECT action, target, CAST(details AS text) AS details FROM audit_events "
                                "WHERE tenant_id = :t AND (action LIKE 'note.%' OR action LIKE 'wardrobe.%')", t=team.id)
    assert sorted(row.action for row in stored) == sorted(
        ["note.created", "note.edited", "note.edited", "note.deleted", "wardrobe.added", "wardrobe.edited", "wardrobe.removed"]
    )
    assert not any("471" in f"{row.target} {row.details}" for row in stored)  # no body, no notes text

    said = sentences(as_owner.get("/team/audit"))
    assert said[:7] == [
        "Member Person removed \u201cRed coat\u201d from the wardrobe.",
        "Member Person renamed the wardrobe item \u201cRain coat\u201d to \u201cRed coat\u201d.",
        "Member Person added \u201cRain coat\u201d to the wardrobe.",
        "Member Person deleted the note \u201cQ4 plan\u201d.",
        "Member Person edited the note \u201cQ4 plan\u201d.",
        "Member Person renamed the note \u201cQ3 plan\u201d to \u201cQ4 plan\u201d.",
        "Member Person wrote the note \u201cQ3 plan\u201d.",
    ]


def test_the_log_speaks_in_sentences_and_escapes_what_people_typed(team, admin_engine, as_owner, as_admin):
    create_note(as_owner, title="<b>bold</b> & <script>x()</script>")
    assert as_admin.post_form("/team/invitations", {"emails": "x@example.com", "role": "viewer"}).status_code == 200
    add_event(admin_engine, team.id, datetime.now(UTC), action="member.role_changed",
              target=team.accounts[V].email, actor_id=team.accounts[O].user_id, details={"old": "member", "new": "admin"})
    add_event(admin_engine, team.id, datetime.now(UTC), action="gadget.frobbed", target="thing-7")
    add_event(admin_engine, team.id, datetime.now(UTC), action="team.settings_changed", details={"name": "not a pair"})

    response = as_owner.get("/team/audit")
    raw = response.get_data(as_text=True)
    assert "<b>bold</b>" not in raw and "<script>x()" not in raw
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;script&gt;" in raw
    said = sentences(response)
    assert "Olive Owner changed Viewer Person's role from member to admin." in said  # a team mate by name
    assert "Admin Person invited x@example.com as a viewer." in said
    # An unknown kind, and a known kind with details of another shape: a sentence, never a bare code.
    unknown = next(s for s in said if "thing-7" in s)
    assert unknown.startswith("NyxCore (automatic) made a change") and unknown != "gadget.frobbed"
    assert any(s.startswith("NyxCore (automatic) made a change") and "team: settings changed" in s for s in said)


def test_filters_by_person_action_and_days_are_kept_in_the_url(team, admin_engine, as_owner):
    owner, admin = team.accounts[O].user_id, team.accounts[A].user_id
    day = datetime(2026, 3, 10, 12, tzinfo=UTC)
    add_event(admin_engine, team.id, day, action="domain.added", target="a.example", actor_id=owner)
    add_event(admin_engine, team.id, day + timedelta(days=1), action="domain.removed", target="b.example", actor_id=owner)
    add_event(admin_engine, team.id, day + timedelta(days=2), action="domain.added", target="c.example", actor_id=admin)

    def shown(query: str) -> list[str]:
        response = as_owner.get(f"/team/audit?{query}")
        assert response.status_code == 200
        return [s.split("the domain ")[1] for s in sentences(response) if "the domain" in s]

    assert shown("") == ["c.example.", "b.example.", "a.example."]
    assert shown(f"person={admin}") == ["c.example."]
    assert shown("kind=domain.added") == ["c.example.", "a.example."]
    assert shown("since=2026-03-11&until=2026-03-11") == ["b.example."]
    assert shown(f"person={owner}&kind=domain.added&since=2026-03-01") == ["a.example."]
    page = as_owner.get(f"/team/audit?person={owner}&kind=domain.added").get_data(as_text=True)
    assert f'<option selected value="{owner}">' in page and "Clear filters" in page


def test_bad_filter_values_are_named_and_never_a_500(team, as_owner):
    cases = {
        "since=yesterday": "Give the first day as a date such as 2026-12-01.",
        "until=2026-13-45": "Give the last day as a date such as 2026-12-31.",
        "person=not-an-id": "Choose a person from the list",
        f"person={uuid.uuid4()}": "Choose a person from the list",
        "kind=member.exploded": "Choose an action from the list.",
        "since=2026-03-02&until=2026-03-01": "The last day is before the first day.",
        "before=nonsense": "That page link is broken.",
        "until=9999-12-31": "Give a day between 1970 and 9998.",  # the next day would overflow
        "since=0001-01-01": "Give a day between 1970 and 9998.",
        "kind=domain.added&before=%00": "Bad request",  # the input guard refuses control characters first
    }
    for query, message in cases.items():
        response = as_owner.get(f"/team/audit?{query}")
        assert response.status_code == 400, query
        assert message in text_of(response), query


def test_pages_follow_the_log_by_keyset_with_the_filter_kept(team, admin_engine, as_owner):
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(120):
        add_event(admin_engine, team.id, start + timedelta(minutes=n), target=f"d{n:03}.example")
    add_event(admin_engine, team.id, start, action="domain.removed", target="other.example")
    seen: list[str] = []
    url = "/team/audit?kind=domain.added"
    while url:
        response = as_owner.get(url)
        assert response.status_code == 200
        seen += [s.split("the domain ")[1].rstrip(".") for s in sentences(response)]
        older = re.search(r'href="([^"]+)" rel="next"', response.get_data(as_text=True))
        url = html.unescape(older.group(1)) if older else ""
        assert not url or "kind=domain.added" in url
    assert seen == [f"d{n:03}.example" for n in reversed(range(120))]  # each once, newest first


def test_times_are_shown_in_the_account_zone_else_the_browser_zone_else_utc(team, admin_engine, as_owner):
    add_event(admin_engine, team.id, datetime(2026, 3, 1, 23, 30, tzinfo=UTC), target="late.example")
    page = text_of(as_owner.get("/team/audit"))
    assert "Times in UTC (no time zone set; choose a time zone)" in page and "2026-03-01 23:30" in page

    as_owner.set_cookie("nyxcore_tz", "America/New_York")
    page = text_of(as_owner.get("/team/audit"))
    assert "Times in America/New_York (reported by your browser" in page and "2026-03-01 18:30" in page
    # A path, and a folder of zones (which tzdata answers with IsADirectoryError): UTC, never a 500.
    for not_a_zone in ("../../etc/passwd", "America", "Etc"):
        as_owner.set_cookie("nyxcore_tz", not_a_zone)
        assert "Times in UTC (no time zone set" in text_of(as_owner.get("/team/audit"))

    assert as_owner.post_form("/account/time-zone", {"time_zone": "Asia/Tokyo"}).status_code == 302
    response = as_owner.get("/team/audit")
    page = text_of(response)
    assert "Times in Asia/Tokyo (your account setting)." in page and "2026-03-02 08:30" in page
    raw = response.get_data(as_text=True)
    assert 'src="/static/zone.js"' in raw and "<script>" not in raw  # a file the CSP allows, no inline script
    # A day in the filter is a day in the viewer's zone: 23:30 UTC on the 1st is the 2nd in Tokyo.
    assert any("late.example" in s for s in sentences(as_owner.get("/team/audit?since=2026-03-02&until=2026-03-02")))
    assert not any("late.example" in s for s in sentences(as_owner.get("/team/audit?until=2026-03-01")))


def test_a_wrong_time_zone_is_named_and_changes_nothing(team, admin_engine, as_owner):
    as_owner.post_form("/account/time-zone", {"time_zone": "Europe/Berlin"})
    for wrong in ("Mars/Olympus_Mons", "Europe"):
        response = as_owner.post_form("/account/time-zone", {"time_zone": wrong})
        assert response.status_code == 400
        assert f"\u201c{wrong}\u201d is not a time zone name." in text_of(response)
    owner = team.accounts[O].user_id
    assert scalar(admin_engine, "SELECT time_zone FROM users WHERE id = :u", u=owner) == "Europe/Berlin"
    assert as_owner.post_form("/account/time-zone", {"time_zone": ""}).status_code == 302
    assert scalar(admin_engine, "SELECT time_zone FROM users WHERE id = :u", u=owner) is None


def test_a_page_of_the_log_costs_the_same_few_statements_however_long_the_log(app, team, admin_engine, as_owner):
    """Members for the filter, the page of events with their actors, the names of the people they name."""
    for n in range(3):
        add_event(admin_engine, team.id, datetime.now(UTC), action="member.removed", target=f"p{n}@example.com")
    as_owner.get("/team/audit")  # warm: the first request of a client loads more than a page does
    few = statements_for(app, as_owner, "/team/audit")
    for n in range(200):
        add_event(admin_engine, team.id, datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=n),
                  action="member.removed", target=f"q{n}@example.com")
    many = statements_for(app, as_owner, "/team/audit?kind=member.removed&before=" + str(
        scalar(admin_engine, "SELECT id FROM audit_events WHERE target = 'q150@example.com'")))
    assert few == many <= 5  # user and session, memberships, people, events, names; no count(*) of the log
