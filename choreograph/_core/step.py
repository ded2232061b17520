"""`Step`: what a user declares, before `Coordinator.add_step` inspects it."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING, Any, Generic, Never, TypeAlias, overload

from returns.io import IOResult
from returns.result import Result
from typing_extensions import TypeVar

from .generics import PlainAlias, subscript
from .retry import RetryPolicy

#: The job's output type: what `DataBag.job` returns for the step. A bare ``Step`` is a ``Step[object]``.
OutT_co = TypeVar("OutT_co", covariant=True, default=object)
T = TypeVar("T")
#: Only `Never` (or `Any`) satisfies this bound: the first overload takes jobs that never return, and nothing else.
NeverT = TypeVar("NeverT", bound=Never)


@dataclass(frozen=True, slots=True)
class Step(Generic[OutT_co]):
    """
    One step of a flow: an optional precheck, then a job.

    Nothing is checked here: `Coordinator.add_step` inspects the callbacks and
    raises `StepDefinitionError` for bad ones.

    A step is generic in its job's output type, which type checkers infer from
    the job's return annotation: ``-> int``, ``-> Result[int, E]``,
    ``-> IOResult[int, E]`` and ``async def ... -> int`` all give a
    ``Step[int]``, and a class used as the job gives a ``Step`` of that class.
    `DataBag.job` reads the output back with that type.

    Args:
        name: Unique within a coordinator, ignoring case.
        job: The work. Its error stops the run.
        precheck: Decides whether the job runs. Its error skips the job;
            `ExecutionCanceled` stops the run; `Skip` skips the job quietly.
        retry: Retry the job and the compensation (and, with
            ``Retry(prechecks=True)``, the precheck) on failure: a `Retry`, or
            a tenacity ``Retrying`` wrapped in `TenacityRetry` (a bare one is
            accepted at run time too).
        compensate: Undoes the job when the run stops with a fatal error after
            this step's job succeeded; compensations run in reverse order.
        compensate_failed: Also compensate this step when its own job fails.
        timeout: Seconds each callback of this step may take. An ``async def``
            callback is cancelled at the limit; a plain one is never
            interrupted, but fails with `CallbackTimeout` if it overran.

    >>> Step[int]("count", len).name
    'count'

    .. versionadded:: 0.1.0
    """

    name: str
    job: Callable[..., object]
    precheck: Callable[..., object] | None = None
    _: KW_ONLY
    retry: RetryPolicy | None = None
    compensate: Callable[..., object] | None = None
    compensate_failed: bool = False
    timeout: float | None = None

    if not TYPE_CHECKING:

        def __class_getitem__(cls, params):
            # `Step[int]("a", job)` makes a plain `Step`: see `choreograph._core.generics`. (Not
            # `super()`: its cell is the class before `slots=True` remade it, on 3.11.)
            return subscript(super(Step, cls).__class_getitem__(params), PlainAlias)

    if TYPE_CHECKING:
        # For type checkers only (the dataclass makes the real `__init__`): the
        # output type, from the job's return type, unwrapped as a run unwraps it.
        # The most specific forms come first. A job that never returns matches every
        # form, so it gets its own, first, which nothing else matches.
        @overload
        def __init__(
            self: Step[NeverT],
            name: str,
            job: Callable[..., NeverT],
            precheck: Callable[..., object] | None = None,
            *,
            retry: RetryPolicy | None = None,
            compensate: Callable[..., object] | None = None,
            compensate_failed: bool = False,
            timeout: float | None = None,
        ) -> None: ...
        @overload
        def __init__(
            self: Step[T],
            name: str,
            job: Callable[..., Coroutine[object, Never, Result[T, object]]],
            precheck: Callable[..., object] | None = None,
            *,
            retry: RetryPolicy | None = None,
            compensate: Callable[..., object] | None = None,
            compensate_failed: bool = False,
            timeout: float | None = None,
        ) -> None: ...
        @overload
        def __init__(
            self: Step[T],
            name: str,
            job: Callable[..., Coroutine[object, Never, IOResult[T, object]]],
            precheck: Callable[..., object] | None = None,
            *,
            retry: RetryPolicy | None = None,
            compensate: Callable[..., object] | None = None,
            compensate_failed: bool = False,
            timeout: float | None = None,
        ) -> None: ...
        @overload
        def __init__(
            self: Step[T],
            name: str,
            job: Callable[..., Coroutine[object, Never, T]],
            precheck: Callable[..., object] | None = None,
            *,
            retry: RetryPolicy | None = None,
            compensate: Callable[..., object] | None = None,
            compensate_failed: bool = False,
            timeout: float | None = None,
        ) -> None: ...
        @overload
        def __init__(
            self: Step[T],
            name: str,
            job: Callable[..., Result[T, object]],
            precheck: Callable[..., object] | None = None,
            *,
            retry: RetryPolicy | None = None,
            compensate: Callable[..., object] | None = None,
            compensate_failed: bool = False,
            timeout: float | None = None,
        ) -> None: ...
        @overload
        def __init__(
            self: Step[T],
            name: str,
            job: Callable[..., IOResult[T, object]],
            precheck: Callable[..., object] | None = None,
            *,
            retry: RetryPolicy | None = None,
            compensate: Callable[..., object] | None = None,
            compensate_failed: bool = False,
            timeout: float | None = None,
        ) -> None: ...
        @overload
        def __init__(
            self: Step[T],
            name: str,
            job: Callable[..., T],
            precheck: Callable[..., object] | None = None,
            *,
            retry: RetryPolicy | None = None,
            compensate: Callable[..., object] | None = None,
            compensate_failed: bool = False,
            timeout: float | None = None,
        ) -> None: ...
        def __init__(  # the dataclass's, as type checkers see it
            self,
            name: str,
            job: Callable[..., object],
            precheck: Callable[..., object] | None = None,
            *,
            retry: RetryPolicy | None = None,
            compensate: Callable[..., object] | None = None,
            compensate_failed: bool = False,
            timeout: float | None = None,
        ) -> None: ...


#: What a branch of a `Parallel` is made of.
Node: TypeAlias = "Step[Any] | Parallel"


class Parallel:
    """
    A group of branches that run at the same time; the flow goes on when every branch ended.

    Each branch is a `Step`, a `Parallel`, or a list of them run in order.
    Plain callbacks of different branches run on threads (at most
    *max_workers* at once, one per branch by default); ``async def``
    callbacks run as concurrent tasks on the run's event loop. A fatal error
    in a branch lets no further callback start in any branch; callbacks
    already running finish and are recorded; the run's fatal error is the
    first one. See the user guide's "Parallel groups" for the whole table.

    Nothing is checked here but the shape: `Coordinator.add_step` inspects
    the steps and raises `StepDefinitionError` for bad ones.

    Args:
        name: Unique within a coordinator among steps and groups, ignoring
            case. A group has no DataBag entry.
        branches: The branches, at least one.
        max_workers: How many plain callbacks of this group may run at once
            (``None``: one per branch).

    Attributes:
        name: As given.
        branches: Each branch as a tuple of its nodes (`Step` or `Parallel`).
        max_workers: As given.

    >>> group = Parallel("checks", Step("credit", len), [Step("reserve", len), Step("quote", len)])
    >>> [[node.name for node in branch] for branch in group.branches]
    [['credit'], ['reserve', 'quote']]

    .. versionadded:: 0.3.0
    """

    __slots__ = ("branches", "max_workers", "name")

    name: str
    branches: tuple[tuple[Node, ...], ...]
    max_workers: int | None

    def __init__(
        self,
        name: str,
        *branches: Step[Any] | Parallel | list[Step[Any] | Parallel] | tuple[Step[Any] | Parallel, ...],
        max_workers: int | None = None,
    ) -> None:
        shaped: list[tuple[Node, ...]] = []
        for branch in branches:
            given: object = branch  # checked at run time: callers may not be typed
            nodes: tuple[Any, ...] = tuple(given) if isinstance(given, list | tuple) else (given,)
            shaped.append(nodes)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "branches", tuple(shaped))
        object.__setattr__(self, "max_workers", max_workers)

    def __setattr__(self, name: str, value: object) -> None:
        msg = f"Parallel is frozen: cannot set {name!r}"
        raise AttributeError(msg)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Parallel):
            return NotImplemented
        return (self.name, self.branches, self.max_workers) == (other.name, other.branches, other.max_workers)

    def __hash__(self) -> int:
        return hash((self.name, self.branches, self.max_workers))

    def __repr__(self) -> str:
        shown = ", ".join(
            repr(branch[0]) if len(branch) == 1 else f"[{', '.join(map(repr, branch))}]" for branch in self.branches
        )
        workers = "" if self.max_workers is None else f", max_workers={self.max_workers!r}"
        return f"Parallel({self.name!r}, {shown}{workers})"

    def steps(self) -> tuple[Step[Any], ...]:
        """Every step of the group, depth first, in declaration order."""
        found: list[Step[Any]] = []
        for branch in self.branches:
            for node in branch:
                if isinstance(node, Parallel):
                    found.extend(node.steps())
                elif isinstance(node, Step):
                    found.append(node)
        return tuple(found)
