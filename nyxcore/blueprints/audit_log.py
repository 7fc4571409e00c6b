"""The audit log page (`/team/audit`, routed in team.py): the filter form, read from the URL, and its page.

Filters live in the query string, so a filtered view is a link to share or reload. A bad value is
named on the page (400) and nothing is listed until it is fixed.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from flask import render_template, request
from flask_wtf import FlaskForm
from wtforms import DateField, Field, SelectChoice, SelectField
from wtforms.validators import Optional, ValidationError

from nyxcore.services import audit
from nyxcore.services.audit_words import KINDS
from nyxcore.templating import viewer_zone
from nyxcore.tenancy import Actor

KIND_CHOICES = [
    SelectChoice("", "Any action"),
    *(SelectChoice(code, kind.label) for code, kind in sorted(KINDS.items(), key=lambda item: item[1].label)),
]
# What a refused value is told (WTForms' own words name no remedy).
_FIXES = {
    "person": "Choose a person from the list (someone who left the team cannot be picked).",
    "kind": "Choose an action from the list.",
    "since": "Give the first day as a date such as 2026-12-01.",
    "until": "Give the last day as a date such as 2026-12-31.",
}
FILTER_ARGS = ("person", "kind", "since", "until")


# Days a log can hold, far from the ends of the calendar (a zone's offset there would overflow).
EARLIEST, LATEST = date(1970, 1, 2), date(9998, 12, 31)


def plausible_day(form: FlaskForm, field: Field) -> None:
    if field.data is not None and not EARLIEST <= field.data <= LATEST:
        raise ValidationError(f"Give a day between {EARLIEST.year} and {LATEST.year}.")


class AuditFilterForm(FlaskForm):  # type: ignore[misc]
    person = SelectField("Person", choices=[SelectChoice("", "Anyone")], default="")
    kind = SelectField("Action", choices=KIND_CHOICES, default="")
    since = DateField("From", validators=[Optional(), plausible_day])
    until = DateField("To (inclusive)", validators=[Optional(), plausible_day])


def _read_filter(form: AuditFilterForm) -> audit.EventFilter | None:
    """The filter the URL asks for, or None with the reasons on the form's fields."""
    valid = form.validate()
    for name, message in _FIXES.items():
        field = form[name]
        if field.errors and (field.data is None or isinstance(field, SelectField)):
            field.errors = [message]  # not one of the choices, or no date at all
    if valid and form.since.data and form.until.data and form.until.data < form.since.data:
        form.until.errors = ["The last day is before the first day."]
        valid = False
    if not valid:
        return None
    try:
        before = uuid.UUID(request.args["before"]) if request.args.get("before") else None
    except ValueError:  # a hand-edited "Older events" link: render_audit says so
        return None
    zone = viewer_zone()
    return audit.EventFilter(
        person=uuid.UUID(form.person.data) if form.person.data else None,
        kind=form.kind.data or None,
        since=zone.day_start(form.since.data) if form.since.data else None,
        until=zone.day_end(form.until.data) if form.until.data else None,
        before=before,
    )


def render_audit(actor: Actor) -> tuple[str, int]:
    """The audit page for the URL's filters (400 with the reasons when one is refused)."""
    form = AuditFilterForm(formdata=request.args, meta={"csrf": False})
    form.person.choices = [
        SelectChoice("", "Anyone"),
        *(SelectChoice(str(uid), name) for uid, name in audit.people(actor)),
    ]
    wanted = _read_filter(form)
    kept: dict[str, Any] = {name: request.args[name] for name in FILTER_ARGS if request.args.get(name)}
    page = audit.list_events(actor, wanted) if wanted is not None else None
    bad_cursor = wanted is None and not form.errors
    status = 200 if wanted is not None else 400
    return render_template(
        "team/audit.html", form=form, page=page, kept=kept, bad_cursor=bad_cursor, zone=viewer_zone()
    ), status
