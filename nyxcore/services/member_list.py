"""The team page's member list and member search, at the same cost for 50 or 50,000 members (issue 15).

- **Pages by key.** A page is read from the `(tenant_id, joined_at, id)` index after or before the
  key of a row (pagination.Position): no OFFSET, so the last page of a large team reads 51 rows,
  not 50,000. The last page is the first one read backwards.
- **A capped count.** Members are counted up to COUNT_CAP ("1,000+"), or up to the team's seat limit
  when it has one, so that "Seats: 7 of 10 used" stays exact. A search's matches are counted up to
  MATCH_CAP ("100+"): the first or last page's own search reads that many matches, shows a page of them
  and counts them; a page after (before) a key counts them with a second search from the list's start.
- **Search.** A term with three letters or digits in a row is looked up through
  `nyxcore_member_matches` (migration 0017: under RLS a `LIKE` cannot use an index), which finds a
  page's matches in the trigram indexes or, for a common term, by walking the team in join order.
  Shorter terms (one or two characters: trigrams cannot help) are matched while walking the list
  in order, at most SHORT_SCAN members per page (`nyxcore_member_window`: the walk checks the
  `users` policy only for the rows it returns); a page that found fewer than a page of matches in
  its window links on from the window's end, so every match is still reached, page by page.
- **No count the page can give.** A team without a seat limit shows only how many members it has; when the
  first (or last) page of the plain list holds all of them, that is its own number of rows, and PostgreSQL
  does not call `nyxcore_seat_counts` (an InitPlan runs only when its CASE needs it). A team with a limit
  (its open invitations are shown too), a longer list or a search reads the count as before.
- **A planned-once read.** On PostgreSQL the rows come from `nyxcore_member_page` (migration 0018),
  planned once per connection; it answers only for the context's team. SQLite (`make run`) joins the
  tables and searches through member_search_sqlite. Each statement filters by the actor's team itself
  (built once, it carries no loader criteria); row-level security applies to it as to every statement.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    DateTime,
    Integer,
    Select,
    Text,
    Uuid,
    bindparam,
    case,
    cast,
    column,
    func,
    literal,
    null,
    select,
    true,
    tuple_,
    type_coerce,
)
from sqlalchemy.orm import aliased

from nyxcore import tenancy
from nyxcore.database import IdText
from nyxcore.extensions import db
from nyxcore.models import TenantMember, User
from nyxcore.pagination import AFTER, BEFORE, FIRST, LAST, Key, KeysetPage, Position, like_pattern
from nyxcore.roles import TenantRole
from nyxcore.services import member_matches, member_search_sqlite, seats
from nyxcore.services.invitations import pending_json
from nyxcore.tenancy import Actor

PER_PAGE = 50
COUNT_CAP = 1000
MATCH_CAP = 100  # a search's matches are counted up to here ("100+"): a search reads this many
SHORT_SCAN = 500
PLAIN, INDEXED, SHORT = "plain", "indexed", "short"  # the three kinds of statement (search modes)
_KEY = member_matches.KEY  # a page's key
_INDEXABLE = re.compile(r"[^\W_]{3}")  # what pg_trgm can look up: three letters or digits in a row


class MemberRow(NamedTuple):
    """One line of the member list: the columns the team page shows, not ORM objects (no hashes).

    A named tuple, made straight from the statement's row: a frozen dataclass's __init__ cost more than
    reading the row (nine attribute sets through object.__setattr__, fifty rows a page). The two ids
    come as the text the page prints (PostgreSQL casts them), not as a hundred `uuid.UUID`s a page.
    """

    id: str
    user_id: str
    role: TenantRole
    joined_at: datetime
    name: str
    email: str
    two_factor: bool
    inviter_name: str | None
    ends_at: datetime | None


@dataclass(frozen=True)
class MemberPage(KeysetPage[MemberRow]):
    """A page of members, and what the seat count needs, read by the same statement."""

    members: int = 0  # all the team's members, whatever the search (capped like `total`)
    members_capped: bool = False
    # Invitations holding a seat; None: not counted, the seat line not showing them (SeatUsage.shows_invitations).
    open_invitations: int | None = 0
    window: int = 0  # a short term's page looked at no more than this many members (0: all)
    # The first `pending` open invitations (nyxcore_pending_invitations' rows as JSON objects), when asked
    # for and read with the page: None when not (SQLite, an empty page): invitations.list_pending reads them.
    pending: list[dict[str, Any]] | None = None


def search_mode(search: str, *, portable: bool = False) -> str:
    """Which statement serves `search` (lower-cased, stripped); `portable` (SQLite): no SHORT walk."""
    if not search:
        return PLAIN
    return INDEXED if portable or _INDEXABLE.search(search) else SHORT


def _after(direction: str, member: Any) -> Any:
    """The keyset condition of a direction, on `member` (the table or an alias)."""
    key = tuple_(member.joined_at, member.id)
    cursor = tuple_(*_KEY)
    return {AFTER: key > cursor, BEFORE: key < cursor}.get(direction, true())


def _ordered(query: Select[Any], direction: str, member: Any) -> Select[Any]:
    backwards = direction in (BEFORE, LAST)
    order = (member.joined_at.desc(), member.id.desc()) if backwards else (member.joined_at, member.id)
    return query.order_by(*order)


def _capped_count(*conditions: Any) -> Any:
    """How many of the team's members meet `conditions`, counting at most `cap` of them."""
    some = (
        select(literal(1))
        .select_from(TenantMember)
        .where(TenantMember.tenant_id == bindparam("tenant_id"), TenantMember.live_at(func.now()), *conditions)
    )
    return select(func.count()).select_from(some.limit(bindparam("cap")).subquery()).scalar_subquery()


