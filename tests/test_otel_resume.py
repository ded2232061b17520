"""OpenTelemetry across a durable key's sessions (a resumed run links to the first); the spans of parallel groups."""

import asyncio
import pickle
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from opentelemetry.trace import StatusCode

from choreograph import Context, Coordinator, Parallel, Retry, SqliteStore, Step
from choreograph.events import RunEvent, RunStarted
from choreograph.otel import Tracing
from choreograph.typing import Store


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    made = TracerProvider()
    made.add_span_processor(SimpleSpanProcessor(exporter))
    yield made
    made.shutdown()


@pytest.fixture
def tracing(provider: TracerProvider) -> Tracing:
    return Tracing(provider)


def run_spans(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    """The run spans, in the order the runs started."""
    runs = [span for span in spans if span.name == "choreograph.run"]
    return sorted(runs, key=lambda span: span.start_time or 0)


def traceparent(span: ReadableSpan) -> str:
    """The W3C traceparent of *span*: version 00, its ids and its flags."""
    assert span.context is not None
    return f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-{span.context.trace_flags:02x}"


def linked_ids(span: ReadableSpan) -> tuple[int, int]:
    """The trace and span ids of the one span *span* links to."""
    (link,) = span.links
    return link.context.trace_id, link.context.span_id


def ids_of(traceparent: str) -> tuple[int, int]:
    """
    The trace and span ids a W3C traceparent names.

    >>> [hex(n) for n in ids_of("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]
    ['0xaf7651916cd43dd8448eb211c80319c', '0xb7ad6b7169203331']
    """
    _, trace_id, span_id, _ = traceparent.split("-")
    return int(trace_id, 16), int(span_id, 16)


def children(spans: Sequence[ReadableSpan], run: ReadableSpan) -> dict[str, ReadableSpan]:
    """The callback spans of *run*, by name."""
    assert run.context is not None
    found = {
        span.name: span for span in spans if span.parent is not None and span.parent.span_id == run.context.span_id
    }
    assert len(found) == sum(1 for s in spans if s.parent is not None and s.parent.span_id == run.context.span_id)
    return found


class Crashing:
    """A job that raises KeyboardInterrupt (a process being stopped) while `crashes` is positive."""

    def __init__(self, crashes: int) -> None:
        self.crashes = crashes
        self.calls = 0

    def __call__(self, x: int) -> int:
        self.calls += 1
        if self.crashes > 0:
            self.crashes -= 1
            raise KeyboardInterrupt
        return x + 1


def interrupted(flow: Coordinator[Any], value: object, tracing: Tracing) -> None:
    """Run *value*, interrupted; end its spans as the program would before exiting."""
    with pytest.raises(KeyboardInterrupt):
        flow.run(value)
    assert tracing.end_open_runs() == 1


# -- a durable key's sessions -----------------------------------------------------------------------


def test_a_resumed_run_links_to_the_span_of_the_keys_first_session(
    tracing: Tracing, exporter: InMemorySpanExporter, store: Store
):
    """Interrupted twice, then finished: both resumed run spans link to the first session's; the store keeps it."""
    crashing = Crashing(crashes=2)
    flow = Coordinator[int]([Step("a", lambda x: x), Step("b", crashing)], store=store, key=str, listeners=[tracing])
    interrupted(flow, 1, tracing)
    interrupted(flow, 1, tracing)
    assert flow.run(1).ok

    first, second, third = run_spans(exporter.get_finished_spans())
    stored = store.run_info("1")
    assert stored is not None
    assert stored.trace_context == traceparent(first)
    assert first.links == ()
    assert "choreograph.resumed" not in (first.attributes or {})
    assert first.status.status_code is StatusCode.ERROR  # ended as unfinished
    for resumed in (second, third):
        (link,) = resumed.links
        assert first.context is not None
        assert (link.context.trace_id, link.context.span_id) == (first.context.trace_id, first.context.span_id)
        assert dict(link.attributes or {}) == {"choreograph.resumption": True}
        assert (resumed.attributes or {})["choreograph.resumed"] is True
        assert resumed.context is not None
        assert resumed.context.trace_id != first.context.trace_id  # each session is a trace of its own
    # Callback spans carry the run's attributes, not the resumption.
    assert all(
        "choreograph.resumed" not in (span.attributes or {})
        for span in children(exporter.get_finished_spans(), third).values()
    )
    assert set(children(exporter.get_finished_spans(), third)) == {"b job"}  # "a" was restored, not called


def test_a_finished_key_runs_nothing_and_a_fresh_generation_stores_its_own(
    tracing: Tracing, exporter: InMemorySpanExporter, store: Store
):
    """Running a finished key traces nothing; `fresh=True` starts a generation whose first session is stored anew."""
    flow = Coordinator[int]([Step("a", lambda x: x)], store=store, key=str, listeners=[tracing])
    assert flow.run(1).ok
    assert flow.run(1).ok  # the stored result: no run, no span
    (first,) = run_spans(exporter.get_finished_spans())
    assert flow.run(1, fresh=True).ok
    _, fresh = run_spans(exporter.get_finished_spans())
    assert fresh.links == ()
    info = store.run_info("1")
    assert info is not None
    assert info.trace_context == traceparent(fresh) != traceparent(first)


def test_a_session_that_stored_no_trace_context_is_not_linked_to(
    tracing: Tracing, exporter: InMemorySpanExporter, store: Store
):
    """A first session run without tracing stored nothing: the first traced one is stored, and later ones link to it."""
    crashing = Crashing(crashes=2)
    untraced = Coordinator[int]([Step("b", crashing)], store=store, key=str)
    with pytest.raises(KeyboardInterrupt):
        untraced.run(1)
    info = store.run_info("1")
    assert info is not None
    assert info.trace_context is None
    traced = untraced.with_store(store, key=str)
    traced.listen(tracing)
    interrupted(traced, 1, tracing)
    assert traced.run(1).ok
    first, resumed = run_spans(exporter.get_finished_spans())
    assert first.links == ()
    (link,) = resumed.links
    assert first.context is not None
    assert link.context.span_id == first.context.span_id


def test_a_rerun_is_a_new_generation_with_a_trace_context_of_its_own(
    tracing: Tracing, exporter: InMemorySpanExporter, store: Store
):
    """`rerun(key, from_step=...)` starts a generation: its run is not a resumption, and it stores its own context."""
    flow = Coordinator[int](
        [Step("a", lambda x: x), Step("b", lambda x: x + 1)], store=store, key=str, listeners=[tracing]
    )
    assert flow.run(1).ok
    assert flow.rerun("1", from_step="b").ok
    _, rerun = run_spans(exporter.get_finished_spans())
    assert rerun.links == ()
    info = store.run_info("1")
    assert info is not None
    assert info.trace_context == traceparent(rerun)


def test_a_killed_process_leaves_the_trace_context_for_the_run_that_takes_over(
    tmp_path: Path, tracing: Tracing, exporter: InMemorySpanExporter
):
    """The context is stored before the first callback: a process killed in a job leaves it; the resumed run links."""
    path = tmp_path / "runs.db"
    child = textwrap.dedent(
        f"""
        import os, sys
        from opentelemetry.sdk.trace import TracerProvider
        from choreograph import Context, Coordinator, SqliteStore, Step
        from choreograph.otel import Tracing

        tracing = Tracing(TracerProvider())

        def die(ctx: Context[int], x: int) -> int:
            print(tracing.traceparent(ctx.run_id), flush=True)
            os._exit(9)

        store = SqliteStore({str(path)!r})
        Coordinator[int]([Step("a", lambda x: x), Step("b", die)], store=store, key=str, listeners=[tracing]).run(1)
        """
    )
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 9, done.stderr
    killed = done.stdout.strip()
    assert killed.startswith("00-")

    with SqliteStore(path) as store:
        info = store.run_info("1")
        assert info is not None
        assert info.trace_context == killed
        flow = Coordinator[int]([Step("a", lambda x: x), Step("b", lambda x: x + 1)], store=store, key=str)
        flow.listen(tracing)
        assert flow.run(1).ok
    (resumed,) = run_spans(exporter.get_finished_spans())
    assert linked_ids(resumed) == ids_of(killed)


def test_an_unsampled_first_session_is_stored_and_linked_to(exporter: InMemorySpanExporter, store: Store):
    """A run span the sampler dropped still has a context: it is stored, and a resumed, sampled run links to it."""
    dropped, kept = TracerProvider(sampler=ALWAYS_OFF), TracerProvider(sampler=ALWAYS_ON)
    kept.add_span_processor(SimpleSpanProcessor(exporter))
    crashing = Crashing(crashes=1)
    flow = Coordinator[int]([Step("b", crashing)], store=store, key=str, listeners=[Tracing(dropped)])
    with pytest.raises(KeyboardInterrupt):
        flow.run(1)
    info = store.run_info("1")
    assert info is not None
    assert info.trace_context is not None
    assert not int(info.trace_context.split("-")[3], 16) & 1  # not sampled
    again = Coordinator[int]([Step("b", crashing)], store=store, key=str, listeners=[Tracing(kept)])
    assert again.run(1).ok
    (resumed,) = run_spans(exporter.get_finished_spans())
    assert linked_ids(resumed) == ids_of(info.trace_context)
    kept.shutdown()


# -- parallel groups ---------------------------------------------------------------------------------


def started_ns(span: ReadableSpan) -> int:
    assert span.start_time is not None
    return span.start_time


def ended_ns(span: ReadableSpan) -> int:
    assert span.end_time is not None
    return span.end_time


def test_parallel_callbacks_are_open_together_each_a_child_of_the_run(tracing: Tracing, exporter: InMemorySpanExporter):
    """`b` and `c` run at once: their spans overlap, both children of the run; each gets what it emitted."""
    both = threading.Barrier(2, timeout=10)

    def f(x: int) -> int:
        return x

    def g(ctx: Context[int], x: int) -> int:
        both.wait()  # c is running too
        ctx.emit("g.progress", {"done": 1})
        time.sleep(0.05)
        return 1

    def h(ctx: Context[int], x: int) -> int:
        both.wait()
        ctx.emit("h.progress", {"done": 2})
        time.sleep(0.01)
        return 2

    def k(x: int) -> int:
        return 3

    flow = Coordinator[int](
        [Step("a", f), Parallel("g", Step("b", g), Step("c", h)), Step("d", k)], listeners=[tracing]
    )
    result = flow.run(1)
    assert result.ok

    spans = exporter.get_finished_spans()
    (run,) = run_spans(spans)
    callbacks = children(spans, run)
    assert set(callbacks) == {"a job", "b job", "c job", "d job"}
    b, c = callbacks["b job"], callbacks["c job"]
    assert started_ns(c) < ended_ns(b)  # open together
    assert started_ns(b) < ended_ns(c)
    assert ended_ns(callbacks["a job"]) <= min(started_ns(b), started_ns(c))
    assert max(ended_ns(b), ended_ns(c)) <= started_ns(callbacks["d job"])
    assert [event.name for event in b.events] == ["g.progress"]
    assert [event.name for event in c.events] == ["h.progress"]
    assert ended_ns(b) - started_ns(b) >= 50_000_000
    for name, span in callbacks.items():
        assert (span.attributes or {})["choreograph.step"] == name.split()[0]
        assert (span.attributes or {})["choreograph.outcome"] == "ok"
    assert started_ns(run) <= min(map(started_ns, callbacks.values()))
    assert ended_ns(run) >= max(map(ended_ns, callbacks.values()))


def test_parallel_async_callbacks_and_retries_in_branches(tracing: Tracing, exporter: InMemorySpanExporter):
    """`async def` branches interleave; a retried branch is one span with its retry events; a failing one has ERROR."""
    attempts = [0]

    async def slow(x: int) -> int:
        await asyncio.sleep(0.03)
        return x

    async def flaky(x: int) -> int:
        attempts[0] += 1
        await asyncio.sleep(0.005)
        if attempts[0] < 3:
            raise ConnectionError("again")
        return x

    def failing(x: int) -> int:
        raise ValueError("no")

    flow = Coordinator[int](
        [
            Parallel(
                "g",
                Step("slow", slow),
                Step("flaky", flaky, retry=Retry(attempts=3, initial=0.001, jitter=0.0)),
                [Step("first", lambda x: x), Step("failing", failing)],
            )
        ],
        listeners=[tracing],
    )
    result = asyncio.run(flow.run_async(1))
    assert not result.ok

    spans = exporter.get_finished_spans()
    (run,) = run_spans(spans)
    callbacks = children(spans, run)
    assert set(callbacks) == {"slow job", "flaky job", "first job", "failing job"}
    flaky_span = callbacks["flaky job"]
    assert [event.name for event in flaky_span.events] == ["choreograph.retry", "choreograph.retry"]
    assert (flaky_span.attributes or {})["choreograph.attempt"] == 3
    assert (flaky_span.attributes or {})["choreograph.outcome"] == "ok"
    assert callbacks["failing job"].status.status_code is StatusCode.ERROR
    assert callbacks["slow job"].status.status_code is StatusCode.UNSET
    assert run.status.status_code is StatusCode.ERROR


def test_many_parallel_runs_keep_their_spans_apart(tracing: Tracing, exporter: InMemorySpanExporter):
    """Runs of a parallel flow from several threads at once: every callback span is a child of its own run's span."""

    def branch(x: int) -> int:
        time.sleep(0.002)
        return x

    flow = Coordinator[int](
        [Parallel("g", Step("b", branch), Step("c", branch), Step("e", branch)), Step("d", branch)],
        listeners=[tracing],
    )
    results = list(flow.run_many(range(20), workers=4))
    assert all(result.ok for result in results)
    spans = exporter.get_finished_spans()
    runs = run_spans(spans)
    assert len(runs) == 20
    for run in runs:
        callbacks = children(spans, run)
        assert set(callbacks) == {"b job", "c job", "e job", "d job"}
        run_id = (run.attributes or {})["choreograph.run_id"]
        assert all((span.attributes or {})["choreograph.run_id"] == run_id for span in callbacks.values())
    assert len(spans) == 20 * 5


def test_a_resumed_parallel_run_links_and_traces_only_what_runs_again(
    tracing: Tracing, exporter: InMemorySpanExporter, store: Store
):
    """A durable parallel flow interrupted after its group: resumed, it links to the first session, traces `d` alone."""
    crashing = Crashing(crashes=1)
    flow = Coordinator[int](
        [Step("a", lambda x: x), Parallel("g", Step("b", lambda x: x), Step("c", lambda x: x)), Step("d", crashing)],
        store=store,
        key=str,
        listeners=[tracing],
    )
    interrupted(flow, 1, tracing)
    assert flow.run(1).ok
    spans = exporter.get_finished_spans()
    first, resumed = run_spans(spans)
    assert set(children(spans, first)) == {"a job", "b job", "c job", "d job"}
    assert set(children(spans, resumed)) == {"d job"}
    (link,) = resumed.links
    assert first.context is not None
    assert link.context.span_id == first.context.span_id


# -- the carrier, without OpenTelemetry ---------------------------------------------------------------


def collect(
    into: list[RunStarted], write: Callable[[dict[str, str]], None] | None = None
) -> Callable[[RunEvent], None]:
    def listener(event: RunEvent) -> None:
        if isinstance(event, RunStarted):
            into.append(event)
            if write is not None and event.trace_context is not None:
                write(event.trace_context)

    return listener


def test_run_started_carries_a_durable_runs_trace_context(store: Store):
    """Empty at a key's first session, filled by a listener, stored; a resumed session gets it; None if not durable."""
    seen: list[RunStarted] = []
    crashing = Crashing(crashes=1)
    flow = Coordinator[int](
        [Step("b", crashing)],
        store=store,
        key=str,
        listeners=[collect(seen, lambda carrier: carrier.setdefault("traceparent", "first session"))],
    )
    with pytest.raises(KeyboardInterrupt):
        flow.run(1)
    assert flow.run(1).ok
    assert [event.trace_context for event in seen] == [{"traceparent": "first session"}] * 2
    assert seen[0].trace_context is not seen[1].trace_context
    plain: list[RunStarted] = []
    assert Coordinator[int]([Step("b", lambda x: x)], listeners=[collect(plain)]).run(1).ok
    assert plain[0].trace_context is None


@pytest.mark.parametrize("given", [42, "", "x" * 513, None], ids=["not text", "empty", "too long", "nothing"])
def test_what_a_listener_puts_in_the_carrier_is_stored_only_when_it_is_a_traceparent_sized_text(
    store: Store, given: object
):
    """A carrier left with anything but text of 1 to 512 characters stores nothing (and breaks nothing)."""

    def write(carrier: dict[str, Any]) -> None:
        if given is not None:
            carrier["traceparent"] = given

    assert Coordinator[int]([Step("b", lambda x: x)], store=store, key=str, listeners=[collect([], write)]).run(1).ok
    info = store.run_info("1")
    assert info is not None
    assert info.trace_context is None


def test_run_started_with_a_carrier_pickles_and_hashes():
    """The carrier is a field like the others for pickling (events cross processes), and is left out of the hash."""
    event = RunStarted(run_id=1, key="k", input=None, at=1.0, trace_context={"traceparent": "x"})
    assert pickle.loads(pickle.dumps(event)) == event  # noqa: S301 - our own bytes
    assert hash(event) == hash(RunStarted(run_id=1, key="k", input=None, at=1.0))
