"""One coordinator running from many threads at once: every run keeps its own DataBag and error stack."""

import asyncio
import threading
from typing import Any

from choreograph import Context, Coordinator, DataBag, RunResult, Skip, Step, get_data_bag

THREADS = 16
RUNS = 200


class MismatchError(Exception):
    """A callback saw something that is not its own run's."""


def check_bag(ctx: Context) -> None:
    """Fail the callback (so the run) if `get_data_bag()` is not this run's DataBag."""
    if get_data_bag() is not ctx.data_bag:
        raise MismatchError(ctx.input, ctx.step, ctx.phase)


def load_precheck(ctx: Context, key: tuple[int, int]) -> str:
    check_bag(ctx)
    return f"pre-{key}"


def load(ctx: Context, key: tuple[int, int]) -> str:
    check_bag(ctx)
    if ctx.data_bag.get_precheck_data("load") != f"pre-{key}":
        raise MismatchError(key)
    return f"job-{key}"


def gate(ctx: Context, key: tuple[int, int]) -> None:
    check_bag(ctx)
    if sum(key) % 2:
        raise Skip(str(key), output=key)


def gated(ctx: Context, key: tuple[int, int]) -> tuple[int, int]:
    check_bag(ctx)
    return key


def finish(ctx: Context, key: tuple[int, int]) -> str:
    check_bag(ctx)
    if ctx.data_bag.get_job_data("load") != f"job-{key}":
        raise MismatchError(key)
    foreign = [e for e in ctx.errors if e.error.args != (str(key),)]
    if foreign:
        raise MismatchError(key, foreign)
    return ctx.data_bag.get_job_data("load") + "-done"


def shared_coordinator() -> Coordinator[tuple[int, int]]:
    """Steps that store values derived from the input and push errors that name it."""
    coordinator: Coordinator[tuple[int, int]] = Coordinator()
    coordinator.add_step(Step("load", load, load_precheck))
    coordinator.add_step(Step("gate", gated, gate))
    coordinator.add_step(Step("finish", finish))
    return coordinator


def check_result(result: RunResult[Any], key: tuple[int, int]) -> None:
    bag: DataBag = result.data_bag
    assert result.input == key
    assert result.ok, result.fatal
    assert bag.get_precheck_data("load") == f"pre-{key}"
    assert bag.get_job_data("load") == f"job-{key}"
    assert bag.get_job_data("finish") == f"job-{key}-done"
    if sum(key) % 2:
        assert [(e.step, e.phase, type(e.error)) for e in result.errors] == [("gate", "precheck", Skip)]
        assert result.errors[0].error.args == (str(key),)
        assert bag.get_precheck_data("gate") == key
        assert not bag.has_job_data("gate")
    else:
        assert result.errors == ()
        assert not bag.has_precheck_data("gate")
        assert bag.get_job_data("gate") == key


def test_runs_from_many_threads_are_isolated():
    """16 threads x 200 runs on one coordinator: each result holds only its own values and errors."""
    coordinator = shared_coordinator()
    barrier = threading.Barrier(THREADS)
    results: dict[tuple[int, int], RunResult[Any]] = {}
    crashes: list[BaseException] = []
    lock = threading.Lock()

    def worker(thread: int) -> None:
        try:
            barrier.wait()
            own = {(thread, i): coordinator.run((thread, i)) for i in range(RUNS)}
        except BaseException as exc:  # pragma: no cover - reported below
            crashes.append(exc)
            return
        with lock:
            results.update(own)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert crashes == []
    assert len(results) == THREADS * RUNS
    assert len({id(r.data_bag) for r in results.values()}) == THREADS * RUNS
    for key, result in results.items():
        check_result(result, key)


def test_async_runs_from_many_threads_are_isolated():
    """Runs with `async def` callbacks from 8 threads at once each see only their own DataBag."""

    mismatches: list[object] = []

    async def job(ctx: Context, key: tuple[int, int]) -> tuple[int, int]:
        await asyncio.sleep(0)
        if get_data_bag() is not ctx.data_bag or ctx.input != key:
            mismatches.append(key)
        return key

    async def after(ctx: Context, key: tuple[int, int]) -> tuple[int, int]:
        await asyncio.sleep(0)
        if get_data_bag().get_job_data("job") != key:
            mismatches.append(key)
        return key

    coordinator: Coordinator[tuple[int, int]] = Coordinator()
    coordinator.add_step(Step("job", job))
    coordinator.add_step(Step("after", after))
    results: dict[tuple[int, int], RunResult[Any]] = {}
    lock = threading.Lock()

    def worker(thread: int) -> None:
        own = {(thread, i): coordinator.run((thread, i)) for i in range(50)}
        with lock:
            results.update(own)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert mismatches == []
    assert len(results) == 8 * 50
    for key, result in results.items():
        assert result.ok
        assert result.data_bag.get_job_data("job") == key
        assert result.data_bag.get_job_data("after") == key
