"""
Every field of every trace entry, on every outcome path: step, phase, outcome, attempts, restored and seconds.

Each path runs three ways, which must agree: `run` on its fast path, `run` on the
general loop (a `timeout=` forces it) and `run_async`. Timing bounds come from
sleeps (lower bounds) and are generous above: the suite runs on loaded machines.
"""

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from returns.result import Failure, Result

from choreograph import (
    Context,
    Coordinator,
    ExecutionCanceled,
    Retry,
    RunCancelled,
    RunResult,
    Skip,
    Step,
)

SLOW = 0.05  # what a "slow" callback sleeps
#: An async sleep may end up to the event loop's clock resolution early.
ASYNC_SLACK = 0.001

Fields = tuple[str, str, str, int, bool]
Runner = Callable[..., RunResult[Any]]


def fields(result: RunResult[Any]) -> list[Fields]:
    return [(c.step, c.phase, c.outcome, c.attempts, c.restored) for c in result.trace]


def seconds(result: RunResult[Any]) -> list[float]:
    return [c.seconds for c in result.trace]


def coordinator_of(*steps: Step) -> Coordinator[Any]:
    return Coordinator(steps)


def run_fast(coordinator: Coordinator[Any], input: object = None) -> RunResult[Any]:  # noqa: A002
    return coordinator.run(input)


def run_loop(coordinator: Coordinator[Any], input: object = None) -> RunResult[Any]:  # noqa: A002
    return coordinator.run(input, timeout=60)


def run_async(coordinator: Coordinator[Any], input: object = None) -> RunResult[Any]:  # noqa: A002
    return asyncio.run(coordinator.run_async(input))


@pytest.fixture(params=[run_fast, run_loop, run_async], ids=["fast-path", "general-loop", "run_async"])
def run(request: pytest.FixtureRequest) -> Runner:
    """Run a coordinator once, on one of the three ways a run can go."""
    return request.param  # type: ignore[no-any-return]


def slow(value: object = None, error: Exception | None = None) -> Callable[[], Any]:
    """A plain callback that sleeps SLOW seconds, then returns *value* or raises *error*."""

    def callback() -> Any:
        time.sleep(SLOW)
        if error is not None:
            raise error
        return value

    return callback


def raising(error: Exception) -> Callable[[], Any]:
    def callback() -> Any:
        raise error

    return callback


def flaky(failures: int, error: Exception | None = None) -> Callable[[Context], int]:
    """A callback that fails its first *failures* attempts, then returns its attempt number."""

    def callback(ctx: Context) -> int:
        if ctx.attempt <= failures:
            raise error if error is not None else OSError(f"attempt {ctx.attempt}")
        return ctx.attempt

    return callback


# -- outcomes of plain callbacks ------------------------------------------------------------


def test_ok_callbacks_take_one_attempt_and_their_wall_time(run: Runner):
    """An ok precheck and an ok job: one attempt each, not restored; seconds measure each callback alone."""
    result = run(coordinator_of(Step("slow", slow("J"), slow("P")), Step("quick", lambda: "Q", lambda: True)))

    assert result.ok
    assert fields(result) == [
        ("slow", "precheck", "ok", 1, False),
        ("slow", "job", "ok", 1, False),
        ("quick", "precheck", "ok", 1, False),
        ("quick", "job", "ok", 1, False),
    ]
    pre, job, quick_pre, quick_job = seconds(result)
    assert SLOW <= pre < 5
    assert SLOW <= job < 5
    assert 0 <= quick_pre < 1
    assert 0 <= quick_job < 1


def test_a_failed_job_has_one_failed_attempt_and_nothing_after_it(run: Runner):
    """A job that sleeps then raises: "failed", 1 attempt, its wall time; later steps have no entry."""
    result = run(coordinator_of(Step("a", lambda: "A"), Step("b", slow(error=ValueError("x"))), Step("c", lambda: 3)))

    assert fields(result) == [("a", "job", "ok", 1, False), ("b", "job", "failed", 1, False)]
    assert 0 <= result.trace[0].seconds < 1
    assert SLOW <= result.trace[1].seconds < 5


def test_a_failed_precheck_skips_its_job_with_zero_attempts_and_seconds(run: Runner):
    """A precheck that sleeps then raises is "failed" (1 attempt, its time); its job is "skipped": 0 attempts, 0.0 s."""
    result = run(coordinator_of(Step("s", lambda: "never", slow(error=KeyError("k"))), Step("next", lambda: "N")))

    assert result.ok
    assert fields(result) == [
        ("s", "precheck", "failed", 1, False),
        ("s", "job", "skipped", 0, False),
        ("next", "job", "ok", 1, False),
    ]
    assert SLOW <= result.trace[0].seconds < 5
    assert result.trace[1].seconds == 0.0
    assert 0 <= result.trace[2].seconds < 1


