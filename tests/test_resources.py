"""`Coordinator(resources=...)`: made once per worker on first use, closed when the worker ends or at `close()`."""

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from choreograph import Context, Coordinator, JobFailed, Parallel, Step
from choreograph.typing import Store


class Pool:
    """A resource factory that counts what it made and closed, and by which thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.opened: list[int] = []  # thread idents
        self.closed: list[int] = []

    @contextmanager
    def connection(self) -> Iterator[dict[str, int]]:
        with self.lock:
            self.opened.append(threading.get_ident())
            number = len(self.opened)
        try:
            yield {"number": number, "thread": threading.get_ident()}
        finally:
            with self.lock:
                self.closed.append(threading.get_ident())


def uses(ctx: Context[int], x: int) -> int:
    db = ctx.resources["db"]
    assert isinstance(db, dict)
    return db["number"]


def never(x: int) -> int:
    return x


def test_run_makes_the_resource_on_first_use_in_the_calling_thread_and_close_closes_it():
    pool = Pool()
    flow = Coordinator[int]([Step("uses", uses)], resources={"db": pool.connection})

    numbers = [flow.run(x).data_bag.get_job_data("uses") for x in range(5)]
    assert numbers == [1] * 5  # made once, for this thread
    assert pool.opened == [threading.get_ident()]
    assert pool.closed == []
    flow.close()
    assert pool.closed == [threading.get_ident()]
    assert flow.run(1).data_bag.get_job_data("uses") == 2  # made again after close()
    flow.close()
    assert len(pool.closed) == 2


def test_with_closes_the_resources():
    pool = Pool()
    with Coordinator[int]([Step("uses", uses)], resources={"db": pool.connection}) as flow:
        assert flow.run(1).ok
        assert asyncio.run(flow.run_async(2)).data_bag.get_job_data("uses") == 1  # the same thread's
    assert len(pool.opened) == len(pool.closed) == 1


def test_a_run_that_never_reads_a_resource_makes_none():
    pool = Pool()
    with Coordinator[int]([Step("never", never)], resources={"db": pool.connection}) as flow:
        assert all(r.ok for r in flow.run_many(range(20), workers=3))
        assert flow.run(1).ok
    assert pool.opened == []


def test_a_plain_value_is_the_resource_itself():
    made: list[object] = []

    def factory() -> list[object]:
        made.append(object())
        return made

    def job(ctx: Context[int], x: int) -> int:
        return len(ctx.resources["cache"])  # type: ignore[arg-type]

    flow = Coordinator[int]([Step("job", job)], resources={"cache": factory})
    assert [flow.run(x).data_bag.get_job_data("job") for x in range(3)] == [1, 1, 1]
    flow.close()  # nothing to exit


@pytest.mark.parametrize("executor", ["threads", "async"])
def test_each_worker_makes_its_resources_once_and_closes_them_when_it_ends(executor: str):
    pool = Pool()
    flow = Coordinator[int]([Step("uses", uses)], resources={"db": pool.connection})
    results = list(flow.run_many(range(200), workers=4, executor=executor))

    assert all(r.ok for r in results)
    workers = 1 if executor == "async" else 4
    assert 1 <= len(pool.opened) <= workers
    assert len(set(pool.opened)) == len(pool.opened)  # one per worker thread
    assert sorted(pool.closed) == sorted(pool.opened)  # closed by the worker that made it, when it ended
    assert threading.get_ident() not in pool.opened


def test_closing_the_batch_early_closes_its_workers_resources():
    pool = Pool()
    flow = Coordinator[int]([Step("uses", uses)], resources={"db": pool.connection})
    results = flow.run_many(iter(range(1000)), workers=2)
    next(results)
    results.close()
    assert pool.opened
    assert sorted(pool.closed) == sorted(pool.opened)


def test_run_many_async_uses_the_calling_threads_resources():
    pool = Pool()
    flow = Coordinator[int]([Step("uses", uses)], resources={"db": pool.connection})

    async def main() -> list[int]:
        return [r.data_bag.get_job_data("uses") async for r in flow.run_many_async(range(10), workers=3)]

    assert asyncio.run(main()) == [1] * 10
    assert pool.opened == [threading.get_ident()]
    assert flow.run(0).data_bag.get_job_data("uses") == 1
    flow.close()
    assert pool.closed == pool.opened


def test_branch_threads_use_the_resources_of_the_runs_worker():
    """The plain callbacks of a group's branches run on other threads but share the run's worker's resources."""
    pool = Pool()
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()
    meeting = threading.Barrier(3, timeout=10)

    def branch(ctx: Context[int], x: int) -> None:
        meeting.wait()  # three branches at once, on three threads
        db = ctx.resources["db"]
        assert isinstance(db, dict)
        with lock:
            seen.append((db["number"], threading.get_ident()))

    group = Parallel("g", Step("a", branch), Step("b", branch), Step("c", branch))
    flow = Coordinator[int]([group, Step("uses", uses)], resources={"db": pool.connection})
    result = flow.run(1)

    assert result.ok, result.fatal
    assert len(pool.opened) == 1  # made once (by the branch that read it first), for the run's worker
    assert {number for number, _ in seen} == {1}
    assert len({reader for _, reader in seen}) == 3
    assert threading.get_ident() not in {reader for _, reader in seen}
    assert result.data_bag.get_job_data("uses") == 1  # the step after the group, in this thread: the same
    assert flow.run(2).data_bag.get_job_data("uses") == 1  # this thread's, kept for its next runs
    flow.close()
    assert len(pool.closed) == 1


