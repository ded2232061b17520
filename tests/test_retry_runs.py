"""
Retry policies observed through real runs: how many attempts, and how long the waits between them.

`test_retry.py` asks the policies directly; here every rule is checked on the
attempts a run makes (`Call.attempts`, `Call.seconds`, and the times at which
the callback was called), for `Retry` and for tenacity's strategies.

Time bounds follow from the rules: a wait is never shorter than asked, so
lower bounds are exact; upper bounds are generous, as the machine may be loaded.
"""

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
import tenacity
from returns.result import Failure

from choreograph import (
    Context,
    Coordinator,
    ExecutionCanceled,
    JobFailed,
    Retry,
    RetryPolicy,
    RunResult,
    Skip,
    Step,
    TenacityRetry,
)


def fields(result: RunResult[Any]) -> list[tuple[str, str, str, int]]:
    return [(c.step, c.phase, c.outcome, c.attempts) for c in result.trace]


class Attempts:
    """A callback that records when each attempt started and ended, and fails as told."""

    def __init__(self, failures: int = 10**6, error: Callable[[int], Exception] = lambda n: OSError(f"try {n}")):
        self.failures, self.error = failures, error
        self.starts: list[float] = []
        self.ends: list[float] = []

    def __call__(self, ctx: Context) -> int:
        self.starts.append(time.perf_counter())
        try:
            if ctx.attempt <= self.failures:
                raise self.error(ctx.attempt)
            return ctx.attempt
        finally:
            self.ends.append(time.perf_counter())

    def gaps(self) -> list[float]:
        """Seconds from the end of each attempt to the start of the next: the waits."""
        return [start - end for end, start in zip(self.ends, self.starts[1:], strict=False)]


# -- Retry(timeout=...) ----------------------------------------------------------------------------


def test_retry_timeout_gives_up_once_the_next_wait_would_pass_it():
    """
    `Retry(timeout=0.1)` waiting 0.02 s each time: a retry is taken only while elapsed + wait <= 0.1.

    Every wait lasts at least 0.02 s, so attempt k fails at elapsed >= (k - 1) * 0.02: at most 5 attempts
    (after the 5th, elapsed > 0.08), far fewer than the 100 allowed; the run gives up with elapsed + 0.02 > 0.1.
    """
    job = Attempts()
    retry = Retry(attempts=100, initial=0.02, multiplier=1, jitter=0, timeout=0.1)

    result = Coordinator([Step("s", job, retry=retry)]).run()

    (call,) = result.trace
    assert (call.outcome, call.attempts) == ("failed", len(job.starts))
    assert 2 <= call.attempts <= 5
    for attempt in range(call.attempts - 1):  # each retry taken obeyed the rule
        assert job.ends[attempt] - job.starts[0] + 0.02 <= 0.1
    assert all(gap >= 0.02 for gap in job.gaps())
    assert call.seconds + 0.02 > 0.1  # giving up obeyed it too: the next wait would have passed the timeout
    assert call.seconds < 1
    assert isinstance(result.fatal, JobFailed)
    assert str(result.fatal.error) == f"try {call.attempts}"


def test_retry_on_limits_retries_to_the_listed_types_and_their_subclasses():
    """`Retry(on=OSError)`: a ValueError fails after 1 attempt; a ConnectionError (an OSError) is retried."""
    retry = Retry(attempts=4, on=OSError, initial=0, jitter=0)
    value_error = Attempts(error=ValueError)
    connection_error = Attempts(failures=3, error=ConnectionError)

    refused = Coordinator([Step("s", value_error, retry=retry)]).run()
    retried = Coordinator([Step("s", connection_error, retry=retry)]).run()

    assert fields(refused) == [("s", "job", "failed", 1)]
    assert len(value_error.starts) == 1
    assert fields(retried) == [("s", "job", "ok", 4)]
    assert len(connection_error.starts) == 4


