"""The two PostgreSQL roles: the owner (schema, migrations) and the app role (DML only, RLS applies)."""

from __future__ import annotations

import re

from sqlalchemy import text
from sqlalchemy.engine import Connection

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def quote_role(role: str) -> str:
    """A role name safe to put in DDL (plain lower-case identifiers only)."""
    if not _IDENTIFIER.match(role):
        raise ValueError(f"role names must be lower-case identifiers, not {role!r}")
    return f'"{role}"'


def ensure_app_role(conn: Connection, role: str, *, password: str | None) -> bool:
    """Create `role` as a login role without superuser or BYPASSRLS; returns True if it was created."""
    quoted = quote_role(role)
    exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first() is not None
    if not exists:
        conn.execute(text(f"CREATE ROLE {quoted} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"))
    if password:
        conn.execute(text(f"ALTER ROLE {quoted} PASSWORD :p"), {"p": password})
    return not exists


def grant_app_privileges(conn: Connection, role: str) -> None:
    """DML on the app tables, execute on the app functions, and the same for tables made later."""
    quoted = quote_role(role)
    conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {quoted}"))
    conn.execute(text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {quoted}"))
    conn.execute(text(f"REVOKE ALL ON TABLE alembic_version FROM {quoted}"))
    conn.execute(text(f"GRANT SELECT ON TABLE alembic_version TO {quoted}"))
    conn.execute(text(f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {quoted}"))
    conn.execute(
        text(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {quoted}"
        )
    )


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
    return problems
