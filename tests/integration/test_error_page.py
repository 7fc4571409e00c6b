"""The 500 page itself must not fail, even after a flush that left the session unusable."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from nyxcore.authz import acting, role_required
from nyxcore.error_pages import database_unreachable
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


@pytest.mark.own_app  # it adds a route
def test_a_lost_database_connection_gets_a_clean_503_with_retry_after(
    app: Flask, team: Any, login_as: Any
) -> None:
    """What a request in flight sees when PostgreSQL restarts (tests/deployment/test_faults.py does it
    for real): no 500, no traceback, and the page asks nothing more of the database."""
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.get("/database-gone")
    @role_required(notes.READ)
    def database_gone() -> str:
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))

    client = login_as(team.accounts[TenantRole.MEMBER], team.id)
    response = client.get("/database-gone")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    page = response.get_data(as_text=True)
    assert "Briefly unavailable" in page and "Traceback" not in page and "SELECT 1" not in page
    assert client.get("/team/").status_code == 200


def test_only_a_lost_or_refused_connection_reads_as_the_database_unreachable(database):
    engine = create_engine(database.admin_url)
    try:
        with engine.connect() as conn:  # the server answers: a statement timeout (SQLSTATE 57014)
            conn.execute(text("SET statement_timeout = 1"))
            with pytest.raises(OperationalError) as timed_out:
                conn.execute(text("SELECT pg_sleep(1)"))
    finally:
        engine.dispose()
    assert not database_unreachable(timed_out.value)  # a fault to log as a 500, not an outage
    refused = create_engine("postgresql://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 2})
    with pytest.raises(OperationalError) as no_server:
        refused.connect()
    assert database_unreachable(no_server.value)
