"""Names anyone can choose, as an invitation mail shows them: printable, short, never link-shaped."""

from __future__ import annotations

import re

import pytest

from nyxcore.services.mail_names import MAX_CHARS, for_mail

# What auto-linkers look for: a scheme, a www., an address, or a dotted host name.
LINK_SHAPED = re.compile(r"[a-z][a-z0-9+.-]*:/|www\.|[\w.+-]@\w|\w\.\w", re.IGNORECASE)


@pytest.mark.parametrize(
    "name", ["Acme Inc.", "Dr. Who", "Ops & Co", "Zoë's team", "R&D: 2026", "Team / Ops"]
)
def test_ordinary_names_are_unchanged(name):
    assert for_mail(name) == name


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("Support https://evil.example/login", "Support https[:][/][/]evil[.]example[/]login"),
        ("evil.example", "evil[.]example"),
        ("a@b.example", "a[@]b[.]example"),
        ("www.evil.example", "www[.]evil[.]example"),
        ("mailto:a@b.example", "mailto[:]a[@]b[.]example"),
        ("evil\uff0eexample \uff41\uff20b", "evil[.]example a[@]b"),  # full-width forms
        ("evil\u2024example", "evil[.]example"),  # one dot leader, a look-alike dot
        ("evil\u3002example", "evil[\u3002]example"),  # ideographic full stop, which IDNA reads as a dot
        ("evil\u200b.example", "evil .example"),  # a zero-width space is a space
    ],
)
def test_link_shaped_names_are_defanged(name, shown):
    assert for_mail(name) == shown
    assert not LINK_SHAPED.search(for_mail(name))


def test_control_and_bidi_characters_become_spaces_and_runs_collapse():
    assert for_mail("Ops\r\nBcc: x\t\x00 \u202eTeam\u202c  ") == "Ops Bcc: x Team"


def test_long_names_are_cut_to_the_limit_with_an_ellipsis():
    shown = for_mail("x" * 200)
    assert shown == "x" * (MAX_CHARS - 1) + "\u2026"
    assert for_mail("y" * MAX_CHARS) == "y" * MAX_CHARS
