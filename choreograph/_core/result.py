"""What a run returns: its result and its trace."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, NoReturn, Protocol, TypeVar

from returns.result import Failure, Result, Success

from .._errors import ChoreographError, Phase, StepError
from .bag import DataBag
from .timeline import gantt

InputT_co = TypeVar("InputT_co", covariant=True)

Outcome = Literal["ok", "failed", "canceled", "skipped"]

#: A trace entry as the run loop records it: (step, phase, outcome, seconds, attempts, restored, started).
RawCall = tuple[str, Phase, Outcome, float, int, bool, float]


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """
    One entry of a run's trace: a callback the run considered.

    Attributes:
        step: The step's name.
        phase: ``"precheck"``, ``"job"`` or ``"compensate"``.
        outcome: ``"ok"``; ``"failed"``; ``"canceled"`` (the precheck raised
            `ExecutionCanceled`, or the run's timeout cancelled the callback);
            ``"skipped"`` (a job whose precheck failed).
        seconds: Wall time, retries and the waits between them included; 0
            for a callback that was not called.
        attempts: How many times the callback was called (see retries); 0 when
            it was not called.
        restored: The outcome was restored from a store, not executed now.
        started: When the callback started, in seconds from the run's start
            (for a callback not called, when it was passed over). A
            restored call's is from the start of the stored run's first
            recorded callback.

    .. versionadded:: 0.1.0

    .. versionchanged:: 0.3.0 ``started``.
    """

    step: str
    phase: Phase
    outcome: Outcome
    seconds: float = 0.0
    attempts: int = 1
    restored: bool = False
    started: float = 0.0


class FinishedRun(Protocol):
    """What a `RunResult` reads from the run it describes."""

    @property
    def input(self) -> Any: ...
    @property
    def errors(self) -> Sequence[StepError]: ...
    @property
    def fatal(self) -> ChoreographError | None: ...
    @property
    def bag(self) -> DataBag: ...
    @property
    def run_id(self) -> int: ...
    @property
    def key(self) -> str | None: ...
    @property
    def compensation_errors(self) -> Sequence[StepError]: ...
    def raw_calls(self) -> tuple[RawCall, ...]:
        """The trace, as the run loop records it."""
        ...


class Finished:
    """A finished run rebuilt from its fields (unpickled, or read from a store)."""

    def __init__(
        self,
        input: object,  # noqa: A002
        errors: tuple[StepError, ...],
        fatal: ChoreographError | None,
        bag: DataBag,
        run_id: int,
        key: str | None,
        compensation_errors: tuple[StepError, ...],
        calls: tuple[RawCall, ...],
    ) -> None:
        self.input, self.errors, self.fatal, self.bag = input, errors, fatal, bag
        self.run_id, self.key, self.compensation_errors, self.calls = run_id, key, compensation_errors, calls

    def raw_calls(self) -> tuple[RawCall, ...]:
        """The trace."""
        return self.calls


def _unpickle(*fields: Any) -> RunResult[Any]:
    return RunResult(Finished(*fields))


class RunResult(Generic[InputT_co]):
    """
    The outcome of one run: a read-only view of the finished run.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_run",)
    _run: FinishedRun

    def __init__(self, run: FinishedRun) -> None:
        object.__setattr__(self, "_run", run)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        msg = f"RunResult is frozen: cannot set {name!r}"
        raise AttributeError(msg)

    def __delattr__(self, name: str) -> NoReturn:
        msg = f"RunResult is frozen: cannot delete {name!r}"
        raise AttributeError(msg)

    @property
    def input(self) -> InputT_co:
        """The run's input."""
        return self._run.input  # type: ignore[no-any-return]

    @property
    def errors(self) -> tuple[StepError, ...]:
        """The error stack, oldest first (compensation errors excluded)."""
        return tuple(self._run.errors)

    @property
    def fatal(self) -> ChoreographError | None:
        """Why the run stopped early, or ``None``."""
        return self._run.fatal

    @property
    def ok(self) -> bool:
        """Whether the run went through without a fatal error."""
        return self._run.fatal is None

    @property
    def data_bag(self) -> DataBag:
        """The outputs of the run's callbacks."""
        return self._run.bag

    @property
    def run_id(self) -> int:
        """Identifies the run within the process."""
        return self._run.run_id

    @property
    def key(self) -> str | None:
        """The idempotency key of a durable run, else ``None``."""
        return self._run.key

    @property
    def trace(self) -> tuple[Call, ...]:
        """Every callback the run considered, in the order they finished (see `Call`)."""
        return tuple(
            Call(step=s, phase=p, outcome=o, seconds=t, attempts=a, restored=r, started=b)
            for s, p, o, t, a, r, b in self._run.raw_calls()
        )

    def trace_of(self, step: str) -> tuple[Call, ...]:
        """
        The trace entries of one step (its name, ignoring case), in the order they finished.

        Raises:
            TypeError: *step* is not a str.

        .. versionadded:: 0.3.0
        """
        given: object = step  # checked at run time: callers may not be typed
        if not isinstance(given, str):
            msg = f"trace_of() takes a step's name, a str; got {type(given).__name__}"
            raise TypeError(msg)
        folded = step.casefold()
        return tuple(call for call in self.trace if call.step.casefold() == folded)

    @property
    def compensations(self) -> tuple[Call, ...]:
        """The trace entries of the compensations that ran, in the order they ran."""
        return tuple(call for call in self.trace if call.phase == "compensate")

    @property
    def compensation_errors(self) -> tuple[StepError, ...]:
        """The errors of the compensations that failed, in the order they ran."""
        return tuple(self._run.compensation_errors)

    def timeline(self) -> str:
        """
        Draw this run's calls as a Mermaid ``gantt`` chart, positioned by when each started.

        A section per step holds its precheck and job (steps of parallel
        branches overlap in time), and the compensations come last, in a
        section of their own. Failed calls are marked ``crit``, canceled ones
        ``active``, a job skipped by its precheck is a ``milestone``, and
        restored calls are ``done``; each bar is named with its phase,
        outcome and wall time. Bars are placed to the millisecond, and a
        very short call is drawn 1% of the chart wide, so that it shows.
        Only the trace is read: a result read from a store or unpickled is
        drawn the same.

        Returns:
            The chart's Mermaid text, ending with a newline.

        .. versionadded:: 0.3.0
        """
        return gantt(self.trace, run_id=self._run.run_id, key=self._run.key, fatal=self._run.fatal)

    def raise_for_fatal(self) -> RunResult[InputT_co]:
        """
        Raise the fatal error if there is one, else return this result.

        .. versionadded:: 0.1.0
        """
        fatal = self._run.fatal
        if fatal is not None:
            raise fatal
        return self

    def to_result(self) -> Result[DataBag, ChoreographError]:
        """
        Return ``Success(data_bag)``, or ``Failure(fatal)`` if the run stopped.

        .. versionadded:: 0.1.0
        """
        fatal = self._run.fatal
        if fatal is None:
            return Success(self._run.bag)
        return Failure(fatal)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        run = self._run
        fields = (
            run.input,
            tuple(run.errors),
            run.fatal,
            run.bag,
            run.run_id,
            run.key,
            tuple(run.compensation_errors),
            run.raw_calls(),
        )
        return (_unpickle, fields)

    def __repr__(self) -> str:
        status = "ok" if self.ok else f"fatal={self.fatal!r}"
        return f"<RunResult run_id={self.run_id} {status} errors={len(self._run.errors)}>"


#: Make a RunResult without its ``__init__`` (``new_result(RunResult)``), then
#: ``set_result_run(result, run)``: the slot's descriptor, past the frozen guard.
new_result: Final = RunResult.__new__
set_result_run: Final = RunResult.__dict__["_run"].__set__


def result_of(run: FinishedRun) -> RunResult[Any]:
    """Wrap a finished run (see `new_result`)."""
    result: RunResult[Any] = new_result(RunResult)
    set_result_run(result, run)
    return result
