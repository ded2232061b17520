"""
One run's state: what its callbacks have done so far, and what the run loop needs to go on.

`RunState` is this package's internal interface between the modules that run
a flow: the loop and the fast path write it, `RunResult` and `Context` are
read-only views over it, and the durable runner sets it up for a resumed run.
Its attributes are plain and public to those modules. Rarely used ones have
class-level defaults, so that a run sets only what it uses.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any, Final, Protocol

from .._errors import ChoreographError, Phase, StepError
from ..events import RunEvent
from .bag import DataBag, bag_over
from .context import Context
from .plan import Plan, StepNode
from .result import Outcome, RawCall

_EMPTY: Final[Mapping[str, object]] = MappingProxyType({})


class Recorder(Protocol):
    """Receives each callback's outcome once decided, before the next callback starts: the store's seam."""

    def check_output(self, step: str, phase: Phase, value: object) -> Exception | None:
        """
        Return an error if *value* cannot be recorded (it then fails the callback).

        Called where the callback ran: for a plain callback of a parallel
        group's branch, on a worker thread, maybe while other callbacks'
        outcomes are recorded; the other methods are called by the thread
        that drives the run, one at a time.
        """
        ...

    def record(
        self,
        step: str,
        phase: Phase,
        outcome: Outcome,
        output: object,
        error: BaseException | None,
        attempts: int,
        seconds: float,
    ) -> None:
        """Record one callback's outcome; *output* is what went into the DataBag, or `MISSING`."""
        ...

    def rolling_back(self, fatal: ChoreographError) -> None:
        """The run failed with *fatal*: compensations start now."""
        ...

    def finished(self, run: RunState) -> None:
        """The run ended (compensations included): record how."""
        ...

    def interrupted(self) -> None:
        """The run was interrupted (a `BaseException` went through it): it will be resumed."""
        ...


class Restored(Protocol):
    """A step's outcome restored from a store (see durable runs)."""

    calls: tuple[RawCall, ...]
    precheck_output: object
    job_output: object
    errors: tuple[StepError, ...]
    job_ok: bool
    #: Where the step's job ended among the stored run's callbacks (its event's id): restored steps
    #: are compensated in that order, reversed, whatever order the branches restore them in.
    order: int


