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

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ._core.result import Outcome, RunResult
from ._errors import Phase

EventT = TypeVar("EventT")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted:
    """
    A run started.

    Attributes:
        run_id: The run's id (`RunResult.run_id`).
        key: A durable run's key, else ``None``.
        input: The run's input.
        at: When, as ``time.time()``.
        trace_context: A durable run's trace context, as a carrier (the
            mapping OpenTelemetry's propagators inject into and extract
            from); ``None`` for a run that is not durable. It holds the W3C
            ``"traceparent"`` an earlier session of the key's generation
            stored: the run resumes that one. Else it is empty, and a listener
            may put the ``"traceparent"`` of its span for the run in it (the
            first one to do so wins): the store keeps it for the sessions that
            resume the run. `choreograph.otel.Tracing` does both.

    .. versionadded:: 0.2.0

    .. versionchanged:: 0.3.0 ``trace_context``.
    """

    run_id: int
    key: str | None
    input: object
    at: float
    trace_context: dict[str, str] | None = dataclasses.field(default=None, hash=False)


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


def maker(cls: type[EventT]) -> Callable[..., EventT]:
    """
    A positional constructor of *cls* that skips the frozen dataclass's ``__init__``.

    The run loop makes two events per callback when someone listens; a frozen
    dataclass's ``__init__`` (keyword arguments, one ``object.__setattr__``
    per field) costs twice what setting its slots directly does.

    >>> make = maker(CallbackStarted)
    >>> make(1, "load", "job", 2) == CallbackStarted(run_id=1, step="load", phase="job", attempt=2)
    True
    """
    names = [field.name for field in dataclasses.fields(cls)]  # type: ignore[arg-type]  # a dataclass
    namespace: dict[str, object] = {"new": object.__new__, "cls": cls}
    namespace |= {f"set_{name}": cls.__dict__[name].__set__ for name in names}
    body = "".join(f"    set_{name}(event, {name})\n" for name in names)
    source = f"def make({', '.join(names)}):\n    event = new(cls)\n{body}    return event\n"
    exec(compile(source, f"<choreograph {cls.__name__} maker>", "exec"), namespace)  # noqa: S102 - field names only
    return namespace["make"]  # type: ignore[return-value]


__all__ = ["CallbackFinished", "CallbackStarted", "Emitted", "RunEvent", "RunFinished", "RunStarted"]
