"""Run semantics of `Coordinator.run`, clause by clause (API.md, "Run semantics")."""

import io
import time
from collections.abc import Callable
from typing import Any, Literal, Protocol, TypedDict, runtime_checkable

import pytest
from returns.io import IOFailure, IOResult, IOSuccess
from returns.result import Failure, Result, Success

from choreograph import (
    CallbackFailure,
    CallbackTimeout,
    ChoreographError,
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
    StepError,
    UnassignableInput,
    UnassignableOutput,
)


def trace_of(result: RunResult[Any]) -> list[tuple[str, str, str]]:
    return [(c.step, c.phase, c.outcome) for c in result.trace]


def forward_trace_of(result: RunResult[Any]) -> list[tuple[str, str, str]]:
    return [(c.step, c.phase, c.outcome) for c in result.trace if c.phase in {"precheck", "job"}]


def errors_of(result: RunResult[Any]) -> list[tuple[str, str, type[BaseException]]]:
    return [(e.step, e.phase, type(e.error)) for e in result.errors]


def coordinator_of(*steps: Step) -> Coordinator[Any]:
    coordinator: Coordinator[Any] = Coordinator()
    for step in steps:
        coordinator.add_step(step)
    return coordinator


class Calls:
    """Records which callbacks were called, in order."""

    def __init__(self) -> None:
        self.log: list[str] = []

    def ok(self, label: str, value: object = None) -> Callable[[], object]:
        def callback() -> object:
            self.log.append(label)
            return value

        return callback

    def raising(self, label: str, error: BaseException) -> Callable[[], object]:
        def callback() -> object:
            self.log.append(label)
            raise error

        return callback


@pytest.fixture
def calls() -> Calls:
    return Calls()


class Canceled(ExecutionCanceled):
    """A user's subclass of ExecutionCanceled."""


# -- outputs -------------------------------------------------------------------


def test_precheck_and_job_outputs_are_stored_under_the_step_name():
    """A passing precheck's output is precheck data and the job's output job data, both under the step name."""

    def precheck() -> int:
        return 7

    def job() -> str:
        return "done"

    result = coordinator_of(Step("load", job, precheck)).run()

    assert trace_of(result) == [("load", "precheck", "ok"), ("load", "job", "ok")]
    assert errors_of(result) == []
    assert result.fatal is None
    assert result.ok
    assert result.data_bag.get_precheck_data("load") == 7
    assert result.data_bag.get_job_data("load") == "done"


def test_absent_precheck_has_no_trace_entry_and_no_precheck_data():
    """A step without a precheck has only its job in the trace and stores no precheck data."""
    result = coordinator_of(Step("only", lambda: 1)).run()

    assert trace_of(result) == [("only", "job", "ok")]
    assert errors_of(result) == []
    assert result.ok
    assert not result.data_bag.has_precheck_data("only")
    assert result.data_bag.get_job_data("only") == 1


def test_steps_run_in_order_and_later_steps_see_earlier_outputs(calls):
    """Steps run in the order added, and a job sees the outputs of the steps before it."""

    def second(ctx: Context) -> int:
        calls.log.append("second")
        return ctx.data_bag.get_job_data("first") + 1

    result = coordinator_of(Step("first", calls.ok("first", 1)), Step("second", second)).run()

    assert calls.log == ["first", "second"]
    assert trace_of(result) == [("first", "job", "ok"), ("second", "job", "ok")]
    assert result.data_bag.get_job_data("second") == 2


def test_callbacks_receive_the_run_input():
    """A callback's input parameter receives the run's input, and `ctx.input` is the same object."""
    record = {"id": 3}
    seen: list[object] = []

    def precheck(ctx: Context, value: dict[str, int]) -> None:
        seen.append(value)
        seen.append(ctx.input)

    def job(value):
        seen.append(value)
        return value["id"]

    result = coordinator_of(Step("s", job, precheck)).run(record)

    assert result.ok
    assert result.input is record
    assert all(item is record for item in seen)
    assert len(seen) == 3
    assert result.data_bag.get_job_data("s") == 3


@pytest.mark.parametrize(
    ("returned", "expected"),
    [(Success(5), 5), (IOSuccess(5), 5)],
    ids=["Success", "IOSuccess"],
)
@pytest.mark.parametrize("annotated", [True, False], ids=["int", "unannotated"])
def test_success_containers_are_unwrapped(returned, expected, annotated):
    """`Success(v)` and `IOSuccess(v)` returned by a precheck or a job store `v`, annotated or not."""
    if annotated:

        def precheck() -> int:
            return returned

        def job() -> int:
            return returned
    else:

        def precheck():
            return returned

        def job():
            return returned

    result = coordinator_of(Step("s", job, precheck)).run()

    assert trace_of(result) == [("s", "precheck", "ok"), ("s", "job", "ok")]
    assert errors_of(result) == []
    assert result.ok
    assert result.data_bag.get_precheck_data("s") == expected
    assert result.data_bag.get_job_data("s") == expected
    assert type(result.data_bag.get_job_data("s")) is int


def test_result_annotation_checks_the_unwrapped_value():
    """For `-> Result[int, str]` and `-> IOResult[int, str]`, the unwrapped success value is checked against int."""

    def precheck() -> IOResult[int, str]:
        return IOSuccess(4)

    def job() -> Result[int, str]:
        return Success(5)

    result = coordinator_of(Step("s", job, precheck)).run()

    assert trace_of(result) == [("s", "precheck", "ok"), ("s", "job", "ok")]
    assert result.ok
    assert result.data_bag.get_precheck_data("s") == 4
    assert result.data_bag.get_job_data("s") == 5


