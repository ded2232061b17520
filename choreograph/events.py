"""
What happens during a run, as values: the events a run sends to its listeners.

Every event is a frozen dataclass. A run sends `RunStarted`, then for every
callback that is called a `CallbackStarted` per attempt and one
`CallbackFinished` (a job skipped by its precheck sends only a
`CallbackFinished` with outcome ``"skipped"``), `Emitted` for what callbacks
emit, and `RunFinished` last. One run's events arrive in order.

>>> from choreograph.events import CallbackStarted
>>> CallbackStarted(run_id=1, step="load", phase="job", attempt=1)
CallbackStarted(run_id=1, step='load', phase='job', attempt=1)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._core.result import Outcome, RunResult
from ._errors import Phase


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted:
    """
    A run started.

    Attributes:
        run_id: The run's id (`RunResult.run_id`).
        key: A durable run's key, else ``None``.
        input: The run's input.
        at: When, as ``time.time()``.

    .. versionadded:: 0.2.0
    """

    run_id: int
    key: str | None
    input: object
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CallbackStarted:
    """
    An attempt of a callback is starting.

    Attributes:
        run_id: The run's id.
        step: The step's name.
        phase: ``"precheck"``, ``"job"`` or ``"compensate"``.
        attempt: From 1, as ``ctx.attempt``.

    .. versionadded:: 0.2.0
    """

    run_id: int
    step: str
    phase: Phase
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CallbackFinished:
    """
    A callback's outcome was decided (as its `Call` in the trace).

    Attributes:
        run_id: The run's id.
        step: The step's name.
        phase: ``"precheck"``, ``"job"`` or ``"compensate"``.
        outcome: ``"ok"``, ``"failed"``, ``"canceled"`` or ``"skipped"``.
        attempt: Attempts made (0 for a callback that was not called).
        seconds: Wall time, retries included.
        error: The original error (what `StepError.error` holds), or ``None``.

    .. versionadded:: 0.2.0
    """

    run_id: int
    step: str
    phase: Phase
    outcome: Outcome
    attempt: int
    seconds: float
    error: BaseException | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Emitted:
    """
    A callback emitted something (progress, a custom message).

    Attributes:
        run_id: The run's id.
        step: The emitting callback's step.
        kind: What it is, chosen by the callback.
        payload: Anything.

    .. versionadded:: 0.2.0
    """

    run_id: int
    step: str
    kind: str
    payload: object


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished:
    """
    A run finished (after its compensations).

    Attributes:
        run_id: The run's id.
        key: A durable run's key, else ``None``.
        result: What the run returns.

    .. versionadded:: 0.2.0
    """

    run_id: int
    key: str | None
    result: RunResult[Any]


#: Any event of a run.
RunEvent = RunStarted | CallbackStarted | CallbackFinished | Emitted | RunFinished

__all__ = ["CallbackFinished", "CallbackStarted", "Emitted", "RunEvent", "RunFinished", "RunStarted"]
