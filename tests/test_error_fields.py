"""
The fields and messages of the errors a real run produces, exactly as users read them.

`test_errors.py` checks that errors survive pickling; here each error comes out of
a run (`run` and `run_async`, plain and ``async def`` callbacks), and its fields,
its place (error stack, fatal, compensation errors) and its `str()` are pinned.
"""

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from returns.io import IOFailure
from returns.result import Failure, Result, Success

from choreograph import (
    CallbackFailure,
    CallbackTimeout,
    Coordinator,
    ExecutionCanceled,
    JobFailed,
    RunCancelled,
    RunResult,
    Skip,
    Step,
    StepError,
    UnassignableInput,
    UnassignableOutput,
)


def coordinator_of(*steps: Step) -> Coordinator[Any]:
    return Coordinator(steps)


def raising(error: BaseException) -> Callable[[], Any]:
    def callback() -> Any:
        raise error

    return callback


def run_with(coordinator: Coordinator[Any], way: str, input: object = None, **options: Any) -> RunResult[Any]:  # noqa: A002
    if way == "run":
        return coordinator.run(input, **options)
    return asyncio.run(coordinator.run_async(input, **options))


WAYS = pytest.mark.parametrize("way", ["run", "run_async"])


async def hang() -> None:
    await asyncio.sleep(30)


def oversleep() -> None:
    time.sleep(0.05)


# -- RunCancelled ---------------------------------------------------------------------------------


@WAYS
def test_run_cancelled_names_the_timeout_and_the_step_that_was_about_to_run(way: str):
    """A plain callback outlasting `timeout=0.02`: RunCancelled(0.02, <the next step>), not on the error stack."""
    result = run_with(coordinator_of(Step("slow", oversleep), Step("next step", lambda: 1)), way, timeout=0.02)

    fatal = result.fatal
    assert type(fatal) is RunCancelled
    assert isinstance(fatal, TimeoutError)
    assert fatal.timeout == 0.02
    assert fatal.step == "next step"
    assert str(fatal) == "run timed out after 0.02s at step 'next step'"
    assert result.errors == ()
    with pytest.raises(RunCancelled) as raised:
        result.raise_for_fatal()
    assert raised.value is fatal


@WAYS
def test_run_cancelled_names_the_awaited_step_it_cancelled(way: str):
    """The timeout cancelling an awaited job: RunCancelled names that step and the run's timeout."""
    result = run_with(coordinator_of(Step("first", lambda: 1), Step("await", hang)), way, timeout=0.05)

    fatal = result.fatal
    assert type(fatal) is RunCancelled
    assert (fatal.timeout, fatal.step) == (0.05, "await")
    assert str(fatal) == "run timed out after 0.05s at step 'await'"
    assert result.errors == ()


@WAYS
def test_an_expired_zero_timeout_names_the_first_step(way: str):
    """`timeout=0` is expired at once: RunCancelled(0.0, <first step>), formatted as "0s"."""
    result = run_with(coordinator_of(Step("Start", lambda: 1)), way, timeout=0)

    fatal = result.fatal
    assert type(fatal) is RunCancelled
    assert fatal.timeout == 0.0
    assert fatal.step == "Start"
    assert str(fatal) == "run timed out after 0s at step 'Start'"


# -- CallbackTimeout ---------------------------------------------------------------------------------


