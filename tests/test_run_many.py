"""`Coordinator.run_many`: one isolated run per input, on a pool of threads, consuming inputs lazily."""

import gc
import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from choreograph import Context, Coordinator, JobFailed, Step, get_data_bag

WORKERS = 2


def pool_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("choreograph")}


@pytest.fixture
def no_leaked_threads() -> Iterator[None]:
    """Fail the test if it leaves choreograph threads (or any extra thread) alive."""
    before_pool = pool_threads()
    before_count = threading.active_count()
    yield
    assert pool_threads() <= before_pool
    assert threading.active_count() <= before_count


def double(record: int) -> int:
    return record * 2


def doubling() -> Coordinator[int]:
    coordinator: Coordinator[int] = Coordinator()
    coordinator.add_step(Step("double", double))
    return coordinator


class Source:
    """An input iterable that counts how many items were pulled from it."""

    def __init__(self, items: Iterator[int]) -> None:
        self.items = items
        self.pulled = 0

    def __iter__(self) -> Iterator[int]:
        for item in self.items:
            self.pulled += 1
            yield item


def test_one_result_per_input(no_leaked_threads):
    """`run_many` yields exactly one result per input, each holding that input's output."""
    results = list(doubling().run_many(range(50), workers=4))

    assert sorted(r.input for r in results) == list(range(50))
    for result in results:
        assert result.ok
        assert result.data_bag.get_job_data("double") == result.input * 2


def test_empty_inputs_yield_nothing(no_leaked_threads):
    """`run_many` over no inputs yields no result."""
    assert list(doubling().run_many([], workers=2)) == []


def test_ordered_yields_in_input_order(no_leaked_threads):
    """With `ordered=True`, results come in input order even when later inputs finish first."""

    def job(record: int) -> int:
        time.sleep(0.001 * (record % 4 == 0))
        return record

    coordinator: Coordinator[int] = Coordinator()
    coordinator.add_step(Step("s", job))
    inputs = [8, 3, 0, 5, 4, 1, 12, 7, 2, 6]

    results = list(coordinator.run_many(inputs, workers=4, ordered=True))

    assert [r.input for r in results] == inputs
    assert [r.data_bag.get_job_data("s") for r in results] == inputs


def test_unordered_yields_all_results(no_leaked_threads):
    """Without `ordered`, every input still gets its result, whatever the completion order."""
    inputs = list(range(30))

    results = list(doubling().run_many(iter(inputs), workers=3))

    assert len(results) == 30
    assert sorted(r.input for r in results) == inputs


def test_fatal_in_one_run_does_not_affect_others(no_leaked_threads):
    """A run whose job fails has its own fatal; the other runs go through untouched."""
    done: list[int] = []

    def job(ctx: Context, record: int) -> int:
        if record == 3:
            raise ValueError(record)
        return record

    def after(ctx: Context, record: int) -> None:
        done.append(record)

    coordinator: Coordinator[int] = Coordinator()
    coordinator.add_step(Step("job", job))
    coordinator.add_step(Step("after", after))

    results = {r.input: r for r in coordinator.run_many(range(8), workers=3)}

    assert sorted(results) == list(range(8))
    failed = results.pop(3)
    assert isinstance(failed.fatal, JobFailed)
    assert failed.fatal.step == "job"
    assert [(e.step, e.phase, type(e.error)) for e in failed.errors] == [("job", "job", ValueError)]
    assert not failed.data_bag.has_job_data("job")
    for record, result in results.items():
        assert result.ok
        assert result.errors == ()
        assert result.data_bag.get_job_data("job") == record
    assert sorted(done) == [0, 1, 2, 4, 5, 6, 7]


@pytest.mark.parametrize("ordered", [False, True])
def test_inputs_are_consumed_lazily(no_leaked_threads, ordered):
    """Taking the first result pulls at most `2 * workers + 1` inputs from the iterable."""
    source = Source(iter(range(1000)))

    results = doubling().run_many(source, workers=WORKERS, ordered=ordered)
    assert source.pulled == 0
    first = next(results)
    results.close()

    assert first.ok
    assert 1 <= source.pulled <= 2 * WORKERS + 1


@pytest.mark.parametrize("inputs", ["abc", "", b"abc", 42, None, object()], ids=repr)
def test_str_bytes_and_non_iterables_raise_type_error_at_call_time(inputs):
    """A `str`, `bytes` or non-iterable `inputs` raises TypeError when `run_many` is called, before iterating."""
    with pytest.raises(TypeError):
        doubling().run_many(inputs)


@pytest.mark.parametrize("workers", [0, -1])
def test_workers_below_one_raise_value_error(workers):
    """`workers=0` (or fewer) raises ValueError when `run_many` is called."""
    source = Source(iter(range(3)))

    with pytest.raises(ValueError, match="workers"):
        doubling().run_many(source, workers=workers)

    assert source.pulled == 0


def test_closing_the_iterator_early_leaves_no_threads(no_leaked_threads):
    """Closing the results iterator after a few results stops the pool; no choreograph thread stays alive."""
    before, count_before = pool_threads(), threading.active_count()
    source = Source(itertools.count())
    results = doubling().run_many(source, workers=4)

    taken = [next(results) for _ in range(3)]
    assert pool_threads() - before
    results.close()

    # close() has joined the pool: no thread is left that could pull another input.
    assert pool_threads() <= before
    assert threading.active_count() <= count_before
    assert len(taken) == 3
    assert all(r.ok for r in taken)
    pulled = source.pulled
    assert pulled <= 3 + 2 * 4 + 1
    with pytest.raises(StopIteration):
        next(results)
    assert source.pulled == pulled


