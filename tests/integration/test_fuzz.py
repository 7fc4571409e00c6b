"""Every query argument, form field and URL parameter, fuzzed as every kind of visitor.

Nothing here is a hand-kept list of routes or forms: the GET routes come from `app.url_map`, the
forms and query arguments from the pages those routes render, the tables from `pg_tables`. For each
value below the test asserts that the answer is never a 500 and that no table changed; in a query
argument or form field, control and text-direction characters and bytes that are not UTF-8 must be
refused with a 400 (nyxcore/input_guard.py). URL parameters may answer 404 instead.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pyotp
import pytest
from flask import Flask
from sqlalchemy import insert, text
from sqlalchemy.engine import Engine
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Rule

from nyxcore.extensions import keyring
from nyxcore.models import GitHubToken
from nyxcore.roles import TenantRole
from nyxcore.services import github_tokens
from nyxcore.services.mail import ConsoleTransport
from tests.conftest import PASSWORD
from tests.tenant_rows import fill_tenant_tables

# "two-factor": a user of their own team with two-factor on (recovery codes, turning it off).
pytestmark = pytest.mark.usefixtures("cheap_password_hashing")  # see tests/conftest.py
VISITORS = ("anonymous", "owner", "admin", "member", "viewer", "two-factor")

# The guard must answer 400 to each of these, wherever it is sent.
REFUSED = {
    "NUL": "a\x00b",
    "C0 control": "a\x01b\x1b",
    # Sent as its CESU-8 bytes %ED%A0%80, which are not UTF-8 (werkzeug would keep them as that text).
    "lone surrogate": "a\ud800b",
    "RTL override": "invoice\u202efdp.exe",
}
# Harmless characters that no field may take in this size: anything but a 500 or a change.
ODD = {"100 kB": "x" * 102_400}
# Query arguments only (a GET must never change anything, so any value is fair).
ODD_QUERY = {**ODD, "huge number": "9" * 40, "negative number": "-1"}
# Tried on every GET route besides the arguments its pages' links and GET forms show.
COMMON_QUERY_ARGS = ("q", "page", "next", "email")

# Values for a blank field, so that a fuzzed field is often the only thing wrong with a form.
FILL_BY_TYPE = {"email": "fuzz@example.com", "password": PASSWORD}
FILL_TEXT = "Fuzz text"


# --- what the pages offer ------------------------------------------------------------------------


@dataclass
class Form:
    method: str
    action: str
    fields: list[tuple[str, str]] = field(default_factory=list)


class PageParser(HTMLParser):
    """The forms (method, action, named fields with their current values) and links of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self.links: list[str] = []
        self._form: Form | None = None
        self._select: tuple[str, list[str], list[str]] | None = None  # name, options, selected
        self._textarea: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        name = a.get("name")
        if tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
        elif tag == "form":
            self._form = Form((a.get("method") or "get").upper(), a.get("action") or "")
            self.forms.append(self._form)
        elif self._form is None:
            return
        elif tag == "input" and name and self._submitted_input(a):
            value = a.get("value") or ""
            self._form.fields.append((name, value or FILL_BY_TYPE.get(a.get("type") or "", FILL_TEXT)))
        elif tag == "select" and name:
            self._select = (name, [], [])
        elif tag == "option" and self._select is not None:
            self._select[1].append(a.get("value") or "")
            if "selected" in a:
                self._select[2].append(a.get("value") or "")
        elif tag == "textarea" and name:
            self._textarea = (name, [])

    @staticmethod
    def _submitted_input(a: dict[str, str | None]) -> bool:
        kind = a.get("type") or "text"
        if kind in ("submit", "button", "image", "reset", "file"):
            return False
        return kind not in ("checkbox", "radio") or "checked" in a

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._textarea[1].append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "select" and self._select is not None and self._form is not None:
            name, options, selected = self._select
            if options:
                self._form.fields.append((name, (selected or options)[0]))
            self._select = None
        elif tag == "textarea" and self._textarea is not None and self._form is not None:
            name, parts = self._textarea
            self._form.fields.append((name, "".join(parts).removeprefix("\n") or FILL_TEXT))
            self._textarea = None


# --- sending values exactly as given -------------------------------------------------------------


def _encode(pairs: Iterable[tuple[str, str]]) -> str:
    """application/x-www-form-urlencoded, with lone surrogates as their raw (CESU-8) bytes."""

    def q(value: str) -> str:
        return quote(value.encode("utf-8", "surrogatepass"), safe="")

    return "&".join(f"{q(k)}={q(v)}" for k, v in pairs)


