"""OpenTelemetry: a span per run, a child span per callback, their attributes, statuses, timings and links."""

import asyncio
import dataclasses
import importlib.util
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import choreograph.otel
from choreograph import (
    Context,
    Coordinator,
    ExecutionCanceled,
    JobFailed,
    ListenerWarning,
    Retry,
    Skip,
    Step,
)
from choreograph.events import CallbackFinished, CallbackStarted, Emitted, RunFinished, RunStarted
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


def by_name(spans: Sequence[ReadableSpan]) -> dict[str, ReadableSpan]:
    named = {span.name: span for span in spans}
    assert len(named) == len(spans), [span.name for span in spans]
    return named


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def duration_ns(span: ReadableSpan) -> int:
    assert span.start_time is not None
    assert span.end_time is not None
    return span.end_time - span.start_time


def exceptions(span: ReadableSpan) -> list[str]:
    return [str((event.attributes or {})["exception.type"]) for event in span.events if event.name == "exception"]


def skip() -> None:
    raise Skip("nothing new")


def boom() -> None:
    raise RuntimeError("boom")


@pytest.mark.parametrize("mode", ["run", "run_async"])
def test_a_run_is_a_span_with_a_child_span_per_callback(tracing: Tracing, exporter: InMemorySpanExporter, mode: str):
    """`choreograph.run` is the parent of "{step} {phase}" spans, with the attributes, statuses and events."""

    def load(ctx: Context[int], x: int) -> int:
        ctx.emit("progress", {"done": 1, "rows": [1, 2]})
        return x

    flow = Coordinator[int](
        [Step("load", load), Step("maybe", lambda: 1, precheck=skip), Step("boom", boom)], listeners=[tracing]
    )
    result = flow.run(7) if mode == "run" else asyncio.run(flow.run_async(7))

    spans = by_name(exporter.get_finished_spans())
    assert set(spans) == {"choreograph.run", "load job", "maybe precheck", "maybe job", "boom job"}
    run = spans["choreograph.run"]
    assert run.parent is None
    assert all(parent_id(spans[name]) == span_id(run) for name in spans if name != "choreograph.run")
    assert dict(run.attributes or {}) == {"choreograph.run_id": result.run_id, "choreograph.outcome": "failed"}
    assert run.status.status_code is StatusCode.ERROR
    assert run.status.description == f"JobFailed: {result.fatal}"
    assert exceptions(run) == ["choreograph._errors.JobFailed"]

    assert dict(spans["load job"].attributes or {}) == {
        "choreograph.run_id": result.run_id,
        "choreograph.step": "load",
        "choreograph.phase": "job",
        "choreograph.attempt": 1,
        "choreograph.outcome": "ok",
    }
    assert spans["load job"].status.status_code is StatusCode.UNSET
    (progress,) = spans["load job"].events
    assert progress.name == "progress"
    assert dict(progress.attributes or {}) == {
        "choreograph.step": "load",
        "choreograph.payload.done": 1,
        "choreograph.payload.rows": "[1, 2]",
    }

    precheck = spans["maybe precheck"]  # Skip: a decision, not an error
    assert precheck.status.status_code is StatusCode.UNSET
    assert (precheck.attributes or {})["choreograph.outcome"] == "failed"
    assert (precheck.attributes or {})["choreograph.skip_reason"] == "nothing new"
    assert exceptions(precheck) == []
    skipped = spans["maybe job"]
    assert skipped.status.status_code is StatusCode.UNSET
    assert (skipped.attributes or {})["choreograph.outcome"] == "skipped"
    assert (skipped.attributes or {})["choreograph.attempt"] == 0
    assert duration_ns(skipped) == 0

    failed = spans["boom job"]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "RuntimeError: boom"
    assert exceptions(failed) == ["RuntimeError"]
    assert (failed.attributes or {})["choreograph.outcome"] == "failed"
    assert tracing.end_open_runs() == 0  # the run's state went with its RunFinished


def test_spans_last_what_the_callbacks_took_within_their_run(tracing: Tracing, exporter: InMemorySpanExporter):
    """A 50 ms job's span lasts its `seconds` (>= 50 ms); the run span starts at `RunStarted.at` and holds them."""
    started: list[float] = []

    def note(event: object) -> None:
        if isinstance(event, RunStarted):
            started.append(event.at)

    flow = Coordinator([Step("slow", lambda: time.sleep(0.05)), Step("quick", lambda: 1)], listeners=[note, tracing])
    result = flow.run()
    spans = by_name(exporter.get_finished_spans())
    run, slow, quick = spans["choreograph.run"], spans["slow job"], spans["quick job"]
    assert duration_ns(slow) >= 50_000_000
    assert [duration_ns(slow), duration_ns(quick)] == [round(call.seconds * 1e9) for call in result.trace]
    assert run.start_time == int(started[0] * 1e9)
    assert run.start_time is not None
    assert run.end_time is not None
    assert slow.start_time is not None
    assert quick.start_time is not None
    assert quick.end_time is not None
    assert run.start_time <= slow.start_time <= quick.start_time <= quick.end_time <= run.end_time


