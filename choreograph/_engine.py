"""
The run loop, written once for plain and ``async def`` callbacks.

`forward` is a generator that runs the steps of one run. It yields only when it
needs something it cannot do itself: an awaitable returned by an ``async def``
callback, or a `Sleep` between retry attempts. `drive` serves those requests
from plain code (switching to an event loop at the first awaitable) and
`drive_async` from a running event loop. A run whose callbacks are all plain
finishes on the first ``send`` and never touches asyncio.

A run usually starts on its plan's *fast path* (see `_fastpath`), which handles
only callbacks that succeed; at the first callback that does anything else, the
run is handed over to `forward`, which decides every other outcome.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable, Generator, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import MappingProxyType
from typing import Final, Protocol

from loguru import logger

from ._bag import NO_NAMES, DataBag
from ._context import Context
from ._errors import (
    MISSING,
    CallbackTimeout,
    ChoreographError,
    ExecutionCanceled,
    JobFailed,
    Phase,
    RunCancelled,
    Skip,
    StepError,
    UnassignableInput,
)
from ._fastpath import build_fast_path
from ._result import Outcome, RawCall
from ._step import CONTAINERS, Callback, Step, type_name

_clock: Final = time.perf_counter
_new_bag: Final = DataBag.__new__
_monotonic: Final = time.monotonic

#: A run loop: yields requests (awaitables, `Sleep`) to its driver.
Loop = Generator[object, object, None]


class Sleep:
    """A request to the driver: wait this long (between retry attempts)."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class Expired(BaseException):
    """Thrown into the run loop when the run's deadline passed during an await."""


class Recorder(Protocol):
    """Receives each callback's outcome, once decided (stores and listeners)."""

    def check_output(self, step: str, phase: Phase, value: object) -> Exception | None:
        """Return an error if *value* cannot be recorded (it then fails the callback)."""
        ...

    def record(
        self,
        step: str,
        phase: Phase,
        outcome: Outcome,
        output: object,
        error: BaseException | None,
        attempts: int,
        seconds: float,
    ) -> None:
        """Record one callback's outcome; *output* is what went into the DataBag, or `MISSING`."""
        ...

    def rolling_back(self, fatal: ChoreographError) -> None:
        """The run failed with *fatal*: compensations start now."""
        ...


class Restored(Protocol):
    """A step's outcome restored from a store (see durable runs)."""

    calls: tuple[RawCall, ...]
    precheck_output: object
    job_output: object
    errors: tuple[StepError, ...]
    job_ok: bool


class _Nothing:
    """No output was stored."""

    __slots__ = ()


NOTHING: Final = _Nothing()


class CompiledStep:
    """A step as the run loop sees it: its callbacks inspected once."""

    __slots__ = ("callbacks", "compensate", "compensate_failed", "key", "name", "step")

    def __init__(self, step: Step, precheck: Callback | None, job: Callback, compensate: Callback | None) -> None:
        self.step = step
        self.name = step.name
        self.key = step.name.casefold()
        self.callbacks = (job,) if precheck is None else (precheck, job)
        self.compensate = compensate
        self.compensate_failed = step.compensate_failed


class Entry:
    """One callback of the plan, in run order."""

    __slots__ = ("callback", "first", "next_step", "step")

    def __init__(self, callback: Callback, step: CompiledStep, first: bool, next_step: int) -> None:  # noqa: FBT001
        self.callback, self.step, self.first, self.next_step = callback, step, first, next_step


class Plan:
    """A coordinator's steps, compiled for running. Immutable: adding a step builds a new plan."""

    __slots__ = ("compensates", "entries", "fast", "has_async", "labels", "names", "size", "steps")

    def __init__(self, steps: tuple[CompiledStep, ...]) -> None:
        self.steps = steps
        entries: list[Entry] = []
        for st in steps:
            after = len(entries) + len(st.callbacks)
            entries.extend(Entry(cb, st, index == 0, after) for index, cb in enumerate(st.callbacks))
        self.entries = tuple(entries)
        self.size = len(entries) + 1  # timestamps the fast path takes
        self.labels: tuple[tuple[str, Phase], ...] = tuple((e.step.name, e.callback.role) for e in entries)
        self.names = {st.key: st.name for st in steps}
        self.compensates = any(st.compensate is not None for st in steps)
        self.has_async = any(cb is not None and cb.is_async for st in steps for cb in (*st.callbacks, st.compensate))
        self.fast = build_fast_path(self.entries)


