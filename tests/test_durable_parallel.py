"""Durable runs of parallel groups: each branch's outcome recorded as its own, whatever order branches end in."""

import threading
from typing import Any

import pytest

from choreograph import Coordinator, Parallel, Step, UnstorableOutput
from choreograph.typing import Store


class Gate:
    """Branches that wait for each other before returning, so that their outputs are checked before any is recorded."""

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=10)

    def branch(self, value: object) -> Any:
        def job() -> object:
            self.barrier.wait()
            return value

        return job


def test_parallel_outputs_are_stored_with_their_own_steps(store: Store):
    """Both branches' outputs are checked (encoded) before either is recorded: each event holds its own output."""
    gate = Gate(3)
    flow = Coordinator[int](
        [
            Parallel(
                "g",
                Step("b", gate.branch(["b"])),
                Step("c", gate.branch({"c": 1})),
                Step("e", gate.branch(("e",))),
            ),
            Step("after", lambda x: x),
        ],
        store=store,
        key=str,
    )
    result = flow.run(7)
    assert result.ok
    stored = {event.step: store.decode(event.output) for event in store.events("7") if event.output is not None}
    assert stored == {"b": ["b"], "c": {"c": 1}, "e": ("e",), "after": 7}
    again = flow.run(7)  # the stored result, rebuilt from those events
    assert again.data_bag.job_data == {"b": ["b"], "c": {"c": 1}, "e": ("e",), "after": 7}
    assert all(call.restored for call in again.trace)


def test_a_resumed_parallel_run_restores_the_branches_that_completed(store: Store):
    """Interrupted in the step after the group: resumed, every branch is restored and only that step runs again."""
    calls: list[str] = []
    crash = [True]

    def branch(name: str) -> Any:
        def job() -> str:
            calls.append(name)
            return name

        return job

    def after() -> str:
        calls.append("after")
        if crash[0]:
            crash[0] = False
            raise KeyboardInterrupt
        return "done"

    flow = Coordinator[int](
        [Step("a", branch("a")), Parallel("g", Step("b", branch("b")), Step("c", branch("c"))), Step("d", after)],
        store=store,
        key=str,
    )
    with pytest.raises(KeyboardInterrupt):
        flow.run(1)
    result = flow.run(1)
    assert result.ok
    assert sorted(calls[:3]) == ["a", "b", "c"]
    assert calls[3:] == ["after", "after"]
    assert result.data_bag.job_data == {"a": "a", "b": "b", "c": "c", "d": "done"}
    assert {call.step: call.restored for call in result.trace} == {"a": True, "b": True, "c": True, "d": False}


def test_an_unstorable_branch_output_fails_its_own_branch(store: Store):
    """A branch's output the codec can't encode fails that branch's step (UnstorableOutput), not the other one's."""
    gate = Gate(2)
    flow = Coordinator[int](
        [Parallel("g", Step("good", gate.branch("fine")), Step("bad", gate.branch(object())))], store=store, key=str
    )
    result = flow.run(1)
    assert not result.ok
    (error,) = result.errors
    assert error.step == "bad"
    assert isinstance(error.error, UnstorableOutput)
    outcomes = {event.step: event.outcome for event in store.events("1")}
    assert outcomes == {"good": "ok", "bad": "failed"}
    good = next(event for event in store.events("1") if event.step == "good")
    assert good.output is not None
    assert store.decode(good.output) == "fine"
