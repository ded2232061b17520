"""
Parallel groups: shapes, concurrency, the fatal rules, compensation order, contexts, trace and definition errors.

Concurrency is shown with barriers and events, not timings: two callbacks
that each wait for the other at a barrier can only both pass if they run at
the same time. Waits have generous timeouts, so a broken engine fails a test
instead of hanging it.
"""

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from choreograph import (
    CallbackTimeout,
    Context,
    Coordinator,
    ExecutionCanceled,
    JobFailed,
    Parallel,
    PrecheckFailed,
    Retry,
    RunCancelled,
    Step,
    StepDefinitionError,
    UnassignableInput,
    get_data_bag,
)
from choreograph.events import CallbackFinished, CallbackStarted, Emitted, RunEvent, RunFinished

WAIT = 10.0  # seconds a test waits for another thread before it fails


def job(value: object) -> Callable[[], object]:
    """A job returning *value*."""
    return lambda: value


def labels(result: Any) -> list[str]:
    """The trace as ``step.phase:outcome`` labels, in order."""
    return [f"{c.step}.{c.phase}:{c.outcome}" for c in result.trace]


def wait_for_error(ctx: Context[Any], step: str) -> None:
    """Wait until the run's error stack holds an error of *step* (the driver recorded its failure)."""
    deadline = time.monotonic() + WAIT
    while not any(error.step == step for error in ctx.errors):
        if time.monotonic() > deadline:
            msg = f"step {step!r} never failed"
            raise AssertionError(msg)
        time.sleep(0.001)


# -- declaring groups -------------------------------------------------------------------


def test_a_group_holds_its_branches_as_tuples_of_nodes() -> None:
    inner = Parallel("inner", Step("x", job(1)), Step("y", job(2)))
    group = Parallel("checks", Step("a", job(1)), [Step("b", job(2)), inner], max_workers=3)
    assert group.name == "checks"
    assert group.max_workers == 3
    assert [[node.name for node in branch] for branch in group.branches] == [["a"], ["b", "inner"]]
    assert isinstance(group.branches[1], tuple)
    assert [s.name for s in group.steps()] == ["a", "b", "x", "y"]
    assert group == Parallel(
        "checks", Step("a", group.branches[0][0].job), [group.branches[1][0], inner], max_workers=3
    )  # type: ignore[union-attr]
    assert "Parallel('checks'" in repr(group)
    assert "max_workers=3" in repr(group)
    with pytest.raises(AttributeError, match="frozen"):
        group.name = "other"  # type: ignore[misc]


def test_steps_are_depth_first_and_flow_is_the_top_level() -> None:
    a, b, c, d, e = (Step(name, job(name)) for name in "abcde")
    group = Parallel("g", b, [c, Parallel("inner", d)])
    flow = Coordinator([a, group, e])
    assert [s.name for s in flow.steps] == ["a", "b", "c", "d", "e"]
    assert flow.flow == (a, group, e)
    assert len(flow) == 5
    assert "d" in flow


def test_add_step_takes_a_group_and_returns_it() -> None:
    flow = Coordinator([Step("a", job(1))])
    group = Parallel("g", Step("b", job(2)))
    assert flow.add_step(group) is group
    assert flow.flow[-1] is group
    assert flow.run().data_bag.get_job_data("b") == 2


@pytest.mark.parametrize(
    ("group", "problem"),
    [
        (Parallel("g"), "a group needs at least one branch"),
        (Parallel("g", []), "branch 0 is empty"),
        (Parallel("g", Step("a", job(1)), ["nope"]), "branch 1 holds a str; a branch is a Step, a Parallel or a list"),  # type: ignore[list-item]
        (Parallel("g", Step("a", job(1)), max_workers=0), "max_workers must be None or an int >= 1, got 0"),
        (Parallel("g", Step("a", job(1)), max_workers=True), "max_workers must be None or an int >= 1, got True"),
        (Parallel("g", Step("a", job(1)), max_workers="2"), "max_workers must be None or an int >= 1, got '2'"),  # type: ignore[arg-type]
        (Parallel("", Step("a", job(1))), "the name must not be empty"),
        (Parallel(3, Step("a", job(1))), "the name must be a str, got int"),  # type: ignore[arg-type]
    ],
)
def test_a_bad_group_is_a_definition_error_naming_it(group: Parallel, problem: str) -> None:
    with pytest.raises(StepDefinitionError) as caught:
        Coordinator([group])
    assert caught.value.callback == "group"
    assert problem in caught.value.problem


