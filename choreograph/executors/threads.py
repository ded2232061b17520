"""
`ThreadExecutor`: runs on daemon worker threads that each take the next input when they are free.

Each worker takes one input at a time from the shared input iterator, so a
slow run holds up only its own worker: the others go on with the next
inputs. At most ``2 * workers`` inputs are taken and not yet yielded at
first (the window); the window grows by one per result yielded, up to
1,024 more, so memory stays bounded whatever the stream. A flow with
``async def`` callbacks runs each worker's runs on one event loop of its own,
instead of starting a loop per run. Each thread is a worker: the resources
its runs create (``ctx.resources``) are its own, closed when it ends.

The calling thread only collects results. When it is interrupted
(``KeyboardInterrupt``), or closes the iterator, the workers stop taking
inputs, the runs in flight finish, and then the interruption goes on; a
second interruption while waiting stops waiting. The workers are daemon
threads: none of them keeps the process alive.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import queue
import threading
import time
from collections.abc import Generator, Iterator
from typing import Final, Generic, TypeVar

from .._core.callbacks import type_name
from .._core.result import RunResult
from . import _window
from .protocol import RunJob

InputT = TypeVar("InputT")

#: What a worker reports: ``(position, result)``, ``(position, error)``, or `_DONE` when it stops.
_Report = tuple[int, "RunResult[InputT] | BaseException"]
_DONE: Final = (-1, None)

#: Seconds a worker waits before looking again when the window is full.
_FULL: Final = 0.0005


def default_workers() -> int:
    """``min(32, cpu_count + 4)``, as `concurrent.futures.ThreadPoolExecutor` chooses."""
    return min(32, (os.cpu_count() or 1) + 4)


def check_workers(workers: object) -> int:
    """
    Check a number of workers: ``None`` (the default) or an int >= 1.

    >>> check_workers(3)
    3
    """
    if workers is None:
        return default_workers()
    if isinstance(workers, bool) or not isinstance(workers, int):
        msg = f"workers must be an int, got {type_name(workers)}"
        raise TypeError(msg)
    if workers < 1:
        msg = f"workers must be >= 1, got {workers}"
        raise ValueError(msg)
    return workers


class ThreadExecutor:
    """
    Run on *workers* threads (the default executor of `Coordinator.run_many`).

    Args:
        workers: Threads (default: ``min(32, cpu_count + 4)``).

    .. versionadded:: 0.2.0
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = check_workers(workers)

    def __repr__(self) -> str:
        return f"ThreadExecutor(workers={self.workers})"

    def map(
        self, job: RunJob[InputT], inputs: Iterator[InputT], *, ordered: bool
    ) -> Generator[RunResult[InputT], None, None]:
        """Yield one result per input (see `Executor.map`); closing the generator stops the workers."""
        pool = _Pool(job, inputs, self.workers, _window.start(self.workers))
        pool.start()
        try:
            yield from pool.results(ordered=ordered)
        finally:
            pool.stop()


class _Pool(Generic[InputT]):
    """The workers of one `ThreadExecutor.map` call, and the queue of their reports."""

    def __init__(self, job: RunJob[InputT], inputs: Iterator[InputT], workers: int, window: int) -> None:
        self._job, self._inputs, self._window = job, inputs, window
        self._taking = threading.Lock()  # one worker at a time takes from the input iterator
        self._taken = 0  # inputs taken (the next input's position); written under `_taking`
        self._yielded = 0  # results yielded; written by the consumer only
        self._stopping = threading.Event()
        self._reports: queue.SimpleQueue[_Report[InputT] | tuple[int, None]] = queue.SimpleQueue()
        # Each worker runs in a copy of the caller's context (its context variables: an
        # OpenTelemetry span, a request id), as a call of `run` in the caller's thread would.
        self._threads = [
            threading.Thread(
                target=contextvars.copy_context().run, args=(self._work,), name=f"choreograph-{index}", daemon=True
            )
            for index in range(workers)
        ]
        self._running = 0

    def start(self) -> None:
        for thread in self._threads:
            thread.start()
        self._running = len(self._threads)

    def _take(self) -> tuple[int, InputT] | None:
        """The next input and its position, or None when there is none or the pool stops."""
        while True:
            with self._taking:
                if self._stopping.is_set():
                    return None
                if not _window.full(self._taken, self._yielded, self._window):  # see `_window`
                    try:
                        item = next(self._inputs)
                    except StopIteration:
                        self._stopping.set()
                        return None
                    position = self._taken
                    self._taken = position + 1
                    return position, item
            time.sleep(_FULL)  # the window is full: the consumer has results to take first

    def _work(self) -> None:
        try:
            with self._job.worker():  # the thread's resources are closed when it ends
                if self._job.is_async:
                    asyncio.run(self._work_async())
                else:
                    run = self._job.run
                    while (taken := self._take()) is not None:
                        self._reports.put((taken[0], run(taken[1], taken[0])))
        except BaseException as exc:  # noqa: BLE001 - reported to the consumer, which raises it
            self._stopping.set()
            self._reports.put((-1, exc))
        finally:
            self._reports.put(_DONE)

    async def _work_async(self) -> None:
        run = self._job.run_async
        while (taken := self._take()) is not None:
            self._reports.put((taken[0], await run(taken[1], taken[0])))

    def results(self, *, ordered: bool) -> Iterator[RunResult[InputT]]:
        """Yield the results as they come (or in input order), until every worker stopped."""
        waiting: dict[int, RunResult[InputT]] = {}
        following = 0
        while self._running:
            position, report = self._reports.get()
            if report is None:
                self._running -= 1
                continue
            if isinstance(report, BaseException):
                raise report
            if not ordered:
                self._yielded += 1
                yield report
                continue
            waiting[position] = report
            while following in waiting:
                self._yielded += 1
                yield waiting.pop(following)
                following += 1

    def stop(self) -> None:
        """Stop taking inputs and wait for the runs in flight (a second interruption stops the wait)."""
        self._stopping.set()
        for thread in self._threads:
            thread.join()
