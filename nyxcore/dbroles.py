"""The two PostgreSQL roles: the owner (schema, migrations) and the app role (DML only, RLS applies)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from nyxcore.config import ConfigError

if TYPE_CHECKING:
    from flask import Flask

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def quote_role(role: str) -> str:
    """A role name safe to put in DDL (plain lower-case identifiers only)."""
    if not _IDENTIFIER.match(role):
        raise ValueError(f"role names must be lower-case identifiers, not {role!r}")
    return f'"{role}"'


class AppRoleSetupError(RuntimeError):
    """The connecting role may not create the app role or set its password; a superuser must."""


def ensure_app_role(conn: Connection, role: str, *, password: str | None) -> bool:
    """Create `role` as a login role without superuser or BYPASSRLS; returns True if it was created.

    Creating a role, or setting another role's password, needs CREATEROLE, which the owner role
    should not have (README, "Installing on PostgreSQL": a superuser creates both roles). Raises
    AppRoleSetupError, before changing anything, when the connecting role lacks it.
    """
    quoted = quote_role(role)
    exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first() is not None
    if (not exists or password) and not _can_create_roles(conn):
        user = conn.execute(text("SELECT current_user")).scalar_one()
        action = f"set the password of role {role}" if exists else f"create the app role {role}"
        raise AppRoleSetupError(
            f"role {user} may not {action} (it has no CREATEROLE, as it should not). As a PostgreSQL "
            f'superuser, run: {_superuser_statement(role, exists=exists)} (README, "Installing on '
            'PostgreSQL", step 1).'
        )
    if not exists:
        conn.execute(text(f"CREATE ROLE {quoted} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"))
    if password:
        conn.execute(text(f"ALTER ROLE {quoted} PASSWORD :p"), {"p": password})
    return not exists


def _can_create_roles(conn: Connection) -> bool:
    return bool(
        conn.execute(
            text("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user")
        ).scalar_one()
    )


def _superuser_statement(role: str, *, exists: bool) -> str:
    if exists:
        return f"ALTER ROLE {quote_role(role)} PASSWORD '...';"
    return (
        f"CREATE ROLE {quote_role(role)} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS "
        "PASSWORD '...';"
    )


def grant_app_privileges(conn: Connection, role: str) -> None:
    """DML on the app tables, execute on the app functions, and the same for tables made later.

    Works on an empty database too (before the first migration): then only the default privileges
    for tables made later take effect.
    """
    quoted = quote_role(role)
    conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {quoted}"))
    conn.execute(text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {quoted}"))
    if conn.execute(text("SELECT to_regclass('public.alembic_version')")).scalar_one() is not None:
        # The app may read which revision it runs on, never change it.
        conn.execute(text(f"REVOKE ALL ON TABLE alembic_version FROM {quoted}"))
        conn.execute(text(f"GRANT SELECT ON TABLE alembic_version TO {quoted}"))
    conn.execute(text(f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {quoted}"))
    conn.execute(
        text(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {quoted}"
        )
    )
    restrict_private_columns(conn, role)


# Columns the app role may write but never read back.
PRIVATE_COLUMNS = {"users": ("password_hash",)}


def restrict_private_columns(conn: Connection, role: str) -> None:
    """Take SELECT on PRIVATE_COLUMNS away from `role`, keeping it on every other column.

    A table-wide grant would override column privileges, so the table's SELECT is revoked and given
    back column by column. Run it after every grant on these tables (grant_app_privileges does).
    """
    quoted = quote_role(role)
    for table, private in PRIVATE_COLUMNS.items():
        if conn.execute(text("SELECT to_regclass(:t)"), {"t": f"public.{table}"}).scalar() is None:
            continue  # not created yet: the migration that creates it runs this again
        columns = conn.execute(
            text(
                "SELECT attname FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) "
                "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
            ),
            {"t": f"public.{table}"},
        ).scalars()
        readable = ", ".join(f'"{column}"' for column in columns if column not in private)
        # Names from PRIVATE_COLUMNS and the catalog, role checked by quote_role: no user input.
        conn.execute(text(f"REVOKE SELECT ON TABLE public.{table} FROM {quoted}"))  # noqa: S608
        conn.execute(text(f"GRANT SELECT ({readable}) ON TABLE public.{table} TO {quoted}"))


def owner_problems(conn: Connection) -> list[str]:
    """Reasons the connecting (owner) role holds more than running migrations needs (empty when not)."""
    row = conn.execute(
        text("SELECT rolname, rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user")
    ).one()
    if row.rolcreaterole and not row.rolsuper:
        # On PostgreSQL 15 CREATEROLE may grant any non-superuser role, pg_execute_server_program too.
        return [
            f"role {row.rolname} has CREATEROLE, so it can grant itself pg_execute_server_program and run "
            f"programs as the database server's OS user; as a superuser, run ALTER ROLE "
            f"{_quote_identifier(row.rolname)} NOCREATEROLE"
        ]
    return []


def _quote_identifier(name: str) -> str:
    # Only for a message: the owner's name is whatever the operator chose, not checked by quote_role.
    return '"' + name.replace('"', '""') + '"'


def role_problems(conn: Connection, role: str) -> list[str]:
    """Reasons `role` would not be held by row-level security (empty when it is)."""
    row = conn.execute(
        text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = :r"), {"r": role}
    ).first()
    if row is None:
        return [f"role {role} does not exist"]
    problems = []
    if row.rolsuper:
        problems.append(f"role {role} is a superuser")
    if row.rolbypassrls:
        problems.append(f"role {role} has BYPASSRLS")
    owned = conn.execute(
        text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = :r"),
        {"r": role},
    ).scalar_one()
    if owned:
        problems.append(f"role {role} owns {owned} table(s), and owners bypass row-level security")
    if row.rolsuper:
        return problems  # a superuser is a member of every role: listing them adds nothing
    # Attributes are not inherited, but a member may `SET ROLE` to any role it belongs to, and from
    # there bypass row-level security (or, as a table owner, switch it off).
    escalations = conn.execute(
        text(
            "SELECT r.rolname, r.rolsuper, r.rolbypassrls, "
            "EXISTS (SELECT 1 FROM pg_tables t WHERE t.schemaname = 'public' AND t.tableowner = r.rolname)"
            " AS owns_tables "
            "FROM pg_roles r WHERE r.rolname <> :r AND pg_has_role(:r, r.oid, 'MEMBER') ORDER BY r.rolname"
        ),
        {"r": role},
    ).all()
    for other in escalations:
        reasons = [
            reason
            for reason, applies in (
                ("a superuser", other.rolsuper),
                ("BYPASSRLS", other.rolbypassrls),
                ("the owner of app tables", other.owns_tables),
            )
            if applies
        ]
        if reasons:
            problems.append(
                f"role {role} is a member of {other.rolname} ({', '.join(reasons)}) and can SET ROLE to it"
            )
    return problems


class UnsafeAppRoleError(ConfigError):
    """The database role the app connects as is not held by row-level security."""


def assert_app_role_safe(app: Flask) -> None:
    """In production, refuse an app whose database role could bypass row-level security.

    Connects once with the app's own DATABASE_URL and disposes of the pool afterwards; `create_app`
    calls it, so every production process (web, worker, beat, CLI) checks once. Does nothing outside
    production or on a database other than PostgreSQL. Raises UnsafeAppRoleError naming the problems,
    or when the database cannot be asked (refusing is safer than starting unchecked).
    """
    from nyxcore.extensions import db

    if app.config["NYXCORE_ENV"] != "production":
        return
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            return
        try:
            with db.engine.connect() as conn:
                role = conn.execute(text("SELECT current_user")).scalar_one()
                problems = role_problems(conn, role)
        except SQLAlchemyError as exc:
            # The driver's first line names host and user, never the password.
            detail = str(getattr(exc, "orig", None) or type(exc).__name__).strip().splitlines()[0]
            missing = db.engine.url.username
            if missing and f'role "{missing}" does not exist' in detail:
                raise UnsafeAppRoleError(
                    f"refusing to start in production: the app database role '{missing}' (DATABASE_URL) "
                    "does not exist. Create it as a PostgreSQL superuser as README.md, \"Installing on "
                    f'PostgreSQL", step 1 shows: CREATE ROLE "{missing}" LOGIN NOSUPERUSER NOCREATEDB '
                    "NOCREATEROLE NOBYPASSRLS PASSWORD '...'"
                ) from exc
            raise UnsafeAppRoleError(
                f"refusing to start in production: cannot check the app database role ({detail})"
            ) from exc
        finally:
            db.engine.dispose()
    if problems:
        raise UnsafeAppRoleError(
            "refusing to start in production: the app database role can bypass row-level security: "
            + "; ".join(problems)
            + ". Point DATABASE_URL at a role with NOSUPERUSER NOBYPASSRLS that owns nothing."
        )
