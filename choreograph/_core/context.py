"""
The context a callback sees: a view over its run's state plus the callback it is given to.

A run's state is one object (see `choreograph._core.state`); a `Context` is
made per run for a sequence of callbacks, and would be made per branch where
callbacks run side by side, so that ``ctx.step`` and ``ctx.attempt`` are
always those of the callback reading them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar, Token
from threading import get_ident
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol, TypeVar

from loguru import logger as _logger

from .._errors import ChoreographError, NoDataBagInContext, Phase, StepError
from ..events import Emitted, RunEvent
from .bag import DataBag

if TYPE_CHECKING:  # pragma: no cover - loguru's `Logger` exists only in its stubs, so it
    # cannot be imported at run time; nothing here is checked by beartype.
    from loguru import Logger

InputT = TypeVar("InputT")


class RunView(Protocol):
    """What a `Context` reads from its run's state."""

    input: Any
    values: Mapping[str, object]
    errors: list[StepError]
    run_id: int
    key: str | None
    fatal: ChoreographError | None
    emit: Callable[[RunEvent], None] | None
    resources: Mapping[str, object] | None
    #: The class of its callbacks' context: `Context`, or a subclass (a durable entity's handling makes
    #: `choreograph.EntityContext`), made the same way by `context_for`.
    context_class: type[Context[Any]]

    @property
    def bag(self) -> DataBag:
        """The run's DataBag."""
        ...

    def fast_label(self) -> tuple[str, Phase]:
        """The step and phase of the callback running on the fast path."""
        ...


#: The runs going on in this thread or task, innermost last, with the thread that owns the list (see `runs_here`).
_runs: ContextVar[tuple[int, list[RunView]]] = ContextVar("choreograph_runs")


def runs_here() -> list[RunView]:
    """
    The stack of runs going on here: a plain run pushes itself, and pops itself when it ends.

    Setting a context variable per run costs more than all the rest of a
    short run's set-up (a new context mapping and a token each time), so a
    plain run pushes onto a list that the context variable holds instead.
    That is safe because a plain run never lets another task of its thread
    run in its middle, and a list is used only by the thread that made it (a
    context copied into another thread, as by `asyncio.to_thread`, gets a
    list of its own there); `own_runs` gives an async run a list of its own,
    as tasks that interleave must not share one.
    """
    held = _runs.get(None)
    thread = get_ident()
    if held is None or held[0] != thread:
        stack: list[RunView] = []
        _runs.set((thread, stack))
        return stack
    return held[1]


def own_runs(run: RunView) -> Token[tuple[int, list[RunView]]]:
    """Give the calling task its own stack of runs, holding *run*; reset the token when the run ends."""
    return _runs.set((get_ident(), [run]))


def end_own_runs(token: Token[tuple[int, list[RunView]]]) -> None:
    """Give the calling task back the stack it had before `own_runs`."""
    _runs.reset(token)


_new_context = object.__new__


