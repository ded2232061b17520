"""`Coordinator(strict_prechecks=True)`: a precheck's bug stops the run with `PrecheckFailed` instead of skipping."""

import asyncio
from typing import Any

import pytest

from choreograph import (
    Coordinator,
    ExecutionCanceled,
    PrecheckFailed,
    RunResult,
    Skip,
    Step,
    StepError,
)


def typo(line: dict[str, int]) -> None:
    line["amout"]  # the bug: a misspelled key


def flow(*, strict: bool, undo: list[str] | None = None) -> Coordinator[dict[str, int]]:
    undone = undo if undo is not None else []
    return Coordinator[dict[str, int]](
        [
            Step("load", lambda line: line["amount"], compensate=lambda: undone.append("load")),
            Step("book", lambda line: f"booked {line['amount']}", precheck=typo),
            Step("notify", lambda: "sent"),
        ],
        strict_prechecks=strict,
    )


def calls(result: RunResult[Any]) -> list[tuple[str, str, str, int]]:
    return [(c.step, c.phase, c.outcome, c.attempts) for c in result.trace]


def test_by_default_a_failing_precheck_skips_its_job_and_the_run_goes_on():
    """The v1 rule holds without the option: the job is skipped, the run is ok, the error is on the stack."""
    result = flow(strict=False).run({"amount": 5})
    assert result.ok
    assert calls(result) == [
        ("load", "job", "ok", 1),
        ("book", "precheck", "failed", 1),
        ("book", "job", "skipped", 0),
        ("notify", "job", "ok", 1),
    ]
    assert [(e.step, e.phase, type(e.error)) for e in result.errors] == [("book", "precheck", KeyError)]


@pytest.mark.parametrize("mode", ["run", "run with timeout", "run_async"])
def test_strict_a_failing_precheck_stops_the_run_with_precheck_failed(mode: str):
    """Strict: the fatal is `PrecheckFailed(step, error)`, the precheck is traced failed, its job has no entry."""
    undone: list[str] = []
    coordinator = flow(strict=True, undo=undone)
    if mode == "run":
        result = coordinator.run({"amount": 5})
    elif mode == "run with timeout":
        result = coordinator.run({"amount": 5}, timeout=60)
    else:
        result = asyncio.run(coordinator.run_async({"amount": 5}))

    assert not result.ok
    fatal = result.fatal
    assert isinstance(fatal, PrecheckFailed)
    assert fatal.step == "book"
    assert isinstance(fatal.error, KeyError)
    assert fatal.__cause__ is fatal.error
    assert str(fatal) == "precheck of step 'book' failed: KeyError: 'amout'"
    assert calls(result) == [
        ("load", "job", "ok", 1),
        ("book", "precheck", "failed", 1),
        ("load", "compensate", "ok", 1),
    ]
    assert len(result.errors) == 1
    assert isinstance(result.errors[0], StepError)
    assert (result.errors[0].step, result.errors[0].phase) == ("book", "precheck")
    assert result.errors[0].error is fatal.error
    assert not result.data_bag.has_job_data("book")
    assert not result.data_bag.has_job_data("notify")
    assert undone == ["load"]  # the completed step was compensated


def test_strict_keeps_skip_and_execution_canceled_as_they_are():
    """Strict changes nothing for `Skip` (the job is skipped) or `ExecutionCanceled` (the run stops with it)."""

    def skip() -> None:
        raise Skip("not now")

    def cancel() -> None:
        raise ExecutionCanceled("stop")

    skipping = Coordinator([Step("a", lambda: 1, precheck=skip), Step("b", lambda: 2)], strict_prechecks=True)
    skipped = skipping.run()
    assert skipped.ok
    assert calls(skipped) == [("a", "precheck", "failed", 1), ("a", "job", "skipped", 0), ("b", "job", "ok", 1)]

    canceling = Coordinator([Step("a", lambda: 1, precheck=cancel), Step("b", lambda: 2)], strict_prechecks=True)
    canceled = canceling.run()
    assert isinstance(canceled.fatal, ExecutionCanceled)
    assert str(canceled.fatal) == "stop"
    assert calls(canceled) == [("a", "precheck", "canceled", 1)]


def test_strict_async_precheck():
    """An `async def` precheck that raises stops a strict run the same way."""

    async def check() -> None:
        await asyncio.sleep(0)
        raise ValueError("bad")

    coordinator = Coordinator([Step("a", lambda: 1, precheck=check)], strict_prechecks=True)
    result = coordinator.run()
    assert isinstance(result.fatal, PrecheckFailed)
    assert isinstance(result.fatal.error, ValueError)
    assert calls(result) == [("a", "precheck", "failed", 1)]


def test_strict_durable_run_records_the_failed_step_and_resumes_from_the_precheck(make_store: Any):
    """A strict durable run stopped by a precheck is 'failed' at that step; fixed, the resumed run re-checks it."""
    broken = [True]

    def check(x: int) -> None:
        if broken[0]:
            raise KeyError("amout")

    store = make_store()
    steps = [Step("a", lambda x: x), Step("b", lambda x: x * 2, precheck=check)]
    coordinator = Coordinator[int](steps, store=store, key=str, strict_prechecks=True)
    first = coordinator.run(3)
    assert isinstance(first.fatal, PrecheckFailed)
    info = store.run_info("3")
    assert (info.status, info.failed_step, info.error_type) == ("failed", "b", "KeyError")

    broken[0] = False
    second = coordinator.run(3)
    assert second.ok
    assert [(c.step, c.phase, c.outcome, c.restored) for c in second.trace] == [
        ("a", "job", "ok", True),
        ("b", "precheck", "ok", False),
        ("b", "job", "ok", False),
    ]
    assert second.data_bag.get_job_data("b") == 6


def test_strict_prechecks_must_be_a_bool():
    """`strict_prechecks="yes"` is refused with a TypeError naming the option."""
    with pytest.raises(TypeError, match="strict_prechecks must be a bool"):
        Coordinator(strict_prechecks="yes")  # type: ignore[arg-type]


def test_strict_failure_is_logged_as_a_warning_then_the_stopped_run(log_records: list[dict[str, Any]]):
    """Logging a strict failure: the precheck's error at WARNING, then the run's stop at WARNING."""
    result = flow(strict=True).run({"amount": 5})
    ours = [(r["level"].name, r["message"]) for r in log_records if r["name"].startswith("choreograph")]
    assert ours[0] == ("INFO", f"run {result.run_id} started")
    assert ("WARNING", "step book precheck failed: KeyError('amout')") in ours
    assert ours[-1][0] == "WARNING"
    assert "PrecheckFailed" in ours[-1][1]
