"""Server-side sessions: a signed-in browser is a row, so that a session ends when it should.

The cookie holds a random token; the row keeps its SHA-256. A request is signed in only while the
row is live (not revoked, not idle too long, not expired), checked in the same query that loads the
user, so it costs no extra round trip. Callers set the acting user first (RLS: own sessions only).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import JSON, ColumnElement, Select, Uuid, and_, bindparam, column, func, select, true, update
from sqlalchemy.orm import aliased, class_mapper, contains_eager
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql.elements import ColumnClause

from nyxcore import tenancy
from nyxcore.errors import NotFound
from nyxcore.extensions import db
from nyxcore.models import Tenant, TenantMember, User, UserSession
from nyxcore.services import teams
from nyxcore.services.teams import TeamChoice

TOKEN_BYTES = 32
# last_seen_at is written at most this often, so an ordinary page costs no write.
SEEN_EVERY = timedelta(minutes=5)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    # SQLite (development) gives timestamps back without their zone; they are stored in UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def start(user_id: uuid.UUID, *, user_agent: str, ip_address: str, lifetime: timedelta) -> str:
    """Record a new session for `user_id` and return its raw token (for the cookie only)."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    now = _now()
    db.session.add(
        UserSession(
            user_id=user_id,
            token_hash=_hash(token),
            last_seen_at=now,
            expires_at=now + lifetime,
            user_agent=user_agent[:255],
            ip_address=ip_address[:45],
        )
    )
    db.session.flush()
    return token


def _live(user_id: uuid.UUID, now: datetime, idle: timedelta) -> list[ColumnElement[bool]]:
    """The conditions of a live session of `user_id`: not revoked, not expired, not idle too long."""
    return [
        UserSession.user_id == user_id,
        UserSession.revoked_at.is_(None),
        UserSession.expires_at > now,
        UserSession.last_seen_at > now - idle,
    ]


# Built once: a request pays for its parameters only, not for building and keying the statement.
# The user, their live session, their membership in the wanted team (else in the team they were last
# in, read by the (tenant_id, user_id) key) and the switcher's teams as one JSON value
# (teams.SWITCHER_CHOICES): one row, one round trip per request, whatever the number of teams. Of the
# session only its id and last_seen_at, as plain values: an ORM object would be made for two fields. The
# memberships are the user's own in every team (row-level security: own memberships and their
# teams); no team is active while this runs.
_LIVE_SESSION = (
    select(User, UserSession.id, UserSession.last_seen_at, TenantMember, teams.SWITCHER_CHOICES)
    .join(UserSession, UserSession.user_id == User.id)
    .outerjoin(
        TenantMember,
        and_(
            TenantMember.user_id == User.id,
            TenantMember.tenant_id == func.coalesce(bindparam("wanted_tenant_id", type_=Uuid), User.last_tenant_id),
            teams.NOT_ENDED,
        ),
    )
    .outerjoin(Tenant, Tenant.id == TenantMember.tenant_id)
    .options(contains_eager(TenantMember.tenant))
    .where(
        UserSession.token_hash == bindparam("token_hash"),
        UserSession.user_id == bindparam("user_id"),
        UserSession.revoked_at.is_(None),
        UserSession.expires_at > bindparam("now"),
        UserSession.last_seen_at > bindparam("idle_since"),
    )
    .execution_options(**{tenancy.ALL_TENANTS: True})
)


def _loaded_columns(model: type[object]) -> list[ColumnClause[object]]:
    """The table columns the ORM loads for `model` (its deferred ones, a password hash, left out), in its order."""
    return [prop.columns[0] for prop in class_mapper(model).column_attrs if not prop.deferred]  # type: ignore[misc]


def _live_session_call() -> Select[Any]:
    """_LIVE_SESSION's row through `nyxcore_signed_in` (migration 0020): planned once per connection.

    The function returns the columns the ORM loads of the user, membership and team, named
    `<part>_<column>` (of the session only its id and last_seen_at, what `load` reads). Each part is
    a LATERAL projection of the function's row under the model's own column names, which an
    `aliased(..., adapt_on_names=True)` entity loads: the same objects as from _LIVE_SESSION,
    through an ordinary ORM select (whose loading SQLAlchemy prepares once, unlike a
    `from_statement`'s, which it prepared again on every request). PostgreSQL folds the
    projections away: the statement plans as one function scan, without any table or policy.
    A column the models gain and the function lacks fails loudly (no such column).
    """
    parts = {"account": User, "membership": TenantMember, "team": Tenant}
    loaded = {part: _loaded_columns(model) for part, model in parts.items()}
    returned = [column(f"{part}_{each.name}", each.type) for part in parts for each in loaded[part]]
    returned += [column("session_id", Uuid), column("session_last_seen_at", UserSession.last_seen_at.type)]
    signed = (
        func.nyxcore_signed_in(
            bindparam("token_hash"),
            bindparam("user_id", type_=Uuid),
            bindparam("now"),
            bindparam("idle_since"),
            bindparam("wanted_tenant_id", type_=Uuid),
            bindparam("max_choices"),
        )
        .table_valued(*returned, column("choices", JSON))
        .alias("signed")
    )
    projections = {
        part: select(*(signed.c[f"{part}_{each.name}"].label(each.name) for each in loaded[part]))
        .correlate(signed)
        .lateral(part)
        for part in parts
    }
    account, membership, team = (
        aliased(model, projections[part], adapt_on_names=True) for part, model in parts.items()
    )
    statement = select(account, signed.c.session_id, signed.c.session_last_seen_at, membership, team, signed.c.choices)
    statement = statement.select_from(signed)
    for projection in projections.values():
        statement = statement.join(projection, true())
    return statement.execution_options(**{tenancy.ALL_TENANTS: True})


