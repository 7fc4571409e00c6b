"""The audit log in words: one sentence builder per event kind, in this one table.

A builder gets the event's facts and returns what the actor did, as plain text ("changed Bob's role
from member to admin"); the page puts the actor's name in front and Jinja escapes all of it, so a
name or title someone typed is never markup. A kind missing here, or an old event whose details lack
a field, still reads as a sentence (`describe`), never as a bare code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nyxcore.roles import TenantRole, article_for


@dataclass(frozen=True)
class Facts:
    """What a builder may use: the event's target and details, and the names of people it names by address."""

    target: str
    details: Mapping[str, Any]
    names: Mapping[str, str] = field(default_factory=dict)

    def person(self) -> str:
        """The target person: their name while they are a team mate, else their address."""
        return self.names.get(self.target.lower(), self.target) or "someone"

    def role(self, key: str = "role") -> str:
        """A role detail as a word ("admin"); an unknown value as it is."""
        return role_word(self.details.get(key))

    def a_role(self, key: str = "role") -> str:
        word = self.role(key)
        return f"{article_for(word)} {word}"

    def text(self, key: str, default: str = "") -> str:
        value = self.details.get(key, default)
        return ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def role_word(value: Any) -> str:
    try:
        return TenantRole(value).label.lower()
    except ValueError:
        return str(value or "unknown role")


def quoted(value: str) -> str:
    return f"\u201c{value}\u201d"


def _settings(f: Facts) -> str:
    parts = []
    if "name" in f.details:
        old, new = f.details["name"]
        parts.append(f"renamed the team from {quoted(old)} to {quoted(new)}")
    if "slug" in f.details:
        old, new = f.details["slug"]
        parts.append(f"changed the team's short name from {quoted(old)} to {quoted(new)}")
    return " and ".join(parts) or "changed the team's settings"


def _seat_limit(f: Facts) -> str:
    new, old = f.details.get("new"), f.details.get("old")
    was = f" (it was {old})" if old is not None else " (it was unlimited)"
    return f"removed the seat limit{was}" if new is None else f"set the seat limit to {new}{was}"


def _domains(f: Facts) -> str:
    domains = f.text("domains")
    return f"let only addresses at {domains} join" if domains else "let people at any e-mail domain join"


def _revoked(f: Facts) -> str:
    why = " (the inviter can no longer grant that role)" if f.details.get("reason") else ""
    return f"revoked the invitation for {f.target} as {f.a_role()}{why}"


def _github(verb: str) -> Callable[[Facts], str]:
    def say(f: Facts) -> str:
        replaced = " (replacing the earlier token)" if f.details.get("replaced") else ""
        ending = f", token ending in {f.text('last_four')}" if f.details.get("last_four") else ""
        return f"{verb} GitHub as {f.text('login', f.target)}{ending}{replaced}"

    return say


def _renamed(noun: str, verb: str) -> Callable[[Facts], str]:
    """An edit of a titled thing; names the old title too when it changed."""

    def say(f: Facts) -> str:
        old = f.details.get("old")
        if old and old != f.target:
            return f"renamed {noun} {quoted(old)} to {quoted(f.target)}"
        return f"{verb} {noun} {quoted(f.target)}"

    return say


@dataclass(frozen=True)
class Kind:
    label: str  # for the "Action" filter
    say: Callable[[Facts], str]