def _match_ids(mode: str, direction: str) -> Any:
    """The ids of the page's matches after (before) its key, as a sub-select (member_matches)."""
    return member_matches.indexed_ids(direction) if mode == INDEXED else member_matches.window_ids(direction)


def _match_count(portable: bool = False) -> Any:
    """How many members match a term, counting at most `match_cap` of them."""
    return member_search_sqlite.match_count() if portable else member_matches.match_count()


def _window_end(direction: str, part: Any) -> Any:
    """`part` of the key of the last member a short-term page may look at (NULL: the list ends first)."""
    in_team = TenantMember.tenant_id == bindparam("tenant_id")
    query = _ordered(select(part).where(in_team, _after(direction, TenantMember)), direction, TenantMember)
    return query.offset(bindparam("scan_last")).limit(1).scalar_subquery()


def _extras(
    direction: str, mode: str, *, with_rows: bool = True, with_counts: bool = True, portable: bool = False,
    counted: Any = None,
) -> list[Any]:
    """The columns after a row's: all members, open invitations (not `with_counts`: the caller reads
    those two from nyxcore_seat_counts), matches, the short-term window's end.

    A search's matches: `counted` when the page's own search counted them (member_matches.first_matches);
    else not counted when the rows at hand are all of them (the first or the last page, not full): NULL,
    and the page counts its rows (PostgreSQL runs the count's sub-select only when the CASE needs it).
    """
    matched = _match_count(portable) if mode == INDEXED else null()
    if counted is not None:
        matched = counted
    elif mode == INDEXED and with_rows and direction in (FIRST, LAST):
        matched = case((func.count().over() > bindparam("per_page"), matched), else_=null())
    ends = [_window_end(direction, TenantMember.joined_at), _window_end(direction, TenantMember.id)]
    if with_rows:  # a full page links on from its last row: the window's end (SHORT_SCAN members on) is not read
        ends = [case((func.count().over() <= bindparam("per_page"), end), else_=null()) for end in ends]
    counts = [_capped_count(), seats.open_invitations(bindparam("tenant_id"))] if with_counts else []
    return [
        *counts,
        matched,
        *(ends if mode == SHORT else [null(), null()]),
    ]


