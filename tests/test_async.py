"""`async def` callbacks: with `run()` (with or without a running loop) and with `run_async()`."""

import asyncio
import time
from typing import Any

import pytest
from returns.result import Failure

from choreograph import (
    CallbackTimeout,
    Context,
    Coordinator,
    DataBag,
    ExecutionCanceled,
    JobFailed,
    Retry,
    RunCancelled,
    RunResult,
    Skip,
    Step,
    UnassignableOutput,
    get_data_bag,
)

# Timeouts cut off awaits far longer than the test could wait for: a cancelled
# `LONG_SLEEP` ends within `CANCELLED_WITHIN` even on a loaded machine, and one
# that was not cancelled would take six times longer. A run's timeout also covers
# what precedes the awaited callback, so it leaves room for a slow scheduler.
LONG_SLEEP = 30.0
CANCELLED_WITHIN = 5.0
RUN_TIMEOUT = 0.5


def trace_of(result: RunResult[Any]) -> list[tuple[str, str, str]]:
    return [(c.step, c.phase, c.outcome) for c in result.trace]


def errors_of(result: RunResult[Any]) -> list[tuple[str, str, type[BaseException]]]:
    return [(e.step, e.phase, type(e.error)) for e in result.errors]


def coordinator_of(*steps: Step) -> Coordinator[Any]:
    coordinator: Coordinator[Any] = Coordinator()
    for step in steps:
        coordinator.add_step(step)
    return coordinator


def async_flow(log: list[str]) -> Coordinator[Any]:
    """Two async steps (one with an async precheck) and a plain one, recording their order."""

    async def fetch_precheck(record: int) -> int:
        await asyncio.sleep(0)
        log.append("fetch.precheck")
        return record * 10

    async def fetch(ctx: Context, record: int) -> int:
        await asyncio.sleep(0.001)
        log.append("fetch.job")
        return ctx.data_bag.get_precheck_data("fetch") + record

    def convert(ctx: Context) -> str:
        log.append("convert.job")
        return str(ctx.data_bag.get_job_data("fetch"))

    async def store(ctx: Context) -> str:
        await asyncio.sleep(0)
        log.append("store.job")
        return ctx.data_bag.get_job_data("convert") + "!"

    return coordinator_of(
        Step("fetch", fetch, fetch_precheck),
        Step("convert", convert),
        Step("store", store),
    )


def assert_async_flow(result: RunResult[Any], log: list[str]) -> None:
    assert log == ["fetch.precheck", "fetch.job", "convert.job", "store.job"]
    assert trace_of(result) == [
        ("fetch", "precheck", "ok"),
        ("fetch", "job", "ok"),
        ("convert", "job", "ok"),
        ("store", "job", "ok"),
    ]
    assert errors_of(result) == []
    assert result.fatal is None
    assert result.ok
    assert result.data_bag.get_precheck_data("fetch") == 20
    assert result.data_bag.get_job_data("fetch") == 22
    assert result.data_bag.get_job_data("convert") == "22"
    assert result.data_bag.get_job_data("store") == "22!"


def test_run_drives_async_callbacks_without_a_loop():
    """`run()` called with no event loop running awaits `async def` callbacks mixed with plain ones, in order."""
    log: list[str] = []

    result = async_flow(log).run(2)

    assert_async_flow(result, log)


@pytest.mark.anyio
async def test_run_works_inside_a_running_loop():
    """`run()` called from inside a running event loop still drives `async def` callbacks to the end."""
    log: list[str] = []

    result = async_flow(log).run(2)

    assert_async_flow(result, log)


@pytest.mark.anyio
async def test_run_async_awaits_async_callbacks():
    """`await run_async()` runs `async def` and plain callbacks in order."""
    log: list[str] = []

    result = await async_flow(log).run_async(2)

    assert_async_flow(result, log)


@pytest.mark.anyio
async def test_run_async_with_plain_callbacks_only():
    """`run_async()` also runs a flow made only of plain callbacks."""

    def job(record: int) -> int:
        return record + 1

    result = await coordinator_of(Step("s", job)).run_async(1)

    assert trace_of(result) == [("s", "job", "ok")]
    assert result.data_bag.get_job_data("s") == 2


def bag_checking_flow(seen: list[DataBag]) -> Coordinator[Any]:
    async def precheck(ctx: Context) -> None:
        seen.append(get_data_bag())
        await asyncio.sleep(0)
        seen.append(get_data_bag())
        assert get_data_bag() is ctx.data_bag

    async def job(ctx: Context) -> int:
        await asyncio.sleep(0)
        seen.append(get_data_bag())
        return ctx.input

    return coordinator_of(Step("s", job, precheck))