def test_result_annotation_rejects_a_wrong_unwrapped_value():
    """A `-> Result[int, str]` job returning `Success("x")` fails with UnassignableOutput and stores nothing."""

    def job() -> Result[int, str]:
        return Success("x")

    result = coordinator_of(Step("s", job)).run()

    assert trace_of(result) == [("s", "job", "failed")]
    assert errors_of(result) == [("s", "job", UnassignableOutput)]
    assert isinstance(result.fatal, JobFailed)
    assert isinstance(result.fatal.error, UnassignableOutput)
    assert not result.data_bag.has_job_data("s")


def test_none_annotated_job_stores_no_output():
    """A job annotated `-> None` has no output: whatever it returns is ignored."""

    def job() -> None:
        return 5  # type: ignore[return-value]

    result = coordinator_of(Step("s", job)).run()

    assert trace_of(result) == [("s", "job", "ok")]
    assert result.ok
    assert not result.data_bag.has_job_data("s")


def test_unannotated_job_stores_its_return_value_even_none():
    """An unannotated callback has an output: its return value, None included."""

    def precheck():
        return None

    def job():
        return None

    result = coordinator_of(Step("s", job, precheck)).run()

    assert result.ok
    assert result.data_bag.has_precheck_data("s")
    assert result.data_bag.get_precheck_data("s") is None
    assert result.data_bag.has_job_data("s")
    assert result.data_bag.get_job_data("s") is None


# -- the precheck: ExecutionCanceled --------------------------------------------


@pytest.mark.parametrize(
    "how",
    ["raise", "raise-subclass", "return-failure"],
)
def test_precheck_execution_canceled_stops_the_run(calls, how):
    """A precheck raising (or returning `Failure` of) ExecutionCanceled or a subclass stops the run with that error."""
    error = Canceled("stop") if how == "raise-subclass" else ExecutionCanceled("stop")
    precheck = calls.ok("gate.precheck", Failure(error)) if how == "return-failure" else None
    if precheck is None:
        precheck = calls.raising("gate.precheck", error)
    coordinator = coordinator_of(
        Step("first", calls.ok("first.job", 1)),
        Step("gate", calls.ok("gate.job", 2), precheck),
        Step("later", calls.ok("later.job", 3), calls.ok("later.precheck", 4)),
    )

    result = coordinator.run()

    assert calls.log == ["first.job", "gate.precheck"]
    assert trace_of(result) == [("first", "job", "ok"), ("gate", "precheck", "canceled")]
    assert errors_of(result) == [("gate", "precheck", type(error))]
    assert result.errors[0].error is error
    assert result.fatal is error
    assert not result.ok
    assert result.data_bag.get_job_data("first") == 1
    assert not result.data_bag.has_precheck_data("gate")
    assert not result.data_bag.has_job_data("gate")
    assert not result.data_bag.has_precheck_data("later")
    assert not result.data_bag.has_job_data("later")


# -- the precheck: Skip ---------------------------------------------------------


def test_precheck_skip_with_output_stores_it_unchecked_and_skips_the_job(calls):
    """`Skip(reason, output=v)` stores v as precheck data (even against `-> int`), skips the job; the run goes on."""
    skip = Skip("why", output="not an int")

    def precheck() -> int:
        calls.log.append("gate.precheck")
        raise skip

    coordinator = coordinator_of(
        Step("gate", calls.ok("gate.job", 1), precheck),
        Step("next", calls.ok("next.job", 2)),
    )

    result = coordinator.run()

    assert calls.log == ["gate.precheck", "next.job"]
    assert trace_of(result) == [("gate", "precheck", "failed"), ("gate", "job", "skipped"), ("next", "job", "ok")]
    assert errors_of(result) == [("gate", "precheck", Skip)]
    assert result.errors[0].error is skip
    assert result.fatal is None
    assert result.ok
    assert result.data_bag.get_precheck_data("gate") == "not an int"
    assert not result.data_bag.has_job_data("gate")
    assert result.data_bag.get_job_data("next") == 2
    skipped = result.trace[1]
    assert skipped.seconds == 0


def test_precheck_skip_with_output_none_stores_none():
    """`Skip(output=None)` stores None: an explicit None is an output."""

    def precheck() -> int:
        raise Skip(output=None)

    result = coordinator_of(Step("gate", lambda: 1, precheck)).run()

    assert trace_of(result) == [("gate", "precheck", "failed"), ("gate", "job", "skipped")]
    assert result.ok
    assert result.data_bag.has_precheck_data("gate")
    assert result.data_bag.get_precheck_data("gate") is None


def test_precheck_skip_without_output_stores_nothing(calls):
    """`Skip()` without an output stores no precheck data; the job is skipped and the run goes on."""
    coordinator = coordinator_of(
        Step("gate", calls.ok("gate.job", 1), calls.raising("gate.precheck", Skip())),
        Step("next", calls.ok("next.job", 2)),
    )

    result = coordinator.run()

    assert calls.log == ["gate.precheck", "next.job"]
    assert trace_of(result) == [("gate", "precheck", "failed"), ("gate", "job", "skipped"), ("next", "job", "ok")]
    assert errors_of(result) == [("gate", "precheck", Skip)]
    assert result.ok
    assert not result.data_bag.has_precheck_data("gate")
    assert not result.data_bag.has_job_data("gate")


