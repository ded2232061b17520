"""
`DaskExecutor` against a plain loop, and the calling process's memory over a million inputs.

1. CPU-bound flows: 1,000 records through a step of about 1 ms of pure-Python work, on
   ``DaskExecutor`` with a ``LocalCluster`` of 2 worker processes of 1 thread each, against a
   plain loop of ``run()`` in the calling process. The cluster is started beforehand (its start
   is reported apart), as a real cluster would be. Target: >= 1.6x on 2 cores (the scheduler
   runs in the calling process and takes its share of them). For what the machine allows at
   the time, the same batches on ``executor="processes"`` with 2 workers, at the same moments.
2. Memory: 1,000,000 inputs (``--records``), taken lazily from a generator, through
   ``DaskExecutor`` on the same cluster, the results dropped as they come: the resident memory
   of the calling process after 100,000 results and at the end. Target: the end within 1.1x
   of the first figure (flat: the window bounds what is held, whatever the number of inputs).
   Dask keeps the last messages of each connection for its developers, the chunks' inputs in
   them, up to ``distributed.admin.low-level-log-length`` (1,000) messages each; a LocalCluster's
   scheduler lives in the calling process, so both ends' logs count here. The run sets it to 0
   (``--dask-log`` to change it), as docs/guide/dask.md advises for long batches.

Each CPU figure is the best of 5 rounds (1 with ``--quick``), loop and executor alternating, which
filters out most of the noise of a shared machine. ``--quick`` runs 200 records and 20,000 inputs.
Run: ``python benchmarks/dask_executor.py [--quick] [--strict] [--records N]`` (``--strict``: exit 1
when a target is missed). The file is not named ``dask.py``: run as a script, its folder comes first
on ``sys.path``, where it would hide the ``dask`` package from ``distributed``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial

import dask
import psutil  # type: ignore[import-untyped]  # distributed's own dependency
from distributed import Client, LocalCluster

from choreograph import Coordinator, Step
from choreograph.executors import DaskExecutor, ProcessExecutor

TARGET_CPU = 1.6
TARGET_MEMORY = 1.1
MIB = 1024 * 1024


def spin(iterations: int) -> int:
    total = 0
    for i in range(iterations):
        total += i * i
    return total


def burn(iterations: int, x: int) -> int:
    """About a millisecond of pure-Python work: *iterations* of `spin` (see `calibrate`; bound with a partial)."""
    spin(iterations)
    return x


def double(x: int) -> int:
    return 2 * x


def calibrate() -> int:
    """The iterations of `spin` that take 1 ms on this machine (from the best of a few runs of 20 ms or so)."""
    iterations = 200_000
    best = min(timed(lambda: spin(iterations)) for _ in range(7))
    return max(1, int(iterations * 0.001 / best))


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def cpu_bound(client: Client, records: int, rounds: int) -> float:
    iterations = calibrate()
    flow = Coordinator[int]([Step("burn", partial(burn, iterations))])  # a partial of a function pickles
    inputs = list(range(records))
    executor = DaskExecutor(client)
    first = timed(lambda: list(flow.run_many(inputs, executor=executor)))  # the workers import the flow's modules
    processes = ProcessExecutor(2)
    list(flow.run_many(inputs, executor=processes))  # the forkserver started before the timing
    times = [
        (
            timed(lambda: [flow.run(x) for x in inputs]),
            timed(lambda: list(flow.run_many(inputs, executor=executor))),
            timed(lambda: list(flow.run_many(inputs, executor=processes))),
        )
        for _ in range(rounds)
    ]
    loop = min(time[0] for time in times)
    best = min(time[1] for time in times)
    local = min(time[2] for time in times)
    ratio = loop / best
    threads = sum(client.nthreads().values())
    print(
        f"CPU-bound, {records} records x {loop / records * 1e3:.2f} ms   loop of run() {loop:6.3f} s"
        f" | DaskExecutor ({threads} worker threads) {best:6.3f} s: ratio {ratio:.2f} (target >= {TARGET_CPU})"
        f" | first batch {first:6.3f} s: ratio {loop / first:.2f}"
        f" | executor='processes' (2 workers) {local:6.3f} s: ratio {loop / local:.2f}"
    )
    return ratio


def memory(client: Client, records: int) -> float:
    flow = Coordinator[int]([Step("double", double)])
    process = psutil.Process()
    checkpoint = max(1, records // 10)

    def inputs() -> Iterator[int]:
        yield from range(records)

    list(flow.run_many(range(1000), executor=DaskExecutor(client)))  # the workers import the flow first
    started = time.perf_counter()
    at_checkpoint = 0
    for done, result in enumerate(flow.run_many(inputs(), executor=DaskExecutor(client)), 1):
        if not result.ok:
            msg = f"record {result.input} failed: {result.fatal}"
            raise RuntimeError(msg)
        if done == checkpoint:
            at_checkpoint = process.memory_info().rss
    seconds = time.perf_counter() - started
    at_end = process.memory_info().rss
    ratio: float = at_end / at_checkpoint
    print(
        f"memory, {records:,} inputs in {seconds:.1f} s ({records / seconds:,.0f}/s)"
        f"   resident after {checkpoint:,}: {at_checkpoint / MIB:.1f} MiB | after {records:,}:"
        f" {at_end / MIB:.1f} MiB ({(at_end - at_checkpoint) / MIB:+.1f} MiB): ratio {ratio:.3f}"
        f" (target <= {TARGET_MEMORY})"
    )
    return ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="fewer records, inputs and rounds")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--records", type=int, default=None, help="inputs of the memory run (default 1,000,000)")
    parser.add_argument(
        "--dask-log", type=int, default=0, help="distributed.admin.low-level-log-length (default 0; Dask's: 1000)"
    )
    options = parser.parse_args()
    dask.config.set({"distributed.admin.low-level-log-length": options.dask_log})  # before the cluster and client
    rounds = 1 if options.quick else 5
    records = options.records or (20_000 if options.quick else 1_000_000)
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, best of {rounds} rounds,"
        f" distributed.admin.low-level-log-length {options.dask_log}"
    )
    started = time.perf_counter()
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        print(f"LocalCluster of 2 worker processes x 1 thread started in {time.perf_counter() - started:.2f} s")
        cpu = cpu_bound(client, 200 if options.quick else 1_000, rounds)
        flat = memory(client, records)
    met = cpu >= TARGET_CPU and flat <= TARGET_MEMORY
    print(
        f"targets: DaskExecutor >= {TARGET_CPU}x a loop, memory at the end <= {TARGET_MEMORY}x that at a tenth:"
        f" {'met' if met else 'MISSED'}"
    )
    return 1 if options.strict and not met else 0


if __name__ == "__main__":
    sys.exit(main())