def _replaced(pairs: list[tuple[str, str]], index: int, value: str) -> list[tuple[str, str]]:
    return [(k, value if i == index else v) for i, (k, v) in enumerate(pairs)]


def _split(url: str) -> tuple[str, list[tuple[str, str]]]:
    parts = urlsplit(url)
    return parts.path, parse_qsl(parts.query, keep_blank_values=True)


def _send(client: Any, method: str, path: str, pairs: list[tuple[str, str]]) -> Any:
    """Send `pairs`, then put the session cookie back: a form that wrongly got through (a login,
    a sign-up, a team switch) must not turn the rest of the visit into another visitor's."""
    cookie_name = client.application.config["SESSION_COOKIE_NAME"]
    before = client.get_cookie(cookie_name)
    try:
        if method == "GET":
            return client.get(f"{path}?{_encode(pairs)}" if pairs else path)
        return client.open(
            path, method=method, data=_encode(pairs), content_type="application/x-www-form-urlencoded"
        )
    finally:
        if before is None:
            client.delete_cookie(cookie_name)
        else:
            client.set_cookie(before.key, before.value, domain=before.domain, path=before.path)


# --- the database, all of it ---------------------------------------------------------------------


class TableChecksums:
    """An md5 of every public table's rows (tables from pg_tables), to notice any change at all."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        with engine.connect() as conn:
            tables = conn.scalars(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
            ).all()
        assert tables, "no tables in schema public"
        self.sql = text(
            " UNION ALL ".join(
                f"SELECT '{t}' AS name, md5(coalesce(string_agg(r::text, ',' ORDER BY r::text), '')) "
                f'FROM "{t}" AS r'
                for t in tables
            )
        )
        self.last = self.read()

    def read(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            return {name: digest for name, digest in conn.execute(self.sql)}

    def changed(self) -> list[str]:
        """The tables whose contents differ from the last call (or from the start)."""
        now = self.read()
        changed = sorted(name for name, digest in now.items() if self.last.get(name) != digest)
        self.last = now
        return changed


def _values(position: int, odd: dict[str, str]) -> dict[str, str]:
    """The values to send in the `position`-th argument or field of a request.

    The input guard reads every argument and field of every request in one place (it runs before
    any view): each route gets every refused value in its first argument or field and each later
    one a single refused value, the kinds taken in turn, which halves the requests and still sends
    a refused value in every argument and field. The odd values go everywhere: views read them.
    """
    refused = REFUSED if position == 0 else dict([list(REFUSED.items())[position % len(REFUSED)]])
    return {**refused, **odd}


# --- the visit -----------------------------------------------------------------------------------


@dataclass
class Fuzzer:
    client: Any
    checksums: TableChecksums
    failures: list[str] = field(default_factory=list)

    def send(self, what: str, label: str, request: tuple[str, str, list[tuple[str, str]]], *, refused: bool) -> None:
        """Send one request; record a 500 (or an error that even the 500 page could not show), or
        anything but a 400 for a value the guard must refuse."""
        try:
            response = _send(self.client, *request)
        except Exception as exc:  # the error page itself failed: the server would send a bare 500
            self.failures.append(f"{what} = {label}: raised {type(exc).__name__}: {exc}"[:300])
            return
        status = response.status_code
        response.close()  # a static file's response holds the file open until closed
        if status == 500 or (refused and status != 400):
            self.failures.append(f"{what} = {label}: {status}")

    def unchanged(self, what: str) -> None:
        changed = self.checksums.changed()
        if changed:
            self.failures.append(f"{what} changed {', '.join(changed)}")

    def query_args(self, url: str, names: Iterable[str]) -> None:
        path, pairs = _split(url)
        for position, name in enumerate(names):
            keys = [k for k, _ in pairs]
            base = pairs if name in keys else [*pairs, (name, "")]
            index = [k for k, _ in base].index(name)
            for label, value in _values(position, ODD_QUERY).items():
                request = ("GET", path, _replaced(base, index, value))
                self.send(f"GET {path}?{name}", label, request, refused=label in REFUSED)
            self.unchanged(f"GET {path}?{name}")

    def url_parameters(self, rule: Rule, values: dict[str, str]) -> None:
        for name in sorted(rule.arguments):
            for label, value in {**REFUSED, **ODD}.items():
                marker = "FUZZ" + uuid.uuid4().hex
                built = rule.build({**values, name: marker}, append_unknown=False)
                assert built is not None
                path = built[1].replace(marker, quote(value.encode("utf-8", "surrogatepass"), safe=""))
                self.send(f"GET {rule.rule} <{name}>", label, ("GET", path, []), refused=False)
            self.unchanged(f"GET {rule.rule} <{name}>")

    def form(self, form: Form) -> None:
        path, query = _split(form.action)
        target = f"{path}?{_encode(query)}" if query else path
        for index, (name, _) in enumerate(form.fields):
            for label, value in _values(index, ODD).items():
                request = (form.method, target, _replaced(form.fields, index, value))
                self.send(f"{form.method} {form.action} {name}", label, request, refused=label in REFUSED)
            self.unchanged(f"{form.method} {form.action} field {name}")


def _get_rules(app: Flask) -> list[Rule]:
    return sorted((r for r in app.url_map.iter_rules() if "GET" in (r.methods or ())), key=lambda r: r.rule)


# Confirm pages opened by a GET form name their object in the query: (query argument, URL value name).
FORM_QUERIES = {"team.transfer": ("transfer-member_id", "member_id")}


def _url_for_rule(rule: Rule, ids: dict[str, str]) -> str:
    missing = sorted(set(rule.arguments) - set(ids))
    assert not missing, f"{rule.rule}: give the fuzz test a real value for {missing}"
    built = rule.build({name: ids[name] for name in rule.arguments}, append_unknown=False)
    assert built is not None
    if rule.endpoint in FORM_QUERIES:
        argument, value = FORM_QUERIES[rule.endpoint]
        return f"{built[1]}?{argument}={ids[value]}"
    return built[1]


def _distinct_forms(app: Flask, forms: Iterable[Form]) -> Iterator[Form]:
    """One form per (method, endpoint, field names): a row of identical forms is fuzzed once."""
    adapter = app.url_map.bind("nyxcore.test")
    seen = set()
    for form in forms:
        endpoint, _ = adapter.match(urlsplit(form.action).path, method=form.method)
        key = (form.method, endpoint, tuple(name for name, _ in form.fields))
        if key not in seen:
            seen.add(key)
            yield form


def _query_arg_names(pages: Iterable[PageParser]) -> set[str]:
    names = set(COMMON_QUERY_ARGS)
    for page in pages:
        for link in page.links:
            if link.startswith("/"):
                names.update(k for k, _ in parse_qsl(urlsplit(link).query, keep_blank_values=True))
        for form in page.forms:
            if form.method == "GET":
                names.update(k for k, _ in form.fields)
    return names


# --- setup ---------------------------------------------------------------------------------------


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    # GitHub calls go to a closed port on loopback: nothing the fuzz sends can leave the machine.
    app_config["GITHUB_API_URL"] = "http://127.0.0.1:9"
    app_config["GITHUB_TIMEOUT"] = 1
    # A 500 becomes a response to count, not an exception that ends the visit at the first one.
    app_config["PROPAGATE_EXCEPTIONS"] = False
    return app_config


@pytest.fixture
def url_values(app: Flask, team: Any, login_as: Any, admin_engine: Engine) -> dict[str, str]:
    """A note, open invitations and a GitHub connection, so that every page shows its forms;
    returns the values for the routes' URL parameters, by parameter name."""
    owner = login_as(team.accounts[TenantRole.OWNER], team.id)
    created = owner.post_form("/notes/new", {"title": "Fuzz note", "body": "Some text"})
    assert created.status_code == 302, created.get_data(as_text=True)
    _invite(owner, "fuzzed@example.com")  # pending in the team: resend and revoke
    _invite(owner, "expired@example.com")  # expired below: renew
    # The magic link: the member may accept it, the admin (its inviter) is in that team already,
    # the others are signed in as someone else or signed out.
    admin = team.accounts[TenantRole.ADMIN]
    token = _invite(login_as(admin, admin.team_id), team.accounts[TenantRole.MEMBER].email)
    with admin_engine.begin() as conn:  # a row in every other tenant table (a new feature's too)
        fill_tenant_tables(conn, team.id, team.accounts[TenantRole.OWNER].user_id)
        conn.execute(text("DELETE FROM github_tokens WHERE tenant_id = :t"), {"t": team.id})
        conn.execute(text("UPDATE invitations SET expires_at = now() - interval '1 hour' WHERE email = 'expired@example.com'"))
        _team_at_the_visitors_domain(conn)
    _connect_github(app, admin_engine, team.id)
    login_as(team.accounts[TenantRole.OWNER], team.id)  # another session: /account offers to revoke it
    values = {
        "token": token,
        "join_token": _join_link(login_as(admin, admin.team_id)),  # the others may join the admin's team
        "filename": "nyxcore.css",
        **_account_links(owner, login_as, team, admin_engine),
    }
    values.update(_values_from_links(app, owner, values))
    return values