@WAYS
@pytest.mark.parametrize("slow_job", [oversleep, hang], ids=["plain-overran", "async-cancelled"])
def test_a_job_timeout_is_a_callback_timeout_on_the_stack_and_inside_job_failed(way: str, slow_job: Callable[[], Any]):
    """A job past its step's `timeout`: CallbackTimeout(step, "job", timeout) as StepError.error and JobFailed.error."""
    result = run_with(coordinator_of(Step("load", slow_job, timeout=0.01), Step("never", lambda: 1)), way)

    (entry,) = result.errors
    assert type(entry) is StepError
    assert (entry.step, entry.phase) == ("load", "job")
    error = entry.error
    assert type(error) is CallbackTimeout
    assert isinstance(error, TimeoutError)
    assert (error.step, error.phase, error.timeout) == ("load", "job", 0.01)
    assert str(error) == "job of step 'load' took longer than its timeout of 0.01s"
    assert str(entry) == "job of step 'load': CallbackTimeout: job of step 'load' took longer than its timeout of 0.01s"
    fatal = result.fatal
    assert type(fatal) is JobFailed
    assert fatal.step == "load"
    assert fatal.error is error
    assert fatal.__cause__ is error
    assert (
        str(fatal)
        == "job of step 'load' failed: CallbackTimeout: job of step 'load' took longer than its timeout of 0.01s"
    )


@WAYS
@pytest.mark.parametrize("slow_check", [oversleep, hang], ids=["plain-overran", "async-cancelled"])
def test_a_precheck_timeout_names_the_precheck_and_skips_the_job(way: str, slow_check: Callable[[], Any]):
    """A precheck past its step's `timeout`: CallbackTimeout, phase "precheck"; the job is skipped, the run goes on."""
    result = run_with(coordinator_of(Step("check", lambda: "never", slow_check, timeout=0.01)), way)

    assert result.ok
    (entry,) = result.errors
    assert (entry.step, entry.phase) == ("check", "precheck")
    error = entry.error
    assert type(error) is CallbackTimeout
    assert (error.step, error.phase, error.timeout) == ("check", "precheck", 0.01)
    assert str(error) == "precheck of step 'check' took longer than its timeout of 0.01s"
    assert [c.outcome for c in result.trace] == ["failed", "skipped"]


@WAYS
@pytest.mark.parametrize("slow_undo", [oversleep, hang], ids=["plain-overran", "async-cancelled"])
def test_a_compensation_timeout_names_the_compensation(way: str, slow_undo: Callable[[], Any]):
    """A compensation past its step's `timeout`: CallbackTimeout, phase "compensate", in compensation_errors only."""
    coordinator = coordinator_of(
        Step("book", lambda: "B", compensate=slow_undo, timeout=0.01), Step("pay", raising(ValueError("no")))
    )

    result = run_with(coordinator, way)

    (entry,) = result.compensation_errors
    assert (entry.step, entry.phase) == ("book", "compensate")
    error = entry.error
    assert type(error) is CallbackTimeout
    assert (error.step, error.phase, error.timeout) == ("book", "compensate", 0.01)
    assert str(error) == "compensate of step 'book' took longer than its timeout of 0.01s"
    assert str(entry) == "compensate of step 'book': CallbackTimeout: " + str(error)
    assert [(e.step, e.phase) for e in result.errors] == [("pay", "job")]


# -- UnassignableInput and UnassignableOutput -----------------------------------------------------------


@pytest.mark.parametrize("phase", ["precheck", "job"])
@WAYS
def test_unassignable_input_names_step_callback_annotation_and_input_type(way: str, phase: str):
    """A refused input: fatal UnassignableInput(step, callback, expected, actual), not on the error stack."""

    def takes(value: list[int]) -> None:
        pass

    step = Step("Import", lambda: 1, takes) if phase == "precheck" else Step("Import", takes)
    result = run_with(coordinator_of(step), way, "text")

    fatal = result.fatal
    assert type(fatal) is UnassignableInput
    assert isinstance(fatal, TypeError)
    assert (fatal.step, fatal.callback, fatal.expected, fatal.actual) == ("Import", phase, "list[int]", "str")
    assert str(fatal) == f"step 'Import', {phase}: input of type str is not assignable to the annotation list[int]"
    assert result.errors == ()


