"""Shared form pieces."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask_wtf import FlaskForm
from wtforms import Field
from wtforms.validators import ValidationError

from nyxcore.errors import DomainError


def add_domain_error(form: Any, error: DomainError, default_field: str) -> None:
    """Show a service's refusal on the field it concerns (or `default_field`)."""
    field: Field = getattr(form, error.field or default_field, None) or getattr(form, default_field)
    field.errors = [*field.errors, error.message]
    form.error_status = error.status_code  # web.form_page answers with it


class MinPasswordLength:
    """At least PASSWORD_MIN_LENGTH characters (read at request time, so tests and operators can set it)."""

    def __call__(self, form: Any, field: Field) -> None:
        minimum = current_app.config["PASSWORD_MIN_LENGTH"]
        if len(field.data or "") < minimum:
            raise ValidationError(f"Use at least {minimum} characters.")


class ConfirmForm(FlaskForm):  # type: ignore[misc]
    """A bare POST form (a button): the CSRF token is its only field."""
