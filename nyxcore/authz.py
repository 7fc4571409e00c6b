"""Who acts, and may they: the request's Actor, its tenant context, and the `role_required` decorator.

The request hook (`bind_request_actor`) is the request's one entry point into the tenant context:
it loads the signed-in user, picks their active team, makes the Actor and enters
`tenancy.tenant_context` for the rest of the request (left again at teardown). Views that must act
as someone else for a moment (a new account, a new team, a magic link's holder) use `acting_as`,
which goes through the same context manager.

Every authorization decision reads an Operation declared by a service (nyxcore/permissions.py):
`role_required(op)` on the view, `can("name")` in templates and the navigation.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import wraps
from typing import ParamSpec, TypeVar

from flask import current_app, flash, g, redirect, request, session, url_for
from flask_login import current_user, login_user
from werkzeug.wrappers.response import Response

from nyxcore import tenancy
from nyxcore.extensions import login_manager
from nyxcore.fixed_cost import current_session, request_globals
from nyxcore.models import AccountToken, Invitation, TenantMember, User
from nyxcore.permissions import Operation, operation
from nyxcore.roles import TenantRole
from nyxcore.services import account_tokens, invitations, notices, sessions, teams
from nyxcore.services.account_tokens import Purpose
from nyxcore.tenancy import Actor

P = ParamSpec("P")
R = TypeVar("R")
ACTIVE_TENANT_KEY = "tenant_id"
SESSION_TOKEN_KEY = "sid"  # noqa: S105 (a key name; names the server-side session, services/sessions.py)
_STACK = "nyxcore_context_stack"
_SIGNED_IN = "nyxcore_signed_in"  # on g: what load_user read with the user (sessions.SignedIn)


def current_actor() -> Actor | None:
    """The signed-in user acting in their active team, or None (signed out, or in no team)."""
    actor: Actor | None = g.get("actor")
    return actor


def acting() -> Actor:
    """The Actor inside a view guarded by `role_required`, which guarantees one."""
    actor = current_actor()
    if actor is None:
        raise RuntimeError("acting() is for views under @role_required")
    return actor


def current_membership() -> TenantMember | None:
    """The signed-in user's membership in the active team (for templates)."""
    actor = current_actor()
    return actor.membership if actor else None


def current_role() -> TenantRole | None:
    actor = current_actor()
    return actor.role if actor else None


def my_teams() -> list[teams.TeamChoice]:
    """The team switcher's teams of the signed-in user: at most 20, the active one among them."""
    choices: list[teams.TeamChoice] = g.get("my_teams", [])
    return choices


def more_teams() -> bool:
    """Whether the signed-in user has more teams than the switcher shows."""
    return bool(g.get("more_teams", False))


def all_my_teams() -> list[TenantMember]:
    """Every team of the signed-in user, by name (one statement, when a page needs them all)."""
    if not current_user.is_authenticated:
        return []
    return teams.memberships_of(current_user.id)


def email_verified() -> bool:
    """Whether the signed-in user's address is verified (False when signed out)."""
    return bool((user := current_user._get_current_object()).is_authenticated and user.email_verified_at is not None)


def permits(needed: Operation) -> bool:
    """May the current user do `needed` here: their role in the active team, and a verified address
    when the operation needs one. What role_required, can() and the navigation all ask."""
    return needed.permits(current_role(), email_verified=email_verified())


def can(name: str) -> bool:
    """For templates and navigation: may the current user do the operation called `name` here?"""
    return permits(operation(name))


def needs_verification(name: str) -> bool:
    """For templates: the role allows operation `name`, only the unverified address stands in the way."""
    needed = operation(name)
    return needed.allows(current_role()) and not needed.allows_verification(email_verified())


def bind_request_actor() -> None:
    """The request hook: the user, their active team, the Actor, and the tenant context until teardown."""
    request_g = request_globals()  # `g` itself, looked up once (nyxcore/fixed_cost.py): every request runs this
    if tenancy.current() is not tenancy.EMPTY:  # whatever ran before, this request starts with none
        request_g.setdefault(_STACK, ExitStack()).enter_context(tenancy.tenant_context())
    request_g.actor, request_g.my_teams = None, []
    if not current_session():
        # No session cookie (or an empty one): no one is signed in, and Flask-Login need not look
        # (its session protection hashes the address and browser, its remember-me reads cookies).
        login_manager._update_request_context_with_user()
        return
    user: User = current_user._get_current_object()  # loads the user (load_user); then one look-up, not three
    if not user.is_authenticated:
        return
    request_g.setdefault(_STACK, ExitStack()).enter_context(tenancy.tenant_context(user_id=user.id))
    # Read with the user (load_user): the wanted team's membership, and the switcher's teams.
    signed_in: sessions.SignedIn = request_g.pop(_SIGNED_IN, None) or sessions.SignedIn(user, None, [])
    membership = signed_in.membership
    wanted = _session_tenant_id() or user.last_tenant_id  # a new session starts in the team last used
    if wanted is not None and membership is None:
        tell_of_lost_team(wanted)  # only now: a page whose team is still active asks nothing
    if membership is None and signed_in.choices:  # no team chosen yet, or it was lost: the earliest joined
        membership = teams.first_joined(user.id)
    request_g.my_teams = teams.switcher(signed_in.choices, membership)
    request_g.more_teams = len(signed_in.choices) > teams.SWITCHER_TEAMS
    if membership is None:
        session.pop(ACTIVE_TENANT_KEY, None)
        return
    activate_team(membership, user)


