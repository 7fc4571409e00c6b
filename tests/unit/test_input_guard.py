"""The input guard: exactly which characters and bytes it refuses, its message, and where it runs.

The request tests use the real app on an empty SQLite database: any query would fail with "no such
table", so a clean 400 shows the guard answered before anything read the database.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from flask import Flask

from nyxcore import create_app, input_guard
from nyxcore.config import load_config
from nyxcore.input_guard import CONTROL, FORBIDDEN, UNDECODABLE, Refusal, first_forbidden, first_undecodable

# The specification, written as code points rather than as the guard's regex.
C0_EXCEPT_TAB_LF_CR = set(range(0x00, 0x20)) - {0x09, 0x0A, 0x0D}
DEL_AND_C1 = set(range(0x7F, 0xA0))
SURROGATES = set(range(0xD800, 0xE000))
BIDI_EMBEDDINGS_AND_OVERRIDES = set(range(0x202A, 0x202F))  # LRE RLE PDF LRO RLO
BIDI_ISOLATES = set(range(0x2066, 0x206A))  # LRI RLI FSI PDI
SPECIFIED = C0_EXCEPT_TAB_LF_CR | DEL_AND_C1 | SURROGATES | BIDI_EMBEDDINGS_AND_OVERRIDES | BIDI_ISOLATES

ALLOWED_EXAMPLES = {
    "tab, newline, carriage return": "one\ttwo\r\nthree\n",
    "accents and other scripts": "Zoë Ωμέγα 東京 עברית العربية",
    "no-break space (first after C1)": "\u00a0",
    "left-to-right and right-to-left marks": "\u200e\u200f\u061c",
    "narrow no-break space (next to RLO)": "\u202f",
    "line and paragraph separators": "\u2028\u2029",
    "replacement character": "\ufffd",
    "astral characters": "🙂\U0010ffff",
}

MESSAGE = (
    "The field “title” contains characters that are not allowed (control or text-direction "
    "characters). Remove them and try again."
)


def test_the_forbidden_set_is_exactly_the_specified_one() -> None:
    forbidden = {cp for cp in range(0x110000) if FORBIDDEN.search(chr(cp))}
    assert forbidden == SPECIFIED


@pytest.mark.parametrize("character", ["\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f", "\x85", "\x9f", "\ud800", "\udfff", "\u202a", "\u202e", "\u2066", "\u2069"])
def test_a_forbidden_character_in_a_value_blames_its_field(character: str) -> None:
    assert first_forbidden([("body", "fine"), ("title", f"a{character}b")]) == Refusal("title", CONTROL)


def test_a_forbidden_character_in_a_name_blames_no_field_by_that_name() -> None:
    assert first_forbidden([("ti\x00tle", "fine")]) == Refusal(None, CONTROL)


@pytest.mark.parametrize("value", ALLOWED_EXAMPLES.values(), ids=ALLOWED_EXAMPLES.keys())
def test_ordinary_text_passes(value: str) -> None:
    assert first_forbidden([("title", value), (value, "x")]) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"title=Zo%C3%AB&body=a+b", None),
        (b"q=", None),
        (b"", None),
        (b"title=%ED%A0%80", Refusal("title", UNDECODABLE)),  # a lone surrogate in CESU-8
        (b"title=%ED%B0%80x", Refusal("title", UNDECODABLE)),
        (b"ok=1&title=caf%E9", Refusal("title", UNDECODABLE)),  # Latin-1
        (b"title=\xff", Refusal("title", UNDECODABLE)),  # a raw byte, not percent-encoded
        (b"title=%C3", Refusal("title", UNDECODABLE)),  # cut short
        (b"my+field=%C0%AF", Refusal("my field", UNDECODABLE)),  # overlong "/"
        (b"%FF=1", Refusal(None, UNDECODABLE)),
    ],
)
def test_first_undecodable(raw: bytes, expected: Refusal | None) -> None:
    assert first_undecodable(raw) == expected


def test_the_messages_name_the_field() -> None:
    assert input_guard.refusal_message(Refusal("title", CONTROL)) == MESSAGE
    assert input_guard.refusal_message(Refusal("title", UNDECODABLE)) == (
        "The field “title” contains bytes that are not valid UTF-8 text. Remove them and try again."
    )
    assert input_guard.refusal_message(Refusal(None, CONTROL)).startswith("A field name contains")
    assert "“" + "n" * 40 + "…”" in input_guard.refusal_message(Refusal("n" * 100_000, CONTROL))


# --- in the app ----------------------------------------------------------------------------------


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    config = load_config({"NYXCORE_ENV": "testing", "CELERY_TASK_ALWAYS_EAGER": "true"}, instance_path=str(tmp_path))
    config["RATELIMIT_ENABLED"] = False
    return create_app(config)


def test_the_guard_runs_before_every_other_request_hook(app: Flask) -> None:
    hooks = app.before_request_funcs[None]
    assert hooks[0] is input_guard.check_request
    assert hooks.count(input_guard.check_request) == 1


def test_a_query_argument_is_refused_with_a_400_naming_it(app: Flask) -> None:
    response = app.test_client().get("/auth/login?email=a%00b")
    assert response.status_code == 400
    assert "The field “email” contains characters that are not allowed" in response.get_data(as_text=True)


def test_a_form_field_is_refused_before_the_csrf_check(app: Flask) -> None:
    response = app.test_client().post("/auth/signup", data={"name": "Ann\u202e", "email": "a@example.com"})
    assert response.status_code == 400
    assert "The field “name” contains characters that are not allowed" in response.get_data(as_text=True)


def test_clean_input_still_meets_the_csrf_check(app: Flask) -> None:
    response = app.test_client().post("/auth/signup", data={"name": "Ann", "email": "a@example.com"})
    assert response.status_code == 400
    assert "The form had expired" in response.get_data(as_text=True)


def test_undecodable_bytes_in_a_raw_body_are_refused(app: Flask) -> None:
    response = app.test_client().post(
        "/auth/login", data=b"email=a%ED%A0%80b", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 400
    assert "The field “email” contains bytes that are not valid UTF-8 text" in response.get_data(as_text=True)


def test_under_api_the_refusal_is_json(app: Flask) -> None:
    response = app.test_client().get("/api/v1/health?x=%01")
    assert response.status_code == 400
    assert response.json is not None and "“x”" in response.json["message"]


def test_the_view_reads_the_form_the_guard_checked(app: Flask) -> None:
    @app.post("/echo")
    def echo() -> str:
        from flask import request

        return request.form["title"]

    app.config["WTF_CSRF_ENABLED"] = False
    response = app.test_client().post("/echo", data={"title": "Zoë\tok"})
    assert response.get_data(as_text=True) == "Zoë\tok"


def test_file_contents_are_not_inspected_but_multipart_fields_are(app: Flask) -> None:
    @app.post("/upload")
    def upload() -> str:
        from flask import request

        return str(len(request.files["file"].read()))

    app.config["WTF_CSRF_ENABLED"] = False
    client = app.test_client()
    binary = {"file": (io.BytesIO(b"\x00\x01\xff" * 10), "a.bin")}
    assert client.post("/upload", data=binary, content_type="multipart/form-data").get_data(as_text=True) == "30"
    refused = client.post(
        "/upload",
        data={"file": (io.BytesIO(b"x"), "a.bin"), "title": "a\x00b"},
        content_type="multipart/form-data",
    )
    assert refused.status_code == 400
