"""`flask nyxcore ...`: administration commands."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import create_engine, text

from nyxcore import dbroles


@click.group()
def nyxcore() -> None:
    """NyxCore administration."""


@nyxcore.command("db-roles")
@click.option(
    "--app-password", envvar="NYXCORE_APP_PASSWORD", default=None, help="Password for the app role."
)
@with_appcontext
def db_roles(app_password: str | None) -> None:
    """Create the app database role (if missing) and grant it what the app needs.

    Connects with MIGRATION_DATABASE_URL, as the owner role, which needs CREATEROLE to create it.
    """
    role = current_app.config["NYXCORE_APP_ROLE"]
    engine = create_engine(current_app.config["MIGRATION_DATABASE_URL"])
    with engine.begin() as conn:
        created = dbroles.ensure_app_role(conn, role, password=app_password)
        dbroles.grant_app_privileges(conn, role)
        problems = dbroles.role_problems(conn, role)
    engine.dispose()
    click.echo(f"{'Created' if created else 'Updated'} role {role}; privileges granted.")
    for problem in problems:
        click.echo(f"warning: {problem}", err=True)


@nyxcore.command("check-db-role")
@with_appcontext
def check_db_role() -> None:
    """Fail if the app's own database role could bypass row-level security."""
    from nyxcore.extensions import db

    with db.engine.connect() as conn:
        problems = dbroles.role_problems(conn, conn.execute(text("SELECT current_user")).scalar_one())
    if problems:
        raise click.ClickException("; ".join(problems))
    click.echo("The app role is subject to row-level security.")