def tell_of_lost_team(tenant_id: uuid.UUID) -> bool:
    """Say, once, why the signed-in user is no longer in team `tenant_id`, if that was noted."""
    message = notices.take(current_user.id, tenant_id)
    if message is not None:
        flash(message, "info")  # shown now; the notice is used up with this request's commit
    return message is not None


def unbind_request_actor() -> None:
    """Leave every tenant context the request entered (teardown)."""
    if (stack := request_globals().pop(_STACK, None)) is not None:
        stack.close()


def activate_team(membership: TenantMember, user: User | None = None) -> None:
    """Make `membership`'s team the active one for this request and the session (`user`: the signed-in one)."""
    request_g, flask_session, tenant_id = request_globals(), current_session(), str(membership.tenant_id)
    if changed := flask_session.get(ACTIVE_TENANT_KEY) != tenant_id:
        flask_session[ACTIVE_TENANT_KEY] = tenant_id
    signed_in_user = current_user._get_current_object() if user is None else user
    actor = request_g.actor = Actor(user=signed_in_user, membership=membership)
    request_g.setdefault(_STACK, ExitStack()).enter_context(
        tenancy.tenant_context(user_id=membership.user_id, tenant_id=membership.tenant_id)
    )
    if changed:  # kept for the next log in; written (in the new team's context) when the session's team
        # changes, not on every page: two browsers in two teams do not rewrite and lock the user's row
        teams.remember_active(actor.user, membership.tenant_id)


@contextmanager
def acting_as(
    user_id: uuid.UUID | None,
    *,
    tenant_id: uuid.UUID | None = None,
    invite_token_hash: str | None = None,
    account_token_hash: str | None = None,
) -> Iterator[None]:
    """Run a block of a view as `user_id` (in `tenant_id`), then go back to the request's context."""
    with tenancy.tenant_context(
        user_id=user_id,
        tenant_id=tenant_id,
        invite_token_hash=invite_token_hash,
        account_token_hash=account_token_hash,
    ):
        yield


@contextmanager
def acting_in(membership: TenantMember) -> Iterator[Actor]:
    """The signed-in user as the Actor in one of their teams, active or not, for a block.

    For what spans all of a user's teams (deleting their account): the view enters each in turn.
    """
    user: User = current_user._get_current_object()
    if membership.user_id != user.id:
        raise RuntimeError("acting_in() is for the signed-in user's own memberships")
    with acting_as(user.id, tenant_id=membership.tenant_id):
        yield Actor(user=user, membership=membership)


@contextmanager
def acting_for_a_new_account() -> Iterator[tuple[uuid.UUID, uuid.UUID]]:
    """A new user's id and their personal team's, with the context in which both may be written."""
    user_id, tenant_id = uuid.uuid4(), uuid.uuid4()
    with acting_as(user_id, tenant_id=tenant_id):
        yield user_id, tenant_id


@contextmanager
def acting_for_a_new_team(user_id: uuid.UUID) -> Iterator[uuid.UUID]:
    """A new team's id, with the context in which its first rows may be written (RLS WITH CHECK)."""
    tenant_id = uuid.uuid4()
    with acting_as(user_id, tenant_id=tenant_id):
        yield tenant_id


@contextmanager
def presenting_invitation(token: str) -> Iterator[Invitation]:
    """Act as the holder of a magic link: with the token's hash, in the invitation's team.

    The hash alone lets row-level security show the invitation (and name its team); the team's
    context then lets acceptance read the inviter's membership and write the new member's row.
    Yields the invitation (for `invitations.acceptance`/`accept`, not to read it twice); an unknown
    or malformed token raises NotFound.
    """
    user_id = current_user.id if current_user.is_authenticated else None
    token_hash = invitations.hash_token(token)
    with acting_as(user_id, invite_token_hash=token_hash):
        invitation = invitations.find_by_token(token)
    with acting_as(user_id, tenant_id=invitation.tenant_id, invite_token_hash=token_hash):
        yield invitation


