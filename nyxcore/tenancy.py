"""The tenant context: who is acting, for which team, and how every transaction carries it.

The context lives in a ContextVar, so it works the same in a request thread, a Celery task and a
CLI command. Two layers read it:

- PostgreSQL row-level security. An engine event puts
  `SET LOCAL app.user_id = '...'; SET LOCAL app.tenant_id = '...'; ...;`
  in front of the first statement of each transaction (one round trip, not two). The settings are
  transaction-local, so a pooled connection never carries one request's team into the next, and
  with no context the policies see an empty setting and show no tenant rows.
  When the context changes inside an open transaction (the user loader often runs first), the next
  statement carries the new settings on the same connection.
- The ORM. Every SELECT, UPDATE and DELETE of a tenant-owned model gets `tenant_id = <active team>`
  through `with_loader_criteria`, so SQLite development mode is scoped too. Queries that must
  reach across teams (a user's own memberships for the team switcher) opt out explicitly with
  `execution_options(all_tenants=True)`, and RLS still applies to them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, false
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria

from nyxcore.models import Tenant, TenantMember, TenantScoped, User
from nyxcore.roles import TenantRole

ALL_TENANTS = "all_tenants"
_APPLIED = "nyxcore_applied_context"
_TRANSACTION_STATUS_IDLE = 0  # psycopg2.extensions.TRANSACTION_STATUS_IDLE: libpq's PQTRANS_IDLE
_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")
# Transaction control must run alone: after an error only ROLLBACK (TO SAVEPOINT) is accepted.
_CONTROL_STATEMENT = re.compile(r"^\s*(ROLLBACK|RELEASE|SAVEPOINT|COMMIT|BEGIN)\b", re.IGNORECASE)


@dataclass(frozen=True)
class TenantContext:
    """Who is acting (`user_id`), for which team (`tenant_id`), an invite token's hash if any, the
    outbox message a worker is delivering (`outbox_id`: row-level security shows it that row alone),
    and an account link's token hash (`account_token_hash`: it shows that one account token)."""

    user_id: uuid.UUID | None = None
    tenant_id: uuid.UUID | None = None
    invite_token_hash: str | None = None
    outbox_id: uuid.UUID | None = None
    account_token_hash: str | None = None

    def __post_init__(self) -> None:
        # The values are interpolated as SQL literals (see _context_sql); accept only their exact shapes.
        if self.user_id is not None and not isinstance(self.user_id, uuid.UUID):
            raise TypeError("user_id must be a UUID")
        if self.tenant_id is not None and not isinstance(self.tenant_id, uuid.UUID):
            raise TypeError("tenant_id must be a UUID")
        if self.invite_token_hash is not None and not _HEX_DIGEST.match(self.invite_token_hash):
            raise ValueError("invite_token_hash must be a SHA-256 hex digest")
        if self.outbox_id is not None and not isinstance(self.outbox_id, uuid.UUID):
            raise TypeError("outbox_id must be a UUID")
        if self.account_token_hash is not None and not _HEX_DIGEST.match(self.account_token_hash):
            raise ValueError("account_token_hash must be a SHA-256 hex digest")


@dataclass(frozen=True)
class Actor:
    """Who acts in which team: a user and their membership (with its team, and so their role).

    Made at the three entry points only (the request hook, the Celery task base, the CLI decorator)
    and handed to services, which read it and never change the tenant context themselves.
    """

    user: User
    membership: TenantMember

    @property
    def user_id(self) -> uuid.UUID:
        return self.user.id

    @property
    def tenant_id(self) -> uuid.UUID:
        return self.membership.tenant_id

    @property
    def tenant(self) -> Tenant:
        return self.membership.tenant

    @property
    def role(self) -> TenantRole:
        return self.membership.role

    @property
    def member_id(self) -> uuid.UUID:
        return self.membership.id

    @property
    def email_verified(self) -> bool:
        return self.user.email_verified_at is not None


EMPTY = TenantContext()
_current: ContextVar[TenantContext] = ContextVar("nyxcore_tenant_context", default=EMPTY)


def current() -> TenantContext:
    """The context in force for this thread or task."""
    return _current.get()


def current_tenant_id() -> uuid.UUID | None:
    return _current.get().tenant_id


@contextmanager
def tenant_context(
    *,
    user_id: uuid.UUID | None = None,
    tenant_id: uuid.UUID | None = None,
    invite_token_hash: str | None = None,
    outbox_id: uuid.UUID | None = None,
    account_token_hash: str | None = None,
) -> Iterator[TenantContext]:
    """Run a block as `user_id` in `tenant_id` (with an invite token's hash, or an outbox message), then restore.

    The one way to change the tenant context. Entered only at the entry points: the request hook
    and the views' `authz.acting_as`, the Celery task base, and the CLI's `cli_entry`; services
    never enter it (tests/unit/test_layering.py checks).
    """
    context = TenantContext(
        user_id=user_id,
        tenant_id=tenant_id,
        invite_token_hash=invite_token_hash,
        outbox_id=outbox_id,
        account_token_hash=account_token_hash,
    )
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def _context_sql(context: TenantContext) -> str:
    # Literals, not bind parameters: the statement is prepended to arbitrary SQL whose parameter
    # style we do not control. The values are UUIDs and a hex digest, validated above.
    user = str(context.user_id) if context.user_id else ""
    tenant = str(context.tenant_id) if context.tenant_id else ""
    invite = context.invite_token_hash or ""
    outbox = str(context.outbox_id) if context.outbox_id else ""
    account_token = context.account_token_hash or ""
    # SET LOCAL is set_config(..., true) as a utility statement: PostgreSQL parses it and sets the
    # value, where a SELECT of five set_config calls is also analysed and planned (about 0.01 ms of
    # backend CPU per transaction, issue 15). Every setting is sent, empty ones too: a value set for
    # the session (by anything) never shows through.
    return (
        f"SET LOCAL app.user_id = '{user}'; "
        f"SET LOCAL app.tenant_id = '{tenant}'; "
        f"SET LOCAL app.invite_token_hash = '{invite}'; "
        f"SET LOCAL app.outbox_id = '{outbox}'; "
        f"SET LOCAL app.account_token_hash = '{account_token}';"
    )