def test_concurrent_first_reads_make_the_resource_once():
    pool = Pool()
    meeting = threading.Barrier(4, timeout=10)

    def branch(ctx: Context[int], x: int) -> int:
        meeting.wait()
        db = ctx.resources["db"]
        assert isinstance(db, dict)
        return db["number"]

    group = Parallel("g", *(Step(name, branch) for name in "abcd"))
    with Coordinator[int]([group], resources={"db": pool.connection}) as flow:
        result = flow.run(1)
    assert result.ok, result.fatal
    assert {result.data_bag.get_job_data(name) for name in "abcd"} == {1}
    assert len(pool.opened) == 1


def test_an_unknown_name_raises_key_error_naming_the_known_ones():
    def job(ctx: Context[int], x: int) -> object:
        return ctx.resources["cache"]

    flow = Coordinator[int]([Step("job", job)], resources={"db": dict, "http": list})
    result = flow.run(1)
    assert isinstance(result.fatal, JobFailed)
    error = result.fatal.error
    assert isinstance(error, KeyError)
    assert "no resource named 'cache'" in str(error)
    assert "'db', 'http'" in str(error)


def test_without_resources_ctx_resources_is_empty_and_says_how_to_give_them():
    seen: list[Any] = []

    def job(ctx: Context[int], x: int) -> object:
        seen.append((len(ctx.resources), list(ctx.resources)))
        return ctx.resources["db"]

    result = Coordinator[int]([Step("job", job)]).run(1)
    assert seen == [(0, [])]
    assert isinstance(result.fatal, JobFailed)
    assert "Coordinator(resources=" in str(result.fatal.error)


def test_resources_are_a_read_only_mapping():
    seen: list[Any] = []

    def job(ctx: Context[int], x: int) -> None:
        seen.append((sorted(ctx.resources), len(ctx.resources), "db" in ctx.resources))
        with pytest.raises(TypeError):
            ctx.resources["db"] = 1  # type: ignore[index]

    assert Coordinator[int]([Step("job", job)], resources={"db": dict, "http": list}).run(1).ok
    assert seen == [(["db", "http"], 2, True)]


def test_a_factory_that_raises_fails_the_callback_that_asked_and_is_asked_again_next_time():
    calls: list[int] = []

    def factory() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("down")
        return "up"

    def gate(ctx: Context[int], x: int) -> str:
        return str(ctx.resources["db"])

    def job(ctx: Context[int], x: int) -> str:
        return str(ctx.resources["db"])

    flow = Coordinator[int]([Step("job", job, gate)], resources={"db": factory})
    first = flow.run(1)  # the precheck fails: the job is skipped, the run goes on (the outcome rules)
    assert first.ok
    assert [(e.step, e.phase, type(e.error)) for e in first.errors] == [("job", "precheck", ConnectionError)]
    second = flow.run(2)
    assert second.data_bag.get_job_data("job") == "up"
    assert len(calls) == 2


def test_an_exit_that_raises_propagates_from_close_after_closing_the_others():
    closed: list[str] = []

    @contextmanager
    def failing() -> Iterator[str]:
        yield "f"
        raise OSError("can't close")

    @contextmanager
    def fine() -> Iterator[str]:
        yield "g"
        closed.append("fine")

    def job(ctx: Context[int], x: int) -> str:
        return f"{ctx.resources['a']}{ctx.resources['b']}"

    flow = Coordinator[int]([Step("job", job)], resources={"a": failing, "b": fine})
    assert flow.run(1).data_bag.get_job_data("job") == "fg"
    with pytest.raises(OSError, match="can't close"):
        flow.close()
    assert closed == ["fine"]


def test_durable_runs_get_their_resources(make_store: Any):
    store: Store = make_store()
    pool = Pool()
    flow = Coordinator[int]([Step("uses", uses)], store=store, key=str, resources={"db": pool.connection})
    assert flow.run(1).data_bag.get_job_data("uses") == 1
    assert asyncio.run(flow.run_async(2)).data_bag.get_job_data("uses") == 1
    results = list(flow.run_many(range(3, 10), workers=2))
    assert all(r.ok for r in results)
    durable = flow.with_store(store)  # shares the resources
    assert durable.run(11).data_bag.get_job_data("uses") == 1
    flow.close()
    assert sorted(pool.closed) == sorted(pool.opened)


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ([("db", dict)], "mapping"),
        ({"": dict}, "non-empty str"),
        ({1: dict}, "non-empty str"),
        ({"db": "sqlite://"}, "resource 'db': the factory must be a callable"),
    ],
)
def test_bad_resources_are_refused(resources: Any, message: str):
    with pytest.raises(TypeError, match=message):
        Coordinator(resources=resources)


def test_an_empty_mapping_is_no_resources():
    flow = Coordinator[int]([Step("never", never)], resources={})
    assert flow.run(1).ok
    flow.close()