@contextmanager
def presenting_invitation_as_new_account(token: str) -> Iterator[uuid.UUID]:
    """A new account's id, acting as it while holding a magic link, in the invitation's team."""
    user_id = uuid.uuid4()
    token_hash = invitations.hash_token(token)
    with acting_as(user_id, invite_token_hash=token_hash):
        tenant_id = invitations.find_by_token(token).tenant_id
    with acting_as(user_id, tenant_id=tenant_id, invite_token_hash=token_hash):
        yield user_id


@contextmanager
def presenting_account_token(token: str, purpose: Purpose) -> Iterator[AccountToken]:
    """Act as the holder of an account link: the token's row, then as the account it belongs to.

    The hash alone lets row-level security show that one token (in any state); the block then runs
    as its user, whose own rows (the account, its tokens and sessions) the link may change. The view
    decides whether the visitor may (someone signed in as another account may not). An unknown or
    malformed token raises NotFound.
    """
    token_hash = account_tokens.hash_presented(token)
    with acting_as(None, account_token_hash=token_hash):
        found = account_tokens.find(token, purpose)
    with acting_as(found.user_id, account_token_hash=token_hash):
        yield found


def end_this_session() -> None:
    """End the server-side session this browser's cookie names, if someone is signed in here.

    Run as whoever: the session is ended as its own user. Logging out, and logging in here as
    anyone, end it, so that it does not stay live (and usable by a copy of the cookie) after the
    browser forgot it.
    """
    token = session.get(SESSION_TOKEN_KEY)
    if current_user.is_authenticated and isinstance(token, str):
        with acting_as(current_user.id):
            sessions.end(current_user.id, token)


def sign_in(user: User, *, second_factor_proved: bool = False) -> None:
    """Start a new server-side session for `user` in this browser (run as that user).

    Nothing from before carries over: a session already signed in here ends, and the Flask session
    is cleared first. A user with two-factor on is signed in only by the code step
    (`second_factor_proved`); every other way in (a password, a link) goes through
    `await_second_factor` instead, and one that forgot is refused here rather than let through.
    """
    if user.two_factor_enabled_at is not None and not second_factor_proved:
        raise RuntimeError("a user with two-factor on signs in through the code step only")
    end_this_session()
    session.clear()
    login_user(user)
    session.permanent = True
    session[SESSION_TOKEN_KEY] = sessions.start(
        user.id,
        user_agent=request.user_agent.string,
        ip_address=request.remote_addr or "",
        lifetime=current_app.config["PERMANENT_SESSION_LIFETIME"],
    )


def _session_tenant_id() -> uuid.UUID | None:
    try:
        return uuid.UUID(current_session().get(ACTIVE_TENANT_KEY, ""))
    except (TypeError, ValueError):
        return None


def role_required(needed: Operation) -> Callable[[Callable[P, R]], Callable[P, R | Response]]:
    """Guard a view by an operation: anonymous users log in, users without a team make one, lower roles get 403."""

    def decorator(view: Callable[P, R]) -> Callable[P, R | Response]:
        @wraps(view)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R | Response:
            actor = current_actor()  # made only for a signed-in user: with one, Flask-Login need not be asked
            if actor is None and not current_user.is_authenticated:
                response: Response = login_manager.unauthorized()
                return response
            if actor is None:
                flash("You are not in any team now: create one, or ask a team's admin for an invitation.", "info")  # nothing to commit
                return redirect(url_for("teams.new"))
            needed.check(actor)
            if (
                actor.tenant.require_two_factor
                and actor.user.two_factor_enabled_at is None
                and not needed.before_two_factor
            ):
                # Both read with the user and the membership: the team's requirement costs no query.
                flash(f"{actor.tenant.name} requires two-factor authentication. Turn it on to continue.", "info")
                return redirect(url_for("two_factor.settings"))
            return view(*args, **kwargs)

        guarded.operation = needed  # type: ignore[attr-defined]
        guarded.required_role = needed.minimum  # type: ignore[attr-defined]
        return guarded

    return decorator


@login_manager.user_loader  # type: ignore[untyped-decorator]
def load_user(user_id: str) -> User | None:
    """The user of a live server-side session; a cookie alone (after log out, say) signs in no one."""
    token = current_session().get(SESSION_TOKEN_KEY)
    try:
        uid = uuid.UUID(user_id)
    except ValueError:
        return None
    if not isinstance(token, str):
        return None
    with tenancy.tenant_context(user_id=uid):  # row-level security shows a user their own sessions
        signed_in = sessions.load(
            uid, token, idle=current_app.config["SESSION_IDLE_TIMEOUT"], wanted_tenant_id=_session_tenant_id()
        )
    if signed_in is None:
        session.clear()  # the session ended: drop what the cookie still carries
        return None
    request_globals().setdefault(_SIGNED_IN, signed_in)  # for bind_request_actor, this request
    return signed_in.user
