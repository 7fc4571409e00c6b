"""One page of a longer list."""

from __future__ import annotations

from dataclasses import dataclass
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
