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
import re
import secrets
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
    engine_problem,
    ensure_base_image,
    image_config,
    timed,
    wait_for,
)
from tests.e2e.live_app import LiveApp, delete_queue
from tests.helpers import free_port
from tests.integration.mailserver import running_mail_server
from tests.integration.test_deployment import (
    Browser,
    nginx_command,
    plain_status,
    write_nginx_config,
)
from tests.live import ROOT, LiveServers

if TYPE_CHECKING:
    from tests.conftest import TestDatabase

APP_ROLES = ("migrate", "web", "worker", "beat")
UID = "10001"
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
    timings: dict[str, float] = field(default_factory=dict)


@pytest.fixture(scope="module")
def stack(
    nyxcore_image: BuiltImage, database: TestDatabase, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ImageStack]:
    prefix = tmp_path_factory.mktemp("image")
    name = f"nyxcore_image_{uuid.uuid4().hex[:8]}"  # an empty database, for `migrate` to create
    server = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name} OWNER {database.owner_role}"))
    queue, limits = f"nyxcore-image-{uuid.uuid4().hex[:12]}", f"nyxcore-image-{uuid.uuid4().hex[:12]}"
    web_port, http_port, https_port = free_port(), free_port(), free_port()
    https = f"https://127.0.0.1:{https_port}"
    try:
        with running_mail_server() as mail, Containers() as containers, LiveServers(prefix) as servers:
            values = {
                **sample_secrets(),
                "DATABASE_URL": make_url(database.app_url)
                .set(database=name)
                .render_as_string(hide_password=False),
                "MIGRATION_DATABASE_URL": make_url(database.owner_url)
                .set(database=name)
                .render_as_string(hide_password=False),
                "NYXCORE_APP_ROLE": database.app_role,
                "REDIS_URL": REDIS_URL,
                "PUBLIC_URL": https,
                "SMTP_HOST": mail.host,
                "SMTP_PORT": str(mail.port),
                "SMTP_STARTTLS": "false",
                "CELERY_TASK_DEFAULT_QUEUE": queue,
                "RATELIMIT_KEY_PREFIX": limits,
                "GUNICORN_WORKERS": "1",
            }
            result, compose = compose_config(prefix / "compose", env_from_example(values))
            assert result.returncode == 0, result.stderr
            services = compose["services"]
            # What compose sets for its own network, here for the host's: gunicorn on a free loopback
            # port, and nginx (on the host, so the loopback) the one trusted proxy.
            host_network = {"web": {"GUNICORN_BIND": f"127.0.0.1:{web_port}", "TRUSTED_PROXIES": "127.0.0.1"}}
            commands = {role: list(services[role]["command"]) for role in APP_ROLES}

            def start(role: str, *, detach: bool = True) -> tuple[Container, str]:
                env = {k: str(v) for k, v in services[role]["environment"].items()}
                env.update(host_network.get(role, {}))
                return containers.run(
                    role,
                    nyxcore_image.image,
                    commands[role],
                    options=docker_run_options(services[role]),
                    env=env,
                    detach=detach,
                )

            timings: dict[str, float] = {}
            with timed(timings, "migrate (upgrade + role check)"):
                migrate, migrate_output = start("migrate", detach=False)
            assert migrate.state()["ExitCode"] == 0, migrate_output
            with timed(timings, "web, worker, beat ready"):
                started = {role: start(role)[0] for role in ("web", "worker", "beat")}
                watched = list(started.values())
                wait_for(
                    lambda: plain_status(web_port, "/api/v1/health") == 200, "web", timeout=60, watch=watched
                )
                wait_for(lambda: " ready." in started["worker"].logs(), "worker", timeout=60, watch=watched)
                wait_for(
                    lambda: "beat: Starting" in started["beat"].logs(), "beat", timeout=60, watch=watched
                )
            files = write_nginx_config(
                prefix / "nginx", upstream_port=web_port, http_port=http_port, https_port=https_port
            )
            nginx = servers.spawn(
                "nginx", nginx_command(files, "-g", "daemon off;"), env={"PATH": "/usr/sbin:/usr/bin:/bin"}
            )
            servers.wait_until(
                lambda: plain_status(https_port, "/api/v1/health", tls=True) == 200, "nginx", watch=[nginx]
            )
            TIMINGS.update(timings)
            yield ImageStack(
                https=https,
                database_url=make_url(database.admin_url)
                .set(database=name)
                .render_as_string(hide_password=False),
                migrate_output=migrate_output,
                compose=compose,
                containers={"migrate": migrate, **started},
                commands=commands,
                live=LiveApp(url=https, mail=mail, web=started["web"], worker=started["worker"], queue=queue),
                web_port=web_port,
                timings=timings,
            )
    finally:
        print("\nimage test timings (s):", TIMINGS)
        delete_queue(queue)
        client = redis.Redis.from_url(REDIS_URL)
        try:
            for key in client.scan_iter(match=f"*{limits}*"):
                client.delete(key)
        finally:
            client.close()
        with server.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"), {"d": name}
            )
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        server.dispose()


# ---------------------------------------------------------------------------------------------------
# What the README promises of the image.


def test_the_runtime_image_has_no_build_tools_and_only_the_locked_packages(nyxcore_image: BuiltImage) -> None:
    image = nyxcore_image.image
    probe = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            image,
            "sh",
            "-c",
            "for tool in gcc cc c++ g++ clang make ld as cpp pg_config; do command -v $tool; done; "
            "ls -d /usr/include/python3* /usr/include/postgresql 2>/dev/null; "
            "echo ---; dpkg-query -W -f '${db:Status-Abbrev} ${Package}\\n'; echo ---; python -V; echo ---; "
            "pip list --format json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    found, dpkg, python, frozen = probe.stdout.split("---\n")
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


def test_the_images_health_check_passes_and_fails_when_the_app_does_not_answer(
    stack: ImageStack, nyxcore_image: BuiltImage
) -> None:
    check = image_config(nyxcore_image.image)["Healthcheck"]["Test"]
    assert check[0] == "CMD" and "http://127.0.0.1:8000/api/v1/health" in check[-1]
    web = stack.containers["web"]
    # The check names the image's default port; gunicorn listens on the port GUNICORN_BIND gives (a
    # free one: the host's network is shared), so the same command is run with that port.
    passing = web.exec(*[part.replace(":8000/", f":{stack.web_port}/") for part in check[1:]])
    assert passing.returncode == 0, passing.stderr
    failing = web.exec(*[part.replace(":8000/", f":{free_port()}/") for part in check[1:]])
    assert failing.returncode != 0


def test_the_worker_and_beat_pass_the_health_checks_compose_gives_them(stack: ImageStack) -> None:
    for role in ("worker", "beat"):
        kind, *command = stack.compose["services"][role]["healthcheck"]["test"]
        # Compose writes $$ for a literal $; `config` leaves it escaped.
        argv = ["sh", "-c", command[0].replace("$$", "$")] if kind == "CMD-SHELL" else command
        result = stack.containers[role].exec(*argv, timeout=40)
        assert result.returncode == 0, (role, result.stdout, result.stderr)


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
        ran = yaml.safe_load(
            subprocess.run(
                ["docker", "inspect", "--format", "{{json .}}", container.id],
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            ).stdout
        )
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
