"""
Serving a run loop: from plain code (`drive`) or from inside an event loop (`drive_async`).

A run loop is a generator that yields only what it cannot do itself: an
`Await` (an ``async def`` callback's awaitable, with its time limits) or a
`Sleep` (the wait between retry attempts, or while another process holds a
durable key). A run whose callbacks are all plain finishes on the first
``send`` and never touches asyncio.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Generator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

_monotonic: Final = time.monotonic

#: A run loop: yields requests (`Await`, `Sleep`) to its driver, returns when the run ends.
Loop = Generator[object, object, Any]


class Sleep:
    """A request to the driver: wait this long."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class Await:
    """
    A request to the driver: await *awaitable* and send its result back.

    Attributes:
        awaitable: What an ``async def`` callback returned.
        timeout: Seconds the callback may take (its step's timeout), if limited.
        deadline: ``time.monotonic()`` at which the run's timeout expires, if any.
    """

    __slots__ = ("awaitable", "deadline", "timeout")

    def __init__(self, awaitable: Awaitable[object], timeout: float | None, deadline: float | None) -> None:
        self.awaitable, self.timeout, self.deadline = awaitable, timeout, deadline

    def limit(self) -> tuple[float | None, bool]:
        """Seconds the await may take, and whether the run's deadline (not the step's timeout) binds."""
        if self.deadline is None:
            return self.timeout, False
        left = max(0.0, self.deadline - _monotonic())
        if self.timeout is None or left <= self.timeout:
            return left, True
        return self.timeout, False


class Expired(BaseException):
    """
    Thrown into the run loop when an awaited callback ran out of time.

    A `BaseException`, so that no callback's ``except Exception`` swallows it.

    Attributes:
        by_run: The run's timeout expired (else the step's timeout did).
    """

    def __init__(self, by_run: bool) -> None:  # noqa: FBT001
        super().__init__(by_run)
        self.by_run = by_run


def drive(loop: Loop) -> Any:
    """Run *loop* to the end from plain code, and return what it returns."""
    try:
        request = loop.send(None)
        while type(request) is Sleep:
            time.sleep(request.seconds)
            request = loop.send(None)
    except StopIteration as stop:
        return stop.value
    # An awaitable: run the rest of the run on an event loop.
    rest = drive_async(loop, request)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(rest)
    # Called from inside a running event loop, which must not be re-entered:
    # block it, and run ours in a helper thread that sees this run's context.
    context = contextvars.copy_context()
    with ThreadPoolExecutor(1, thread_name_prefix="choreograph-run") as pool:
        return pool.submit(context.run, asyncio.run, rest).result()


_START: Final = object()


async def drive_async(loop: Loop, request: object = _START) -> Any:
    """Run *loop* to the end inside a running event loop, and return what it returns."""
    send = loop.send
    try:
        if request is _START:
            request = send(None)
        while True:
            if type(request) is Sleep:
                await asyncio.sleep(request.seconds)
                request = send(None)
                continue
            assert type(request) is Await  # noqa: S101 - a run loop yields nothing else
            limit, by_run = request.limit()
            try:
                if limit is None:
                    result = await request.awaitable
                else:
                    scope = asyncio.timeout(limit)
                    try:
                        async with scope:
                            result = await request.awaitable
                    except TimeoutError:
                        if not scope.expired():
                            raise
                        request = loop.throw(Expired(by_run))
                        continue
            except Exception as exc:  # noqa: BLE001 - the callback's error, for the loop to judge
                request = loop.throw(exc)
                continue
            request = send(result)
    except StopIteration as stop:
        return stop.value
