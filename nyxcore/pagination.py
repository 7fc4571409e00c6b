"""One page of a longer list."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

T = TypeVar("T")
MAX_PAGE = 100_000


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page


def like_pattern(search: str) -> str:
    """A LIKE pattern (escape character backslash) for values that contain `search` literally."""
    return "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def page_number(raw: str | None) -> int:
    """A page number from a query argument: bad or missing values mean page 1."""
    try:
        return max(1, min(int(raw or "1"), MAX_PAGE))
    except ValueError:
        return 1


# --- Keyset pages: where a page starts is a key of the list's order, not an OFFSET ----------------
# A page after or before a key reads its own rows from an index whatever its distance from the
# start; the last page is the first one read backwards. Keys travel in links as "<µs>.<uuid hex>".

FIRST, AFTER, BEFORE, LAST = "first", "after", "before", "last"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Key:
    """A row's place in an order on (a timestamp, an id), such as the member list's (joined_at, id)."""

    at: datetime
    id: uuid.UUID

    def __str__(self) -> str:
        delta = self.at - _EPOCH
        return f"{(delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds}.{self.id.hex}"

    @classmethod
    def parse(cls, raw: str) -> Key | None:
        """The key a link carried, or None for anything else."""
        micros, _, hex_id = raw.partition(".")
        try:
            return cls(_EPOCH + timedelta(microseconds=int(micros)), uuid.UUID(hex=hex_id))
        except (ValueError, OverflowError):
            return None


@dataclass(frozen=True)
class Position:
    """Which page to read: the first, the last, or the one right after or before a key."""

    direction: str = FIRST
    key: Key | None = None

    @property
    def backwards(self) -> bool:
        return self.direction in (BEFORE, LAST)

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> Position:
        """The position a list's query arguments ask for: `after`, `before` or `last`; else the first."""
        if args.get("last"):
            return cls(LAST)
        for direction in (AFTER, BEFORE):
            key = Key.parse(args.get(direction, ""))
            if key is not None:
                return cls(direction, key)
        return cls()


@dataclass(frozen=True)
class KeysetPage(Generic[T]):
    """A page read by key: its rows, the keys of the pages around it (None: there is none), a count."""

    items: list[T]
    previous: Key | None
    next: Key | None
    total: int | None  # None: not counted
    capped: bool = False  # there are more than `total`

    @property
    def total_label(self) -> str:
        return f"{self.total:,}+" if self.capped else str(self.total)
