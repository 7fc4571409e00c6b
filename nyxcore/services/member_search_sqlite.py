"""The member list where migration 0017's functions do not exist: SQLite, under `make run`.

Search gives the same matches as those functions (the name or the address contains the term, LIKE with
a backslash escape), read over the whole team whatever the term's length: a development database is
small. (The statement itself is member_list._member_rows; it reads the ids as text, database.IdText.)
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import String, bindparam, func, or_, select

from nyxcore.models import TenantMember, User


def matches() -> Any:
    """The member's name or address is LIKE the `pattern` parameter (pagination.like_pattern)."""
    pattern = bindparam("pattern", type_=String)
    return or_(func.lower(User.name).like(pattern, escape="\\"), User.email.like(pattern, escape="\\"))


def match_count() -> Any:
    """How many of the `tenant_id` team's live members match, counting at most `match_cap` of them."""
    some = (
        select(TenantMember.id)
        .join(User, User.id == TenantMember.user_id)
        .where(TenantMember.tenant_id == bindparam("tenant_id"), TenantMember.live_at(func.now()), matches())
        .limit(bindparam("match_cap"))
    )
    return select(func.count()).select_from(some.subquery()).scalar_subquery()
