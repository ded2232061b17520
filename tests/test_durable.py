"""Durable runs: what a store records, and how running a key again resumes, restores or refuses it; for every store."""

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from choreograph import (
    Context,
    Coordinator,
    ExecutionCanceled,
    JobFailed,
    PickleCodec,
    PoisonedRun,
    Retry,
    RunResult,
    Skip,
    Step,
    StepError,
    StoredError,
    UnstorableOutput,
)
from choreograph.typing import Store

# -- helpers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Parcel:
    """An output the JSON codec stores as a dataclass."""

    id: int
    tags: tuple[str, ...]


class Opaque:
    """A value no JSON codec can store."""


class LedgerError(Exception):
    """A user-defined error class, for `error_type` queries."""


@dataclass
class Script:
    """
    Callbacks that log every call, and fail or get interrupted on demand.

    Labels are ``"<step>.<phase>"``: ``"b.job"``, ``"b.precheck"``, ``"b.compensate"``.
    """

    log: list[str] = field(default_factory=list)
    #: label -> how many more calls fail (-1: every call).
    failures: dict[str, int] = field(default_factory=dict)
    #: label -> the exception those failing calls raise.
    errors: dict[str, Callable[[], BaseException]] = field(default_factory=dict)
    #: labels whose calls raise KeyboardInterrupt.
    interrupts: set[str] = field(default_factory=set)

    def fail(self, label: str, times: int = -1, error: Callable[[], BaseException] | None = None) -> None:
        self.failures[label] = times
        if error is not None:
            self.errors[label] = error

    def fix(self, label: str) -> None:
        self.failures.pop(label, None)
        self.interrupts.discard(label)

    def _call(self, label: str, output: object) -> object:
        self.log.append(label)
        if label in self.interrupts:
            raise KeyboardInterrupt
        left = self.failures.get(label, 0)
        if left:
            if left > 0:
                self.failures[label] = left - 1
            make_error = self.errors.get(label, lambda: ValueError(label))
            raise make_error()
        return output

    def job(self, step: str, output: object = None) -> Callable[[], object]:
        return lambda: self._call(f"{step}.job", output)

    def precheck(self, step: str, output: object = None) -> Callable[[], object]:
        return lambda: self._call(f"{step}.precheck", output)

    def compensate(self, step: str) -> Callable[[], None]:
        def undo() -> None:
            self._call(f"{step}.compensate", None)

        return undo

    def take(self) -> list[str]:
        """Return the calls logged so far and start a new log."""
        calls, self.log = self.log, []
        return calls


def trace_of(result: RunResult[Any]) -> list[tuple[str, str, str, int, bool]]:
    return [(c.step, c.phase, c.outcome, c.attempts, c.restored) for c in result.trace]


def errors_of(result: RunResult[Any]) -> list[tuple[str, str, type[BaseException], str]]:
    return [(e.step, e.phase, type(e.error), str(e.error)) for e in result.errors]


def durable(store: Store, *steps: Step, key: Callable[[Any], str | int] | None = str) -> Coordinator[Any]:
    return Coordinator(steps, store=store, key=key)


def interrupted(coordinator: Coordinator[Any], input: object, **options: Any) -> None:  # noqa: A002
    """Run, expecting the run to be interrupted by KeyboardInterrupt (as when a process is stopped)."""
    with pytest.raises(KeyboardInterrupt):
        coordinator.run(input, **options)


# -- recording ----------------------------------------------------------------------------


def test_each_outcome_is_committed_before_the_next_callback_starts(store: Store):
    """When a callback starts, every earlier callback's outcome is already in the store, with its output."""
    seen: list[list[tuple[str, str, str, object]]] = []

    def snapshot() -> None:
        events = store.events("k")
        seen.append([(e.step, e.phase, e.outcome, store.decode(e.output) if e.output else None) for e in events])

    coordinator = durable(
        store,
        Step("a", lambda: Parcel(1, ("x",))),
        Step("b", lambda: snapshot() or "B", lambda: snapshot() or "pre"),
    )

    result = coordinator.run(None, key="k")

    assert result.ok
    assert seen == [
        [("a", "job", "ok", Parcel(1, ("x",)))],
        [("a", "job", "ok", Parcel(1, ("x",))), ("b", "precheck", "ok", "pre")],
    ]


def test_the_input_is_stored_and_resume_runs_with_it(store: Store):
    """The run's input is stored; `resume(key)` runs the key again with that input."""
    script = Script()
    script.fail("b.job", times=1)
    received: list[object] = []
    coordinator = durable(
        store,
        Step("a", lambda order: received.append(order) or order["id"]),
        Step("b", script.job("b", "B")),
        key=lambda order: order["id"],
    )
    order = {"id": 7, "lines": (Parcel(1, ("gift",)),), "amount": 12.5}

    first = coordinator.run(order)
    assert store.stored_input("7") == order
    second = coordinator.resume(7)

    assert not first.ok
    assert second.ok
    assert second.input == order
    assert received == [order]  # a completed in the first run: restored, not called again
    assert second.data_bag.get_job_data("a") == 7
    assert script.take() == ["b.job", "b.job"]


def test_resume_of_an_unknown_key_raises_key_error(store: Store):
    """`resume` of a key the store never ran raises KeyError; `stored_input` too."""
    coordinator = durable(store, Step("a", lambda: 1))
    with pytest.raises(KeyError, match="nope"):
        coordinator.resume("nope")
    with pytest.raises(KeyError, match="nope"):
        store.stored_input("nope")


def test_resume_needs_a_store():
    """`resume` on a coordinator without a store raises TypeError."""
    with pytest.raises(TypeError, match="store"):
        Coordinator([Step("a", lambda: 1)]).resume("k")


def test_a_durable_run_needs_a_key(store: Store):
    """Without `key=` and without a key callable, `run` raises TypeError and nothing runs."""
    script = Script()
    coordinator = durable(store, Step("a", script.job("a")), key=None)

    with pytest.raises(TypeError, match="key"):
        coordinator.run(1)
    with pytest.raises(TypeError, match="key"):
        coordinator.run_many([1, 2])

    assert script.log == []
    assert store.runs() == []


def test_the_key_callable_derives_the_key_and_int_keys_are_text(store: Store):
    """The coordinator's key callable names the run; an int key is stored as its text."""
    coordinator = durable(store, Step("a", lambda: 1), key=lambda record: record["id"])

    result = coordinator.run({"id": 42})
    explicit = coordinator.run({"id": 1}, key="other")

    assert result.key == "42"
    assert explicit.key == "other"
    assert {info.key for info in store.runs()} == {"42", "other"}


