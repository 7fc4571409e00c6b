"""`flask nyxcore ...`: administration commands."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial, wraps
from typing import Any, ParamSpec, TypeVar

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import create_engine, text

from nyxcore import dbroles, tenancy
from nyxcore.crypto import DecryptionError, KeyRing, KeyRingError, generate_key_setting

P = ParamSpec("P")
R = TypeVar("R")


def cli_entry(command: Callable[P, R]) -> Callable[P, R]:
    """The CLI's entry point into the app: an app context and a fresh, empty tenant context.

    The third of the three entry points (with the request hook and the Celery task base): a
    command starts with no team, and enters one (`tenancy.tenant_context`) for each step that acts
    in a team. It commits explicitly, batch by batch.
    """

    @wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with tenancy.tenant_context():
            return command(*args, **kwargs)

    return with_appcontext(run)


@click.group()
def nyxcore() -> None:
    """NyxCore administration."""


@nyxcore.command("db-roles")
@click.option(
    "--app-password", envvar="NYXCORE_APP_PASSWORD", default=None, help="Password for the app role."
)
@cli_entry
def db_roles(app_password: str | None) -> None:
    """Grant the app database role what the app needs (and create it, if the owner role may).

    The migrations grant the same: run this after changing NYXCORE_APP_ROLE, or to repair the grants;
    it works before the first migration too. Connects with MIGRATION_DATABASE_URL, as the owner role,
    which should not have CREATEROLE: a superuser creates the app role (README, "Installing on
    PostgreSQL", step 1).
    """
    role = current_app.config["NYXCORE_APP_ROLE"]
    engine = create_engine(current_app.config["MIGRATION_DATABASE_URL"])
    try:
        with engine.begin() as conn:
            created = dbroles.ensure_app_role(conn, role, password=app_password)
            dbroles.grant_app_privileges(conn, role)
            problems = dbroles.owner_problems(conn) + dbroles.role_problems(conn, role)
    except dbroles.AppRoleSetupError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        engine.dispose()
    click.echo(f"{'Created' if created else 'Updated'} role {role}; privileges granted.")
    for problem in problems:
        click.echo(f"warning: {problem}", err=True)


@nyxcore.command("check-db-role")
@cli_entry
def check_db_role() -> None:
    """Fail if the app's own database role could bypass row-level security."""
    from nyxcore.extensions import db

    with db.engine.connect() as conn:
        problems = dbroles.role_problems(conn, conn.execute(text("SELECT current_user")).scalar_one())
    if problems:
        raise click.ClickException("; ".join(problems))
    click.echo("The app role is subject to row-level security.")


@nyxcore.group("keys")
def keys() -> None:
    """The encryption key ring (NYXCORE_ENCRYPTION_KEYS)."""


@keys.command("generate")
@click.option("--key-id", default=None, help="Id of the new key: letters, digits, - and _ (default k<date>).")
def generate_key(key_id: str | None) -> None:
    """Print a new random key entry `id:base64` for NYXCORE_ENCRYPTION_KEYS."""
    key_id = key_id or datetime.now(UTC).strftime("k%Y%m%d")
    try:
        entry = generate_key_setting(key_id)
    except KeyRingError as exc:
        raise click.BadParameter(str(exc), param_hint="--key-id") from exc
    click.echo(entry)
    # The hint goes to stderr so that `... keys generate > key.txt` captures only the entry.
    click.echo(
        "A new installation: set NYXCORE_ENCRYPTION_KEYS to it, and keep a copy somewhere safe.\n"
        "A new key for a running one: put it first in NYXCORE_ENCRYPTION_KEYS, keeping the current "
        "entries after it:\n"
        f"  NYXCORE_ENCRYPTION_KEYS={key_id}:<the key above>,<current entries>\n"
        "Restart the web and worker processes, then run `flask nyxcore keys rotate`. Remove an old key "
        "only after rotate reports nothing left to re-encrypt.",
        err=True,
    )


@keys.command("rotate")
@click.option(
    "--batch-size",
    default=100,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Rows re-encrypted per transaction.",
)
@cli_entry
def rotate_keys(batch_size: int) -> None:
    """Re-encrypt every stored secret that is not under the primary (first) key.

    Safe to interrupt and run again: each batch commits on its own, and rows already under the
    primary key are skipped.
    """
    from nyxcore.extensions import db, keyring
    from nyxcore.services import key_rotation

    ring = keyring.get()
    try:
        tenants = key_rotation.stale_github_tenants(ring)
        users = key_rotation.stale_two_factor_users(ring)
        outbox_current, stale_outbox = key_rotation.outbox_counts(ring)
        already = key_rotation.github_tokens_under_primary(ring) + outbox_current
        db.session.commit()
        click.echo(
            f"Primary key {ring.primary_id}: {len(tenants)} GitHub token(s), {len(users)} two-factor "
            f"secret(s) and {stale_outbox} outbox email(s) to re-encrypt."
        )
        unreadable: list[str] = []
        with click.progressbar(length=len(tenants) + len(users) + stale_outbox, label="Re-encrypting") as bar:
            progress = (batch_size, bar, unreadable)
            github_done = _reseal_in_batches(
                tenants, partial(key_rotation.reseal_github_token, ring), _team, "GitHub token of team", progress
            )
            two_factor_done = _reseal_in_batches(
                users, partial(key_rotation.reseal_two_factor_secret, ring), _user, "two-factor secret of user", progress
            )
            outbox_done = _reseal_outbox_emails(ring, batch_size, bar, unreadable)
    except BaseException:
        db.session.rollback()  # the batches committed so far stay done; a re-run continues from there
        raise
    click.echo(f"Re-encrypted {two_factor_done} two-factor secrets.")
    click.echo(
        f"Done: re-encrypted {github_done} GitHub tokens and {outbox_done} outbox emails; "
        f"{already} already under primary key."
    )
    for item in unreadable:
        click.echo(f"warning: cannot decrypt the {item} with the key ring; left as it is", err=True)
    if unreadable:
        raise click.ClickException(
            f"{len(unreadable)} stored secret(s) could not be decrypted: their key is missing from "
            "NYXCORE_ENCRYPTION_KEYS, or the data was altered. Affected teams must reconnect GitHub."
        )


def _team(tenant_id: uuid.UUID) -> tenancy.TenantContext:
    return tenancy.TenantContext(tenant_id=tenant_id)


def _user(user_id: uuid.UUID) -> tenancy.TenantContext:
    return tenancy.TenantContext(user_id=user_id)


def _reseal_in_batches(
    ids: list[uuid.UUID],
    reseal: Callable[[uuid.UUID], bool],
    context: Callable[[uuid.UUID], tenancy.TenantContext],
    what: str,
    progress: tuple[int, Any, list[str]],
) -> int:
    """Re-encrypt one secret per id, each in `context(id)` (RLS shows that one row), in committed
    batches; returns how many were re-encrypted. One that does not decrypt is named in the
    progress's `unreadable` list ("<what> <id>") and left as it is."""
    from nyxcore.extensions import db

    batch_size, bar, unreadable = progress
    done = 0
    for start in range(0, len(ids), batch_size):
        batch = ids[start : start + batch_size]
        for row_id in batch:
            try:
                with tenancy.tenant_context(**vars(context(row_id))):
                    done += reseal(row_id)
            except DecryptionError:
                unreadable.append(f"{what} {row_id}")
        db.session.commit()
        db.session.expunge_all()
        bar.update(len(batch))
    return done


def _reseal_outbox_emails(ring: KeyRing, batch_size: int, bar: Any, unreadable: list[str]) -> int:
    """Re-encrypt the stale outbox emails in committed batches; returns how many were re-encrypted.

    Each one that does not decrypt is named in `unreadable` and left as it is.
    """
    from nyxcore.extensions import db
    from nyxcore.services import key_rotation

    done = 0
    after: uuid.UUID | None = None
    while ids := key_rotation.stale_outbox_ids(ring, after=after, limit=batch_size):
        for outbox_id in ids:
            try:
                with tenancy.tenant_context(outbox_id=outbox_id):  # RLS: that message only
                    done += key_rotation.reseal_outbox_email(ring, outbox_id)
            except DecryptionError:
                unreadable.append(f"outbox email {outbox_id}")
        after = ids[-1]
        db.session.commit()
        db.session.expunge_all()
        bar.update(len(ids))
    return done