# -- the precheck: other errors -------------------------------------------------


@pytest.mark.parametrize(
    ("make", "error_type"),
    [
        (lambda calls, err: calls.raising("gate.precheck", err), ValueError),
        (lambda calls, err: calls.ok("gate.precheck", Failure(err)), ValueError),
        (lambda calls, err: calls.ok("gate.precheck", IOFailure(err)), ValueError),
        (lambda calls, err: calls.ok("gate.precheck", Failure("text")), CallbackFailure),
    ],
    ids=["raise", "Failure", "IOFailure", "Failure-text"],
)
def test_precheck_error_skips_the_job_and_the_run_goes_on(calls, make, error_type):
    """Any other precheck exception or Failure is pushed, its job is skipped, and the next steps run."""
    error = ValueError("bad")
    coordinator = coordinator_of(
        Step("gate", calls.ok("gate.job", 1), make(calls, error)),
        Step("next", calls.ok("next.job", 2), calls.ok("next.precheck", 3)),
    )

    result = coordinator.run()

    assert calls.log == ["gate.precheck", "next.precheck", "next.job"]
    assert trace_of(result) == [
        ("gate", "precheck", "failed"),
        ("gate", "job", "skipped"),
        ("next", "precheck", "ok"),
        ("next", "job", "ok"),
    ]
    assert errors_of(result) == [("gate", "precheck", error_type)]
    if error_type is ValueError:
        assert result.errors[0].error is error
    else:
        assert result.errors[0].error.value == "text"
    assert result.fatal is None
    assert result.ok
    assert not result.data_bag.has_precheck_data("gate")
    assert not result.data_bag.has_job_data("gate")
    assert result.data_bag.get_precheck_data("next") == 3
    assert result.data_bag.get_job_data("next") == 2


def test_error_stack_entries_are_step_errors_caused_by_the_original():
    """Each error stack entry is a StepError whose `.error` is also its `__cause__`."""
    error = KeyError("k")

    def precheck():
        raise error

    result = coordinator_of(Step("gate", lambda: 1, precheck)).run()

    (entry,) = result.errors
    assert isinstance(entry, StepError)
    assert isinstance(entry, ChoreographError)
    assert entry.error is error
    assert entry.__cause__ is error


def test_precheck_wrong_output_type_skips_the_job_and_is_not_stored(calls):
    """A precheck output that violates `-> int` is an UnassignableOutput: pushed, job skipped, not stored."""

    def precheck() -> int:
        calls.log.append("gate.precheck")
        return "nope"  # type: ignore[return-value]

    coordinator = coordinator_of(
        Step("gate", calls.ok("gate.job", 1), precheck),
        Step("next", calls.ok("next.job", 2)),
    )

    result = coordinator.run()

    assert calls.log == ["gate.precheck", "next.job"]
    assert trace_of(result) == [("gate", "precheck", "failed"), ("gate", "job", "skipped"), ("next", "job", "ok")]
    assert errors_of(result) == [("gate", "precheck", UnassignableOutput)]
    assert result.ok
    assert not result.data_bag.has_precheck_data("gate")
    assert not result.data_bag.has_job_data("gate")


# -- the job --------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [ValueError("bad"), ExecutionCanceled("stop"), Canceled("stop"), Skip("why"), Skip("why", output=9)],
    ids=["ValueError", "ExecutionCanceled", "subclass", "Skip", "Skip-output"],
)
def test_job_exception_stops_the_run_with_job_failed(calls, error):
    """Any exception raised by a job (ExecutionCanceled and Skip included) is pushed and stops the run: JobFailed."""
    coordinator = coordinator_of(
        Step("first", calls.ok("first.job", 1)),
        Step("bad", calls.raising("bad.job", error), calls.ok("bad.precheck", 2)),
        Step("later", calls.ok("later.job", 3), calls.ok("later.precheck", 4)),
    )

    result = coordinator.run()

    assert calls.log == ["first.job", "bad.precheck", "bad.job"]
    assert trace_of(result) == [("first", "job", "ok"), ("bad", "precheck", "ok"), ("bad", "job", "failed")]
    assert errors_of(result) == [("bad", "job", type(error))]
    assert result.errors[0].error is error
    fatal = result.fatal
    assert isinstance(fatal, JobFailed)
    assert fatal.step == "bad"
    assert fatal.error is error
    assert fatal.__cause__ is error
    assert not result.ok
    assert result.data_bag.get_job_data("first") == 1
    assert result.data_bag.get_precheck_data("bad") == 2
    assert not result.data_bag.has_job_data("bad")
    assert not result.data_bag.has_precheck_data("later")
    assert not result.data_bag.has_job_data("later")


