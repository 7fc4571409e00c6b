"""An invitation's email is written to the outbox first, and the invitation inserted pointing at it
(issue 15: an UPDATE per invitation fewer); a conflicting invitation takes its email back with it.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy.engine import Engine

from nyxcore import tenancy
from nyxcore.errors import Conflict
from nyxcore.extensions import db
from nyxcore.models import Tenant, User
from nyxcore.roles import TenantRole
from nyxcore.services import mail
from nyxcore.services.invitations import issuing
from tests.helpers import dicts, recorded_statements


def test_an_invitation_is_inserted_pointing_at_its_email_with_no_update(
    app: Flask, as_admin: Any, admin_engine: Engine
) -> None:
    with recorded_statements(app) as statements:
        response = as_admin.post_form("/team/invitations", {"emails": "a@example.com, b@example.com", "role": "member"})
    assert response.status_code == 200
    writes = [
        table
        for statement in statements
        for table in ("INSERT INTO outbox_emails", "INSERT INTO invitations", "UPDATE invitations")
        if table in statement
    ]
    assert writes == ["INSERT INTO outbox_emails", "INSERT INTO invitations"] * 2
    linked = dicts(
        admin_engine,
        "SELECT i.email, o.to_address FROM invitations i JOIN outbox_emails o ON o.id = i.outbox_email_id "
        "ORDER BY i.email",
    )
    assert linked == [
        {"email": "a@example.com", "to_address": "a@example.com"},
        {"email": "b@example.com", "to_address": "b@example.com"},
    ]


def test_an_invitation_that_conflicts_takes_its_email_back(app: Flask, team: Any, admin_engine: Engine) -> None:
    admin = team.accounts[TenantRole.ADMIN]
    with app.app_context(), tenancy.tenant_context(user_id=admin.user_id, tenant_id=team.id):
        inviter, tenant = db.session.get(User, admin.user_id), db.session.get(Tenant, team.id)
        assert inviter is not None and tenant is not None
        first = issuing.issue_invitation(inviter, tenant, "twice@example.com", TenantRole.MEMBER).outbox_email_id
        # As when a concurrent request invited them first: the open-invitation index refuses the second.
        with pytest.raises(Conflict):
            issuing.issue_invitation(inviter, tenant, "twice@example.com", TenantRole.MEMBER)
        queued = list(db.session.info[mail._QUEUED])  # what dispatch_queued would hand to Celery
        db.session.commit()
        mail.discard_queued()
        db.session.remove()
    assert queued == [first]
    assert dicts(admin_engine, "SELECT to_address FROM outbox_emails") == [{"to_address": "twice@example.com"}]