def test_a_retried_callback_is_one_span_with_an_event_per_retry(tracing: Tracing, exporter: InMemorySpanExporter):
    """Three attempts: one span, attempt 3, `choreograph.retry` events for attempts 2 and 3; a last failure is ERROR."""
    calls: list[int] = []

    def flaky() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise OSError("again")
        return len(calls)

    def hopeless() -> None:
        raise OSError(f"no {len(calls)}")

    retry = Retry(attempts=3, initial=0, jitter=0)
    flow = Coordinator(
        [Step("flaky", flaky, retry=retry), Step("hopeless", hopeless, retry=retry)], listeners=[tracing]
    )
    flow.run()
    spans = by_name(exporter.get_finished_spans())
    flaky_span = spans["flaky job"]
    assert (flaky_span.attributes or {})["choreograph.attempt"] == 3
    assert flaky_span.status.status_code is StatusCode.UNSET
    retries = [event for event in flaky_span.events if event.name == "choreograph.retry"]
    assert [(event.attributes or {})["choreograph.attempt"] for event in retries] == [2, 3]
    assert flaky_span.start_time is not None
    assert flaky_span.end_time is not None
    assert all(flaky_span.start_time <= event.timestamp <= flaky_span.end_time for event in retries)
    hopeless_span = spans["hopeless job"]
    assert hopeless_span.status.status_code is StatusCode.ERROR
    assert hopeless_span.status.description == "OSError: no 3"
    assert exceptions(hopeless_span) == ["OSError"]  # the error that ended it, once
    assert (hopeless_span.attributes or {})["choreograph.attempt"] == 3


def test_compensations_are_spans_of_their_run(tracing: Tracing, exporter: InMemorySpanExporter):
    """After a failed job, each compensation is a "{step} compensate" child of the run; a failed one is ERROR."""

    def undo_badly() -> None:
        raise ValueError("can't undo")

    flow = Coordinator(
        [Step("a", lambda: 1, compensate=lambda: None), Step("b", lambda: 2, compensate=undo_badly), Step("c", boom)],
        listeners=[tracing],
    )
    result = flow.run()
    assert isinstance(result.fatal, JobFailed)
    spans = by_name(exporter.get_finished_spans())
    run = spans["choreograph.run"]
    assert parent_id(spans["a compensate"]) == parent_id(spans["b compensate"]) == span_id(run)
    assert (spans["a compensate"].attributes or {})["choreograph.phase"] == "compensate"
    assert spans["a compensate"].status.status_code is StatusCode.UNSET
    assert spans["b compensate"].status.status_code is StatusCode.ERROR
    assert exceptions(spans["b compensate"]) == ["ValueError"]
    assert run.status.status_code is StatusCode.ERROR


def test_a_canceling_precheck_is_no_error_but_its_run_is(tracing: Tracing, exporter: InMemorySpanExporter):
    """`ExecutionCanceled`: the precheck span records it, status UNSET; the run span is ERROR, outcome canceled."""

    def cancel() -> None:
        raise ExecutionCanceled("stop")

    Coordinator([Step("b", lambda: 2, precheck=cancel)], listeners=[tracing]).run()
    spans = by_name(exporter.get_finished_spans())
    precheck, run = spans["b precheck"], spans["choreograph.run"]
    assert precheck.status.status_code is StatusCode.UNSET
    assert (precheck.attributes or {})["choreograph.outcome"] == "canceled"
    assert exceptions(precheck) == ["choreograph._errors.ExecutionCanceled"]
    assert run.status.status_code is StatusCode.ERROR
    assert (run.attributes or {})["choreograph.outcome"] == "canceled"


def test_a_raising_precheck_is_an_error_and_its_job_is_skipped(tracing: Tracing, exporter: InMemorySpanExporter):
    """A precheck raising another error: its span is ERROR, the job's is skipped and UNSET, the run ok."""
    Coordinator([Step("s", lambda: 1, precheck=boom)], listeners=[tracing]).run()
    spans = by_name(exporter.get_finished_spans())
    assert spans["s precheck"].status.status_code is StatusCode.ERROR
    assert spans["s job"].status.status_code is StatusCode.UNSET
    assert spans["choreograph.run"].status.status_code is StatusCode.UNSET
    assert (spans["choreograph.run"].attributes or {})["choreograph.outcome"] == "ok"


