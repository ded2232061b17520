"""
The coordinator's per-run overhead, against a hand-written loop in the same process.

A 10-step flow, each step with a precheck and a job of the form
``(ctx: Context, x: int) -> int``, is run by a `Coordinator` and by a plain loop
making the same calls with try/except and a dict store. Both are timed in
alternating rounds (best round wins, which filters out noise from a shared
machine) and the ratio is printed. The same with unannotated callbacks, then
``run_many`` throughput over 10,000 inputs against a plain loop of ``run``,
and the cost of listening to a run's events (one listener that does nothing
against none: without a listener a run sends no event at all).

A third loop, the "contract floor", adds to the hand-written one only what
API.md requires of any implementation per callback (a wall-clock timestamp
for the trace, a look at the output's type for ``returns`` containers), to
show how much of the ratio the contract itself costs.

Run: ``make bench`` or ``python benchmarks/overhead.py [--quick] [--strict]``.
Targets: ratio <= 3.0 with annotations, <= 2.0 without.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable

from returns.io import IOFailure, IOSuccess
from returns.result import Failure, Success

from choreograph import Context, Coordinator, Step

STEPS = 10
TARGET_ANNOTATED = 3.0
TARGET_UNANNOTATED = 2.0


def annotated_precheck(ctx: Context[int], x: int) -> int:
    return x + 1


def annotated_job(ctx: Context[int], x: int) -> int:
    return x * 2


def plain_precheck(ctx, x):  # type: ignore[no-untyped-def]
    return x + 1


def plain_job(ctx, x):  # type: ignore[no-untyped-def]
    return x * 2


class _HandContext:
    """What the hand-written loop passes as the context: a plain object."""

    __slots__ = ("input", "step")

    def __init__(self, value: int) -> None:
        self.input = value
        self.step = ""


def hand_written(
    steps: list[tuple[str, Callable[..., object], Callable[..., object]]],
) -> Callable[[int], object]:
    """Return a function running *steps* the way a careful person would by hand."""

    def run(value: int) -> object:
        ctx = _HandContext(value)
        prechecks: dict[str, object] = {}
        jobs: dict[str, object] = {}
        errors: list[Exception] = []
        for name, precheck, job in steps:
            ctx.step = name
            try:
                prechecks[name] = precheck(ctx, value)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
                continue
            try:
                jobs[name] = job(ctx, value)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
                break
        return jobs, prechecks, errors

    return run


def contract_floor(
    steps: list[tuple[str, Callable[..., object], Callable[..., object]]],
) -> Callable[[int], object]:
    """
    The hand-written loop plus the least the contract adds per callback.

    API.md asks for each callback's wall time in the trace and for returned
    ``returns`` containers to be unwrapped, so any implementation takes a
    timestamp and looks at the output's type once per callback. This floor
    does only that, to show how much of the ratio is the contract itself.
    """
    clock = time.perf_counter_ns
    containers = frozenset({Success, Failure, IOSuccess, IOFailure})

    def run(value: int) -> object:
        ctx = _HandContext(value)
        prechecks: dict[str, object] = {}
        jobs: dict[str, object] = {}
        errors: list[Exception] = []
        stamps = [clock()]
        for name, precheck, job in steps:
            ctx.step = name
            try:
                out = precheck(ctx, value)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
                continue
            if out.__class__ in containers:
                continue
            prechecks[name] = out
            stamps.append(clock())
            try:
                out = job(ctx, value)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
                break
            if out.__class__ in containers:
                break
            jobs[name] = out
            stamps.append(clock())
        return jobs, prechecks, errors, stamps

    return run


def best_of(rounds: int, number: int, *functions: Callable[[int], object]) -> list[float]:
    """Seconds per call of each function: the best of *rounds* alternating rounds."""
    best = [float("inf")] * len(functions)
    for _ in range(rounds):
        for index, function in enumerate(functions):
            start = time.perf_counter()
            for value in range(number):
                function(value)
            best[index] = min(best[index], (time.perf_counter() - start) / number)
    return best


def compare(label: str, precheck: Callable[..., object], job: Callable[..., object], rounds: int, number: int) -> float:
    coordinator: Coordinator[int] = Coordinator()
    names = [f"step {i}" for i in range(STEPS)]
    for name in names:
        coordinator.add_step(Step(name, job, precheck))
    assert coordinator.run(1).ok  # noqa: S101 - a broken flow would make the numbers meaningless
    steps = [(name, precheck, job) for name in names]
    ours, theirs, floor = best_of(rounds, number, coordinator.run, hand_written(steps), contract_floor(steps))
    ratio = ours / theirs
    print(
        f"{label:<24} coordinator {ours * 1e6:5.2f} us/run | hand-written {theirs * 1e6:5.2f} us/run:"
        f" ratio {ratio:.2f} | contract floor {floor * 1e6:5.2f} us/run: ratio {ours / floor:.2f}"
    )
    return ratio


def throughput(rounds: int, count: int) -> None:
    coordinator: Coordinator[int] = Coordinator()
    for i in range(STEPS):
        coordinator.add_step(Step(f"step {i}", annotated_job, annotated_precheck))

    def sequential(_: int) -> object:
        return [coordinator.run(value) for value in range(count)]

    def many(_: int) -> object:
        return list(coordinator.run_many(range(count), workers=2))

    def many_ordered(_: int) -> object:
        return list(coordinator.run_many(range(count), workers=2, ordered=True))

    loop, pooled, ordered = best_of(rounds, 1, sequential, many, many_ordered)
    print(
        f"run_many over {count} inputs    loop of run() {count / loop:8.0f} runs/s   "
        f"run_many {count / pooled:8.0f} runs/s (ratio {pooled / loop:.2f})   "
        f"ordered {count / ordered:8.0f} runs/s (ratio {ordered / loop:.2f})"
    )


async def async_job(ctx: Context[int], x: int) -> int:
    await asyncio.sleep(0)
    return x * 2


def async_throughput(rounds: int, count: int) -> None:
    """`run_many` of a flow with async def jobs, against `run_async` awaited in one loop."""
    coordinator: Coordinator[int] = Coordinator()
    for i in range(STEPS):
        coordinator.add_step(Step(f"step {i}", async_job, annotated_precheck))

    async def awaited() -> object:
        return [await coordinator.run_async(value) for value in range(count)]

    def sequential(_: int) -> object:
        return asyncio.run(awaited())

    def many(_: int) -> object:
        return list(coordinator.run_many(range(count), workers=2))

    loop, pooled = best_of(rounds, 1, sequential, many)
    print(
        f"async jobs, {count} inputs      run_async in a loop {count / loop:8.0f} runs/s   "
        f"run_many {count / pooled:8.0f} runs/s (ratio {pooled / loop:.2f})"
    )


def listening(rounds: int, number: int) -> None:
    """The same 10-step flow with one listener that does nothing, against none."""
    quiet: Coordinator[int] = Coordinator()
    heard: Coordinator[int] = Coordinator(listeners=[lambda _event: None])
    for i in range(STEPS):
        quiet.add_step(Step(f"step {i}", annotated_job, annotated_precheck))
        heard.add_step(Step(f"step {i}", annotated_job, annotated_precheck))
    without, with_one = best_of(rounds, number, quiet.run, heard.run)
    print(
        f"listeners               none {without * 1e6:5.2f} us/run | one that does nothing"
        f" {with_one * 1e6:5.2f} us/run: ratio {with_one / without:.2f} (events sent: 42 per run)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a smoke test")
    parser.add_argument("--strict", action="store_true", help="exit with 1 when a target is missed")
    args = parser.parse_args()
    rounds, number, count = (2, 500, 1_000) if args.quick else (15, 5_000, 10_000)
    print(f"Python {sys.version.split()[0]}, {STEPS} steps, precheck + job each, best of {rounds} rounds")
    annotated = compare("annotated (ctx, x: int)", annotated_precheck, annotated_job, rounds, number)
    plain = compare("unannotated (ctx, x)", plain_precheck, plain_job, rounds, number)
    listening(rounds, number // 5)
    throughput(max(2, rounds // 5), count)
    async_throughput(max(2, rounds // 5), count // 5)
    verdict = annotated <= TARGET_ANNOTATED and plain <= TARGET_UNANNOTATED
    print(
        f"targets: annotated <= {TARGET_ANNOTATED} ({'met' if annotated <= TARGET_ANNOTATED else 'MISSED'}), "
        f"unannotated <= {TARGET_UNANNOTATED} ({'met' if plain <= TARGET_UNANNOTATED else 'MISSED'})"
    )
    return 1 if args.strict and not verdict else 0


if __name__ == "__main__":
    sys.exit(main())
