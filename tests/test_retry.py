import random

import pytest
import tenacity

from choreograph import (
    Coordinator,
    ExecutionCanceled,
    JobFailed,
    Retry,
    RetryPolicy,
    Step,
    StepDefinitionError,
    TenacityRetry,
    UnassignableOutput,
)


def flaky(failures: int, error: type[Exception] = OSError):
    calls: list[int] = []

    def job() -> int:
        calls.append(1)
        if len(calls) <= failures:
            raise error(f"failure {len(calls)}")
        return len(calls)

    return job, calls


def test_retry_delays_grow_exponentially_up_to_the_cap():
    """Without jitter, waits are initial * multiplier ** (n - 1), capped at max_delay."""
    policy = Retry(attempts=10, initial=0.5, multiplier=3.0, max_delay=5.0, jitter=0.0)
    waits = [policy.delay(OSError(), attempt, 0.0) for attempt in range(1, 6)]
    assert waits == [0.5, 1.5, 4.5, 5.0, 5.0]


def test_retry_jitter_stays_within_its_bound():
    """Jitter adds between 0 and `jitter` seconds to each wait."""
    policy = Retry(attempts=5, initial=1.0, multiplier=1.0, jitter=0.25, _random=random.Random(7))
    waits = [policy.delay(OSError(), 1, 0.0) for _ in range(200)]
    assert all(1.0 <= wait <= 1.25 for wait in waits)
    assert len(set(waits)) > 1


def test_retry_gives_up_after_its_timeout():
    """A wait that would end past `timeout` seconds since the first attempt is not taken."""
    policy = Retry(attempts=10, initial=1.0, jitter=0.0, timeout=2.5)
    assert policy.delay(OSError(), 1, 1.0) == 1.0
    assert policy.delay(OSError(), 2, 1.0) is None


@pytest.mark.parametrize(
    "error", [ExecutionCanceled("stop"), UnassignableOutput("s", "job", "int", "str"), KeyError("k")]
)
def test_retry_refuses_decisions_mismatches_and_unlisted_errors(error):
    """ExecutionCanceled and type mismatches never retry; nor do errors outside `on`."""
    assert Retry(attempts=5, on=(OSError, ExecutionCanceled, UnassignableOutput)).delay(error, 1, 0.0) is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"attempts": 0}, "attempts"),
        ({"attempts": True}, "attempts"),
        ({"initial": -1}, "initial"),
        ({"multiplier": float("nan")}, "multiplier"),
        ({"jitter": "1"}, "jitter"),
        ({"on": ValueError()}, "on"),
        ({"on": ()}, "on"),
        ({"on": (KeyboardInterrupt,)}, "on"),
    ],
)
def test_retry_rejects_bad_settings_naming_them(options, message):
    """Bad Retry settings raise at construction with the setting's name in the message."""
    with pytest.raises((ValueError, TypeError), match=message):
        Retry(**options)


def test_our_policy_and_the_tenacity_wrapper_satisfy_the_protocol():
    """Retry and TenacityRetry are RetryPolicy implementations."""
    assert isinstance(Retry(), RetryPolicy)
    assert isinstance(TenacityRetry(tenacity.Retrying()), RetryPolicy)


def test_a_tenacity_retrying_object_drives_the_attempts():
    """A bare tenacity.Retrying is accepted: its stop, wait and retry strategies decide."""
    job, calls = flaky(2)
    policy = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_fixed(0),
        retry=tenacity.retry_if_exception_type(OSError),
    )
    coordinator = Coordinator([Step("s", job, retry=policy)])  # type: ignore[arg-type]
    result = coordinator.run()
    assert result.ok
    assert len(calls) == 3
    assert [call.attempts for call in result.trace] == [3]


def test_tenacity_stop_ends_the_attempts():
    """When tenacity's stop strategy says stop, the last error stands."""
    job, calls = flaky(5)
    policy = TenacityRetry(tenacity.Retrying(stop=tenacity.stop_after_attempt(2), wait=tenacity.wait_none()))
    result = Coordinator([Step("s", job, retry=policy)]).run()
    assert not result.ok
    assert len(calls) == 2
    assert str(result.errors[0].error) == "failure 2"


def test_tenacity_retry_predicate_is_respected():
    """Errors tenacity's `retry` predicate rejects are not retried."""
    job, calls = flaky(5, error=KeyError)
    policy = TenacityRetry(
        tenacity.Retrying(retry=tenacity.retry_if_exception_type(OSError), wait=tenacity.wait_none())
    )
    Coordinator([Step("s", job, retry=policy)]).run()
    assert len(calls) == 1


def test_tenacity_wrapper_rejects_other_objects():
    """TenacityRetry needs a tenacity Retrying object."""
    with pytest.raises(TypeError, match="tenacity"):
        TenacityRetry(object())


def test_a_retry_of_the_wrong_kind_is_a_definition_error():
    """Step(retry=...) with something that is no policy is refused by add_step, naming the step."""
    with pytest.raises(StepDefinitionError, match=r"'s'.*retry must be"):
        Coordinator().add_step(Step("s", lambda: 1, retry=3))  # type: ignore[arg-type]


def test_retries_are_logged_when_logging_is_on(log_records):
    """With logging enabled, each retry is logged as its attempt starts, with step, phase and attempt in extra."""
    job, _ = flaky(2)
    Coordinator([Step("s", job, retry=Retry(attempts=3, initial=0, jitter=0))]).run()
    retries = [r for r in log_records if "retrying" in r["message"]]
    assert [(r["extra"]["step"], r["extra"]["phase"], r["extra"]["attempt"]) for r in retries] == [
        ("s", "job", 2),
        ("s", "job", 3),
    ]
    assert {r["level"].name for r in retries} == {"INFO"}


def test_no_retry_waits_past_the_run_deadline():
    """A retry whose wait would end after the run's deadline is not taken."""
    job, calls = flaky(3)
    step = Step("s", job, retry=Retry(attempts=2, initial=3.0, jitter=0))  # a wrong retry fails after 3 s, not 70
    result = Coordinator([step]).run(timeout=1.0)
    assert len(calls) == 1
    assert not result.ok
    # The job's error stands at once: a wait taken and then cut off by the deadline would end in RunCancelled.
    assert isinstance(result.fatal, JobFailed)
    assert str(result.fatal.error) == "failure 1"
    assert [(c.step, c.outcome, c.attempts) for c in result.trace] == [("s", "failed", 1)]