class Run(Context[object]):
    """One run's state: the context its callbacks see, plus what the loop needs."""

    _calls: list[RawCall] | None = None  # None: every call so far is in `_stamps`
    _stamps: list[int] | None = None  # the fast path's timestamps (perf_counter_ns)
    _pending: tuple[object, BaseException | None] | None = None
    _deadline: float | None = None
    _timeout: float | None = None
    _await_timeout: float | None = None
    _recorder: Recorder | None = None
    _restored: Mapping[str, Restored] | None = None
    _compensated: frozenset[str] = frozenset()
    _attempt_base: Mapping[tuple[str, Phase], int] | None = None  # attempts made before a resume
    _rollback = False  # resume an interrupted rollback instead of running forward
    _compensation_errors: list[StepError] | tuple[StepError, ...] = ()
    _completed: list[CompiledStep] = []  # noqa: RUF012 - replaced, never mutated, by `execute`
    _log = False

    _values: Mapping[str, object] = MappingProxyType({})

    def __init__(self, plan: Plan, input: object, values: Mapping[str, object] | None, run_id: int) -> None:  # noqa: A002
        self._plan = plan
        self._input = input
        if values is not None:
            self._values = values
        self._bag = bag = _new_bag(DataBag)  # DataBag(plan.names), without a call per run
        bag._job, bag._precheck, bag._known, bag._names = {}, {}, plan.names, NO_NAMES  # noqa: SLF001
        self._errors = []
        self._run_id = run_id

    # While the fast path runs (`_calls` is None), the current callback is the
    # one after the last timestamp; the loop sets step and phase explicitly.
    def _fast_label(self) -> tuple[str, Phase]:
        stamps = self._stamps or [0]
        labels = self._plan.labels
        done = stamps.index(0, 1) - 1 if 0 in stamps[1:] else len(labels) - 1
        return labels[done] if labels else ("", "job")

    @property
    def _step(self) -> str:
        if self._calls is None and self._stamps is not None:
            return self._fast_label()[0]
        return self._step_now

    @_step.setter
    def _step(self, name: str) -> None:
        self._step_now = name

    @property
    def _phase(self) -> Phase:
        if self._calls is None and self._stamps is not None:
            return self._fast_label()[1]
        return self._phase_now

    @_phase.setter
    def _phase(self, phase: Phase) -> None:
        self._phase_now = phase

    _step_now = ""
    _phase_now: Phase = "job"

    def _raw_calls(self) -> tuple[RawCall, ...]:
        if self._calls is not None:
            return tuple(self._calls)
        return tuple(_stamped(self._plan.labels, self._stamps or [0]))

    def _expiry(self, by_run: bool) -> BaseException:  # noqa: FBT001
        """What to throw into the loop when an awaited callback ran out of time."""
        if by_run:
            return Expired()
        return CallbackTimeout(self._step, self._phase, self._await_timeout or 0.0)


def _stamped(labels: tuple[tuple[str, Phase], ...], stamps: list[int], count: int | None = None) -> list[RawCall]:
    """Trace entries of the first *count* callbacks, that the fast path ran: all ok, first attempt."""
    return [
        (step, phase, "ok", (stamps[index + 1] - stamps[index]) / 1e9, 1, False)
        for index, (step, phase) in enumerate(labels[: len(labels) if count is None else count])
    ]


def hand_over(run: Run, index: int) -> Loop:
    """Continue, with the full loop, a run that the fast path stopped at callback *index*."""
    plan = run._plan  # noqa: SLF001
    stamps = run._stamps or [time.perf_counter_ns()]  # noqa: SLF001
    run._calls = _stamped(plan.labels, stamps, index)  # noqa: SLF001
    run._completed = [e.step for e in plan.entries[:index] if e.callback.is_job]  # noqa: SLF001
    pending = run._pending  # noqa: SLF001
    return execute(run, index, None if pending is None else (*pending, stamps[index] / 1e9))


