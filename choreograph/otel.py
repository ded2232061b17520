"""
Trace runs with OpenTelemetry: `Tracing`, a listener that turns a run's events into spans.

Install the extra (``pip install 'choreograph[otel]'``, the OpenTelemetry API
only) and give the listener to a coordinator; the application chooses the SDK
and the exporters, as with any instrumented library:

```python
from choreograph.otel import Tracing

flow = Coordinator(steps, listeners=[Tracing()])
```

A run is a ``choreograph.run`` span; each callback it calls is a child span
named ``"{step} {phase}"`` (``"load job"``, ``"load precheck"``,
``"load compensate"``) covering all its attempts. A durable run's sessions
are tied together: a resumed run's span links to the span of the key's first
session. `import choreograph` never imports OpenTelemetry: only importing this
module does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

try:
    from opentelemetry import trace
    from opentelemetry.context import Context as TraceContext
    from opentelemetry.trace import Link, Span, SpanContext, Status, StatusCode, TracerProvider
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    from opentelemetry.util.types import AttributeValue
except ModuleNotFoundError as exc:  # the extra is not installed
    msg = "choreograph.otel needs the OpenTelemetry API: pip install 'choreograph[otel]'"
    raise ModuleNotFoundError(msg, name=exc.name) from exc

from ._errors import ExecutionCanceled, RunCancelled, Skip
from .events import CallbackFinished, CallbackStarted, Emitted, RunEvent, RunFinished, RunStarted

_RUN_SPAN = "choreograph.run"  # the contract's name of a run's span

_PROPAGATOR = TraceContextTextMapPropagator()
_SIMPLE = (str, bool, int, float)


@dataclass(slots=True)
class _Open:
    """A callback span in flight: started at the callback's first attempt, ended when it finishes."""

    span: Span
    start_ns: int


@dataclass(slots=True)
class _Run:
    """What `Tracing` keeps of a run between its `RunStarted` and its `RunFinished`."""

    span: Span
    context: TraceContext  # the run span as an explicit parent: never the ambient span of the thread at hand
    attributes: dict[str, AttributeValue]  # run id and key, copied onto every callback span
    start_ns: int  # no callback span starts before it
    last_ns: int  # the latest time seen in the run: where an unfinished run's span ends
    # The callbacks in flight, by (step, phase): those of a parallel group's branches are in flight together.
    callbacks: dict[tuple[str, str], _Open] = field(default_factory=dict)