def test_get_data_bag_in_async_callbacks_with_run():
    """`get_data_bag()` inside `async def` callbacks driven by `run()` returns the run's DataBag, across awaits."""
    seen: list[DataBag] = []

    result = bag_checking_flow(seen).run(5)

    assert result.ok
    assert len(seen) == 3
    assert all(bag is result.data_bag for bag in seen)


@pytest.mark.anyio
async def test_get_data_bag_in_async_callbacks_with_run_async():
    """`get_data_bag()` inside `async def` callbacks under `run_async()` returns the run's DataBag, across awaits."""
    seen: list[DataBag] = []

    result = await bag_checking_flow(seen).run_async(5)

    assert result.ok
    assert len(seen) == 3
    assert all(bag is result.data_bag for bag in seen)


@pytest.mark.anyio
async def test_get_data_bag_in_async_callbacks_with_run_inside_a_loop():
    """`get_data_bag()` works in `async def` callbacks when `run()` is called inside a running loop."""
    seen: list[DataBag] = []

    result = bag_checking_flow(seen).run(5)

    assert result.ok
    assert len(seen) == 3
    assert all(bag is result.data_bag for bag in seen)


@pytest.mark.anyio
async def test_run_async_timeout_cancels_an_awaiting_callback():
    """An expired `run_async` timeout cancels the awaited `async def` callback: RunCancelled, outcome "canceled"."""
    finished: list[str] = []

    async def slow() -> int:
        await asyncio.sleep(LONG_SLEEP)
        finished.append("slow")
        return 1

    def later() -> int:
        finished.append("later")
        return 2

    coordinator = coordinator_of(Step("first", lambda: 0), Step("slow", slow), Step("later", later))

    started = time.perf_counter()
    result = await coordinator.run_async(timeout=RUN_TIMEOUT)
    elapsed = time.perf_counter() - started

    assert elapsed < CANCELLED_WITHIN
    assert finished == []
    assert trace_of(result) == [("first", "job", "ok"), ("slow", "job", "canceled")]
    assert errors_of(result) == []
    assert isinstance(result.fatal, RunCancelled)
    assert result.fatal.step == "slow"
    assert not result.ok
    assert result.data_bag.get_job_data("first") == 0
    assert not result.data_bag.has_job_data("slow")
    assert not result.data_bag.has_job_data("later")


@pytest.mark.anyio
async def test_run_async_timeout_cancels_an_awaiting_precheck():
    """An expired `run_async` timeout cancels an awaited `async def` precheck; its job never starts."""
    called: list[str] = []

    async def precheck() -> None:
        await asyncio.sleep(LONG_SLEEP)
        called.append("precheck done")

    def job() -> int:
        called.append("job")
        return 1

    started = time.perf_counter()
    result = await coordinator_of(Step("s", job, precheck)).run_async(timeout=RUN_TIMEOUT)

    assert time.perf_counter() - started < CANCELLED_WITHIN
    assert called == []
    assert trace_of(result) == [("s", "precheck", "canceled")]
    assert errors_of(result) == []
    assert isinstance(result.fatal, RunCancelled)


@pytest.mark.anyio
async def test_step_timeout_cancels_an_async_job_with_run_async():
    """A step's `timeout` cancels an awaiting `async def` job: JobFailed with CallbackTimeout."""
    finished: list[str] = []

    async def slow() -> int:
        await asyncio.sleep(LONG_SLEEP)
        finished.append("slow")
        return 1

    coordinator = coordinator_of(Step("slow", slow, timeout=0.05), Step("later", lambda: 2))

    started = time.perf_counter()
    result = await coordinator.run_async()

    assert time.perf_counter() - started < CANCELLED_WITHIN
    assert finished == []
    assert trace_of(result) == [("slow", "job", "failed")]
    assert errors_of(result) == [("slow", "job", CallbackTimeout)]
    fatal = result.fatal
    assert isinstance(fatal, JobFailed)
    assert fatal.step == "slow"
    assert isinstance(fatal.error, CallbackTimeout)
    assert fatal.__cause__ is fatal.error
    assert not result.data_bag.has_job_data("slow")
    assert not result.data_bag.has_job_data("later")