def test_retry_on_a_tuple_retries_each_listed_type():
    """`Retry(on=(KeyError, OSError))` retries both kinds; the run ends ok on the attempt that succeeds."""
    errors = iter([KeyError("k"), OSError("o")])

    def job(ctx: Context) -> int:
        error = next(errors, None)
        if error is not None:
            raise error
        return ctx.attempt

    result = Coordinator([Step("s", job, retry=Retry(attempts=3, on=(KeyError, OSError), initial=0, jitter=0))]).run()

    assert fields(result) == [("s", "job", "ok", 3)]
    assert result.data_bag.get_job_data("s") == 3


def test_retry_waits_grow_by_the_multiplier_and_stop_at_max_delay():
    """Waits are initial * multiplier ** (n - 1), capped: 0.03 then 0.09 s; with `max_delay=0.04`, 0.03 then 0.04 s."""
    growing = Attempts(failures=2)
    capped = Attempts(failures=2)

    grown = Coordinator([Step("s", growing, retry=Retry(attempts=3, initial=0.03, multiplier=3, jitter=0))]).run()
    cap = Retry(attempts=3, initial=0.03, multiplier=300, max_delay=0.04, jitter=0)  # uncapped: 9 s
    held = Coordinator([Step("s", capped, retry=cap)]).run()

    assert fields(grown) == [("s", "job", "ok", 3)]
    first, second = growing.gaps()
    assert first >= 0.03
    assert second >= 0.09
    assert grown.trace[0].seconds >= 0.03 + 0.09
    assert fields(held) == [("s", "job", "ok", 3)]
    assert capped.gaps()[1] >= 0.04
    assert 0.03 + 0.04 <= held.trace[0].seconds < 4.5


# -- never retried -------------------------------------------------------------------------------------


def retry_everything() -> RetryPolicy:
    return Retry(attempts=5, on=Exception, initial=0, jitter=0, prechecks=True)


def tenacity_everything() -> RetryPolicy:
    retrying = tenacity.Retrying(stop=tenacity.stop_after_attempt(5), wait=tenacity.wait_none())
    return TenacityRetry(retrying, prechecks=True)


class Counted:
    """Counts calls; each call returns or raises what `make` gives."""

    def __init__(self, make: Callable[[], object]) -> None:
        self.make, self.calls = make, 0

    def __call__(self) -> object:
        self.calls += 1
        outcome = self.make()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def wrong_output() -> int:
    return "text"  # type: ignore[return-value]


@pytest.mark.parametrize("policy", [retry_everything, tenacity_everything], ids=["Retry", "tenacity"])
@pytest.mark.parametrize(
    ("phase", "make", "expected"),
    [
        ("precheck", lambda: Skip("done"), [("s", "precheck", "failed", 1), ("s", "job", "skipped", 0)]),
        ("precheck", lambda: ExecutionCanceled("stop"), [("s", "precheck", "canceled", 1)]),
        ("precheck", lambda: Failure(ExecutionCanceled("stop")), [("s", "precheck", "canceled", 1)]),
        ("job", lambda: Skip("done"), [("s", "job", "failed", 1)]),
        ("job", lambda: ExecutionCanceled("stop"), [("s", "job", "failed", 1)]),
    ],
    ids=["precheck-Skip", "precheck-ExecutionCanceled", "precheck-Failure-ExecutionCanceled", "job-Skip", "job-cancel"],
)
def test_decisions_are_called_once_whatever_the_policy(
    policy: Callable[[], RetryPolicy], phase: str, make: Callable[[], object], expected: list[Any]
):
    """Skip and ExecutionCanceled are decisions: a policy retrying every error (prechecks too) calls them once."""
    callback = Counted(make)
    step = (
        Step("s", lambda: "J", callback, retry=policy()) if phase == "precheck" else Step("s", callback, retry=policy())
    )

    result = Coordinator([step]).run()

    assert fields(result) == expected
    assert callback.calls == 1