def test_an_input_the_codec_cant_store_raises_type_error_before_anything_runs(store: Store):
    """A durable run whose input can't be encoded raises TypeError naming the key; no callback runs."""
    script = Script()
    coordinator = durable(store, Step("a", script.job("a")))

    with pytest.raises(TypeError, match="k1"):
        coordinator.run(Opaque(), key="k1")

    assert script.log == []
    assert store.run_info("k1") is None


def test_a_job_error_whose_message_cannot_be_rendered_still_fails_the_run(store: Store):
    """An error whose `str()` raises is recorded like any other: the run ends with `JobFailed`, the key "failed"."""

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no message")

    def job() -> None:
        raise Unprintable

    result = durable(store, Step("a", job)).run(None, key="k")

    assert isinstance(result.fatal, JobFailed)
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.failed_step) == ("failed", "a")


# -- resuming a failed key ----------------------------------------------------------------------


def test_a_failed_key_resumes_after_the_fix(store: Store):
    """After a job fails, running the key again restores the completed steps and re-runs the failed one."""
    script = Script()
    script.fail("b.job")
    coordinator = durable(
        store,
        Step("a", script.job("a", Parcel(1, ("fragile",)))),
        Step("b", script.job("b", "B"), script.precheck("b", "checked")),
        Step("c", script.job("c", "C")),
    )

    first = coordinator.run(None, key="k")

    assert script.take() == ["a.job", "b.precheck", "b.job"]
    assert trace_of(first) == [
        ("a", "job", "ok", 1, False),
        ("b", "precheck", "ok", 1, False),
        ("b", "job", "failed", 1, False),
    ]
    assert isinstance(first.fatal, JobFailed)
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.generation, info.sessions, info.interruptions) == ("failed", 1, 1, 0)
    assert (info.failed_step, info.error_type, info.owner) == ("b", "ValueError", None)
    assert info.error == str(first.fatal)

    script.fix("b.job")
    second = coordinator.run(None, key="k")

    assert script.take() == ["b.precheck", "b.job", "c.job"]
    assert trace_of(second) == [
        ("a", "job", "ok", 1, True),
        ("b", "precheck", "ok", 2, False),
        ("b", "job", "ok", 2, False),
        ("c", "job", "ok", 1, False),
    ]
    assert second.ok
    assert second.errors == ()
    assert second.data_bag.get_job_data("a") == Parcel(1, ("fragile",))
    assert second.data_bag.get_precheck_data("b") == "checked"
    assert second.data_bag.get_job_data("c") == "C"
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.generation, info.sessions) == ("ok", 1, 2)
    assert (info.failed_step, info.error_type, info.error) == (None, None, None)


def test_a_precheck_that_skipped_is_restored_with_its_error(store: Store):
    """A step whose precheck failed (job skipped) is restored: precheck not called, its error back on the stack."""
    script = Script()
    script.fail("a.precheck", error=lambda: KeyError("no stock"))
    script.fail("b.job", times=1)
    coordinator = durable(
        store,
        Step("a", script.job("a"), script.precheck("a")),
        Step("b", script.job("b", "B")),
    )

    first = coordinator.run(None, key="k")
    assert script.take() == ["a.precheck", "b.job"]
    second = coordinator.run(None, key="k")

    assert script.take() == ["b.job"]
    assert trace_of(second) == [
        ("a", "precheck", "failed", 1, True),
        ("a", "job", "skipped", 0, True),
        ("b", "job", "ok", 2, False),
    ]
    assert second.ok
    assert errors_of(second) == [("a", "precheck", KeyError, "'no stock'")]
    assert errors_of(first)[0] == errors_of(second)[0]


def test_a_skip_output_is_restored_into_the_data_bag(store: Store):
    """A precheck's `Skip(output=...)` is restored on resume: output back in the DataBag, Skip back on the stack."""
    script = Script()
    script.fail("b.job", times=1)

    def already_done() -> None:
        script.log.append("a.precheck")
        raise Skip("cached", output={"cached": (1, 2)})

    coordinator = durable(store, Step("a", script.job("a"), already_done), Step("b", script.job("b")))

    coordinator.run(None, key="k")
    script.take()
    second = coordinator.run(None, key="k")

    assert script.take() == ["b.job"]
    assert second.ok
    assert second.data_bag.get_precheck_data("a") == {"cached": (1, 2)}
    assert not second.data_bag.has_job_data("a")
    (error,) = second.errors
    assert isinstance(error.error, Skip)
    assert error.error.reason == "cached"
    assert error.error.output == {"cached": (1, 2)}


def test_a_canceled_precheck_runs_again_on_resume(store: Store):
    """A precheck that cancelled the run did not complete its step: running the key again calls it again."""
    script = Script()
    script.fail("b.precheck", times=1, error=lambda: ExecutionCanceled("not yet"))
    coordinator = durable(
        store,
        Step("a", script.job("a", "A")),
        Step("b", script.job("b", "B"), script.precheck("b")),
    )

    first = coordinator.run(None, key="k")
    info = store.run_info("k")
    second = coordinator.run(None, key="k")

    assert isinstance(first.fatal, ExecutionCanceled)
    assert info is not None
    assert info.status == "failed"
    assert script.take() == ["a.job", "b.precheck", "b.precheck", "b.job"]
    assert trace_of(second) == [
        ("a", "job", "ok", 1, True),
        ("b", "precheck", "ok", 2, False),
        ("b", "job", "ok", 1, False),
    ]
    assert second.errors == ()


def test_the_in_flight_step_runs_again_from_its_precheck(store: Store):
    """After an interruption inside a job, the key resumes at that step's precheck; earlier steps are restored."""
    script = Script()
    script.interrupts.add("b.job")
    coordinator = durable(
        store,
        Step("a", script.job("a", "A")),
        Step("b", script.job("b", "B"), script.precheck("b", "P")),
    )

    interrupted(coordinator, None, key="k")
    assert [(e.step, e.phase) for e in store.events("k")] == [("a", "job"), ("b", "precheck")]
    script.fix("b.job")
    result = coordinator.run(None, key="k")

    assert script.take() == ["a.job", "b.precheck", "b.job", "b.precheck", "b.job"]
    assert trace_of(result) == [
        ("a", "job", "ok", 1, True),
        ("b", "precheck", "ok", 2, False),
        ("b", "job", "ok", 1, False),
    ]
    assert result.data_bag.get_job_data("b") == "B"


# -- an ok key, fresh runs ------------------------------------------------------------------


