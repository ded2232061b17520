"""
Running a plan once: set a run up, run it (fast path first), and wrap what it did in a `RunResult`.

`run_plain` is the common case written out in one function, as every call
there is paid once per record: no timeout, no values, nobody listening.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from ..events import RunEvent
from . import record
from .context import Context, context_for, end_own_runs, own_runs, runs_here
from .drivers import committed, drive, drive_async
from .loop import Loop, context_of, execute, hand_over
from .plan import Plan
from .result import RunResult, result_of
from .state import RunState, set_deadline

_run_ids: Final = itertools.count(1)
_clock_ns: Final = time.perf_counter_ns
_new_state: Final = RunState.__new__


def run_plain(plan: Plan, input: object) -> RunResult[Any]:  # noqa: A002
    """Run *plan* once for *input*: no timeout, no values, no listener."""
    # RunState(plan, input, None, run_id), without the call: its attributes are this package's interface.
    run = _new_state(RunState)
    run.plan, run.input, run.errors, run.run_id = plan, input, [], next(_run_ids)
    run.precheck_data, run.job_data = {}, {}
    ctx = context_for(run) if plan.takes_context else None
    run.stamps = stamps = [0] * plan.size
    here = runs_here()
    here.append(run)
    try:
        stamps[0] = _clock_ns()
        stopped = plan.fast(ctx, run, input, run.precheck_data, run.job_data, stamps)
        if stopped >= 0:
            drive(hand_over(run, ctx, stopped))
    finally:
        here.pop()
    return result_of(run)


def new_run(
    plan: Plan,
    input: object,  # noqa: A002
    values: Mapping[str, object] | None,
    timeout: float | None,
    emit: Callable[[RunEvent], None] | None,
    key: str | None = None,
) -> RunState:
    """Set a run up (its timeout starts now)."""
    run = RunState(plan, input, values, next(_run_ids))
    if timeout is not None:
        set_deadline(run, timeout)
    if key is not None:
        run.key = key
    if emit is not None:
        run.emit = emit
    return run


def start(run: RunState) -> tuple[Context[Any] | None, Loop | None]:
    """
    Start *run*: its context, and the loop that goes on with it (``None`` when it is over).

    On the fast path unless the run has a timeout, a listener or a store.
    """
    ctx = context_of(run)
    if run.emit is not None:
        record.run_started(run)
    if run.deadline is not None or run.emit is not None or run.recorder is not None:
        run.began = _clock_ns() / 1e9
        return ctx, execute(run, ctx)
    plan = run.plan
    run.stamps = stamps = [0] * plan.size
    stamps[0] = _clock_ns()
    stopped = plan.fast(ctx, run, run.input, run.precheck_data, run.job_data, stamps)
    return ctx, None if stopped < 0 else hand_over(run, ctx, stopped)


def finish(run: RunState) -> RunResult[Any]:
    """Record how *run* ended, wrap it in its result, and tell the listeners."""
    if run.recorder is not None:
        run.recorder.finished(run)
    result = result_of(run)
    if run.emit is not None:
        record.run_finished(run, result)
    return result


def run_sync(run: RunState) -> RunResult[Any]:
    """Run *run* from plain code (see `drive`)."""
    here = runs_here()
    here.append(run)
    try:
        _, loop = start(run)
        if loop is not None:
            drive(loop)
    except BaseException:
        if run.recorder is not None:
            run.recorder.interrupted()
        raise
    finally:
        here.pop()
    return finish(run)


async def run_async(run: RunState) -> RunResult[Any]:
    """
    Run *run* inside the running event loop (see `drive_async`).

    A plan with ``async def`` callbacks starts on its ``async def`` fast
    path, which awaits them, unless the run has a timeout, a listener or a store.
    """
    token = own_runs(run)
    try:
        plan = run.plan
        fast = plan.fast_async
        if fast is None or run.deadline is not None or run.emit is not None or run.recorder is not None:
            _, loop = start(run)
        else:
            ctx = context_of(run)
            run.stamps = stamps = [0] * plan.size
            stamps[0] = _clock_ns()
            stopped = await fast(ctx, run, run.input, run.precheck_data, run.job_data, stamps)
            loop = None if stopped < 0 else hand_over(run, ctx, stopped)
        if loop is not None:
            await drive_async(loop)
        if run.commits is not None:  # its writes are committed with other runs': the last ones first
            await committed(run.commits)
    except BaseException:
        if run.recorder is not None:
            run.recorder.interrupted()
        raise
    finally:
        end_own_runs(token)
    if run.commits is not None:
        return await _finish_committed(run)
    return finish(run)


async def _finish_committed(run: RunState) -> RunResult[Any]:
    """`finish` of a run whose writes are committed with other runs': its result once its finish is committed."""
    run.recorder.finished(run)  # type: ignore[union-attr]  # a run with commits has a recorder
    await committed(run.commits)  # type: ignore[arg-type]
    result = result_of(run)
    if run.emit is not None:
        record.run_finished(run, result)
    return result
