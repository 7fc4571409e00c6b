"""Fixtures over a real PostgreSQL and Redis.

A run creates its own database and two roles (an owner that runs the migrations, and the app role
the app connects as, held by row-level security), and drops them at the end. Each test starts from
empty tables, on one of two paths:

- Rolled back (funding-service's way): a test that only talks to the in-process app runs inside an
  outer transaction on one app-role connection; the app's session joins it with
  `join_transaction_mode="create_savepoint"`, so each request's commit releases a savepoint, and the
  whole test is rolled back at its end. Nothing is committed, nothing to empty.
- Committed: a test that needs its rows committed, because something else reads or writes them
  (`admin_engine` looking under RLS, a raw `app_engine`, a Celery worker or gunicorn process, other
  threads, a second app), or that is marked `committed`, runs as before; its tables are emptied
  (TRUNCATE) afterwards. The fixtures below decide from the fixtures a test uses.

Apps are built once per distinct configuration and reused (a new app per test cost little, but the
engine's pool and the first-request work were thrown away each time); a test marked `own_app`
(one that adds routes) gets one of its own. After each test the app's configuration is put back,
and Celery and Flask-Limiter, which are process-wide, are pointed at the next test's app again.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from unittest import mock

import flask_login
import kombu.pools
import pytest
from argon2 import PasswordHasher, Type
from celery import Celery
from flask import Flask
from flask.globals import app_ctx
from flask.testing import FlaskClient
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import create_engine, text, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from nyxcore import authz, create_app, passwords, tenancy
from nyxcore.config import load_config
from nyxcore.extensions import db as _db
from nyxcore.extensions import limiter
from nyxcore.models import Tenant, TenantMember, User
from nyxcore.roles import TenantRole
from nyxcore.services import accounts, sessions

ADMIN_URL = os.environ.get("NYXCORE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("NYXCORE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class TestDatabase:
    name: str
    admin_url: str  # superuser, on the test database: for setup and inspection only
    owner_url: str
    app_url: str
    owner_role: str
    app_role: str


def _url(base: str, *, user: str | None = None, database: str | None = None) -> str:
    url = make_url(base)
    if user is not None:
        url = url.set(username=user, password=None)
    if database is not None:
        url = url.set(database=database)
    return url.render_as_string(hide_password=False)


def create_database(admin_url: str = ADMIN_URL) -> TestDatabase:
    """A new database on the server of `admin_url` (a superuser), owned by a new owner role, with a
    new app role, and every migration run; `drop_database` removes it all again."""
    suffix = uuid.uuid4().hex[:8]
    info = TestDatabase(
        name=f"nyxcore_test_{suffix}",
        admin_url=_url(admin_url, database=f"nyxcore_test_{suffix}"),
        owner_url=_url(admin_url, user=f"nyxcore_owner_{suffix}", database=f"nyxcore_test_{suffix}"),
        app_url=_url(admin_url, user=f"nyxcore_app_{suffix}", database=f"nyxcore_test_{suffix}"),
        owner_role=f"nyxcore_owner_{suffix}",
        app_role=f"nyxcore_app_{suffix}",
    )
    server = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as conn:
            conn.execute(text(f"CREATE ROLE {info.owner_role} LOGIN NOSUPERUSER NOBYPASSRLS"))
            conn.execute(text(f"CREATE ROLE {info.app_role} LOGIN NOSUPERUSER NOBYPASSRLS"))
            conn.execute(text(f"CREATE DATABASE {info.name} OWNER {info.owner_role}"))
            # A test database need not survive a crash: commits return without waiting for the WAL
            # flush (0.1 ms instead of 2 ms each here). Nothing else about PostgreSQL changes.
            conn.execute(text(f"ALTER DATABASE {info.name} SET synchronous_commit = off"))
    finally:
        server.dispose()
    try:
        app = create_app(test_config(info))
        with app.app_context():
            from flask_migrate import upgrade

            upgrade()
            _db.engine.dispose()
    except BaseException:
        drop_database(info, admin_url)
        raise
    return info


def drop_database(info: TestDatabase, admin_url: str = ADMIN_URL) -> None:
    """Drop what `create_database` made (its connections are ended first)."""
    server = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"
                ),
                {"d": info.name},
            )
            conn.execute(text(f"DROP DATABASE IF EXISTS {info.name}"))
            conn.execute(text(f"DROP ROLE IF EXISTS {info.app_role}"))
            conn.execute(text(f"DROP ROLE IF EXISTS {info.owner_role}"))
    finally:
        server.dispose()


@pytest.fixture(scope="session")
def database() -> Iterator[TestDatabase]:
    info = create_database()
    try:
        yield info
    finally:
        drop_database(info)


def test_config(info: TestDatabase, **overrides: Any) -> dict[str, Any]:
    """The app's configuration for a test: the app role, Redis, testing mode."""
    environ = {
        "NYXCORE_ENV": "testing",
        "DATABASE_URL": info.app_url,
        "MIGRATION_DATABASE_URL": info.owner_url,
        "NYXCORE_APP_ROLE": info.app_role,
        "REDIS_URL": REDIS_URL,
        "PUBLIC_URL": "http://nyxcore.test",
        "CELERY_TASK_ALWAYS_EAGER": "true",
        "MAIL_BACKEND": "console",
    }
    config = load_config(environ)
    config.update(overrides)
    return config


