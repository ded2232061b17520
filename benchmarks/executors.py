"""
Executors against their baselines, measured in the same run.

1. CPU-bound flows: 1,000 records through a step of about 1 ms of pure-Python work, on
   ``executor="processes"`` (as many workers as CPUs, at most 2 by default) against a plain
   loop of ``run()``. The first batch of a process also starts the forkserver (reported
   apart); the ratio is that of the batches after it. Target: >= 1.8x on 2 cores. For what
   the machine allows at the time, the same work on a stdlib ``ProcessPoolExecutor`` with
   as many workers, started beforehand, its records sent in chunks.
2. Waiting flows: records whose ``async def`` step awaits 5 ms, on ``executor="async"`` with
   64 and 256 workers, against the ideal (records x 5 ms / workers), against
   ``asyncio.gather`` of ``run_async`` under a semaphore of as many, and against the same
   sleeps with no flow at all (what the event loop itself reaches on this machine, its
   ceiling). Target: >= 0.85 of the ideal. Results are taken as they come and dropped, as a
   long batch is consumed (kept in a list, 10,240 results cost the garbage collector's full
   collections about as much as the flow itself, whatever runs them).

Each figure is the best of 5 rounds (1 with ``--quick``), the ways alternating within each round, which
filters out most of the noise of a shared machine; each line ends with the load average when it was
measured. Run: ``python benchmarks/executors.py [--quick] [--strict]`` (``--strict``: exit 1 when a
target is missed).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from functools import partial

from choreograph import Coordinator, RunResult, Step
from choreograph.executors import ProcessExecutor

TARGET_PROCESSES = 1.8
TARGET_ASYNC = 0.85
WAIT = 0.005


def spin(iterations: int) -> int:
    total = 0
    for i in range(iterations):
        total += i * i
    return total


def burn(iterations: int, x: int) -> int:
    """About a millisecond of pure-Python work: *iterations* of `spin` (see `calibrate`; bound with a partial)."""
    spin(iterations)
    return x


def calibrate() -> int:
    """The iterations of `spin` that take 1 ms on this machine (from the best of a few runs of 20 ms or so)."""
    iterations = 200_000
    best = min(timed(lambda: spin(iterations)) for _ in range(7))
    return max(1, int(iterations * 0.001 / best))


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def drained(results: Iterable[object]) -> None:
    """Take every result as it comes, keeping none."""
    collections.deque(results, maxlen=0)


def load() -> str:
    """The load average of the last minute, for the reader to judge a figure by."""
    return f"load {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "load unknown"


#: The flow of a hand-written process pool's workers (see `pooled`), made by `make_pooled` in each.
_POOLED: list[Coordinator[int]] = []


def make_pooled(iterations: int) -> None:
    _POOLED.append(Coordinator[int]([Step("burn", partial(burn, iterations))]))


def pooled(x: int) -> RunResult[int]:
    """A hand-written process pool's task: the same flow's ``run()``, its result pickled back."""
    return _POOLED[0].run(x)


def processes(records: int, rounds: int, workers: int) -> float:
    iterations = calibrate()
    flow = Coordinator[int]([Step("burn", partial(burn, iterations))])  # a partial of a function pickles
    inputs = list(range(records))
    executor = ProcessExecutor(workers)
    cold = timed(lambda: drained(flow.run_many(inputs, executor=executor)))
    # What the machine allows now: the same flow's run() on a stdlib process pool of as many workers,
    # started beforehand, the records sent in chunks, each result pickled back.
    context = multiprocessing.get_context(executor.start_method)
    chunk = records // (4 * workers) or 1
    with ProcessPoolExecutor(workers, mp_context=context, initializer=make_pooled, initargs=(iterations,)) as pool:
        drained(pool.map(pooled, range(workers)))  # started before the timing
        times = [
            (
                timed(lambda: drained(flow.run(x) for x in inputs)),
                timed(lambda: drained(flow.run_many(inputs, executor=executor))),
                timed(lambda: drained(pool.map(pooled, inputs, chunksize=chunk))),
            )
            for _ in range(rounds)
        ]
    loop = min(time[0] for time in times)
    best = min(time[1] for time in times)
    bare = min(time[2] for time in times)
    ratio = loop / best
    print(
        f"CPU-bound, {records} records x {loop / records * 1e3:.2f} ms   loop of run() {loop:6.3f} s"
        f" | processes ({workers} workers) {best:6.3f} s: ratio {ratio:.2f} (target >= {TARGET_PROCESSES})"
        f" | first batch, forkserver start included {cold:6.3f} s: ratio {loop / cold:.2f}"
        f" | ProcessPoolExecutor.map of run(), chunked {bare:6.3f} s: ratio {loop / bare:.2f} | {load()}"
    )
    return ratio


async def wait(x: int) -> int:
    await asyncio.sleep(WAIT)
    return x


def waiting(workers: int, per_worker: int, rounds: int) -> float:
    flow = Coordinator[int]([Step("wait", wait)])
    count = workers * per_worker
    inputs = list(range(count))
    ideal = count * WAIT / workers

    async def gathered() -> None:
        gate = asyncio.Semaphore(workers)

        async def one(x: int) -> None:
            async with gate:
                await flow.run_async(x)

        await asyncio.gather(*(one(x) for x in inputs))

    async def bare() -> None:
        left = iter(inputs)

        async def worker() -> None:
            for x in left:
                await wait(x)

        await asyncio.gather(*(worker() for _ in range(workers)))

    times: list[tuple[float, float, float]] = [
        (
            timed(lambda: drained(flow.run_many(inputs, executor="async", workers=workers))),
            timed(lambda: asyncio.run(gathered())),
            timed(lambda: asyncio.run(bare())),
        )
        for _ in range(rounds)
    ]
    ours = min(time[0] for time in times)
    gather = min(time[1] for time in times)
    floor = min(time[2] for time in times)
    ratio = ideal / ours
    print(
        f"async 5 ms steps, {workers:3} workers, {count:5} records  ideal {ideal:5.3f} s | executor='async'"
        f" {ours:5.3f} s: ratio {ratio:.2f} of ideal (target >= {TARGET_ASYNC}) | gather+semaphore {gather:5.3f} s"
        f" ({ideal / gather:.2f}) | bare sleeps, no flow {floor:5.3f} s ({ideal / floor:.2f}) | {load()}"
    )
    return ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="fewer records and rounds")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    options = parser.parse_args()
    rounds = 1 if options.quick else 5
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, best of {rounds} rounds")
    cpu = processes(200 if options.quick else 1_000, rounds, options.workers)
    per_worker = 10 if options.quick else 40
    ratios = [waiting(workers, per_worker, rounds) for workers in (64, 256)]
    met = cpu >= TARGET_PROCESSES and all(ratio >= TARGET_ASYNC for ratio in ratios)
    print(
        f"targets: processes >= {TARGET_PROCESSES}x a loop, async >= {TARGET_ASYNC} of ideal:"
        f" {'met' if met else 'MISSED'}"
    )
    return 1 if options.strict and not met else 0


if __name__ == "__main__":
    sys.exit(main())