def test_an_ok_key_is_not_run_again(store: Store):
    """Running a finished key returns its stored result: no callback runs, every trace entry is restored."""
    script = Script()
    script.fail("a.precheck", error=lambda: Skip("nothing to do"))
    coordinator = durable(
        store,
        Step("a", script.job("a"), script.precheck("a")),
        Step("b", script.job("b", [Parcel(2, ())]), script.precheck("b", "pb")),
        Step("c", script.job("c")),
    )

    first = coordinator.run(None, key="k")
    script.take()
    again = coordinator.run(None, key="k")

    assert script.log == []
    assert again.ok
    assert again.key == "k"
    assert trace_of(again) == [(s, p, o, a, True) for s, p, o, a, _ in trace_of(first)]
    assert errors_of(again) == errors_of(first) == [("a", "precheck", Skip, "nothing to do")]
    assert again.data_bag.get_job_data("b") == [Parcel(2, ())]
    assert again.data_bag.get_precheck_data("b") == "pb"
    assert again.data_bag.get_job_data("c") is None
    assert not again.data_bag.has_job_data("a")
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.generation, info.sessions) == ("ok", 1, 1)


def test_an_ok_key_returns_the_result_of_the_session_that_finished_it(store: Store):
    """After a resume, the stored result of the key has the finishing session's trace, errors and DataBag."""
    script = Script()
    script.fail("a.precheck", error=lambda: ValueError("not needed"))
    script.fail("b.job", times=2)
    coordinator = durable(
        store,
        Step("a", script.job("a"), script.precheck("a")),
        Step("b", script.job("b", "B"), retry=Retry(attempts=2, initial=0, jitter=0)),
        Step("c", script.job("c", "C")),
    )

    coordinator.run(None, key="k")
    finishing = coordinator.run(None, key="k")
    script.take()
    stored = coordinator.run(None, key="k")

    assert script.log == []
    assert finishing.ok
    assert stored.ok
    assert [t[:4] for t in trace_of(stored)] == [t[:4] for t in trace_of(finishing)]
    assert all(call.restored for call in stored.trace)
    assert errors_of(stored) == errors_of(finishing) == [("a", "precheck", ValueError, "not needed")]
    assert stored.data_bag.get_job_data("b") == "B"
    assert stored.data_bag.get_job_data("c") == "C"


def test_fresh_runs_an_ok_key_again_as_a_new_generation(store: Store):
    """`fresh=True` runs every callback of a finished key again, in a new generation; old events are kept."""
    script = Script()
    coordinator = durable(store, Step("a", script.job("a", 1)), Step("b", script.job("b", 2)))

    coordinator.run(None, key="k")
    result = coordinator.run(None, key="k", fresh=True)

    assert script.take() == ["a.job", "b.job", "a.job", "b.job"]
    assert trace_of(result) == [("a", "job", "ok", 1, False), ("b", "job", "ok", 1, False)]
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.generation, info.sessions) == ("ok", 2, 2)
    assert [(e.generation, e.session, e.step) for e in store.events("k")] == [
        (1, 1, "a"),
        (1, 1, "b"),
        (2, 2, "a"),
        (2, 2, "b"),
    ]
    assert [e.step for e in store.events("k", generation=2)] == ["a", "b"]


def test_fresh_restarts_a_failed_key_from_scratch(store: Store):
    """`fresh=True` on a failed key runs the completed steps again too, with attempts counted from 1."""
    script = Script()
    script.fail("b.job", times=1)
    coordinator = durable(store, Step("a", script.job("a")), Step("b", script.job("b")))

    coordinator.run(None, key="k")
    result = coordinator.run(None, key="k", fresh=True)

    assert script.take() == ["a.job", "b.job", "a.job", "b.job"]
    assert trace_of(result) == [("a", "job", "ok", 1, False), ("b", "job", "ok", 1, False)]
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.generation) == ("ok", 2)


# -- steps changed between runs ------------------------------------------------------------------


def test_steps_are_matched_by_name_ignoring_case(store: Store):
    """A step renamed only in case is the same step: its completed outcome is restored."""
    script = Script()
    script.fail("b.job", times=1)
    durable(store, Step("Fetch", script.job("a", "A")), Step("b", script.job("b"))).run(None, key="k")
    script.take()

    result = durable(store, Step("FETCH", script.job("a", "A")), Step("B", script.job("b", "B"))).run(None, key="k")

    assert script.take() == ["b.job"]
    assert result.ok
    assert [(c.step.casefold(), c.phase, c.restored) for c in result.trace] == [
        ("fetch", "job", True),
        ("b", "job", False),
    ]
    assert result.data_bag.get_job_data("fetch") == "A"


def test_a_step_added_since_the_run_runs_at_its_position(store: Store):
    """A step added between runs runs normally, in its place; the others are restored around it."""
    script = Script()
    script.fail("c.job", times=1)
    durable(store, Step("a", script.job("a", "A")), Step("c", script.job("c", "C"))).run(None, key="k")
    script.take()

    result = durable(
        store,
        Step("a", script.job("a", "A")),
        Step("b", script.job("b", "B")),
        Step("c", script.job("c", "C")),
    ).run(None, key="k")

    assert script.take() == ["b.job", "c.job"]
    assert trace_of(result) == [
        ("a", "job", "ok", 1, True),
        ("b", "job", "ok", 1, False),
        ("c", "job", "ok", 2, False),
    ]
    assert [result.data_bag.get_job_data(name) for name in "abc"] == ["A", "B", "C"]


def test_a_removed_steps_events_are_ignored(store: Store):
    """A step removed between runs is neither run nor restored: no trace entry, nothing in the DataBag."""
    script = Script()
    script.fail("c.job", times=1)
    durable(
        store, Step("a", script.job("a", "A")), Step("gone", script.job("gone", "G")), Step("c", script.job("c"))
    ).run(None, key="k")
    script.take()

    result = durable(store, Step("a", script.job("a", "A")), Step("c", script.job("c", "C"))).run(None, key="k")

    assert script.take() == ["c.job"]
    assert trace_of(result) == [("a", "job", "ok", 1, True), ("c", "job", "ok", 2, False)]
    assert not result.data_bag.has_job_data("gone")


def test_a_renamed_step_runs_again(store: Store):
    """A step under a new name is a new step: it runs again, and the old name's outcome is not restored."""
    script = Script()
    script.fail("c.job", times=1)
    durable(store, Step("a", script.job("a", "old")), Step("c", script.job("c"))).run(None, key="k")
    script.take()

    result = durable(store, Step("a2", script.job("a", "new")), Step("c", script.job("c"))).run(None, key="k")

    assert script.take() == ["a.job", "c.job"]
    assert trace_of(result) == [("a2", "job", "ok", 1, False), ("c", "job", "ok", 2, False)]
    assert result.data_bag.get_job_data("a2") == "new"
    assert not result.data_bag.has_job_data("a")