def test_concurrent_runs_each_get_their_own_spans(tracing: Tracing, exporter: InMemorySpanExporter):
    """`run_many` on 4 threads: each callback span's parent is the span of its own run, each run its own trace."""
    threads: set[str] = set()

    def a(x: int) -> int:
        threads.add(threading.current_thread().name)
        time.sleep(0.002)
        return x

    flow = Coordinator[int]([Step("a", a), Step("b", lambda x: x)], listeners=[tracing])
    results = list(flow.run_many(range(40), workers=4))
    assert len(threads) > 1
    spans = exporter.get_finished_spans()
    runs = {(span.attributes or {})["choreograph.run_id"]: span for span in spans if span.name == "choreograph.run"}
    assert set(runs) == {result.run_id for result in results}
    callbacks = [span for span in spans if span.name != "choreograph.run"]
    assert len(callbacks) == 80
    for span in callbacks:
        run = runs[(span.attributes or {})["choreograph.run_id"]]
        assert parent_id(span) == span_id(run)
        assert span.context is not None
        assert run.context is not None
        assert span.context.trace_id == run.context.trace_id
    assert len({span.context.trace_id for span in runs.values() if span.context is not None}) == 40


def test_a_run_is_a_child_of_the_span_current_when_it_starts(
    tracing: Tracing, provider: TracerProvider, exporter: InMemorySpanExporter
):
    """The caller's own span is the run span's parent, and stays the current span."""
    tracer = provider.get_tracer("app")
    flow = Coordinator([Step("s", lambda: 1)], listeners=[tracing])
    with tracer.start_as_current_span("request") as mine:
        flow.run()
        assert trace.get_current_span() is mine
    spans = by_name(exporter.get_finished_spans())
    assert parent_id(spans["choreograph.run"]) == span_id(spans["request"])
    assert parent_id(spans["s job"]) == span_id(spans["choreograph.run"])


