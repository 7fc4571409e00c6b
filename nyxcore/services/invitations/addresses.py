"""The address list of a bulk invite: split, counted, validated, and what became of each address."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from enum import StrEnum

from nyxcore.errors import InvalidInput
from nyxcore.services import accounts

_ADDRESS_SEPARATORS = re.compile(r"[,;\r\n]+")
_NAME_AND_ADDRESS = re.compile(r"^[^<>]*<([^<>]+)>$")  # "Ada Lovelace <ada@example.com>"
MAX_ADDRESSES = 50


class InviteOutcome(StrEnum):
    INVITED = "invited"
    ALREADY_MEMBER = "already_member"
    ALREADY_INVITED = "already_invited"
    INVALID = "invalid"


@dataclass(frozen=True)
class InviteResult:
    """What became of one address of a bulk invite. `invitation_id` is set for invited and already invited."""

    address: str
    outcome: InviteOutcome
    message: str
    invitation_id: uuid.UUID | None = None


def parse_addresses(raw: str) -> list[str]:
    """The entries of a comma, semicolon or newline separated list, trimmed, empty ones dropped."""
    entries = []
    for entry in _ADDRESS_SEPARATORS.split(raw):
        entry = entry.strip()
        named = _NAME_AND_ADDRESS.match(entry)
        if named:
            entry = named.group(1).strip()
        if entry:
            entries.append(entry)
    return entries


def entries_of(raw: str) -> list[str]:
    """The entries of `raw` (parse_addresses); raises InvalidInput for none or more than MAX_ADDRESSES."""
    entries = parse_addresses(raw)
    if not entries:
        raise InvalidInput("Enter at least one email address.", field="emails")
    if len(entries) > MAX_ADDRESSES:
        raise InvalidInput(
            f"You entered {len(entries)} addresses; invite at most {MAX_ADDRESSES} at once.", field="emails"
        )
    return entries


def validate(entries: list[str]) -> tuple[dict[str, InviteResult], list[str]]:
    """One result per distinct entry (case-insensitive), in the order given, and the valid addresses.

    Invalid entries are answered; each valid address holds a placeholder that keeps its place.
    """
    results: dict[str, InviteResult] = {}
    wanted: list[str] = []
    for entry in entries:
        try:
            email = accounts.validated_email(entry)
        except InvalidInput as exc:
            results.setdefault(entry.lower(), InviteResult(entry, InviteOutcome.INVALID, exc.message))
            continue
        if email not in results:
            results[email] = InviteResult(email, InviteOutcome.INVITED, "")  # placeholder, keeps the order
            wanted.append(email)
    return results, wanted
