"""Listeners: every event of every run, in order; `on_success`/`on_failure`; `ctx.emit`; a raising listener warns."""

import asyncio
import pickle
import threading
from typing import Any

import pytest

from choreograph import (
    Context,
    Coordinator,
    ExecutionCanceled,
    JobFailed,
    ListenerWarning,
    Retry,
    RunResult,
    Skip,
    Step,
)
from choreograph.events import CallbackFinished, CallbackStarted, Emitted, RunEvent, RunFinished, RunStarted


def shape(event: RunEvent) -> tuple[Any, ...]:
    """An event without its timings: what a test can compare exactly."""
    if isinstance(event, CallbackStarted):
        return ("started", event.step, event.phase, event.attempt)
    if isinstance(event, CallbackFinished):
        return ("finished", event.step, event.phase, event.outcome, event.attempt, type(event.error).__name__)
    if isinstance(event, Emitted):
        return ("emitted", event.step, event.kind, event.payload)
    if isinstance(event, RunStarted):
        return ("run started", event.key, event.input)
    assert isinstance(event, RunFinished)
    return ("run finished", event.key, event.result.ok)


def skip() -> None:
    raise Skip("not today")


def boom() -> None:
    raise RuntimeError("boom")


@pytest.mark.parametrize("mode", ["run", "run_async"])
def test_a_run_sends_its_events_in_order(mode: str):
    """Run started, per callback started/finished (a skipped job only finished), emitted, run finished, in order."""
    events: list[RunEvent] = []

    def load(ctx: Context[int], x: int) -> int:
        ctx.emit("progress", {"done": 1})
        return x

    flow = Coordinator[int](
        [Step("load", load), Step("maybe", lambda: 1, precheck=skip), Step("boom", boom)], listeners=[events.append]
    )
    result = flow.run(7) if mode == "run" else asyncio.run(flow.run_async(7))

    assert [shape(e) for e in events] == [
        ("run started", None, 7),
        ("started", "load", "job", 1),
        ("emitted", "load", "progress", {"done": 1}),
        ("finished", "load", "job", "ok", 1, "NoneType"),
        ("started", "maybe", "precheck", 1),
        ("finished", "maybe", "precheck", "failed", 1, "Skip"),
        ("finished", "maybe", "job", "skipped", 0, "NoneType"),
        ("started", "boom", "job", 1),
        ("finished", "boom", "job", "failed", 1, "RuntimeError"),
        ("run finished", None, False),
    ]
    assert {e.run_id for e in events} == {result.run_id}
    finished = [e for e in events if isinstance(e, CallbackFinished)]
    assert [e.seconds for e in finished] == [c.seconds for c in result.trace]
    assert finished[-1].error is result.errors[-1].error  # the original error, as on the error stack
    last = events[-1]
    assert isinstance(last, RunFinished)
    assert last.result.fatal is result.fatal
    started = events[0]
    assert isinstance(started, RunStarted)
    assert started.at > 0


def test_each_retry_attempt_starts_with_its_number_and_the_callback_finishes_once():
    """A callback retried twice sends started with attempts 1, 2, 3, then one finished with attempt 3."""
    calls: list[int] = []

    def flaky() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise OSError("again")
        return len(calls)

    events: list[RunEvent] = []
    step = Step("flaky", flaky, retry=Retry(attempts=3, initial=0, jitter=0))
    Coordinator([step], listeners=[events.append]).run()
    assert [shape(e) for e in events[1:-1]] == [
        ("started", "flaky", "job", 1),
        ("started", "flaky", "job", 2),
        ("started", "flaky", "job", 3),
        ("finished", "flaky", "job", "ok", 3, "NoneType"),
    ]


def test_a_compensation_and_a_canceling_precheck_send_their_events():
    """Compensations send started/finished with phase compensate; a canceling precheck finishes 'canceled'."""

    def cancel() -> None:
        raise ExecutionCanceled("stop")

    events: list[RunEvent] = []
    flow = Coordinator(
        [Step("a", lambda: 1, compensate=lambda: None), Step("b", lambda: 2, precheck=cancel)],
        listeners=[events.append],
    )
    flow.run()
    assert [shape(e) for e in events[1:-1]] == [
        ("started", "a", "job", 1),
        ("finished", "a", "job", "ok", 1, "NoneType"),
        ("started", "b", "precheck", 1),
        ("finished", "b", "precheck", "canceled", 1, "ExecutionCanceled"),
        ("started", "a", "compensate", 1),
        ("finished", "a", "compensate", "ok", 1, "NoneType"),
    ]


def test_listen_returns_an_unsubscribe_function():
    """`listen()` subscribes for runs from now on; the function it returns unsubscribes (twice is harmless)."""
    flow = Coordinator([Step("s", lambda: 1)])
    seen: list[RunEvent] = []
    flow.run()
    unsubscribe = flow.listen(seen.append)
    first = flow.run()
    unsubscribe()
    unsubscribe()
    flow.run()
    assert {e.run_id for e in seen} == {first.run_id}
    assert len(seen) == 4


def test_the_same_listener_twice_gets_each_event_twice_and_unsubscribes_once_each():
    """Subscriptions are counted: the same function subscribed twice is called twice, and removed one at a time."""
    flow = Coordinator([Step("s", lambda: 1)])
    seen: list[RunEvent] = []
    first = flow.listen(seen.append)
    flow.listen(seen.append)
    flow.run()
    assert len(seen) == 8
    first()
    seen.clear()
    flow.run()
    assert len(seen) == 4


