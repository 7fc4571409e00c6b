"""The active team: overview and members (`/team/...`)."""

from __future__ import annotations

from flask import Blueprint, render_template

from nyxcore.authz import current_membership, role_required
from nyxcore.roles import TenantRole
from nyxcore.services import members

bp = Blueprint("team", __name__, url_prefix="/team")


@bp.get("/")
@role_required(TenantRole.VIEWER)
def overview() -> str:
    membership = current_membership()
    assert membership is not None
    page = members.list_members(page=1)
    return render_template("team/overview.html", tenant=membership.tenant, page=page)
