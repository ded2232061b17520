"""
The one place where what a run does is recorded: its trace, its store's recorder, and its events.

The run loop calls `finished` once per callback whose outcome it decided, and
`started` before each attempt; the run's set-up and finish call `run_started`
and `run_finished`. Nothing else writes a trace entry or sends an event, but
`Context.emit`, which sends what a callback emits.
"""

from __future__ import annotations

import time
from typing import Any, Final

from .._errors import MISSING, Phase
from ..events import CallbackFinished, CallbackStarted, RunFinished, RunStarted, maker
from .result import Outcome, RunResult
from .state import RunState

_clock: Final = time.perf_counter
_callback_started = maker(CallbackStarted)
_callback_finished = maker(CallbackFinished)


def run_started(run: RunState) -> None:
    """The run starts (only called when someone listens)."""
    if run.emit is not None:
        run.emit(RunStarted(run_id=run.run_id, key=run.key, input=run.input, at=time.time()))


def started(run: RunState, step: str, phase: Phase, attempt: int) -> None:
    """An attempt of a callback starts."""
    if run.emit is not None:
        run.emit(_callback_started(run.run_id, step, phase, attempt))


def finished(
    run: RunState,
    step: str,
    phase: Phase,
    outcome: Outcome,
    attempts: int,
    seconds: float,
    started: float | None,
    error: BaseException | None = None,
    output: object = MISSING,
) -> None:
    """
    A callback's outcome was decided: trace it, record it in the store, tell the listeners.

    *started* is `time.perf_counter` when it started (``None``: it was not
    called, and is passed over now); *output* is what went into the DataBag,
    or `MISSING`.
    """
    began = (_clock() if started is None else started) - run.began
    run.calls.append((step, phase, outcome, seconds, attempts, False, began))  # type: ignore[union-attr]  # the loop made it
    if run.recorder is not None:
        run.recorder.record(step, phase, outcome, output, error, attempts, seconds)
    if run.emit is not None:
        run.emit(_callback_finished(run.run_id, step, phase, outcome, attempts, seconds, error))


def run_finished(run: RunState, result: RunResult[Any]) -> None:
    """The run finished, compensations included."""
    if run.emit is not None:
        run.emit(RunFinished(run_id=run.run_id, key=run.key, result=result))