@pytest.mark.parametrize(
    ("nodes", "name", "problem"),
    [
        ([Step("a", job(1)), Parallel("G", Step("A", job(2)))], "A", "already taken by step 'a'"),
        ([Step("a", job(1)), Parallel("A", Step("b", job(2)))], "A", "already taken by step 'a'"),
        ([Parallel("g", Step("b", job(2))), Step("G", job(1))], "G", "already taken by group 'g'"),
        ([Parallel("g", Step("b", job(2)), Step("B", job(3)))], "B", "already taken by step 'b' in the same group"),
        ([Parallel("g", Step("b", job(2)), Parallel("b", Step("c", job(3))))], "b", "taken by step 'b' in the same"),
        ([Parallel("g", Parallel("h", Step("x", job(1))), Parallel("H", Step("y", job(1))))], "H", "by group 'h'"),
    ],
)
def test_group_and_step_names_share_one_namespace(nodes: list[Any], name: str, problem: str) -> None:
    with pytest.raises(StepDefinitionError) as caught:
        Coordinator(nodes)
    assert caught.value.step == name
    assert problem in caught.value.problem


def test_a_refused_group_leaves_the_coordinator_unchanged() -> None:
    flow = Coordinator([Step("a", job(1))])
    with pytest.raises(StepDefinitionError, match="'bad', job"):
        flow.add_step(Parallel("g", Step("ok", job(1)), Step("bad", 42)))  # type: ignore[arg-type]
    assert [s.name for s in flow.steps] == ["a"]
    flow.add_step(Parallel("g", Step("ok", job(1))))  # the names were not taken by the refused group
    assert [s.name for s in flow.steps] == ["a", "ok"]


def test_a_group_has_no_data_bag_entry() -> None:
    result = Coordinator([Parallel("g", Step("a", job(1)))]).run()
    assert dict(result.data_bag.job_data) == {"a": 1}
    with pytest.raises(KeyError):
        result.data_bag.get_job_data("g")


# -- running side by side ---------------------------------------------------------------


def test_plain_callbacks_of_different_branches_run_at_the_same_time() -> None:
    barrier = threading.Barrier(3, timeout=WAIT)  # passes only if all three wait at once
    threads: list[str] = []

    def meet(name: str) -> Callable[[], str]:
        def met() -> str:
            barrier.wait()
            threads.append(threading.current_thread().name)
            return name

        return met

    flow = Coordinator([Parallel("g", Step("a", meet("a")), Step("b", meet("b")), [Step("c", meet("c"))])])
    result = flow.run()
    assert result.ok, result.fatal
    assert dict(result.data_bag.job_data) == {"a": "a", "b": "b", "c": "c"}
    assert len(set(threads)) == 3
    assert threading.current_thread().name not in threads


def test_steps_of_one_branch_run_in_order_and_see_each_other() -> None:
    def second(x: int) -> int:
        return get_data_bag().get_job_data("first") + x  # type: ignore[no-any-return]

    flow = Coordinator[int](
        [Parallel("g", [Step("first", lambda x: x * 10), Step("second", second)], Step("o", job(0)))]
    )
    result = flow.run(4)
    assert result.data_bag.get_job_data("second") == 44
    order = [c.step for c in result.trace if c.step in {"first", "second"}]
    assert order == ["first", "second"]