def test_a_raising_exporter_never_breaks_the_run(provider: TracerProvider):
    """A raising exporter (the SDK logs it) or span processor (a `ListenerWarning`): the run goes on."""

    class Broken(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:  # noqa: ARG002 - the SDK's signature
            raise ConnectionError("collector down")

    class Raising(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:  # noqa: ARG002 - the SDK's signature
            raise RuntimeError("processor bug")

    provider.add_span_processor(SimpleSpanProcessor(Broken()))
    tracing = Tracing(provider)
    flow = Coordinator([Step("s", lambda: 41)], listeners=[tracing])
    assert flow.run().data_bag.get_job_data("s") == 41

    raising = TracerProvider()
    raising.add_span_processor(Raising())
    tracing = Tracing(raising)
    flow = Coordinator([Step("s", lambda: 41)], listeners=[tracing])
    with pytest.warns(ListenerWarning, match="processor bug"):
        result = flow.run()
    assert result.data_bag.get_job_data("s") == 41
    assert tracing.end_open_runs() == 0  # the run was forgotten before its span was ended
    raising.shutdown()


def test_an_interrupted_run_is_ended_on_request(tracing: Tracing, exporter: InMemorySpanExporter):
    """A `KeyboardInterrupt` in a job: no RunFinished; `end_open_runs` ends its spans as unfinished, with ERROR."""

    def interrupted() -> None:
        raise KeyboardInterrupt

    flow = Coordinator([Step("first", lambda: 1), Step("stop", interrupted)], listeners=[tracing])
    with pytest.raises(KeyboardInterrupt):
        flow.run()
    assert {span.name for span in exporter.get_finished_spans()} == {"first job"}
    assert tracing.end_open_runs() == 1
    assert tracing.end_open_runs() == 0
    spans = by_name(exporter.get_finished_spans())
    for name in ["stop job", "choreograph.run"]:
        assert spans[name].status.status_code is StatusCode.ERROR
        assert (spans[name].attributes or {})["choreograph.outcome"] == "unfinished"
    assert spans["stop job"].end_time == spans["choreograph.run"].end_time


def test_beyond_max_open_runs_the_oldest_run_is_ended(provider: TracerProvider, exporter: InMemorySpanExporter):
    """With 2 runs open, a third one ends the first as unfinished; that run's later events are ignored."""
    tracing = Tracing(provider, max_open_runs=2)
    for run_id in [1, 2, 3]:
        tracing(RunStarted(run_id=run_id, key=None, input=None, at=time.time()))
    (first,) = exporter.get_finished_spans()
    assert (first.attributes or {})["choreograph.run_id"] == 1
    assert first.status.status_code is StatusCode.ERROR
    assert "more than 2 runs were open" in (first.status.description or "")
    tracing(CallbackStarted(run_id=1, step="s", phase="job", attempt=1))
    tracing(Emitted(run_id=1, step="s", kind="progress", payload=None))
    tracing(CallbackFinished(run_id=1, step="s", phase="job", outcome="ok", attempt=1, seconds=0.0, error=None))
    result = Coordinator([Step("s", lambda: 1)]).run()
    tracing(RunFinished(run_id=1, key=None, result=result))
    assert len(exporter.get_finished_spans()) == 1
    assert tracing.end_open_runs() == 2


def test_max_open_runs_must_be_a_positive_int():
    """`max_open_runs` below 1, or not an int, is a ValueError."""
    for wrong in [0, -1, 2.5, True]:
        with pytest.raises(ValueError, match="max_open_runs must be an int >= 1"):
            Tracing(max_open_runs=wrong)  # type: ignore[arg-type]


def test_traceparent_names_the_open_run_span(tracing: Tracing, exporter: InMemorySpanExporter):
    """A callback gets its run's W3C traceparent from `tracing.traceparent(ctx.run_id)`; none once the run is over."""
    seen: list[str | None] = []

    def job(ctx: Context) -> None:
        seen.append(tracing.traceparent(ctx.run_id))

    result = Coordinator([Step("s", job)], listeners=[tracing]).run()
    run = by_name(exporter.get_finished_spans())["choreograph.run"]
    assert run.context is not None
    ids = run.context
    assert seen == [f"00-{ids.trace_id:032x}-{ids.span_id:016x}-{ids.trace_flags:02x}"]
    assert tracing.traceparent(result.run_id) is None


def test_without_an_sdk_spans_are_no_ops():
    """With the API's default provider (no SDK), runs go on and no traceparent is made."""
    tracing = Tracing(trace.NoOpTracerProvider())
    seen: list[str | None] = []

    def job(ctx: Context) -> None:
        seen.append(tracing.traceparent(ctx.run_id))

    assert Coordinator([Step("s", job)], listeners=[tracing]).run().ok
    assert seen == [None]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ResumedRunStarted(RunStarted):
    """`RunStarted` with the field proposed for stores that keep a key's trace context."""

    trace_context: str | None = None


def test_a_run_started_with_a_stored_trace_context_links_to_it(tracing: Tracing, exporter: InMemorySpanExporter):
    """A `RunStarted` carrying a W3C traceparent (a resumed run's first one) makes a link; a damaged one, none."""
    first = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    tracing(ResumedRunStarted(run_id=1, key="k", input=None, at=time.time(), trace_context=first))
    tracing(ResumedRunStarted(run_id=2, key="k", input=None, at=time.time(), trace_context="garbage"))
    assert tracing.end_open_runs() == 2
    linked, unlinked = sorted(exporter.get_finished_spans(), key=lambda s: (s.attributes or {})["choreograph.run_id"])
    (link,) = linked.links
    assert (link.context.trace_id, link.context.span_id) == (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331)
    assert linked.context is not None
    assert linked.context.trace_id != link.context.trace_id  # a link, not a parent: the resumed run is its own trace
    assert unlinked.links == ()


def test_durable_runs_carry_their_key_on_every_span(tracing: Tracing, exporter: InMemorySpanExporter, make_store: Any):
    """A durable run's key is `choreograph.key` on its run span and its callback spans."""
    store: Store = make_store()
    flow = Coordinator[int]([Step("s", lambda x: x)], store=store, key=str, listeners=[tracing])
    flow.run(5)
    spans = exporter.get_finished_spans()
    assert [span.name for span in spans] == ["s job", "choreograph.run"]
    assert all((span.attributes or {})["choreograph.key"] == "5" for span in spans)


def test_without_the_extra_the_import_says_what_to_install(monkeypatch: pytest.MonkeyPatch):
    """Importing `choreograph.otel` without opentelemetry raises ModuleNotFoundError naming `choreograph[otel]`."""
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    path = Path(choreograph.otel.__file__)
    spec = importlib.util.spec_from_file_location("choreograph.otel_without_extra", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'choreograph\[otel\]'"):
        spec.loader.exec_module(module)