KINDS: dict[str, Kind] = {
    "team.created": Kind("Team created", lambda f: f"created the team {quoted(f.target)}"),
    "team.settings_changed": Kind("Team renamed", _settings),
    "team.ownership_transferred": Kind(
        "Ownership transferred", lambda f: f"made {f.person()} an owner and became an admin"
    ),
    "team.two_factor_required": Kind(
        "Two-factor requirement",
        lambda f: (
            "required two-factor authentication of every member"
            if f.details.get("required")
            else "stopped requiring two-factor authentication"
        ),
    ),
    "team.seat_limit_changed": Kind("Seat limit changed", _seat_limit),
    "team.allowed_domains_changed": Kind("Allowed domains changed", _domains),
    "member.role_changed": Kind(
        "Role changed", lambda f: f"changed {f.person()}'s role from {f.role('old')} to {f.role('new')}"
    ),
    "member.removed": Kind("Member removed", lambda f: f"removed {f.person()} ({f.role()}) from the team"),
    "member.left": Kind("Member left", lambda f: f"left the team (was {f.a_role()})"),
    "member.end_set": Kind(
        "Last day set", lambda f: f"set {f.person()}'s last day on the team to {f.text('ends_on')}"
    ),
    "member.end_cleared": Kind("Last day cleared", lambda f: f"cleared {f.person()}'s last day on the team"),
    "member.ended": Kind(
        "Membership ended", lambda f: f"ended {f.person()}'s membership ({f.role()}) after their last day"
    ),
    "member.joined_by_domain": Kind(
        "Joined by domain", lambda f: f"joined as {f.a_role()} through their e-mail domain"
    ),
    "invitation.created": Kind("Invited", lambda f: f"invited {f.target} as {f.a_role()}"),
    "invitation.resent": Kind(
        "Invitation resent", lambda f: f"sent {f.target} a new invitation as {f.a_role()}"
    ),
    "invitation.renewed": Kind(
        "Invitation renewed", lambda f: f"renewed the expired invitation for {f.target}"
    ),
    "invitation.revoked": Kind("Invitation revoked", _revoked),
    "invitation.reminded": Kind(
        "Invitation reminder", lambda f: f"reminded {f.target} that their invitation expires soon"
    ),
    "invitation.accepted": Kind(
        "Invitation accepted", lambda f: f"accepted an invitation and joined as {f.a_role()}"
    ),
    "join_link.created": Kind(
        "Join link made", lambda f: f"made a join link for {f.role()}s (up to {f.text('max_uses', '?')} uses)"
    ),
    "join_link.revoked": Kind(
        "Join link revoked", lambda f: f"revoked a join link (used {f.text('uses', '?')} times)"
    ),
    "join_link.joined": Kind("Joined by link", lambda f: f"joined as {f.a_role()} through a join link"),
    "join_request.created": Kind("Asked to join", lambda f: f"asked to join as {f.a_role()}"),
    "join_request.approved": Kind(
        "Join request approved", lambda f: f"let {f.person()} join as {f.a_role()}"
    ),
    "join_request.declined": Kind(
        "Join request declined", lambda f: f"declined {f.person()}'s request to join"
    ),
    "domain.added": Kind("Domain claimed", lambda f: f"claimed the domain {f.target}"),
    "domain.verified": Kind("Domain verified", lambda f: f"verified the domain {f.target}"),
    "domain.join_changed": Kind(
        "Domain joining changed",
        lambda f: (
            f"let people at {f.target} "
            + ("join at once" if f.details.get("mode") == "direct" else "ask to join")
            + f" as {f.role()}s"
        ),
    ),
    "domain.removed": Kind("Domain given up", lambda f: f"gave up the domain {f.target}"),
    "github.connected": Kind("GitHub connected", _github("connected")),
    "github.disconnected": Kind("GitHub disconnected", _github("disconnected")),
    "note.created": Kind("Note written", lambda f: f"wrote the note {quoted(f.target)}"),
    "note.edited": Kind("Note edited", _renamed("the note", "edited")),
    "note.deleted": Kind("Note deleted", lambda f: f"deleted the note {quoted(f.target)}"),
    "wardrobe.added": Kind("Wardrobe item added", lambda f: f"added {quoted(f.target)} to the wardrobe"),
    "wardrobe.edited": Kind("Wardrobe item edited", _renamed("the wardrobe item", "edited")),
    "wardrobe.removed": Kind(
        "Wardrobe item removed", lambda f: f"removed {quoted(f.target)} from the wardrobe"
    ),
}


def describe(action: str, facts: Facts) -> str:
    """What the actor did, in words; an unknown kind or a malformed old event falls back to a plain sentence."""
    kind = KINDS.get(action)
    if kind is not None:
        try:
            return kind.say(facts)
        except (KeyError, TypeError, ValueError, IndexError):
            pass  # details from an older shape: the plain sentence below still says what happened
    what = action.replace("_", " ").replace(".", ": ", 1) or "unknown"
    to = f" (concerning {facts.target})" if facts.target else ""
    return f"made a change of a kind this page cannot describe yet ({what}){to}"
