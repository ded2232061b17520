"""The run loop: compensations, timeouts of awaited callbacks, store events, and the context and bag a run sees."""

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from returns.result import Failure

from choreograph import (
    CallbackTimeout,
    Context,
    Coordinator,
    DataBag,
    JobFailed,
    Retry,
    RunCancelled,
    RunResult,
    SqliteStore,
    Step,
    UnassignableInput,
)

NO_WAIT = Retry(attempts=3, initial=0, jitter=0)


def fail(x: object) -> None:
    """A job that stops the run, so that the steps before it are compensated."""
    raise ValueError("stop")


def run_either(coordinator: Coordinator[Any], input: object, *, use_async: bool, **options: Any) -> RunResult[Any]:  # noqa: A002
    """Run with `run`, or with `run_async` on an event loop of its own."""
    if use_async:
        return asyncio.run(coordinator.run_async(input, **options))
    return coordinator.run(input, **options)


def compensations_of(result: RunResult[Any]) -> list[tuple[str, str, int]]:
    return [(c.step, c.outcome, c.attempts) for c in result.compensations]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "s.db") as opened:
        yield opened


# -- what a store records ---------------------------------------------------------------------


def test_refused_input_is_recorded_as_failed_with_no_attempt(store: SqliteStore):
    """A callback refused by UnassignableInput is not called and is recorded as a "failed" event with 0 attempts."""
    seen: list[int] = []

    def job(x: int) -> None:
        seen.append(x)

    coordinator = Coordinator([Step("count", job)], store=store, key=str)
    result = coordinator.run("seven")
    assert isinstance(result.fatal, UnassignableInput)
    assert seen == []
    events = store.events("seven")
    assert [(e.step, e.phase, e.outcome, e.attempts) for e in events] == [("count", "job", "failed", 0)]
    assert (events[0].error_type or "").endswith("UnassignableInput")
    assert [(c.step, c.phase, c.outcome, c.attempts) for c in result.trace] == [("count", "job", "failed", 0)]


@pytest.mark.anyio
async def test_run_timeout_cancelling_an_await_is_recorded_as_canceled(store: SqliteStore):
    """With a store, an awaited job cancelled by `run_async(timeout=)` is recorded as a "canceled" event."""
    cancelled: list[bool] = []

    async def slow(x: object) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    # The run's clock starts before the store takes the key: leave room for slow disk writes.
    coordinator = Coordinator([Step("slow", slow)], store=store, key=str)
    result = await coordinator.run_async("k", timeout=0.5)
    assert isinstance(result.fatal, RunCancelled)
    assert cancelled == [True]
    assert [(c.step, c.outcome) for c in result.trace] == [("slow", "canceled")]
    events = store.events("k")
    assert [(e.step, e.phase, e.outcome) for e in events] == [("slow", "job", "canceled")]
    assert (events[0].error_type or "").endswith("RunCancelled")


# -- compensations ----------------------------------------------------------------------------


def test_compensation_refusing_the_input_fails_and_the_others_run():
    """A compensation whose input annotation the input doesn't match fails with UnassignableInput; the others run."""
    undone: list[str] = []

    def undo_a(x: object) -> None:
        undone.append("a")

    def undo_b(x: str) -> None:
        undone.append("b")

    coordinator = Coordinator(
        [Step("a", lambda x: x, compensate=undo_a), Step("b", lambda x: x, compensate=undo_b), Step("c", fail)]
    )
    result = coordinator.run(1)
    assert isinstance(result.fatal, JobFailed)
    assert undone == ["a"]
    assert compensations_of(result) == [("b", "failed", 0), ("a", "ok", 1)]
    [error] = result.compensation_errors
    assert (error.step, error.phase) == ("b", "compensate")
    assert isinstance(error.error, UnassignableInput)
    assert (error.error.step, error.error.callback, error.error.expected, error.error.actual) == (
        "b",
        "compensate",
        "str",
        "int",
    )


@pytest.mark.parametrize("use_async", [False, True], ids=["run", "run_async"])
def test_async_compensation_runs(use_async: bool):
    """An `async def` compensation is awaited, with the context of the compensation and the run's input."""
    seen: list[tuple[str, str, object, bool]] = []

    async def undo(ctx: Context, x: int) -> None:
        await asyncio.sleep(0)
        seen.append((ctx.step, ctx.phase, x, isinstance(ctx.fatal, JobFailed)))

    coordinator = Coordinator([Step("a", lambda x: x, compensate=undo), Step("b", fail)])
    result = run_either(coordinator, 5, use_async=use_async)
    assert isinstance(result.fatal, JobFailed)
    assert seen == [("a", "compensate", 5, True)]
    assert compensations_of(result) == [("a", "ok", 1)]
    assert result.compensation_errors == ()