def _member_rows(direction: str, mode: str) -> Select[Any]:
    """The member list's statement for one direction and search mode, built once: values are parameters."""
    inviter = aliased(User)
    conditions = [
        TenantMember.tenant_id == bindparam("tenant_id"),
        TenantMember.live_at(func.now()),  # a membership past its end is gone before the sweep removes it
        _after(direction, TenantMember),
    ]
    if mode != PLAIN:
        conditions.append(member_search_sqlite.matches())
    query = (
        select(
            type_coerce(TenantMember.id, IdText()),
            type_coerce(TenantMember.user_id, IdText()),
            TenantMember.role,
            TenantMember.joined_at,
            User.name,
            User.email,
            User.two_factor_enabled_at.is_not(None),
            inviter.name,
            TenantMember.ends_at,
            *_extras(direction, mode, portable=True),
        )
        .join(User, User.id == TenantMember.user_id)
        .outerjoin(inviter, inviter.id == TenantMember.invited_by)
        .where(*conditions)
        .execution_options(**{tenancy.ALL_TENANTS: True})
    )
    return _ordered(query, direction, TenantMember).limit(bindparam("limit"))


def _member_page(direction: str, mode: str, *, invitations_counted: bool = True) -> Select[Any]:
    """PostgreSQL's statement: the page's rows from `nyxcore_member_page` (migration 0018), then the extras.

    The function's statements are planned once per connection, and it reads the `users` rows of the
    team named here only when that is the context's team; the search's matches come in as an array.
    Not `invitations_counted` (a team without a seat limit, a shape of _UNCOUNTED): the open invitations
    are NULL, and the members are the page's own rows when it holds them all (fewer than `limit`).
    """
    only, counted = null() if mode == PLAIN else func.array(_match_ids(mode, direction).scalar_subquery()), None
    if mode == INDEXED and direction in (FIRST, LAST):  # one search gives the page's matches and their count
        only, counted = member_matches.first_matches(direction)
    backwards = literal(direction in (BEFORE, LAST))
    shown = [column(name, _TYPES.get(name)) for name in MemberRow._fields]
    page = func.nyxcore_member_page(bindparam("tenant_id"), *_KEY, backwards, bindparam("limit"), only)
    rows = page.table_valued(*shown, with_ordinality="n").render_derived()
    # The seat count's two sub-selects, planned once per connection inside a function too (migration 0021).
    counts = (
        func.nyxcore_seat_counts(bindparam("tenant_id"), bindparam("cap"))
        .table_valued(column("members", Integer), column("open_invitations", Integer))
        .render_derived()
    )
    seat_columns: list[Any] = [counts.c.members, counts.c.open_invitations]
    if not invitations_counted:  # the count's function runs (once: an InitPlan) only for a team longer than a page
        read = func.count().over()
        everyone = select(counts.c.members).scalar_subquery()
        seat_columns = [case((read <= bindparam("per_page"), read), else_=everyone), null()]
    query = (
        select(
            *(cast(c, Text) if c.name in ("id", "user_id") else c for c in rows.c[:_WIDTH]),
            *seat_columns,
            *_extras(direction, mode, with_counts=False, counted=counted),
            pending_json.first_pending_column(rows.c.n == 1),
        )
        .select_from(rows)
        .order_by(rows.c.n)
    )
    if invitations_counted:
        query = query.join(counts, true())
    return query.execution_options(**{tenancy.ALL_TENANTS: True})


_WIDTH = len(MemberRow._fields)
_MOMENT = DateTime(timezone=True)
_TYPES = {"id": Uuid(), "user_id": Uuid(), "role": TenantMember.role.type, "joined_at": _MOMENT, "ends_at": _MOMENT}
_SHAPES = [
    (direction, mode) for direction in (FIRST, AFTER, BEFORE, LAST) for mode in (PLAIN, INDEXED, SHORT)
]
# PostgreSQL reads through the function; SQLite (`make run`) joins the tables (it has no search functions).
_STATEMENTS = {
    dialect: {shape: build(*shape) for shape in _SHAPES}
    for dialect, build in (("postgresql", _member_page), ("other", _member_rows))
}
# The plain list's first and last page of a team without a seat limit, on PostgreSQL: no seat count when the
# page holds the whole team (_member_page).
_UNCOUNTED = {shape: _member_page(*shape, invitations_counted=False) for shape in ((FIRST, PLAIN), (LAST, PLAIN))}
# An empty page carries no counts: they are asked alone (by dialect and shape).
_EVERY = {tenancy.ALL_TENANTS: True}
_COUNTS = {
    (name, shape): select(*_extras(*shape, with_rows=False, portable=name == "other")).execution_options(**_EVERY)
    for name in ("postgresql", "other") for shape in _SHAPES
}