@pytest.mark.parametrize("change", ["added", "removed", "renamed"])
def test_an_ok_key_after_a_step_change_returns_the_finishing_sessions_result(store: Store, change: str):
    """When steps changed before the finishing session, the key's stored result is still that session's result."""
    script = Script()
    script.fail("c.job", times=1)
    before = [Step("a", script.job("a", "A")), Step("old", script.job("old", "O")), Step("c", script.job("c", "C"))]
    after = {
        "added": [Step("new", script.job("new", "N")), *before],
        "removed": [before[0], before[2]],
        "renamed": [before[0], Step("new", script.job("new", "N")), before[2]],
    }[change]
    durable(store, *before).run(None, key="k")
    coordinator = durable(store, *after)
    finishing = coordinator.run(None, key="k")

    stored = coordinator.run(None, key="k")

    assert finishing.ok
    assert [t[:4] for t in trace_of(stored)] == [t[:4] for t in trace_of(finishing)]
    for name in ("a", "old", "new", "c"):
        assert stored.data_bag.has_job_data(name) == finishing.data_bag.has_job_data(name), name


# -- interruptions and poisoned keys ------------------------------------------------------------


def test_an_interrupted_run_releases_the_key_and_counts_an_interruption(store: Store):
    """A run stopped by KeyboardInterrupt leaves the key "running" with no owner; the next run counts it and resumes."""
    script = Script()
    script.interrupts.add("b.job")
    coordinator = durable(store, Step("a", script.job("a", "A")), Step("b", script.job("b", "B")))

    interrupted(coordinator, None, key="k")
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.owner, info.interruptions, info.sessions) == ("running", None, 0, 1)

    script.fix("b.job")
    result = coordinator.run(None, key="k")

    assert result.ok
    assert script.take() == ["a.job", "b.job", "b.job"]
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.interruptions, info.sessions, info.generation) == ("ok", 1, 2, 1)


def test_a_key_interrupted_too_often_is_poisoned_until_run_fresh(make_store: Callable[..., Store]):
    """More than `max_interruptions` interruptions mark the key "poisoned": `PoisonedRun`, nothing runs, until fresh."""
    store = make_store(max_interruptions=2)
    script = Script()
    script.interrupts.add("b.job")
    coordinator = durable(store, Step("a", script.job("a", "A")), Step("b", script.job("b", "B")))

    for _ in range(3):  # the first run, then two resumes: two interruptions counted
        interrupted(coordinator, None, key="k")
    assert script.take() == ["a.job", "b.job", "b.job", "b.job"]
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.interruptions) == ("running", 2)

    poisoned = coordinator.run(None, key="k")  # the third interruption is found: over the limit
    again = coordinator.run(None, key="k")

    assert script.log == []
    for result in (poisoned, again):
        assert isinstance(result.fatal, PoisonedRun)
        assert (result.fatal.key, result.fatal.interruptions) == ("k", 3)
        assert result.trace == ()
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.interruptions) == ("poisoned", 3)
    assert [i.key for i in store.runs(status="poisoned")] == ["k"]

    script.fix("b.job")
    fresh = coordinator.run(None, key="k", fresh=True)

    assert fresh.ok
    assert script.take() == ["a.job", "b.job"]
    assert trace_of(fresh) == [("a", "job", "ok", 1, False), ("b", "job", "ok", 1, False)]
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.generation, info.interruptions) == ("ok", 2, 0)
    store.close()


def test_max_interruptions_zero_poisons_at_the_first_interruption(make_store: Callable[..., Store]):
    """With `max_interruptions=0`, the run after a single interruption is already refused."""
    store = make_store(max_interruptions=0)
    script = Script()
    script.interrupts.add("a.job")
    coordinator = durable(store, Step("a", script.job("a")))

    interrupted(coordinator, None, key="k")
    result = coordinator.run(None, key="k")

    assert isinstance(result.fatal, PoisonedRun)
    assert script.take() == ["a.job"]
    store.close()


# -- retries across resumes -----------------------------------------------------------------------


def test_retry_attempts_continue_across_resumes(store: Store):
    """A job that used 2 attempts in one session starts at attempt 3 in the next; trace and events hold totals."""
    attempts_seen: list[int] = []
    failures = iter([True, True, True, False])

    def flaky(ctx: Context) -> str:
        attempts_seen.append(ctx.attempt)
        if next(failures):
            raise OSError("flaky")
        return "done"

    coordinator = durable(store, Step("a", lambda: "A"), Step("b", flaky, retry=Retry(attempts=2, initial=0, jitter=0)))

    first = coordinator.run(None, key="k")
    second = coordinator.run(None, key="k")  # attempt 3: over the policy's 2, so no retry this session
    third = coordinator.run(None, key="k")

    assert attempts_seen == [1, 2, 3, 4]
    assert [c.attempts for c in first.trace if c.step == "b"] == [2]
    assert [c.attempts for c in second.trace if c.step == "b"] == [3]
    assert [(c.outcome, c.attempts) for c in third.trace if c.step == "b"] == [("ok", 4)]
    assert [(e.session, e.outcome, e.attempts) for e in store.events("k") if e.step == "b"] == [
        (1, "failed", 2),
        (2, "failed", 3),
        (3, "ok", 4),
    ]


def _sessions_model(failures: int, limit: int, sessions: int) -> list[tuple[int, int, str]]:
    """Per session: (calls made, running attempt total, outcome), for a job failing its first *failures* calls."""
    made, left, result = 0, failures, []
    for _ in range(sessions):
        calls = 0
        while True:
            made += 1
            calls += 1
            if left == 0:
                result.append((calls, made, "ok"))
                return result
            left -= 1
            if made >= limit:
                result.append((calls, made, "failed"))
                break
    return result