@pytest.mark.parametrize("use_async", [False, True], ids=["run", "run_async"])
def test_compensation_retried_until_it_succeeds(use_async: bool):
    """A compensation failing twice under a 3-attempt retry is called 3 times; its trace entry is ok with 3 attempts."""
    attempts: list[int] = []

    def undo(ctx: Context) -> None:
        attempts.append(ctx.attempt)
        if len(attempts) < 3:
            raise OSError("not yet")

    coordinator = Coordinator([Step("a", lambda: 1, compensate=undo, retry=NO_WAIT), Step("b", fail)])
    result = run_either(coordinator, None, use_async=use_async)
    assert attempts == [1, 2, 3]
    assert compensations_of(result) == [("a", "ok", 3)]
    assert result.compensation_errors == ()


def test_compensation_failing_every_attempt():
    """A compensation that keeps failing is tried as often as its retry policy allows; its last error is reported."""
    errors: list[OSError] = []

    def undo() -> None:
        errors.append(OSError(f"attempt {len(errors) + 1}"))
        raise errors[-1]

    coordinator = Coordinator([Step("a", lambda: 1, compensate=undo, retry=NO_WAIT), Step("b", fail)])
    result = coordinator.run()
    assert len(errors) == NO_WAIT.attempts
    assert compensations_of(result) == [("a", "failed", NO_WAIT.attempts)]
    [error] = result.compensation_errors
    assert (error.step, error.phase) == ("a", "compensate")
    assert error.error is errors[-1]


def test_compensation_returning_failure_fails():
    """A compensation returning `Failure(error)` fails with that error; the compensations before it still run."""
    problem = ValueError("cannot undo")
    undone: list[str] = []
    coordinator = Coordinator(
        [
            Step("a", lambda: 1, compensate=lambda: undone.append("a")),
            Step("b", lambda: 2, compensate=lambda: Failure(problem)),
            Step("c", fail),
        ]
    )
    result = coordinator.run()
    assert compensations_of(result) == [("b", "failed", 1), ("a", "ok", 1)]
    assert undone == ["a"]
    [error] = result.compensation_errors
    assert (error.step, error.error) == ("b", problem)


def test_plain_compensation_overrunning_the_step_timeout_fails():
    """A plain compensation that overran its step's `timeout=` fails with CallbackTimeout, as a plain job does."""

    def undo() -> None:
        time.sleep(0.6)  # outlasts the timeout by construction

    # The timeout also bounds the quick job of "a": it is generous so that a loaded machine can't fail that job.
    result = Coordinator([Step("a", lambda: 1, compensate=undo, timeout=0.5), Step("b", fail)]).run()
    assert [(c.step, c.outcome) for c in result.trace if c.phase == "job"] == [("a", "ok"), ("b", "failed")]
    assert compensations_of(result) == [("a", "failed", 1)]
    [error] = result.compensation_errors
    assert isinstance(error.error, CallbackTimeout)
    assert (error.error.step, error.error.phase, error.error.timeout) == ("a", "compensate", 0.5)


def test_failed_compensation_is_logged(log_records: list[dict[str, Any]]):
    """With logging on, a failed compensation logs a record naming the step and carrying the error."""
    problem = OSError("undo failed")

    def undo() -> None:
        raise problem

    result = Coordinator([Step("a", lambda: 1, compensate=undo), Step("b", fail)]).run()
    records = [r for r in log_records if "compensation failed" in r["message"]]
    assert len(records) == 1
    assert records[0]["extra"]["step"] == "a"
    assert records[0]["extra"]["error"] is problem
    assert records[0]["extra"]["run_id"] == result.run_id


# -- timeouts of awaited callbacks ------------------------------------------------------------


async def sleepy(x: object) -> None:
    """Await far longer than any timeout of these tests."""
    await asyncio.sleep(60)


# An awaited callback cut off by a timeout ends within this many seconds, even on
# a loaded machine; the other timeout of each test would only expire at 30 s.
CUT_OFF_WITHIN = 5


@pytest.mark.anyio
async def test_step_timeout_shorter_than_the_run_timeout():
    """An awaited job over its step's timeout fails with CallbackTimeout (JobFailed) even when the run has a timeout."""
    coordinator = Coordinator([Step("s", sleepy, timeout=0.05)])
    started = time.monotonic()
    result = await coordinator.run_async(1, timeout=30)
    assert time.monotonic() - started < CUT_OFF_WITHIN
    assert isinstance(result.fatal, JobFailed)
    assert isinstance(result.fatal.error, CallbackTimeout)
    assert (result.fatal.error.step, result.fatal.error.timeout) == ("s", 0.05)
    assert [(c.step, c.outcome) for c in result.trace] == [("s", "failed")]


