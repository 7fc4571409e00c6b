"""The team page's member rows, filled into markup made once per page (issue 15).

Rendered by Jinja, the 50 rows of an admin's page were most of its CPU: about 900 escapes and 1,600
attribute look-ups through the environment, for rows that differ only in a few values. Here each
row escapes its person's name, address and inviter once, and is filled into fixed pieces; what is
the same on every row (the forms' URLs, the role <option>s, the CSRF field, the labels) is built
once per page by `RowParts.for_page`. Who may change which row is worked out per page too, from the
request's actor: nothing about permissions outlives the request.

The markup is what `team/overview.html` rendered per row, the same elements, labels and aria text:
a `data-label` on every cell (the phone layout), a visually hidden label per control, and forms
that work without JavaScript.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from flask_wtf.csrf import generate_csrf
from markupsafe import Markup, escape

from nyxcore.roles import TenantRole, can_manage_role, grantable_roles
from nyxcore.services.member_list import MemberRow
from nyxcore.services.notices import last_date, last_day
from nyxcore.templating import format_time, url_pattern
from nyxcore.tenancy import Actor

_ROW = (
    '<tr>\n<td data-label="Name">{name}{you}</td>\n<td data-label="Email">{email}</td>\n'
    '<td data-label="Role">{role}{until}</td>\n<td data-label="Joined">{joined}</td>\n'
    '<td data-label="Invited by">{inviter}</td>\n{two_factor}{actions}</tr>\n'
)
_YOU = ' <span class="badge">you</span>'
_UNTIL = ' <span class="badge">until {}</span>'
_TWO_FACTOR = {
    True: '<td data-label="Two-factor"><span class="badge ok">On</span></td>\n',
    False: '<td data-label="Two-factor"><span class="badge warn">Off</span></td>\n',
}
_ACTIONS = '<td data-label="Actions">{}</td>\n'
_MANAGE = (
    '\n<div class="actions">\n<form method="post" action="{role_url}" class="inline">\n{csrf}\n'
    '<label for="role-{id}" class="sr-only">Role for {name}</label>\n'
    '<select id="role-{id}" name="role">\n{options}\n</select>\n'
    '<button type="submit" class="button small">Change role<span class="sr-only"> of {name}</span></button>\n'
    "</form>\n"
    '<a class="button small danger" href="{remove_url}">Remove<span class="sr-only"> {name}</span></a>\n'
    "{end}</div>\n"
)
_SET_END = (
    '<form method="post" action="{url}" class="inline">\n{csrf}\n'
    '<label for="ends-{id}" class="sr-only">Last day of {name} in the team</label>\n'
    '<input id="ends-{id}" type="date" name="ends_on" value="{value}">\n'
    '<button type="submit" class="button small">Set end date<span class="sr-only"> of {name}</span></button>\n'
    "</form>\n"
)
_CLEAR_END = (
    '<form method="post" action="{url}" class="inline">\n{csrf}\n'
    '<input type="hidden" name="ends_on" value="">\n'
    '<button type="submit" class="button small">Clear end date<span class="sr-only"> of {name}</span></button>\n'
    "</form>\n"
)


def role_options(roles: list[TenantRole], *, selected: TenantRole) -> str:
    """The <option>s of a role select with `selected` chosen (escaped markup)."""
    return "".join(
        f'<option value="{escape(r.value)}"{" selected" if r is selected else ""}>{escape(r.label)}</option>'
        for r in roles
    )


@dataclass(frozen=True)
class RowParts:
    """What every row of one page shares, escaped once: who is looking, what they may do, the URLs."""

    me: uuid.UUID  # the actor's own membership: marked "you", never managed from its row
    manageable: frozenset[TenantRole]  # the roles the actor may change and remove
    show_two_factor: bool
    show_actions: bool
    show_end: bool
    csrf: str
    role_url: str
    remove_url: str
    end_url: str
    role_options: dict[TenantRole, str]
    role_labels: dict[TenantRole, str]

    @classmethod
    def for_page(cls, actor: Actor, *, show_two_factor: bool, show_actions: bool, show_end: bool) -> RowParts:
        grantable = grantable_roles(actor.role)
        return cls(
            me=actor.member_id,
            manageable=frozenset(role for role in TenantRole if can_manage_role(actor.role, role, role)),
            show_two_factor=show_two_factor,
            show_actions=show_actions,
            show_end=show_end,
            csrf=f'<input type="hidden" name="csrf_token" value="{escape(generate_csrf())}">',
            role_url=str(escape(url_pattern("team.change_role", "member_id"))),
            remove_url=str(escape(url_pattern("team.remove_member", "member_id"))),
            end_url=str(escape(url_pattern("team.set_end", "member_id"))),
            role_options={role: role_options(grantable, selected=role) for role in TenantRole},
            role_labels={role: str(escape(role.label)) for role in TenantRole},
        )

    def manages(self, member: MemberRow) -> bool:
        """Whether the actor may change this member's role and remove them (not themselves)."""
        return member.role in self.manageable and member.id != self.me


def member_rows(members: Iterable[MemberRow], parts: RowParts) -> Markup:
    """The <tr>s of the member table, one per member, in the order given.

    Safe as markup: every value filled in is escaped on the way (`escape`), or is a UUID, a date or fixed text.
    """
    return Markup("".join(_row(member, parts) for member in members))  # noqa: S704 (escaped in _row)


def _row(m: MemberRow, parts: RowParts) -> str:
    name = str(escape(m.name))
    return _ROW.format(
        name=name,
        you=_YOU if m.id == parts.me else "",
        email=escape(m.email),
        role=parts.role_labels[m.role],
        until=_UNTIL.format(escape(last_day(m.ends_at))) if m.ends_at else "",
        joined=escape(format_time(m.joined_at)),  # the viewer's zone name is data too
        inviter=escape(m.inviter_name or ""),
        two_factor=_TWO_FACTOR[m.two_factor] if parts.show_two_factor else "",
        actions=_ACTIONS.format(_actions(m, name, parts)) if parts.show_actions else "",
    )


def _actions(m: MemberRow, name: str, parts: RowParts) -> str:
    if not parts.manages(m):
        return ""
    member_id = str(m.id)
    return _MANAGE.format(
        id=member_id,
        name=name,
        csrf=parts.csrf,
        role_url=parts.role_url.format(member_id),
        options=parts.role_options[m.role],
        remove_url=parts.remove_url.format(member_id),
        end=_end_forms(m, member_id, name, parts) if parts.show_end and m.role is not TenantRole.OWNER else "",
    )


def _end_forms(m: MemberRow, member_id: str, name: str, parts: RowParts) -> str:
    url = parts.end_url.format(member_id)
    value = escape(last_date(m.ends_at)) if m.ends_at else ""
    forms = _SET_END.format(url=url, csrf=parts.csrf, id=member_id, name=name, value=value)
    return forms + _CLEAR_END.format(url=url, csrf=parts.csrf, name=name) if m.ends_at else forms