def execute(run: Run, start: int = 0, pending: tuple[object, BaseException | None, float] | None = None) -> Loop:
    """Run the plan from callback *start*; compensate if the run failed."""
    if run._rollback:  # noqa: SLF001 - a rollback interrupted earlier: finish it, don't go forward
        yield from compensate(run)
        return
    if start == 0:
        run._completed = []  # noqa: SLF001
    yield from forward(run, start, pending)
    fatal = run._fatal  # noqa: SLF001
    if fatal is not None and run._plan.compensates and any(st.compensate for st in run._completed):  # noqa: SLF001
        if run._recorder is not None:  # noqa: SLF001
            run._recorder.rolling_back(fatal)  # noqa: SLF001
        yield from compensate(run)


def forward(  # noqa: C901, PLR0912, PLR0915 - the run loop, kept in one frame for speed
    run: Run, start: int, pending: tuple[object, BaseException | None, float] | None
) -> Loop:
    """
    Run the callbacks in order from *start* until one stops the run.

    *pending* is the first callback's result when the fast path already called
    it: ``(output, error, started)``.
    """
    if run._calls is None:  # noqa: SLF001
        run._calls = []  # noqa: SLF001
    entries = run._plan.entries  # noqa: SLF001
    value = run._input  # noqa: SLF001
    tables = (run._bag._precheck, run._bag._job)  # noqa: SLF001
    push_error = run._errors.append  # noqa: SLF001
    trace = run._calls.append  # noqa: SLF001
    deadline = run._deadline  # noqa: SLF001
    recorder = run._recorder  # noqa: SLF001
    restored = run._restored  # noqa: SLF001
    attempt_base = run._attempt_base  # noqa: SLF001
    completed = run._completed  # noqa: SLF001
    clock = _clock
    count = len(entries)
    index = start
    while index < count:
        entry = entries[index]
        cb = entry.callback
        st = entry.step
        name = st.name
        role = cb.role
        if entry.first and pending is None and restored is not None and st.key in restored:
            restore(run, st, restored[st.key])
            index = entry.next_step
            continue
        run._step = name  # noqa: SLF001
        run._phase = role  # noqa: SLF001
        index += 1
        attempt = 0 if attempt_base is None else attempt_base.get((st.key, role), 0)
        out: object = None
        err: BaseException | None = None
        call = pending is None
        if call:
            if deadline is not None and _monotonic() >= deadline:
                run._fatal = RunCancelled(run._timeout or 0.0, name)  # noqa: SLF001
                return
            if cb.check_input is not None and not cb.check_input(value):
                run._fatal = err = UnassignableInput(name, role, cb.input_hint, type_name(value))  # noqa: SLF001
                trace((name, role, "failed", 0.0, 0, False))
                if recorder is not None:
                    recorder.record(name, role, "failed", MISSING, err, 0, 0.0)
                return
            started = clock()
        else:
            out, err, started = pending  # type: ignore[misc]  # not None here
            pending = None
            attempt += 1
        while True:
            if call:
                attempt += 1
                run._attempt = attempt  # noqa: SLF001
                out = err = None
                began = clock() if cb.timeout is not None else 0.0
                try:
                    out = cb.call(run, value)
                    if cb.is_async:
                        run._await_timeout = cb.timeout  # noqa: SLF001
                        out = yield out
                    elif cb.timeout is not None and clock() - began > cb.timeout:
                        err = CallbackTimeout(name, role, cb.timeout)
                except Expired:
                    seconds = clock() - started
                    run._fatal = fatal = RunCancelled(run._timeout or 0.0, name)  # noqa: SLF001
                    trace((name, role, "canceled", seconds, attempt, False))
                    if recorder is not None:
                        recorder.record(name, role, "canceled", MISSING, fatal, attempt, seconds)
                    return
                except Exception as exc:  # noqa: BLE001 - any callback error is an outcome
                    err = exc
            call = True
            if err is None:
                check = cb.check_output
                if check is None:
                    if type(out) in CONTAINERS:
                        out, err = cb.settle(name, out)
                elif not check(out):
                    out, err = cb.settle(name, out)
                if err is None and recorder is not None and cb.has_output:
                    err = recorder.check_output(name, role, out)
            if err is None or cb.retry is None:
                break
            wait = cb.retry.delay(err, attempt, clock() - started)  # type: ignore[arg-type]
            if wait is None or (deadline is not None and _monotonic() + wait >= deadline):
                break
            if run._log:  # noqa: SLF001
                logger.info(
                    "step {step} {phase} attempt {attempt} failed, retrying in {wait:.3f}s",
                    run_id=run._run_id,  # noqa: SLF001
                    step=name,
                    phase=role,
                    attempt=attempt,
                    wait=wait,
                    error=err,
                )
            yield Sleep(wait)
        seconds = clock() - started

        # The one place that decides each callback's outcome, and records it.
        outcome: Outcome
        stored: object = MISSING  # what went into the DataBag
        if err is None:
            outcome = "ok"
            if cb.has_output:
                tables[cb.is_job][st.key] = stored = out
        elif not cb.is_job and isinstance(err, ExecutionCanceled):
            outcome = "canceled"
        else:
            outcome = "failed"
            if not cb.is_job and isinstance(err, Skip) and err.has_output:
                unstorable = None if recorder is None else recorder.check_output(name, role, err.output)
                if unstorable is None:
                    tables[0][st.key] = stored = err.output
                else:
                    err = unstorable
        trace((name, role, outcome, seconds, attempt, False))
        if recorder is not None:
            recorder.record(name, role, outcome, stored, err, attempt, seconds)
        if err is None:
            if cb.is_job:
                completed.append(st)
            continue
        push_error(StepError(name, role, err))
        if run._log:  # noqa: SLF001
            logger.info(
                "step {step} {phase} {outcome}: {error!r}",
                run_id=run._run_id,  # noqa: SLF001
                step=name,
                phase=role,
                outcome=outcome,
                error=err,
            )
        if cb.is_job:
            run._fatal = JobFailed(name, err)  # noqa: SLF001
            if st.compensate_failed:
                completed.append(st)
            return
        if outcome == "canceled":
            run._fatal = err  # type: ignore[assignment]  # noqa: SLF001 - an ExecutionCanceled
            return
        trace((name, "job", "skipped", 0.0, 0, False))
        if recorder is not None:
            recorder.record(name, "job", "skipped", MISSING, None, 0, 0.0)
        index = entry.next_step


