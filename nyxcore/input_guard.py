"""One guard for every request: query arguments and form fields that are not clean text get a 400.

PostgreSQL cannot store NUL in text (psycopg2 raises: a 500), and the other C0 and C1 controls,
DEL, surrogates and the bidirectional embeddings, overrides and isolates have no business in a
name, a title or an address: they corrupt logs, mails and exports, and text-direction controls
disguise what a reader sees ("Trojan Source"). TAB, LF and CR stay allowed: text areas send them.

Bytes that are not UTF-8 (a lone surrogate sent as its CESU-8 bytes `%ED%A0%80`, Latin-1 text) are
refused too. Werkzeug would not fail on them: in query strings and URL-encoded forms it keeps them
as the literal text "%ED%A0%80" (storing that would be storing garbage), and in a raw form body it
quietly drops the whole form. So the guard checks the raw query string and the raw URL-encoded body
(which werkzeug reads into memory whole anyway; `get_data(cache=True)` lets the form parser reuse
those bytes). U+FFFD itself is an ordinary character and is accepted: werkzeug produces it only in
multipart bodies, which the app does not use and whose parts (possibly files) this guard does not
read a second time to tell a typed U+FFFD from a replaced byte.

The hook runs first among the app's `before_request` hooks: before Flask-WTF's CSRF check (so the
message names the field instead of blaming an expired form), before the rate limiter, and before
`web.bind_context` reads the database. A GET without a query string costs one test.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from itertools import chain
from typing import NamedTuple
from urllib.parse import unquote_to_bytes

from flask import Flask

from nyxcore.errors import InvalidInput
from nyxcore.fixed_cost import current_request

# C0 controls except TAB (09), LF (0A) and CR (0D); DEL and the C1 controls (7F-9F); surrogates;
# the bidirectional embeddings and overrides (202A-202E) and isolates (2066-2069).
FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")
CONTROL = "characters that are not allowed (control or text-direction characters)"
UNDECODABLE = "bytes that are not valid UTF-8 text"
_SHOWN_NAME_LENGTH = 40
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_FORM_URLENCODED = "application/x-www-form-urlencoded"


class Refusal(NamedTuple):
    """Which field to blame (None: a field's name itself) and what is wrong with it."""

    name: str | None
    what: str


class UncleanInput(InvalidInput):
    """A query argument or form field holds something other than clean text (always a 400)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal_message(refusal), field=refusal.name)


def refusal_message(refusal: Refusal) -> str:
    """What to tell the sender, naming the field (shortened) when its name is printable."""
    name = refusal.name
    if name is None:
        shown = "A field name"
    elif len(name) > _SHOWN_NAME_LENGTH:
        shown = f"The field “{name[:_SHOWN_NAME_LENGTH]}…”"
    else:
        shown = f"The field “{name}”"
    return f"{shown} contains {refusal.what}. Remove them and try again."


def first_forbidden(pairs: Iterable[tuple[str, str]]) -> Refusal | None:
    """The first of the decoded (name, value) pairs that holds a FORBIDDEN character, if any."""
    for name, value in pairs:
        if FORBIDDEN.search(name):
            return Refusal(None, CONTROL)
        if FORBIDDEN.search(value):
            return Refusal(name, CONTROL)
    return None


def _is_utf8(raw: bytes) -> bool:
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def first_undecodable(raw: bytes) -> Refusal | None:
    """The first pair of a raw `a=1&b=2` string (query or URL-encoded body) that is not UTF-8, if any."""
    if _is_utf8(raw):
        return None
    for pair in raw.split(b"&"):
        name, _, value = pair.partition(b"=")
        if not _is_utf8(name):
            return Refusal(None, UNDECODABLE)
        if not _is_utf8(value):
            return Refusal(unquote_to_bytes(name.replace(b"+", b" ")).decode("utf-8"), UNDECODABLE)
    return Refusal(None, UNDECODABLE)  # not reached: UTF-8 is valid exactly when each part is


def check_request() -> None:
    """Refuse the request (`UncleanInput`, a 400) if a query argument or form field is not clean text."""
    this_request = current_request()  # looked up once, not through the proxy (nyxcore/fixed_cost.py)
    has_body = this_request.method not in _SAFE_METHODS
    if not this_request.query_string and not has_body:
        return
    refusal = first_undecodable(this_request.query_string)
    if refusal is None and has_body and this_request.mimetype == _FORM_URLENCODED:
        refusal = first_undecodable(this_request.get_data(cache=True))
    if refusal is None:
        pairs: Iterable[tuple[str, str]] = this_request.args.items(multi=True)
        if has_body:
            # `form` parses only form bodies (and keeps the result for the view); files are not read here.
            pairs = chain(pairs, this_request.form.items(multi=True))
        refusal = first_forbidden(pairs)
    if refusal is not None:
        raise UncleanInput(refusal)


def init_app(app: Flask) -> None:
    """Run `check_request` before every other `before_request` hook of the app (see the module doc)."""
    app.before_request_funcs.setdefault(None, []).insert(0, check_request)
