"""
Calling one callback: its attempts, awaits, time limits and the waits between retries.

`call` is shared by prechecks, jobs and compensations. It is a generator: it
yields an `Await` for an ``async def`` callback and a `Sleep` between
attempts, and returns a `Called`. It decides nothing about the run: what the
result means is `choreograph._core.outcome`'s business.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any, Final

from .._errors import CallbackTimeout
from . import record
from .callbacks import CONTAINERS, Callback, unwrap
from .context import Context, point_to
from .drivers import Await, Expired, Sleep
from .state import RunState

_clock: Final = time.perf_counter
_monotonic: Final = time.monotonic


class Called:
    """
    What calling a callback gave.

    Attributes:
        output: Its output (unwrapped from a ``returns`` container), if it succeeded.
        error: Its error, if it failed (`CallbackTimeout` and `UnassignableOutput` included).
        attempts: How many times it was called, earlier sessions' attempts included.
        expired: The run's timeout expired while it was awaited (it was cancelled).
    """

    __slots__ = ("attempts", "error", "expired", "output")

    def __init__(self, output: object, error: BaseException | None, attempts: int, *, expired: bool = False) -> None:
        self.output, self.error, self.attempts, self.expired = output, error, attempts, expired


def call(
    run: RunState,
    ctx: Context[Any] | None,
    cb: Callback,
    step: str,
    started: float,
    attempts: int = 0,
    first: tuple[object, BaseException | None] | None = None,
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
    """
    role = cb.role
    deadline = run.deadline
    while True:
        attempts += 1
        if first is None:
            if ctx is not None:
                point_to(ctx, step, role, attempts)
            record.started(run, step, role, attempts)
            out, err = yield from _once(run, ctx, cb, step, deadline)
            if err is _EXPIRED:
                return Called(None, None, attempts, expired=True)
        else:
            (out, err), first = first, None
        if err is None:
            out, err = settle(run, cb, step, out)
        if err is None or cb.retry is None:
            return Called(out, err, attempts)
        wait = cb.retry.delay(err, attempts, _clock() - started)  # type: ignore[arg-type]  # an Exception
        if wait is None or (deadline is not None and _monotonic() + wait >= deadline):
            return Called(out, err, attempts)
        yield Sleep(wait)


#: `_once`'s error when the run's timeout expired during the await.
_EXPIRED: Final = Expired(by_run=True)


def _once(
    run: RunState, ctx: Context[Any] | None, cb: Callback, step: str, deadline: float | None
) -> Generator[object, object, tuple[object, BaseException | None]]:
    """One attempt: ``(return value, error)``; the error is `_EXPIRED` if the run's timeout cut it off."""
    began = _clock() if cb.timeout is not None else 0.0
    try:
        out = cb.call(ctx, run.input)
        if cb.is_async:
            return (yield Await(out, cb.timeout, deadline)), None  # type: ignore[arg-type]  # an awaitable
        if cb.timeout is not None and _clock() - began > cb.timeout:
            return None, CallbackTimeout(step, cb.role, cb.timeout)
    except Expired as expired:
        if expired.by_run:
            return None, _EXPIRED
        return None, CallbackTimeout(step, cb.role, cb.timeout or 0.0)
    except Exception as exc:  # noqa: BLE001 - any callback error is an outcome
        return None, exc
    return out, None


def settle(run: RunState, cb: Callback, step: str, out: object) -> tuple[object, BaseException | None]:
    """
    Unwrap and check a callback's return value: ``(output, error)``.

    A compensation's output is never stored, so it is not checked: only a
    ``returns`` container it returns is looked at (a ``Failure`` fails it).
    """
    err: BaseException | None = None
    check = cb.check_output
    if cb.role == "compensate":
        return unwrap(out)
    if check is None:
        if type(out) in CONTAINERS:
            out, err = cb.settle(step, out)
    elif not check(out):
        out, err = cb.settle(step, out)
    if err is None and run.recorder is not None and cb.has_output:
        err = run.recorder.check_output(step, cb.role, out)
    return out, err