class _Nothing:
    """No output was stored."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NOTHING"


#: `Restored.precheck_output` and `job_output` when the step stored none.
NOTHING: Final = _Nothing()


class RunState:
    """
    One run: its input and outputs, its errors and trace, and how it is run.

    Attributes:
        plan: What it runs.
        input, values, bag, run_id: As the context shows them.
        precheck_data, job_data: The bag's tables, written by the loop (see `bag_over`).
        errors: The error stack.
        fatal: Why the run stopped, once it did.
        key: A durable run's key.
        calls: The trace; ``None`` while every call so far is in `stamps`. Its
            entries' starts are ``time.perf_counter()`` values (but restored
            ones'), counted from `began` by `raw_calls`.
        stamps: The fast path's timestamps (``perf_counter_ns``), one per callback it ran.
        pending: The fast path's ``(output, error)`` of the callback it stopped after.
        deadline: ``time.monotonic()`` at which the run's timeout expires.
        timeout: The run's timeout, in seconds.
        began: ``time.perf_counter()`` when the run started (set when the general loop takes it).
        recorder: Where each outcome is recorded (a durable run's store).
        emit: Where the run's events go (listeners, logging), if anywhere.
        restored: Steps restored from a store instead of run, by case-folded name.
        compensated: Case-folded names of steps already compensated (a resumed rollback).
        attempt_base: Attempts made by earlier sessions, by (case-folded step, phase).
        rollback: Resume an interrupted rollback instead of running forward.
        compensation_errors: Errors of the compensations that failed.
        completed: Steps whose job completed (to compensate), in order.
        resources: The resources of the worker running the run (``ctx.resources``), if the coordinator has any.
        context_class: The class of the context its callbacks get (`Context`; a durable entity's handling
            sets `choreograph.EntityContext`).
        commits: A durable run's writes that its recorder queued instead of committing (awaitables of
            their commits, see `choreograph.durable.recorder.DurableRecorder.defer`), or None when it
            commits each write at once: the run loop waits for them (`drivers.Commit`) before its next
            callback starts, and the run for the last ones before it returns.
    """

    calls: list[RawCall] | None = None
    stamps: list[int] | None = None
    pending: tuple[object, BaseException | None] | None = None
    key: str | None = None
    fatal: ChoreographError | None = None
    deadline: float | None = None
    timeout: float | None = None
    began = 0.0
    recorder: Recorder | None = None
    emit: Callable[[RunEvent], None] | None = None
    restored: Mapping[str, Restored] | None = None
    compensated: frozenset[str] = frozenset()
    attempt_base: Mapping[tuple[str, Phase], int] | None = None
    rollback = False
    compensation_errors: list[StepError] | tuple[StepError, ...] = ()
    completed: list[StepNode] = []  # noqa: RUF012 - replaced, never mutated, before a run appends to it
    values: Mapping[str, object] = _EMPTY
    resources: Mapping[str, object] | None = None
    context_class: type[Context[Any]] = Context
    commits: list[Awaitable[object]] | None = None

    def __init__(self, plan: Plan, input: object, values: Mapping[str, object] | None, run_id: int) -> None:  # noqa: A002
        self.plan = plan
        self.input = input
        if values is not None:
            self.values = values
        self.precheck_data: dict[str, object] = {}
        self.job_data: dict[str, object] = {}
        self.errors: list[StepError] = []
        self.run_id = run_id

    @property
    def bag(self) -> DataBag:
        """The run's DataBag, over its tables: made when first asked for (most runs of a batch never are)."""
        state = self.__dict__
        bag: DataBag | None = state.get("_bag")
        if bag is None:  # two threads may get here at once: setdefault keeps the first bag
            bag = state.setdefault("_bag", bag_over(self.plan.names, self.precheck_data, self.job_data))
        return bag

    def fast_label(self) -> tuple[str, Phase]:
        """The step and phase of the callback running on the fast path: the one after the last timestamp."""
        # pragma: no mutate start - stamps[0] (the start) is never 0 and never read here, and stamps fill in order
        # from stamps[1], so a zero at [1] means zeros to the end; a context exists only when a callback takes
        # one, so the plan has labels
        stamps = self.stamps or [0]
        labels = self.plan.labels
        done = stamps.index(0, 1) - 1 if 0 in stamps[1:] else len(labels) - 1
        return labels[done] if labels else ("", "job")
        # pragma: no mutate end

    def raw_calls(self) -> tuple[RawCall, ...]:
        """The trace, whether the fast path or the loop recorded it."""
        if self.calls is not None:
            began = self.began
            return tuple(call if call[5] else (*call[:6], call[6] - began) for call in self.calls)
        return tuple(stamped(self.plan.labels, self.stamps or [0]))  # pragma: no mutate - no stamps: calls is set


def stamped(
    labels: tuple[tuple[str, Phase], ...], stamps: list[int], count: int | None = None, origin: int | None = None
) -> list[RawCall]:
    """
    Trace entries of the first *count* callbacks, that the fast path ran: all ok, first attempt.

    Their starts are counted from *origin* (``perf_counter_ns``; the run's
    start, ``stamps[0]``, by default).

    >>> stamped((("a", "job"), ("b", "job")), [0, 1_000_000_000, 3_000_000_000])
    [('a', 'job', 'ok', 1.0, 1, False, 0.0), ('b', 'job', 'ok', 2.0, 1, False, 1.0)]
    """
    base = stamps[0] if origin is None else origin
    return [
        (step, phase, "ok", (stamps[index + 1] - stamps[index]) / 1e9, 1, False, (stamps[index] - base) / 1e9)
        for index, (step, phase) in enumerate(labels[: len(labels) if count is None else count])
    ]


#: Monotonic clock of the deadlines.
_monotonic: Final = time.monotonic


def set_deadline(run: RunState, timeout: float) -> None:
    """Start the run's timeout now."""
    run.timeout = timeout
    run.deadline = _monotonic() + timeout
