"""
The run loop, written once for plain and ``async def`` callbacks.

`execute` is a generator that runs the steps of one run. It yields only when it
needs something it cannot do itself: an awaitable returned by an ``async def``
callback, or a `Sleep` between retry attempts. `drive` serves those requests
from plain code (switching to an event loop at the first awaitable) and
`drive_async` from a running event loop. A run whose callbacks are all plain
finishes on the first ``send`` and never touches asyncio.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable, Generator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Final, Protocol

from loguru import logger

from ._bag import DataBag
from ._context import Context
from ._errors import (
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
from ._result import Outcome, RawCall
from ._step import CONTAINERS, Callback, Step, type_name

_clock: Final = time.perf_counter
_monotonic: Final = time.monotonic


class Sleep:
    """A request to the driver: wait this long (between retry attempts)."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class Expired(BaseException):  # noqa: N818 - a signal, not an error
    """Thrown into the run loop when the run's deadline passed during an await."""


class Recorder(Protocol):
    """Receives each callback's outcome, once decided (stores and listeners)."""

    def check_output(self, step: str, phase: Phase, value: object) -> Exception | None:
        """Return an error if *value* cannot be recorded (it then fails the callback)."""
        ...

    def record(  # noqa: PLR0913 - one flat call on the hot path
        self,
        step: str,
        phase: Phase,
        outcome: Outcome,
        output: object,
        error: BaseException | None,
        attempts: int,
        seconds: float,
    ) -> None:
        """Record one callback's outcome."""
        ...


class Restored(Protocol):
    """A step's outcome restored from a store (see durable runs)."""

    calls: tuple[RawCall, ...]
    precheck_output: object
    job_output: object
    errors: tuple[StepError, ...]
    job_ok: bool


class CompiledStep:
    """A step as the run loop sees it: its callbacks inspected once."""

    __slots__ = ("callbacks", "compensate", "compensate_failed", "key", "name", "step")

    def __init__(
        self,
        step: Step,
        precheck: Callback | None,
        job: Callback,
        compensate: Callback | None,
    ) -> None:
        self.step = step
        self.name = step.name
        self.key = step.name.casefold()
        self.callbacks = (job,) if precheck is None else (precheck, job)
        self.compensate = compensate
        self.compensate_failed = step.compensate_failed


class Run:
    """The state of one run, shared by the loop and its driver."""

    __slots__ = (
        "await_timeout",
        "bag",
        "calls",
        "compensated",
        "compensation_errors",
        "completed",
        "context",
        "deadline",
        "errors",
        "fatal",
        "log",
        "recorder",
        "restored",
        "timeout",
    )

    def __init__(  # noqa: PLR0913
        self,
        input: object,  # noqa: A002 - the contract's name
        values: Mapping[str, object],
        names: dict[str, str],
        run_id: int,
        timeout: float | None,
        key: str | None,
    ) -> None:
        self.bag = bag = DataBag(names)
        self.errors: list[StepError] = []
        self.calls: list[RawCall] = []
        self.context: Context[object] = Context(input, values, bag, self.errors, run_id, key)
        self.fatal: ChoreographError | None = None
        self.timeout = timeout
        self.deadline = None if timeout is None else _monotonic() + timeout
        self.await_timeout: float | None = None
        self.recorder: Recorder | None = None
        self.restored: Mapping[str, Restored] | None = None
        self.compensated: frozenset[str] = frozenset()
        self.completed: list[CompiledStep] = []
        self.compensation_errors: list[StepError] = []
        self.log = False

    def expiry(self, by_run: bool) -> BaseException:  # noqa: FBT001
        """What to throw into the loop when an awaited callback ran out of time."""
        if by_run:
            return Expired()
        phase = self.context._phase  # noqa: SLF001 - same package
        return CallbackTimeout(self.context._step, phase, self.await_timeout or 0.0)  # noqa: SLF001


def execute(plan: tuple[CompiledStep, ...], run: Run) -> Generator[object, object, None]:
    """Run *plan*: forward through the steps, then compensate if the run failed."""
    if run.fatal is None:
        yield from forward(plan, run)
    if run.fatal is not None and run.completed:
        yield from compensate(run)


