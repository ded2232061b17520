"""The DataBag: the outputs of one run's callbacks, by step name."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TypeVar, overload

from .._errors import MISSING
from .step import Step

T = TypeVar("T")
D = TypeVar("D")


#: A bag's names of its own, before it has any: shared, never written.
_NO_NAMES: dict[str, str] = {}


class DataBag:
    """
    The outputs of one run's prechecks and jobs, keyed by step name.

    Step names are case-insensitive: ``get_job_data("Load")`` finds what the
    step ``"load"`` stored. Every method is a single dictionary operation, so a
    bag may be read and written from several threads.

    >>> bag = DataBag()
    >>> bag.set_job_data("Load", 42)
    >>> bag.get_job_data("load"), bag.has_precheck_data("LOAD")
    (42, False)
    >>> bag.get_precheck_data("load", None) is None
    True

    `job` and `precheck` read a step's outputs by the step itself: with the
    ``Step[int]`` that `Coordinator.add_step` returned, ``bag.job(step)`` is an
    ``int`` for type checkers.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_job", "_known", "_names", "_precheck")

    def __init__(self, _known: Mapping[str, str] | None = None) -> None:
        self._job: dict[str, object] = {}
        self._precheck: dict[str, object] = {}
        # Display names by case-folded key: the coordinator's steps (shared,
        # never written here), then names first seen by `set_*_data`.
        self._known: Mapping[str, str] = _known or {}
        self._names: dict[str, str] = _NO_NAMES

    def _put(self, table: dict[str, object], key: str, name: str, value: object) -> None:
        table[key] = value
        if key not in self._known:
            if self._names is _NO_NAMES:  # created at the first name of its own (most bags have none)
                self._names = {}
            self._names.setdefault(key, name)

    def _display(self, key: str) -> str:
        return self._names.get(key) or self._known.get(key, key)

    def set_job_data(self, name: str, value: object) -> None:
        """
        Store *value* as the job output of step *name*.

        .. versionadded:: 0.1.0
        """
        self._put(self._job, name.casefold(), name, value)

    def set_precheck_data(self, name: str, value: object) -> None:
        """
        Store *value* as the precheck output of step *name*.

        .. versionadded:: 0.1.0
        """
        self._put(self._precheck, name.casefold(), name, value)

    def has_job_data(self, name: str) -> bool:
        """
        Tell whether step *name* has a stored job output.

        .. versionadded:: 0.1.0
        """
        return name.casefold() in self._job

    def has_precheck_data(self, name: str) -> bool:
        """
        Tell whether step *name* has a stored precheck output.

        .. versionadded:: 0.1.0
        """
        return name.casefold() in self._precheck

    @overload
    def get_job_data(self, name: str) -> object: ...
    @overload
    def get_job_data(self, name: str, default: T) -> object | T: ...
    def get_job_data(self, name: str, default: object = MISSING) -> object:
        """
        Return the job output of step *name*.

        Args:
            name: The step's name, in any case.
            default: Returned when nothing was stored.

        Raises:
            KeyError: Nothing was stored and no default was given.

        .. versionadded:: 0.1.0
        """
        return self._get(self._job, "job", name, default)

    @overload
    def get_precheck_data(self, name: str) -> object: ...
    @overload
    def get_precheck_data(self, name: str, default: T) -> object | T: ...
    def get_precheck_data(self, name: str, default: object = MISSING) -> object:
        """
        Return the precheck output of step *name*.

        Args:
            name: The step's name, in any case.
            default: Returned when nothing was stored.

        Raises:
            KeyError: Nothing was stored and no default was given.

        .. versionadded:: 0.1.0
        """
        return self._get(self._precheck, "precheck", name, default)

    @overload
    def job(self, step: Step[T], /) -> T: ...
    @overload
    def job(self, step: Step[T], /, default: D) -> T | D: ...
    def job(self, step: Step[object], /, default: object = MISSING) -> object:
        """
        Return the job output of *step*, typed as its job's output.

        The output is looked up by the step's name, as `get_job_data` does.

        >>> step = Step("count", len)
        >>> bag = DataBag()
        >>> bag.set_job_data("count", 3)
        >>> bag.job(step), DataBag().job(step, None)
        (3, None)

        Args:
            step: The step, as given to (and returned by) `Coordinator.add_step`.
            default: Returned when nothing was stored.

        Raises:
            KeyError: Nothing was stored and no default was given.
            TypeError: *step* is not a `Step` (for a name, use `get_job_data`).

        .. versionadded:: 0.1.0
        """
        return self._get(self._job, "job", _name_of(step, "get_job_data"), default)

    def precheck(self, step: Step[object], /, default: object = MISSING) -> object:
        """
        Return the precheck output of *step* (an `object`: prechecks are not typed on `Step`).

        Args:
            step: The step, as given to (and returned by) `Coordinator.add_step`.
            default: Returned when nothing was stored.

        Raises:
            KeyError: Nothing was stored and no default was given.
            TypeError: *step* is not a `Step` (for a name, use `get_precheck_data`).

        .. versionadded:: 0.1.0
        """
        return self._get(self._precheck, "precheck", _name_of(step, "get_precheck_data"), default)

    @staticmethod
    def _get(table: dict[str, object], phase: str, name: str, default: object) -> object:
        try:
            return table[name.casefold()]
        except KeyError:
            if default is MISSING:
                msg = f"no {phase} data for step {name!r}"
                raise KeyError(msg) from None
            return default

    @property
    def job_data(self) -> Mapping[str, object]:
        """
        A snapshot of every job output, by step name as first stored.

        .. versionadded:: 0.1.0
        """
        return {self._display(k): v for k, v in list(self._job.items())}

    @property
    def precheck_data(self) -> Mapping[str, object]:
        """
        A snapshot of every precheck output, by step name as first stored.

        .. versionadded:: 0.1.0
        """
        return {self._display(k): v for k, v in list(self._precheck.items())}

    def __iter__(self) -> Iterator[str]:
        """Iterate over the names of the steps that stored anything: the run's steps in run order, then others."""
        stored = self._precheck.keys() | self._job.keys()
        ordered = [key for key in self._known if key in stored]  # the coordinator's steps, in run order
        ordered += [key for key in dict.fromkeys([*self._precheck, *self._job]) if key not in self._known]
        return iter([self._display(key) for key in ordered])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DataBag):
            return NotImplemented
        return self._job == other._job and self._precheck == other._precheck

    __hash__ = None  # type: ignore[assignment]  # mutable, so unhashable

    def __repr__(self) -> str:
        return f"DataBag(job={self.job_data!r}, precheck={self.precheck_data!r})"

    def __len__(self) -> int:
        """Return the number of steps that stored anything."""
        return len(self._precheck.keys() | self._job.keys())

    def __getstate__(self) -> tuple[dict[str, object], dict[str, object], dict[str, str]]:
        names = {key: self._display(key) for key in [*self._precheck, *self._job]}
        return (self._job, self._precheck, names)

    def __setstate__(self, state: tuple[dict[str, object], dict[str, object], dict[str, str]]) -> None:
        self._job, self._precheck, self._names = state
        self._known = {}


def _name_of(step: object, by_name: str) -> str:
    if isinstance(step, Step):
        return step.name
    hint = f" (for a step's name, use {by_name}({step!r}))" if isinstance(step, str) else ""
    msg = f"expected a Step, got {type(step).__name__}{hint}"
    raise TypeError(msg)


_new_bag = DataBag.__new__


def bag_over(known: Mapping[str, str], precheck: dict[str, object], job: dict[str, object]) -> DataBag:
    """
    Make the bag of a run over its precheck and job tables.

    This module's internal interface for the run loop: the loop writes
    outputs straight into the tables (one dictionary store per output, the
    same operation as `DataBag.set_job_data` minus a call and a ``casefold``,
    as keys are folded once per plan), and a run makes its bag only when
    someone asks for it, without ``__init__``'s argument handling.

    >>> job = {}
    >>> bag = bag_over({"load": "Load"}, {}, job)
    >>> job["load"] = 1
    >>> bag.get_job_data("LOAD"), list(bag)
    (1, ['Load'])
    """
    bag = _new_bag(DataBag)
    bag._job, bag._precheck, bag._known, bag._names = job, precheck, known, _NO_NAMES  # noqa: SLF001 - its own class
    return bag