@pytest.mark.parametrize("workers", [1, 2])
def test_max_workers_bounds_the_plain_callbacks_at_once(workers: int) -> None:
    lock = threading.Lock()
    now = 0
    most = 0
    barrier = threading.Barrier(workers, timeout=WAIT)  # the bound is reached, not only respected

    def busy() -> None:
        nonlocal now, most
        with lock:
            now += 1
            most = max(most, now)
        barrier.wait()
        time.sleep(0.01)
        with lock:
            now -= 1

    steps = [Step(f"s{i}", busy) for i in range(4)]
    result = Coordinator([Parallel("g", *steps, max_workers=workers)]).run()
    assert result.ok, result.fatal
    assert most == workers


def test_async_callbacks_of_different_branches_are_concurrent_tasks() -> None:
    events: list[asyncio.Event] = []

    async def a() -> str:  # each waits for the other: both must be awaited at once
        events[1].set()
        await asyncio.wait_for(events[0].wait(), WAIT)
        return "a met b"

    async def b() -> str:
        events[0].set()
        await asyncio.wait_for(events[1].wait(), WAIT)
        return "b met a"

    async def main() -> Any:
        events[:] = [asyncio.Event(), asyncio.Event()]
        return await Coordinator([Parallel("g", Step("a", a), Step("b", b))]).run_async()

    result = asyncio.run(main())
    assert result.ok, result.fatal
    assert dict(result.data_bag.job_data) == {"a": "a met b", "b": "b met a"}


def test_plain_and_async_branches_mix_in_run_and_run_async() -> None:
    started = threading.Event()

    def plain() -> str:
        started.set()
        return threading.current_thread().name

    async def waits() -> str:
        for _ in range(int(WAIT / 0.001)):  # yields to the loop until the plain branch ran on its thread
            if started.is_set():
                return "saw plain"
            await asyncio.sleep(0.001)
        return "never saw it"

    flow = Coordinator(
        [Step("first", job(0)), Parallel("g", Step("plain", plain), Step("waits", waits)), Step("last", job(1))]
    )
    for result in (flow.run(), asyncio.run(flow.run_async())):
        started.clear()
        assert result.ok, result.fatal
        assert result.data_bag.get_job_data("waits") == "saw plain"
        assert result.data_bag.get_job_data("plain").startswith("choreograph-branch")
        assert result.trace[0].step == "first"
        assert result.trace[-1].step == "last"


def test_nested_groups_run_inside_a_branch() -> None:
    barrier = threading.Barrier(3, timeout=WAIT)

    def meet(name: str) -> Callable[[], str]:
        def met() -> str:
            barrier.wait()
            return name

        return met

    inner = Parallel("inner", Step("x", meet("x")), Step("y", meet("y")))
    flow = Coordinator(
        [Parallel("outer", Step("a", meet("a")), [Step("pre", job("p")), inner, Step("post", job("q"))])]
    )
    result = flow.run()
    assert result.ok, result.fatal
    steps = [c.step for c in result.trace]
    assert steps.index("pre") < min(steps.index("x"), steps.index("y"))
    assert steps.index("post") > max(steps.index("x"), steps.index("y"))
    assert result.data_bag.get_job_data("post") == "q"


def test_a_group_first_in_the_flow_and_last() -> None:
    flow = Coordinator([Parallel("g", Step("a", job(1)), Step("b", job(2)))])
    result = flow.run()
    assert result.ok
    assert sorted(labels(result)) == ["a.job:ok", "b.job:ok"]


# -- the fatal rules --------------------------------------------------------------------


def test_a_fatal_lets_no_new_callback_start_but_running_ones_finish_and_are_recorded() -> None:
    compensated: list[str] = []

    def fails() -> None:
        raise ValueError("credit refused")

    def slow(ctx: Context[Any]) -> str:
        wait_for_error(ctx, "credit")  # still running when the run's fatal error happens
        return "reserved"

    flow = Coordinator(
        [
            Parallel(
                "checks",
                Step("credit", fails),
                [Step("reserve", slow, compensate=lambda: compensated.append("reserve")), Step("quote", job("q"))],
            ),
            Step("book", job("booked")),
        ]
    )
    result = flow.run()
    assert isinstance(result.fatal, JobFailed)
    assert result.fatal.step == "credit"
    assert str(result.fatal.error) == "credit refused"
    assert labels(result) == ["credit.job:failed", "reserve.job:ok", "reserve.compensate:ok"]
    assert result.data_bag.get_job_data("reserve") == "reserved"  # its output is kept
    assert compensated == ["reserve"]
    assert [(e.step, e.phase) for e in result.errors] == [("credit", "job")]