def _team_at_the_visitors_domain(conn: Any) -> None:
    """Another team that verified example.com (every visitor's domain): /teams/ offers to join it."""
    other = uuid.uuid4()
    conn.execute(text("INSERT INTO tenants (id, name, slug) VALUES (:t, 'Example Inc', :s)"), {"t": other, "s": f"ex-{other.hex[:8]}"})
    conn.execute(
        text(
            "INSERT INTO team_domains (id, tenant_id, domain, join_mode, join_role, verified_at) "
            "VALUES (:i, :t, 'example.com', 'request', 'member', now())"
        ),
        {"i": uuid.uuid4(), "t": other},
    )


def _values_from_links(app: Flask, client: Any, known: dict[str, str]) -> dict[str, str]:
    """URL parameter values read off the links of the pages that need none (an item's edit link...)."""
    adapter = app.url_map.bind("nyxcore.test")
    found: dict[str, str] = {}
    for rule in _get_rules(app):
        if rule.arguments or rule.endpoint == "auth.logout":
            continue
        page = PageParser()
        page.feed(client.get(rule.build({}, append_unknown=False)[1]).get_data(as_text=True))
        for link in page.links:
            try:
                _, arguments = adapter.match(link.split("?")[0], method="GET")
            except HTTPException:
                continue
            for name, value in arguments.items():
                if name not in known:
                    found.setdefault(name, str(value))
    return found


