"""
Pin the public types: mypy --strict and pyright strict check this file, nothing runs it.

Each check sits in a function that is never called. The ``# type: ignore``
and ``# pyright: ignore`` comments mark calls that must be refused: mypy
(``warn_unused_ignores``, on under ``strict``) and pyright
(``reportUnnecessaryTypeIgnoreComment``) fail if one of them starts to type-check.
"""

from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import Any, Literal, assert_type

from returns.result import Result

from choreograph import (
    Call,
    ChoreographError,
    Context,
    Coordinator,
    DataBag,
    Event,
    MemoryStore,
    Parallel,
    Retry,
    RunResult,
    Step,
    StepError,
    get_data_bag,
)


@dataclass(frozen=True)
class Rec:
    """An input record."""

    id: int


def run_result() -> None:
    result = Coordinator[Rec]().run(Rec(1))
    assert_type(result, RunResult[Rec])
    assert_type(result.input, Rec)
    assert_type(result.errors, tuple[StepError, ...])
    assert_type(result.fatal, ChoreographError | None)
    assert_type(result.ok, bool)
    assert_type(result.data_bag, DataBag)
    assert_type(result.trace, tuple[Call, ...])
    assert_type(result.to_result(), Result[DataBag, ChoreographError])
    assert_type(result.raise_for_fatal(), RunResult[Rec])


def call_fields(call: Call) -> None:
    assert_type(call.step, str)
    assert_type(call.outcome, Literal["ok", "failed", "canceled", "skipped"])
    assert_type(call.seconds, float)


def step_error_fields(error: StepError) -> None:
    assert_type(error.step, str)
    assert_type(error.error, BaseException)


def run_many() -> None:
    results = Coordinator[Rec]().run_many([Rec(1), Rec(2)], workers=2, ordered=True)
    assert_type(results, Generator[RunResult[Rec], None, None])
    results.close()


async def run_async() -> None:
    coordinator = Coordinator[Rec]()
    # mypy and pyright name an `async def`'s call differently (Coroutine, CoroutineType): pin it as a Coroutine.
    pending: Coroutine[Any, Any, RunResult[Rec]] = coordinator.run_async(Rec(1))
    assert_type(await pending, RunResult[Rec])
    assert_type(await coordinator.run_async(Rec(1), values={"db": object()}, timeout=1.0), RunResult[Rec])


def decorator() -> None:
    coordinator = Coordinator[Rec]()

    @coordinator.step("positional")
    def positional(ctx: Context[Rec], rec: Rec, /) -> int:
        return rec.id

    # The decorated function keeps its exact type: the whole signature, not a plain Callable.
    assert_type(positional, Callable[[Context[Rec], Rec], int])


async def decorator_keeps_names_and_async(ctx: Context[Rec]) -> None:
    coordinator = Coordinator[Rec]()

    def is_new(rec: Rec) -> None:
        del rec

    @coordinator.step("named", precheck=is_new)
    async def named(ctx: Context[Rec], rec: Rec) -> str:
        return ctx.step

    # assert_type cannot spell a def with named parameters; calling it by keyword pins the names.
    called: Coroutine[Any, Any, str] = named(ctx=ctx, rec=Rec(1))
    called.close()
    assert_type(await named(ctx, Rec(1)), str)
    _ = named(ctx, 1)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]


def add_step() -> None:
    coordinator = Coordinator[Rec]()
    assert_type(coordinator.add_step(Step("a", lambda: 1)), Step[int])
    assert_type(coordinator.steps, tuple[Step, ...])


def context(ctx: Context[Rec]) -> None:
    assert_type(ctx.input, Rec)
    assert_type(ctx.data_bag, DataBag)
    assert_type(ctx.errors, tuple[StepError, ...])
    assert_type(ctx.step, str)
    assert_type(get_data_bag(), DataBag)


def refused() -> None:
    Coordinator[Rec]().run(1)  # type: ignore[call-overload]  # pyright: ignore[reportArgumentType]
    Coordinator[Rec]().run_many([1, 2])  # type: ignore[list-item]  # pyright: ignore[reportArgumentType]


def retry_policies() -> None:
    assert_type(Step("a", lambda: 1, retry=Retry()), Step[int])
    assert_type(Retry().prechecks, bool)


def durable_reruns(event: Event) -> None:
    coordinator = Coordinator[Rec](store=MemoryStore())
    assert_type(coordinator.rerun("k", from_step="charge"), RunResult[Rec])
    assert_type(coordinator.rerun(42, from_step="charge", values={"db": 1}, timeout=5), RunResult[Rec])
    coordinator.rerun("k", "charge")  # type: ignore[call-arg]  # pyright: ignore[reportCallIssue]
    assert_type(event.traceback, str | None)


def parallel_groups() -> None:
    def credit(rec: Rec) -> bool:
        return rec.id > 0

    def reserve(rec: Rec) -> str:
        return str(rec.id)

    checks = Parallel(
        "checks", Step("credit", credit), [Step("reserve", reserve), Step("again", reserve)], max_workers=2
    )
    flow = Coordinator[Rec]([Step("first", reserve), checks])
    assert_type(flow.add_step(Parallel("more", Step("x", credit))), Parallel)
    assert_type(flow.flow, tuple[Step[object] | Parallel, ...])
    assert_type(checks.branches, tuple[tuple[Step[Any] | Parallel, ...], ...])
    assert_type(checks.max_workers, int | None)
    result = flow.run(Rec(1))
    assert_type(result.trace_of("credit"), tuple[Call, ...])
    assert_type(result.trace[0].started, float)
    Parallel("bad", 3)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    Parallel("bad", Step("x", credit), max_workers="2")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]


def flows_as_data_and_pictures() -> None:
    flow = Coordinator.from_spec("flows/orders.toml")
    typed: Coordinator[Rec] = Coordinator.from_spec({"choreograph": 1, "steps": []})
    assert_type(flow.to_spec(), dict[str, object])
    assert_type(typed.graph(), str)
    assert_type(typed.graph("dot"), str)
    assert_type(typed.run(Rec(1)).timeline(), str)
    Coordinator.from_spec(42)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