def test_the_first_fatal_is_the_runs_and_later_ones_are_on_the_error_stack() -> None:
    def first() -> None:
        raise KeyError("first")

    def second(ctx: Context[Any]) -> None:
        wait_for_error(ctx, "one")
        raise LookupError("second")

    result = Coordinator([Parallel("g", Step("one", first), Step("two", second)), Step("after", job(1))]).run()
    assert isinstance(result.fatal, JobFailed)
    assert result.fatal.step == "one"
    assert isinstance(result.fatal.error, KeyError)
    assert [(e.step, type(e.error).__name__) for e in result.errors] == [("one", "KeyError"), ("two", "LookupError")]
    assert labels(result) == ["one.job:failed", "two.job:failed"]


def test_execution_canceled_in_a_branch_precheck_is_fatal() -> None:
    def stop() -> None:
        raise ExecutionCanceled("fraud")

    result = Coordinator([Parallel("g", Step("a", job(1), stop)), Step("b", job(2))]).run()
    assert isinstance(result.fatal, ExecutionCanceled)
    assert labels(result) == ["a.precheck:canceled"]


def test_a_failed_precheck_in_a_branch_skips_only_its_job() -> None:
    def no() -> None:
        raise ValueError("not today")

    result = Coordinator(
        [Parallel("g", [Step("a", job(1), no), Step("a2", job(3))], Step("b", job(2))), Step("c", job(4))]
    ).run()
    assert result.ok
    assert "a.job:skipped" in labels(result)
    assert dict(result.data_bag.job_data) == {"a2": 3, "b": 2, "c": 4}


def test_strict_prechecks_make_a_branch_precheck_error_fatal() -> None:
    def no() -> None:
        raise ValueError("not today")

    flow = Coordinator([Parallel("g", Step("a", job(1), no)), Step("b", job(2))], strict_prechecks=True)
    result = flow.run()
    assert isinstance(result.fatal, PrecheckFailed)
    assert result.fatal.step == "a"
    assert labels(result) == ["a.precheck:failed"]


def test_an_unassignable_input_in_a_branch_is_fatal() -> None:
    def wants_str(text: str) -> str:
        return text

    result = Coordinator([Parallel("g", Step("a", wants_str)), Step("b", job(2))]).run(3)
    assert isinstance(result.fatal, UnassignableInput)
    assert result.fatal.step == "a"
    assert labels(result) == ["a.job:failed"]


def test_an_interrupt_in_a_branch_goes_through_the_run() -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Coordinator([Parallel("g", Step("a", interrupted), Step("b", job(2)))]).run()


# -- compensation ------------------------------------------------------------------------


def test_compensation_runs_in_reverse_order_of_completion_across_branches() -> None:
    undone: list[str] = []

    def undo(name: str) -> Callable[[], None]:
        return lambda: undone.append(name)

    def later(ctx: Context[Any]) -> str:
        deadline = time.monotonic() + WAIT
        while "y1" not in ctx.data_bag.job_data:  # finishes after branch y's first step
            assert time.monotonic() < deadline
            time.sleep(0.001)
        return "x1"

    def book() -> None:
        raise RuntimeError("no room")

    flow = Coordinator(
        [
            Step("first", job(0), compensate=undo("first")),
            Parallel(
                "g",
                Step("x1", later, compensate=undo("x1")),
                [Step("y1", job("y1"), compensate=undo("y1")), Step("y2", job("y2"), compensate=undo("y2"))],
            ),
            Step("book", book),
        ]
    )
    result = flow.run()
    assert isinstance(result.fatal, JobFailed)
    done = [c.step for c in result.trace if c.phase == "job" and c.outcome == "ok"]
    assert done[0] == "first"
    assert done.index("y1") < done.index("x1")
    assert undone == list(reversed(done))
    assert [c.step for c in result.compensations] == undone