def _invite(client: Any, email: str) -> str:
    """Invite `email` to the client's active team; the token from the mail it was sent."""
    invited = client.post_form("/team/invitations", {"emails": email, "role": "member"})
    assert invited.status_code == 200, invited.get_data(as_text=True)
    sent = next(m for m in ConsoleTransport.recent if m["to"] == email)
    link = re.search(r"/invite/([A-Za-z0-9_-]+)", sent["text"])
    assert link, "no magic link in the invitation email"
    return link.group(1)


def _join_link(client: Any) -> str:
    """Make a join link for the client's active team; the token the page shows once."""
    made = client.post_form("/team/join-links", {"role": "member", "days": "7", "max_uses": "50"})
    link = re.search(r"/join/([A-Za-z0-9_-]{43})", made.get_data(as_text=True))
    assert made.status_code == 200 and link, "no join link shown"
    return link.group(1)


def _account_links(owner: Any, login_as: Any, team: Any, admin_engine: Engine) -> dict[str, str]:
    """A live link of each account kind (reset, verification, e-mail change), by URL parameter name;
    and the viewer left unverified, so that the resend button shows too."""
    owner_email = team.accounts[TenantRole.OWNER].email
    assert owner.post_form("/auth/forgot", {"email": owner_email}).status_code == 200
    assert owner.post_form("/auth/signup", {"name": "Fuzz", "email": "unverified@example.com", "password": PASSWORD}).status_code == 303
    changed = owner.post_form("/account/email", {"email": "moved@example.com", "password": PASSWORD})
    assert changed.status_code == 200, changed.get_data(as_text=True)
    with admin_engine.begin() as conn:
        conn.execute(
            text("UPDATE users SET email_verified_at = NULL WHERE id = :u"), {"u": team.accounts[TenantRole.VIEWER].user_id}
        )
    return {
        "reset_token": _mailed_token(owner_email, r"/auth/reset/([A-Za-z0-9_-]+)"),
        "verify_token": _mailed_token("unverified@example.com", r"/auth/verify/([A-Za-z0-9_-]+)"),
        "change_token": _mailed_token("moved@example.com", r"/account/email/confirm/([A-Za-z0-9_-]+)"),
    }


def _mailed_token(email: str, pattern: str) -> str:
    sent = next(m for m in ConsoleTransport.recent if m["to"] == email and re.search(pattern, m["text"]))  # newest first
    found = re.search(pattern, sent["text"])
    assert found
    return found.group(1)


def _connect_github(app: Flask, admin_engine: Engine, team_id: uuid.UUID) -> None:
    token = "ghp_" + "F" * 36
    with app.app_context():
        sealed = keyring.get().encrypt(token.encode(), github_tokens.seal_context(team_id))
    row = {
        "id": uuid.uuid4(),
        "tenant_id": team_id,
        "key_id": sealed.key_id,
        "nonce": sealed.nonce,
        "ciphertext": sealed.ciphertext,
        "last_four": token[-4:],
        "github_login": "fuzzer",
    }
    with admin_engine.begin() as conn:
        conn.execute(insert(GitHubToken.__table__), row)


