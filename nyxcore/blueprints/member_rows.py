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

import functools
from collections.abc import Iterable
from dataclasses import dataclass

from markupsafe import Markup, escape

from nyxcore.fixed_cost import csrf_token
from nyxcore.roles import TenantRole, can_manage_role, grantable_roles
from nyxcore.services.member_list import MemberRow
from nyxcore.services.notices import last_date, last_day
from nyxcore.templating import format_time, text_of, url_pattern
from nyxcore.tenancy import Actor

_YOU = ' <span class="badge">you</span>'
_TWO_FACTOR = {
    True: '<td data-label="Two-factor"><span class="badge ok">On</span></td>\n',
    False: '<td data-label="Two-factor"><span class="badge warn">Off</span></td>\n',
}
def role_options(roles: list[TenantRole], *, selected: TenantRole) -> str:
    """The <option>s of a role select with `selected` chosen (escaped markup)."""
    return "".join(
        f'<option value="{escape(r.value)}"{" selected" if r is selected else ""}>{escape(r.label)}</option>'
        for r in roles
    )


@functools.cache
def _options_by_role(granter: TenantRole) -> dict[TenantRole, str]:
    """The role select's <option>s for each selected role, for someone of role `granter`: the same
    markup on every page of every team (a pure function of the two roles, no permission kept)."""
    grantable = grantable_roles(granter)
    return {role: role_options(grantable, selected=role) for role in TenantRole}


ROLE_LABELS = {role: text_of(role.label) for role in TenantRole}  # escaped, also for pending_rows


@dataclass(frozen=True)
class RowParts:
    """What every row of one page shares, escaped once: who is looking, what they may do, the URLs."""

    me: str  # the actor's own membership's id (as MemberRow.id): marked "you", never managed from its row
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
        return cls(
            me=str(actor.member_id),
            manageable=frozenset(role for role in TenantRole if can_manage_role(actor.role, role, role)),
            show_two_factor=show_two_factor,
            show_actions=show_actions,
            show_end=show_end,
            csrf=f'<input type="hidden" name="csrf_token" value="{text_of(csrf_token())}">',
            role_url=text_of(url_pattern("team.change_role", "member_id")),
            remove_url=text_of(url_pattern("team.remove_member", "member_id")),
            end_url=text_of(url_pattern("team.set_end", "member_id")),
            role_options=_options_by_role(actor.role),
            role_labels=ROLE_LABELS,
        )

    def manages(self, member: MemberRow) -> bool:
        """Whether the actor may change this member's role and remove them (not themselves)."""
        return member.role in self.manageable and member.id != self.me


def member_rows(members: Iterable[MemberRow], parts: RowParts) -> Markup:
    """The <tr>s of the member table, one per member, in the order given.

    Safe as markup: every text filled in is escaped on the way (`text_of`); the rest is a UUID, a
    date, a time formatted from digits, or fixed markup.
    """
    return Markup("".join([_row(member, parts) for member in members]))  # noqa: S704 (escaped in _row)


def _row(m: MemberRow, parts: RowParts) -> str:
    # f-strings rather than str.format with names: a row is about twenty pieces, joined in one step.
    name = text_of(m.name)
    me = m.id == parts.me
    until = f' <span class="badge">until {text_of(last_day(m.ends_at))}</span>' if m.ends_at else ""
    two_factor = _TWO_FACTOR[m.two_factor] if parts.show_two_factor else ""
    actions = ""
    if parts.show_actions:
        actions = f'<td data-label="Actions">{_actions(m, name, parts) if parts.manages(m) else ""}</td>\n'
    return (
        f'<tr>\n<td data-label="Name">{name}{_YOU if me else ""}</td>\n'
        f'<td data-label="Email">{text_of(m.email)}</td>\n'
        f'<td data-label="Role">{parts.role_labels[m.role]}{until}</td>\n'
        f'<td data-label="Joined">{format_time(m.joined_at)}</td>\n'
        f'<td data-label="Invited by">{text_of(m.inviter_name) if m.inviter_name else ""}</td>\n'
        f"{two_factor}{actions}</tr>\n"
    )


def _actions(m: MemberRow, name: str, parts: RowParts) -> str:
    member_id = m.id
    csrf = parts.csrf
    end = _end_forms(m, member_id, name, parts) if parts.show_end and m.role is not TenantRole.OWNER else ""
    return (
        f'\n<div class="actions">\n<form method="post" action="{parts.role_url.format(member_id)}" class="inline">\n'
        f'{csrf}\n<label for="role-{member_id}" class="sr-only">Role for {name}</label>\n'
        f'<select id="role-{member_id}" name="role">\n{parts.role_options[m.role]}\n</select>\n'
        f'<button type="submit" class="button small">Change role<span class="sr-only"> of {name}</span></button>\n'
        "</form>\n"
        f'<a class="button small danger" href="{parts.remove_url.format(member_id)}">Remove'
        f'<span class="sr-only"> {name}</span></a>\n{end}</div>\n'
    )


def _end_forms(m: MemberRow, member_id: str, name: str, parts: RowParts) -> str:
    url = parts.end_url.format(member_id)
    csrf = parts.csrf
    value = last_date(m.ends_at) if m.ends_at else ""  # a date prints as digits and dashes
    forms = (
        f'<form method="post" action="{url}" class="inline">\n{csrf}\n'
        f'<label for="ends-{member_id}" class="sr-only">Last day of {name} in the team</label>\n'
        f'<input id="ends-{member_id}" type="date" name="ends_on" value="{value}">\n'
        f'<button type="submit" class="button small">Set end date<span class="sr-only"> of {name}</span></button>\n'
        "</form>\n"
    )
    if not m.ends_at:
        return forms
    return (
        f'{forms}<form method="post" action="{url}" class="inline">\n{csrf}\n'
        '<input type="hidden" name="ends_on" value="">\n'
        f'<button type="submit" class="button small">Clear end date<span class="sr-only"> of {name}</span></button>\n'
        "</form>\n"
    )
