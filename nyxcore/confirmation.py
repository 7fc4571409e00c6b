"""One pattern for every destructive action: its address answers GET with a confirm page, POST acts.

A link (not a form) offers the action; it opens the confirm page at the action's own address,
which says in words what will happen and holds the only form that performs it: the CSRF token,
`confirmed=yes` and any `hidden` values the action needs. A POST that skipped the page (an old
one-click form, a crafted request) is sent to it with a 303 and changes nothing. The page needs
what the action needs: the view's `role_required` guards both, and the view loads the object it
names before asking, so another team's object answers 404 here too. Works without JavaScript.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlencode, urlsplit

from flask import abort, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_wtf import FlaskForm

from nyxcore.errors import DomainError, NotFound, PermissionDenied
from nyxcore.forms import ConfirmForm
from nyxcore.web import form_status, is_safe_next, redirect_after_failure

P = ParamSpec("P")
R = TypeVar("R")
CONFIRMED = "confirmed"


@dataclass(frozen=True)
class Confirmation:
    """What the confirm page says and sends.

    `back` is where Cancel goes when the page was not opened from another page of this site;
    `refusal`, when set, explains why the action cannot be done and replaces the button;
    `form` adds fields the person must fill in (the team's name before deleting it).
    """

    title: str
    consequences: Sequence[str]
    button: str
    back: str
    hidden: Mapping[str, str] = field(default_factory=dict)
    refusal: str | None = None
    form: FlaskForm | None = None


def is_confirmed() -> bool:
    """Whether this request is the POST sent by a confirm page (its CSRF token checked)."""
    if request.method != "POST" or request.form.get(CONFIRMED) != "yes":
        return False
    if not ConfirmForm().validate_on_submit():
        abort(400)
    return True


def came_from(default: str) -> str:
    """Where Cancel goes: `?next=` or the referring page of this site, else `default`."""
    wanted = request.args.get("next")
    if is_safe_next(wanted):
        return str(wanted)
    referrer = urlsplit(request.referrer or "")
    here = urlsplit(request.url)
    if referrer.netloc == here.netloc and referrer.path != here.path:
        target = referrer.path + (f"?{referrer.query}" if referrer.query else "")
        if is_safe_next(target):
            return target
    return default


def confirm_page(confirmation: Confirmation) -> ResponseReturnValue:
    """The confirm page (GET), or a 303 to it for a POST that did not come from it."""
    if request.method == "POST":  # the page again, for what this POST named (its query and hidden values)
        query = urlencode([*request.args.items(multi=True), *confirmation.hidden.items()])
        return redirect(f"{request.path}?{query}" if query else request.path, code=303)
    status = form_status(confirmation.form) if confirmation.form is not None else 200
    page = render_template(
        "_confirm.html",
        confirmation=confirmation,
        cancel=came_from(confirmation.back),
        confirmed_field=CONFIRMED,
    )
    return page, status


def back_on_failure(
    endpoint: str, *, field: str | None = None, **values: Any
) -> Callable[[Callable[P, R]], Callable[P, R | Any]]:
    """After a refused POST: roll back, say why on `endpoint`'s page and redirect there (303).

    Reloading that page does not post again. The reason is shown on `field` of that page's form
    (the page must call `web.carried_errors`), else as a message. A missing object (404) and a missing
    role (403) keep their own pages: they are not something to retry.
    """

    def decorator(view: Callable[P, R]) -> Callable[P, R | Any]:
        @wraps(view)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R | Any:
            try:
                return view(*args, **kwargs)
            except (NotFound, PermissionDenied):
                raise
            except DomainError as exc:
                if request.method != "POST":
                    raise
                return redirect_after_failure(exc.message, url_for(endpoint, **values), field=field)

        return guarded

    return decorator
