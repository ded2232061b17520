"""
Trace runs with OpenTelemetry and print the spans on the console.

A flow imports a price list: "fetch" fails once and is retried, "parse"
emits its progress, "publish" is skipped by its precheck when nothing
changed. `Tracing` makes a ``choreograph.run`` span per run and a child span
per callback; the application owns the SDK: here a `TracerProvider` with a
`ConsoleSpanExporter`, which prints each span as JSON when it ends, and one
span of its own, ``import prices``, that both runs are children of.

Needs the ``otel`` extra and the SDK: ``pip install 'choreograph[otel]'
opentelemetry-sdk``. Run it with ``python examples/otel_console.py``.
"""

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from choreograph import Context, Coordinator, Retry, Skip, Step
from choreograph.otel import Tracing

published: dict[str, float] = {}
attempts: list[int] = []


def fetch(source: str) -> str:
    attempts.append(1)
    if len(attempts) == 1:
        raise ConnectionError("the server hung up")  # once: the retry fetches it
    return f"{source}: apple=1.25\npear=0.75"


def parse(ctx: Context[str]) -> dict[str, float]:
    lines = ctx.data_bag.job(fetch_step).split("\n")
    prices: dict[str, float] = {}
    for done, line in enumerate(lines, 1):
        name, price = line.rsplit(" ", 1)[-1].split("=")
        prices[name] = float(price)
        ctx.emit("progress", {"done": done, "of": len(lines)})
    return prices


def changed(ctx: Context[str]) -> None:
    if ctx.data_bag.job(parse_step) == published:
        raise Skip("nothing changed")


def publish(ctx: Context[str]) -> None:
    published.update(ctx.data_bag.job(parse_step))


fetch_step = Step("fetch", fetch, retry=Retry(attempts=3, initial=0, jitter=0))
parse_step = Step("parse", parse)
prices = Coordinator[str]([fetch_step, parse_step, Step("publish", publish, precheck=changed)])


def main() -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "price-import"}))
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    unsubscribe = prices.listen(Tracing(provider))
    try:
        with provider.get_tracer("price-import").start_as_current_span("import prices"):
            first = prices.run("prices.txt")  # fetch retried, then published
            second = prices.run("prices.txt")  # the same prices: publish is skipped
    finally:
        unsubscribe()
        provider.shutdown()
    if not (first.ok and second.ok and second.trace[-1].outcome == "skipped"):
        raise SystemExit("the runs did not go as described")
    print(f"published {published}; 2 runs, {len(first.trace) + len(second.trace)} callback spans")


if __name__ == "__main__":
    main()
