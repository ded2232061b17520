"""`Step`: what a user declares, before `Coordinator.add_step` inspects it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass

from .retry import RetryPolicy


@dataclass(frozen=True, slots=True)
class Step:
    """
    One step of a flow: an optional precheck, then a job.

    Nothing is checked here: `Coordinator.add_step` inspects the callbacks and
    raises `StepDefinitionError` for bad ones.

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
