"""Gunicorn glue: the access log masks magic-link tokens, and gunicorn.conf.py reads the environment."""

from __future__ import annotations

import os
import runpy
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from gunicorn.config import Config

from nyxcore import create_app, serving
from nyxcore.config import load_config
from nyxcore.dbroles import assert_app_role_safe
from nyxcore.logs import redact
from nyxcore.serving import RedactingLogger

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dXg"  # the shape of a real one: 43 URL-safe characters


@pytest.mark.parametrize(
    "text",
    [
        f"GET /invite/{TOKEN} HTTP/1.1",
        f"/auth/signup?next=/invite/{TOKEN}&email=a%40example.com",
        f"/auth/login?next=%2Finvite%2F{TOKEN}",
        f"/auth/login?next=%2finvite%2f{TOKEN}",
        f"GET /join/{TOKEN} HTTP/1.1",
        f"/auth/login?next=%2Fjoin%2F{TOKEN}",
    ],
)
def test_redact_masks_invite_tokens_plain_and_percent_encoded(text):
    assert TOKEN not in redact(text)
    assert "[redacted]" in redact(text)


def test_access_log_atoms_are_redacted_everywhere_a_token_can_hide():
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": f"/invite/{TOKEN}?from=mail",
        "PATH_INFO": f"/invite/{TOKEN}",
        "QUERY_STRING": f"next=%2Finvite%2F{TOKEN}",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_REFERER": f"https://nyxcore.example.com/invite/{TOKEN}",
    }
    response = SimpleNamespace(status="404 NOT FOUND", headers=[("Location", f"/invite/{TOKEN}")], sent=12)
    request = SimpleNamespace(headers=[("REFERER", environ["HTTP_REFERER"])])
    logger = object.__new__(RedactingLogger)  # atoms() needs no handlers; __init__ would install them
    logger.cfg = SimpleNamespace(
        access_log_format='%(r)s %(U)s %(q)s %(s)s "%(f)s" %({Referer}i)s %({location}o)s %({http_referer}e)s'
    )

    atoms = logger.atoms(response, request, environ, timedelta(milliseconds=3))

    assert TOKEN not in repr(atoms)
    assert atoms["r"] == "GET /invite/[redacted]?from=mail HTTP/1.1"
    assert atoms["U"] == "/invite/[redacted]"
    assert atoms["f"] == "https://nyxcore.example.com/invite/[redacted]"
    assert atoms["s"] == "404"
    assert atoms["{location}o"] == "/invite/[redacted]"


def test_access_log_makes_only_the_atoms_its_format_uses():
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/team/",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_USER_AGENT": "curl/8",
        "HTTP_X_REQUEST_ID": "abc",
        "wsgi.input": object(),
    }
    response = SimpleNamespace(status="200 OK", headers=[("Content-Type", "text/html")], sent=5)
    request = SimpleNamespace(headers=[("USER-AGENT", "curl/8"), ("X-REQUEST-ID", "abc")])
    logger = object.__new__(RedactingLogger)
    logger.cfg = SimpleNamespace(access_log_format=read_gunicorn_conf_format())

    atoms = logger.atoms(response, request, environ, timedelta(milliseconds=3))

    assert set(atoms) == {"h", "r", "s", "b", "M", "f", "a", "{x-request-id}i"}
    assert atoms["{x-request-id}i"] == "abc"
    assert atoms["a"] == "curl/8"
    assert atoms["M"] == 3


def read_gunicorn_conf_format() -> str:
    log_format = runpy.run_path(str(ROOT / "gunicorn.conf.py"))["access_log_format"]
    assert isinstance(log_format, str)
    return log_format


def read_gunicorn_conf(monkeypatch: pytest.MonkeyPatch, **environ: str) -> dict[str, object]:
    for name in [n for n in os.environ if n.startswith("GUNICORN_")]:
        monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    namespace = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    imported = {"os", "RedactingLogger", "refuse_unsafe_database_role"}
    return {k: v for k, v in namespace.items() if not k.startswith("_") and k not in imported}


def test_gunicorn_conf_defaults(monkeypatch):
    settings = read_gunicorn_conf(monkeypatch)
    assert settings["bind"] == ["127.0.0.1:8000"]
    assert (settings["workers"], settings["threads"], settings["timeout"]) == (2, 4, 30)
    assert settings["accesslog"] == "-"
    assert settings["logger_class"] is RedactingLogger
    assert settings["on_starting"] is serving.refuse_unsafe_database_role
    assert settings["forwarded_allow_ips"] == ""  # ProxyFix alone reads X-Forwarded-*


def test_gunicorn_conf_reads_the_environment_and_names_only_real_settings(monkeypatch):
    settings = read_gunicorn_conf(
        monkeypatch, GUNICORN_BIND="127.0.0.1:9000", GUNICORN_WORKERS="5", GUNICORN_THREADS="8"
    )
    assert settings["bind"] == ["127.0.0.1:9000"]
    assert (settings["workers"], settings["threads"]) == (5, 8)
    config = Config()
    for name, value in settings.items():
        assert name in config.settings, f"{name} is not a gunicorn setting"
        config.set(name, value)  # gunicorn's own validation


def test_role_check_makes_no_connection_outside_production(tmp_path):
    # Development pointed at a port where nothing listens: the check must not even try.
    config = load_config(
        {"NYXCORE_ENV": "development", "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
        instance_path=str(tmp_path),
    )
    assert_app_role_safe(create_app(config))
    sqlite = load_config({"NYXCORE_ENV": "development"}, instance_path=str(tmp_path))
    assert_app_role_safe(create_app(sqlite))
