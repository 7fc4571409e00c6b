"""Every kind of audit event NyxCore records has its sentence, and nothing reads as a bare code."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from nyxcore.services.audit_words import KINDS, Facts, describe

SERVICES = Path(__file__).resolve().parents[2] / "nyxcore" / "services"
CODE = re.compile(r"^[a-z_]+\.[a-z_]+$")


def recorded_codes() -> set[str]:
    """Event codes written by the services: the third argument of audit.record, or an `action` passed on."""
    codes: set[str] = set()
    for path in SERVICES.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            candidates = [kw.value for kw in node.keywords if kw.arg == "action"]
            if name == "audit.record" and len(node.args) >= 3:
                candidates.append(node.args[2])
            if name == "_replace":  # invitations: resend and renew name their event
                candidates += node.args[2:3]
            codes |= {c.value for c in candidates if isinstance(c, ast.Constant) and CODE.match(str(c.value))}
    return codes


def test_every_recorded_kind_has_a_sentence() -> None:
    codes = recorded_codes()
    assert {"member.role_changed", "note.deleted", "wardrobe.added", "invitation.resent"} <= codes  # the scan works
    assert codes - KINDS.keys() == set()


@pytest.mark.parametrize("code", sorted(KINDS))
def test_each_sentence_reads_without_details_and_never_as_a_code(code: str) -> None:
    """Old events lack fields that newer ones have: the sentence still reads, with no code in it."""
    for details in ({}, {"role": "admin", "old": "viewer", "new": "member", "required": True}):
        said = describe(code, Facts("bob@example.com", details))
        assert said and code not in said and "None" not in said


def test_an_unknown_kind_or_malformed_details_fall_back_to_words() -> None:
    assert describe("gadget.frobbed", Facts("x", {})) == (
        "made a change of a kind this page cannot describe yet (gadget: frobbed) (concerning x)"
    )
    assert describe("team.settings_changed", Facts("", {"name": 5})).startswith("made a change of a kind")
    said = describe("member.role_changed", Facts("bob@example.com", {"old": "viewer", "new": "admin"}, {"bob@example.com": "Bob"}))
    assert said == "changed Bob's role from viewer to admin"
