"""
The contract's outcome rules, as a pure decision: what a callback's error means for its run.

>>> decide("precheck", ValueError("bad"))
('failed', <Verdict.SKIP_JOB: 1>)
>>> decide("job", None)
('ok', <Verdict.GO_ON: 0>)
"""

from __future__ import annotations

import enum

from .._errors import ChoreographError, ExecutionCanceled, JobFailed, Phase, PrecheckFailed, Skip
from .result import Outcome


class Verdict(enum.IntEnum):
    """What the run does after a callback."""

    #: Go on with the next callback.
    GO_ON = 0
    #: The precheck failed: the step's job is skipped, the run goes on with the next step.
    SKIP_JOB = 1
    #: The run stops with a fatal error (see `fatal_error`).
    STOP = 2


def decide(phase: Phase, error: BaseException | None, *, strict: bool = False) -> tuple[Outcome, Verdict]:
    """
    Classify a callback's result: its trace outcome, and what the run does next.

    A job's error stops the run. A precheck's `ExecutionCanceled` stops it too
    ("canceled"); `Skip` skips the job; any other precheck error skips the job
    too, or stops the run when *strict* (``strict_prechecks``). A
    compensation's error never stops the others.

    >>> decide("precheck", KeyError("amout"), strict=True)
    ('failed', <Verdict.STOP: 2>)
    """
    if error is None:
        return "ok", Verdict.GO_ON
    if phase == "job":
        return "failed", Verdict.STOP
    if phase == "compensate":
        return "failed", Verdict.GO_ON
    if isinstance(error, ExecutionCanceled):
        return "canceled", Verdict.STOP
    if strict and not isinstance(error, Skip):
        return "failed", Verdict.STOP
    return "failed", Verdict.SKIP_JOB


def fatal_error(step: str, phase: Phase, error: BaseException) -> ChoreographError:
    """
    The run's fatal error when *error* of this callback stopped it (see `decide`).

    >>> fatal_error("book", "job", KeyError("id"))
    JobFailed('book', KeyError('id'))
    >>> fatal_error("book", "precheck", KeyError("amout"))
    PrecheckFailed('book', KeyError('amout'))
    """
    if phase == "job":
        return JobFailed(step, error)
    if isinstance(error, ExecutionCanceled):
        return error
    return PrecheckFailed(step, error)