class Context(Generic[InputT]):
    """
    What a callback knows about its run: take it as the first parameter.

    A parameter annotated ``Context`` (or ``Context[Rec]``), or an unannotated
    one named ``ctx`` or ``context``, receives it. Its attributes are
    read-only. ``step``, ``phase`` and ``attempt`` are those of the callback
    that reads them.

    .. versionadded:: 0.1.0
    """

    # Set per run by `context_for`; the others have class-level defaults, so
    # that a run sets only what it uses (a run costs microseconds).
    _run: RunView
    _step: str | None = None  # None: the run is on its fast path, which doesn't say (see `step`)
    _phase: Phase = "job"
    _attempt = 1
    _logger: Logger | None = None
    _logger_step = ""

    def __init__(self) -> None:
        msg = "a Context is made by the coordinator for each run; run the flow to get one"
        raise TypeError(msg)

    @property
    def input(self) -> InputT:
        """The run's input."""
        return self._run.input  # type: ignore[no-any-return]

    @property
    def values(self) -> Mapping[str, object]:
        """A read-only snapshot of the ``values=`` passed to the run."""
        return self._run.values

    @property
    def data_bag(self) -> DataBag:
        """The run's DataBag."""
        return self._run.bag

    @property
    def errors(self) -> tuple[StepError, ...]:
        """The run's error stack so far, oldest first."""
        return tuple(self._run.errors)

    @property
    def step(self) -> str:
        """The name of the step whose callback is running."""
        step = self._step
        return self._run.fast_label()[0] if step is None else step

    @property
    def phase(self) -> Phase:
        """Which callback of the step is running: precheck, job or compensate."""
        return self._run.fast_label()[1] if self._step is None else self._phase

    @property
    def attempt(self) -> int:
        """The attempt number of the running callback, from 1 (see retries)."""
        return self._attempt

    @property
    def fatal(self) -> ChoreographError | None:
        """The run's fatal error while compensations run; else ``None``."""
        return self._run.fatal

    @property
    def run_id(self) -> int:
        """An identifier of this run, unique within the process."""
        return self._run.run_id

    @property
    def key(self) -> str | None:
        """The run's idempotency key (durable runs), else ``None``."""
        return self._run.key

    @property
    def logger(self) -> Logger:
        """A loguru logger bound with ``run_id`` and ``step``."""
        step = self.step
        bound = self._logger
        if bound is None or self._logger_step != step:
            bound = _logger.bind(run_id=self._run.run_id, step=step)
            self._logger, self._logger_step = bound, step
        return bound

    # -- resources: the run's worker's (``Coordinator(resources=...)``); a run that never reads them pays nothing.

    @property
    def resources(self) -> Mapping[str, object]:
        """
        The resources of the worker running this run, made on first use (``Coordinator(resources=...)``).

        A read-only mapping: ``ctx.resources["db"]`` is what the ``"db"``
        factory returned (for a context manager, what its ``__enter__``
        returned), made once per worker: a thread of the executor, a worker
        process, or the thread calling `Coordinator.run`. The callbacks of a
        `Parallel` group's branches share their run's worker's resources.

        Raises:
            KeyError: (on reading a name) no such resource; the message names those there are.

        .. versionadded:: 0.4.0
        """
        resources = self._run.resources
        return _NO_RESOURCES if resources is None else resources

    def emit(self, kind: str, payload: object = None) -> None:
        """
        Send an `Emitted` event (progress, a custom message) to the run's listeners.

        Costs nothing when nobody listens.

        Args:
            kind: What it is: a name of your choosing, such as ``"progress"``.
            payload: Anything the listeners understand.

        Raises:
            TypeError: *kind* is not a non-empty ``str``.

        .. versionadded:: 0.2.0
        """
        given: object = kind  # checked at run time: callers may not be typed
        if not isinstance(given, str) or not given:
            msg = f"emit() needs a kind, a non-empty str; got {kind!r}"
            raise TypeError(msg)
        run = self._run
        if run.emit is not None:
            run.emit(Emitted(run_id=run.run_id, step=self.step, kind=kind, payload=payload))

    def __repr__(self) -> str:
        return f"<Context run_id={self._run.run_id} step={self.step!r} phase={self.phase}>"


class _NoResources(Mapping[str, object]):
    """``ctx.resources`` of a coordinator without resources."""

    def __getitem__(self, name: str) -> object:
        msg = f"no resource named {name!r}: the coordinator has none (give them as Coordinator(resources={{...}}))"
        raise KeyError(msg)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


_NO_RESOURCES: Final = _NoResources()


def context_for(run: RunView) -> Context[Any]:
    """
    Make the context of a run's callbacks.

    The internal interface of this module for the run loop, with `point_to`:
    the context has no public constructor.
    """
    ctx: Context[Any] = _new_context(run.context_class)
    ctx._run = run  # noqa: SLF001 - this module's own class
    return ctx


def point_to(ctx: Context[Any], step: str, phase: Phase, attempt: int = 1) -> None:  # pragma: no mutate - always passed
    """Make *ctx* the context of this callback of the run (see `context_for`)."""
    ctx._step, ctx._phase, ctx._attempt = step, phase, attempt  # noqa: SLF001 - this module's own class


def get_data_bag() -> DataBag:
    """
    Return the DataBag of the run whose callback is calling.

    Works in plain and ``async def`` callbacks, in whatever thread or task runs
    the callback.

    Raises:
        NoDataBagInContext: Called outside a run.

    .. versionadded:: 0.1.0
    """
    held = _runs.get(None)
    if held is None or not held[1]:
        raise NoDataBagInContext
    return held[1][-1].bag
