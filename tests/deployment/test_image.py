"""The Docker image, built from the unchanged Dockerfile and run as each of its roles.

A stand-in for the pinned base image is made once per machine (tests/deployment/image.py), then
`docker build --network host` builds the real Dockerfile. The containers run with `--network host`
against what the test starts: a new database on the test server (the `database` fixture's roles),
Redis, an SMTP server; nginx on the host with the project's nginx.conf is in front, over TLS.

Every container is started the way docker-compose.yml starts its service, read from the compose
file itself as `docker-compose config` resolves it with a sample .env made from .env.example: the
command, the environment (env_file and `environment:`), `read_only`, `tmpfs` and `security_opt`.
Only what compose sets for its own network is replaced by its host-network equivalent (web's
GUNICORN_BIND, on a free port, and TRUSTED_PROXIES, nginx's address: the loopback).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from nyxcore.crypto import generate_key_setting
from tests.conftest import ADMIN_URL, PASSWORD, REDIS_URL, csrf_from
from tests.deployment.image import (
    DOCKER_COMPOSE,
    BuiltImage,
    Container,
    Containers,
    base_image_name,
    build_image,
    docker,
    engine_problem,
    ensure_base_image,
    image_config,
    timed,
)
from tests.e2e.live_app import LiveApp, delete_queue
from tests.helpers import free_port
from tests.integration.mailserver import MailServer, running_mail_server
from tests.integration.test_deployment import nginx_command, write_nginx_config
from tests.live import ROOT, Browser, LiveServers, plain_status, wait_until

if TYPE_CHECKING:
    from tests.conftest import TestDatabase

APP_ROLES = ("migrate", "web", "worker", "beat")
UID = "10001"
# The containers start on a busy machine too (2 cores shared): generous, it only bounds a failure.
START_TIMEOUT = 180.0
# The address the image's HEALTHCHECK (and compose's, for web) asks: the image's default port.
IMAGE_HEALTH_URL = "http://127.0.0.1:8000"
TEAM = "Image Works"
# Timings (seconds) and the image's size: shown at the end of the run (tests/conftest.py's summary).
TIMINGS: dict[str, float] = {}


# ---------------------------------------------------------------------------------------------------
# docker-compose.yml, resolved by docker-compose with a sample .env.


def env_from_example(values: dict[str, str]) -> str:
    """.env.example with each `NAME=` line set to the test's value (fails on a name it does not have)."""
    content = (ROOT / ".env.example").read_text()
    for name, value in values.items():
        content, found = re.subn(
            rf"^{name}=.*$", lambda _m, v=f"{name}={value}": v, content, flags=re.MULTILINE
        )
        assert found == 1, f".env.example no longer has {name}=; update this test"
    return content


