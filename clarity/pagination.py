"""Keyset pagination, once: every list splits its rows into a page and the position after it.

A list query fetches ``limit + 1`` rows in its keyset order, strictly past the position it is
given; the extra row only says that another page follows and is never returned. The position
to continue after is the keyset key of the page's last row: a tuple of plain values
(timestamps, uuids, ints, strings) that the API turns into an opaque cursor
(clarity.api.cursors) and a repository turns back into its ``after``/``before`` parameters.
"""
from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import TypeVar

Row = TypeVar("Row")
Position = tuple


def page(rows: Sequence[Row], limit: int, key: Callable[[Row], Position]) -> tuple[list[Row], Position | None]:
    """``(items, next_position)`` of ``rows`` fetched with ``limit + 1``: the first ``limit``
    rows, and ``key`` of the last of them when more rows follow, else None (the last page)."""
    items = list(rows[:limit])
    return items, (key(items[-1]) if len(rows) > limit and items else None)


def keyset(*names: str) -> Callable[[object], Position]:
    """A key function reading the named attributes of a row as a position tuple, in order."""
    get = operator.attrgetter(*names)
    return get if len(names) > 1 else lambda row: (get(row),)
