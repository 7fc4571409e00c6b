"""Configuration: every setting documented, production refuses unsafe defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nyxcore.config import DEV_ENCRYPTION_KEYS, ConfigError, check_production, load_config
from nyxcore.crypto import generate_key_setting

ROOT = Path(__file__).resolve().parents[2]
GOOD_PRODUCTION = {
    "NYXCORE_ENV": "production",
    "SECRET_KEY": "x" * 48,
    "DATABASE_URL": "postgresql://app@db/nyxcore",
    "REDIS_URL": "redis://redis:6379/0",
    "NYXCORE_ENCRYPTION_KEYS": generate_key_setting("k1"),
}


def test_env_example_lists_every_setting_the_config_reads():
    source = (ROOT / "nyxcore" / "config.py").read_text()
    read = set(re.findall(r'env(?:\.get)?\(\s*"([A-Z_]+)"', source)) | set(
        re.findall(r'_int\(env, "([A-Z_]+)"', source)
    )
    documented = set(re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    assert read, "found no settings in config.py"
    assert read - documented == set()


def test_an_unset_environment_means_production():
    # `gunicorn wsgi:app` started by hand must not run on the published development keys.
    assert load_config({})["NYXCORE_ENV"] == "production"
    assert load_config({"NYXCORE_ENV": ""})["NYXCORE_ENV"] == "production"
    with pytest.raises(ConfigError, match="SECRET_KEY must be set"):
        check_production(load_config({}))


def test_development_needs_no_settings():
    config = load_config({"NYXCORE_ENV": "development"}, instance_path="/srv/nyx")
    check_production(config)
    assert config["SQLALCHEMY_DATABASE_URI"] == "sqlite:////srv/nyx/nyxcore.db"
    assert config["CELERY"]["task_always_eager"] is True
    assert config["MAIL_BACKEND"] == "console"


def test_good_production_config_passes():
    check_production(load_config(GOOD_PRODUCTION))


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"SECRET_KEY": ""}, "SECRET_KEY"),
        ({"SECRET_KEY": "dev-only-secret-key-do-not-use-in-production"}, "SECRET_KEY"),
        ({"NYXCORE_ENCRYPTION_KEYS": ""}, "NYXCORE_ENCRYPTION_KEYS must be set"),
        ({"NYXCORE_ENCRYPTION_KEYS": DEV_ENCRYPTION_KEYS}, "published development key"),
        # The published key under another id, or with stray separators, is refused all the same.
        ({"NYXCORE_ENCRYPTION_KEYS": "prod:" + DEV_ENCRYPTION_KEYS.partition(":")[2]}, "published development key"),
        ({"NYXCORE_ENCRYPTION_KEYS": generate_key_setting("k2") + ",old:" + DEV_ENCRYPTION_KEYS.partition(":")[2]}, "published development key"),
        ({"NYXCORE_ENCRYPTION_KEYS": " " + DEV_ENCRYPTION_KEYS}, "malformed"),
        ({"NYXCORE_ENCRYPTION_KEYS": DEV_ENCRYPTION_KEYS + ","}, "malformed"),
        ({"TRUSTED_PROXIES": "nginx.internal"}, "TRUSTED_PROXIES"),
        ({"NYXCORE_ENCRYPTION_KEYS": "k1:not-base64!"}, "malformed"),
        ({"NYXCORE_ENCRYPTION_KEYS": "k1:c2hvcnQ="}, "must be 32 bytes"),
        ({"DATABASE_URL": ""}, "DATABASE_URL"),
        ({"REDIS_URL": ""}, "REDIS_URL"),
        ({"CELERY_TASK_ALWAYS_EAGER": "true"}, "EAGER"),
    ],
)
def test_production_refuses_unsafe_settings(change, complaint):
    with pytest.raises(ConfigError, match=complaint):
        check_production(load_config({**GOOD_PRODUCTION, **change}))


def test_unknown_environment_is_refused():
    with pytest.raises(ConfigError, match="NYXCORE_ENV"):
        load_config({"NYXCORE_ENV": "staging"})


def test_non_numeric_setting_is_refused():
    with pytest.raises(ConfigError, match="SMTP_PORT"):
        load_config({"SMTP_PORT": "twenty-five"})


def test_production_without_smtp_host_does_not_print_mail_with_its_links_to_the_log():
    # The console backend prints each message, reset and magic links included, to the worker's
    # stdout (past the log redaction): production must never fall back to it unasked.
    config = load_config(GOOD_PRODUCTION)
    check_production(config)
    assert config["MAIL_BACKEND"] == "smtp"
    assert load_config({**GOOD_PRODUCTION, "MAIL_BACKEND": "console"})["MAIL_BACKEND"] == "console"  # said so
    assert load_config({"NYXCORE_ENV": "development"})["MAIL_BACKEND"] == "console"