@pytest.mark.parametrize("annotation", ["none", "int", "unannotated"])
@pytest.mark.parametrize("container", [Failure, IOFailure])
def test_job_returning_failure_stops_the_run(calls, annotation, container):
    """A job returning `Failure(e)`/`IOFailure(e)`, even one annotated `-> None`, fails: JobFailed with e."""
    error = ValueError("bad")

    def none_job() -> None:
        calls.log.append("bad.job")
        return container(error)  # type: ignore[return-value]

    def int_job() -> int:
        calls.log.append("bad.job")
        return container(error)  # type: ignore[return-value]

    def unannotated_job():
        calls.log.append("bad.job")
        return container(error)

    job = {"none": none_job, "int": int_job, "unannotated": unannotated_job}[annotation]
    coordinator = coordinator_of(Step("bad", job), Step("later", calls.ok("later.job", 1)))

    result = coordinator.run()

    assert calls.log == ["bad.job"]
    assert trace_of(result) == [("bad", "job", "failed")]
    assert errors_of(result) == [("bad", "job", ValueError)]
    assert isinstance(result.fatal, JobFailed)
    assert result.fatal.step == "bad"
    assert result.fatal.error is error
    assert result.fatal.__cause__ is error
    assert not result.ok
    assert not result.data_bag.has_job_data("bad")
    assert not result.data_bag.has_job_data("later")


def test_job_returning_non_exception_failure_fails_with_callback_failure():
    """A job returning `Failure("text")` fails with a CallbackFailure whose `.value` is "text"."""

    def job() -> Result[int, str]:
        return Failure("text")

    result = coordinator_of(Step("bad", job)).run()

    assert trace_of(result) == [("bad", "job", "failed")]
    assert errors_of(result) == [("bad", "job", CallbackFailure)]
    fatal = result.fatal
    assert isinstance(fatal, JobFailed)
    assert isinstance(fatal.error, CallbackFailure)
    assert fatal.error.value == "text"
    assert fatal.__cause__ is fatal.error
    assert not result.data_bag.has_job_data("bad")


@pytest.mark.parametrize(
    ("hint", "value"),
    [(int, "x"), (list[int], ["a"]), (str | None, 3)],
    ids=["int", "list[int]", "str|None"],
)
def test_job_wrong_output_type_fails_and_is_not_stored(calls, hint, value):
    """A job output that violates its return annotation fails the job with UnassignableOutput; nothing is stored."""

    def job():
        calls.log.append("bad.job")
        return value

    job.__annotations__ = {"return": hint}
    coordinator = coordinator_of(Step("bad", job), Step("later", calls.ok("later.job", 1)))

    result = coordinator.run()

    assert calls.log == ["bad.job"]
    assert trace_of(result) == [("bad", "job", "failed")]
    assert errors_of(result) == [("bad", "job", UnassignableOutput)]
    assert isinstance(result.fatal, JobFailed)
    assert result.fatal.step == "bad"
    assert isinstance(result.fatal.error, UnassignableOutput)
    assert result.fatal.__cause__ is result.fatal.error
    assert not result.data_bag.has_job_data("bad")
    assert not result.data_bag.has_job_data("later")


# -- input checks ----------------------------------------------------------------


def test_job_input_mismatch_is_a_fatal_unassignable_input(calls):
    """An input that violates the job's input annotation is fatal UnassignableInput; the job is not called."""

    def job(record: int) -> int:
        calls.log.append("check.job")
        return record

    coordinator = coordinator_of(
        Step("first", calls.ok("first.job", 1)),
        Step("check", job, calls.ok("check.precheck", 2)),
        Step("later", calls.ok("later.job", 3)),
    )

    result = coordinator.run("a string")

    assert calls.log == ["first.job", "check.precheck"]
    assert trace_of(result) == [("first", "job", "ok"), ("check", "precheck", "ok"), ("check", "job", "failed")]
    assert errors_of(result) == []
    fatal = result.fatal
    assert isinstance(fatal, UnassignableInput)
    assert isinstance(fatal, ChoreographError)
    assert isinstance(fatal, TypeError)
    message = str(fatal)
    assert "check" in message
    assert "job" in message
    assert "int" in message
    assert "str" in message
    assert not result.ok
    refused = result.trace[2]
    assert refused.seconds == 0
    assert refused.attempts == 0
    assert result.data_bag.get_precheck_data("check") == 2
    assert not result.data_bag.has_job_data("check")
    assert not result.data_bag.has_job_data("later")


def test_precheck_input_mismatch_is_fatal_and_the_job_is_not_called(calls):
    """An input that violates the precheck's input annotation is fatal; neither the precheck nor the job run."""

    def precheck(ctx: Context, record: bytes) -> None:
        calls.log.append("check.precheck")

    coordinator = coordinator_of(Step("check", calls.ok("check.job", 1), precheck))

    result = coordinator.run(3.5)

    assert calls.log == []
    assert trace_of(result) == [("check", "precheck", "failed")]
    assert errors_of(result) == []
    fatal = result.fatal
    assert isinstance(fatal, UnassignableInput)
    message = str(fatal)
    assert "check" in message
    assert "precheck" in message
    assert "bytes" in message
    assert "float" in message
    assert result.trace[0].seconds == 0
    assert not result.data_bag.has_job_data("check")


class Rec(TypedDict):
    id: int


@runtime_checkable
class Closable(Protocol):
    def close(self) -> None: ...


