"""Wardrobe: the team's shared wardrobe. Members and up use all of it; viewers none of it."""

from __future__ import annotations

import uuid

from sqlalchemy import func, or_, select

from nyxcore.errors import InvalidInput, NotFound
from nyxcore.extensions import db
from nyxcore.models import WardrobeItem
from nyxcore.pagination import Page, like_pattern
from nyxcore.permissions import Operation
from nyxcore.roles import TenantRole
from nyxcore.services import audit
from nyxcore.tenancy import Actor

USE = Operation("wardrobe.use", TenantRole.MEMBER)  # every Wardrobe route, reads included
PER_PAGE = 25


def list_items(actor: Actor, *, page: int, search: str = "", per_page: int = PER_PAGE) -> Page[WardrobeItem]:
    """A page of the team's items by name, those whose name, category or size contain `search`."""
    USE.check(actor)
    query = select(WardrobeItem)
    search = search.strip().lower()
    if search:
        pattern = like_pattern(search)
        columns = (WardrobeItem.name, WardrobeItem.category, WardrobeItem.size)
        query = query.where(or_(*(func.lower(column).like(pattern, escape="\\") for column in columns)))
    total = db.session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = db.session.scalars(
        query.order_by(WardrobeItem.name, WardrobeItem.id).limit(per_page).offset((page - 1) * per_page)
    ).all()
    return Page(list(items), page, per_page, total)


def get_item(actor: Actor, item_id: uuid.UUID) -> WardrobeItem:
    """An item of the team; another team's or an unknown id raises NotFound."""
    USE.check(actor)
    item = db.session.scalar(select(WardrobeItem).where(WardrobeItem.id == item_id))
    if item is None:
        raise NotFound("There is no such item in this team's wardrobe.")
    return item


def _name(name: str) -> str:
    name = name.strip()
    if not name:
        raise InvalidInput("Give the item a name.", field="name")
    return name


def add_item(actor: Actor, *, name: str, category: str, size: str, notes: str) -> WardrobeItem:
    """Add an item to the team's wardrobe."""
    USE.check(actor)
    item = WardrobeItem(
        tenant_id=actor.tenant_id,
        added_by=actor.user_id,
        name=_name(name),
        category=category.strip(),
        size=size.strip(),
        notes=notes,
    )
    db.session.add(item)
    db.session.flush()
    audit.record(actor.tenant_id, actor.user_id, "wardrobe.added", target=item.name)
    return item


def update_item(actor: Actor, item_id: uuid.UUID, *, name: str, category: str, size: str, notes: str) -> WardrobeItem:
    """Change an item's name, category, size and notes."""
    item = get_item(actor, item_id)
    old_name = item.name
    item.name, item.category, item.size, item.notes = _name(name), category.strip(), size.strip(), notes
    item.updated_at = func.now()
    db.session.flush()
    audit.record(actor.tenant_id, actor.user_id, "wardrobe.edited", target=item.name, old=old_name)
    return item


def delete_item(actor: Actor, item_id: uuid.UUID) -> str:
    """Remove an item; returns its name."""
    item = get_item(actor, item_id)
    db.session.delete(item)
    db.session.flush()
    audit.record(actor.tenant_id, actor.user_id, "wardrobe.removed", target=item.name)
    return item.name
