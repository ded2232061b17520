"""What a run returns: its result and its trace."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from returns.result import Failure, Result, Success

from ._bag import DataBag
from ._errors import ChoreographError, Phase, StepError

InputT = TypeVar("InputT")

Outcome = Literal["ok", "failed", "canceled", "skipped"]

#: A trace entry as the run loop records it: (step, phase, outcome, seconds, attempts, restored).
RawCall = tuple[str, Phase, Outcome, float, int, bool]


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
        seconds: Wall time, attempts and waits between them included; 0 for a
            callback that was not called.
        attempts: How many times the callback was called (see retries); 0 when
            it was not called.
        restored: The outcome was restored from a store, not executed now.

    .. versionadded:: 0.1.0
    """

    step: str
    phase: Phase
    outcome: Outcome
    seconds: float = 0.0
    attempts: int = 1
    restored: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult(Generic[InputT]):
    """
    The outcome of one run.

    Attributes:
        input: The run's input.
        errors: The error stack, oldest first (compensation errors excluded).
        fatal: Why the run stopped early, or ``None``.
        data_bag: The outputs of the run's callbacks.
        run_id: Identifies the run within the process.
        key: The idempotency key of a durable run, else ``None``.
        compensation_errors: The errors of compensations that failed.

    .. versionadded:: 0.1.0
    """

    input: InputT
    errors: tuple[StepError, ...]
    fatal: ChoreographError | None
    data_bag: DataBag
    run_id: int = 0
    key: str | None = None
    compensation_errors: tuple[StepError, ...] = ()
    _calls: tuple[RawCall, ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        """Whether the run went through without a fatal error."""
        return self.fatal is None

    @property
    def trace(self) -> tuple[Call, ...]:
        """Every callback the run considered, in order (see `Call`)."""
        return tuple(
            Call(step=s, phase=p, outcome=o, seconds=t, attempts=a, restored=r) for s, p, o, t, a, r in self._calls
        )

    @property
    def compensations(self) -> tuple[Call, ...]:
        """The trace entries of the compensations that ran, in the order they ran."""
        return tuple(call for call in self.trace if call.phase == "compensate")

    def raise_for_fatal(self) -> RunResult[InputT]:
        """
        Raise the fatal error if there is one, else return this result.

        .. versionadded:: 0.1.0
        """
        if self.fatal is not None:
            raise self.fatal
        return self

    def to_result(self) -> Result[DataBag, ChoreographError]:
        """
        Return ``Success(data_bag)``, or ``Failure(fatal)`` if the run stopped.

        .. versionadded:: 0.1.0
        """
        if self.fatal is None:
            return Success(self.data_bag)
        return Failure(self.fatal)
