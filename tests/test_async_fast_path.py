"""
`run_async` of a flow with ``async def`` callbacks, on its ``async def`` fast path.

A run inside an event loop with no timeout, listener or store awaits its
``async def`` callbacks on a generated fast path, as `run` calls plain ones
on its own; at the first callback that doesn't simply succeed the general
loop takes over. Whichever path a run takes, what it reports is the same:
each case here runs with `run` (whose fast path stops before the first
``async def`` callback) and with `run_async`, and compares.
"""

import asyncio
import traceback
from typing import Any

import pytest
from returns.result import Failure, Success

from choreograph import (
    CallbackFailure,
    Context,
    Coordinator,
    JobFailed,
    Retry,
    RunResult,
    Skip,
    Step,
    UnassignableOutput,
    get_data_bag,
)


@pytest.fixture(autouse=True)
def logging_state_cached() -> None:
    """A first run, so that whether choreograph logs is known and runs take their fast paths."""
    Coordinator([Step("warm-up", lambda: None)]).run()


def seen(result: RunResult[Any]) -> tuple[object, ...]:
    """What a user reads off a result, but timings."""
    return (
        result.ok,
        type(result.fatal),
        [(e.step, e.phase, type(e.error), str(e.error)) for e in result.errors],
        [(c.step, c.phase, c.outcome, c.attempts, c.restored) for c in result.trace],
        dict(result.data_bag.precheck_data),
        dict(result.data_bag.job_data),
    )


def both_ways(flow: Coordinator[Any], record: object) -> RunResult[Any]:
    """Run *record* with `run` and with `run_async`; check they report the same; return `run_async`'s result."""
    plain = flow.run(record)
    awaited = asyncio.run(flow.run_async(record))
    assert seen(awaited) == seen(plain)
    return awaited


async def add_one(x: int) -> int:
    await asyncio.sleep(0)
    return x + 1


def test_async_callbacks_that_succeed_give_what_the_general_loop_gives():
    """Plain and async steps mixed, with an async precheck: outputs, trace order and timings' shape agree."""

    async def positive(x: int) -> bool:
        await asyncio.sleep(0)
        return x > 0

    def double(x: int) -> int:
        return 2 * x

    flow = Coordinator[int]([Step("double", double), Step("next", add_one, precheck=positive), Step("again", double)])
    result = both_ways(flow, 5)
    assert result.ok
    assert result.data_bag.job_data == {"double": 10, "next": 6, "again": 10}
    assert [(c.step, c.phase) for c in result.trace] == [
        ("double", "job"),
        ("next", "precheck"),
        ("next", "job"),
        ("again", "job"),
    ]
    starts = [c.started for c in result.trace]
    assert starts == sorted(starts)
    assert all(c.seconds >= 0 for c in result.trace)


def test_an_async_callback_that_raises_is_handed_to_the_general_loop():
    """The error fails the step as anywhere else, its traceback shows the fast path, and the steps after don't run."""
    ran: list[int] = []

    async def refuse(x: int) -> int:
        await asyncio.sleep(0)
        raise ValueError(f"no {x}")

    def after(x: int) -> None:
        ran.append(x)

    flow = Coordinator[int]([Step("first", add_one), Step("refuse", refuse), Step("after", after)])
    result = both_ways(flow, 1)
    assert isinstance(result.fatal, JobFailed)
    assert str(result.fatal.error) == "no 1"
    assert ran == []
    files = [frame.filename for frame in traceback.extract_tb(result.fatal.error.__traceback__)]
    assert "<choreograph fast path>" in files


def test_an_async_callback_that_fails_once_is_retried_by_the_general_loop():
    """The fast path's failed first attempt counts: the second attempt succeeds, and the run goes on."""
    calls: list[int] = []

    async def flaky(x: int) -> int:
        calls.append(x)
        await asyncio.sleep(0)
        if len(calls) % 2:
            raise ConnectionError("try again")
        return x * 3

    flow = Coordinator[int](
        [Step("flaky", flaky, retry=Retry(attempts=2, initial=0.0, jitter=0.0)), Step("next", add_one)]
    )
    result = both_ways(flow, 2)
    assert result.ok
    assert result.data_bag.job_data == {"flaky": 6, "next": 3}
    assert [(c.step, c.attempts) for c in result.trace] == [("flaky", 2), ("next", 1)]


@pytest.mark.parametrize(
    ("returned", "fatal"),
    [(Failure("out of stock"), CallbackFailure), ("seven", UnassignableOutput), (Success(7), None)],
    ids=["failure", "wrong-type", "success"],
)
def test_what_an_async_callback_returns_is_judged_as_the_general_loop_judges_it(returned: object, fatal: object):
    """A `returns` container is unwrapped, and an output its annotation refuses fails the step."""

    async def reserve(x: int) -> int:
        await asyncio.sleep(0)
        return returned  # type: ignore[return-value]

    flow = Coordinator[int]([Step("reserve", reserve), Step("next", add_one)])
    result = both_ways(flow, 1)
    if fatal is None:
        assert result.data_bag.job_data == {"reserve": 7, "next": 2}
    else:
        assert isinstance(result.fatal, JobFailed)
        assert type(result.fatal.error) is fatal


def test_an_async_precheck_that_skips_passes_over_its_job():
    """A `Skip` raised by an async precheck on the fast path skips the job (the precheck "failed"), as in the loop."""

    async def closed(x: int) -> None:
        await asyncio.sleep(0)
        raise Skip("closed today")

    flow = Coordinator[int]([Step("shop", add_one, precheck=closed), Step("next", add_one)])
    result = both_ways(flow, 1)
    assert result.ok
    assert [(c.step, c.phase, c.outcome) for c in result.trace] == [
        ("shop", "precheck", "failed"),
        ("shop", "job", "skipped"),
        ("next", "job", "ok"),
    ]


def test_interleaved_runs_each_see_their_own_run():
    """Runs awaiting at once on one loop: each callback's context, step and DataBag are its own run's."""

    async def note(ctx: Context[int], x: int) -> tuple[int, str, int]:
        await asyncio.sleep(0.001 * (x % 3))
        return ctx.input, ctx.step, get_data_bag().get_job_data("first")

    flow = Coordinator[int]([Step("first", add_one), Step("note", note)])

    async def main() -> list[RunResult[int]]:
        return await asyncio.gather(*(flow.run_async(x) for x in range(12)))

    results = asyncio.run(main())
    assert [r.data_bag.get_job_data("note") for r in results] == [(x, "note", x + 1) for x in range(12)]


def test_cancelling_a_run_awaiting_on_the_fast_path_cancels_it():
    """The task's cancellation goes through the run (it is not a callback error): the step after never runs."""
    ran: list[int] = []
    started = asyncio.Event()

    async def hang(x: int) -> int:
        started.set()
        await asyncio.sleep(60)
        return x

    def after(x: int) -> None:
        ran.append(x)

    flow = Coordinator[int]([Step("hang", hang), Step("after", after)])

    async def main() -> None:
        task = asyncio.ensure_future(flow.run_async(1))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert ran == []
