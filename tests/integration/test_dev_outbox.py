"""/dev/outbox: development only, signed in only, and only the mail a person may read."""

from __future__ import annotations

from typing import Any

import pytest

from nyxcore import create_app
from nyxcore.config import load_config
from nyxcore.extensions import db
from nyxcore.roles import TenantRole
from nyxcore.services.mail import ConsoleTransport
from tests.conftest import Client, test_config
from tests.integration.test_invitations import LINK_PREFIX, invite, page


@pytest.fixture
def dev_app(database: Any) -> Any:
    ConsoleTransport.recent.clear()
    application = create_app(test_config(database, SHOW_DEV_OUTBOX=True))  # console mail, tasks in-process
    application.test_client_class = Client
    yield application
    ConsoleTransport.recent.clear()
    with application.app_context():
        db.engine.dispose()


def test_the_outbox_is_off_unless_development_asks_for_it(dev_app: Any, make_user: Any) -> None:
    assert load_config({"NYXCORE_ENV": "development"})["SHOW_DEV_OUTBOX"] is True
    assert load_config({"NYXCORE_ENV": "testing"})["SHOW_DEV_OUTBOX"] is False
    assert load_config({})["SHOW_DEV_OUTBOX"] is False  # unset: production
    client = dev_app.test_client()
    assert client.login(make_user().email).status_code == 302
    assert client.get("/dev/outbox").status_code == 200
    # Production answers 404 even with the switch forced on.
    dev_app.config["NYXCORE_ENV"] = "production"
    assert client.get("/dev/outbox").status_code == 404
    dev_app.config["NYXCORE_ENV"] = "testing"
    dev_app.config["SHOW_DEV_OUTBOX"] = False
    assert client.get("/dev/outbox").status_code == 404


def test_the_outbox_needs_a_signed_in_user(dev_app: Any) -> None:
    reply = dev_app.test_client().get("/dev/outbox")
    assert reply.status_code == 302
    assert "/auth/login" in reply.headers["Location"]


def test_people_read_only_mail_to_them_or_for_a_team_they_manage(
    dev_app: Any, make_user: Any, add_member: Any
) -> None:
    owner = make_user(name="Ada Lovelace")
    viewer = make_user(name="Vic Viewer")
    stranger = make_user(name="Sam Stranger")
    add_member(owner.team_id, viewer, TenantRole.VIEWER)

    def signed_in(account: Any) -> Client:
        client: Client = dev_app.test_client()
        assert client.login(account.email).status_code == 302
        if account is viewer:
            client.post_form("/teams/switch", {"tenant_id": str(owner.team_id)})
        return client

    owner_client = signed_in(owner)
    assert invite(owner_client, f"curious@example.com, {stranger.email}").status_code == 200
    owner_view = page(owner_client.get("/dev/outbox"))
    assert "To curious@example.com" in owner_view
    assert f"To {stranger.email}" in owner_view
    assert LINK_PREFIX in owner_view
    assert "Development mode" in owner_view and 'href="/dev/outbox"' in owner_view  # the banner

    stranger_view = page(signed_in(stranger).get("/dev/outbox"))
    assert f"To {stranger.email}" in stranger_view  # their own invitation
    assert "curious@example.com" not in stranger_view  # nobody else's magic link
    viewer_view = page(signed_in(viewer).get("/dev/outbox"))
    assert LINK_PREFIX not in viewer_view  # a viewer of the team does not manage its invitations
    assert "No messages yet." in viewer_view
