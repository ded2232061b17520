"""`ThreadExecutor`: runs on a pool of threads, inputs in batches sized to the runs' duration."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Final, Generic, TypeVar

from .._core.callbacks import type_name
from .._core.result import RunResult
from .protocol import RunJob

InputT = TypeVar("InputT")

_Batch = Future[tuple[list[RunResult[InputT]], float]]


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
    Run on a pool of *workers* threads (the default executor of `Coordinator.run_many`).

    A task per input costs a pool round trip (tens of microseconds), more than
    a short run itself; so inputs go to the pool in batches, run one after the
    other, sized so that a task lasts about `TASK_SECONDS`. Batches start at
    one input and grow (up to `MAX_BATCH`) only while runs are short, so slow
    runs still spread over every worker. At most two tasks per worker are in
    flight. When the flow has ``async def`` callbacks, a batch runs on one
    event loop instead of starting a loop per run.

    Args:
        workers: Threads (default: ``min(32, cpu_count + 4)``).

    .. versionadded:: 0.2.0
    """

    TASK_SECONDS: Final = 0.002
    MAX_BATCH: Final = 256

    def __init__(self, workers: int | None = None) -> None:
        self.workers = check_workers(workers)

    def __repr__(self) -> str:
        return f"ThreadExecutor(workers={self.workers})"

    def map(
        self, job: RunJob[InputT], inputs: Iterator[InputT], *, ordered: bool
    ) -> Generator[RunResult[InputT], None, None]:
        """Yield one result per input (see `Executor.map`); closing the generator shuts the pool down."""
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="choreograph")
        batches = _Batches(job, inputs, self.TASK_SECONDS, self.MAX_BATCH)
        try:
            if ordered:
                yield from batches.ordered(pool, 2 * self.workers)
            else:
                yield from batches.unordered(pool, 2 * self.workers)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


class _Batches(Generic[InputT]):
    """Feed a pool with batches of inputs, and read their results back."""

    def __init__(self, job: RunJob[InputT], inputs: Iterator[InputT], task_seconds: float, max_batch: int) -> None:
        self._job, self._inputs = job, inputs
        self._task_seconds, self._max_batch = task_seconds, max_batch
        self._size = 1

    def _task(self, items: list[InputT]) -> tuple[list[RunResult[InputT]], float]:
        started = time.perf_counter()
        job = self._job
        results = asyncio.run(self._on_one_loop(items)) if job.is_async else [job.run(item) for item in items]
        return results, time.perf_counter() - started

    async def _on_one_loop(self, items: list[InputT]) -> list[RunResult[InputT]]:
        return [await self._job.run_async(item) for item in items]

    def _submit(self, pool: ThreadPoolExecutor) -> _Batch[InputT] | None:
        items = list(itertools.islice(self._inputs, self._size))
        return pool.submit(self._task, items) if items else None

    def _results(self, future: _Batch[InputT]) -> list[RunResult[InputT]]:
        results, seconds = future.result()
        per_run = seconds / len(results)
        fits = int(self._task_seconds / per_run) if per_run else self._max_batch
        self._size = max(1, min(self._max_batch, fits))
        return results

    def ordered(self, pool: ThreadPoolExecutor, window: int) -> Iterator[RunResult[InputT]]:
        """Yield results in input order."""
        queue: deque[_Batch[InputT]] = deque()
        while True:
            while len(queue) < window and (future := self._submit(pool)) is not None:
                queue.append(future)
            if not queue:
                return
            yield from self._results(queue.popleft())

    def unordered(self, pool: ThreadPoolExecutor, window: int) -> Iterator[RunResult[InputT]]:
        """Yield results as their batches complete."""
        pending: set[_Batch[InputT]] = set()
        while True:
            while len(pending) < window and (future := self._submit(pool)) is not None:
                pending.add(future)
            if not pending:
                return
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for finished in done:
                yield from self._results(finished)
