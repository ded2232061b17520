"""
How compensations are traced and counted: outcomes, attempts, and a rollback resumed after an interruption.

A compensation's error never stops the others and is always a "failed"
compensation, whatever the error is. Its attempts count from 1 in the session
that runs it, also in a resumed run. A rollback interrupted half-way resumes
with the run's original fatal error.
"""

from typing import Any

import pytest

from choreograph import Coordinator, ExecutionCanceled, JobFailed, Retry, RunResult, Skip, Step
from choreograph.typing import Store


def decline() -> None:
    raise ValueError("declined")


def comp(result: RunResult[Any]) -> list[tuple[str, str, int]]:
    return [(c.step, c.outcome, c.attempts) for c in result.compensations]


@pytest.mark.parametrize("error", [ExecutionCanceled("stop"), Skip("later"), RuntimeError("broken")])
def test_a_compensation_error_of_any_kind_is_a_failed_compensation(error: Exception):
    """A compensation raising `ExecutionCanceled`, `Skip` or anything else is traced "failed"; the others still run."""
    undone: list[str] = []

    def undo_a() -> None:
        undone.append("a")

    def undo_b() -> None:
        undone.append("b")
        raise error

    coordinator = Coordinator(
        [
            Step("a", lambda: "A", compensate=undo_a),
            Step("b", lambda: "B", compensate=undo_b),
            Step("pay", decline),
        ]
    )
    result = coordinator.run()

    assert undone == ["b", "a"]
    assert comp(result) == [("b", "failed", 1), ("a", "ok", 1)]
    assert [(e.step, e.phase, e.error) for e in result.compensation_errors] == [("b", "compensate", error)]
    assert isinstance(result.fatal, JobFailed)
    assert result.fatal.step == "pay"


def test_a_retried_compensation_counts_its_attempts():
    """A compensation that fails then succeeds under the step's retry policy is "ok" with every attempt counted."""
    calls: list[int] = []

    def undo() -> None:
        calls.append(len(calls) + 1)
        if len(calls) < 3:
            raise OSError("busy")

    retry = Retry(attempts=3, initial=0.0, jitter=0.0)
    coordinator = Coordinator([Step("a", lambda: "A", compensate=undo, retry=retry), Step("pay", decline)])
    result = coordinator.run()

    assert calls == [1, 2, 3]
    assert comp(result) == [("a", "ok", 3)]
    assert result.compensation_errors == ()


def test_a_resumed_run_counts_a_compensations_attempts_from_one(store: Store):
    """In a run resumed after an interruption, a compensation never tried before makes attempt 1."""
    interrupt = [True]

    def flaky() -> None:
        if interrupt.pop():
            raise KeyboardInterrupt
        raise ValueError("declined")

    undone: list[int] = []

    def undo() -> None:
        undone.append(1)

    coordinator = Coordinator(
        [Step("a", lambda: "A", compensate=undo), Step("pay", flaky)],
        store=store,
        key=str,
    )
    with pytest.raises(KeyboardInterrupt):
        coordinator.run(None, key="k")
    interrupt.append(False)

    result = coordinator.run(None, key="k")

    assert undone == [1]
    assert [(c.step, c.phase, c.outcome, c.attempts, c.restored) for c in result.trace] == [
        ("a", "job", "ok", 1, True),
        ("pay", "job", "failed", 1, False),
        ("a", "compensate", "ok", 1, False),
    ]


def test_an_interrupted_rollback_resumes_with_the_original_fatal(store: Store):
    """A rollback stopped by KeyboardInterrupt goes on at the next run, its fatal the job failure that started it."""
    interrupt = [True]
    undone: list[str] = []

    def undo_a() -> None:
        undone.append("a")

    def undo_b() -> None:
        undone.append("b")
        if interrupt.pop():
            raise KeyboardInterrupt

    coordinator = Coordinator(
        [
            Step("a", lambda: "A", compensate=undo_a),
            Step("b", lambda: "B", compensate=undo_b),
            Step("pay", decline),
        ],
        store=store,
        key=str,
    )
    with pytest.raises(KeyboardInterrupt):
        coordinator.run(None, key="k")
    info = store.run_info("k")
    assert info is not None
    assert info.status == "compensating"
    interrupt.append(False)

    result = coordinator.run(None, key="k")

    assert undone == ["b", "b", "a"]
    assert isinstance(result.fatal, JobFailed)
    assert result.fatal.step == "pay"
    assert isinstance(result.fatal.error, ValueError)
    assert str(result.fatal.error) == "declined"
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.failed_step, info.error_type) == ("rolled_back", "pay", "ValueError")
