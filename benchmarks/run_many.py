"""
`run_many`'s fairness and throughput, against `ThreadPoolExecutor.map` and a loop of `run()` in the same process.

1. Slow records after fast ones: 5,000 instant records, then 64 that sleep 0.2 s, on 32 workers.
2. A skip-heavy re-import: 2,000 records, 95% skipped by their precheck, 5% sleeping 20 ms, on 32 workers.
   Target for both: at most 1.5x the time of ``ThreadPoolExecutor(32).map(coordinator.run, records)``.
3. Trivial flows: runs per second of `run_many` (default workers) against a loop of `run()`.
4. Ctrl-C: a child process runs 3,000 instant records then records of 0.5 s; SIGINT 4 s in; the time
   until it exits (before the thread executor: 124 s).

Run: ``python benchmarks/run_many.py [--quick] [--strict]`` (``--strict``: exit 1 when a target is missed).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from choreograph import Coordinator, Skip, Step

TARGET = 1.5
ROOT = Path(__file__).resolve().parent.parent


def slow_after_fast() -> tuple[Coordinator[int], list[int]]:
    def work(x: int) -> int:
        if x >= 5000:
            time.sleep(0.2)
        return x

    return Coordinator[int]([Step("work", work)]), list(range(5064))


def skip_heavy() -> tuple[Coordinator[int], list[int]]:
    def known(x: int) -> None:
        if x % 20:
            raise Skip("already imported")

    def work(x: int) -> int:
        time.sleep(0.02)
        return x

    return Coordinator[int]([Step("import", work, precheck=known)]), list(range(2000))


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def fairness(name: str, make: Callable[[], tuple[Coordinator[int], list[int]]], rounds: int) -> float:
    coordinator, records = make()
    ours: list[float] = []
    pools: list[float] = []
    for _ in range(rounds):
        ours.append(timed(lambda: list(coordinator.run_many(records, workers=32))))
        with ThreadPoolExecutor(32) as pool:
            pools.append(timed(lambda: list(pool.map(coordinator.run, records))))
    ratio = min(ours) / min(pools)
    print(f"{name:<34} run_many {min(ours):6.3f} s | ThreadPoolExecutor(32).map {min(pools):6.3f} s: ratio {ratio:.2f}")
    return ratio


def throughput(count: int, rounds: int) -> None:
    coordinator = Coordinator[int]([Step("a", lambda x: x + 1), Step("b", lambda x: x * 2)])
    records = list(range(count))
    loop = min(timed(lambda: [coordinator.run(r) for r in records]) for _ in range(rounds))
    many = min(timed(lambda: list(coordinator.run_many(records))) for _ in range(rounds))
    ordered = min(timed(lambda: list(coordinator.run_many(records, ordered=True))) for _ in range(rounds))
    print(
        f"trivial 2-step flow, {count} records  loop of run() {count / loop:8.0f} runs/s"
        f" | run_many {count / many:8.0f} runs/s (ratio {loop / many:.2f})"
        f" | ordered {count / ordered:8.0f} runs/s (ratio {loop / ordered:.2f})"
    )


INTERRUPTED = textwrap.dedent(
    """
    import time
    from choreograph import Coordinator, Step

    def work(x: int) -> int:
        if x >= 3000:
            time.sleep(0.5)
        return x

    for result in Coordinator[int]([Step("work", work)]).run_many(range(1_000_000), workers=32):
        pass
    """
)


def ctrl_c() -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen([sys.executable, "-c", INTERRUPTED], env=env, stderr=subprocess.DEVNULL) as process:  # noqa: S603 - our own script
        time.sleep(4)
        sent = time.perf_counter()
        process.send_signal(signal.SIGINT)
        process.wait(timeout=300)
        seconds = time.perf_counter() - sent
    print(
        f"Ctrl-C 4 s into a batch of 0.5 s runs: exited {seconds:.2f} s after SIGINT (exit code {process.returncode})"
    )
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    options = parser.parse_args()
    rounds = 1 if options.quick else 3
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, best of {rounds} rounds")
    ratios = [
        fairness("5,000 instant then 64 x 0.2 s", slow_after_fast, rounds),
        fairness("2,000 records, 95% skipped", skip_heavy, rounds),
    ]
    throughput(2_000 if options.quick else 20_000, rounds)
    exit_seconds = ctrl_c()
    met = all(ratio <= TARGET for ratio in ratios) and exit_seconds < 10
    print(f"targets: fairness ratios <= {TARGET}, Ctrl-C exit < 10 s: {'met' if met else 'MISSED'}")
    return 1 if options.strict and not met else 0


if __name__ == "__main__":
    sys.exit(main())
