"""
`AsyncExecutor`: runs as tasks of one event loop, at most *workers* at a time.

The loop runs in a daemon thread of its own, started by each `map` call; the
calling thread only collects results, as with `ThreadExecutor`. *workers*
tasks each take the next input when they are free and await its run, so a
slow run holds up only its own task. The window of inputs taken and not yet
yielded is that of `ThreadExecutor` (``2 * workers``, growing by one per
result yielded, up to 1,024 more). The loop is one worker: its runs share
its resources (``ctx.resources``), closed when it stops.

Runs are awaited with `RunJob.run_async`: ``async def`` callbacks of many
runs overlap on the loop; plain callbacks run in the loop's thread and hold
it while they run (a flow of plain callbacks runs one run at a time: use
threads or processes for those).

Closing the iterator, or an interruption of the calling thread
(``KeyboardInterrupt``), stops taking inputs and waits for the runs in
flight; then the loop stops and the interruption goes on (a second one stops
the wait; the loop's thread is a daemon).

`map_async` is the same on the caller's own event loop, for
`Coordinator.run_many_async`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Generator, Iterator
from typing import Any, Final, Generic, TypeVar

from .._core.callbacks import type_name
from .._core.result import RunResult
from . import _window
from .protocol import RunJob

InputT = TypeVar("InputT")

#: ``AsyncExecutor()``'s tasks at once when not told.
DEFAULT_TASKS: Final = 100

#: One run of a job, awaited.
_Awaited = Callable[[InputT, int], Coroutine[Any, Any, RunResult[InputT]]]


def _awaited(job: RunJob[InputT], workers: int) -> _Awaited[InputT] | None:
    """
    What the tasks await for one run: None for a flow of plain callbacks, which runs in the loop's thread.

    A durable coordinator's job may have ``run_together``: with more than one
    task, its runs are awaited side by side even when its callbacks are
    plain, their writes committed together (see
    `choreograph.durable._commits.LoopBatch`); one task alone has no one to
    share a commit with.
    """
    together: _Awaited[InputT] | None = getattr(job, "run_together", None)
    if together is not None and workers > 1:
        return together
    return job.run_async if job.is_async else None


#: What the loop's thread reports: results (a batch of ``(position, result)``), an error, or None when it stopped.
_Report = list[tuple[int, "RunResult[InputT]"]] | BaseException | None


def check_tasks(workers: object) -> int:
    """
    Check a number of tasks at once: ``None`` (the default, 100) or an int >= 1.

    >>> check_tasks(None), check_tasks(8)
    (100, 8)
    """
    if workers is None:
        return DEFAULT_TASKS
    if isinstance(workers, bool) or not isinstance(workers, int):
        msg = f"workers must be an int, got {type_name(workers)}"
        raise TypeError(msg)
    if workers < 1:
        msg = f"workers must be >= 1, got {workers}"
        raise ValueError(msg)
    return workers


class AsyncExecutor:
    """
    Run as up to *workers* concurrent tasks of one event loop, in a thread of its own.

    For flows of ``async def`` callbacks that wait (HTTP calls, queries with
    an async driver): hundreds of runs overlap for the cost of one thread.
    Plain callbacks run in the loop's thread, one at a time.

    Args:
        workers: Runs at once (default: 100).

    .. versionadded:: 0.4.0
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = check_tasks(workers)

    def __repr__(self) -> str:
        return f"AsyncExecutor(workers={self.workers})"

    def map(
        self, job: RunJob[InputT], inputs: Iterator[InputT], *, ordered: bool
    ) -> Generator[RunResult[InputT], None, None]:
        """Yield one result per input (see `Executor.map`); closing the generator stops the loop."""
        pool = _Loop(job, inputs, self.workers)
        pool.start()
        try:
            yield from pool.results(ordered=ordered)
        finally:
            pool.stop()


