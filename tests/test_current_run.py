"""`get_data_bag()` finds the run whose callback calls it: nested runs, tasks, threads with copied contexts."""

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from choreograph import Context, Coordinator, DataBag, NoDataBagInContext, Step, get_data_bag


def test_a_nested_run_has_its_own_bag_and_the_outer_one_comes_back_after_it():
    """A callback that runs another flow sees the inner bag inside it, and its own bag again afterwards."""
    seen: list[tuple[str, DataBag]] = []
    inner = Coordinator([Step("inner", lambda ctx: seen.append(("inner", get_data_bag())) or ctx.data_bag)])

    def outer(ctx: Context) -> None:
        seen.append(("before", get_data_bag()))
        inner_result = inner.run()
        seen.append(("after", get_data_bag()))
        assert inner_result.data_bag.get_job_data("inner") is inner_result.data_bag
        assert ctx.data_bag is get_data_bag()

    result = Coordinator([Step("outer", outer)]).run()
    assert result.ok, result.fatal
    (_, before), (_, inside), (_, after) = seen
    assert before is after is result.data_bag
    assert inside is not result.data_bag
    with pytest.raises(NoDataBagInContext):
        get_data_bag()


def test_runs_in_threads_with_a_copied_context_each_see_their_own_bag():
    """Runs on threads that share a copied context (as `asyncio.to_thread` makes) never see each other's bags."""
    barrier = threading.Barrier(8, timeout=10)

    def job(ctx: Context[int], x: int) -> int:
        barrier.wait()  # all eight runs are going on at once
        assert get_data_bag() is ctx.data_bag
        return x

    flow = Coordinator[int]([Step("job", job), Step("check", lambda ctx: get_data_bag() is ctx.data_bag)])

    def run_in(context: contextvars.Context, x: int) -> bool:
        result = context.run(flow.run, x)
        return result.ok and result.data_bag.get_job_data("check") is True

    def outer(ctx: Context) -> list[bool]:
        copies = [contextvars.copy_context() for _ in range(8)]  # made inside a run: they share what it set
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(run_in, copies, range(8)))

    result = Coordinator([Step("outer", outer)]).run()
    assert result.ok, result.fatal
    assert result.data_bag.get_job_data("outer") == [True] * 8


def test_async_runs_in_one_loop_and_to_thread_runs_see_their_own_bags():
    """Interleaving `run_async` tasks, and plain runs sent to threads from them, each see their own bag."""
    flow = Coordinator[int]([Step("sync", lambda ctx: get_data_bag() is ctx.data_bag)])

    async def job(ctx: Context[int], x: int) -> bool:
        await asyncio.sleep(0.001 * (x % 3))
        mine = get_data_bag() is ctx.data_bag
        threaded = await asyncio.to_thread(flow.run, x)
        return mine and threaded.data_bag.get_job_data("sync") is True and get_data_bag() is ctx.data_bag

    async_flow = Coordinator[int]([Step("job", job)])

    async def main() -> list[bool]:
        results = await asyncio.gather(*(async_flow.run_async(x) for x in range(20)))
        return [r.data_bag.get_job_data("job") for r in results]

    assert asyncio.run(main()) == [True] * 20


def test_outside_a_run_there_is_no_bag_even_after_runs_in_this_thread():
    """After runs ended (plain, failing or async), `get_data_bag()` outside a run raises again."""
    Coordinator([Step("ok", lambda: 1)]).run()
    Coordinator([Step("boom", lambda: 1 // 0)]).run()
    asyncio.run(Coordinator([Step("async", lambda: 1)]).run_async())
    with pytest.raises(NoDataBagInContext):
        get_data_bag()