@pytest.mark.parametrize(
    ("hint", "good", "bad"),
    [
        (list[int], [1, 2], ["a"]),
        (int | None, None, "x"),
        (int | None, 3, 2.5),
        (dict[str, int], {"a": 1}, {"a": "b"}),
        (tuple[int, str], (1, "a"), (1, 2)),
        (Rec, {"id": 1}, [1]),
        (Closable, io.StringIO(), 3),
        (Literal["a", "b"], "a", "c"),
    ],
    ids=["list[int]", "int|None-none", "int|None-int", "dict", "tuple", "TypedDict", "Protocol", "Literal"],
)
def test_generic_input_hints_follow_beartype(hint, good, bad):
    """Inputs are checked against generic hints with beartype semantics: the good value passes, the bad one is fatal."""
    called: list[object] = []

    def job(record):
        called.append(record)
        return "seen"

    job.__annotations__ = {"record": hint}
    coordinator = coordinator_of(Step("s", job))

    passed = coordinator.run(good)
    refused = coordinator.run(bad)

    assert trace_of(passed) == [("s", "job", "ok")]
    assert passed.ok
    assert passed.data_bag.get_job_data("s") == "seen"
    assert trace_of(refused) == [("s", "job", "failed")]
    assert errors_of(refused) == []
    assert isinstance(refused.fatal, UnassignableInput)
    assert not refused.data_bag.has_job_data("s")
    assert called == [good]


@pytest.mark.parametrize("value", [None, 3, "x", b"y", object(), [1, "a"]], ids=repr)
@pytest.mark.parametrize("hint", [Any, object, None], ids=["Any", "object", "unannotated"])
def test_any_object_and_unannotated_inputs_accept_anything(hint, value):
    """An input annotated `Any` or `object`, or unannotated, accepts any input."""

    def job(record):
        return record

    if hint is not None:
        job.__annotations__ = {"record": hint}

    result = coordinator_of(Step("s", job)).run(value)

    assert trace_of(result) == [("s", "job", "ok")]
    assert result.ok
    assert result.data_bag.get_job_data("s") is value


# -- the run's timeout -----------------------------------------------------------


def test_zero_timeout_cancels_the_run_before_any_callback(calls):
    """`timeout=0` stops the run with RunCancelled before any callback; the trace is empty."""
    coordinator = coordinator_of(Step("first", calls.ok("first.job", 1), calls.ok("first.precheck", 2)))

    result = coordinator.run(timeout=0)

    assert calls.log == []
    assert trace_of(result) == []
    assert errors_of(result) == []
    assert isinstance(result.fatal, RunCancelled)
    assert isinstance(result.fatal, ChoreographError)
    assert result.fatal.step == "first"
    assert not result.ok
    assert not result.data_bag.has_precheck_data("first")


@pytest.mark.parametrize("timeout", [-1, -0.001])
def test_negative_timeout_is_a_value_error(calls, timeout):
    """A negative run timeout raises ValueError and calls nothing."""
    coordinator = coordinator_of(Step("first", calls.ok("first.job", 1)))

    with pytest.raises(ValueError, match="timeout"):
        coordinator.run(timeout=timeout)

    assert calls.log == []


# A run timeout that a loaded machine can't spend before the first callback starts;
# a callback sleeping `OUTLAST` from its own start outlasts it by construction.
RUN_TIMEOUT = 0.5
OUTLAST = RUN_TIMEOUT + 0.1


def test_timeout_expiring_during_a_plain_step_starts_no_further_callback(calls):
    """A plain callback that outlasts the run's timeout finishes, but no further callback starts: RunCancelled."""

    def slow() -> int:
        calls.log.append("slow.job")
        time.sleep(OUTLAST)
        return 1

    coordinator = coordinator_of(
        Step("slow", slow),
        Step("next", calls.ok("next.job", 2), calls.ok("next.precheck", 3)),
    )

    result = coordinator.run(timeout=RUN_TIMEOUT)

    assert calls.log == ["slow.job"]
    assert trace_of(result) == [("slow", "job", "ok")]
    assert errors_of(result) == []
    assert isinstance(result.fatal, RunCancelled)
    assert result.fatal.step == "next"
    assert not result.ok
    assert result.data_bag.get_job_data("slow") == 1
    assert not result.data_bag.has_precheck_data("next")


def test_timeout_is_checked_between_a_precheck_and_its_job(calls):
    """A precheck that outlasts the run's timeout keeps its output, but its job is not started: RunCancelled."""

    def precheck() -> int:
        calls.log.append("slow.precheck")
        time.sleep(OUTLAST)
        return 1

    coordinator = coordinator_of(Step("slow", calls.ok("slow.job", 2), precheck))

    result = coordinator.run(timeout=RUN_TIMEOUT)

    assert calls.log == ["slow.precheck"]
    assert trace_of(result) == [("slow", "precheck", "ok")]
    assert errors_of(result) == []
    assert isinstance(result.fatal, RunCancelled)
    assert result.fatal.step == "slow"
    assert result.data_bag.get_precheck_data("slow") == 1
    assert not result.data_bag.has_job_data("slow")


def test_generous_timeout_does_not_cancel():
    """A run that finishes within its timeout is not cancelled."""
    result = coordinator_of(Step("s", lambda: 1)).run(timeout=60)

    assert trace_of(result) == [("s", "job", "ok")]
    assert result.ok


# -- values, results -------------------------------------------------------------


def test_values_are_a_read_only_snapshot():
    """`ctx.values` holds the `values=` of the run, cannot be written, and ignores later changes to the dict."""
    settings = {"db": "conn"}
    seen: list[object] = []
    write_errors: list[BaseException] = []

    def first(ctx: Context) -> None:
        seen.append(ctx.values["db"])
        try:
            ctx.values["db"] = "other"  # type: ignore[index]
        except TypeError as exc:
            write_errors.append(exc)
        settings["db"] = "changed"

    def second(ctx: Context) -> None:
        seen.append(ctx.values["db"])

    result = coordinator_of(Step("first", first), Step("second", second)).run(values=settings)

    assert result.ok
    assert seen == ["conn", "conn"]
    assert len(write_errors) == 1


