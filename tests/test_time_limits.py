"""
Time limits cut waits short: no retry wait outlasts the run's deadline, and an awaited callback stops at its limit.

Each limit here is a fraction of a second and each wait it must cut takes 3 s,
so that the run ends well before the wait would have, on a loaded machine too.
"""

import asyncio
import time

import pytest

from choreograph import CallbackTimeout, Coordinator, Retry, RunCancelled, Step


def failing(calls: list[float]):
    def job() -> None:
        calls.append(time.perf_counter())
        raise OSError("busy")

    return job


@pytest.mark.parametrize("way", ["run", "run_async"])
def test_a_retry_wait_past_the_run_deadline_is_not_taken(way: str):
    """A 3 s retry wait with 0.2 s of run timeout left is not taken: one attempt, and the run ends at once."""
    calls: list[float] = []
    coordinator = Coordinator([Step("fetch", failing(calls), retry=Retry(attempts=2, initial=3.0, jitter=0.0))])
    started = time.perf_counter()
    result = coordinator.run(timeout=0.2) if way == "run" else asyncio.run(coordinator.run_async(timeout=0.2))
    elapsed = time.perf_counter() - started

    assert len(calls) == 1
    assert [(c.outcome, c.attempts) for c in result.trace] == [("failed", 1)]
    assert elapsed < 1.5


def test_a_retry_wait_within_the_run_deadline_is_taken():
    """A 0.05 s retry wait with seconds of run timeout left is taken, up to the policy's attempts."""
    calls: list[float] = []
    coordinator = Coordinator([Step("fetch", failing(calls), retry=Retry(attempts=3, initial=0.05, jitter=0.0))])
    result = coordinator.run(timeout=30)
    assert len(calls) == 3
    assert calls[1] - calls[0] >= 0.05
    assert [(c.outcome, c.attempts) for c in result.trace] == [("failed", 3)]


@pytest.mark.parametrize("way", ["run", "run_async"])
def test_an_async_callback_over_its_step_timeout_is_cancelled_at_the_limit(way: str):
    """An ``async def`` job that would take 3 s, with a 0.1 s step timeout, fails with `CallbackTimeout` early."""
    finished: list[bool] = []

    async def slow() -> int:
        await asyncio.sleep(3)
        finished.append(True)
        return 1

    coordinator = Coordinator([Step("slow", slow, timeout=0.1)])
    started = time.perf_counter()
    result = coordinator.run() if way == "run" else asyncio.run(coordinator.run_async())
    elapsed = time.perf_counter() - started

    (error,) = result.errors
    assert isinstance(error.error, CallbackTimeout)
    assert (error.error.step, error.error.phase, error.error.timeout) == ("slow", "job", 0.1)
    assert finished == []
    assert 0.09 <= result.trace[0].seconds < 1.5
    assert elapsed < 1.5


@pytest.mark.parametrize("way", ["run", "run_async"])
def test_the_run_timeout_cancels_an_awaited_callback_at_the_deadline(way: str):
    """An ``async def`` job that would take 3 s in a run with 0.1 s of timeout is cancelled: fatal `RunCancelled`."""

    async def slow() -> int:
        await asyncio.sleep(3)
        return 1

    coordinator = Coordinator([Step("slow", slow)])
    started = time.perf_counter()
    result = coordinator.run(timeout=0.1) if way == "run" else asyncio.run(coordinator.run_async(timeout=0.1))
    elapsed = time.perf_counter() - started

    assert isinstance(result.fatal, RunCancelled)
    assert (result.fatal.step, result.fatal.timeout) == ("slow", 0.1)
    assert [c.outcome for c in result.trace] == ["canceled"]
    assert elapsed < 1.5
