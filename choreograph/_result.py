"""What a run returns: its result and its trace."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, NoReturn, Protocol, TypeVar

from returns.result import Failure, Result, Success

from ._bag import DataBag
from ._errors import ChoreographError, Phase, StepError

InputT_co = TypeVar("InputT_co", covariant=True)

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
        seconds: Wall time, retries and the waits between them included; 0
            for a callback that was not called.
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


class FinishedRun(Protocol):
    """What a `RunResult` reads from the run it describes."""

    @property
    def _input(self) -> Any: ...
    @property
    def _errors(self) -> Sequence[StepError]: ...
    @property
    def _fatal(self) -> ChoreographError | None: ...
    @property
    def _bag(self) -> DataBag: ...
    @property
    def _run_id(self) -> int: ...
    @property
    def _key(self) -> str | None: ...
    @property
    def _compensation_errors(self) -> Sequence[StepError]: ...
    def _raw_calls(self) -> tuple[RawCall, ...]: ...


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
        self._input, self._errors, self._fatal, self._bag = input, list(errors), fatal, bag
        self._run_id, self._key, self._compensation_errors, self._calls = run_id, key, compensation_errors, calls

    def _raw_calls(self) -> tuple[RawCall, ...]:
        return self._calls


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
        return self._run._input  # type: ignore[no-any-return]  # noqa: SLF001

    @property
    def errors(self) -> tuple[StepError, ...]:
        """The error stack, oldest first (compensation errors excluded)."""
        return tuple(self._run._errors)  # noqa: SLF001

    @property
    def fatal(self) -> ChoreographError | None:
        """Why the run stopped early, or ``None``."""
        return self._run._fatal  # noqa: SLF001

    @property
    def ok(self) -> bool:
        """Whether the run went through without a fatal error."""
        return self._run._fatal is None  # noqa: SLF001

    @property
    def data_bag(self) -> DataBag:
        """The outputs of the run's callbacks."""
        return self._run._bag  # noqa: SLF001

    @property
    def run_id(self) -> int:
        """Identifies the run within the process."""
        return self._run._run_id  # noqa: SLF001

    @property
    def key(self) -> str | None:
        """The idempotency key of a durable run, else ``None``."""
        return self._run._key  # noqa: SLF001

    @property
    def trace(self) -> tuple[Call, ...]:
        """Every callback the run considered, in order (see `Call`)."""
        return tuple(
            Call(step=s, phase=p, outcome=o, seconds=t, attempts=a, restored=r)
            for s, p, o, t, a, r in self._run._raw_calls()  # noqa: SLF001
        )

    @property
    def compensations(self) -> tuple[Call, ...]:
        """The trace entries of the compensations that ran, in the order they ran."""
        return tuple(call for call in self.trace if call.phase == "compensate")

    @property
    def compensation_errors(self) -> tuple[StepError, ...]:
        """The errors of the compensations that failed, in the order they ran."""
        return tuple(self._run._compensation_errors)  # noqa: SLF001

    def raise_for_fatal(self) -> RunResult[InputT_co]:
        """
        Raise the fatal error if there is one, else return this result.

        .. versionadded:: 0.1.0
        """
        fatal = self._run._fatal  # noqa: SLF001
        if fatal is not None:
            raise fatal
        return self

    def to_result(self) -> Result[DataBag, ChoreographError]:
        """
        Return ``Success(data_bag)``, or ``Failure(fatal)`` if the run stopped.

        .. versionadded:: 0.1.0
        """
        fatal = self._run._fatal  # noqa: SLF001
        if fatal is None:
            return Success(self._run._bag)  # noqa: SLF001
        return Failure(fatal)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        run = self._run
        fields = (
            run._input,  # noqa: SLF001
            tuple(run._errors),  # noqa: SLF001
            run._fatal,  # noqa: SLF001
            run._bag,  # noqa: SLF001
            run._run_id,  # noqa: SLF001
            run._key,  # noqa: SLF001
            tuple(run._compensation_errors),  # noqa: SLF001
            run._raw_calls(),  # noqa: SLF001
        )
        return (_unpickle, fields)

    def __repr__(self) -> str:
        status = "ok" if self.ok else f"fatal={self.fatal!r}"
        return f"<RunResult run_id={self.run_id} {status} errors={len(self._run._errors)}>"  # noqa: SLF001


#: Make a RunResult without its ``__init__`` (``new_result(RunResult)``), then
#: ``set_result_run(result, run)``: the slot's descriptor, past the frozen guard.
new_result: Final = RunResult.__new__
set_result_run: Final = RunResult.__dict__["_run"].__set__


def result_of(run: FinishedRun) -> RunResult[Any]:
    """Wrap a finished run (see `new_result`)."""
    result: RunResult[Any] = new_result(RunResult)
    set_result_run(result, run)
    return result
