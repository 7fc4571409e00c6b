"""The member search's sub-selects on PostgreSQL: the member ids migration 0017's (and 0023's) functions return.

Built once, with parameters: `pattern` (pagination.like_pattern), a page's key (`at`, `key_id`), `limit`,
`match_cap` and `scan`. The functions answer for the team in the context only (`app.tenant_id`); the
member list reads the rows of the ids through `nyxcore_member_page`, for the team it names.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    DateTime,
    Select,
    String,
    Uuid,
    bindparam,
    column,
    func,
    literal,
    null,
    select,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import ARRAY

from nyxcore.pagination import BEFORE, LAST

KEY = (bindparam("at", type_=DateTime(timezone=True)), bindparam("key_id", type_=Uuid()))  # a page's key


def _found(function: str, *arguments: Any) -> Select[Any]:
    """The member ids one of the search functions returns, as a sub-select."""
    call = getattr(func, function)(bindparam("pattern", type_=String), *arguments)
    return select(call.table_valued(column("member_id", Uuid)).render_derived().c.member_id)


def indexed_ids(direction: str, limit: str = "limit") -> Select[Any]:
    """The first `limit` (a parameter's name) matches after (before) the page's key among the whole team:
    `nyxcore_member_matches` may look the term up in the trigram indexes."""
    backwards = literal(direction in (BEFORE, LAST))
    return _found("nyxcore_member_matches", *KEY, backwards, bindparam(limit))


def window_ids(direction: str) -> Select[Any]:
    """A short term's matches among the next `scan` members from the key only (a bounded walk), at most `limit`."""
    backwards = literal(direction in (BEFORE, LAST))
    return _found("nyxcore_member_window", *KEY, backwards, bindparam("scan"), bindparam("limit"))


def match_count() -> Any:
    """How many members match a term, counting at most `match_cap` of them: a second search from the start."""
    some = _found("nyxcore_member_matches", null(), null(), literal(False), bindparam("match_cap")).subquery()
    return select(func.count()).select_from(some).scalar_subquery()


def first_matches(direction: str) -> tuple[Any, Any]:
    """The first (or last) page's matches and their count from one search, as two sub-selects of a CTE.

    The search reads up to `match_cap` matches from the list's start (end): the page gets the first `limit`
    ids (an array), the count is how many it read. A second search for the count would read the page's
    matches again (for a common term in a large team, 51 of the 101 members it walks).
    """
    ids = type_coerce(func.array(indexed_ids(direction, "match_cap").scalar_subquery()), ARRAY(Uuid()))
    found = select(ids.label("ids")).cte("found")
    page = select(found.c.ids[1 : bindparam("limit")]).scalar_subquery()
    return page, select(func.cardinality(found.c.ids)).scalar_subquery()