def restore(run: Run, st: CompiledStep, restored: Restored) -> None:
    """Put a step's stored outcome back into the run, instead of running it."""
    bag = run._bag  # noqa: SLF001
    if restored.precheck_output is not NOTHING:
        bag._precheck[st.key] = restored.precheck_output  # noqa: SLF001
    if restored.job_output is not NOTHING:
        bag._job[st.key] = restored.job_output  # noqa: SLF001
    run._errors.extend(restored.errors)  # noqa: SLF001
    run._calls.extend(restored.calls)  # type: ignore[union-attr]  # noqa: SLF001 - forward made the list
    if restored.job_ok:
        run._completed.append(st)  # noqa: SLF001


def compensate(run: Run) -> Loop:
    """Undo the completed steps in reverse order; a failure does not stop the others."""
    run._compensation_errors = errors = []  # noqa: SLF001
    calls = run._calls if run._calls is not None else []  # noqa: SLF001
    run._calls = calls  # noqa: SLF001
    value = run._input  # noqa: SLF001
    recorder = run._recorder  # noqa: SLF001
    run._deadline = None  # noqa: SLF001 - a rollback is not cut short by the run's timeout
    for st in reversed(run._completed):  # noqa: SLF001
        cb = st.compensate
        if cb is None or st.key in run._compensated:  # noqa: SLF001
            continue
        name = st.name
        run._step, run._phase = name, "compensate"  # noqa: SLF001
        started = _clock()
        attempt = 0
        err: BaseException | None
        if cb.check_input is not None and not cb.check_input(value):
            err = UnassignableInput(name, "compensate", cb.input_hint, type_name(value))
        else:
            base = 0 if run._attempt_base is None else run._attempt_base.get((st.key, "compensate"), 0)  # noqa: SLF001
            attempt, err = yield from invoke(run, cb, name, value, started, base)
        seconds = _clock() - started
        outcome: Outcome = "ok" if err is None else "failed"
        calls.append((name, "compensate", outcome, seconds, attempt, False))
        if recorder is not None:
            recorder.record(name, "compensate", outcome, MISSING, err, attempt, seconds)
        if err is not None:
            errors.append(StepError(name, "compensate", err))
            if run._log:  # noqa: SLF001
                logger.info(
                    "step {step} compensation failed: {error!r}",
                    run_id=run._run_id,  # noqa: SLF001
                    step=name,
                    error=err,
                )