_keys = itertools.count()


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(failures=st.integers(0, 6), limit=st.integers(1, 4), sessions=st.integers(1, 4))
def test_retry_counting_matches_a_model_across_resumes(store: Store, failures: int, limit: int, sessions: int):
    """For any failure count and attempt limit, calls, attempts and outcomes per session match the model."""
    key = f"retry-{next(_keys)}"
    calls: list[int] = []
    left = [failures]

    def job(ctx: Context) -> int:
        calls.append(ctx.attempt)
        if left[0]:
            left[0] -= 1
            raise OSError("transient")
        return ctx.attempt

    coordinator = durable(
        store, Step("first", lambda: "F"), Step("flaky", job, retry=Retry(attempts=limit, initial=0, jitter=0))
    )
    expected = _sessions_model(failures, limit, sessions)

    for index, (count, total, outcome) in enumerate(expected, start=1):
        calls.clear()
        result = coordinator.run(None, key=key)
        assert len(calls) == count
        assert calls == list(range(total - count + 1, total + 1))
        assert trace_of(result) == [("first", "job", "ok", 1, index > 1), ("flaky", "job", outcome, total, False)]
        assert result.ok == (outcome == "ok")
        assert store.events(key)[-1].attempts == total
        info = store.run_info(key)
        assert info is not None
        assert (info.status, info.sessions) == (outcome, index)
    if expected[-1][2] == "ok":
        calls.clear()
        assert coordinator.run(None, key=key).data_bag.get_job_data("flaky") == expected[-1][1]
        assert calls == []


# -- compensation -------------------------------------------------------------------------------


def test_status_is_compensating_while_compensations_run(store: Store):
    """The store says "compensating" before the first compensation runs, and "rolled_back" once all succeeded."""
    seen: list[tuple[str, str | None]] = []

    def undo(name: str) -> Callable[[], None]:
        def compensate() -> None:
            info = store.run_info("k")
            seen.append((name, None if info is None else info.status))

        return compensate

    def charge() -> None:
        raise ValueError("declined")

    coordinator = durable(
        store,
        Step("reserve", lambda: "R", compensate=undo("reserve")),
        Step("ship", lambda: "S", compensate=undo("ship")),
        Step("charge", charge),
    )

    result = coordinator.run(None, key="k")

    assert seen == [("ship", "compensating"), ("reserve", "compensating")]
    assert [(c.step, c.outcome) for c in result.compensations] == [("ship", "ok"), ("reserve", "ok")]
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.failed_step, info.error_type) == ("rolled_back", "charge", "ValueError")
    assert [(e.step, e.phase, e.outcome) for e in store.events("k") if e.phase == "compensate"] == [
        ("ship", "compensate", "ok"),
        ("reserve", "compensate", "ok"),
    ]


def test_a_rolled_back_key_starts_from_scratch(store: Store):
    """Running a rolled-back key runs everything again, in a new generation."""
    script = Script()
    script.fail("b.job", times=1)
    coordinator = durable(
        store, Step("a", script.job("a", "A"), compensate=script.compensate("a")), Step("b", script.job("b", "B"))
    )

    first = coordinator.run(None, key="k")
    assert script.take() == ["a.job", "b.job", "a.compensate"]
    info = store.run_info("k")
    assert info is not None
    assert info.status == "rolled_back"

    second = coordinator.run(None, key="k")

    assert not first.ok
    assert second.ok
    assert script.take() == ["a.job", "b.job"]
    assert trace_of(second) == [("a", "job", "ok", 1, False), ("b", "job", "ok", 1, False)]
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.generation, info.sessions) == ("ok", 2, 2)


def test_a_failed_compensation_is_resumed_alone_then_the_key_is_rolled_back(store: Store):
    """A compensation that failed leaves the key "compensating"; the next run only retries that compensation."""
    script = Script()
    script.fail("c.job")
    script.fail("b.compensate", times=1, error=lambda: RuntimeError("undo b failed"))
    coordinator = durable(
        store,
        Step("a", script.job("a", "A"), compensate=script.compensate("a")),
        Step("b", script.job("b", "B"), compensate=script.compensate("b")),
        Step("c", script.job("c"), compensate=script.compensate("c")),
    )

    first = coordinator.run(None, key="k")

    assert script.take() == ["a.job", "b.job", "c.job", "b.compensate", "a.compensate"]
    assert [(e.step, e.phase, type(e.error)) for e in first.compensation_errors] == [("b", "compensate", RuntimeError)]
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.generation, info.sessions) == ("compensating", 1, 1)

    second = coordinator.run(None, key="k")

    assert script.take() == ["b.compensate"]
    assert isinstance(second.fatal, JobFailed)
    assert second.fatal.step == "c"
    assert isinstance(second.fatal.error, ValueError)
    assert [(c.step, c.outcome) for c in second.compensations if not c.restored] == [("b", "ok")]
    assert [(e.step, e.phase, type(e.error)) for e in second.errors] == [("c", "job", ValueError)]
    assert second.compensation_errors == ()
    assert second.data_bag.get_job_data("a") == "A"  # the rollback sees the restored outputs
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.generation, info.sessions) == ("rolled_back", 1, 2)

    third = coordinator.run(None, key="k")

    assert script.take() == ["a.job", "b.job", "c.job", "b.compensate", "a.compensate"]
    assert isinstance(third.fatal, JobFailed)
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.generation, info.sessions) == ("rolled_back", 2, 3)


def test_a_rollback_resume_also_compensates_a_failed_step_with_compensate_failed(store: Store):
    """With `compensate_failed=True`, a rollback resumed later still retries the failed step's own compensation."""
    script = Script()
    script.fail("b.job")
    script.fail("b.compensate", times=1)
    coordinator = durable(
        store,
        Step("a", script.job("a"), compensate=script.compensate("a")),
        Step("b", script.job("b"), compensate=script.compensate("b"), compensate_failed=True),
    )

    coordinator.run(None, key="k")
    assert script.take() == ["a.job", "b.job", "b.compensate", "a.compensate"]
    coordinator.run(None, key="k")

    assert script.take() == ["b.compensate"]
    info = store.run_info("k")
    assert info is not None
    assert info.status == "rolled_back"


def test_a_rollback_that_fails_again_stays_compensating(store: Store):
    """A compensation that keeps failing keeps the key "compensating"; forward steps never run again."""
    script = Script()
    script.fail("b.job")
    script.fail("a.compensate")
    coordinator = durable(
        store, Step("a", script.job("a"), compensate=script.compensate("a")), Step("b", script.job("b"))
    )

    for _ in range(3):
        result = coordinator.run(None, key="k")
        assert [(e.step, e.phase) for e in result.compensation_errors] == [("a", "compensate")]

    assert script.take() == ["a.job", "b.job", "a.compensate", "a.compensate", "a.compensate"]
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.generation, info.sessions) == ("compensating", 1, 3)


