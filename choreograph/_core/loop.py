"""
The run loop: walk the plan's callbacks, restore stored steps, compensate after a fatal error.

`execute` is a generator served by a driver (see `choreograph._core.drivers`).
A run usually starts on its plan's fast path (see `choreograph._core.fastpath`),
which handles only callbacks that succeed; at the first callback that does
anything else, `hand_over` continues the run here, where every outcome is
decided: `attempt.call` calls the callback, `outcome.decide` says what its
result means, and `record.finished` records it.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any, Final

from .._errors import MISSING, Phase, RunCancelled, Skip, StepError, UnassignableInput
from . import record
from .attempt import Called, announce, call, once
from .callbacks import type_name
from .context import Context, context_for
from .drivers import Commit, Gather, Slots
from .outcome import Verdict, decide, fatal_error
from .plan import Entry, GroupNode, StepNode
from .result import Outcome
from .state import NOTHING, Restored, RunState, stamped

_clock: Final = time.perf_counter
_monotonic: Final = time.monotonic

#: What `execute` yields and is sent: see `choreograph._core.drivers`.
Loop = Generator[object, object, None]


def context_of(run: RunState) -> Context[Any] | None:
    """The context the run's callbacks get: ``None`` when none of them takes one."""
    return context_for(run) if run.plan.takes_context else None  # pragma: no mutate - a context no one reads


def hand_over(run: RunState, ctx: Context[Any] | None, index: int) -> Loop:
    """Continue, with the full loop, a run that the fast path stopped at callback *index*."""
    plan = run.plan
    stamps = run.stamps or [time.perf_counter_ns()]
    run.began = stamps[0] / 1e9  # pragma: no mutate - / (1e9 + 1): off by 1e-9 of the clock, below its use
    run.calls = stamped(plan.labels, stamps, index, origin=0)  # perf_counter values, as the loop records
    run.completed = [e.step for e in plan.entries[:index] if e.callback.is_job]
    pending = run.pending
    return execute(run, ctx, index, None if pending is None else (pending, stamps[index] / 1e9))


def execute(
    run: RunState,
    ctx: Context[Any] | None,
    start: int = 0,
    pending: tuple[tuple[object, BaseException | None], float] | None = None,
) -> Loop:
    """Run the plan from callback *start*; compensate if the run failed."""
    if run.calls is None:
        run.calls = []
    if run.rollback:  # a rollback interrupted earlier: finish it, don't go forward
        yield from compensate(run, ctx)
        return
    if start == 0:
        run.completed = []
    yield from forward(run, ctx, start, pending)
    fatal = run.fatal
    if fatal is not None and run.plan.compensates and any(st.compensate for st in run.completed):
        if run.recorder is not None:
            if run.commits:  # the failed step's outcome before the rollback's mark
                yield Commit(run.commits)
            run.recorder.rolling_back(fatal)
        yield from compensate(run, ctx)


def forward(  # noqa: C901, PLR0912, PLR0915 - the common case of `conclude` inline: it is paid per callback
    run: RunState,
    ctx: Context[Any] | None,
    start: int,
    pending: tuple[tuple[object, BaseException | None], float] | None,
    entries: tuple[Entry, ...] | None = None,
    slots: Slots | None = None,
) -> Loop:
    """
    Run a lane's callbacks in order from *start* until one stops the run.

    *pending* is the first callback's result when the fast path already called
    it: ``((output, error), started)``. *entries* is the lane (the plan's
    root by default); *slots*, those of the group a branch's lane belongs to.
    A fatal error stops every lane: no callback starts after it.
    """
    if entries is None:
        entries = run.plan.entries
    restored = run.restored
    commits = run.commits  # set before the run starts, if ever
    index = start
    while index < len(entries):
        if commits:  # a callback's outcome is committed before the next callback starts
            yield Commit(commits)
        if slots is not None and run.fatal is not None:  # another branch's fatal error: nothing new starts
            return
        entry = entries[index]
        group = entry.group
        if group is not None:
            yield from gather(run, group)
            if run.fatal is not None:
                return
            index += 1
            continue
        st = entry.step
        if entry.first and pending is None and restored is not None and st.key in restored:
            restore(run, st, restored[st.key])
            index = entry.next_step
            continue
        if pending is None:
            check = entry.callback.check_input
            if (run.deadline is not None or (check is not None and not check(run.input))) and refuse(run, entry):
                return
            started, first = _clock(), None
        else:
            first, started = pending
            pending = None
        cb = entry.callback
        base = 0 if run.attempt_base is None else run.attempt_base.get((st.key, cb.role), 0)
        if first is None and cb.retry is None and not cb.is_async and slots is None:
            if ctx is not None or run.emit is not None:
                announce(run, ctx, cb, st.name, base + 1)
            output, error = once(run, ctx, cb, st.name)
            if error is None:  # the common case of `conclude`, inline: it is paid per callback
                if cb.has_output:
                    (run.job_data if cb.is_job else run.precheck_data)[st.key] = output
                record.finished(
                    run,
                    st.name,
                    cb.role,
                    "ok",
                    base + 1,
                    _clock() - started,
                    started,
                    None,
                    output if cb.has_output else MISSING,
                )
                if cb.is_job:
                    run.completed.append(st)
                index += 1
                continue
            called: Called = (output, error, base + 1, False)
        else:
            called = yield from call(run, ctx, cb, st.name, started, base, first, slots)
        verdict = conclude(run, entry, called, started)
        if verdict is Verdict.GO_ON:
            index += 1
        elif verdict is Verdict.SKIP_JOB:
            index = entry.next_step
        else:
            return