def invoke(
    run: Run, cb: Callback, name: str, value: object, started: float, attempt: int
) -> Generator[object, object, tuple[int, BaseException | None]]:
    """
    Call a compensation, with its retries: ``(attempts, error)``.

    `forward` inlines the same sequence: it is the hot path, where a generator
    per callback would cost more than all the rest of its bookkeeping.
    *attempt* is the number of attempts made before (by earlier sessions).
    """
    while True:
        attempt += 1
        run._attempt = attempt  # noqa: SLF001
        err: BaseException | None = None
        began = _clock()
        try:
            out = cb.call(run, value)
            if cb.is_async:
                run._await_timeout = cb.timeout  # noqa: SLF001
                out = yield out
            elif cb.timeout is not None and _clock() - began > cb.timeout:
                err = CallbackTimeout(name, "compensate", cb.timeout)
            if err is None and type(out) in CONTAINERS:
                _, err = cb.settle(name, out)
        except Exception as exc:  # noqa: BLE001 - any callback error is an outcome
            err = exc
        if err is None or cb.retry is None:
            return attempt, err
        wait = cb.retry.delay(err, attempt, _clock() - started)  # type: ignore[arg-type]
        if wait is None:
            return attempt, err
        yield Sleep(wait)


def drive(loop: Loop, run: Run) -> None:
    """Run *loop* to the end from plain code."""
    try:
        request = loop.send(None)
        while type(request) is Sleep:
            time.sleep(request.seconds)
            request = loop.send(None)
    except StopIteration:
        return
    # An awaitable: run the rest of the run on an event loop.
    rest = drive_async(loop, run, request)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(rest)
        return
    # Called from inside a running event loop, which must not be re-entered:
    # block it, and run ours in a helper thread that sees this run's context.
    context = contextvars.copy_context()
    with ThreadPoolExecutor(1, thread_name_prefix="choreograph-run") as pool:
        pool.submit(context.run, asyncio.run, rest).result()


_START: Final = object()


async def drive_async(loop: Loop, run: Run, request: object = _START) -> None:
    """Run *loop* (the loop of *run*) to the end inside a running event loop."""
    send: Callable[[object], object] = loop.send
    try:
        if request is _START:
            request = send(None)
        while True:
            if type(request) is Sleep:
                await asyncio.sleep(request.seconds)
                request = send(None)
                continue
            limit, by_run = _limit(run)
            try:
                if limit is None:
                    result = await request  # type: ignore[misc]
                else:
                    scope = asyncio.timeout(limit)
                    try:
                        async with scope:
                            result = await request  # type: ignore[misc]
                    except TimeoutError:
                        if not scope.expired():
                            raise
                        request = loop.throw(run._expiry(by_run))  # noqa: SLF001
                        continue
            except Exception as exc:  # noqa: BLE001 - the callback's error, for the loop to judge
                request = loop.throw(exc)
                continue
            request = send(result)
    except StopIteration:
        return


def _limit(run: Run) -> tuple[float | None, bool]:
    """Seconds the awaited callback may take, and whether the run's deadline binds."""
    own = run._await_timeout  # noqa: SLF001
    deadline = run._deadline  # noqa: SLF001
    if deadline is None:
        return own, False
    left = max(0.0, deadline - _monotonic())
    if own is None or left <= own:
        return left, True
    return own, False
