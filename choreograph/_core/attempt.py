"""
Calling one callback: its attempts, awaits, time limits and the waits between retries.

`call` is shared by prechecks, jobs and compensations. It is a generator: it
yields an `Await` for an ``async def`` callback and a `Sleep` between
attempts, and returns a `Called` tuple. It decides nothing about the run: what the
result means is `choreograph._core.outcome`'s business.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Generator
from typing import Any, Final

from .._errors import CallbackTimeout
from . import record
from .callbacks import CONTAINERS, Callback, unwrap
from .context import Context, point_to, runs_here
from .drivers import Await, Expired, Offload, Sleep, Slots
from .state import RunState

_clock: Final = time.perf_counter
_monotonic: Final = time.monotonic


#: What calling a callback gave: ``(output, error, attempts, expired)``. The output is unwrapped
#: from a ``returns`` container when it succeeded; *error* includes `CallbackTimeout` and
#: `UnassignableOutput`; *attempts* counts earlier sessions' attempts too; *expired* says the
#: run's timeout cut an await off (the callback was cancelled). A tuple: one is made per callback.
Called = tuple[object, BaseException | None, int, bool]


def call(  # noqa: C901, PLR0912 - the attempt loop of every callback form: one frame per callback
    run: RunState,
    ctx: Context[Any] | None,
    cb: Callback,
    step: str,
    started: float,
    attempts: int = 0,
    first: tuple[object, BaseException | None] | None = None,
    slots: Slots | None = None,
) -> Generator[object, object, Called]:
    """
    Call *cb* until it succeeds or its retry policy gives up.

    Args:
        run: The run it belongs to.
        ctx: The context to pass (``None`` when no callback takes one).
        cb: The callback.
        step: Its step's name.
        started: `time.perf_counter` when its first attempt started.
        attempts: Attempts made before (by earlier sessions of a durable run).
        first: The first attempt's ``(output, error)``, when the fast path made it.
        slots: The group's slots, when the callback is a branch's: a plain
            one's attempts are then made on a worker thread (see `Offload`).
    """
    deadline = run.deadline
    while True:
        attempts += 1
        if first is not None:
            (out, err), first = first, None
            if err is None:
                out, err = accept(run, cb, step, out)
        elif not cb.is_async:
            if ctx is not None or run.emit is not None:
                announce(run, ctx, cb, step, attempts)
            if slots is None:
                out, err = once(run, ctx, cb, step)
            else:
                out, err = yield Offload(offloaded(run, ctx, cb, step), slots)  # type: ignore[misc]
        else:
            announce(run, ctx, cb, step, attempts)
            out = err = None
            try:
                out = yield Await(cb.call(ctx, run.input), cb.timeout, deadline)  # type: ignore[arg-type]
            except Expired as expired:
                if expired.by_run:
                    return None, None, attempts, True
                err = CallbackTimeout(step, cb.role, cb.timeout or 0.0)  # pragma: no mutate - timeout > 0
            except Exception as exc:  # noqa: BLE001 - any callback error is an outcome
                err = exc
            if err is None:
                out, err = accept(run, cb, step, out)
        if err is None or cb.retry is None:
            return out, err, attempts, False
        wait = cb.retry.delay(err, attempts, _clock() - started)  # type: ignore[arg-type]  # an Exception
        # pragma: no mutate start - `>`: differs only when the wait ends exactly at the deadline
        if wait is None or (deadline is not None and _monotonic() + wait >= deadline):
            # pragma: no mutate end
            return out, err, attempts, False
        yield Sleep(wait)


def announce(run: RunState, ctx: Context[Any] | None, cb: Callback, step: str, attempt: int) -> None:
    """An attempt starts: point the context at it, and tell the listeners."""
    if ctx is not None:
        point_to(ctx, step, cb.role, attempt)
    if run.emit is not None:
        record.started(run, step, cb.role, attempt)


def offloaded(
    run: RunState, ctx: Context[Any] | None, cb: Callback, step: str
) -> Callable[[], tuple[object, BaseException | None]]:
    """
    An attempt of a branch's plain callback, to make on a worker thread (announced already).

    It runs in a copy of the caller's context variables, as
    `asyncio.to_thread` does, with the run as the thread's current run (for
    `get_data_bag`).
    """
    context = contextvars.copy_context()

    def attempt_there() -> tuple[object, BaseException | None]:
        return context.run(_attempt_here, run, ctx, cb, step)

    return attempt_there


def _attempt_here(
    run: RunState, ctx: Context[Any] | None, cb: Callback, step: str
) -> tuple[object, BaseException | None]:
    here = runs_here()
    here.append(run)
    try:
        return once(run, ctx, cb, step)
    finally:
        here.pop()


def once(run: RunState, ctx: Context[Any] | None, cb: Callback, step: str) -> tuple[object, BaseException | None]:
    """
    One attempt of a plain callback: ``(output, error)``, its output unwrapped and checked (see `accept`).

    The caller announced the attempt (see `announce`). The run loop calls
    it directly for a plain callback without retries (most of them), which
    spares a generator per callback.
    """
    began = _clock() if cb.timeout is not None else 0.0  # pragma: no mutate - unused without a timeout
    try:
        out = cb.call(ctx, run.input)
    except Exception as exc:  # noqa: BLE001 - any callback error is an outcome
        return None, exc
    if cb.timeout is not None and _clock() - began > cb.timeout:  # pragma: no mutate - `>=`: only at equality
        return None, CallbackTimeout(step, cb.role, cb.timeout)
    # pragma: no mutate start - only picks the fast way: what it passes over goes to `accept`, which decides
    # the same (a compensation has no output check); the one mutant that isn't equivalent (`check(None)`) is
    # killed by tests/test_callback_outcomes.py
    check = cb.check_output
    if check is not None and cb.role != "compensate" and check(out):  # the common case of `accept`, inline
        # pragma: no mutate end
        return out, (run.recorder.check_output(step, cb.role, out) if cb.has_output and run.recorder else None)
    return accept(run, cb, step, out)


def accept(run: RunState, cb: Callback, step: str, out: object) -> tuple[object, BaseException | None]:
    """A callback's return value as its output, or the error it makes: the common case here, the rest in `settle`."""
    check = cb.check_output
    # pragma: no mutate start - only picks the fast way: `settle` decides the same for any output it is given
    if cb.role == "compensate" or (check is None and type(out) in CONTAINERS) or not (check is None or check(out)):
        # pragma: no mutate end
        return settle(run, cb, step, out)
    if cb.has_output and run.recorder is not None:
        return out, run.recorder.check_output(step, cb.role, out)
    return out, None


def settle(run: RunState, cb: Callback, step: str, out: object) -> tuple[object, BaseException | None]:
    """
    Unwrap and check a callback's return value: ``(output, error)``.

    A compensation's output is never stored, so it is not checked: only a
    ``returns`` container it returns is looked at (a ``Failure`` fails it).
    """
    if cb.role == "compensate":
        return unwrap(out)
    err: BaseException | None = None
    check = cb.check_output
    if check is None:
        if type(out) in CONTAINERS:
            out, err = cb.settle(step, out)
    elif not check(out):
        out, err = cb.settle(step, out)
    recorder = run.recorder
    if recorder is not None and err is None and cb.has_output:
        err = recorder.check_output(step, cb.role, out)
    return out, err