def compose_config(directory: Path, env: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """`docker-compose config` of docker-compose.yml with `env` as its .env, in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / "docker-compose.yml", directory / "docker-compose.yml")
    (directory / ".env").write_text(env)
    result = subprocess.run(
        [DOCKER_COMPOSE, "config"], cwd=directory, capture_output=True, text=True, timeout=60
    )
    resolved: dict[str, Any] = yaml.safe_load(result.stdout) if result.returncode == 0 else {}
    return result, resolved


def sample_secrets() -> dict[str, str]:
    """The values .env.example leaves empty, filled as an operator does."""
    return {
        "SECRET_KEY": secrets.token_urlsafe(48),
        "NYXCORE_ENCRYPTION_KEYS": generate_key_setting("k1"),
        "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
        "NYXCORE_DB_OWNER_PASSWORD": secrets.token_urlsafe(24),
        "NYXCORE_APP_PASSWORD": secrets.token_urlsafe(24),
    }


def canonical(name: str) -> str:
    """A distribution's name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def docker_run_options(service: dict[str, Any]) -> list[str]:
    """The `docker run` options for what the compose service sets about the container itself."""
    options = ["--read-only"] if service.get("read_only") else []
    options += [f"--tmpfs={path}" for path in service.get("tmpfs", [])]
    options += [f"--security-opt={option}" for option in service.get("security_opt", [])]
    return options


# ---------------------------------------------------------------------------------------------------
# The image, and the stack of containers.


@pytest.fixture(autouse=True)
def _record_figures(request: pytest.FixtureRequest) -> Iterator[None]:
    """Put the figures so far into this test's (teardown) report, for the run's summary."""
    yield
    request.node.user_properties.append(("figures", dict(TIMINGS)))


@pytest.fixture(scope="session")
def nyxcore_image() -> BuiltImage:
    problem = engine_problem()
    if problem:
        pytest.fail(
            f"no Docker engine: {problem}. Install and start it as .ci/run does "
            "(apt-get install docker.io; dockerd &)",
            pytrace=False,
        )
    base = ensure_base_image()
    kind = "official" if not base.stand_in else "stand-in made" if base.made_now else "stand-in reused"
    TIMINGS[f"base image ({kind})"] = round(base.seconds, 1)
    built = build_image()
    TIMINGS["docker build"] = round(built.seconds, 1)
    TIMINGS["image size MB"] = round(built.size_bytes / 1e6, 1)
    print(
        f"\nnyxcore image {built.image[:19]}: {built.size_bytes / 1e6:.0f} MB, built in {built.seconds:.1f} s "
        f"on {base.name} ({kind}, {base.seconds:.1f} s)"
    )
    return built


@dataclass
class ImageStack:
    https: str
    database_url: str  # the superuser, on this stack's database
    migrate_output: str
    compose: dict[str, Any]  # `docker-compose config`, resolved
    containers: dict[str, Container]
    commands: dict[str, list[str]]  # what each container was started with
    live: LiveApp  # the mail arriving at the SMTP server, through the worker container
    web_port: int


@dataclass(frozen=True)
class StackPlan:
    """Names and ports of one stack: its own database, queue, rate-limit prefix and free ports."""

    database: str = field(default_factory=lambda: f"nyxcore_image_{uuid.uuid4().hex[:8]}")
    queue: str = field(default_factory=lambda: f"nyxcore-image-{uuid.uuid4().hex[:12]}")
    limits: str = field(default_factory=lambda: f"nyxcore-image-{uuid.uuid4().hex[:12]}")
    web_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    https_port: int = field(default_factory=free_port)

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def url(self, base: str) -> str:
        """`base` (a URL of the `database` fixture) on this stack's database."""
        return make_url(base).set(database=self.database).render_as_string(hide_password=False)

    def settings(self, database: TestDatabase, mail: MailServer) -> dict[str, str]:
        """The .env entries an operator fills in, with the test's services."""
        return {
            **sample_secrets(),
            "DATABASE_URL": self.url(database.app_url),
            "MIGRATION_DATABASE_URL": self.url(database.owner_url),
            "NYXCORE_APP_ROLE": database.app_role,
            "REDIS_URL": REDIS_URL,
            "PUBLIC_URL": self.https,
            "SMTP_HOST": mail.host,
            "SMTP_PORT": str(mail.port),
            "SMTP_STARTTLS": "false",
            "CELERY_TASK_DEFAULT_QUEUE": self.queue,
            "RATELIMIT_KEY_PREFIX": self.limits,
            "GUNICORN_WORKERS": "1",
        }

    def host_network(self, role: str) -> dict[str, str]:
        """What compose sets for its own network, here for the host's: gunicorn on a free loopback
        port, and nginx (on the host, so the loopback) the one trusted proxy."""
        if role != "web":
            return {}
        return {"GUNICORN_BIND": f"127.0.0.1:{self.web_port}", "TRUSTED_PROXIES": "127.0.0.1"}


def health_options(service: dict[str, Any], web_port: int) -> list[str]:
    """`docker run` options for the compose service's health check, run by Docker as compose would.

    The image's check (web's) asks the image's default port; gunicorn listens where GUNICORN_BIND
    says, a free port here (the host's network is shared), so the check asks that one. Checks run
    every few seconds instead of compose's 15 s to 60 s, to have a result soon.
    """
    check = service["healthcheck"]
    if check.get("disable") or check.get("test") == ["NONE"]:  # docker-compose 1.29 writes the latter
        return ["--no-healthcheck"]
    kind, *test = check["test"]
    # Compose writes $$ for a literal $; `config` leaves it escaped. A CMD becomes a shell command.
    command = test[0].replace("$$", "$") if kind == "CMD-SHELL" else shlex.join(test)
    command = command.replace(IMAGE_HEALTH_URL, f"http://127.0.0.1:{web_port}")
    return [
        f"--health-cmd={command}",
        "--health-interval=5s",
        f"--health-timeout={check.get('timeout', '30s')}",
        "--health-retries=3",
    ]


def start_service(
    containers: Containers,
    image: str,
    services: dict[str, Any],
    role: str,
    plan: StackPlan,
    *,
    detach: bool = True,
) -> tuple[Container, str]:
    """`docker run` the compose service `role`: its command, environment and container options."""
    env = {name: str(value) for name, value in services[role]["environment"].items()}
    env.update(plan.host_network(role))
    options = docker_run_options(services[role]) + health_options(services[role], plan.web_port)
    return containers.run(role, image, services[role]["command"], options=options, env=env, detach=detach)


@pytest.fixture(scope="module")
def stack(
    nyxcore_image: BuiltImage, database: TestDatabase, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ImageStack]:
    prefix, plan = tmp_path_factory.mktemp("image"), StackPlan()
    server = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:  # an empty database, for `migrate` to create the schema in
        conn.execute(text(f"CREATE DATABASE {plan.database} OWNER {database.owner_role}"))
    try:
        with running_mail_server() as mail, Containers() as containers, LiveServers(prefix) as servers:
            result, compose = compose_config(
                prefix / "compose", env_from_example(plan.settings(database, mail))
            )
            assert result.returncode == 0, result.stderr
            services = compose["services"]
            with timed(TIMINGS, "migrate (upgrade + role check)"):
                migrate, output = start_service(
                    containers, nyxcore_image.image, services, "migrate", plan, detach=False
                )
            assert migrate.state()["ExitCode"] == 0, output
            with timed(TIMINGS, "web, worker, beat ready"):
                started = {
                    role: start_service(containers, nyxcore_image.image, services, role, plan)[0]
                    for role in ("web", "worker", "beat")
                }
                ready = {
                    "web": lambda: plain_status(plan.web_port, "/api/v1/health") == 200,
                    "worker": lambda: " ready." in started["worker"].logs(),
                    "beat": lambda: "beat: Starting" in started["beat"].logs(),
                }
                for role, condition in ready.items():
                    wait_until(condition, role, timeout=START_TIMEOUT, watch=list(started.values()))
            files = write_nginx_config(
                prefix / "nginx",
                upstream_port=plan.web_port,
                http_port=plan.http_port,
                https_port=plan.https_port,
            )
            nginx = servers.spawn("nginx", nginx_command(files, "-g", "daemon off;"), env=os.environ)
            servers.wait_until(
                lambda: plain_status(plan.https_port, "/api/v1/health", tls=True) == 200,
                "nginx",
                watch=[nginx],
            )
            yield ImageStack(
                https=plan.https,
                database_url=plan.url(database.admin_url),
                migrate_output=output,
                compose=compose,
                containers={"migrate": migrate, **started},
                commands={role: list(services[role]["command"]) for role in APP_ROLES},
                live=LiveApp(
                    url=plan.https, mail=mail, web=started["web"], worker=started["worker"], queue=plan.queue
                ),
                web_port=plan.web_port,
            )
    finally:
        delete_queue(plan.queue)
        client = redis.Redis.from_url(REDIS_URL)
        try:
            for key in client.scan_iter(match=f"*{plan.limits}*"):
                client.delete(key)
        finally:
            client.close()
        with server.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                {"d": plan.database},
            )
            conn.execute(text(f"DROP DATABASE IF EXISTS {plan.database}"))
        server.dispose()