def gather(run: RunState, group: GroupNode) -> Loop:
    """Run a group: its branches side by side (see `Gather`), each a lane with a context of its own."""
    slots = Slots(group.workers)
    yield Gather(tuple(forward(run, context_of(run), 0, None, lane, slots) for lane in group.lanes), group.has_async)


def refuse(run: RunState, entry: Entry) -> bool:
    """Stop the run before a callback if its timeout expired or the input doesn't fit the callback."""
    st, cb = entry.step, entry.callback
    if run.deadline is not None and _monotonic() >= run.deadline:  # pragma: no mutate - `>`: only at equality
        run.fatal = RunCancelled(run.timeout or 0.0, st.name)
        return True
    if cb.check_input is not None and not cb.check_input(run.input):
        run.fatal = error = UnassignableInput(st.name, cb.role, cb.input_hint, type_name(run.input))
        record.finished(run, st.name, cb.role, "failed", 0, 0.0, None, error)
        return True
    return False


def conclude(run: RunState, entry: Entry, called: Called, started: float) -> Verdict:  # noqa: C901 - the outcome rules in order
    """Apply a callback's outcome to the run: DataBag, error stack, fatal error; record it."""
    st, cb = entry.step, entry.callback
    name, role = st.name, cb.role
    output, err, attempts, expired = called
    seconds = _clock() - started
    if expired:
        return cancelled(run, name, role, attempts, seconds, started)
    outcome: Outcome
    # pragma: no mutate start - decide() of no error is ("ok", GO_ON) too: the test only spares the call
    outcome, verdict = ("ok", Verdict.GO_ON) if err is None else decide(role, err, strict=run.plan.strict_prechecks)
    # pragma: no mutate end
    stored: object = MISSING  # what went into the DataBag
    if err is None:
        if cb.has_output:
            (run.job_data if cb.is_job else run.precheck_data)[st.key] = stored = output
    elif isinstance(err, Skip) and err.has_output and not cb.is_job:
        unstorable = None if run.recorder is None else run.recorder.check_output(name, role, err.output)
        if unstorable is None:
            run.precheck_data[st.key] = stored = err.output
        else:
            err = unstorable
    record.finished(run, name, role, outcome, attempts, seconds, started, err, stored)
    if err is None:
        if cb.is_job:
            run.completed.append(st)
        return verdict
    run.errors.append(StepError(name, role, err))
    if verdict is Verdict.STOP:
        if run.fatal is None:  # the first fatal error is the run's (branches may stop at once)
            run.fatal = fatal_error(name, role, err)
        if cb.is_job and st.compensate_failed:
            run.completed.append(st)
    else:
        record.finished(run, name, "job", "skipped", 0, 0.0, None)
    return verdict


def cancelled(run: RunState, name: str, role: Phase, attempts: int, seconds: float, started: float) -> Verdict:
    """The run's timeout cancelled a callback: the run stops (see `conclude`)."""
    fatal = RunCancelled(run.timeout or 0.0, name)  # pragma: no mutate - > 0 here: 0 stops the run in refuse
    if run.fatal is None:  # the first fatal error is the run's (branches may stop at once)
        run.fatal = fatal
    record.finished(run, name, role, "canceled", attempts, seconds, started, fatal)
    return Verdict.STOP


def restore(run: RunState, st: StepNode, restored: Restored) -> None:
    """Put a step's stored outcome back into the run, instead of running it."""
    if restored.precheck_output is not NOTHING:
        run.precheck_data[st.key] = restored.precheck_output
    if restored.job_output is not NOTHING:
        run.job_data[st.key] = restored.job_output
    run.errors.extend(restored.errors)
    run.calls.extend(restored.calls)  # type: ignore[union-attr]  # execute made the list
    if restored.job_ok:  # among the steps restored before it, where its job ended then
        completed, others = run.completed, run.restored or {}
        at = len(completed)
        # pragma: no mutate start - `>=`: orders are event ids, never equal (the other mutants are killed)
        while at and (earlier := others.get(completed[at - 1].key)) is not None and earlier.order > restored.order:
            # pragma: no mutate end
            at -= 1
        completed.insert(at, st)


def compensate(run: RunState, ctx: Context[Any] | None) -> Loop:
    """Undo the completed steps in reverse order; a failure does not stop the others."""
    run.compensation_errors = errors = []
    run.deadline = None  # a rollback is not cut short by the run's timeout
    commits = run.commits
    for st in reversed(run.completed):
        cb = st.compensate
        if cb is None or st.key in run.compensated:
            continue
        if commits:
            yield Commit(commits)
        name = st.name
        error: BaseException | None
        started: float | None = None
        if cb.check_input is not None and not cb.check_input(run.input):
            error, attempts, seconds = (
                UnassignableInput(name, "compensate", cb.input_hint, type_name(run.input)),
                0,
                0.0,
            )
        else:
            started = _clock()
            base = 0 if run.attempt_base is None else run.attempt_base.get((st.key, "compensate"), 0)
            _, error, attempts, _ = yield from call(run, ctx, cb, name, started, base)
            seconds = _clock() - started
        outcome, _ = decide("compensate", error)
        record.finished(run, name, "compensate", outcome, attempts, seconds, started, error)
        if error is not None:
            errors.append(StepError(name, "compensate", error))
