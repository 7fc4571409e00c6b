"""A Redis outage turns nothing into a 500: rate limits fall back to memory.

Flask-Limiter keeps its storage per process, so each case runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import json, sys
from nyxcore import create_app
from tests.conftest import PASSWORD, Client, TestDatabase, test_config
database = TestDatabase(**json.loads(sys.argv[1]))
config = test_config(database, RATELIMIT_ENABLED=True, RATELIMIT_STORAGE_URI="redis://127.0.0.1:1/0",
                     PROPAGATE_EXCEPTIONS=False)
config.update(json.loads(sys.argv[2]))
app = create_app(config)
app.test_client_class = Client
client = app.test_client()
signup = client.post_form("/auth/signup", {"name": "Ada", "email": sys.argv[3], "password": PASSWORD})
magic = client.get("/invite/" + "x" * 43)
print(json.dumps([signup.status_code, magic.status_code]))
"""


def run_case(database, overrides: dict[str, bool], email: str) -> list[int]:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(database.__dict__), json.dumps(overrides), email],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return list(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, [303, 404]),
        # Shows the check can fail: without the fallback the limiter's storage error is a 500.
        ({"RATELIMIT_SWALLOW_ERRORS": False, "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": False}, [500, 500]),
    ],
)
def test_sign_up_and_magic_link_while_rate_limit_storage_is_down(database, overrides, expected):
    assert run_case(database, overrides, f"ada-{len(overrides)}@example.com") == expected