def _before_cursor_execute(
    conn: Connection,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: Any,
    executemany: bool,
) -> tuple[str, Any]:
    # The server's transaction begins with the transaction's first statement, in its round trip
    # (the driver runs in autocommit mode and sends no BEGIN of its own: see install_engine_events).
    begin = "BEGIN; " if conn.in_transaction() and not _server_in_transaction(cursor.connection) else ""
    wanted = _current.get()
    if conn.info.get(_APPLIED) == wanted or not conn.in_transaction() or _CONTROL_STATEMENT.match(statement):
        prefix = begin
    else:
        conn.info[_APPLIED] = wanted
        prefix = begin + _context_sql(wanted) + " "
    if executemany and prefix:
        cursor.execute(prefix)
        return statement, parameters
    return prefix + statement, parameters


def _server_in_transaction(dbapi_connection: Any) -> bool:
    """Whether the server has a transaction open on this connection (libpq's own state: no round trip)."""
    raw = getattr(dbapi_connection, "dbapi_connection", dbapi_connection)  # a pool's proxy, or psycopg2's
    return bool(raw.info.transaction_status != _TRANSACTION_STATUS_IDLE)


def _end_transaction(statement: str) -> Any:
    """The dialect's do_commit or do_rollback: `statement`, sent only if the server has a transaction open."""

    def end(dbapi_connection: Any) -> None:
        if _server_in_transaction(dbapi_connection):
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(statement)
            finally:
                cursor.close()

    return end


def _autocommit_driver(dbapi_connection: Any, connection_record: Any) -> None:
    dbapi_connection.rollback()  # the dialect's set-up queries may have begun one (no round trip otherwise)
    dbapi_connection.autocommit = True


def _forget_applied(conn: Connection, *args: Any) -> None:
    # The settings end with the transaction (or with the savepoint they were made in). A connection
    # the database dropped has nothing to forget (the pool clears its info when it reconnects), and
    # asking for its info would raise instead of letting the rollback finish.
    if not conn.invalidated:
        conn.info.pop(_APPLIED, None)


def install_engine_events(engine: Engine) -> None:
    """Carry the tenant context on every PostgreSQL transaction of `engine`, and begin it without a round trip.

    psycopg2 sends BEGIN as a message of its own before a transaction's first statement: one round
    trip per transaction (issue 15). Here the driver runs in autocommit mode and the BEGIN travels in
    front of the first statement instead (with the context: `BEGIN; SET LOCAL app.user_id = ...; ...; <statement>`
    is one message). SQLAlchemy's transactions are unchanged: it still begins, commits and rolls back
    them; COMMIT and ROLLBACK are sent by the dialect below, when the server has a transaction open.
    """
    if engine.dialect.name != "postgresql" or event.contains(
        engine, "before_cursor_execute", _before_cursor_execute
    ):
        return
    event.listen(engine, "connect", _autocommit_driver)
    engine.dialect.do_commit = _end_transaction("COMMIT")  # type: ignore[method-assign]
    engine.dialect.do_rollback = _end_transaction("ROLLBACK")  # type: ignore[method-assign]
    event.listen(engine, "before_cursor_execute", _before_cursor_execute, retval=True)
    for name in ("begin", "commit", "rollback", "rollback_savepoint"):
        event.listen(engine, name, _forget_applied)


def _scope_orm_statement(state: ORMExecuteState) -> None:
    if state.is_column_load or state.is_relationship_load:
        return
    if not (state.is_select or state.is_update or state.is_delete):
        return
    if state.execution_options.get(ALL_TENANTS):
        return
    tenant_id = _current.get().tenant_id
    if tenant_id is None:
        criteria = [
            with_loader_criteria(TenantScoped, lambda cls: false(), include_aliases=True),
            with_loader_criteria(Tenant, false(), include_aliases=True),
        ]
    else:
        criteria = [
            with_loader_criteria(TenantScoped, lambda cls: cls.tenant_id == tenant_id, include_aliases=True),
            with_loader_criteria(Tenant, Tenant.id == tenant_id, include_aliases=True),
        ]
    state.statement = state.statement.options(*criteria)


def install_orm_scoping() -> None:
    """Scope every ORM query of a tenant-owned model to the active team (idempotent)."""
    if not event.contains(Session, "do_orm_execute", _scope_orm_statement):
        event.listen(Session, "do_orm_execute", _scope_orm_statement)