def _visitor(visitor: str, team: Any, make_client: Any, login_as: Any, make_user: Any) -> Any:
    if visitor == "anonymous":
        # Signed out, but past the password of an account with two-factor: the code step's form shows too.
        _, account = _with_two_factor(make_user, login_as)
        client = make_client()
        assert client.post_form("/auth/login", {"email": account.email, "password": PASSWORD}).status_code == 302
        return client
    if visitor == "two-factor":
        return _with_two_factor(make_user, login_as)[0]
    client = login_as(team.accounts[TenantRole(visitor)], team.id)
    if visitor == "member":  # half-way through turning two-factor on: the form for the code is on show
        assert client.post_form("/account/two-factor/setup", {"password": PASSWORD}).status_code == 302
    return client


def _with_two_factor(make_user: Any, login_as: Any) -> tuple[Any, Any]:
    """A new user who turned two-factor on, and the client they did it with (still signed in)."""
    account = make_user(name="Two Factor")
    client = login_as(account)
    page = client.get(client.post_form("/account/two-factor/setup", {"password": PASSWORD}).location)
    secret = re.search(r'id="two-factor-secret"[^>]*>([A-Z2-7]+)<', page.get_data(as_text=True))
    assert secret, "no secret on the set-up page"
    done = client.post_form("/account/two-factor/confirm", {"code": pyotp.TOTP(secret.group(1)).now()})
    assert done.status_code == 200, done.get_data(as_text=True)
    return client, account


def _pages(app: Flask, client: Any, url_values: dict[str, str]) -> dict[str, PageParser]:
    """Every GET route of the app, visited once: its forms and links, by URL."""
    pages = {}
    for rule in _get_rules(app):
        url = _url_for_rule(rule, url_values)
        with client.get(url) as response:
            assert response.status_code != 500, f"GET {url}: 500"
            parser = PageParser()
            if response.mimetype == "text/html":
                parser.feed(response.get_data(as_text=True))
        pages[url] = parser
    return pages


def _post_forms(app: Flask, pages: dict[str, PageParser]) -> list[Form]:
    forms = _distinct_forms(app, (form for page in pages.values() for form in page.forms))
    return [form for form in forms if form.method == "POST"]


def test_the_visitors_pages_offer_a_form_for_every_post_route(
    app: Flask, team: Any, url_values: dict[str, str], make_client: Any, login_as: Any, make_user: Any
) -> None:
    adapter = app.url_map.bind("nyxcore.test")
    found = set()
    for visitor in VISITORS:
        client = _visitor(visitor, team, make_client, login_as, make_user)
        for form in _post_forms(app, _pages(app, client, url_values)):
            found.add(adapter.match(urlsplit(form.action).path, method="POST")[0])
            assert any(k.endswith("csrf_token") for k, _ in form.fields), f"no CSRF token in {form}"
    posts = {rule.endpoint for rule in app.url_map.iter_rules() if "POST" in (rule.methods or ())}
    assert sorted(posts - found) == [], "POST routes the fuzz test never reaches: seed what shows their forms"


@pytest.mark.parametrize("visitor", VISITORS)
def test_no_query_argument_form_field_or_url_parameter_gives_a_500_or_changes_anything(
    app: Flask,
    team: Any,
    url_values: dict[str, str],
    make_client: Any,
    login_as: Any,
    make_user: Any,
    admin_engine: Engine,
    visitor: str,
) -> None:
    client = _visitor(visitor, team, make_client, login_as, make_user)
    pages = _pages(app, client, url_values)
    fuzz = Fuzzer(client, TableChecksums(admin_engine))
    query_args = sorted(_query_arg_names(pages.values()))
    for url in pages:
        fuzz.query_args(url, query_args)
    for rule in _get_rules(app):
        if rule.arguments:
            fuzz.url_parameters(rule, url_values)
    for form in _post_forms(app, pages):
        fuzz.form(form)
    assert fuzz.failures == [], f"as {visitor}:\n" + "\n".join(fuzz.failures)
    # The whole visit was made as this visitor (the session put back after each request held).
    assert client.get("/team/").status_code == (302 if visitor == "anonymous" else 200)


def test_a_refused_field_is_named_before_csrf_and_nothing_changes(
    app: Flask, team: Any, login_as: Any, admin_engine: Engine
) -> None:
    member = login_as(team.accounts[TenantRole.MEMBER], team.id)
    tables = TableChecksums(admin_engine)
    # No CSRF token: the guard answers first, with the message that helps.
    response = member.post("/notes/new", data={"title": "Plan\x00", "body": "text"})
    assert response.status_code == 400
    assert "The field “title” contains characters that are not allowed" in response.get_data(as_text=True)
    assert member.get("/team/?q=%00").status_code == 400
    assert member.get("/invite/%00").status_code == 404
    assert tables.changed() == []