@st.composite
def rollbacks(draw: st.DrawFn) -> tuple[list[bool], int, bool, set[int]]:
    count = draw(st.integers(1, 6))
    has_compensation = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    failing = draw(st.integers(0, count - 1))
    compensate_failed = draw(st.booleans())
    failing_compensations = draw(st.sets(st.integers(0, count - 1)))
    return has_compensation, failing, compensate_failed, failing_compensations


@settings(deadline=None, max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rollbacks())
def test_compensations_run_in_reverse_order_and_failures_do_not_stop_others(
    store: Store, case: tuple[list[bool], int, bool, set[int]]
):
    """Compensations run in exact reverse order of the completed steps; all failures are kept; a resume finishes it."""
    has_compensation, failing, compensate_failed, failing_compensations = case
    key = f"rollback-{next(_keys)}"
    script = Script()
    names = [f"s{i}" for i in range(len(has_compensation))]
    script.fail(f"{names[failing]}.job")
    for i in failing_compensations:
        script.fail(f"{names[i]}.compensate", times=1)
    coordinator = durable(
        store,
        *(
            Step(
                name,
                script.job(name, i),
                compensate=script.compensate(name) if has_compensation[i] else None,
                compensate_failed=compensate_failed,
            )
            for i, name in enumerate(names)
        ),
    )
    completed = list(range(failing)) + ([failing] if compensate_failed else [])
    order = [names[i] for i in reversed(completed) if has_compensation[i]]
    failed = [names[i] for i in reversed(completed) if has_compensation[i] and i in failing_compensations]

    result = coordinator.run(None, key=key)

    assert script.take() == [f"{n}.job" for n in names[: failing + 1]] + [f"{n}.compensate" for n in order]
    assert [(c.step, c.outcome) for c in result.compensations] == [
        (n, "failed" if n in failed else "ok") for n in order
    ]
    assert [(e.step, e.phase) for e in result.compensation_errors] == [(n, "compensate") for n in failed]
    assert [(e.step, e.phase) for e in result.errors] == [(names[failing], "job")]
    assert isinstance(result.fatal, JobFailed)
    status = "failed" if not order else "compensating" if failed else "rolled_back"
    info = store.run_info(key)
    assert info is not None
    assert info.status == status

    again = coordinator.run(None, key=key)  # the failed compensations now succeed

    if status == "compensating":
        assert script.take() == [f"{n}.compensate" for n in failed]
        assert [(c.step, c.outcome) for c in again.compensations if not c.restored] == [(n, "ok") for n in failed]
        expected = ("rolled_back", 1)
    elif status == "rolled_back":
        assert script.take() == [f"{n}.job" for n in names[: failing + 1]] + [f"{n}.compensate" for n in order]
        expected = ("rolled_back", 2)
    else:
        assert script.take() == [f"{names[failing]}.job"]
        expected = ("failed", 1)
    assert again.compensation_errors == ()
    info = store.run_info(key)
    assert info is not None
    assert (info.status, info.generation) == expected


# -- unstorable outputs -----------------------------------------------------------------------------


def test_an_unstorable_job_output_fails_that_step(store: Store):
    """A job output the codec can't encode fails that job with `UnstorableOutput` naming the step and the type."""
    script = Script()
    coordinator = durable(store, Step("a", script.job("a", "A")), Step("b", Opaque), Step("c", script.job("c")))

    result = coordinator.run(None, key="k")

    assert script.take() == ["a.job"]
    assert trace_of(result) == [("a", "job", "ok", 1, False), ("b", "job", "failed", 1, False)]
    assert isinstance(result.fatal, JobFailed)
    assert result.fatal.step == "b"
    error = result.fatal.error
    assert isinstance(error, UnstorableOutput)
    assert isinstance(error, TypeError)
    assert (error.step, error.phase) == ("b", "job")
    assert "Opaque" in error.type_name
    assert "'b'" in str(error)
    assert "Opaque" in str(error)
    assert not result.data_bag.has_job_data("b")
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.failed_step) == ("failed", "b")
    assert info.error_type is not None
    assert info.error_type.endswith("UnstorableOutput")


def test_an_unstorable_precheck_output_fails_the_precheck(store: Store):
    """A precheck output the codec can't encode fails the precheck: the job is skipped and the run goes on."""
    script = Script()
    coordinator = durable(store, Step("a", script.job("a"), Opaque), Step("b", script.job("b", "B")))

    result = coordinator.run(None, key="k")

    assert script.take() == ["b.job"]
    assert result.ok
    assert trace_of(result)[:2] == [("a", "precheck", "failed", 1, False), ("a", "job", "skipped", 0, False)]
    ((step, phase, kind, _),) = errors_of(result)
    assert (step, phase, kind) == ("a", "precheck", UnstorableOutput)
    assert not result.data_bag.has_precheck_data("a")


def test_an_unstorable_skip_output_becomes_the_precheck_error(store: Store):
    """A precheck's `Skip(output=...)` the codec can't encode: the precheck's error is `UnstorableOutput` instead."""

    def skip() -> None:
        raise Skip("later", output=Opaque())

    coordinator = durable(store, Step("a", lambda: "A", skip), Step("b", lambda: "B"))

    result = coordinator.run(None, key="k")

    assert result.ok
    (entry,) = result.errors
    assert (entry.step, entry.phase) == ("a", "precheck")
    assert isinstance(entry.error, UnstorableOutput)
    assert (entry.error.step, entry.error.phase) == ("a", "precheck")
    assert "Opaque" in entry.error.type_name
    assert not result.data_bag.has_precheck_data("a")
    assert [(c.step, c.phase, c.outcome) for c in result.trace][:2] == [
        ("a", "precheck", "failed"),
        ("a", "job", "skipped"),
    ]


def test_a_pickle_store_restores_outputs_json_cant_hold(make_store: Callable[..., Store]):
    """With `PickleCodec`, any picklable output is stored and restored on resume."""
    store = make_store(codec=PickleCodec())
    script = Script()
    script.fail("b.job", times=1)
    coordinator = durable(
        store, Step("a", script.job("a", {"ids": {1, 2}, "kind": Parcel})), Step("b", script.job("b"))
    )

    coordinator.run(None, key="k")
    result = coordinator.run(None, key="k")

    assert result.ok
    assert script.take() == ["a.job", "b.job", "b.job"]
    assert result.data_bag.get_job_data("a") == {"ids": {1, 2}, "kind": Parcel}
    store.close()