@pytest.mark.parametrize("policy", [retry_everything, tenacity_everything], ids=["Retry", "tenacity"])
@pytest.mark.parametrize("phase", ["precheck", "job"])
def test_an_unassignable_output_is_called_once_whatever_the_policy(policy: Callable[[], RetryPolicy], phase: str):
    """An output refused by its annotation is a bug, not a transient error: 1 attempt, for a precheck or a job."""
    calls: list[int] = []

    def wrong(ctx: Context) -> int:
        calls.append(ctx.attempt)
        return "text"  # type: ignore[return-value]

    step = Step("s", lambda: "J", wrong, retry=policy()) if phase == "precheck" else Step("s", wrong, retry=policy())

    result = Coordinator([step]).run()

    expected = (
        [("s", "precheck", "failed", 1), ("s", "job", "skipped", 0)]
        if phase == "precheck"
        else [("s", "job", "failed", 1)]
    )
    assert fields(result) == expected
    assert calls == [1]


# -- the run's timeout ------------------------------------------------------------------------------------


@pytest.mark.parametrize("way", ["run", "run_async"])
def test_a_retry_wait_that_would_pass_the_run_timeout_is_not_taken(way: str):
    """
    With `timeout=0.12` and waits of 0.05 s, a retry is taken only while now + wait < the deadline.

    Attempt 3 fails at >= 0.1 s, when a wait would end past 0.12 s: at most 3 attempts, and the job's
    own error ends the run (JobFailed, not RunCancelled), before the deadline passed by more than the wait.
    """
    job = Attempts()
    coordinator = Coordinator([Step("s", job, retry=Retry(attempts=10, initial=0.05, multiplier=1, jitter=0))])

    started = time.perf_counter()
    result = coordinator.run(timeout=0.12) if way == "run" else asyncio.run(coordinator.run_async(timeout=0.12))
    elapsed = time.perf_counter() - started

    (call,) = result.trace
    assert (call.outcome, call.attempts) == ("failed", len(job.starts))
    assert 2 <= call.attempts <= 3
    for attempt in range(call.attempts - 1):  # each retry taken ended before the deadline
        assert job.ends[attempt] - job.starts[0] + 0.05 < 0.12
    assert elapsed + 0.05 >= 0.12  # the retry not taken would have ended past it
    assert isinstance(result.fatal, JobFailed)
    assert str(result.fatal.error) == f"try {call.attempts}"
    assert call.seconds < 1


def test_retry_waits_within_the_run_timeout_are_taken():
    """Waits that end well before the run's deadline are all taken: every attempt is made."""
    job = Attempts(failures=2)

    result = Coordinator([Step("s", job, retry=Retry(attempts=3, initial=0.01, jitter=0))]).run(timeout=60)

    assert result.ok
    assert fields(result) == [("s", "job", "ok", 3)]


# -- tenacity's strategies -----------------------------------------------------------------------------


def with_tenacity(**strategies: Any) -> tenacity.Retrying:
    return tenacity.Retrying(**strategies)


@pytest.mark.parametrize("way", ["run", "run_async"])
def test_tenacity_stop_after_attempt_with_wait_fixed(way: str):
    """`stop_after_attempt(3)`, `wait_fixed(0.05)`: 3 attempts on a job that always fails, each wait >= 0.05 s."""
    job = Attempts()
    policy = with_tenacity(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_fixed(0.05))
    coordinator = Coordinator([Step("s", job, retry=policy)])  # type: ignore[arg-type]

    result = coordinator.run() if way == "run" else asyncio.run(coordinator.run_async())

    assert fields(result) == [("s", "job", "failed", 3)]
    assert len(job.starts) == 3
    assert all(gap >= 0.05 for gap in job.gaps())
    assert 0.1 <= result.trace[0].seconds < 5
    assert str(result.errors[0].error) == "try 3"


