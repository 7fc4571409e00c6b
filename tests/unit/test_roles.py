"""The role rules, exhaustively."""

from __future__ import annotations

from itertools import product

import pytest

from nyxcore.roles import TenantRole, can_manage_role, grantable_roles, has_min_role

O, A, M, V = TenantRole.OWNER, TenantRole.ADMIN, TenantRole.MEMBER, TenantRole.VIEWER
ORDER = [V, M, A, O]


@pytest.mark.parametrize(("role", "minimum"), list(product([*ORDER, None], ORDER)))
def test_has_min_role(role, minimum):
    expected = role is not None and ORDER.index(role) >= ORDER.index(minimum)
    assert has_min_role(role, minimum) is expected


# (actor, target's current role, target's new role) -> allowed. Every combination is listed.
MANAGE_TABLE = {
    **{(O, cur, new): True for cur in ORDER for new in ORDER},
    **{(A, cur, new): cur in (M, V) and new in (M, V) for cur in ORDER for new in ORDER},
    **{(M, cur, new): False for cur in ORDER for new in ORDER},
    **{(V, cur, new): False for cur in ORDER for new in ORDER},
    **{(None, cur, new): False for cur in ORDER for new in ORDER},
}


def test_the_tables_name_every_role_there_is():
    # ORDER is written by hand; a role added to TenantRole must be ranked here (and so in MANAGE_TABLE).
    assert sorted(ORDER, key=str) == sorted(TenantRole, key=str)
    assert {actor for actor, _, _ in MANAGE_TABLE} == {*TenantRole, None}


@pytest.mark.parametrize(("actor", "current", "new"), list(MANAGE_TABLE))
def test_can_manage_role(actor, current, new):
    assert can_manage_role(actor, current, new) is MANAGE_TABLE[(actor, current, new)]


def test_no_one_grants_above_their_own_role_or_acts_above_it():
    for actor, current, new in MANAGE_TABLE:
        if can_manage_role(actor, current, new):
            assert actor is not None
            assert has_min_role(actor, new)
            assert has_min_role(actor, current)


@pytest.mark.parametrize(("actor", "roles"), [(O, [O, A, M, V]), (A, [M, V]), (M, []), (V, []), (None, [])])
def test_grantable_roles(actor, roles):
    assert grantable_roles(actor) == roles
