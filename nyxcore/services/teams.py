"""Teams: creating them, finding a user's memberships, and the active team."""

from __future__ import annotations

import re
import secrets
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, ScalarSelect, bindparam, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import contains_eager, joinedload
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from nyxcore import tenancy
from nyxcore.errors import Conflict, InvalidInput
from nyxcore.extensions import db
from nyxcore.models import Tenant, TenantMember, User
from nyxcore.roles import TenantRole
from nyxcore.services import audit, quotas

SLUG_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def slugify(name: str) -> str:
    """A URL-safe slug from a team name ('Nyx Ops!' -> 'nyx-ops')."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().replace("'", "")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:50].strip("-")
    return slug or "team"


def validate_slug(slug: str) -> str:
    slug = slug.strip().lower()
    if not SLUG_PATTERN.match(slug):
        raise InvalidInput(
            "Use 1-63 lower-case letters, digits and dashes, not starting or ending with a dash.",
            field="slug",
        )
    return slug


def create_additional_team(
    *, creator: User, tenant_id: uuid.UUID, name: str, slug: str | None = None
) -> tuple[Tenant, TenantMember]:
    """A team a signed-in user creates (/teams/new): create_team within TEAMS_PER_USER_PER_DAY.

    Raises RateLimited, before anything is written, when the creator has no team left today. The
    personal team made at sign-up does not count (accounts.register_user calls create_team): there
    is one per account, and sign-up has its own rate limit.
    """
    if not name.strip():
        raise InvalidInput("Give the team a name.", field="name")
    if slug:
        validate_slug(slug)  # a malformed slug is the user's mistake: it costs nothing
    quotas.spend([(quotas.TEAMS_PER_USER, str(creator.id))], 1, field_name="name")
    return create_team(creator=creator, tenant_id=tenant_id, name=name, slug=slug)


def create_team(
    *, creator: User, tenant_id: uuid.UUID, name: str, slug: str | None = None
) -> tuple[Tenant, TenantMember]:
    """Create team `tenant_id` owned by `creator`.

    Run it in the new team's context (authz.acting_for_a_new_team): row-level security accepts
    the new team's rows only then. With no `slug`, one is derived from the name and made unique.
    An explicit slug that is taken raises Conflict.
    """
    name = name.strip()
    if not name:
        raise InvalidInput("Give the team a name.", field="name")
    candidates = [validate_slug(slug)] if slug else _slug_candidates(slugify(name))
    tenant = None
    for candidate in candidates:
        # Other teams' slugs are invisible under RLS, so uniqueness is asked of the database itself.
        try:
            with db.session.begin_nested():
                tenant = Tenant(id=tenant_id, name=name, slug=candidate, created_by=creator.id)
                db.session.add(tenant)
            break
        except IntegrityError:
            tenant = None
    if tenant is None:
        raise Conflict("That slug is taken. Choose another.", field="slug")
    membership = TenantMember(tenant_id=tenant_id, user_id=creator.id, role=TenantRole.OWNER)
    db.session.add(membership)
    db.session.flush()
    audit.record(tenant_id, creator.id, "team.created", target=tenant.name, slug=tenant.slug)
    return tenant, membership


def _slug_candidates(base: str) -> list[str]:
    return [
        base,
        *(f"{base}-{n}" for n in range(2, 5)),
        *(f"{base}-{secrets.token_hex(3)}" for _ in range(5)),
    ]


# A membership past its end is gone from this moment (bind `now`), before the beat task removes it.
NOT_ENDED = TenantMember.live_at(bindparam("now"))
# The team switcher shows this many of a user's teams: the active one and the most recently joined;
# "All your teams" (/teams/) has every one.
SWITCHER_TEAMS = 20

_MEMBERSHIPS = (
    select(TenantMember)
    .join(TenantMember.tenant)
    .options(contains_eager(TenantMember.tenant))
    .where(TenantMember.user_id == bindparam("user_id"), NOT_ENDED)
    .order_by(Tenant.name, Tenant.id)
    .execution_options(**{tenancy.ALL_TENANTS: True})
)
_FIRST_JOINED = _MEMBERSHIPS.order_by(None).order_by(TenantMember.joined_at, TenantMember.id).limit(1)


def memberships_of(user_id: uuid.UUID) -> list[TenantMember]:
    """Every team the user belongs to, with the team loaded, by team name (one query, built once).

    For the pages that list or look through all of them ("All your teams", switching, the account);
    every other page has the switcher's few, read with the user (sessions.load). Memberships past
    their end date are left out.
    """
    return list(db.session.scalars(_MEMBERSHIPS, {"user_id": user_id, "now": datetime.now(UTC)}))


def remember_active(user: User, tenant_id: uuid.UUID) -> None:
    """Keep `tenant_id` as the user's last active team, picked again at their next log in.

    Written (and flushed now, in the user's own context) only when it changed: a page costs nothing.
    """
    if user.last_tenant_id != tenant_id:
        user.last_tenant_id = tenant_id
        db.session.flush()


def first_joined(user_id: uuid.UUID) -> TenantMember | None:
    """The user's earliest joined membership (not ended), with its team: the active one by default."""
    return db.session.scalar(_FIRST_JOINED, {"user_id": user_id, "now": datetime.now(UTC)})


@dataclass(frozen=True)
class TeamChoice:
    """A team as the switcher offers it: its id, its name, and the user's role in it."""

    tenant_id: uuid.UUID
    name: str
    role: TenantRole

    @classmethod
    def of(cls, membership: TenantMember) -> TeamChoice:
        return cls(membership.tenant_id, membership.tenant.name, membership.role)


class _json_rows(FunctionElement[Any]):
    """The rows of its columns as one JSON array of arrays: many rows carried in one value of one row.

    The last clause is the rows' order, descending, not carried: PostgreSQL aggregates `ORDER BY` it
    (a sorted sub-select only "usually" keeps its order through an aggregate); SQLite (development),
    which has no ordered aggregates before 3.44, keeps the sub-select's order.
    """

    type = JSON()
    inherit_cache = True


@compiles(_json_rows, "postgresql")
def _json_rows_postgresql(element: _json_rows, compiler: SQLCompiler, **kw: Any) -> str:
    *values, order = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"json_agg(json_build_array({', '.join(values)}) ORDER BY {order} DESC)"


@compiles(_json_rows, "sqlite")
def _json_rows_sqlite(element: _json_rows, compiler: SQLCompiler, **kw: Any) -> str:
    values = [compiler.process(clause, **kw) for clause in element.clauses][:-1]
    return f"json_group_array(json_array({', '.join(values)}))"


def _switcher_choices() -> ScalarSelect[Any]:
    """The user's SWITCHER_TEAMS + 1 most recently joined teams (whether there are more), as one JSON value.

    Most recently joined, not first by name: read in the order of the `(user_id, joined_at, id)` index
    under the LIMIT, they cost the same for a user in 500 teams as in 21 (by name, every team of the
    user had to be read and sorted). One value, not a row per team: the statement that loads the user
    stays one row, read without an ORM object (and UUIDs) per team. Binds `user_id` and `now`.
    """
    # The team's name is a sub-select per membership, not a join: it runs for the 21 rows under the
    # LIMIT only. With a join, the planner may scan and hash every team the user can see when the
    # teams table is small (a few hundred rows, most of them the user's).
    team_name = select(Tenant.name).where(Tenant.id == TenantMember.tenant_id).scalar_subquery()
    latest_joined = (
        select(TenantMember.tenant_id, team_name, TenantMember.role, TenantMember.joined_at, TenantMember.id)
        .where(TenantMember.user_id == bindparam("user_id"), NOT_ENDED)
        .order_by(TenantMember.joined_at.desc(), TenantMember.id.desc())
        .limit(SWITCHER_TEAMS + 1)
        .subquery()
    )
    newest_first = tuple_(latest_joined.c.joined_at, latest_joined.c.id)
    return select(_json_rows(*list(latest_joined.c)[:3], newest_first)).scalar_subquery()


SWITCHER_CHOICES = _switcher_choices()


def choices_from(value: Sequence[Sequence[str]] | None) -> list[TeamChoice]:
    """The TeamChoices of a SWITCHER_CHOICES value (None: no team at all)."""
    return [TeamChoice(uuid.UUID(tenant_id), name, TenantRole(role)) for tenant_id, name, role in value or ()]


def switcher(choices: list[TeamChoice], active: TenantMember | None) -> list[TeamChoice]:
    """The switcher's SWITCHER_TEAMS teams, by name: the active one and the others of `choices` first."""
    if active is not None:
        current = TeamChoice.of(active)
        choices = [current, *(choice for choice in choices if choice.tenant_id != current.tenant_id)]
    return sorted(choices[:SWITCHER_TEAMS], key=lambda choice: (choice.name, str(choice.tenant_id)))


def membership_of(tenant_id: uuid.UUID, user_id: uuid.UUID) -> TenantMember | None:
    """The user's membership of the team, with the team loaded, or None (also when it has ended).

    A user sees their own memberships and their teams everywhere (RLS own_memberships,
    member_teams), and an admin the members of the active team, so this needs no tenant switch.
    """
    return db.session.scalar(
        select(TenantMember)
        .options(joinedload(TenantMember.tenant))
        .where(
            TenantMember.tenant_id == tenant_id,
            TenantMember.user_id == user_id,
            TenantMember.live_at(datetime.now(UTC)),
        )
        .execution_options(**{tenancy.ALL_TENANTS: True})
    )