class _Loop(Generic[InputT]):
    """The event loop of one `AsyncExecutor.map` call, its tasks, and the queue of their reports."""

    def __init__(self, job: RunJob[InputT], inputs: Iterator[InputT], workers: int) -> None:
        self._job, self._inputs, self._workers = job, inputs, workers
        self._window = _window.start(workers)
        self._taken = 0  # inputs taken; written in the loop's thread only
        self._yielded = 0  # results yielded; written by the consumer only
        self._stopping = False
        self._reports: queue.SimpleQueue[_Report[InputT]] = queue.SimpleQueue()
        # Results of async runs go to the consumer in batches, once per turn of the loop, not one by one.
        self._batch: list[tuple[int, RunResult[InputT]]] = []
        self._flushing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._room: asyncio.Event | None = None
        self._waiting = False  # a task waits for room in the window
        # The loop runs in a copy of the caller's context (its context variables), as a run in the caller's would.
        self._thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._serve,), name="choreograph-loop", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def _serve(self) -> None:
        try:
            with self._job.worker():  # the loop's resources are closed when it stops
                asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to the consumer, which raises it
            self._stopping = True
            self._reports.put(exc)
        finally:
            self._reports.put(None)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._room = asyncio.Event()
        tasks = [asyncio.ensure_future(self._work()) for _ in range(self._workers)]
        # Every task ends by itself: at the end of the inputs, on a stop, or on an error (which stops the others).
        try:
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._flush()
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    def _full(self) -> bool:
        """The window is full: the consumer has results to take first."""
        return _window.full(self._taken, self._yielded, self._window)

    async def _work(self) -> None:
        """Take the next input when free (waiting while the window is full), run it, report its result."""
        job, put, batch, inputs = self._job, self._reports.put, self._batch, self._inputs
        run_async = _awaited(job, self._workers)
        try:
            while not self._stopping:
                if self._full():
                    await self._wait_for_room()
                    continue
                try:
                    item = next(inputs)
                except StopIteration:
                    self._stopping = True
                    return
                position = self._taken
                self._taken = position + 1
                if run_async is None:  # plain callbacks: nothing else runs meanwhile, so no batch to wait for
                    put([(position, job.run(item, position))])
                    continue
                batch.append((position, await run_async(item, position)))
                if not self._flushing:
                    self._flushing = True
                    asyncio.get_running_loop().call_soon(self._flush)
        except BaseException:
            self._stopping = True  # the other tasks take nothing more
            self._make_room()
            raise

    async def _wait_for_room(self) -> None:
        room = self._room
        assert room is not None  # noqa: S101 - made before the tasks start
        self._waiting = True  # before looking again: a result yielded from now on wakes us
        if self._full() and not self._stopping:
            room.clear()
            await room.wait()

    def _flush(self) -> None:
        """Hand the results of this turn of the loop to the consumer."""
        self._flushing = False
        if self._batch:
            self._reports.put(self._batch[:])
            self._batch.clear()

    def _make_room(self) -> None:
        """Wake the tasks waiting for room in the window (in the loop's thread)."""
        self._waiting = False
        if self._room is not None:
            self._room.set()

    def _wake(self) -> None:
        """Wake the tasks waiting for room, from the consumer's thread."""
        self._waiting = False  # once is enough: a task that waits again from now on is woken by this wake too
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(self._make_room)

    def results(self, *, ordered: bool) -> Iterator[RunResult[InputT]]:
        """Yield the results as they come (or in input order), until the loop stopped."""
        order: Order[InputT] = Order(ordered=ordered)
        while True:
            report = self._reports.get()
            if report is None:
                return
            if isinstance(report, BaseException):
                raise report
            for position, done in report:
                for result in order.add(position, done):
                    self._yielded += 1
                    if self._waiting:
                        self._wake()
                    yield result

    def stop(self) -> None:
        """Stop taking inputs and wait for the runs in flight (a second interruption stops the wait)."""
        self._stopping = True
        self._wake()
        self._thread.join()