def test_abandoning_the_iterator_leaves_no_threads(no_leaked_threads):
    """Dropping the results iterator without closing it shuts the pool down once it is collected."""
    before, count_before = pool_threads(), threading.active_count()
    source = Source(itertools.count())
    results = doubling().run_many(source, workers=4)

    first = next(results)
    assert pool_threads() - before
    del results
    gc.collect()

    # Collecting the iterator has joined the pool: no thread is left that could pull another input.
    assert pool_threads() <= before
    assert threading.active_count() <= count_before
    assert first.ok
    assert source.pulled >= 1


class SourceError(Exception):
    """Raised by a broken input iterable."""


def test_an_error_from_the_inputs_propagates_and_shuts_the_pool_down(no_leaked_threads):
    """An exception raised while iterating the inputs reaches the consumer, and the pool is shut down."""

    def broken() -> Iterator[int]:
        yield 1
        yield 2
        raise SourceError

    results = doubling().run_many(broken(), workers=4)

    with pytest.raises(SourceError):
        list(results)


def test_an_error_from_the_inputs_after_some_results_propagates(no_leaked_threads):
    """An inputs iterable that fails after many items still lets earlier results through, then raises."""

    def broken() -> Iterator[int]:
        yield from range(20)
        raise SourceError

    seen: list[int] = []
    results = doubling().run_many(broken(), workers=2)
    with pytest.raises(SourceError):
        seen.extend(result.input for result in results)

    assert seen
    assert set(seen) <= set(range(20))


def test_values_reach_every_run(no_leaked_threads):
    """The `values=` given to `run_many` are visible as `ctx.values` in every run."""

    def job(ctx: Context, record: int) -> str:
        return f"{ctx.values['prefix']}{record}"

    coordinator: Coordinator[int] = Coordinator()
    coordinator.add_step(Step("s", job))

    results = list(coordinator.run_many(range(10), workers=3, values={"prefix": "n"}))

    assert sorted(r.data_bag.get_job_data("s") for r in results) == sorted(f"n{i}" for i in range(10))


def test_get_data_bag_in_run_many_is_the_runs_own(no_leaked_threads):
    """`get_data_bag()` inside a callback run by `run_many` returns that run's DataBag."""
    bags: dict[int, Any] = {}

    def job(ctx: Context, record: int) -> int:
        bags[record] = get_data_bag()
        assert bags[record] is ctx.data_bag
        return record

    coordinator: Coordinator[int] = Coordinator()
    coordinator.add_step(Step("s", job))

    results = list(coordinator.run_many(range(20), workers=4))

    assert all(bags[r.input] is r.data_bag for r in results)
    assert all(r.data_bag.get_job_data("s") == r.input for r in results)


def test_an_infinite_input_stream_is_not_materialized(no_leaked_threads):
    """Taking 100 results from an infinite input stream pulls a bounded number of inputs."""
    limit = 100_000
    pulled = 0

    def endless() -> Iterator[int]:
        nonlocal pulled
        for item in itertools.count():
            pulled += 1
            if pulled > limit:
                msg = "run_many materialized its inputs"
                raise AssertionError(msg)
            yield item

    results = doubling().run_many(endless(), workers=WORKERS)
    taken = list(itertools.islice(results, 100))
    results.close()

    assert len(taken) == 100
    assert all(r.ok for r in taken)
    # run_many documents its window: at most 2 * workers batches of at most 256 inputs.
    assert pulled <= 100 + 2 * WORKERS * 256


def test_async_steps_in_run_many_keep_each_run_isolated():
    """With async def callbacks, run_many's runs share an event loop per batch but nothing else."""
    import asyncio

    from choreograph import Coordinator, Step, get_data_bag

    async def remember(x: int) -> int:
        await asyncio.sleep(0)
        return x

    async def check(x: int) -> bool:
        await asyncio.sleep(0)
        return get_data_bag().get_job_data("remember") == x

    coordinator = Coordinator([Step("remember", remember), Step("check", check)])
    results = list(coordinator.run_many(range(300), workers=3))
    assert len(results) == 300
    assert all(r.ok and r.data_bag.get_job_data("check") is True for r in results)
    assert sorted(r.input for r in results) == list(range(300))


def test_async_run_timeouts_still_cancel_in_run_many():
    """A run timeout cancels an awaiting async callback in run_many as in run."""
    import asyncio

    from choreograph import Coordinator, RunCancelled, Step

    async def slow(x: int) -> int:
        await asyncio.sleep(30 if x == 1 else 0)
        return x

    # The timeout is generous for the quick runs on a loaded machine; an uncancelled run 1 would take 30 s.
    started = time.monotonic()
    results = {r.input: r for r in Coordinator([Step("slow", slow)]).run_many(range(4), workers=2, timeout=0.5)}
    assert time.monotonic() - started < 5
    assert sorted(results) == [0, 1, 2, 3]
    assert isinstance(results[1].fatal, RunCancelled)
    assert [(c.step, c.outcome) for c in results[1].trace] == [("slow", "canceled")]
    assert all(results[i].ok for i in (0, 2, 3))