# PostgreSQL's form of _LIVE_SESSION (SQLite, in development, runs _LIVE_SESSION itself).
_LIVE_SESSION_CALL = _live_session_call()


@dataclass(frozen=True)
class SignedIn:
    """A live session's user; their membership in the wanted team (else in their last team), if they
    still have it; and their SWITCHER_TEAMS + 1 most recently joined teams (whether there are more)."""

    user: User
    membership: TenantMember | None
    choices: list[TeamChoice]


def load(
    user_id: uuid.UUID, token: str, *, idle: timedelta, wanted_tenant_id: uuid.UUID | None = None
) -> SignedIn | None:
    """The user of a live session named by `token` and their teams, in one query; None when it has ended."""
    now = _now()
    on_postgresql = db.session.get_bind().dialect.name == "postgresql"
    row = db.session.execute(
        _LIVE_SESSION_CALL if on_postgresql else _LIVE_SESSION,
        {
            "token_hash": _hash(token),
            "user_id": user_id,
            "now": now,
            "idle_since": now - idle,
            "wanted_tenant_id": wanted_tenant_id,
            "max_choices": teams.SWITCHER_TEAMS + 1,
        },
    ).first()
    if row is None:
        return None
    if on_postgresql:  # the team comes as an entity of its own (see _live_session_call)
        user, session_id, last_seen_at, membership, team, choices = row
        if membership is not None:
            set_committed_value(membership, "tenant", team)
    else:
        user, session_id, last_seen_at, membership, choices = row
    if _aware(last_seen_at) < now - SEEN_EVERY:  # committed (or rolled back) with the request
        db.session.execute(update(UserSession).where(UserSession.id == session_id).values(last_seen_at=now))
    return SignedIn(user, membership, teams.choices_from(choices))


def end(user_id: uuid.UUID, token: str) -> None:
    """End the session named by `token` (log out): its cookie no longer signs anyone in."""
    db.session.execute(
        update(UserSession)
        .where(
            UserSession.user_id == user_id,
            UserSession.token_hash == _hash(token),
            UserSession.revoked_at.is_(None),
        )
        .values(revoked_at=_now())
    )


def end_all(user_id: uuid.UUID) -> int:
    """End every live session of `user_id` (sign out everywhere); returns how many."""
    result = db.session.execute(
        update(UserSession)
        .where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
        .values(revoked_at=_now())
    )
    return int(getattr(result, "rowcount", 0) or 0)


def end_others(user_id: uuid.UUID, keep_token: str) -> int:
    """End every live session of `user_id` but the one named by `keep_token` (a password change); how many."""
    result = db.session.execute(
        update(UserSession)
        .where(
            UserSession.user_id == user_id,
            UserSession.token_hash != _hash(keep_token),
            UserSession.revoked_at.is_(None),
        )
        .values(revoked_at=_now())
    )
    return int(getattr(result, "rowcount", 0) or 0)


def live_sessions(user_id: uuid.UUID, *, idle: timedelta) -> list[UserSession]:
    """The live sessions of `user_id`, most recently seen first (one query)."""
    now = _now()
    return list(
        db.session.scalars(
            select(UserSession)
            .where(*_live(user_id, now, idle))
            .order_by(UserSession.last_seen_at.desc(), UserSession.created_at.desc(), UserSession.id)
        )
    )


def live_session(user_id: uuid.UUID, session_id: uuid.UUID, *, idle: timedelta) -> UserSession:
    """One live session of `user_id` (what a revoke would end). Raises NotFound for any other id."""
    record = db.session.scalar(
        select(UserSession).where(UserSession.id == session_id, *_live(user_id, _now(), idle))
    )
    if record is None:
        raise NotFound("There is no such session among yours.")
    return record


def is_named_by(record: UserSession, token: str | None) -> bool:
    """Whether `token` (this browser's, say) is the one that names `record`."""
    return token is not None and record.token_hash == _hash(token)


def end_by_id(user_id: uuid.UUID, session_id: uuid.UUID, *, idle: timedelta) -> UserSession:
    """End one live session of `user_id`, named by its id (revoke). Raises NotFound for any other id."""
    now = _now()
    record = db.session.scalar(
        update(UserSession)
        .where(UserSession.id == session_id, *_live(user_id, now, idle))
        .values(revoked_at=now)
        .returning(UserSession)
    )
    if record is None:
        raise NotFound("There is no such session among yours.")
    return record