def test_values_default_to_an_empty_mapping():
    """Without `values=`, `ctx.values` is an empty mapping."""
    seen: list[dict[str, object]] = []

    def job(ctx: Context) -> None:
        seen.append(dict(ctx.values))

    result = coordinator_of(Step("s", job)).run()

    assert result.ok
    assert seen == [{}]


def test_raise_for_fatal_returns_an_ok_result():
    """`raise_for_fatal()` returns the result itself when there is no fatal."""
    result = coordinator_of(Step("s", lambda: 1)).run()

    assert result.raise_for_fatal() is result


def test_raise_for_fatal_raises_the_fatal():
    """`raise_for_fatal()` raises the run's fatal error itself."""

    def job():
        raise ValueError

    result = coordinator_of(Step("s", job)).run()

    with pytest.raises(JobFailed) as caught:
        result.raise_for_fatal()
    assert caught.value is result.fatal


def test_to_result_is_success_of_the_data_bag():
    """`to_result()` of an ok run is `Success(data_bag)`."""
    result = coordinator_of(Step("s", lambda: 1)).run()

    converted = result.to_result()

    assert isinstance(converted, Success)
    assert converted.unwrap() is result.data_bag
    assert isinstance(converted.unwrap(), DataBag)


def test_to_result_is_failure_of_the_fatal():
    """`to_result()` of a failed run is `Failure(fatal)`."""

    def precheck():
        raise ExecutionCanceled

    result = coordinator_of(Step("s", lambda: 1, precheck)).run()

    converted = result.to_result()

    assert isinstance(converted, Failure)
    assert converted.failure() is result.fatal


def test_run_result_is_frozen():
    """Assigning an attribute of a RunResult raises, and leaves it unchanged."""

    def job():
        raise ValueError

    result = coordinator_of(Step("s", job)).run()
    fatal = result.fatal

    with pytest.raises(AttributeError):
        result.fatal = None  # type: ignore[misc]
    with pytest.raises(AttributeError):
        result.errors = ()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        result.extra = 1  # type: ignore[attr-defined]

    assert result.fatal is fatal
    assert len(result.errors) == 1