def test_step_timeout_cancels_an_async_job_with_run():
    """A step's `timeout` also cancels an awaiting `async def` job driven by `run()`."""

    async def slow() -> int:
        await asyncio.sleep(LONG_SLEEP)
        return 1

    started = time.perf_counter()
    result = coordinator_of(Step("slow", slow, timeout=0.05)).run()

    assert time.perf_counter() - started < CANCELLED_WITHIN
    assert trace_of(result) == [("slow", "job", "failed")]
    assert errors_of(result) == [("slow", "job", CallbackTimeout)]
    assert isinstance(result.fatal, JobFailed)
    assert isinstance(result.fatal.error, CallbackTimeout)


@pytest.mark.anyio
async def test_concurrent_run_async_calls_are_isolated():
    """Concurrent `run_async` calls via `asyncio.gather` each see their own input in their own DataBag."""

    async def precheck(ctx: Context, record: int) -> int:
        await asyncio.sleep(0.001 * (record % 3))
        return record

    async def job(ctx: Context, record: int) -> int:
        await asyncio.sleep(0.001 * (record % 4))
        assert get_data_bag() is ctx.data_bag
        assert ctx.data_bag.get_precheck_data("s") == record
        if record % 5 == 0:
            raise ValueError(record)
        return record * 2

    coordinator = coordinator_of(Step("s", job, precheck))

    results = await asyncio.gather(*(coordinator.run_async(i) for i in range(40)))

    assert [r.input for r in results] == list(range(40))
    assert len({id(r.data_bag) for r in results}) == 40
    for i, result in enumerate(results):
        assert result.data_bag.get_precheck_data("s") == i
        if i % 5 == 0:
            assert errors_of(result) == [("s", "job", ValueError)]
            assert result.errors[0].error.args == (i,)
            assert isinstance(result.fatal, JobFailed)
            assert not result.data_bag.has_job_data("s")
        else:
            assert errors_of(result) == []
            assert result.ok
            assert result.data_bag.get_job_data("s") == i * 2


# -- async outcomes -------------------------------------------------------------


def test_async_precheck_outcomes_follow_the_rules():
    """Async prechecks follow the precheck rules: Skip skips the job, ExecutionCanceled stops the run."""

    async def skip() -> int:
        await asyncio.sleep(0)
        raise Skip("later", output="s")

    async def cancel():
        await asyncio.sleep(0)
        return Failure(ExecutionCanceled("stop"))

    async def job() -> int:
        return 1

    result = coordinator_of(Step("a", job, skip), Step("b", job, cancel), Step("c", job)).run()

    assert trace_of(result) == [("a", "precheck", "failed"), ("a", "job", "skipped"), ("b", "precheck", "canceled")]
    assert errors_of(result) == [("a", "precheck", Skip), ("b", "precheck", ExecutionCanceled)]
    assert isinstance(result.fatal, ExecutionCanceled)
    assert result.fatal is result.errors[1].error
    assert result.data_bag.get_precheck_data("a") == "s"
    assert not result.data_bag.has_job_data("a")
    assert not result.data_bag.has_job_data("c")


@pytest.mark.anyio
async def test_async_job_wrong_output_type_fails():
    """An `async def` job returning a value that violates its annotation fails with UnassignableOutput."""

    async def job() -> int:
        await asyncio.sleep(0)
        return "x"  # type: ignore[return-value]

    result = await coordinator_of(Step("s", job)).run_async()

    assert trace_of(result) == [("s", "job", "failed")]
    assert errors_of(result) == [("s", "job", UnassignableOutput)]
    assert isinstance(result.fatal, JobFailed)
    assert not result.data_bag.has_job_data("s")


@pytest.mark.anyio
async def test_async_job_is_retried():
    """An `async def` job failing twice under `Retry(attempts=3)` succeeds on its third attempt."""
    seen: list[int] = []

    async def job(ctx: Context) -> int:
        seen.append(ctx.attempt)
        await asyncio.sleep(0)
        if ctx.attempt < 3:
            raise OSError
        return ctx.attempt

    retry = Retry(attempts=3, initial=0, jitter=0)
    result = await coordinator_of(Step("s", job, retry=retry)).run_async()

    assert seen == [1, 2, 3]
    assert trace_of(result) == [("s", "job", "ok")]
    assert result.trace[0].attempts == 3
    assert result.data_bag.get_job_data("s") == 3


def test_keyboard_interrupt_in_an_async_job_propagates_out_of_run():
    """A KeyboardInterrupt raised by an `async def` job propagates out of `run()`."""
    later: list[str] = []

    async def job() -> None:
        await asyncio.sleep(0)
        raise KeyboardInterrupt

    coordinator = coordinator_of(Step("s", job), Step("later", lambda: later.append("later")))

    with pytest.raises(KeyboardInterrupt):
        coordinator.run()

    assert later == []
