"""Error pages leave no dead end (issue 17): each shows the request id to quote, and 429 says when to try again."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from flask import Flask, abort

from nyxcore.errors import Conflict, Gone, InvalidInput, NotFound, PermissionDenied

RAISES = {
    400: InvalidInput("That will not do."),
    403: PermissionDenied("Not for you."),
    404: NotFound(),
    409: Conflict("It clashes."),
    410: Gone("It is gone."),
}


def quoted_id(response: Any) -> str:
    match = re.search(r"quote this request id: <code>([^<]+)</code>", response.get_data(as_text=True))
    assert match, response.get_data(as_text=True)
    return match.group(1)


@pytest.mark.own_app  # it adds routes
@pytest.mark.parametrize("status", [*RAISES, 405, 500])
def test_every_error_page_shows_the_request_id_it_was_logged_under(app: Flask, anonymous: Any, status: int) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.get("/fails")
    def fails() -> str:
        if status == 500:
            raise RuntimeError("a bug")
        if status == 405:
            abort(405)
        raise RAISES[status]

    response = anonymous.get("/fails")
    assert response.status_code == status
    assert quoted_id(response) == response.headers["X-Request-ID"]
    sent = anonymous.get("/fails", headers={"X-Request-ID": "edge-7f3a.1"})  # a proxy's id is kept and quoted
    assert "<code>edge-7f3a.1</code>" in sent.get_data(as_text=True) and sent.headers["X-Request-ID"] == "edge-7f3a.1"
    for forged in ("edge-<b>7</b>", "a b", "x" * 65):  # not an id: a fresh one instead, the text nowhere
        answer = anonymous.get("/fails", headers={"X-Request-ID": forged})
        assert re.fullmatch(r"[0-9a-f]{16}", answer.headers["X-Request-ID"])
        assert quoted_id(answer) == answer.headers["X-Request-ID"] and forged not in answer.get_data(as_text=True)


def test_real_404_and_405_pages_and_api_errors_carry_the_id(anonymous: Any) -> None:
    for response in (anonymous.get(f"/no-such-page-{uuid.uuid4()}"), anonymous.get("/auth/logout")):
        assert response.status_code in (404, 405)
        assert quoted_id(response) == response.headers["X-Request-ID"]
    api = anonymous.get("/api/v1/nothing-here")
    assert api.status_code == 404 and api.get_json()["request_id"] == api.headers["X-Request-ID"]


def test_the_rate_limit_page_says_when_to_try_again(app_config: dict[str, Any], request: pytest.FixtureRequest) -> None:
    app_config.update(RATELIMIT_ENABLED=True, RATELIMIT_LOGIN="2 per minute")
    client = request.getfixturevalue("make_client")()
    client.environ_base["REMOTE_ADDR"] = f"10.79.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"
    client.set_cookie("nyxcore_tz", "Asia/Kolkata")
    tries = [client.post_form("/auth/login", {"email": "nobody@example.com", "password": "wrong"}) for _ in range(3)]
    assert [t.status_code for t in tries] == [400, 400, 429]
    page = tries[-1].get_data(as_text=True)
    match = re.search(r"Try again in (\d+) seconds? \(at (\d\d:\d\d:\d\d), Asia/Kolkata\)\.", page)
    assert match, page
    assert 1 <= int(match.group(1)) <= 62  # a minute's window, rounded up by the storage's whole seconds
    assert abs(int(tries[-1].headers["Retry-After"]) - int(match.group(1))) <= 1
    assert quoted_id(tries[-1]) == tries[-1].headers["X-Request-ID"]