class Tracing:
    """
    A listener making an OpenTelemetry span per run and a child span per callback.

    Give it to `Coordinator(listeners=[...])` or `coordinator.listen()`; one
    instance can serve any number of coordinators and threads.

    - The run span, ``choreograph.run``, starts at `RunStarted.at` and ends at
      `RunFinished`. It is a child of the span current when the run starts (the
      caller's own span), else a root span.
    - Each callback called is a child span of its run, named ``"{step} {phase}"``
      and covering all its attempts: it starts with the first attempt and lasts
      `CallbackFinished.seconds`. Each retry is a ``choreograph.retry`` event on
      it. A job skipped by its precheck is a span of 0 seconds, outcome ``"skipped"``.
    - Attributes: ``choreograph.run_id`` and ``choreograph.key`` (durable runs)
      on every span; ``choreograph.step``, ``choreograph.phase``,
      ``choreograph.attempt`` (attempts made) and ``choreograph.outcome`` on
      callback spans; ``choreograph.outcome`` (``"ok"``, ``"failed"`` or
      ``"canceled"``) on the run span.
    - A failed callback's span records its error and has status ERROR; so has
      the run span of a run with a fatal error, which it records. A precheck's
      `Skip` is a decision, not an error: its span keeps status UNSET and has
      the reason as ``choreograph.skip_reason``. A callback canceled (by
      `ExecutionCanceled` or the run's timeout) records the error but keeps
      status UNSET: the run span has the ERROR.
    - What a callback emits (`Context.emit`) is an event named by its kind on
      the callback's span, its payload as ``choreograph.payload`` attributes.
    - A durable run keeps its trace context: the first session of a key's
      generation stores the W3C ``traceparent`` of its run span (through
      `RunStarted.trace_context`, the carrier the durable runner gives it),
      and the run span of every session that resumes it has a link to that
      span, with the attribute ``choreograph.resumption`` (true), and has
      ``choreograph.resumed`` (true) itself. Each session is a trace of its
      own (a child of what was current when it started), tied to the first
      by the link.
    - The callbacks of a `Parallel` group run at the same time: their spans
      are open together, each a child of the run span, told apart by step
      and phase; what a callback emits goes to its own callback's span,
      whichever thread it runs on.

    Spans are parented explicitly, never through the current context, since a
    run's events may come from several threads, between other runs' events;
    and the listener never changes the current context. A run whose
    `RunFinished` never comes (a `KeyboardInterrupt` in a callback) stays open
    until `end_open_runs` is called or more than *max_open_runs* runs are open:
    the oldest is then ended, with outcome ``"unfinished"`` and status ERROR.

    Args:
        tracer_provider: Where spans go; the global provider if ``None``.
        max_open_runs: The most runs kept open at once.

    .. versionadded:: 0.2.0
    """

    def __init__(self, tracer_provider: TracerProvider | None = None, *, max_open_runs: int = 10_000) -> None:
        if type(max_open_runs) is not int or max_open_runs < 1:
            raise ValueError(f"max_open_runs must be an int >= 1, got {max_open_runs!r}")
        try:
            ours = version("choreograph")
        except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
            ours = None
        self._tracer = trace.get_tracer("choreograph", ours, tracer_provider=tracer_provider)
        self._max_open_runs = max_open_runs
        self._runs: dict[int, _Run] = {}  # in the order the runs started: the first is the oldest
        self._lock = threading.Lock()

    def __call__(self, event: RunEvent) -> None:
        """Turn one event of a run into spans (what a listener is called with)."""
        match event:
            case CallbackStarted():
                self._callback_started(event)
            case CallbackFinished():
                self._callback_finished(event)
            case Emitted():
                self._emitted(event)
            case RunStarted():
                self._run_started(event)
            case RunFinished():
                self._run_finished(event)

    def traceparent(self, run_id: int) -> str | None:
        """
        The W3C ``traceparent`` of run *run_id*'s span, while the run is open.

        For a callback to pass its run's trace on (``ctx.run_id``), or to
        store it: ``None`` for a run that is not open, or whose span is not
        recorded (no SDK, or not sampled).

        .. versionadded:: 0.2.0
        """
        with self._lock:
            run = self._runs.get(run_id)
        if run is None:
            return None
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=run.context)
        return carrier.get("traceparent")

    def end_open_runs(self) -> int:
        """
        End the spans of every open run, as unfinished, and forget them.

        For a program stopping after a `KeyboardInterrupt`, before its tracer
        provider shuts down, so that the interrupted run's spans are exported.

        Returns:
            How many runs were ended.

        .. versionadded:: 0.2.0
        """
        with self._lock:
            runs = list(self._runs.values())
            self._runs.clear()
        for run in runs:
            _end_unfinished(run, "the run's end was never reported (interrupted?)")
        return len(runs)

    def _run_started(self, event: RunStarted) -> None:
        start_ns = int(event.at * 1e9)
        attributes: dict[str, AttributeValue] = {"choreograph.run_id": event.run_id}
        if event.key is not None:
            attributes["choreograph.key"] = event.key
        carrier = event.trace_context
        first = _first_session(carrier)
        own = attributes if first is None else {**attributes, "choreograph.resumed": True}
        links = [] if first is None else [Link(first, {"choreograph.resumption": True})]
        # The span current in this thread, if any, is the caller's: the run is its child.
        span = self._tracer.start_span(_RUN_SPAN, attributes=own, links=links, start_time=start_ns)
        context = trace.set_span_in_context(span)
        if isinstance(carrier, dict) and "traceparent" not in carrier:  # a durable run's first session: stored
            _PROPAGATOR.inject(carrier, context=context)
        run = _Run(span, context, attributes, start_ns, start_ns)
        with self._lock:
            self._runs[event.run_id] = run
            evicted = [self._runs.pop(next(iter(self._runs))) for _ in range(len(self._runs) - self._max_open_runs)]
        for old in evicted:
            _end_unfinished(old, f"more than {self._max_open_runs} runs were open; this one was the oldest")

    def _callback_started(self, event: CallbackStarted) -> None:
        now = time.time_ns()
        slot = (event.step, event.phase)
        with self._lock:
            run = self._runs.get(event.run_id)
            if run is None:  # not traced: it started before this listener, or was ended as unfinished
                return
            run.last_ns = max(run.last_ns, now)
            start_ns = max(now, run.start_ns)  # `RunStarted.at` is a float: it may round up past now
            open_ = run.callbacks.get(slot)
        if open_ is not None:
            open_.span.add_event("choreograph.retry", {"choreograph.attempt": event.attempt}, timestamp=now)
            return
        attributes = {
            **run.attributes,
            "choreograph.step": event.step,
            "choreograph.phase": event.phase,
            "choreograph.attempt": event.attempt,
        }
        span = self._tracer.start_span(
            f"{event.step} {event.phase}", context=run.context, attributes=attributes, start_time=start_ns
        )
        with self._lock:
            run.callbacks[slot] = _Open(span, start_ns)

    def _callback_finished(self, event: CallbackFinished) -> None:
        now = time.time_ns()
        seconds_ns = round(event.seconds * 1e9)
        with self._lock:
            run = self._runs.get(event.run_id)
            if run is None:
                return
            open_ = run.callbacks.pop((event.step, event.phase), None)
            if open_ is None:  # not called (a skipped job, a refused input): it ends now
                start_ns = max(run.start_ns, now - seconds_ns)
                end_ns = max(start_ns, now)
            else:
                start_ns = open_.start_ns
                end_ns = start_ns + seconds_ns
            run.last_ns = max(run.last_ns, end_ns)
        if open_ is None:
            attributes = {
                **run.attributes,
                "choreograph.step": event.step,
                "choreograph.phase": event.phase,
            }
            span = self._tracer.start_span(
                f"{event.step} {event.phase}", context=run.context, attributes=attributes, start_time=start_ns
            )
        else:
            span = open_.span
        span.set_attribute("choreograph.outcome", event.outcome)
        span.set_attribute("choreograph.attempt", event.attempt)
        error = event.error
        if isinstance(error, Skip) and event.phase == "precheck":
            span.set_attribute("choreograph.skip_reason", str(error))
        elif error is not None:
            span.record_exception(error, timestamp=end_ns)
            if event.outcome == "failed":
                span.set_status(Status(StatusCode.ERROR, _describe(error)))
        span.end(end_time=end_ns)

    def _emitted(self, event: Emitted) -> None:
        now = time.time_ns()
        with self._lock:
            run = self._runs.get(event.run_id)
            if run is None:
                return
            run.last_ns = max(run.last_ns, now)
            # One phase of a step runs at a time: the emitter is the open callback of its step.
            target = next((o.span for (step, _), o in run.callbacks.items() if step == event.step), run.span)
        target.add_event(event.kind, _emitted_attributes(event.step, event.payload), timestamp=now)

    def _run_finished(self, event: RunFinished) -> None:
        now = time.time_ns()
        with self._lock:
            run = self._runs.pop(event.run_id, None)
        if run is None:
            return
        end_ns = max(run.last_ns, now)
        for open_ in run.callbacks.values():  # pragma: no cover - every callback that starts finishes first
            _end_open(open_, end_ns)
        fatal = event.result.fatal
        span = run.span
        if fatal is None:
            span.set_attribute("choreograph.outcome", "ok")
        else:
            canceled = isinstance(fatal, (ExecutionCanceled, RunCancelled))
            span.set_attribute("choreograph.outcome", "canceled" if canceled else "failed")
            span.record_exception(fatal, timestamp=end_ns)
            span.set_status(Status(StatusCode.ERROR, _describe(fatal)))
        span.end(end_time=end_ns)