def test_unassignable_input_of_a_compensation_is_a_compensation_error():
    """A compensation refusing the input: UnassignableInput with callback "compensate", in compensation_errors."""

    def undo(value: int) -> None:
        pass

    result = coordinator_of(Step("a", lambda: 1, compensate=undo), Step("b", raising(ValueError("x")))).run(None)

    (entry,) = result.compensation_errors
    assert (entry.step, entry.phase) == ("a", "compensate")
    error = entry.error
    assert type(error) is UnassignableInput
    assert (error.step, error.callback, error.expected, error.actual) == ("a", "compensate", "int", "None")
    assert str(error) == "step 'a', compensate: input of type None is not assignable to the annotation int"
    assert type(result.fatal) is JobFailed


@pytest.mark.parametrize("phase", ["precheck", "job"])
@WAYS
def test_unassignable_output_names_step_callback_annotation_and_output_type(way: str, phase: str):
    """A refused output: UnassignableOutput(step, callback, expected, actual) as the callback's error."""

    def gives() -> int | None:
        return "text"  # type: ignore[return-value]

    step = Step("Export", lambda: 1, gives) if phase == "precheck" else Step("Export", gives)
    result = run_with(coordinator_of(step), way)

    (entry,) = result.errors
    assert (entry.step, entry.phase) == ("Export", phase)
    error = entry.error
    assert type(error) is UnassignableOutput
    assert isinstance(error, TypeError)
    assert (error.step, error.callback, error.expected, error.actual) == ("Export", phase, "int | None", "str")
    assert str(error) == f"step 'Export', {phase}: output of type str is not assignable to the annotation int | None"
    if phase == "job":
        assert type(result.fatal) is JobFailed
        assert result.fatal.error is error
        assert str(result.fatal) == f"job of step 'Export' failed: UnassignableOutput: {error}"
    else:
        assert result.ok


@WAYS
def test_unassignable_output_of_a_result_names_the_success_type(way: str):
    """For `-> Result[int, str]`, a `Success("x")` is refused against `int`, naming the unwrapped value's type."""

    def gives() -> Result[int, str]:
        return Success("x")  # type: ignore[arg-type]

    result = run_with(coordinator_of(Step("s", gives)), way)

    error = result.errors[0].error
    assert type(error) is UnassignableOutput
    assert (error.step, error.callback, error.expected, error.actual) == ("s", "job", "int", "str")


def test_a_compensations_return_value_is_ignored_even_inside_a_success():
    """
    README: a compensation's return value is ignored.

    So `Success("x")` under `-> Result[int, str]` is ok, as "x" under `-> int` is.
    """

    def undo_plain() -> int:
        return "x"  # type: ignore[return-value]

    def undo_result() -> Result[int, str]:
        return Success("x")  # type: ignore[arg-type]

    result = coordinator_of(
        Step("a", lambda: 1, compensate=undo_plain),
        Step("b", lambda: 2, compensate=undo_result),
        Step("c", raising(ValueError("x"))),
    ).run()

    assert [(c.step, c.outcome) for c in result.compensations] == [("b", "ok"), ("a", "ok")]
    assert result.compensation_errors == ()


# -- JobFailed, StepError, CallbackFailure -----------------------------------------------------------


@WAYS
def test_job_failed_wraps_the_jobs_own_error(way: str):
    """A job raising: JobFailed(step, error) with `__cause__` the same object; the stack's StepError holds it too."""
    error = ValueError("card declined")
    result = run_with(coordinator_of(Step("ok", lambda: 1), Step("Pay", raising(error))), way)

    fatal = result.fatal
    assert type(fatal) is JobFailed
    assert fatal.step == "Pay"
    assert fatal.error is error
    assert fatal.__cause__ is error
    assert str(fatal) == "job of step 'Pay' failed: ValueError: card declined"
    (entry,) = result.errors
    assert type(entry) is StepError
    assert (entry.step, entry.phase) == ("Pay", "job")
    assert entry.error is error
    assert entry.__cause__ is error
    assert str(entry) == "job of step 'Pay': ValueError: card declined"