def test_a_precheck_raising_execution_canceled_is_canceled_and_ends_the_trace(run: Runner):
    """ExecutionCanceled from a precheck: "canceled", 1 attempt, its wall time; its job and later steps: no entry."""
    result = run(
        coordinator_of(Step("s", lambda: "never", slow(error=ExecutionCanceled("stop"))), Step("t", lambda: 1))
    )

    assert isinstance(result.fatal, ExecutionCanceled)
    assert fields(result) == [("s", "precheck", "canceled", 1, False)]
    assert SLOW <= result.trace[0].seconds < 5


def test_a_precheck_raising_skip_is_failed_and_its_job_skipped(run: Runner):
    """Skip from a precheck: precheck "failed" with 1 attempt; job "skipped" with 0 attempts and 0.0 s."""
    result = run(coordinator_of(Step("s", lambda: "never", raising(Skip("done", output=1))), Step("t", lambda: 2)))

    assert result.ok
    assert fields(result) == [
        ("s", "precheck", "failed", 1, False),
        ("s", "job", "skipped", 0, False),
        ("t", "job", "ok", 1, False),
    ]
    assert 0 <= result.trace[0].seconds < 1
    assert result.trace[1].seconds == 0.0


@pytest.mark.parametrize("phase", ["precheck", "job"])
def test_a_callback_refused_by_unassignable_input_has_zero_attempts_and_zero_seconds(run: Runner, phase: str):
    """A callback refusing the input by its annotation is "failed", 0 attempts, exactly 0.0 s; it ends the trace."""

    def takes_int(value: int) -> int:
        return value

    step = Step("typed", lambda: 1, takes_int) if phase == "precheck" else Step("typed", takes_int)
    result = run(coordinator_of(Step("first", slow("F")), step, Step("never", lambda: 2)), "text")

    assert fields(result) == [("first", "job", "ok", 1, False), ("typed", phase, "failed", 0, False)]
    assert SLOW <= result.trace[0].seconds < 5
    assert result.trace[1].seconds == 0.0


def test_an_unassignable_output_is_one_failed_attempt_with_its_wall_time(run: Runner):
    """A job returning a value its annotation refuses is "failed" after its one attempt, seconds included."""

    def wrong() -> int:
        time.sleep(SLOW)
        return "text"  # type: ignore[return-value]

    result = run(coordinator_of(Step("s", wrong)))

    assert fields(result) == [("s", "job", "failed", 1, False)]
    assert SLOW <= result.trace[0].seconds < 5


def test_a_job_returning_failure_is_one_failed_attempt(run: Runner):
    """A job returning `Failure(...)` is "failed" after one attempt, with its wall time."""

    def refuse() -> Result[int, str]:
        time.sleep(SLOW)
        return Failure("no")

    result = run(coordinator_of(Step("s", refuse)))

    assert fields(result) == [("s", "job", "failed", 1, False)]
    assert SLOW <= result.trace[0].seconds < 5


# -- retries ------------------------------------------------------------------------------------


def test_a_retried_then_ok_job_counts_its_attempts_and_the_waits(run: Runner):
    """`Retry(attempts=3, initial=0.05, jitter=0)` failing twice: "ok", 3 attempts; seconds include both waits."""
    retry = Retry(attempts=3, initial=0.05, jitter=0)
    result = run(coordinator_of(Step("s", flaky(2), retry=retry)))

    assert result.ok
    assert fields(result) == [("s", "job", "ok", 3, False)]
    assert 0.05 + 0.1 <= result.trace[0].seconds < 5
    assert result.data_bag.get_job_data("s") == 3


def test_a_retried_then_failed_job_counts_every_attempt_and_the_waits(run: Runner):
    """A job failing all 3 attempts: "failed", 3 attempts; seconds include the two waits."""
    retry = Retry(attempts=3, initial=0.05, jitter=0)
    result = run(coordinator_of(Step("s", flaky(99), retry=retry)))

    assert fields(result) == [("s", "job", "failed", 3, False)]
    assert 0.05 + 0.1 <= result.trace[0].seconds < 5
    assert str(result.errors[0].error) == "attempt 3"


def test_a_retried_precheck_counts_its_attempts_and_the_job_its_own(run: Runner):
    """With `prechecks=True` a precheck failing once then ok has 2 attempts and the wait; the job 1 attempt."""
    retry = Retry(attempts=3, initial=0.05, jitter=0, prechecks=True)
    result = run(coordinator_of(Step("s", lambda: "J", flaky(1), retry=retry)))

    assert fields(result) == [("s", "precheck", "ok", 2, False), ("s", "job", "ok", 1, False)]
    assert 0.05 <= result.trace[0].seconds < 5
    assert 0 <= result.trace[1].seconds < 1