def _first_session(stored: object) -> SpanContext | None:
    """
    The run span of a durable key's first session, from a resumed session's `RunStarted.trace_context`.

    *stored* is the carrier (a ``traceparent`` in it says the run resumes), or
    a bare ``traceparent``; ``None`` when there is none or it is damaged.

    >>> _first_session({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}).span_id
    13235353014750950193
    >>> _first_session({}), _first_session({"traceparent": "garbage"}), _first_session(None)
    (None, None, None)
    """
    carrier = {"traceparent": stored} if isinstance(stored, str) else stored
    if not isinstance(carrier, Mapping) or not carrier.get("traceparent"):
        return None
    first = trace.get_current_span(_PROPAGATOR.extract(carrier)).get_span_context()
    return first if first.is_valid else None


def _end_open(open_: _Open, end_ns: int) -> None:
    """End a callback span whose callback never finished."""
    open_.span.set_attribute("choreograph.outcome", "unfinished")
    open_.span.set_status(Status(StatusCode.ERROR, "the callback never finished"))
    open_.span.end(end_time=max(open_.start_ns, end_ns))


def _end_unfinished(run: _Run, why: str) -> None:
    """End the spans of a run whose `RunFinished` never came, at the last time it was seen."""
    for open_ in run.callbacks.values():
        _end_open(open_, run.last_ns)
    run.span.set_attribute("choreograph.outcome", "unfinished")
    run.span.set_status(Status(StatusCode.ERROR, why))
    run.span.end(end_time=run.last_ns)


def _describe(error: BaseException) -> str:
    """
    A status description: the error's type and message.

    >>> _describe(ValueError("bad input"))
    'ValueError: bad input'
    """
    return f"{type(error).__name__}: {error}"


def _emitted_attributes(step: str, payload: object) -> dict[str, AttributeValue]:
    """
    The attributes of an emitted event: its step, and its payload as plain values.

    A str, bool, int or float is kept as it is, a mapping's values one
    attribute each (one level deep), anything else as its ``repr``.

    >>> _emitted_attributes("load", {"done": 3, "of": [1, 2]})
    {'choreograph.step': 'load', 'choreograph.payload.done': 3, 'choreograph.payload.of': '[1, 2]'}
    >>> _emitted_attributes("load", "half way")
    {'choreograph.step': 'load', 'choreograph.payload': 'half way'}
    >>> _emitted_attributes("load", None)
    {'choreograph.step': 'load'}
    """
    attributes: dict[str, AttributeValue] = {"choreograph.step": step}
    if isinstance(payload, Mapping):
        for name, value in payload.items():
            attributes[f"choreograph.payload.{name}"] = value if isinstance(value, _SIMPLE) else repr(value)
    elif payload is not None:
        attributes["choreograph.payload"] = payload if isinstance(payload, _SIMPLE) else repr(payload)
    return attributes


__all__ = ["Tracing"]