class Order(Generic[InputT]):
    """Results in the order to yield them: as they come, or in input order (holding back those that come early)."""

    __slots__ = ("_following", "_held", "_ordered")

    def __init__(self, *, ordered: bool) -> None:
        self._ordered = ordered
        self._held: dict[int, RunResult[InputT]] = {}
        self._following = 0

    def add(self, position: int, result: RunResult[InputT]) -> list[RunResult[InputT]]:
        """
        The results to yield now that *result*, of input *position*, came.

        >>> order = Order(ordered=True)
        >>> order.add(1, "b"), order.add(0, "a"), order.add(2, "c")
        ([], ['a', 'b'], ['c'])
        """
        if not self._ordered:
            return [result]
        held = self._held
        held[position] = result
        now: list[RunResult[InputT]] = []
        while self._following in held:
            now.append(held.pop(self._following))
            self._following += 1
        return now


class _Here(Generic[InputT]):
    """The runs of one `map_async` call: tasks of the running loop, started as slots free up."""

    def __init__(self, job: RunJob[InputT], inputs: Iterator[InputT] | AsyncIterator[InputT], workers: int) -> None:
        self._job, self._workers = job, workers
        self._run_async = _awaited(job, self._workers)
        self._async_inputs = inputs if isinstance(inputs, AsyncIterator) else None
        self._inputs = inputs if self._async_inputs is None else None
        self._loop = asyncio.get_running_loop()
        self.running: dict[asyncio.Task[RunResult[InputT]], int] = {}
        self._done: deque[asyncio.Task[RunResult[InputT]]] = deque()
        self.ready: deque[tuple[int, RunResult[InputT]]] = deque()
        self._wake: asyncio.Future[None] | None = None
        self._taken = 0
        self.yielded = 0
        self._exhausted = False

    async def _take(self) -> tuple[int, InputT] | None:
        """The next input and its position, if a slot is free, the window has room and there is one."""
        if self._exhausted or len(self.running) >= self._workers:
            return None
        if _window.full(self._taken, self.yielded, _window.start(self._workers)):
            return None
        try:
            if self._async_inputs is not None:
                item = await anext(self._async_inputs)
            else:
                item = next(self._inputs)  # type: ignore[arg-type]  # one of them is set
        except (StopIteration, StopAsyncIteration):
            self._exhausted = True
            return None
        position = self._taken
        self._taken = position + 1
        return position, item

    def _finished(self, task: asyncio.Task[RunResult[InputT]]) -> None:
        self._done.append(task)
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def step(self) -> bool:
        """Start runs while there is room, then wait until a result is ready; False when every run ended."""
        while True:
            while (taken := await self._take()) is not None:
                position, item = taken
                if self._run_async is not None:
                    task = self._loop.create_task(self._run_async(item, position))
                    self.running[task] = position
                    task.add_done_callback(self._finished)
                else:  # plain callbacks: run here, in the loop's thread
                    self.ready.append((position, self._job.run(item, position)))
            while self._done:
                task = self._done.popleft()
                self.ready.append((self.running.pop(task), task.result()))
            if self.ready:
                return True
            if self._exhausted and not self.running:
                return False
            self._wake = self._loop.create_future()
            await self._wake

    async def close(self) -> None:
        """Wait for the runs in flight; cancelling this wait leaves them running."""
        if self.running:
            await asyncio.wait(self.running)


async def map_async(
    job: RunJob[InputT], inputs: Iterator[InputT] | AsyncIterator[InputT], workers: int, *, ordered: bool
) -> AsyncGenerator[RunResult[InputT], None]:
    """
    Run *job* once per input as tasks of the running event loop, at most *workers* at a time; yield the results.

    Inputs are taken only while the generator runs (between the results it
    yields), when a task is free and the window has room, so a consumer that
    stops iterating stops the taking. Closing the generator (``aclose()``)
    waits for the runs in flight; so does its cancellation, which then goes on.
    """
    here = _Here(job, inputs, workers)
    order: Order[InputT] = Order(ordered=ordered)
    try:
        while await here.step():
            while here.ready:
                for result in order.add(*here.ready.popleft()):
                    here.yielded += 1
                    yield result
    finally:
        await here.close()