def test_store_options_are_validated(make_store: Callable[..., Store]):
    """A non-codec, a lease <= 0 or negative `max_interruptions` are refused; so is a non-store `store=`."""
    with pytest.raises(TypeError, match="Codec"):
        make_store(codec=object())
    with pytest.raises(ValueError, match="lease"):
        make_store(lease=0)
    with pytest.raises(ValueError, match="max_interruptions"):
        make_store(max_interruptions=-1)
    with pytest.raises(TypeError, match="store"):
        Coordinator(store="runs.db")  # type: ignore[arg-type]


# -- run_many ---------------------------------------------------------------------------------------


def test_run_many_skips_ok_keys_and_resumes_failed_ones(store: Store):
    """A second `run_many` over the same inputs runs nothing for ok keys and resumes only the failed ones."""
    calls: list[tuple[str, int]] = []
    broken = {1, 3, 5}

    def load(item: int) -> int:
        calls.append(("load", item))
        return item * 10

    def save(item: int) -> str:
        calls.append(("save", item))
        if item in broken:
            raise ValueError(item)
        return f"saved {item}"

    coordinator = durable(store, Step("load", load), Step("save", save), key=lambda item: f"item-{item}")

    first = {r.key: r for r in coordinator.run_many(range(6), workers=3)}
    assert {k for k, r in first.items() if not r.ok} == {"item-1", "item-3", "item-5"}
    assert sorted(i.key for i in store.runs(status="failed")) == ["item-1", "item-3", "item-5"]
    calls.clear()
    broken.clear()

    second = {r.key: r for r in coordinator.run_many(range(6), workers=3)}

    assert sorted(calls) == [("save", 1), ("save", 3), ("save", 5)]
    assert all(r.ok for r in second.values())
    for item in range(6):
        result = second[f"item-{item}"]
        assert result.data_bag.get_job_data("load") == item * 10
        assert result.data_bag.get_job_data("save") == f"saved {item}"
        assert all(c.restored for c in result.trace) == (item % 2 == 0)
    assert len(store.runs(status="ok")) == 6


def test_run_many_fresh_runs_every_key_again(store: Store):
    """`run_many(..., fresh=True)` runs finished keys again as new generations."""
    calls: list[int] = []
    coordinator = durable(store, Step("a", lambda item: calls.append(item) or item))

    list(coordinator.run_many([1, 2], workers=2))
    list(coordinator.run_many([1, 2], workers=2))
    list(coordinator.run_many([1, 2], workers=2, fresh=True))

    assert sorted(calls) == [1, 1, 2, 2]
    assert {(i.key, i.generation) for i in store.runs()} == {("1", 2), ("2", 2)}


# -- inspection and pruning --------------------------------------------------------------------------


def test_runs_filters_by_status_step_and_error_type(store: Store):
    """`runs()` lists newest first and filters by status, failed step (any case), error class and limit."""

    def fail_with(error: Exception) -> Callable[[], None]:
        def job() -> None:
            raise error

        return job

    def cancel() -> None:
        raise ExecutionCanceled("stop")

    Coordinator([Step("a", lambda: 1)], store=store).run(None, key="ok-1")
    Coordinator([Step("Pay", fail_with(LedgerError("full")))], store=store).run(None, key="ledger")
    Coordinator([Step("pay", fail_with(KeyError("x")))], store=store).run(None, key="keyerror")
    Coordinator([Step("ship", lambda: 1, cancel)], store=store).run(None, key="canceled")

    assert [i.key for i in store.runs()] == ["canceled", "keyerror", "ledger", "ok-1"]
    assert [i.key for i in store.runs(limit=2)] == ["canceled", "keyerror"]
    assert [i.key for i in store.runs(status="ok")] == ["ok-1"]
    assert [i.key for i in store.runs(status="failed")] == ["canceled", "keyerror", "ledger"]
    assert [i.key for i in store.runs(step="PAY")] == ["keyerror", "ledger"]
    assert [i.key for i in store.runs(error_type="KeyError")] == ["keyerror"]
    assert [i.key for i in store.runs(error_type="LedgerError")] == ["ledger"]
    assert [i.key for i in store.runs(error_type=f"{LedgerError.__module__}.LedgerError")] == ["ledger"]
    assert [i.key for i in store.runs(error_type="ExecutionCanceled")] == ["canceled"]
    assert store.runs(error_type="Error") == []
    assert store.runs(status="failed", step="pay", error_type="KeyError", limit=5)[0].key == "keyerror"
    ledger = store.run_info("ledger")
    assert ledger is not None
    assert (ledger.status, ledger.failed_step, ledger.owner) == ("failed", "Pay", None)
    assert ledger.error_type == f"{LedgerError.__module__}.LedgerError"
    assert ledger.error is not None
    assert "full" in ledger.error
    assert ledger.created <= ledger.updated
    assert store.run_info("missing") is None


def test_run_info_error_is_the_fatal_errors_message(store: Store):
    """`RunInfo.error` is the message the run's fatal error had, also when the job's error is a user class."""

    def fail() -> None:
        raise LedgerError("full")

    result = Coordinator([Step("Pay", fail)], store=store).run(None, key="k")

    info = store.run_info("k")
    assert info is not None
    assert info.error == str(result.fatal) == "job of step 'Pay' failed: LedgerError: full"


def test_a_run_stopped_by_a_precheck_is_listed_under_its_step(store: Store):
    """A run cancelled by a step's precheck is found by `runs(step=...)`: that step stopped it."""

    def cancel() -> None:
        raise ExecutionCanceled("stop")

    Coordinator([Step("a", lambda: 1), Step("ship", lambda: 1, cancel)], store=store).run(None, key="k")

    info = store.run_info("k")
    assert info is not None
    assert info.failed_step == "ship"
    assert [i.key for i in store.runs(step="ship")] == ["k"]


def test_events_record_each_callback_in_order(store: Store):
    """`events()` lists every recorded callback in order with its outcome, output, error and attempts."""

    def refuse() -> None:
        raise Skip("not now", output=[1, 2])

    def fail() -> None:
        raise LedgerError("full")

    coordinator = durable(store, Step("a", lambda: Parcel(3, ("t",))), Step("b", lambda: "B", refuse), Step("c", fail))
    coordinator.run(None, key="k")

    events = store.events("k")

    assert [(e.key, e.generation, e.session, e.step, e.phase, e.outcome, e.attempts) for e in events] == [
        ("k", 1, 1, "a", "job", "ok", 1),
        ("k", 1, 1, "b", "precheck", "failed", 1),
        ("k", 1, 1, "b", "job", "skipped", 0),
        ("k", 1, 1, "c", "job", "failed", 1),
    ]
    assert events[0].output is not None
    assert store.decode(events[0].output) == Parcel(3, ("t",))
    assert events[1].output is not None
    assert store.decode(events[1].output) == [1, 2]
    assert events[1].error_type is not None
    assert events[1].error_type.endswith("Skip")
    assert (events[2].output, events[2].error) == (None, None)
    assert events[3].error_type == f"{LedgerError.__module__}.LedgerError"
    assert events[3].error is not None
    decoded = store.codec.decode_error(events[3].error)
    assert isinstance(decoded, StoredError)
    assert decoded.message == "full"
    assert all(e.seconds >= 0 and e.at > 0 for e in events)
    assert store.events("k", generation=2) == []
    assert store.events("unknown") == []