test_config.__test__ = False  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def admin_engine(database: TestDatabase) -> Iterator[Engine]:
    """A superuser connection to the test database, for cleanup and for looking under RLS."""
    engine = create_engine(database.admin_url)
    yield engine
    engine.dispose()


# Fixtures whose use means the test's rows must be committed: another connection, thread or process
# reads or writes them.
COMMITTED_FIXTURES = frozenset({"admin_engine", "app_engine", "worker", "mail_server", "live_app", "stack"})
ROLLED_BACK = pytest.StashKey[bool]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "committed: run on committed data (another connection or thread reads what the app wrote)"
    )
    config.addinivalue_line("markers", "own_app: build an app for this test alone (it adds routes)")
    # pytest-xdist registers it itself, but not when it is off (`pytest -p no:xdist`).
    config.addinivalue_line("markers", "xdist_group(name): run on the same xdist worker as its group")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """How many tests ran rolled back and how many on committed data (see the module docstring)."""
    items = getattr(terminalreporter.config, "_nyxcore_items", [])
    uses_app = [item for item in items if "app" in getattr(item, "fixturenames", ())]
    if uses_app:
        rolled = sum(1 for item in uses_app if item.stash.get(ROLLED_BACK, False))
        terminalreporter.write_line(
            f"in-process app: {rolled} tests rolled back, {len(uses_app) - rolled} on committed data"
        )
        if terminalreporter.config.getoption("verbose") > 1:  # -vv lists them
            for item in uses_app:
                path = "rolled back" if item.stash.get(ROLLED_BACK, False) else "committed"
                terminalreporter.write_line(f"  {path:11}  {item.nodeid}")
    # Figures a test file records as ("figures", {...}) in its reports' user_properties (the image
    # test's timings and image size); the last per file. Reports from xdist workers carry them too.
    figures: dict[str, dict[str, Any]] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            for name, value in getattr(report, "user_properties", ()):
                if name == "figures" and value:
                    figures[report.nodeid.split("::")[0]] = value
    for path, value in sorted(figures.items()):
        terminalreporter.write_line(f"{path}: " + ", ".join(f"{key} {shown}" for key, shown in value.items()))


# `make test` spreads tests over the xdist workers one by one (--dist loadgroup), so that no long
# file (the fuzzer's six visitors) holds one worker while the other idles. Tests that share a server
# started once per module or package stay together on one worker, or each worker would start it.
SHARED_SERVER_GROUPS = {
    "tests/e2e/": "e2e",
    "tests/integration/test_deployment.py": "deployment",
    "tests/deployment/test_instances.py": "instances",
    "tests/deployment/test_pgbouncer.py": "pgbouncer",
    "tests/deployment/test_image.py": "deployment",
    # Their own PostgreSQL cluster and Redis server, restarted under load: one worker runs them in turn.
    "tests/deployment/test_faults.py": "faults",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    config._nyxcore_items = items  # type: ignore[attr-defined]
    for item in items:
        for prefix, group in SHARED_SERVER_GROUPS.items():
            if item.nodeid.startswith(prefix):
                item.add_marker(pytest.mark.xdist_group(group))
        if getattr(config.option, "loadgroup", False):  # an xdist worker, with --dist loadgroup
            _suffix_group(item)


def _suffix_group(item: pytest.Item) -> None:
    """Give the item's node id the `@group` suffix --dist loadgroup schedules by.

    pytest-xdist 3.8 does this itself by setting `item._nodeid`, which pytest 9 no longer reads (the
    id is `item._id`, a NodeId): without this every group's tests were spread over the workers, and
    each worker started the group's servers. Harmless once xdist does it again (the suffix is there).
    """
    marks = item.iter_markers("xdist_group")
    groups = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in marks})
    if groups and "@" not in item.nodeid and hasattr(item, "_id"):
        from _pytest.nodeid import coerce_node_id  # pytest 9's structured node ids

        item._id = coerce_node_id(f"{item.nodeid}@{'_'.join(groups)}")