def _statement(dialect: str, shape: tuple[str, str], *, limited: bool) -> Select[Any]:
    """The list's statement for `shape`; for a team without a seat limit on PostgreSQL, one that does not
    count the members of a page that shows them all (_UNCOUNTED)."""
    if dialect == "postgresql" and not limited and shape in _UNCOUNTED:
        return _UNCOUNTED[shape]
    return _STATEMENTS[dialect][shape]


def list_members(
    actor: Actor, *, at: Position | None = None, search: str = "", per_page: int = PER_PAGE, pending: int = 0
) -> MemberPage:
    """A page of the actor's team's members in join order, how many (match), and the seats, in one statement.

    `pending` > 0: the same statement also reads the team's first `pending` open invitations, when it can
    (MemberPage.pending); the caller must be allowed to see them (invitations.MANAGE).
    """
    at = at or Position()
    search = search.strip().lower()
    dialect = "postgresql" if db.session.get_bind().dialect.name == "postgresql" else "other"
    shape = (at.direction, search_mode(search, portable=dialect == "other"))
    cap = max(COUNT_CAP, actor.tenant.seat_limit or 0)
    params = {
        "tenant_id": actor.tenant_id,
        "pattern": like_pattern(search),
        "at": at.key.at if at.key else None,
        "key_id": at.key.id if at.key else None,
        "cap": cap + 1,
        "match_cap": MATCH_CAP + 1,
        "scan": SHORT_SCAN,
        "scan_last": SHORT_SCAN - 1,
    }
    page_params = {**params, "limit": per_page + 1, "per_page": per_page, "pending_limit": pending}
    statement = _statement(dialect, shape, limited=seats.SeatUsage.shows_invitations(actor.tenant.seat_limit))
    rows = db.session.execute(statement, page_params).all()
    extras = rows[0][_WIDTH : _WIDTH + 5] if rows else db.session.execute(_COUNTS[dialect, shape], params).one()
    everyone, invited, matched, end_at, end_id = extras
    matched = len(rows) if matched is None else matched  # a search's page that holds every match
    window_end = Key(end_at, end_id) if end_at is not None else None
    items = [MemberRow._make(row[:_WIDTH]) for row in rows[:per_page]]
    onward = Key(items[-1].joined_at, uuid.UUID(items[-1].id)) if len(rows) > per_page else window_end
    back = Key(items[0].joined_at, uuid.UUID(items[0].id)) if items and at.direction in (AFTER, BEFORE) else None
    if at.backwards:
        items.reverse()
        back, onward = onward, back  # read backwards: what lies further is the previous page
    total, total_cap = {PLAIN: (everyone, cap), INDEXED: (matched, MATCH_CAP)}.get(shape[1], (None, 0))
    return MemberPage(
        items,
        previous=back,
        next=onward,
        total=None if total is None else min(total, total_cap),
        capped=total is not None and total > total_cap,
        members=min(everyone, cap),
        members_capped=everyone > cap,
        open_invitations=invited,
        window=SHORT_SCAN if shape[1] == SHORT else 0,
        pending=rows[0][_WIDTH + 5] if rows and pending and dialect == "postgresql" else None,
    )


def sole_owner_on(page: MemberPage, actor: Actor, *, searched: bool) -> bool:
    """Whether `page` shows the actor is the only owner; no statement, so only when it lists everyone.

    On a page that does not (a search, a team of several pages) the Leave confirm page says it.
    """
    if actor.role is not TenantRole.OWNER or searched or page.previous is not None or page.next is not None:
        return False
    return sum(m.role is TenantRole.OWNER for m in page.items) == 1