# -- contexts -----------------------------------------------------------------------------


def test_each_callback_sees_its_own_step_phase_and_attempt() -> None:
    seen: list[tuple[str, str, str, int]] = []
    lock = threading.Lock()
    tries = {"b": 0}

    def note(name: str) -> Callable[[Context[Any]], str]:
        def noted(ctx: Context[Any]) -> str:
            time.sleep(0.005)  # let the other branches' callbacks start meanwhile
            with lock:
                seen.append((name, ctx.step, ctx.phase, ctx.attempt))
            if name == "b.job" and tries["b"] < 2:
                tries["b"] += 1
                raise ValueError("again")
            return name

        return noted

    flow = Coordinator(
        [
            Parallel(
                "g",
                Step("a", note("a.job"), note("a.precheck")),
                Step("b", note("b.job"), retry=Retry(attempts=3, initial=0.001)),
                Step("c", note("c.job")),
            )
        ]
    )
    result = flow.run()
    assert result.ok, result.fatal
    for name, step, phase, _ in seen:
        assert name == f"{step}.{phase}"
    assert [attempt for name, *_, attempt in seen if name == "b.job"] == [1, 2, 3]
    assert result.trace_of("b")[0].attempts == 3


@pytest.mark.anyio
async def test_async_branches_see_their_own_context_and_data_bag() -> None:
    async def reads(ctx: Context[Any]) -> tuple[str, object]:
        await asyncio.sleep(0.001)
        return ctx.step, get_data_bag().get_job_data("first")

    flow = Coordinator([Step("first", job("f")), Parallel("g", Step("a", reads), Step("b", reads))])
    result = await flow.run_async()
    assert result.data_bag.get_job_data("a") == ("a", "f")
    assert result.data_bag.get_job_data("b") == ("b", "f")


def test_get_data_bag_works_in_branch_threads() -> None:
    def reads() -> object:
        return get_data_bag().get_job_data("first")

    result = Coordinator([Step("first", job("f")), Parallel("g", Step("a", reads), Step("b", reads))]).run()
    assert (result.data_bag.get_job_data("a"), result.data_bag.get_job_data("b")) == ("f", "f")


# -- trace and timing -------------------------------------------------------------------


def test_the_trace_is_in_finish_order_with_start_times() -> None:
    def slow() -> str:
        time.sleep(0.05)
        return "slow"

    result = Coordinator(
        [Step("first", job(0)), Parallel("g", Step("slow", slow), Step("fast", job(1))), Step("last", job(2))]
    ).run()
    assert [c.step for c in result.trace] == ["first", "fast", "slow", "last"]
    calls = {c.step: c for c in result.trace}
    assert calls["first"].started >= 0.0
    assert calls["slow"].seconds >= 0.05
    # slow and fast overlap: fast started before slow ended
    assert calls["fast"].started < calls["slow"].started + calls["slow"].seconds
    # the step after the group started after both ended
    assert calls["last"].started >= calls["slow"].started + calls["slow"].seconds - 1e-3
    assert result.trace_of("SLOW") == (calls["slow"],)
    assert result.trace_of("nothing") == ()
    with pytest.raises(TypeError, match="a step's name"):
        result.trace_of(Step("slow", slow))  # type: ignore[arg-type]


def test_started_counts_from_the_run_start_on_every_path() -> None:
    def slow() -> None:
        time.sleep(0.02)

    def fails() -> None:
        raise ValueError("x")

    for flow in (
        Coordinator([Step("a", slow), Step("b", slow)]),  # the fast path
        Coordinator([Step("a", slow), Step("b", fails)]),  # the general loop takes over at b
        Coordinator([Step("a", slow, timeout=5), Step("b", slow, timeout=5)]),  # the general loop from the start
    ):
        result = flow.run()
        a, b = result.trace_of("a")[0], result.trace_of("b")[0]
        assert 0.0 <= a.started < 0.02
        assert b.started >= a.started + a.seconds - 1e-3
        assert b.started >= 0.02


