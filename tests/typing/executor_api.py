"""
Pin the executor API's types: mypy --strict and pyright strict check this file, nothing runs it.

As in ``api.py``: each check sits in a function that is never called, and a
``# type: ignore`` / ``# pyright: ignore`` comment marks a call that must be refused.
``executor=`` is typed ``str | Executor``: a wrong name is refused when the
batch starts (``ValueError``), not by the type checkers.
"""

from collections.abc import AsyncGenerator, Generator, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TypeVar, assert_type

from choreograph import Context, Coordinator, RunResult, Step
from choreograph.executors import AsyncExecutor, ProcessExecutor, ThreadExecutor
from choreograph.typing import Executor, RemoteJob, RunJob, ShippableJob

InputT = TypeVar("InputT")


@dataclass(frozen=True)
class Rec:
    """An input record."""

    id: int


def total(rec: Rec) -> int:
    return rec.id


def executors_by_name_and_by_object(records: list[Rec]) -> None:
    flow = Coordinator[Rec]([Step("total", total)])
    assert_type(flow.run_many(records), Generator[RunResult[Rec], None, None])
    assert_type(flow.run_many(records, executor="threads", workers=8), Generator[RunResult[Rec], None, None])
    assert_type(flow.run_many(records, executor="async", workers=256), Generator[RunResult[Rec], None, None])
    assert_type(flow.run_many(records, executor="processes", workers=2), Generator[RunResult[Rec], None, None])
    for executor in (ThreadExecutor(4), AsyncExecutor(64), ProcessExecutor(2, start_method="spawn")):
        assert_type(flow.run_many(records, executor=executor, ordered=True), Generator[RunResult[Rec], None, None])
    assert_type(ProcessExecutor().workers, int)
    assert_type(AsyncExecutor().workers, int)


def what_is_not_an_executor(records: list[Rec]) -> None:
    flow = Coordinator[Rec]([Step("total", total)])
    flow.run_many(records, executor=object())  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    flow.run_many(records, executor=ThreadExecutor)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    flow.run_many(records, workers="2")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]


async def async_batches(records: list[Rec]) -> None:
    flow = Coordinator[Rec]([Step("total", total)])
    results = flow.run_many_async(records, workers=32, ordered=True)
    assert_type(results, AsyncGenerator[RunResult[Rec], None])
    async for result in results:
        assert_type(result, RunResult[Rec])
        assert_type(result.input, Rec)
    await results.aclose()

    async def stream() -> AsyncGenerator[Rec, None]:
        yield Rec(1)

    assert_type(flow.run_many_async(stream()), AsyncGenerator[RunResult[Rec], None])
    flow.run_many_async(records, executor="async")  # type: ignore[call-arg]  # pyright: ignore[reportCallIssue]


class Serial:
    """A serial executor, as in the architecture page: satisfies `Executor` without naming it."""

    def map(self, job: RunJob[InputT], inputs: Iterator[InputT], *, ordered: bool) -> Iterator[RunResult[InputT]]:  # noqa: ARG002 - in order anyway
        with job.worker():
            for position, item in enumerate(inputs):
                yield job.run(item, position)


class Elsewhere:
    """An executor that ships its job, as one running runs in other processes does."""

    def map(self, job: RunJob[InputT], inputs: Iterator[InputT], *, ordered: bool) -> Iterator[RunResult[InputT]]:  # noqa: ARG002 - in order anyway
        if not isinstance(job, ShippableJob):
            raise TypeError(job)
        # mypy narrows to ShippableJob[Any], pyright to ShippableJob[InputT]: either is a ShippableJob[InputT].
        shippable: ShippableJob[InputT] = job
        assert_type(shippable.ship(), bytes)
        for position, item in enumerate(inputs):
            report = shippable.ship()  # in a real one: what a RemoteJob's run returned in another process
            assert_type(shippable.receive(report), RunResult[InputT])
            yield shippable.failed(item, position, ChildProcessError("gone"))


def custom_executors(records: list[Rec]) -> None:
    flow = Coordinator[Rec]([Step("total", total)])
    serial: Executor = Serial()
    assert_type(flow.run_many(records, executor=serial), Generator[RunResult[Rec], None, None])
    assert_type(flow.run_many(records, executor=Elsewhere()), Generator[RunResult[Rec], None, None])


async def remote_jobs(remote: RemoteJob[Rec], job: RunJob[Rec]) -> None:
    assert_type(remote.run(Rec(1), 0), bytes)
    assert_type(await remote.run_async(Rec(1), 0), bytes)
    assert_type(remote.is_async, bool)
    remote.close()
    remote.run(1, 0)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    assert_type(job.run(Rec(1), 0), RunResult[Rec])
    assert_type(await job.run_async(Rec(1), 0), RunResult[Rec])
    assert_type(job.worker(), AbstractContextManager[object])


class Session:
    """A resource: made once per worker."""

    def get(self, url: str) -> str:
        return url


@contextmanager
def opened() -> Generator[Session, None, None]:
    """A resource's factory may return a context manager: the worker enters it, and exits it when it ends."""
    yield Session()


def fetch(ctx: Context[Rec], rec: Rec) -> str:
    resources = ctx.resources
    assert_type(resources, Mapping[str, object])
    session = resources["http"]
    assert isinstance(session, Session)
    return session.get(f"/records/{rec.id}")


def resources() -> None:
    with Coordinator[Rec]([Step("fetch", fetch)], resources={"http": Session}) as flow:
        assert_type(flow, Coordinator[Rec])
        assert_type(flow.run(Rec(1)), RunResult[Rec])
    Coordinator[Rec]([Step("fetch", fetch)], resources={"http": opened}).close()
    Coordinator[Rec](resources={"http": Session()})  # type: ignore[dict-item]  # pyright: ignore[reportArgumentType]