def forward(plan: tuple[CompiledStep, ...], run: Run) -> Generator[object, object, None]:  # noqa: C901, PLR0912, PLR0915
    """Run the steps in order until one stops the run."""
    context = run.context
    value = context._input  # noqa: SLF001 - same package
    tables = (run.bag._precheck, run.bag._job)  # noqa: SLF001
    push_error = run.errors.append
    trace = run.calls.append
    deadline = run.deadline
    recorder = run.recorder
    restored = run.restored
    completed = run.completed
    clock = _clock
    for st in plan:
        name = st.name
        key = st.key
        if restored is not None and key in restored:
            restore(run, st, restored[key])
            continue
        context._step = name  # noqa: SLF001
        for cb in st.callbacks:
            role = cb.role
            if deadline is not None and _monotonic() >= deadline:
                run.fatal = RunCancelled(run.timeout or 0.0, name)
                return
            context._phase = role  # noqa: SLF001
            if cb.check_input is not None and not cb.check_input(value):
                run.fatal = err = UnassignableInput(name, role, cb.input_hint, type_name(value))
                trace((name, role, "failed", 0.0, 0, False))
                if recorder is not None:
                    recorder.record(name, role, "failed", None, err, 0, 0.0)
                return
            started = clock()
            attempt = 0
            while True:
                attempt += 1
                context._attempt = attempt  # noqa: SLF001
                out: object = None
                err: BaseException | None = None
                try:
                    out = cb.call(context, value)
                    if cb.is_async:
                        run.await_timeout = cb.timeout
                        out = yield out
                    elif cb.timeout is not None and clock() - started > cb.timeout * attempt:
                        err = CallbackTimeout(name, role, cb.timeout)
                except Expired:
                    seconds = clock() - started
                    run.fatal = RunCancelled(run.timeout or 0.0, name)
                    trace((name, role, "canceled", seconds, attempt, False))
                    if recorder is not None:
                        recorder.record(name, role, "canceled", None, run.fatal, attempt, seconds)
                    return
                except Exception as exc:  # noqa: BLE001 - any callback error is an outcome
                    err = exc
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
                if run.log:
                    logger.info(
                        "step {step} {phase} attempt {attempt} failed, retrying in {wait:.3f}s",
                        run_id=context._run_id,  # noqa: SLF001
                        step=name,
                        phase=role,
                        attempt=attempt,
                        wait=wait,
                        error=err,
                    )
                yield Sleep(wait)
            seconds = clock() - started

            # The one place that decides each callback's outcome.
            outcome: Outcome
            if err is None:
                outcome = "ok"
                if cb.has_output:
                    tables[cb.is_job][key] = out
            elif not cb.is_job and isinstance(err, ExecutionCanceled):
                outcome = "canceled"
            else:
                outcome = "failed"
                if not cb.is_job and isinstance(err, Skip) and err.has_output:
                    tables[0][key] = out = err.output
            trace((name, role, outcome, seconds, attempt, False))
            if recorder is not None:
                recorder.record(name, role, outcome, out, err, attempt, seconds)
            if err is None:
                if cb.is_job:
                    completed.append(st)
                continue
            push_error(StepError(name, role, err))
            if run.log:
                logger.info(
                    "step {step} {phase} {outcome}: {error!r}",
                    run_id=context._run_id,  # noqa: SLF001
                    step=name,
                    phase=role,
                    outcome=outcome,
                    error=err,
                )
            if cb.is_job:
                run.fatal = JobFailed(name, err)
                if st.compensate_failed:
                    completed.append(st)
                return
            if outcome == "canceled":
                run.fatal = err  # type: ignore[assignment]  # an ExecutionCanceled
                return
            trace((name, "job", "skipped", 0.0, 0, False))
            if recorder is not None:
                recorder.record(name, "job", "skipped", None, None, 0, 0.0)
            break


def restore(run: Run, st: CompiledStep, restored: Restored) -> None:
    """Put a step's stored outcome back into the run, instead of running it."""
    bag = run.bag
    if restored.precheck_output is not _NOTHING:
        bag._precheck[st.key] = restored.precheck_output  # noqa: SLF001
    if restored.job_output is not _NOTHING:
        bag._job[st.key] = restored.job_output  # noqa: SLF001
    run.errors.extend(restored.errors)
    run.calls.extend(restored.calls)
    if restored.job_ok:
        run.completed.append(st)