def test_on_success_and_on_failure_get_the_result_after_compensation():
    """`on_success(result)` after an ok run, `on_failure(result)` after a failed one, its compensation done."""
    log: list[str] = []
    outcomes: list[tuple[str, RunResult[Any]]] = []
    flow = Coordinator[int](
        [Step("a", lambda x: x, compensate=lambda: log.append("undone")), Step("b", lambda x: 1 // x)],
        on_success=lambda r: outcomes.append(("success", r)),
        on_failure=lambda r: outcomes.append(("failure", r)) or log.append("told"),
    )
    ok, failed = flow.run(1), flow.run(0)
    assert [(what, r.run_id) for what, r in outcomes] == [("success", ok.run_id), ("failure", failed.run_id)]
    assert outcomes[1][1].fatal is failed.fatal
    assert isinstance(failed.fatal, JobFailed)
    assert log == ["undone", "told"]


def test_a_raising_listener_warns_and_never_changes_the_run():
    """A listener that raises: `ListenerWarning` naming it and the error; the run and later listeners go on."""

    def broken(event: RunEvent) -> None:
        raise ValueError("listener bug")

    after: list[RunEvent] = []
    flow = Coordinator([Step("s", lambda: 41)], listeners=[broken, after.append], on_success=lambda r: 1 // 0)
    with pytest.warns(ListenerWarning) as caught:
        result = flow.run()
    assert result.ok
    assert result.data_bag.get_job_data("s") == 41
    assert len(after) == 4
    messages = [str(w.message) for w in caught]
    assert len(messages) == 5  # 4 events for `broken`, 1 for on_success
    assert sum("ZeroDivisionError" in m for m in messages) == 1
    assert sum("ValueError: listener bug" in m and "test_a_raising_listener" in m for m in messages) == 4


def test_emit_without_listeners_costs_nothing_and_needs_a_kind():
    """`ctx.emit` does nothing without listeners; a kind that is not a non-empty str is a TypeError."""

    def job(ctx: Context) -> int:
        ctx.emit("progress", 1)
        return 1

    assert Coordinator([Step("s", job)]).run().ok

    def bad(ctx: Context) -> None:
        ctx.emit("")

    result = Coordinator([Step("s", bad)]).run()
    assert isinstance(result.fatal, JobFailed)
    assert isinstance(result.fatal.error, TypeError)


def test_listeners_of_concurrent_runs_get_each_runs_events_in_order():
    """With `run_many` on threads, each run's events still arrive in its own order."""
    lock = threading.Lock()
    by_run: dict[int, list[str]] = {}

    def listener(event: RunEvent) -> None:
        with lock:
            by_run.setdefault(event.run_id, []).append(type(event).__name__)

    flow = Coordinator[int]([Step("a", lambda x: x), Step("b", lambda x: x)], listeners=[listener])
    results = list(flow.run_many(range(50), workers=4))
    assert len(by_run) == 50
    expected = [
        "RunStarted",
        "CallbackStarted",
        "CallbackFinished",
        "CallbackStarted",
        "CallbackFinished",
        "RunFinished",
    ]
    assert all(names == expected for names in by_run.values())
    assert {r.run_id for r in results} == set(by_run)


def test_events_pickle_so_they_can_cross_processes():
    """Every event of a run survives a pickle round trip with its fields (the transport of other executors)."""
    events: list[RunEvent] = []
    Coordinator([Step("s", boom)], listeners=[events.append]).run()
    for event in events:
        copy = pickle.loads(pickle.dumps(event))  # noqa: S301 - our own bytes
        assert type(copy) is type(event)
        assert shape(copy) == shape(event)


def test_durable_runs_send_events_with_their_key(make_store: Any):
    """A durable run's run events carry its key; a key that finished before runs nothing and sends nothing."""
    events: list[RunEvent] = []
    flow = Coordinator[int]([Step("s", lambda x: x)], store=make_store(), key=str, listeners=[events.append])
    flow.run(5)
    assert [shape(e) for e in events] == [
        ("run started", "5", 5),
        ("started", "s", "job", 1),
        ("finished", "s", "job", "ok", 1, "NoneType"),
        ("run finished", "5", True),
    ]
    events.clear()
    assert flow.run(5).ok
    assert events == []


def test_listeners_must_be_callables():
    """A non-callable listener, on_success or on_failure is refused with a TypeError naming it."""
    with pytest.raises(TypeError, match="listener must be a callable"):
        Coordinator(listeners=[42])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="on_success must be a callable"):
        Coordinator(on_success="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_failure must be a callable"):
        Coordinator(on_failure=3)  # type: ignore[arg-type]


def test_a_rerun_sends_the_events_of_the_steps_it_runs_again(make_store: Any):
    """`rerun(from_step=...)` tells listeners about the steps it runs again, not about the restored ones."""
    events: list[RunEvent] = []
    flow = Coordinator[int](
        [Step("a", lambda x: x), Step("b", lambda x: x + 1)], store=make_store(), key=str, listeners=[events.append]
    )
    flow.run(1)
    events.clear()
    result = flow.rerun("1", from_step="b")
    assert result.ok
    assert [shape(e) for e in events] == [
        ("run started", "1", 1),
        ("started", "b", "job", 1),
        ("finished", "b", "job", "ok", 1, "NoneType"),
        ("run finished", "1", True),
    ]
