"""
Retry policies at their edges: a wait that ends exactly at the timeout, what tenacity strategies are shown, messages.

`Retry.delay` and `TenacityRetry.delay` are the `RetryPolicy` protocol users
implement and call; a tenacity strategy (``retry``, ``wait``, ``stop``) is
handed a `tenacity.RetryCallState` that must describe the failed attempt as
tenacity's own loop would.
"""

from typing import Any

import pytest
import tenacity

from choreograph import Retry, TenacityRetry


def test_a_wait_ending_exactly_at_the_timeout_is_taken():
    """`Retry(timeout=T)` still waits when the wait ends exactly T seconds after the first attempt."""
    policy = Retry(attempts=10, initial=1.0, jitter=0.0, timeout=2.0)
    assert policy.delay(OSError(), 1, 1.0) == 1.0
    assert policy.delay(OSError(), 1, 1.5) is None


def test_a_bad_on_says_what_it_got():
    """`Retry(on=...)` with something other than exception classes raises `TypeError` showing what it got."""
    with pytest.raises(TypeError) as excinfo:
        Retry(on=ValueError())  # type: ignore[arg-type]
    assert str(excinfo.value) == "Retry(on=...) must be an Exception subclass or a tuple of them, got ValueError()"


def test_the_tenacity_wrapper_names_what_it_got():
    """`TenacityRetry` of something that is not a tenacity ``Retrying`` raises `TypeError` naming its type."""
    with pytest.raises(TypeError) as excinfo:
        TenacityRetry(Retry())
    assert str(excinfo.value) == "expected a tenacity Retrying object, got Retry"


def test_tenacity_strategies_see_the_failed_attempt():
    """Custom ``retry``, ``wait`` and ``stop`` strategies get a call state describing the attempt that failed."""
    seen: dict[str, Any] = {}
    error = OSError("busy")

    def retry(state: tenacity.RetryCallState) -> bool:
        assert state.outcome is not None
        seen["retry"] = (
            state.retry_object,
            state.attempt_number,
            state.outcome.failed,
            state.outcome.exception(),
            state.outcome.attempt_number,
            state.args,
            state.kwargs,
            round(state.seconds_since_start or 0.0, 6),
        )
        return True

    def wait(state: tenacity.RetryCallState) -> float:
        seen["wait"] = state.attempt_number
        return 0.25

    def stop(state: tenacity.RetryCallState) -> bool:
        seen["stop"] = (state.attempt_number, state.upcoming_sleep)
        return False

    retrying = tenacity.Retrying(retry=retry, wait=wait, stop=stop)
    assert TenacityRetry(retrying).delay(error, 2, 1.5) == 0.25
    assert seen == {
        "retry": (retrying, 2, True, error, 2, (), {}, 1.5),
        "wait": 2,
        "stop": (2, 0.25),
    }


@pytest.mark.parametrize(("elapsed", "expected"), [(0.5, 0.0), (1.0, None), (2.0, None)])
def test_tenacity_stop_after_delay_reads_the_elapsed_time(elapsed: float, expected: float | None):
    """`stop_after_delay(1)` lets an attempt that failed under 1 s since the first be retried, and no later one."""
    policy = TenacityRetry(tenacity.Retrying(stop=tenacity.stop_after_delay(1), wait=tenacity.wait_none()))
    assert policy.delay(OSError(), 3, elapsed) == expected
