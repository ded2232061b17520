"""
What a callback's outcome records, on every path that calls it: the step a wrong output names, and when it started.

The same callback is run on the fast path, on the general loop (a run with a
timeout), as an ``async def`` callback, and as a branch of a group (on a
worker thread), since each path decides the outcome in its own code.
"""

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from choreograph import Coordinator, JobFailed, Parallel, Step, UnassignableOutput

WAIT = 10.0


def wrong() -> int:
    return "not an int"  # type: ignore[return-value]  # wrong on purpose


async def wrong_async() -> int:
    return "not an int"  # type: ignore[return-value]  # wrong on purpose


def wrong_optional() -> int | None:
    return "not an int"  # type: ignore[return-value]  # wrong on purpose


def alone(fn: Callable[[], object]) -> list[Any]:
    return [Step("first", lambda: 1), Step("wrong", fn)]


def in_a_group(fn: Callable[[], object]) -> list[Any]:
    return [Parallel("g", Step("wrong", fn), Step("other", lambda: 2))]


@pytest.mark.parametrize("fn", [wrong, wrong_async, wrong_optional], ids=["plain", "async", "optional"])
@pytest.mark.parametrize("shape", [alone, in_a_group], ids=["alone", "in-a-group"])
@pytest.mark.parametrize("timeout", [None, WAIT], ids=["fast-path", "general-loop"])
def test_a_wrong_output_fails_its_callback_naming_its_step(
    fn: Callable[[], object], shape: Callable[[Callable[[], object]], list[Any]], timeout: float | None
) -> None:
    result = Coordinator(shape(fn)).run(timeout=timeout)
    assert isinstance(result.fatal, JobFailed)
    error = result.fatal.error
    assert isinstance(error, UnassignableOutput)
    assert (error.step, error.callback, error.actual) == ("wrong", "job", "str")
    assert not result.data_bag.has_job_data("wrong")


def test_a_callback_the_run_timeout_cancelled_started_when_it_was_called() -> None:
    async def hangs() -> None:
        await asyncio.sleep(WAIT)

    result = Coordinator([Step("first", lambda: 1), Step("slow", hangs)]).run(timeout=0.3)
    (call,) = result.trace_of("slow")
    assert call.outcome == "canceled"
    assert call.started < call.seconds / 2  # called at once, cancelled 0.3 s later


def test_a_compensation_started_when_it_was_called() -> None:
    def fails() -> None:
        raise ValueError("refused")

    flow = Coordinator(
        [Step("reserve", lambda: 1, compensate=lambda: time.sleep(0.3)), Step("pay", fails)],
    )
    result = flow.run()
    assert isinstance(result.fatal, JobFailed)
    (pay,) = result.trace_of("pay")
    undo = next(c for c in result.trace_of("reserve") if c.phase == "compensate")
    assert undo.seconds >= 0.3
    assert undo.started - (pay.started + pay.seconds) < 0.15  # it starts as `pay` fails, not 0.3 s later