# -- limits -------------------------------------------------------------------------------


def test_retries_in_a_branch_wait_without_blocking_the_others() -> None:
    failures = {"a": 2}

    def flaky() -> str:
        if failures["a"]:
            failures["a"] -= 1
            raise ValueError("flaky")
        return "a"

    result = Coordinator(
        [Parallel("g", Step("a", flaky, retry=Retry(attempts=3, initial=0.05)), Step("b", job("b")))]
    ).run()
    assert result.ok, result.fatal
    assert labels(result) == ["b.job:ok", "a.job:ok"]
    assert result.trace_of("a")[0].attempts == 3


def test_a_step_timeout_in_an_async_branch_fails_that_callback() -> None:
    async def hangs() -> None:
        await asyncio.sleep(WAIT)

    result = Coordinator([Parallel("g", Step("slow", hangs, timeout=0.05), Step("b", job("b")))]).run()
    assert isinstance(result.fatal, JobFailed)
    assert isinstance(result.fatal.error, CallbackTimeout)
    assert result.fatal.error.timeout == 0.05
    assert result.data_bag.get_job_data("b") == "b"


@pytest.mark.anyio
async def test_the_run_timeout_cancels_awaiting_callbacks_in_every_branch() -> None:
    async def hangs() -> None:
        await asyncio.sleep(WAIT)

    flow = Coordinator([Parallel("g", Step("a", hangs), [Step("b", job(1)), Step("c", hangs)]), Step("d", job(2))])
    began = time.monotonic()
    result = await flow.run_async(timeout=1.0)  # long enough for the plain step b on a loaded machine
    assert time.monotonic() - began < WAIT / 2
    assert isinstance(result.fatal, RunCancelled)
    assert result.fatal.timeout == 1.0
    outcomes = {c.step: c.outcome for c in result.trace}
    assert outcomes == {"a": "canceled", "b": "ok", "c": "canceled"}


# -- events --------------------------------------------------------------------------------


def test_events_of_branch_callbacks_reach_listeners_in_the_driving_thread() -> None:
    events: list[tuple[RunEvent, str]] = []
    flow = Coordinator(
        [Parallel("g", Step("a", job(1)), Step("b", job(2)))],
        listeners=[lambda event: events.append((event, threading.current_thread().name))],
    )
    flow.run()
    started = sorted(e.step for e, _ in events if isinstance(e, CallbackStarted))
    finished = sorted(e.step for e, _ in events if isinstance(e, CallbackFinished))
    assert started == finished == ["a", "b"]
    assert {thread for _, thread in events} == {threading.current_thread().name}


def test_run_many_runs_group_flows() -> None:
    flow = Coordinator[int](
        [Parallel("g", Step("double", lambda x: 2 * x), Step("square", lambda x: x * x)), Step("sum", lambda x: x)]
    )
    results = sorted(flow.run_many(range(50), workers=4), key=lambda r: r.input)
    assert [r.data_bag.get_job_data("double") for r in results] == [2 * x for x in range(50)]
    assert [r.data_bag.get_job_data("square") for r in results] == [x * x for x in range(50)]


def test_emitted_events_of_branch_callbacks_come_from_their_threads_at_once() -> None:
    seen: list[tuple[str, str, bool]] = []
    finished = threading.Event()

    def emits(ctx: Context[Any]) -> None:
        ctx.emit("progress", ctx.step)
        assert not finished.is_set()  # the event arrived while the callback was still running

    def listener(event: RunEvent) -> None:
        if isinstance(event, Emitted):
            seen.append((str(event.payload), threading.current_thread().name, finished.is_set()))
        if isinstance(event, RunFinished):
            finished.set()

    Coordinator([Parallel("g", Step("a", emits), Step("b", emits))], listeners=[listener]).run()
    assert sorted(payload for payload, _, _ in seen) == ["a", "b"]
    assert all(thread.startswith("choreograph-branch") for _, thread, _ in seen)
    assert not any(late for _, _, late in seen)