def rolled_back(request: pytest.FixtureRequest) -> bool:
    """Whether this test runs inside a transaction that is rolled back (see the module docstring)."""
    # The item's own closure: request.fixturenames also lists admin_engine, which _empty_tables asks for.
    names = getattr(request.node, "fixturenames", ())
    return not (COMMITTED_FIXTURES.intersection(names) or request.node.get_closest_marker("committed"))


_TABLES: dict[str, list[str]] = {}


def _tables(conn: Any) -> list[str]:
    """The test database's tables (every migration has run before any test: read them once)."""
    key = str(conn.engine.url)
    if key not in _TABLES:
        _TABLES[key] = list(
            conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'")
            ).scalars()
        )
    return _TABLES[key]


@pytest.fixture(autouse=True)
def _empty_tables(request: pytest.FixtureRequest) -> Iterator[None]:
    engine = request.getfixturevalue("admin_engine") if "database" in request.fixturenames else None
    yield
    if engine is None:
        return
    with engine.begin() as conn:
        tables = _tables(conn)
        if request.node.stash.get(ROLLED_BACK, False):
            # Nothing may survive the rollback; if something did, it went round the test's transaction.
            found = conn.execute(
                text(" UNION ALL ".join(f"SELECT '{t}' WHERE EXISTS (SELECT 1 FROM \"{t}\")" for t in tables))
            ).scalars()
            left = list(found)
            if not left:
                return
        else:
            left = []
        # DELETE rather than TRUNCATE: 1 ms instead of 37 for these small tables (TRUNCATE makes new
        # files for every table). As the superuser with foreign keys' triggers off, in any order.
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text("; ".join(f'DELETE FROM "{t}"' for t in tables)))
    if left:
        pytest.fail(f"rows in {left} were committed on the rolled-back path: mark the test `committed`")


@pytest.fixture
def app_config(database: TestDatabase) -> dict[str, Any]:
    """Override entries of this dict in a test (before using `app`) to change the app's config."""
    return test_config(database)


@pytest.fixture(scope="session")
def _apps() -> Iterator[dict[str, Flask]]:
    """The apps built so far, by configuration."""
    built: dict[str, Flask] = {}
    yield built
    for application in built.values():
        with application.app_context():
            _db.engine.dispose()


def _app_context_id() -> int:
    return id(app_ctx._get_current_object())


@contextmanager
def _rolled_back_session(application: Flask) -> Iterator[None]:
    """Run the block inside one outer transaction that is rolled back at its end.

    The app's scoped session (one per app context, as Flask-SQLAlchemy's) is bound to a single
    app-role connection and joins its transaction with savepoints, so a request's commit releases a
    savepoint and the next request sees its rows. The tenant context needs nothing special: the
    engine event applies the wanted context whenever it differs from what it last applied on the
    connection, forgets on rollback to a savepoint, and each request starts from an empty context,
    which it therefore sends to PostgreSQL explicitly.
    """
    with application.app_context():
        engine = _db.engine
    connection = engine.connect()
    outer = connection.begin()
    app_session = _db.session
    _db.session = scoped_session(  # type: ignore[assignment]
        sessionmaker(bind=connection, join_transaction_mode="create_savepoint", class_=Session),
        scopefunc=_app_context_id,
    )
    try:
        yield
    finally:
        # Each app context's session was closed when that context ended (Flask-SQLAlchemy's teardown).
        _db.session = app_session
        outer.rollback()
        connection.close()


@pytest.fixture
def app(request: pytest.FixtureRequest, app_config: dict[str, Any], _apps: dict[str, Flask]) -> Iterator[Flask]:
    """The app for `app_config`; rolled back or committed as the module docstring says."""
    key = repr(sorted(app_config.items()))
    if request.node.get_closest_marker("own_app"):
        application = create_app(app_config)
    else:
        application = _apps.get(key) or _apps.setdefault(key, create_app(app_config))
    # Process-wide: the default Celery app and Flask-Limiter remember the last app that set them.
    application.extensions["celery"].set_default()
    forget_broker_connections(application.extensions["celery"])  # a worker's teardown closed them
    limiter.init_app(application)
    config = dict(application.config)
    try:
        if rolled_back(request):
            request.node.stash[ROLLED_BACK] = True
            with _rolled_back_session(application):
                yield application
        else:
            yield application
    finally:
        application.config.clear()
        application.config.update(config)
        with application.app_context():
            _db.engine.dispose()  # connections a test left idle, and what its threads opened