def test_tenacity_wait_exponential_sees_the_attempt_number():
    """`wait_exponential(multiplier=0.02)` waits 0.02 s after attempt 1 and 0.04 s after attempt 2."""
    job = Attempts(failures=2)
    policy = TenacityRetry(with_tenacity(stop=tenacity.stop_after_attempt(5), wait=tenacity.wait_exponential(0.02)))

    result = Coordinator([Step("s", job, retry=policy)]).run()

    assert fields(result) == [("s", "job", "ok", 3)]
    first, second = job.gaps()
    assert first >= 0.02
    assert second >= 0.04


def test_tenacity_stop_after_delay_stops_once_the_delay_passed():
    """
    `stop_after_delay(0.1)` with `wait_fixed(0.02)`: retried while under 0.1 s since the first attempt.

    Each wait lasts >= 0.02 s, so the 6th attempt fails past 0.1 s at the latest: at most 6 attempts.
    """
    job = Attempts()
    policy = with_tenacity(stop=tenacity.stop_after_delay(0.1), wait=tenacity.wait_fixed(0.02))

    result = Coordinator([Step("s", job, retry=policy)]).run()  # type: ignore[arg-type]

    (call,) = result.trace
    assert (call.outcome, call.attempts) == ("failed", len(job.starts))
    assert 2 <= call.attempts <= 6
    for attempt in range(call.attempts - 1):
        assert job.ends[attempt] - job.starts[0] < 0.1
    assert 0.1 <= call.seconds < 1


def test_tenacity_stop_before_delay_takes_the_next_wait_into_account():
    """`stop_before_delay(0.1)`, `wait_fixed(0.06)`: attempt 2 fails at >= 0.06 s, 0.06 s more would pass 0.1 s."""
    job = Attempts()
    policy = with_tenacity(stop=tenacity.stop_before_delay(0.1), wait=tenacity.wait_fixed(0.06))

    result = Coordinator([Step("s", job, retry=policy)]).run()  # type: ignore[arg-type]

    assert fields(result) == [("s", "job", "failed", 2)]
    assert result.trace[0].seconds < 0.1 + 0.06


def test_tenacity_retry_if_exception_type_decides_what_is_retried():
    """`retry_if_exception_type(OSError)`: a ValueError fails after 1 attempt; an OSError is retried."""
    policy = TenacityRetry(
        with_tenacity(
            stop=tenacity.stop_after_attempt(3),
            wait=tenacity.wait_none(),
            retry=tenacity.retry_if_exception_type(OSError),
        )
    )
    value_error = Attempts(error=ValueError)
    os_error = Attempts(failures=2)

    refused = Coordinator([Step("s", value_error, retry=policy)]).run()
    retried = Coordinator([Step("s", os_error, retry=policy)]).run()

    assert fields(refused) == [("s", "job", "failed", 1)]
    assert len(value_error.starts) == 1
    assert fields(retried) == [("s", "job", "ok", 3)]


def test_tenacity_retry_with_prechecks_true_retries_the_precheck():
    """`TenacityRetry(retrying, prechecks=True)` retries a failing precheck; a bare `Retrying` does not."""
    retrying = with_tenacity(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_fixed(0.02))
    retried_check = Attempts(failures=2)
    bare_check = Attempts(failures=2)

    retried = Coordinator([Step("s", lambda: "J", retried_check, retry=TenacityRetry(retrying, prechecks=True))]).run()
    bare = Coordinator([Step("s", lambda: "J", bare_check, retry=retrying)]).run()  # type: ignore[arg-type]

    assert fields(retried) == [("s", "precheck", "ok", 3), ("s", "job", "ok", 1)]
    assert retried.trace[0].seconds >= 0.04
    assert retried.data_bag.get_precheck_data("s") == 3
    assert retried.data_bag.get_job_data("s") == "J"
    assert fields(bare) == [("s", "precheck", "failed", 1), ("s", "job", "skipped", 0)]
    assert len(bare_check.starts) == 1