@pytest.mark.anyio
async def test_run_timeout_shorter_than_the_step_timeout():
    """An awaited job cut off by the run's timeout, before its step's, stops the run with RunCancelled ("canceled")."""
    coordinator = Coordinator([Step("s", sleepy, timeout=30)])
    started = time.monotonic()
    result = await coordinator.run_async(1, timeout=0.5)  # room for the set-up before the job starts
    assert time.monotonic() - started < CUT_OFF_WITHIN
    assert isinstance(result.fatal, RunCancelled)
    assert [(c.step, c.outcome) for c in result.trace] == [("s", "canceled")]


@pytest.mark.anyio
async def test_timeout_error_raised_by_the_callback_is_its_own():
    """A TimeoutError the awaited job raises itself, within its step's timeout, is its error, not a CallbackTimeout."""
    mine = TimeoutError("upstream timed out")

    async def job(x: object) -> None:
        await asyncio.sleep(0)
        raise mine

    result = await Coordinator([Step("s", job, timeout=5)]).run_async(1)
    assert isinstance(result.fatal, JobFailed)
    assert result.fatal.error is mine


@pytest.mark.anyio
async def test_step_timeout_is_retried():
    """An awaited job cancelled at its step's timeout is retried by the step's retry policy."""
    calls: list[int] = []

    async def job(x: object) -> int:
        calls.append(len(calls) + 1)
        if len(calls) == 1:
            await asyncio.sleep(5)
        return len(calls)

    coordinator = Coordinator([Step("s", job, timeout=0.05, retry=NO_WAIT)])
    result = await coordinator.run_async(1)
    assert result.ok
    assert calls == [1, 2]
    assert result.data_bag.get_job_data("s") == 2
    assert [(c.step, c.outcome, c.attempts) for c in result.trace] == [("s", "ok", 2)]


# -- the context ------------------------------------------------------------------------------


def test_context_is_not_made_by_users():
    """`Context()` raises TypeError: only the coordinator makes contexts."""
    with pytest.raises(TypeError, match="made by the coordinator"):
        Context()


def test_context_logger_is_bound_to_the_current_step(log_records: list[dict[str, Any]]):
    """`ctx.logger` carries the step that logs: two steps of one run log records with their own step names."""

    def job(ctx: Context) -> None:
        ctx.logger.info("working")

    result = Coordinator([Step("one", job, precheck=job), Step("two", job)]).run()
    records = [r for r in log_records if r["message"] == "working"]
    assert [r["extra"]["step"] for r in records] == ["one", "one", "two"]
    assert {r["extra"]["run_id"] for r in records} == {result.run_id}


def test_context_repr_names_the_step():
    """`repr(ctx)` names the run, the step and the phase running."""
    seen: list[str] = []

    def record(ctx: Context) -> None:
        seen.append(repr(ctx))

    result = Coordinator([Step("Load", record, precheck=record)]).run()
    assert seen == [
        f"<Context run_id={result.run_id} step='Load' phase=precheck>",
        f"<Context run_id={result.run_id} step='Load' phase=job>",
    ]


# -- the data bag -----------------------------------------------------------------------------


class EqualsAnything:
    """Claims equality with anything: the other operand's `__eq__` decides only if the bag declines."""

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = None  # type: ignore[assignment]


def test_data_bag_compares_only_with_data_bags():
    """A DataBag is never equal to a non-DataBag, and leaves the comparison to the other operand (NotImplemented)."""
    bag = DataBag()
    assert bag == DataBag()
    assert bag != 3
    assert not bag == {}  # noqa: SIM201 - `==` is what is tested
    assert bag == EqualsAnything()


def step_storing(name: str, value: object) -> Callable[[Context], None]:
    def job(ctx: Context) -> None:
        ctx.data_bag.set_precheck_data(name, value)

    return job


def test_data_bag_names_len_and_repr_after_a_run():
    """A run's bag lists each step that stored anything once, spelled as the step is, whatever case stored it."""
    coordinator = Coordinator(
        [
            Step("Load", lambda: 1, precheck=lambda: "checked"),
            Step("Note", step_storing("SAVE", "noted")),
            Step("Save", lambda: 2),
        ]
    )
    bag = coordinator.run().data_bag
    assert sorted(bag) == ["Load", "Save"]  # "Note" returns None: it stored nothing of its own
    assert len(bag) == 2  # "Load" stored a precheck and a job output: counted once
    assert dict(bag.precheck_data) == {"Load": "checked", "Save": "noted"}
    assert dict(bag.job_data) == {"Load": 1, "Save": 2}
    assert repr(bag) == "DataBag(job={'Load': 1, 'Save': 2}, precheck={'Load': 'checked', 'Save': 'noted'})"