@pytest.mark.parametrize("error_type", [KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("phase", ["precheck", "job"])
def test_base_exceptions_propagate_out_of_run(calls, error_type, phase):
    """KeyboardInterrupt and SystemExit raised by a callback propagate out of `run()`."""
    raising = calls.raising(f"s.{phase}", error_type())
    step = Step("s", calls.ok("s.job"), raising) if phase == "precheck" else Step("s", raising)
    coordinator = coordinator_of(step, Step("later", calls.ok("later.job")))

    with pytest.raises(error_type):
        coordinator.run()

    assert calls.log == [f"s.{phase}"]


def test_call_seconds_measure_the_callback():
    """`Call.seconds` is positive for a callback that sleeps and 0 for a skipped job."""

    def slow() -> None:
        time.sleep(0.01)

    def failing():
        raise ValueError

    result = coordinator_of(Step("slow", slow), Step("skipped", lambda: 1, failing)).run()

    assert trace_of(result) == [("slow", "job", "ok"), ("skipped", "precheck", "failed"), ("skipped", "job", "skipped")]
    assert result.trace[0].seconds > 0.005
    assert result.trace[0].seconds < 5
    assert result.trace[2].seconds == 0


# -- retries --------------------------------------------------------------------


def no_wait(attempts: int = 3, **options: Any) -> Retry:
    return Retry(attempts=attempts, initial=0, jitter=0, **options)


def flaky(failures: int, error: Exception, attempts_seen: list[int]) -> Callable[[Context], int]:
    """Return a callback that fails *failures* times with *error*, then returns its attempt."""

    def callback(ctx: Context) -> int:
        attempts_seen.append(ctx.attempt)
        if len(attempts_seen) <= failures:
            raise error
        return ctx.attempt

    return callback


def test_retried_job_succeeds_on_the_third_attempt():
    """A job failing twice then succeeding under `Retry(attempts=3)` is ok after 3 attempts, seeing ctx.attempt 1-3."""
    seen: list[int] = []
    coordinator = coordinator_of(Step("s", flaky(2, ValueError("x"), seen), retry=no_wait(3)))

    result = coordinator.run()

    assert seen == [1, 2, 3]
    assert trace_of(result) == [("s", "job", "ok")]
    assert result.trace[0].attempts == 3
    assert errors_of(result) == []
    assert result.ok
    assert result.data_bag.get_job_data("s") == 3


def test_retried_job_fails_when_attempts_are_exhausted():
    """A job that keeps failing is called `attempts` times, then fails the run with its last error."""
    seen: list[int] = []
    error = ValueError("x")
    coordinator = coordinator_of(Step("s", flaky(10, error, seen), retry=no_wait(3)))

    result = coordinator.run()

    assert seen == [1, 2, 3]
    assert trace_of(result) == [("s", "job", "failed")]
    assert result.trace[0].attempts == 3
    assert errors_of(result) == [("s", "job", ValueError)]
    assert isinstance(result.fatal, JobFailed)
    assert result.fatal.error is error
    assert not result.data_bag.has_job_data("s")


@pytest.mark.parametrize("error", [ExecutionCanceled("stop"), Canceled("stop"), Skip("x")], ids=repr)
def test_decisions_are_never_retried(error):
    """A job raising ExecutionCanceled (or a subclass) or Skip is not retried, whatever the policy."""
    seen: list[int] = []
    coordinator = coordinator_of(Step("s", flaky(10, error, seen), retry=no_wait(3, on=Exception)))

    result = coordinator.run()

    assert seen == [1]
    assert trace_of(result) == [("s", "job", "failed")]
    assert result.trace[0].attempts == 1
    assert errors_of(result) == [("s", "job", type(error))]
    assert isinstance(result.fatal, JobFailed)
    assert result.fatal.error is error


def test_unassignable_output_is_never_retried():
    """A job whose output violates its annotation is not retried."""
    seen: list[int] = []

    def job(ctx: Context) -> int:
        seen.append(ctx.attempt)
        return "x"  # type: ignore[return-value]

    result = coordinator_of(Step("s", job, retry=no_wait(3))).run()

    assert seen == [1]
    assert trace_of(result) == [("s", "job", "failed")]
    assert result.trace[0].attempts == 1
    assert errors_of(result) == [("s", "job", UnassignableOutput)]
    assert isinstance(result.fatal, JobFailed)


def test_retry_on_limits_the_retried_errors():
    """`Retry(on=KeyError)` retries a KeyError but not a ValueError."""
    value_seen: list[int] = []
    key_seen: list[int] = []
    coordinator = coordinator_of(
        Step("values", flaky(10, ValueError("x"), value_seen), retry=no_wait(3, on=KeyError)),
    )
    retried = coordinator_of(
        Step("keys", flaky(2, KeyError("k"), key_seen), retry=no_wait(3, on=KeyError)),
    )

    failed = coordinator.run()
    succeeded = retried.run()

    assert value_seen == [1]
    assert trace_of(failed) == [("values", "job", "failed")]
    assert failed.trace[0].attempts == 1
    assert errors_of(failed) == [("values", "job", ValueError)]
    assert isinstance(failed.fatal, JobFailed)
    assert key_seen == [1, 2, 3]
    assert trace_of(succeeded) == [("keys", "job", "ok")]
    assert succeeded.ok


def test_prechecks_are_not_retried_by_default():
    """Without `Retry(prechecks=True)`, a failing precheck is called once and its job is skipped."""
    seen: list[int] = []
    coordinator = coordinator_of(Step("s", lambda: 1, flaky(2, ValueError("x"), seen), retry=no_wait(3)))

    result = coordinator.run()

    assert seen == [1]
    assert trace_of(result) == [("s", "precheck", "failed"), ("s", "job", "skipped")]
    assert result.trace[0].attempts == 1
    assert errors_of(result) == [("s", "precheck", ValueError)]
    assert result.ok
    assert not result.data_bag.has_job_data("s")


def test_prechecks_are_retried_with_prechecks_true():
    """With `Retry(prechecks=True)`, a precheck failing twice succeeds on its third attempt and the job runs."""
    seen: list[int] = []
    retry = no_wait(3, prechecks=True)
    coordinator = coordinator_of(Step("s", lambda: "ran", flaky(2, ValueError("x"), seen), retry=retry))

    result = coordinator.run()

    assert seen == [1, 2, 3]
    assert trace_of(result) == [("s", "precheck", "ok"), ("s", "job", "ok")]
    assert result.trace[0].attempts == 3
    assert errors_of(result) == []
    assert result.data_bag.get_precheck_data("s") == 3
    assert result.data_bag.get_job_data("s") == "ran"


@pytest.mark.parametrize("error", [ExecutionCanceled("stop"), Skip("x")], ids=repr)
def test_precheck_decisions_are_never_retried(error):
    """With `Retry(prechecks=True)`, a precheck raising ExecutionCanceled or Skip is still called once."""
    seen: list[int] = []
    retry = no_wait(3, prechecks=True)
    coordinator = coordinator_of(Step("s", lambda: 1, flaky(10, error, seen), retry=retry))

    result = coordinator.run()

    assert seen == [1]
    assert result.trace[0].attempts == 1
    assert errors_of(result) == [("s", "precheck", type(error))]


# -- a step's timeout -----------------------------------------------------------


def test_step_timeout_fails_a_plain_job_that_overran():
    """A plain job that outlasts its step's `timeout` fails with CallbackTimeout; its output is not stored."""

    def slow() -> int:
        time.sleep(0.1)
        return 1

    result = coordinator_of(Step("slow", slow, timeout=0.05), Step("later", lambda: 2)).run()

    assert trace_of(result) == [("slow", "job", "failed")]
    assert errors_of(result) == [("slow", "job", CallbackTimeout)]
    fatal = result.fatal
    assert isinstance(fatal, JobFailed)
    assert fatal.step == "slow"
    assert isinstance(fatal.error, CallbackTimeout)
    assert isinstance(fatal.error, TimeoutError)
    assert fatal.__cause__ is fatal.error
    assert not result.data_bag.has_job_data("slow")
    assert not result.data_bag.has_job_data("later")


def test_step_timeout_does_not_fail_a_quick_job():
    """A plain job well within its step's `timeout` succeeds."""
    result = coordinator_of(Step("quick", lambda: 1, timeout=5)).run()

    assert trace_of(result) == [("quick", "job", "ok")]
    assert result.ok


def test_step_timeout_applies_to_each_attempt_not_to_the_waits_between_them():
    """A step's `timeout` bounds each callback call: a quick retried job does not time out because of the wait."""
    seen: list[int] = []
    # The wait alone is longer than the timeout, which is generous for a quick call on a loaded machine.
    retry = Retry(attempts=2, initial=0.75, jitter=0)
    coordinator = coordinator_of(Step("s", flaky(1, ValueError("x"), seen), retry=retry, timeout=0.5))

    result = coordinator.run()

    assert seen == [1, 2]
    assert errors_of(result) == []
    assert trace_of(result) == [("s", "job", "ok")]
    assert result.ok
    assert result.data_bag.get_job_data("s") == 2


# -- compensation ---------------------------------------------------------------


class Compensations:
    """Compensation callbacks that record what they saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, object, object]] = []

    def of(self, name: str, error: Exception | None = None) -> Callable[[Context], None]:
        def compensate(ctx: Context) -> None:
            self.seen.append((name, ctx.fatal, ctx.data_bag.get_job_data(name, default=None)))
            if error is not None:
                raise error

        return compensate


def failing_job():
    raise ValueError("bad")


def test_completed_steps_are_compensated_in_reverse_order():
    """When a job fails, completed steps are compensated last first, with `ctx.fatal` and the DataBag."""
    comp = Compensations()
    coordinator = coordinator_of(
        Step("a", lambda: "A", compensate=comp.of("a")),
        Step("b", lambda: "B", compensate=comp.of("b")),
        Step("c", failing_job, compensate=comp.of("c")),
        Step("d", lambda: "D", compensate=comp.of("d")),
    )

    result = coordinator.run()

    assert forward_trace_of(result) == [("a", "job", "ok"), ("b", "job", "ok"), ("c", "job", "failed")]
    assert errors_of(result) == [("c", "job", ValueError)]
    assert isinstance(result.fatal, JobFailed)
    assert result.fatal.step == "c"
    assert comp.seen == [("b", result.fatal, "B"), ("a", result.fatal, "A")]
    assert [(c.step, c.phase, c.outcome) for c in result.compensations] == [
        ("b", "compensate", "ok"),
        ("a", "compensate", "ok"),
    ]
    assert result.compensation_errors == ()


def test_failed_step_is_compensated_only_with_compensate_failed():
    """The failed step's own compensation runs first when `compensate_failed=True`."""
    comp = Compensations()
    coordinator = coordinator_of(
        Step("a", lambda: "A", compensate=comp.of("a")),
        Step("c", failing_job, compensate=comp.of("c"), compensate_failed=True),
    )

    result = coordinator.run()

    assert errors_of(result) == [("c", "job", ValueError)]
    assert [name for name, _, _ in comp.seen] == ["c", "a"]
    assert [(c.step, c.outcome) for c in result.compensations] == [("c", "ok"), ("a", "ok")]
    assert all(fatal is result.fatal for _, fatal, _ in comp.seen)


def test_failing_compensation_does_not_stop_the_others():
    """A compensation that raises is recorded in `compensation_errors` and the remaining ones still run."""
    comp = Compensations()
    error = RuntimeError("undo failed")
    coordinator = coordinator_of(
        Step("a", lambda: "A", compensate=comp.of("a")),
        Step("b", lambda: "B", compensate=comp.of("b", error)),
        Step("c", failing_job),
    )

    result = coordinator.run()

    assert [name for name, _, _ in comp.seen] == ["b", "a"]
    assert [(c.step, c.phase, c.outcome) for c in result.compensations] == [
        ("b", "compensate", "failed"),
        ("a", "compensate", "ok"),
    ]
    assert [(e.step, e.phase, type(e.error)) for e in result.compensation_errors] == [("b", "compensate", RuntimeError)]
    (entry,) = result.compensation_errors
    assert isinstance(entry, StepError)
    assert entry.error is error
    assert errors_of(result) == [("c", "job", ValueError)]
    assert isinstance(result.fatal, JobFailed)
    assert result.fatal.step == "c"


def test_skipped_steps_are_not_compensated():
    """A step whose job was skipped by its precheck did not complete, so it is not compensated."""
    comp = Compensations()

    def refuse():
        raise ValueError("no")

    coordinator = coordinator_of(
        Step("a", lambda: "A", compensate=comp.of("a")),
        Step("b", lambda: "B", refuse, compensate=comp.of("b")),
        Step("c", failing_job),
    )

    result = coordinator.run()

    assert forward_trace_of(result) == [
        ("a", "job", "ok"),
        ("b", "precheck", "failed"),
        ("b", "job", "skipped"),
        ("c", "job", "failed"),
    ]
    assert [name for name, _, _ in comp.seen] == ["a"]
    assert [(c.step, c.outcome) for c in result.compensations] == [("a", "ok")]


def test_nothing_is_compensated_on_a_successful_run():
    """A run without a fatal error calls no compensation."""
    comp = Compensations()
    coordinator = coordinator_of(
        Step("a", lambda: "A", compensate=comp.of("a")),
        Step("b", lambda: "B", compensate=comp.of("b")),
    )

    result = coordinator.run()

    assert result.ok
    assert comp.seen == []
    assert result.compensations == ()
    assert result.compensation_errors == ()
    assert trace_of(result) == [("a", "job", "ok"), ("b", "job", "ok")]