def test_prune_deletes_matching_runs_and_their_events(store: Store):
    """`prune()` deletes runs by status, age or key, with their events, and returns how many runs went."""
    coordinator = durable(store, Step("a", lambda item: item), Step("b", lambda item: 1 / item))
    for item in (0, 1, 2, 3):
        coordinator.run(item)  # key "0" fails (division by zero)
    cutoff = time.time()
    coordinator.run(4)

    assert store.prune(status="failed") == 1
    assert store.run_info("0") is None
    assert store.events("0") == []
    assert store.prune(keys=["1", "nope"]) == 1
    assert store.prune(keys=[]) == 0
    assert store.prune(before=cutoff) == 2
    assert [i.key for i in store.runs()] == ["4"]
    assert store.prune() == 1
    assert store.runs() == []

    calls: list[int] = []

    def record(item: int) -> None:
        calls.append(item)

    durable(store, Step("a", record)).run(4)
    info = store.run_info("4")
    assert calls == [4]  # a pruned key starts from scratch
    assert info is not None
    assert (info.generation, info.sessions) == (1, 1)


def test_prune_never_deletes_a_run_that_is_going_on(store: Store):
    """A run leased by a live owner survives `prune()`, even one that matches every filter."""
    durable(store, Step("a", lambda: 1)).run(None, key="done")
    pruned: list[int] = []

    def prune_everything() -> str:
        pruned.append(store.prune())
        pruned.append(store.prune(keys=["live"]))
        return "still here"

    result = durable(store, Step("a", lambda: "A"), Step("b", prune_everything)).run(None, key="live")

    assert pruned == [1, 0]
    assert result.ok
    info = store.run_info("live")
    assert info is not None
    assert info.status == "ok"
    assert [e.step for e in store.events("live")] == ["a", "b"]


# -- run_async ---------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_run_async_is_durable(store: Store):
    """`run_async` records and resumes like `run`: completed steps restored, an ok key not run again."""
    log: list[str] = []
    fail = [True]

    async def fetch() -> str:
        log.append("fetch")
        return "F"

    async def send(ctx: Context) -> str:
        log.append("send")
        if fail[0]:
            raise ConnectionError("down")
        return ctx.data_bag.get_job_data("fetch") + "!"

    coordinator = durable(store, Step("fetch", fetch), Step("send", send))

    first = await coordinator.run_async(None, key="k")
    assert isinstance(first.fatal, JobFailed)
    info = store.run_info("k")
    assert info is not None
    assert info.status == "failed"
    fail[0] = False
    second = await coordinator.run_async(None, key="k")
    third = await coordinator.run_async(None, key="k")

    assert log == ["fetch", "send", "send"]
    assert trace_of(second) == [("fetch", "job", "ok", 1, True), ("send", "job", "ok", 2, False)]
    assert second.data_bag.get_job_data("send") == "F!"
    assert third.ok
    assert all(c.restored for c in third.trace)
    assert third.data_bag.get_job_data("send") == "F!"
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.sessions) == ("ok", 2)


@pytest.mark.anyio
async def test_run_async_interruption_releases_the_key_and_resumes(store: Store):
    """A `run_async` interrupted by KeyboardInterrupt releases its key; the next run counts it and resumes."""
    script = Script()
    script.interrupts.add("b.job")
    coordinator = durable(store, Step("a", script.job("a", "A")), Step("b", script.job("b", "B")))

    with pytest.raises(KeyboardInterrupt):
        await coordinator.run_async(None, key="k")
    script.fix("b.job")
    result = await coordinator.run_async(None, key="k")

    assert result.ok
    assert script.take() == ["a.job", "b.job", "b.job"]
    info = store.run_info("k")
    assert info is not None
    assert (info.status, info.interruptions) == ("ok", 1)


@pytest.mark.anyio
async def test_run_async_reports_a_poisoned_key(make_store: Callable[..., Store]):
    """`run_async` of a poisoned key returns `PoisonedRun` without running anything."""
    store = make_store(max_interruptions=0)
    script = Script()
    script.interrupts.add("a.job")
    coordinator = durable(store, Step("a", script.job("a")))

    interrupted(coordinator, None, key="k")
    result = await coordinator.run_async(None, key="k")

    assert isinstance(result.fatal, PoisonedRun)
    assert script.take() == ["a.job"]
    store.close()


def test_step_error_entries_of_a_restored_run_are_step_errors(store: Store):
    """Errors restored from the store are `StepError`s with step, phase and the rebuilt error as `__cause__`."""
    script = Script()
    script.fail("a.precheck", error=lambda: LookupError("gone"))
    script.fail("b.job", times=1)
    coordinator = durable(store, Step("a", script.job("a"), script.precheck("a")), Step("b", script.job("b")))

    coordinator.run(None, key="k")
    result = coordinator.run(None, key="k")

    (entry,) = result.errors
    assert isinstance(entry, StepError)
    assert (entry.step, entry.phase) == ("a", "precheck")
    assert type(entry.error) is LookupError
    assert entry.__cause__ is entry.error


def test_a_callback_without_output_is_restored_without_output(make_store: Callable[..., Store]):
    """A `-> None` job restored on resume puts nothing in the DataBag, as when it ran."""
    store = make_store()
    fail = True

    def log_only(x: int) -> None:
        return None

    def keep(x: int):
        return x

    def then(x: int) -> int:
        if fail:
            raise ValueError("not yet")
        return x

    coordinator = Coordinator(
        [Step("log only", log_only), Step("keep", keep), Step("then", then)], store=store, key=str
    )
    first = coordinator.run(1)
    assert not first.data_bag.has_job_data("log only")
    fail = False
    resumed = coordinator.run(1)
    assert resumed.ok
    assert [c.restored for c in resumed.trace] == [True, True, False]
    assert not resumed.data_bag.has_job_data("log only")
    assert resumed.data_bag.get_job_data("keep") == 1
    assert [e.output for e in store.events("1") if e.step == "log only"] == [None]
