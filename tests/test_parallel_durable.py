"""Durable runs of flows with parallel groups: what is recorded, how a resumed run restores each branch; every store."""

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from choreograph import Context, Coordinator, JobFailed, Parallel, Step
from choreograph.typing import Store

WAIT = 10.0


class Calls:
    """Callbacks that log their calls; some are interrupted (KeyboardInterrupt) or fail while told to."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.interrupt: set[str] = set()
        self.fail: set[str] = set()
        self.lock = threading.Lock()

    def job(self, name: str, output: object = None, wait_for: threading.Event | None = None) -> Callable[[], object]:
        def called() -> object:
            with self.lock:
                self.log.append(name)
            if wait_for is not None:
                assert wait_for.wait(WAIT)
            if name in self.interrupt:
                raise KeyboardInterrupt
            if name in self.fail:
                raise ValueError(name)
            return output

        return called

    def take(self) -> list[str]:
        log, self.log = self.log, []
        return log


def flow_of(store: Store, calls: Calls, *, b1_done: threading.Event | None = None) -> Coordinator[Any]:
    """a; then branches [b1, b2] and [c1]; then d. b2 waits until *b1_done* (so c1 finished first)."""
    return Coordinator(
        [
            Step("a", calls.job("a", "A")),
            Parallel(
                "g",
                [Step("b1", calls.job("b1", "B1")), Step("b2", calls.job("b2", "B2", wait_for=b1_done))],
                Step("c1", calls.job("c1", "C1"), compensate=calls.job("c1.undo")),
            ),
            Step("d", calls.job("d", "D")),
        ],
        store=store,
        key=str,
    )


def test_every_branch_callback_is_recorded_with_its_output(store: Store) -> None:
    calls = Calls()
    result = flow_of(store, calls).run(1)
    assert result.ok, result.fatal
    events = store.events("1")
    assert sorted((e.step, e.phase, e.outcome) for e in events) == sorted(
        (name, "job", "ok") for name in ("a", "b1", "b2", "c1", "d")
    )
    assert events[0].step == "a"
    assert events[-1].step == "d"
    assert {e.step: store.decode(e.output) for e in events if e.output} == {
        "a": "A",
        "b1": "B1",
        "b2": "B2",
        "c1": "C1",
        "d": "D",
    }
    assert sorted(calls.take()) == ["a", "b1", "b2", "c1", "d"]
    again = flow_of(store, calls).run(1)  # a finished key: its stored result, nothing runs
    assert calls.take() == []
    assert dict(again.data_bag.job_data) == dict(result.data_bag.job_data)
    assert [c.step for c in again.trace] == [c.step for c in result.trace]


def test_a_resumed_run_restores_each_branch_and_runs_what_remains(store: Store) -> None:
    calls = Calls()
    calls.interrupt.add("b2")
    done = threading.Event()
    flow = flow_of(store, calls, b1_done=done)
    done.set()
    with pytest.raises(KeyboardInterrupt):
        flow.run(7)
    first = calls.take()
    assert first[0] == "a"
    assert set(first) >= {"a", "b1", "b2"}
    calls.interrupt.clear()
    result = flow.run(7)
    assert result.ok, result.fatal
    ran = calls.take()
    assert "a" not in ran
    assert "b1" not in ran
    assert ran[-1] == "d"
    assert "b2" in ran
    restored = {c.step for c in result.trace if c.restored}
    assert {"a", "b1"} <= restored
    assert "b2" not in restored
    assert "c1" in restored or "c1" in ran  # c1 either finished before the interrupt or runs now
    assert dict(result.data_bag.job_data) == {"a": "A", "b1": "B1", "b2": "B2", "c1": "C1", "d": "D"}
    info = store.run_info("7")
    assert info is not None
    assert info.status == "ok"
    assert info.sessions == 2


def test_a_failed_branch_rolls_the_completed_branches_back_once(store: Store) -> None:
    calls = Calls()
    calls.fail.add("b2")
    done = threading.Event()
    done.set()
    flow = flow_of(store, calls, b1_done=done)
    result = flow.run(3)
    assert isinstance(result.fatal, JobFailed)
    assert result.fatal.step == "b2"
    assert calls.take().count("c1.undo") == 1  # c1 completed, then the group's fatal rolled it back
    assert [(c.step, c.outcome) for c in result.compensations] == [("c1", "ok")]
    info = store.run_info("3")
    assert info is not None
    assert info.status == "rolled_back"
    calls.fail.clear()
    again = flow.run(3)  # a rolled-back key starts from scratch, in a new generation
    assert again.ok, again.fatal
    assert sorted(calls.take()) == ["a", "b1", "b2", "c1", "d"]
    assert not any(c.restored for c in again.trace)
    assert {e.generation for e in store.events("3")} == {1, 2}


def test_branch_contexts_in_a_durable_run_see_their_own_step(store: Store) -> None:
    def who(ctx: Context[Any]) -> str:
        return f"{ctx.step}:{ctx.key}"

    flow = Coordinator([Parallel("g", Step("x", who), Step("y", who))], store=store, key=str)
    result = flow.run(5)
    assert dict(result.data_bag.job_data) == {"x": "x:5", "y": "y:5"}


def test_restored_branch_steps_are_compensated_in_reverse_order_of_their_first_completion(store: Store) -> None:
    calls = Calls()
    undone: list[str] = []

    def x1(ctx: Context[Any]) -> str:  # finishes after y1, though its branch comes first
        for _ in range(int(WAIT / 0.001)):
            if any(e.step == "y1" for e in store.events(str(ctx.key))):
                return "X1"
            time.sleep(0.001)
        raise AssertionError("y1 never finished")

    flow = Coordinator(
        [
            Step("a", calls.job("a"), compensate=lambda: undone.append("a")),
            Parallel(
                "g",
                Step("x1", x1, compensate=lambda: undone.append("x1")),
                Step("y1", calls.job("y1"), compensate=lambda: undone.append("y1")),
            ),
            Step("book", calls.job("book")),
        ],
        store=store,
        key=str,
    )
    calls.interrupt.add("book")
    with pytest.raises(KeyboardInterrupt):
        flow.run(9)
    calls.interrupt.clear()
    calls.fail.add("book")
    result = flow.run(9)
    assert isinstance(result.fatal, JobFailed)
    assert {c.step for c in result.trace if c.restored} == {"a", "x1", "y1"}
    assert undone == ["x1", "y1", "a"]
