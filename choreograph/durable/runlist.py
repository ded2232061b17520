"""
`RunList`: what a store's ``runs()`` returns, a sequence read from the store as it is used.

A store with a million runs can't hand them all back as a list: ``runs()``
returns a view instead. Iterating it reads the runs in pages, so it holds one
page at a time; ``len()`` counts in the store; an index or a slice reads only
those runs. A store supplies the three readers; the view does the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import islice, zip_longest
from typing import Final, get_args, overload

from .protocol import RunInfo, Status

_END: Final = object()

#: Every status, in the order `Store.counts` gives them.
STATUSES: Final[tuple[Status, ...]] = get_args(Status)


def checked_limit(limit: object) -> int | None:
    """
    Return a ``runs(limit=...)`` argument, checked: None or an int >= 0.

    >>> checked_limit(None), checked_limit(3)
    (None, 3)
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        msg = f"limit must be an int >= 0 or None, got {limit!r}"
        raise ValueError(msg)
    return limit


def describe(location: str, **filters: object) -> str:
    """
    Say which runs a ``runs(...)`` call selects, for ``repr()``.

    >>> describe("runs.db", status="failed", step=None)
    "runs of runs.db (status='failed')"
    """
    given = ", ".join(f"{name}={value!r}" for name, value in filters.items() if value is not None)
    return f"runs of {location}" + (f" ({given})" if given else "")


class RunList(Sequence[RunInfo]):
    """
    The runs a ``store.runs(...)`` call selects, read from the store when used.

    Iterating reads the runs in pages, in bounded memory for any number of
    runs; ``len()`` counts them in the store; an index reads one run, a slice
    only those runs (as a list). Each use reads the store again: a run that
    changes in between shows its new state, and ``len()`` may differ from one
    use to the next. ``list(store.runs())`` takes a snapshot. It compares equal
    to a sequence of the same `RunInfo`s in the same order.

    Args:
        iterate: Yields at most *n* runs (all of them for ``None``), in order.
        read: ``read(offset, n)``: at most *n* runs from position *offset*.
        count: How many runs match, ignoring *limit*.
        limit: At most this many runs (``None``: no limit).
        label: What the view shows of itself in ``repr()``.

    >>> runs = RunList(iterate=lambda n: iter(()), read=lambda offset, n: [], count=lambda: 0, limit=None)
    >>> (len(runs), bool(runs), runs == [], list(runs))
    (0, False, True, [])

    .. versionadded:: 0.2.0
    """

    __slots__ = ("_count", "_iterate", "_label", "_read", "limit")

    def __init__(
        self,
        *,
        iterate: Callable[[int | None], Iterator[RunInfo]],
        read: Callable[[int, int], list[RunInfo]],
        count: Callable[[], int],
        limit: int | None,
        label: str = "runs",
    ) -> None:
        self._iterate, self._read, self._count, self._label = iterate, read, count, label
        self.limit = limit

    def __iter__(self) -> Iterator[RunInfo]:
        return self._iterate(self.limit)

    def __len__(self) -> int:
        found = self._count()
        return found if self.limit is None else min(found, self.limit)

    def __bool__(self) -> bool:
        return bool(self._slice(0, 1))

    def _slice(self, offset: int, n: int) -> list[RunInfo]:
        if self.limit is not None:
            n = min(n, self.limit - offset)
        return self._read(offset, n) if n > 0 else []

    @overload
    def __getitem__(self, index: int) -> RunInfo: ...

    @overload
    def __getitem__(self, index: slice) -> list[RunInfo]: ...

    def __getitem__(self, index: int | slice) -> RunInfo | list[RunInfo]:
        if isinstance(index, slice):
            chosen = range(len(self))[index]
            if not chosen:
                return []
            low = min(chosen.start, chosen[-1])
            rows = self._slice(low, abs(chosen.start - chosen[-1]) + 1)
            return [rows[i - low] for i in chosen if i - low < len(rows)]
        position = index.__index__()
        if position < 0:
            position += len(self)
        rows = self._slice(position, 1) if position >= 0 else []
        if not rows:
            msg = f"run index {index} out of range"
            raise IndexError(msg)
        return rows[0]

    def __reversed__(self) -> Iterator[RunInfo]:
        return reversed(list(self))  # one pass, not one read per position

    def index(self, value: object, start: int = 0, stop: int | None = None) -> int:
        """Return the position of the first run equal to *value*; `ValueError` if there is none."""
        if start < 0 or (stop is not None and stop < 0):
            start, stop, _ = slice(start, stop).indices(len(self))
        for position, info in enumerate(islice(self, stop)):
            if position >= start and (info is value or info == value):
                return position
        msg = f"{value!r} is not in the runs"
        raise ValueError(msg)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return all(mine == theirs for mine, theirs in zip_longest(self, other, fillvalue=_END))

    __hash__ = None  # type: ignore[assignment]  # a view of changing data: unhashable, like a list

    def __repr__(self) -> str:
        return f"<RunList: {self._label}>"