# -- compensation -------------------------------------------------------------------------------


def test_compensation_entries_follow_the_forward_trace_with_their_own_fields(run: Runner):
    """An ok and a failing (retried) compensation: phase "compensate", their outcomes, attempts and wall times."""

    def undo_slowly() -> None:
        time.sleep(SLOW)

    retry = Retry(attempts=2, initial=0.05, jitter=0)
    result = run(
        coordinator_of(
            Step("a", lambda: "A", compensate=undo_slowly),
            Step("b", lambda: "B", compensate=raising(OSError("undo")), retry=retry),
            Step("c", raising(ValueError("boom"))),
        )
    )

    assert fields(result) == [
        ("a", "job", "ok", 1, False),
        ("b", "job", "ok", 1, False),
        ("c", "job", "failed", 1, False),
        ("b", "compensate", "failed", 2, False),
        ("a", "compensate", "ok", 1, False),
    ]
    assert [(c.step, c.outcome, c.attempts) for c in result.compensations] == [("b", "failed", 2), ("a", "ok", 1)]
    assert 0.05 <= result.trace[3].seconds < 5
    assert SLOW <= result.trace[4].seconds < 5


def test_a_compensated_failed_step_comes_first_with_its_attempts(run: Runner):
    """With `compensate_failed=True` the failed step's compensation (retried to success) runs first."""
    retry = Retry(attempts=3, initial=0, jitter=0)
    result = run(
        coordinator_of(
            Step("a", lambda: "A", compensate=lambda: None),
            Step("b", flaky(99, ValueError("no")), compensate=flaky(1), compensate_failed=True, retry=retry),
        )
    )

    assert fields(result) == [
        ("a", "job", "ok", 1, False),
        ("b", "job", "failed", 3, False),
        ("b", "compensate", "ok", 2, False),
        ("a", "compensate", "ok", 1, False),
    ]
    assert result.compensation_errors == ()


def test_a_compensation_refused_by_unassignable_input_has_zero_attempts_and_zero_seconds():
    """A compensation whose input annotation refuses the input is not called: "failed", 0 attempts, 0.0 seconds."""

    def undo(value: int) -> None:
        pass

    result = coordinator_of(Step("a", lambda: "A", compensate=undo), Step("b", raising(ValueError("x")))).run("text")

    assert fields(result) == [
        ("a", "job", "ok", 1, False),
        ("b", "job", "failed", 1, False),
        ("a", "compensate", "failed", 0, False),
    ]
    assert result.trace[2].seconds == 0.0


# -- async callbacks ------------------------------------------------------------------------------


def async_sleeper(value: object = None, error: Exception | None = None) -> Callable[[], Any]:
    async def callback() -> Any:
        await asyncio.sleep(SLOW)
        if error is not None:
            raise error
        return value

    return callback


def test_async_callbacks_have_the_same_fields_as_plain_ones(run: Runner):
    """Awaited precheck, job and compensation: the same outcomes and attempts as plain ones, and their wall time."""
    retry = Retry(attempts=2, initial=0.05, jitter=0)

    async def flaky_job(ctx: Context) -> int:
        await asyncio.sleep(0)
        if ctx.attempt == 1:
            raise OSError("once")
        return ctx.attempt

    result = run(
        coordinator_of(
            Step("a", async_sleeper("A"), async_sleeper(True), compensate=async_sleeper()),
            Step("b", flaky_job, retry=retry),
            Step("c", lambda: "never", async_sleeper(error=KeyError("k"))),
            Step("d", async_sleeper(error=ValueError("x"))),
        )
    )

    assert fields(result) == [
        ("a", "precheck", "ok", 1, False),
        ("a", "job", "ok", 1, False),
        ("b", "job", "ok", 2, False),
        ("c", "precheck", "failed", 1, False),
        ("c", "job", "skipped", 0, False),
        ("d", "job", "failed", 1, False),
        ("a", "compensate", "ok", 1, False),
    ]
    pre, job, retried, failed_pre, skipped, failed, undo = seconds(result)
    for measured in (pre, job, failed_pre, failed, undo):
        assert SLOW - ASYNC_SLACK <= measured < 5
    assert 0.05 - ASYNC_SLACK <= retried < 5
    assert skipped == 0.0