def forget_broker_connections(celery: Celery) -> None:
    """Drop Celery's cached broker connections, producers and queue declarations.

    They are built once from the configuration in force at first use, and kombu's pools are shared
    by every Celery app of the process: after a test has pointed an app's Celery at another broker
    (or queue), or a worker's teardown closed the pools, they must be rebuilt.
    """
    kombu.pools.reset()
    celery._pool = None
    celery.__dict__.pop("amqp", None)


class Client(FlaskClient):
    """A test client that sends a valid CSRF token with every form it posts."""

    def csrf_token(self) -> str:
        with self.session_transaction() as session:
            raw = session.setdefault("csrf_token", uuid.uuid4().hex)
        serializer = URLSafeTimedSerializer(self.application.secret_key, salt="wtf-csrf-token")
        return str(serializer.dumps(raw))

    def post_form(self, url: str, data: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        return self.post(url, data={"csrf_token": self.csrf_token(), **(data or {})}, **kwargs)

    def confirm(self, url: str, data: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """Post as a confirm page does (nyxcore/confirmation.py): the token and `confirmed=yes`."""
        return self.post_form(url, {"confirmed": "yes", **(data or {})}, **kwargs)

    def login(self, email: str, password: str = PASSWORD) -> Any:
        return self.post_form("/auth/login", {"email": email, "password": password})


@pytest.fixture
def client(app: Flask) -> Client:
    app.test_client_class = Client
    return app.test_client()  # type: ignore[return-value]


@pytest.fixture
def make_client(app: Flask) -> Any:
    def build() -> Client:
        app.test_client_class = Client
        return app.test_client()  # type: ignore[return-value]

    return build


@dataclass
class Account:
    user_id: uuid.UUID
    email: str
    name: str
    team_id: uuid.UUID  # the personal team made at sign-up


_PASSWORD_HASHES: dict[str, str] = {}


def _hash_once(password: str) -> str:
    """A real Argon2id hash of `password`, computed once per run: at OWASP's parameters each one costs
    tens of milliseconds, and the `team` fixture alone makes four users. Logging in still verifies it."""
    key = f"{password}|{passwords._hasher.memory_cost}|{passwords._hasher.time_cost}"  # see cheap_password_hashing
    if key not in _PASSWORD_HASHES:
        _PASSWORD_HASHES[key] = _hash_password(password)
    return _PASSWORD_HASHES[key]


_hash_password = passwords.hash_password


@pytest.fixture
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2id at its smallest cost for this test (hashes made and checked, users made after it).

    For tests that post password forms hundreds of times (the fuzzer, the crawl): at OWASP's
    parameters each check costs about 40 ms. What they test is the forms, not the hash;
    test_auth.py checks the parameters and the rehash.
    """
    monkeypatch.setattr(
        passwords,
        "_hasher",
        PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, hash_len=32, salt_len=16, type=Type.ID),
    )


@pytest.fixture
def make_user(app: Flask) -> Any:
    """Create a user (and their personal team) through the service, committed (or, on the rolled-back
    path, released to the test's transaction). Verified unless `verified=False`: signing up through
    the pages mails a link first (tests of that flow go through it)."""
    counter = iter(range(1, 10_000))

    def build(
        name: str | None = None, email: str | None = None, password: str = PASSWORD, *, verified: bool = True
    ) -> Account:
        n = next(counter)
        name = name or f"User {n}"
        email = email or f"user{n}-{uuid.uuid4().hex[:6]}@example.com"
        return create_account(app, name, email, password, verified=verified)

    return build


def create_account(app: Flask, name: str, email: str, password: str = PASSWORD, *, verified: bool = True) -> Account:
    """A user and their personal team made through the service in `app`'s database, committed."""
    user_id, team_id = uuid.uuid4(), uuid.uuid4()
    with (
        app.app_context(),
        tenancy.tenant_context(user_id=user_id, tenant_id=team_id),
        mock.patch.object(passwords, "hash_password", _hash_once),
    ):
        user, membership = accounts.register_user(
            user_id=user_id, team_id=team_id, name=name, email=email, password=password, verified=verified
        )
        _db.session.commit()
        return Account(user.id, user.email, user.name, membership.tenant_id)


@pytest.fixture
def add_member(app: Flask) -> Any:
    """Put an existing user into a team with a role, committed."""

    def add(team_id: uuid.UUID, account: Account, role: TenantRole) -> None:
        with app.app_context(), tenancy.tenant_context(user_id=account.user_id, tenant_id=team_id):
            _db.session.add(TenantMember(tenant_id=team_id, user_id=account.user_id, role=role))
            _db.session.commit()

    return add


@pytest.fixture
def team(make_user: Any, add_member: Any) -> TeamFixture:
    """A team with one user of each role, `team.accounts[role]`; `as_owner` ... `as_viewer` are
    clients logged in as them."""
    return _build_team(make_user, add_member)


@dataclass
class TeamFixture:
    id: uuid.UUID
    accounts: dict[TenantRole, Account]


def _build_team(make_user: Any, add_member: Any) -> TeamFixture:
    owner = make_user(name="Olive Owner")
    accounts_by_role = {TenantRole.OWNER: owner}
    for role in (TenantRole.ADMIN, TenantRole.MEMBER, TenantRole.VIEWER):
        account = make_user(name=f"{role.label} Person")
        add_member(owner.team_id, account, role)
        accounts_by_role[role] = account
    return TeamFixture(owner.team_id, accounts_by_role)


@pytest.fixture
def login_as(make_client: Any) -> Any:
    """A new client logged in as `account`, with `team_id` made active if given."""

    def login(account: Account, team_id: uuid.UUID | None = None) -> Client:
        c: Client = make_client()
        sign_in(c, account.user_id, team_id)
        return c

    return login


def sign_in(client: Client, user_id: uuid.UUID, team_id: uuid.UUID | None = None) -> None:
    """Give `client` the cookie a log in would: a new server-side session, Flask-Login's keys, and
    `team_id` as the active team (checked against the memberships on each request, as a switch is).

    Logging in through the form costs an Argon2id hash (about 40 ms) and one or two requests; the
    tests of logging in itself (test_auth.py) use `Client.login`.
    """
    app = client.application
    with app.app_context(), tenancy.tenant_context(user_id=user_id):
        token = sessions.start(
            user_id, user_agent="pytest", ip_address="127.0.0.1", lifetime=app.permanent_session_lifetime
        )
        if team_id is not None:  # chosen after the log in: recorded for the next one, as a switch records it
            _db.session.execute(update(User).where(User.id == user_id).values(last_tenant_id=team_id))
        _db.session.commit()
    with app.test_request_context(environ_base=client.environ_base):
        identifier = flask_login.utils._create_identifier()  # what session_protection="strong" checks
    with client.session_transaction() as session:
        session.clear()
        session.update(_user_id=str(user_id), _fresh=True, _id=identifier)
        session[authz.SESSION_TOKEN_KEY] = token
        if team_id is not None:
            session[authz.ACTIVE_TENANT_KEY] = str(team_id)
        session.permanent = True


@pytest.fixture
def anonymous(make_client: Any) -> Client:
    """A client nobody is logged in with."""
    client: Client = make_client()
    return client


def _in_team(team: TeamFixture, login_as: Any, role: TenantRole) -> Client:
    """A client logged in as the `team` fixture's account of `role`, with that team active."""
    client: Client = login_as(team.accounts[role], team.id)
    return client


@pytest.fixture
def as_owner(team: TeamFixture, login_as: Any) -> Client:
    """A client logged in as the `team` fixture's owner, with that team active."""
    return _in_team(team, login_as, TenantRole.OWNER)


@pytest.fixture
def as_admin(team: TeamFixture, login_as: Any) -> Client:
    """A client logged in as the `team` fixture's admin, with that team active."""
    return _in_team(team, login_as, TenantRole.ADMIN)


@pytest.fixture
def as_member(team: TeamFixture, login_as: Any) -> Client:
    """A client logged in as the `team` fixture's member, with that team active."""
    return _in_team(team, login_as, TenantRole.MEMBER)


@pytest.fixture
def as_viewer(team: TeamFixture, login_as: Any) -> Client:
    """A client logged in as the `team` fixture's viewer, with that team active."""
    return _in_team(team, login_as, TenantRole.VIEWER)


def team_name(app: Flask, team_id: uuid.UUID) -> str:
    with app.app_context(), tenancy.tenant_context(tenant_id=team_id):
        tenant = _db.session.get(Tenant, team_id)
        assert tenant is not None
        return tenant.name


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or re.search(
        r'name="csrf_token" value="([^"]+)"', html
    )
    assert match, "no CSRF token in the page"
    return match.group(1)
