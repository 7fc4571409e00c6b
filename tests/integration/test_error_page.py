"""The 500 page itself must not fail, even after a flush that left the session unusable."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from nyxcore.authz import acting, role_required
from nyxcore.extensions import db
from nyxcore.models import Note
from nyxcore.roles import TenantRole
from nyxcore.services import notes


@pytest.mark.own_app  # it adds a route
def test_a_failed_flush_still_gets_the_error_page(app: Flask, team: Any, login_as: Any) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.get("/failing-flush")
    @role_required(notes.READ)
    def failing_flush() -> str:
        member = acting()
        # psycopg2 refuses NUL in text: the flush fails and SQLAlchemy rolls the session back.
        db.session.add(Note(tenant_id=member.tenant_id, author_id=member.user_id, title="a\x00b", body=""))
        db.session.flush()
        return "not reached"

    client = login_as(team.accounts[TenantRole.MEMBER], team.id)
    response = client.get("/failing-flush")
    assert response.status_code == 500
    page = response.get_data(as_text=True)
    assert "Something went wrong" in page
    assert client.get("/team/").status_code == 200  # the next request starts clean
