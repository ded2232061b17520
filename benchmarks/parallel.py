"""
What a parallel group costs, and what it buys.

1. Overhead: a flow of two trivial steps in a ``Parallel`` group of two
   branches, against the same two steps in sequence (same process,
   alternating rounds, best round wins). A group hands each plain callback to
   a worker thread and waits for it: the ratio is that cost, per run.
   Reported for ``run`` (threads) and ``run_async`` (a group of ``async def``
   steps, as tasks on the caller's loop, against the same steps in sequence).
2. Wall time: two branches that each wait 10 ms (``time.sleep`` on threads,
   ``asyncio.sleep`` as tasks) against one 10 ms wait: the ratio is how close
   the group comes to running its branches at the same time (1.0 is ideal;
   2.0 would be sequential).
3. A flow without groups costs what it cost before: ``benchmarks/overhead.py``.

Run: ``python benchmarks/parallel.py [--quick] [--strict]``.
Target: two 10 ms branches in <= 1.3x the time of one.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable

from choreograph import Coordinator, Parallel, Step

TARGET_WALL = 1.3
WAIT = 0.010


def trivial_a(x: int) -> int:
    return x + 1


def trivial_b(x: int) -> int:
    return x * 2


async def async_a(x: int) -> int:
    return x + 1


async def async_b(x: int) -> int:
    return x * 2


def sleeps(x: int) -> int:
    time.sleep(WAIT)
    return x


async def async_sleeps(x: int) -> int:
    await asyncio.sleep(WAIT)
    return x


def best_of(rounds: int, number: int, *functions: Callable[[], object]) -> list[float]:
    """Seconds per call of each function: the best of *rounds* alternating rounds of *number* calls."""
    best = [float("inf")] * len(functions)
    for _ in range(rounds):
        for index, function in enumerate(functions):
            began = time.perf_counter()
            for _ in range(number):
                function()
            best[index] = min(best[index], (time.perf_counter() - began) / number)
    return best


def overhead(rounds: int, number: int) -> None:
    grouped = Coordinator[int]([Parallel("g", Step("a", trivial_a), Step("b", trivial_b))])
    sequence = Coordinator[int]([Step("a", trivial_a), Step("b", trivial_b)])
    if grouped.run(1).data_bag.job_data != sequence.run(1).data_bag.job_data:
        raise SystemExit("the group and the sequence disagree")
    group_s, seq_s = best_of(rounds, number, lambda: grouped.run(1), lambda: sequence.run(1))
    print(
        f"run, 2 trivial steps:   group {group_s * 1e6:8.1f} us   sequence {seq_s * 1e6:6.1f} us"
        f"   ratio {group_s / seq_s:6.1f}x   (threads: the group's cost per run)"
    )
    agrouped = Coordinator[int]([Parallel("g", Step("a", async_a), Step("b", async_b))])
    asequence = Coordinator[int]([Step("a", async_a), Step("b", async_b)])

    async def loop(flow: Coordinator[int], count: int) -> None:
        for _ in range(count):
            await flow.run_async(1)

    def in_loop(flow: Coordinator[int]) -> Callable[[], object]:
        return lambda: asyncio.run(loop(flow, number))

    group_a, seq_a = best_of(rounds, 1, in_loop(agrouped), in_loop(asequence))
    print(
        f"run_async, 2 async steps: group {group_a / number * 1e6:6.1f} us   sequence {seq_a / number * 1e6:6.1f} us"
        f"   ratio {group_a / seq_a:6.1f}x   (tasks on the caller's loop)"
    )


def wall(rounds: int) -> bool:
    grouped = Coordinator[int]([Parallel("g", Step("a", sleeps), Step("b", sleeps))])
    one = Coordinator[int]([Step("a", sleeps)])
    group_s, one_s = best_of(rounds, 5, lambda: grouped.run(1), lambda: one.run(1))
    ratio = group_s / one_s
    print(
        f"run, two 10 ms branches: {group_s * 1e3:6.2f} ms   one 10 ms step {one_s * 1e3:6.2f} ms"
        f"   ratio {ratio:5.2f}x   (target <= {TARGET_WALL}x)"
    )
    agrouped = Coordinator[int]([Parallel("g", Step("a", async_sleeps), Step("b", async_sleeps))])
    aone = Coordinator[int]([Step("a", async_sleeps)])

    def in_loop(flow: Coordinator[int]) -> Callable[[], object]:
        async def five() -> None:
            for _ in range(5):
                await flow.run_async(1)

        return lambda: asyncio.run(five())

    group_a, one_a = best_of(rounds, 1, in_loop(agrouped), in_loop(aone))
    async_ratio = group_a / one_a
    print(
        f"run_async, two 10 ms branches: {group_a / 5 * 1e3:6.2f} ms   one {one_a / 5 * 1e3:6.2f} ms"
        f"   ratio {async_ratio:5.2f}x   (target <= {TARGET_WALL}x)"
    )
    return ratio <= TARGET_WALL and async_ratio <= TARGET_WALL


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a smoke test")
    parser.add_argument("--strict", action="store_true", help="exit with 1 when a target is missed")
    args = parser.parse_args()
    rounds, number = (2, 200) if args.quick else (7, 3000)
    print(f"Python {sys.version.split()[0]}, best of {rounds} rounds")
    overhead(rounds, number)
    met = wall(rounds)
    print(f"target: two 10 ms branches <= {TARGET_WALL}x one: {'met' if met else 'MISSED'}")
    return 1 if args.strict and not met else 0


if __name__ == "__main__":
    sys.exit(main())