@pytest.mark.parametrize("phase", ["precheck", "job"])
@pytest.mark.parametrize("way", ["run", "run_async"])
def test_the_run_timeout_cancels_an_awaited_callback_after_one_attempt(way: str, phase: str):
    """The run's timeout cancels an awaiting callback: "canceled", 1 attempt, seconds up to the deadline; no more."""

    async def hang() -> None:
        await asyncio.sleep(30)

    step = Step("hang", lambda: "never", hang) if phase == "precheck" else Step("hang", hang)
    coordinator = coordinator_of(Step("first", lambda: "F"), step, Step("never", lambda: 1))
    started = time.perf_counter()
    result = coordinator.run(timeout=0.1) if way == "run" else asyncio.run(coordinator.run_async(timeout=0.1))
    elapsed = time.perf_counter() - started

    assert isinstance(result.fatal, RunCancelled)
    assert fields(result) == [("first", "job", "ok", 1, False), ("hang", phase, "canceled", 1, False)]
    assert 0.05 <= result.trace[1].seconds < 5  # the deadline is 0.1 s after the start; "first" took almost nothing
    assert elapsed < 5
    assert result.errors == ()


def test_a_plain_callback_that_outlasts_the_run_timeout_is_ok_and_nothing_follows():
    """A plain job is never interrupted: "ok" with its full wall time; the next step has no entry at all."""
    result = coordinator_of(Step("slow", slow("S")), Step("next", lambda: 1, lambda: True)).run(timeout=0.01)

    assert isinstance(result.fatal, RunCancelled)
    assert fields(result) == [("slow", "job", "ok", 1, False)]
    assert SLOW <= result.trace[0].seconds < 5


# -- fast path vs general loop --------------------------------------------------------------------


def mixed_flow() -> Coordinator[Any]:
    """Every kind of outcome in one flow, ending with a failed job and compensations."""

    def takes_int(value: int) -> int:
        return value

    def wrong() -> int:
        return "text"  # type: ignore[return-value]

    def refuse() -> Result[int, str]:
        return Failure("no")

    no_wait = Retry(attempts=3, initial=0, jitter=0)
    return coordinator_of(
        Step("plain", lambda: "P", lambda: "ok", compensate=lambda: None),
        Step("typed", takes_int, lambda: True),
        Step("skipped", lambda: "never", raising(Skip("done"))),
        Step("refused", lambda: "never", raising(KeyError("k"))),
        Step("wrong-pre", lambda: "never", wrong),
        Step("failure-pre", lambda: "never", refuse),
        Step("retried", flaky(2), retry=no_wait, compensate=raising(RuntimeError("undo"))),
        Step("failed", flaky(99), retry=no_wait),
        Step("never", lambda: "never"),
    )


def test_the_fast_path_and_the_general_loop_give_the_same_trace_fields():
    """The same flow run plainly, with `timeout=` (the general loop) and with `run_async`: identical trace fields."""
    coordinator = mixed_flow()

    expected = [
        ("plain", "precheck", "ok", 1, False),
        ("plain", "job", "ok", 1, False),
        ("typed", "precheck", "ok", 1, False),
        ("typed", "job", "ok", 1, False),
        ("skipped", "precheck", "failed", 1, False),
        ("skipped", "job", "skipped", 0, False),
        ("refused", "precheck", "failed", 1, False),
        ("refused", "job", "skipped", 0, False),
        ("wrong-pre", "precheck", "failed", 1, False),
        ("wrong-pre", "job", "skipped", 0, False),
        ("failure-pre", "precheck", "failed", 1, False),
        ("failure-pre", "job", "skipped", 0, False),
        ("retried", "job", "ok", 3, False),
        ("failed", "job", "failed", 3, False),
        ("retried", "compensate", "failed", 3, False),
        ("plain", "compensate", "ok", 1, False),
    ]
    for runner in (run_fast, run_loop, run_async):
        result = runner(coordinator, 7)
        assert fields(result) == expected, runner.__name__
        assert [c.seconds for c in result.trace if c.outcome == "skipped"] == [0.0] * 4
        assert all(0 <= c.seconds < 1 for c in result.trace)
        assert [(e.step, e.phase) for e in result.errors] == [
            ("skipped", "precheck"),
            ("refused", "precheck"),
            ("wrong-pre", "precheck"),
            ("failure-pre", "precheck"),
            ("failed", "job"),
        ]
        assert result.data_bag.get_job_data("typed") == 7


def test_a_fast_path_stopping_mid_flow_keeps_the_earlier_timings():
    """A run handed from the fast path to the general loop keeps the seconds of the callbacks already done."""
    coordinator = coordinator_of(Step("slow", slow("S"), slow("P")), Step("fails", slow(error=ValueError("x"))))

    for runner in (run_fast, run_loop):
        result = runner(coordinator)
        assert fields(result) == [
            ("slow", "precheck", "ok", 1, False),
            ("slow", "job", "ok", 1, False),
            ("fails", "job", "failed", 1, False),
        ]
        assert all(SLOW <= measured < 5 for measured in seconds(result)), runner.__name__