# ---------------------------------------------------------------------------------------------------
# What the README promises of the image.


# Compilers and headers on the PATH, the Debian packages, the Python version and the installed packages.
RUNTIME_PROBE = (
    "for tool in gcc cc c++ g++ clang make ld as cpp pg_config; do command -v $tool; done; "
    "ls -d /usr/include/python3* /usr/include/postgresql 2>/dev/null; "
    "echo ---; dpkg-query -W -f '${db:Status-Abbrev} ${Package}\\n'; echo ---; python -V; echo ---; "
    "pip list --format json"
)


def test_the_runtime_image_has_no_build_tools_and_only_the_locked_packages(nyxcore_image: BuiltImage) -> None:
    probe = docker("run", "--rm", "--network", "none", nyxcore_image.image, "sh", "-c", RUNTIME_PROBE)
    found, dpkg, python, frozen = probe.split("---\n")
    python_version = tuple(int(part) for part in python.split()[1].split("."))
    assert found.split() == [], f"build tools or headers in the runtime image: {found.split()}"
    installed = [line.split()[1] for line in dpkg.splitlines() if line.startswith("ii")]
    toolchain = [
        p
        for p in installed
        if re.fullmatch(r"(gcc|cpp|g\+\+|clang|binutils)(-[\d.]+)?|make|build-essential|.*-dev", p)
    ]
    assert toolchain == [], f"compiler or development packages in the runtime image: {toolchain}"
    installed_python = json.loads(frozen)
    packages = {canonical(p["name"]): p["version"] for p in installed_python}
    locked = dict(
        (canonical(line.split("==")[0]), line.split("==")[1].strip())
        for line in (ROOT / "requirements/app.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    # The lock, the pip and setuptools the Dockerfile pins, and the app: no wheel, no Cython.
    expected = {**locked, "pip": "25.3", "setuptools": "80.9.0", "nyxcore": packages.get("nyxcore", "?")}
    extra = {name: version for name, version in packages.items() if name not in expected}
    # redis needs async-timeout on Python < 3.11.3 only: the stand-in's Debian Python is 3.11.2, the
    # pinned official image's 3.11.11 is not.
    if python_version < (3, 11, 3):
        extra.pop("async-timeout", None)
    assert extra == {} and {n: packages.get(n) for n in expected} == expected, (extra, packages)
    print(f"\nimage size: {nyxcore_image.size_bytes / 1e6:.0f} MB")


def test_the_image_is_built_from_the_pinned_base_and_runs_the_web_server_by_default(
    nyxcore_image: BuiltImage,
) -> None:
    config = image_config(nyxcore_image.image)
    assert base_image_name() == "python:3.11.11-slim-bookworm"
    assert config["User"] == f"{UID}:{UID}"
    assert config["Cmd"] == ["gunicorn", "wsgi:app", "-c", "gunicorn.conf.py"]
    assert config["WorkingDir"] == "/app"
    assert "NYXCORE_ENV=production" in config["Env"]


def test_every_container_runs_as_uid_10001_on_a_read_only_root_with_a_writable_tmp(stack: ImageStack) -> None:
    for role in ("web", "worker", "beat"):
        container = stack.containers[role]
        ids = container.exec("sh", "-c", "id -u; id -g")
        assert ids.stdout.split() == [UID, UID], (role, ids.stdout, ids.stderr)
        # The processes themselves, not only what `exec` gets: PID 1's real and effective ids.
        status = container.exec("cat", "/proc/1/status").stdout
        assert re.search(rf"^Uid:\s+{UID}\s+{UID}\s+{UID}\s+{UID}$", status, re.MULTILINE), (role, status)
        assert re.search(r"^NoNewPrivs:\s+1$", status, re.MULTILINE), role
        refused = container.exec("sh", "-c", "touch /app/written /opt/venv/written")
        assert refused.returncode != 0 and "Read-only file system" in refused.stderr, (role, refused)
        assert container.exec("sh", "-c", "touch /tmp/written && rm /tmp/written").returncode == 0, role
    # beat keeps its schedule on the tmpfs, the one writable place.
    assert stack.containers["beat"].exec("sh", "-c", "ls /tmp/celerybeat-schedule*").returncode == 0


def test_the_health_checks_pass_as_docker_runs_them_and_fail_when_the_app_does_not_answer(
    stack: ImageStack, nyxcore_image: BuiltImage
) -> None:
    # web's check in the compose file is the image's HEALTHCHECK; worker and beat have their own.
    image_check = image_config(nyxcore_image.image)["Healthcheck"]["Test"]
    assert image_check[0] == "CMD" and f"{IMAGE_HEALTH_URL}/api/v1/health" in image_check[-1]
    assert stack.compose["services"]["web"]["healthcheck"]["test"] == image_check
    deadline = time.monotonic() + START_TIMEOUT
    for role in ("web", "worker", "beat"):
        container = stack.containers[role]
        wait_until(
            lambda c=container: c.state()["Health"]["Status"] == "healthy",
            f"{role} healthy",
            timeout=max(deadline - time.monotonic(), 1),
            watch=[container],
        )
        log = container.state()["Health"]["Log"]
        assert log and log[-1]["ExitCode"] == 0, (role, log)
    # ... and the image's check fails when nothing answers on the port it asks.
    web = stack.containers["web"]
    failing = web.exec(
        *[part.replace(IMAGE_HEALTH_URL, f"http://127.0.0.1:{free_port()}") for part in image_check[1:]]
    )
    assert failing.returncode != 0


# ---------------------------------------------------------------------------------------------------
# The roles: migrate, then a sign-up, an invitation and its magic link through nginx, web and worker.


def test_migrate_creates_the_schema_as_the_owner_and_checks_the_app_role(stack: ImageStack) -> None:
    assert "Running upgrade" in stack.migrate_output
    assert "subject to row-level security" in stack.migrate_output
    engine = create_engine(stack.database_url)
    try:
        with engine.connect() as conn:
            owner = conn.execute(
                text("SELECT tableowner FROM pg_tables WHERE tablename = 'tenants'")
            ).scalar_one()
            heads = conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one()
        assert (
            owner
            == make_url(
                stack.compose["services"]["migrate"]["environment"]["MIGRATION_DATABASE_URL"]
            ).username
        )
        assert heads == 1
    finally:
        engine.dispose()


def test_sign_up_invite_and_accept_the_magic_link_through_nginx_and_the_containers(stack: ImageStack) -> None:
    started = time.monotonic()
    owner_email, invitee_email = (
        f"owner-{uuid.uuid4().hex[:8]}@example.com",
        f"new-{uuid.uuid4().hex[:8]}@example.com",
    )
    owner = Browser(stack.https)
    page = owner.get("/auth/signup")
    form = {
        "csrf_token": csrf_from(page.body),
        "name": "Ima Owner",
        "email": owner_email,
        "password": PASSWORD,
    }
    assert owner.post_from_page("/auth/signup", form).status == 303

    # The worker container delivers the verification mail; its link signs the owner in.
    verify = stack.live.link_to(owner_email, "/auth/verify/").removeprefix(stack.https)
    confirmed = owner.post_from_page(verify, {"csrf_token": csrf_from(owner.get(verify).body)})
    assert confirmed.status == 303 and confirmed.headers["Location"].endswith("/team/"), confirmed.body

    token = csrf_from(owner.get("/teams/new").body)
    created = owner.post_from_page("/teams/new", {"csrf_token": token, "name": TEAM, "slug": ""})
    assert created.status in (302, 303), created.body
    invitations = owner.get("/team/invitations")
    assert TEAM in invitations.body
    sent = owner.post_from_page(
        "/team/invitations",
        {"csrf_token": csrf_from(invitations.body), "emails": invitee_email, "role": "member"},
    )
    assert sent.status == 200 and "1 of 1 address invited." in sent.body, sent.body

    # The invitation, delivered by the worker container: the magic link opens through nginx.
    link = stack.live.magic_link(invitee_email).removeprefix(stack.https)
    invitee = Browser(stack.https)
    shown = invitee.get(link)
    assert shown.status == 200 and f"Join {TEAM}" in shown.body
    signup = invitee.get(f"{link}/signup")
    joined = invitee.post_from_page(
        f"{link}/signup",
        {"csrf_token": csrf_from(signup.body), "name": "Nia Newcomer", "password": "another long passphrase"},
    )
    assert joined.status == 303, joined.body
    team_page = invitee.get("/team/")
    assert team_page.status == 200
    assert f"Welcome to {TEAM}. You joined as member." in team_page.body
    engine = create_engine(stack.database_url)
    try:
        with engine.connect() as conn:
            role = conn.execute(
                text(
                    "SELECT m.role FROM tenant_members m JOIN users u ON u.id = m.user_id "
                    "JOIN tenants t ON t.id = m.tenant_id WHERE u.email = :e AND t.name = :t"
                ),
                {"e": invitee_email, "t": TEAM},
            ).scalar_one()
        assert role == "member"
    finally:
        engine.dispose()
    TIMINGS["sign-up, invite, accept"] = round(time.monotonic() - started, 1)


# ---------------------------------------------------------------------------------------------------
# docker-compose.yml: valid, and what it runs is what ran here.


def test_docker_compose_config_accepts_the_compose_file_with_a_filled_in_env(tmp_path: Path) -> None:
    result, resolved = compose_config(tmp_path / "ok", env_from_example(sample_secrets()))
    assert result.returncode == 0, result.stderr
    assert set(resolved["services"]) == {"db", "redis", "migrate", "web", "worker", "beat", "nginx"}
    # The passwords the db service needs are required: an .env without them is refused.
    refused, _ = compose_config(tmp_path / "empty", env_from_example({}))
    assert refused.returncode != 0
    assert "set POSTGRES_PASSWORD in .env" in refused.stderr


def test_the_containers_ran_the_commands_and_options_of_the_compose_file(
    stack: ImageStack, nyxcore_image: BuiltImage
) -> None:
    source = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for role in APP_ROLES:
        container = stack.containers[role]
        ran = container.inspect()
        # The compose file as written, the container as docker ran it: the same command.
        assert ran["Config"]["Cmd"] == source[role]["command"] == stack.commands[role], role
        assert ran["Image"] == nyxcore_image.image, role
        assert ran["HostConfig"]["ReadonlyRootfs"] is source[role]["read_only"] is True, role
        assert list(ran["HostConfig"]["Tmpfs"]) == source[role]["tmpfs"], role
        assert ran["HostConfig"]["SecurityOpt"] == source[role]["security_opt"], role
        assert ran["HostConfig"]["NetworkMode"] == "host", role
        env = dict(item.split("=", 1) for item in ran["Config"]["Env"])
        # Only migrate holds the owner role's URL.
        assert bool(env["MIGRATION_DATABASE_URL"]) == (role == "migrate"), role
    assert stack.containers["web"].state()["Running"]