class _Nothing:
    """No output was stored."""

    __slots__ = ()


_NOTHING: Final = _Nothing()
NOTHING: Final = _NOTHING


def compensate(run: Run) -> Generator[object, object, None]:
    """Undo the completed steps in reverse order; a failure does not stop the others."""
    context = run.context
    context._fatal = run.fatal  # noqa: SLF001
    value = context._input  # noqa: SLF001
    recorder = run.recorder
    run.deadline = None  # a rollback is not cut short by the run's timeout
    for st in reversed(run.completed):
        cb = st.compensate
        if cb is None or st.key in run.compensated:
            continue
        name = st.name
        context._step, context._phase = name, "compensate"  # noqa: SLF001
        started = _clock()
        attempt = 0
        err: BaseException | None = None
        if cb.check_input is not None and not cb.check_input(value):
            err = UnassignableInput(name, "compensate", cb.input_hint, type_name(value))
        else:
            attempt, err = yield from invoke(run, cb, name, value, started)
        seconds = _clock() - started
        outcome: Outcome = "ok" if err is None else "failed"
        run.calls.append((name, "compensate", outcome, seconds, attempt, False))
        if recorder is not None:
            recorder.record(name, "compensate", outcome, None, err, attempt, seconds)
        if err is not None:
            run.compensation_errors.append(StepError(name, "compensate", err))
            if run.log:
                logger.info(
                    "step {step} compensation failed: {error!r}",
                    run_id=context._run_id,  # noqa: SLF001
                    step=name,
                    error=err,
                )


def invoke(
    run: Run, cb: Callback, name: str, value: object, started: float
) -> Generator[object, object, tuple[int, BaseException | None]]:
    """
    Call a compensation, with its retries: ``(attempts, error)``.

    The forward loop inlines the same sequence: it is the hot path, and a
    generator per callback costs more there than the rest of the bookkeeping.
    """
    context = run.context
    attempt = 0
    while True:
        attempt += 1
        context._attempt = attempt  # noqa: SLF001
        err: BaseException | None = None
        try:
            out = cb.call(context, value)
            if cb.is_async:
                run.await_timeout = cb.timeout
                out = yield out
            if type(out) in CONTAINERS:
                _, err = cb.settle(name, out)
        except Exception as exc:  # noqa: BLE001 - any callback error is an outcome
            err = exc
        if err is None or cb.retry is None:
            return attempt, err
        wait = cb.retry.delay(err, attempt, _clock() - started)  # type: ignore[arg-type]
        if wait is None:
            return attempt, err
        yield Sleep(wait)


def drive(gen: Generator[object, object, None], run: Run) -> None:
    """Run *gen* to the end from plain code."""
    try:
        request = gen.send(None)
        while type(request) is Sleep:
            time.sleep(request.seconds)
            request = gen.send(None)
    except StopIteration:
        return
    # An awaitable: run the rest of the run on an event loop.
    rest = drive_async(gen, run, request)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(rest)
        return
    # Called from inside a running loop (which we must not re-enter): block it,
    # and run ours in a helper thread that sees this run's context variables.
    context = contextvars.copy_context()
    with ThreadPoolExecutor(1, thread_name_prefix="choreograph-run") as pool:
        pool.submit(context.run, asyncio.run, rest).result()


_START: Final = object()


async def drive_async(  # noqa: C901
    gen: Generator[object, object, None], run: Run, request: object = _START
) -> None:
    """Run *gen* to the end inside a running event loop."""
    send: Callable[[object], object] = gen.send
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
                        request = gen.throw(run.expiry(by_run))
                        continue
            except Exception as exc:  # noqa: BLE001 - the callback's error, for the loop to judge
                request = gen.throw(exc)
                continue
            request = send(result)
    except StopIteration:
        return


def _limit(run: Run) -> tuple[float | None, bool]:
    """Seconds the awaited callback may take, and whether the run's deadline binds."""
    own = run.await_timeout
    if run.deadline is None:
        return own, False
    left = max(0.0, run.deadline - _monotonic())
    if own is None or left <= own:
        return left, True
    return own, False