@WAYS
def test_step_errors_of_prechecks_keep_the_original_errors_in_order(way: str):
    """Precheck errors become StepErrors (step, "precheck", the original), in run order, each with its message."""
    missing = KeyError("sku")
    skip = Skip("already sent")
    result = run_with(
        coordinator_of(
            Step("Lookup", lambda: 1, raising(missing)),
            Step("Send", lambda: 2, raising(skip)),
            Step("Quiet", lambda: 3, raising(Skip())),
        ),
        way,
    )

    assert result.ok
    assert [(e.step, e.phase) for e in result.errors] == [
        ("Lookup", "precheck"),
        ("Send", "precheck"),
        ("Quiet", "precheck"),
    ]
    assert result.errors[0].error is missing
    assert result.errors[0].__cause__ is missing
    assert result.errors[1].error is skip
    assert [str(e) for e in result.errors] == [
        "precheck of step 'Lookup': KeyError: 'sku'",
        "precheck of step 'Send': Skip: already sent",
        "precheck of step 'Quiet': Skip: skipped",
    ]


@WAYS
@pytest.mark.parametrize("reason", ["out of stock", ""])
def test_execution_canceled_is_both_the_last_step_error_and_the_fatal(way: str, reason: str):
    """A precheck's ExecutionCanceled is the fatal itself (not wrapped) and the error stack's last entry's error."""
    canceled = ExecutionCanceled(reason)
    result = run_with(coordinator_of(Step("Reserve", lambda: 1, raising(canceled))), way)

    assert result.fatal is canceled
    (entry,) = result.errors
    assert (entry.step, entry.phase) == ("Reserve", "precheck")
    assert entry.error is canceled
    assert str(canceled) == (reason or "ExecutionCanceled")
    assert str(entry) == f"precheck of step 'Reserve': ExecutionCanceled: {reason or 'ExecutionCanceled'}"


@WAYS
@pytest.mark.parametrize(
    ("returned", "value"),
    [(Failure("x"), "x"), (Failure(42), 42), (IOFailure({"code": 7}), {"code": 7})],
    ids=["Failure-str", "Failure-int", "IOFailure-dict"],
)
def test_a_failure_of_a_non_exception_is_a_callback_failure_holding_it(way: str, returned: object, value: object):
    """`Failure(v)` for a non-exception `v`: CallbackFailure(v), with `.value` and `str()` "Failure(<repr>)"."""

    def job():  # unannotated: a returned container is unwrapped all the same
        return returned

    result = run_with(coordinator_of(Step("Pay", job)), way)

    fatal = result.fatal
    assert type(fatal) is JobFailed
    error = fatal.error
    assert type(error) is CallbackFailure
    assert error.value == value
    assert str(error) == f"Failure({value!r})"
    assert str(fatal) == f"job of step 'Pay' failed: CallbackFailure: Failure({value!r})"
    assert result.errors[0].error is error


@WAYS
def test_a_failure_of_an_exception_is_that_exception(way: str):
    """`Failure(exc)` fails the callback with *exc* itself, not a CallbackFailure."""
    error = OSError("disk full")

    def job() -> Result[int, Exception]:
        return Failure(error)

    result = run_with(coordinator_of(Step("Save", job)), way)

    assert type(result.fatal) is JobFailed
    assert result.fatal.error is error
    assert str(result.fatal) == "job of step 'Save' failed: OSError: disk full"


def test_a_failure_from_a_compensation_is_a_compensation_error():
    """A compensation returning `Failure("x")` fails it with CallbackFailure("x") in compensation_errors."""

    def undo() -> Result[None, str]:
        return Failure("x")

    result = coordinator_of(Step("a", lambda: 1, compensate=undo), Step("b", raising(ValueError("v")))).run()

    (entry,) = result.compensation_errors
    assert (entry.step, entry.phase) == ("a", "compensate")
    assert type(entry.error) is CallbackFailure
    assert entry.error.value == "x"
    assert str(entry) == "compensate of step 'a': CallbackFailure: Failure('x')"
